"""Atomic writes that never lose a user's file, and the one loader of kgpipe's artifacts.

Everything kgpipe saves (KGs, checkpoints, results) goes through `atomic_dir` or `atomic_write`: a
failing job leaves the old file or folder in place and nothing half-written, and a folder is only
ever replaced whole when everything in it is a file kgpipe is writing anew. Commands check their
output with `check_output` before any work, so a bad `--out` fails in a second, not after training.
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

from kg.errors import KGPipeError


class OutputError(KGPipeError):
    """An output path that would overwrite or delete something kgpipe did not write."""


# the marker file and its "format" value that make a folder a kgpipe artifact of one kind
ARTIFACTS = {
    "kgpipe-kg": "manifest.json",
    "kgpipe-transe": "config.json",
    "kgpipe-encoder/1": "config.json",
    "kgpipe-fusion/1": "pretrain.json",
    "kgpipe-linker/1": "linker.json",
    "kgpipe-bundle": "manifest.json",
    "kgpipe-extract/1": "_job.json",
}


def artifact_format(folder: Path) -> str | None:
    """The kgpipe format a folder holds (`kgpipe-kg`, `kgpipe-transe`, ...), or None."""
    for fmt, marker in ARTIFACTS.items():
        try:
            found = json.loads((folder / marker).read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            continue
        if found == fmt:
            return fmt
    return None


def _overlap(out: Path, path: Path) -> str | None:
    """How `out` overlaps `path` ('is', 'lies inside', 'contains'), or None."""
    a, b = out.resolve(), path.resolve()
    if a == b:
        return "is"
    if b in a.parents:
        return "lies inside"
    if a in b.parents:
        return "contains"
    return None


def check_output(
    out: Path,
    fmt: str | None,
    inputs: tuple[Path | None, ...] = (),
    force: bool = False,
) -> None:
    """Refuse, before any work, an output that would lose a file kgpipe did not write.

    `fmt` None: `out` is a file; otherwise a folder of that artifact format. Refused: an output
    that is, contains or lies inside one of the `inputs`; a folder path that is a file (or the
    reverse); a non-empty folder that is not a kgpipe artifact of the same format, unless `force`
    (then kgpipe's files are written into it and every other file stays).
    """
    out = Path(out)
    for path in inputs:
        if path is None or not Path(path).exists():
            continue
        how = _overlap(out, Path(path))
        if how is not None:
            raise OutputError(
                f"{out}: the output {how} the input {path}; writing there could destroy it. "
                "Give an output path outside the input"
            )
    if fmt is None:
        if out.is_dir():
            raise OutputError(f"{out}: is a folder, not a file. Give the path of a file to write")
        return
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder. Give the path of a new or empty folder")
    if not out.is_dir() or force:
        return
    present = sorted(p.name for p in out.iterdir())
    if present and artifact_format(out) != fmt:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise OutputError(
            f"{out}: folder holds files kgpipe did not write ({shown}). Give a new or empty "
            "folder, or pass --force to write kgpipe's files into it (every other file is kept)"
        )


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success its files take their place.

    When `target` holds only names the new folder also has, it is replaced whole in one rename;
    otherwise each new file or subfolder is renamed into it, and the files kgpipe did not write
    now stay where they are. A file (not a folder) at `target` is never replaced.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: is a file, not a folder. Give the path of a new or empty folder")
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
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        new_names = {p.name for p in tmp.iterdir()}
        if not target.exists() or {p.name for p in target.iterdir()} <= new_names:
            if target.exists():
                os.replace(target, old / "previous")
            os.replace(tmp, target)
            return
        for child in sorted(tmp.iterdir()):
            dest = target / child.name
            if dest.exists() and (dest.is_dir() or child.is_dir()):
                os.replace(dest, old / child.name)
            os.replace(child, dest)
    finally:
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_write(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside `target` for writing; on success rename it onto `target`."""
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder, not a file. Give the path of a file to write")
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
    needs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The `config` JSON of a saved model folder (with `weights` and `needs` beside it), checked
    to be `fmt`.

    `what` names the kind of folder in the error ("a TransE checkpoint"), `writer` the command
    that writes one. This and `read_tensors` / `load_weights` are the only code that opens a
    model artifact, so a damaged one fails the same way everywhere: one line, file and fix.
    """
    from kg.errors import KGFormatError

    folder = Path(folder)
    config_path = folder / config
    fix = f"Give a folder written by `{writer}`, or write it again"
    if not folder.is_dir():
        raise KGFormatError(folder, None, f"not {what}: no such folder", fix)
    if not config_path.is_file():
        raise KGFormatError(folder, None, f"not {what} (no {config})", fix)
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KGFormatError(config_path, e.lineno, f"invalid JSON ({e.msg})", fix) from e
    except UnicodeDecodeError as e:
        raise KGFormatError(config_path, None, f"not UTF-8 text ({e.reason})", fix) from e
    if not isinstance(values, dict) or values.get("format") != fmt:
        found = values.get("format") if isinstance(values, dict) else None
        raise KGFormatError(config_path, 1, f"format is {found!r}, not {what} ({fmt!r})", fix)
    missing = [name for name in (weights, *needs) if not (folder / name).exists()]
    if missing:
        raise KGFormatError(folder, None, f"{what} without {', '.join(missing)}", fix)
    return values


def read_tensors(path: Path, writer: str) -> dict[str, Any]:
    """Every tensor of a safetensors file; a truncated, empty or foreign file is a `KGFormatError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from kg.errors import KGFormatError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise KGFormatError(
            path,
            None,
            f"damaged weights file ({reason})",
            f"Write it again with `{writer}`; a copy may have been cut short",
        ) from e


def load_weights(module: Any, tensors: dict[str, Any], path: Path, writer: str) -> None:
    """`module.load_state_dict(tensors)` exactly; weights of another model are a `KGFormatError`."""
    from kg.errors import KGFormatError

    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    fix = f"These weights belong to another model; use the folder `{writer}` wrote with them"
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        problem = f"{len(missing)} weights missing" if missing else f"{len(unexpected)} unknown weights"
        raise KGFormatError(path, None, f"{problem} (e.g. {names})", fix)
    if wrong:
        k = wrong[0]
        raise KGFormatError(
            path,
            None,
            f"weight {k!r} has shape {list(tensors[k].shape)}, the model needs {list(expected[k].shape)}",
            fix,
        )
    module.load_state_dict(tensors)


def read_parquet(path: Path, columns: tuple[str, ...], writer: str) -> dict[str, list[Any]]:
    """The named columns of a Parquet file kgpipe wrote; damaged or foreign ones are a `KGFormatError`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kg.errors import KGFormatError

    fix = f"Write it again with `{writer}`"
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise KGFormatError(path, None, f"damaged Parquet file ({str(e)[:160]})", fix) from e
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise KGFormatError(path, None, f"no column(s) {missing}; it has {table.column_names}", fix)
    return table.select(list(columns)).to_pydict()
