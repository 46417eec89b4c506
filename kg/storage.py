"""Atomic writes: a failing job leaves the old file or folder in place and nothing half-written.

Everything kgpipe saves (KGs, checkpoints, results) goes through `atomic_dir` or `atomic_write`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _share(tmp, 0o777)
        for child in tmp.rglob("*"):
            _share(child, 0o777 if child.is_dir() else 0o666)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "previous")
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_write(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside `target` for writing; on success rename it onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        _share(Path(name), 0o666)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _share(path: Path, mode: int) -> None:
    """Give a finished file the permissions a plain open() would (temp files start private)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def write_json(target: str | Path, obj: object) -> None:
    with atomic_write(target) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_model_config(
    folder: Path,
    fmt: str,
    what: str,
    writer: str,
    config: str = "config.json",
    weights: str = "model.safetensors",
) -> dict[str, Any]:
    """The `config` JSON of a saved model folder (with `weights` beside it), checked to be `fmt`.

    `what` names the kind of folder in the error ("a TransE checkpoint"), `writer` the command
    that writes one.
    """
    from kg.errors import KGFormatError

    config_path = folder / config
    fix = f"Give a folder written by `{writer}`"
    if not config_path.exists() or not (folder / weights).exists():
        raise KGFormatError(folder, None, f"not {what} (no {config} / {weights})", fix)
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise KGFormatError(config_path, e.lineno, f"invalid JSON ({e.msg})", fix) from e
    if not isinstance(config, dict) or config.get("format") != fmt:
        found = config.get("format") if isinstance(config, dict) else None
        raise KGFormatError(config_path, 1, f"format is {found!r}, not {fmt!r}", fix)
    return config
