"""A bundle's `manifest.json`: which folder holds each part (kg, transe, linker, classifiers/NAME,
store), where it came from, and the sha256 of every file, checked before anything is loaded.

`pipeline.bundle` builds and opens bundles on top of this; it lives in `kg` because the spaCy
component (`kg.link.component`) finds its default parts here too, and `kg` imports nothing above it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kg.errors import KGFormatError
from kg.storage import sha256, write_json

FORMAT = "kgpipe-bundle"
FORMAT_VERSION = 1
FILE = "manifest.json"
REQUIRED = ("kg", "transe", "linker")


@dataclass(frozen=True)
class Part:
    """One part of a bundle: its folder and the checksum of each file in it."""

    name: str
    path: Path
    files: dict[str, str]  # path inside the part → sha256
    source: str = ""

    @property
    def sha256(self) -> str:
        """One checksum for the whole part: over its files' names and checksums."""
        h = hashlib.sha256()
        for name, digest in sorted(self.files.items()):
            h.update(f"{name}\t{digest}\n".encode())
        return h.hexdigest()


def hash_part(root: Path, name: str, relpath: str, source: str = "") -> Part:
    """A part as it is on disk now: every file under `root / relpath`, hashed."""
    folder = root / relpath
    files = {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
    return Part(name, folder, files, source)


def write_manifest(
    root: Path, parts: dict[str, str], sources: dict[str, str], extra: dict[str, Any]
) -> dict[str, Any]:
    """Hash every part (name → folder relative to `root`) and write `root/manifest.json`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        kgpipe_version = version("kgpipe")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        kgpipe_version = "unknown"
    hashed = {name: hash_part(root, name, rel, sources.get(name, "")) for name, rel in parts.items()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kgpipe_version": kgpipe_version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
        "parts": {
            name: {"path": parts[name], "source": p.source, "sha256": p.sha256, "files": p.files}
            for name, p in hashed.items()
        },
    }
    write_json(root / FILE, manifest)
    return manifest


def read_manifest(root: Path, verify: bool = True) -> tuple[dict[str, Any], dict[str, Part]]:
    """The manifest of the bundle at `root` and its parts; with `verify`, every file is checked
    against its sha256 first. Anything missing, changed or of another format version is a
    `KGFormatError` naming the part or file and the fix."""
    root = Path(root)
    path = root / FILE
    fix = "Build the bundle again with `kgpipe bundle build --out DIR`"
    if not root.is_dir():
        raise KGFormatError(root, None, "no such bundle folder", fix)
    if not path.is_file():
        raise KGFormatError(root, None, f"not a kgpipe bundle (no {FILE})", fix)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise KGFormatError(path, None, f"damaged manifest ({str(e)[:100]})", fix) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KGFormatError(path, 1, f"not a kgpipe bundle manifest (format {FORMAT!r})", fix)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise KGFormatError(
            path,
            None,
            f"bundle format version {manifest.get('format_version')!r}; this kgpipe reads version {FORMAT_VERSION}",
            fix + " with this kgpipe",
        )
    raw = manifest.get("parts")
    if not isinstance(raw, dict):
        raise KGFormatError(path, None, "no 'parts' object", fix)
    missing = [name for name in REQUIRED if name not in raw]
    if missing:
        raise KGFormatError(path, None, f"the bundle has no {', '.join(missing)} part", fix)
    parts = {}
    for name, entry in raw.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("files"), dict)
        ):
            raise KGFormatError(path, None, f"part {name!r} is not described by 'path' and 'files'", fix)
        part = Part(name, root / entry["path"], dict(entry["files"]), str(entry.get("source", "")))
        for inside in (entry["path"], *(f"{entry['path']}/{f}" for f in part.files)):
            _check_inside(root, inside, name, path, fix)
        if not part.path.is_dir():
            raise KGFormatError(part.path, None, f"part {name!r} is missing", fix)
        if verify:
            _verify(part, fix)
        parts[name] = part
    return manifest, parts


def _check_inside(root: Path, relpath: str, part: str, manifest: Path, fix: str) -> None:
    """A path the manifest names must stay inside the bundle folder: no '..', no absolute path,
    no link that leads out (a bundle from elsewhere must not make kgpipe read other files)."""
    top = root.resolve()
    target = (root / relpath).resolve()
    if target != top and top not in target.parents:
        raise KGFormatError(
            manifest,
            None,
            f"part {part!r} names {relpath!r}, which resolves to {target}, outside the bundle folder {top}",
            "A bundle's parts and files must lie inside its folder; " + fix,
        )


def _verify(part: Part, fix: str) -> None:
    for name, digest in part.files.items():
        file = part.path / name
        if not file.is_file():
            raise KGFormatError(file, None, f"file of part {part.name!r} is missing", fix)
        if sha256(file) != digest:
            raise KGFormatError(
                file,
                None,
                f"file of part {part.name!r} differs from its sha256 in manifest.json (changed or damaged)",
                fix,
            )


def default_bundle() -> Path:
    """The bundle commands open when none is named: `KGPIPE_BUNDLE`, else the bundled defaults."""
    from kg.settings import settings

    s = settings()
    return s.bundle if s.bundle is not None else s.data


def default_part(name: str) -> Path:
    """The folder of one part of the default bundle (not verified: the bundle's loader does that)."""
    _, parts = read_manifest(default_bundle(), verify=False)
    if name not in parts:
        raise KGFormatError(
            default_bundle() / FILE, None, f"the bundle has no {name!r} part", "Name one that has it"
        )
    return parts[name].path
