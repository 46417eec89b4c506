"""Batch extraction over corpora on dask.distributed: one task per partition, resumable, nothing lost.

Inputs are JSONL or Parquet files (or globs): `id`, `text`, every other column kept as document
metadata. Partitions have stable ids (source path, line or row range, a hash of their content,
the bundle's fingerprint). A task extracts its partition with the bundle its worker loaded once
(a `WorkerPlugin`), writes `entities/`, `facts/` and `docs/` Parquet files under temporary names,
renames them, then writes a done-marker with each file's sha256; a rerun skips partitions whose
marker and files are intact and extracts damaged ones again, and `_manifest.json` is written last.
A partition is extracted once per job: its task returns at once when its marker is already there
(a lost worker's finished task that dask runs again), and the client releases each result as it
reads it, so a lost worker costs only the partitions it had not finished; the summary names lost
workers and the partitions started again. The same code runs on a `LocalCluster` or on a
scheduler's address.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import WorkerPlugin

from kg.errors import KGFormatError, KGPipeError
from kg.io import without_surrogates
from kg.storage import atomic_write, write_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from distributed import Worker

    from pipeline.bundle import Bundle
    from pipeline.extract import Document, Extraction

FORMAT = "kgpipe-extract/1"
TABLES = ("entities", "facts", "docs")
DONE = "_done"
JOB = "_job.json"


class BatchError(KGPipeError):
    """A batch job that could not finish: which partition, and why."""


@dataclass(frozen=True)
class Partition:
    """A range of one input file: lines [start, end) of a JSONL file (1-based line numbers, the
    bytes [offset, offset + size) hold them) or rows [start, end) of a Parquet file."""

    source: str
    kind: str  # "jsonl" or "parquet"
    start: int
    end: int
    offset: int
    size: int
    content: str  # sha256 of the partition's bytes (JSONL) or rows (Parquet)
    bundle: str  # the bundle's fingerprint

    @property
    def id(self) -> str:
        key = f"{self.source}\t{self.kind}\t{self.start}\t{self.end}\t{self.content}\t{self.bundle}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    @property
    def where(self) -> str:
        unit = "lines" if self.kind == "jsonl" else "rows"
        return f"{self.source} {unit} {self.start}-{self.end - 1}"


@dataclass
class Summary:
    """What a job did: counts, time, and where its outputs are."""

    out: str
    partitions: int
    skipped: int
    documents: int
    entities: int
    facts: int
    errors: int
    seconds: float
    workers: int
    failed: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # done before, found damaged: extracted again
    workers_lost: list[str] = field(default_factory=list)  # dask workers that died during the job
    reruns: list[str] = field(default_factory=list)  # partitions started again after their worker was lost
    removed: int = 0  # partitions of an earlier run over the same inputs (another layout), removed

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The files named by paths and globs, each once, in a stable order."""
    files: list[Path] = []
    for item in inputs:
        matched = sorted(glob.glob(str(item))) if glob.has_magic(str(item)) else [str(item)]
        if not matched:
            raise KGFormatError(
                item, None, "no file matches this pattern", "Give JSONL or Parquet files or a glob"
            )
        for name in matched:
            path = Path(name)
            if not path.is_file():
                raise KGFormatError(path, None, "no such file", "Give JSONL or Parquet files or a glob")
            if path.suffix.lower() not in (".jsonl", ".json", ".parquet"):
                raise KGFormatError(
                    path, None, f"unknown input kind {path.suffix!r}", "Give .jsonl or .parquet files"
                )
            if path.resolve() not in {f.resolve() for f in files}:
                files.append(path)
    return files


def partitions(files: Sequence[Path], size: int, bundle: str) -> list[Partition]:
    """Stable partitions of `size` lines (JSONL) or rows (Parquet) of each file.

    Refuses (KGFormatError, before any work) a document id that is not a string or an integer, one
    id on two documents (ids are compared as text, as the store keys them: 1 and "1" are one id),
    a `.parquet` file that is not Parquet, and inputs without a single document."""
    out = []
    ids = _Ids()
    for path in files:
        source = str(path.resolve())
        if path.suffix.lower() == ".parquet":
            table = _read_parquet(path)
            rows = table.num_rows
            for start in range(0, rows, size):
                items = table.slice(start, size).to_pylist()
                ids.check(path, "parquet", start, items)
                digest = hashlib.sha256(str(items).encode("utf-8", "surrogatepass")).hexdigest()
                out.append(Partition(source, "parquet", start, min(start + size, rows), 0, 0, digest, bundle))
            continue
        with open(path, "rb") as f:
            data = f.read()
        lines = data.splitlines(keepends=True)
        offset = 0
        for start in range(0, len(lines), size):
            ids.check(path, "jsonl", start + 1, lines[start : start + size])
            chunk = b"".join(lines[start : start + size])
            digest = hashlib.sha256(chunk).hexdigest()
            out.append(
                Partition(
                    source,
                    "jsonl",
                    start + 1,
                    start + 1 + len(lines[start : start + size]),
                    offset,
                    len(chunk),
                    digest,
                    bundle,
                )
            )
            offset += len(chunk)
    if not ids.seen:
        first = f": the first, {ids.first_bad}" if ids.first_bad else ""
        raise KGFormatError(
            files[0] if len(files) == 1 else ", ".join(map(str, files)),
            None,
            "no document in the input"
            + ("s" if len(files) > 1 else "")
            + f" (no line or row is a JSON object "
            f"with a string 'text'{first})",
            "Give JSONL lines or Parquet rows with 'id' and 'text'",
        )
    return out


class _Ids:
    """The document ids seen so far (as text), each with where it was: one id twice is refused."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, str]] = []  # (path, kind) of each file seen
        self.seen: dict[str, tuple[int, int, str]] = {}  # id -> (file, line or row, how the id was given)
        self.first_bad = ""

    def check(self, path: Path, kind: str, first: int, items: Sequence[Any]) -> None:
        if not self.files or self.files[-1] != (path, kind):
            self.files.append((path, kind))
        for number, item in enumerate(items, start=first):
            obj, problem = _document(item)
            if obj is None:
                if problem and not self.first_bad:
                    self.first_bad = f"{_where(path, kind, number)}, is {problem}"
                continue
            where = _where(path, kind, number)
            doc_id = document_id(obj, path, number, where)
            given = "none" if "id" not in obj else type(obj["id"]).__name__
            if doc_id not in self.seen:
                self.seen[doc_id] = (len(self.files) - 1, number, given)
                continue
            file, line, before = self.seen[doc_id]
            why = ""
            if given != before and "none" not in (given, before):
                why = ' (ids are compared as text: 1 and "1" are one id)'
            elif given == "none":
                why = " (a document without an 'id' gets FILE:LINE, and two inputs have this file name)"
            raise KGFormatError(
                where,
                None,
                f"document id {doc_id!r} again, as at {_where(*self.files[file], line)}{why}",
                "Give every document its own id",
            )


def _where(path: Path, kind: str, number: int) -> str:
    return f"{path}:{number}" if kind == "jsonl" else f"{path} row {number}"


def document_id(obj: dict[str, Any], path: str | Path, number: int, where: str) -> str:
    """A document's id as text (the store keys documents by text): its 'id', a string or an integer,
    or FILE:LINE (FILE:ROW for Parquet) when it has none. A null id, or one of another type, is a
    KGFormatError: `null` is more likely a bug in the input than a wish for FILE:LINE."""
    if "id" not in obj:
        return f"{Path(path).name}:{number}"
    value = obj["id"]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    shown = json.dumps(value, ensure_ascii=False, default=str)
    raise KGFormatError(
        where,
        None,
        f"document id {shown[:60]} is not a string or an integer",
        "Give each document a string or integer 'id', or leave 'id' out to have FILE:LINE as its id",
    )


def _read_parquet(path: Path) -> pa.Table:
    """A whole Parquet input; a file that is not Parquet (or is damaged) is a KGFormatError."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PAR1":
        looks = ": it reads as JSON, name it .jsonl" if head[:1] in (b"{", b"[") else ""
        raise KGFormatError(
            path,
            None,
            f"not a Parquet file (it does not begin with PAR1{looks})",
            "Give Parquet files named .parquet and JSON lines named .jsonl",
        )
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise KGFormatError(
            path,
            None,
            f"a damaged Parquet file ({str(e).splitlines()[0][:120]})",
            "Write the file again, or give the documents as JSONL",
        ) from e


def _document(item: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A JSONL line (bytes) or a Parquet row as a document object, or None and why it is not one
    (None and None for a blank line)."""
    if isinstance(item, bytes):
        if not item.strip():
            return None, None
        try:
            obj = json.loads(item.decode("utf-8"))
        except UnicodeDecodeError as e:
            return None, f"not UTF-8 ({e.reason} at byte {e.start})"
        except (ValueError, RecursionError) as e:
            return None, f"not JSON ({str(e)[:80]})"
    else:
        obj = item
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    if not isinstance(obj.get("text"), str):
        return None, "no string 'text'"
    return obj, None


def read_partition(part: Partition) -> tuple[list[Document], list[dict[str, Any]]]:
    """The partition's documents, and an error record for each line or row that is not one."""
    from pipeline.extract import Document

    docs, errors = [], []

    def bad(line: int, reason: str) -> None:
        errors.append({"file": part.source, "line": line, "reason": reason})

    if part.kind == "parquet":
        rows = _parquet_rows(part.source, part.start, part.end)
        numbered: Iterator[tuple[int, Any]] = enumerate(rows, start=part.start)
    else:
        with open(part.source, "rb") as f:
            f.seek(part.offset)
            raw = f.read(part.size).splitlines()
        numbered = enumerate(raw, start=part.start)
    for number, item in numbered:
        obj, problem = _document(item)
        if obj is None:
            if problem:
                bad(number, problem)
            continue
        doc_id = document_id(obj, part.source, number, _where(Path(part.source), part.kind, number))
        metadata = {k: v for k, v in obj.items() if k not in ("id", "text")}
        docs.append(Document(doc_id, without_surrogates(obj["text"]), metadata))
    return docs, errors


def _parquet_rows(source: str, start: int, end: int) -> list[dict[str, Any]]:
    """Rows [start, end) of a Parquet file, reading only the row groups that hold them."""
    file = pq.ParquetFile(source)
    groups, first, seen = [], None, 0
    for g in range(file.metadata.num_row_groups):
        n = file.metadata.row_group(g).num_rows
        if seen + n > start and seen < end:
            groups.append(g)
            first = seen if first is None else first
        seen += n
    if not groups:
        return []
    return file.read_row_groups(groups).slice(start - first, end - start).to_pylist()  # type: ignore[operator]


# the two row tables of an extraction, each column named once: (column, type); every field of
# `Entity` and `Fact` is a column, beside the document's id
ENTITY_COLUMNS = (
    ("doc_id", pa.string()),
    ("start", pa.int32()),
    ("end", pa.int32()),
    ("text", pa.string()),
    ("qid", pa.string()),
    ("score", pa.float32()),
    ("label", pa.string()),
    ("kg_type", pa.string()),
    ("name", pa.string()),
)
FACT_COLUMNS = (
    ("doc_id", pa.string()),
    ("head", pa.string()),
    ("relation", pa.string()),
    ("tail", pa.string()),
    ("score", pa.float32()),
    ("source", pa.string()),
    ("sentence", pa.int32()),
    ("head_name", pa.string()),
    ("relation_name", pa.string()),
    ("tail_name", pa.string()),
    ("head_qid", pa.string()),
    ("tail_qid", pa.string()),
    ("known", pa.bool_()),
    ("evidence", pa.list_(pa.int32())),
    ("evidence_spans", pa.list_(pa.list_(pa.int32()))),
    ("plausibility", pa.float32()),
)


def _rows_table(columns: tuple[tuple[str, pa.DataType], ...], rows: list[tuple[str, Any]]) -> pa.Table:
    """A table of `columns` from (doc id, Entity or Fact) pairs, the dataclass's fields as columns."""
    from dataclasses import asdict

    records = [{"doc_id": doc_id, **asdict(item)} for doc_id, item in rows]
    for r in records:
        if "score" in r:
            r["score"] = round(r["score"], 4)
    return pa.Table.from_pylist(records, schema=pa.schema(list(columns)))


def tables(extractions: Sequence[Extraction]) -> dict[str, pa.Table]:
    """The three output tables of a partition's extractions."""
    dim = int(extractions[0].vector.shape[0]) if extractions else 0
    vectors = (
        np.stack([ex.vector for ex in extractions]).astype(np.float32)
        if extractions
        else np.zeros((0, dim), np.float32)
    )
    docs = {
        "doc_id": pa.array([ex.doc_id for ex in extractions], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        if dim
        else pa.array([], pa.list_(pa.float32())),
        "entities": pa.array([len(ex.entities) for ex in extractions], pa.int32()),
        "metadata": pa.array(
            [json.dumps(ex.metadata, sort_keys=True, ensure_ascii=False) for ex in extractions], pa.string()
        ),
    }
    return {
        "entities": _rows_table(ENTITY_COLUMNS, [(ex.doc_id, e) for ex in extractions for e in ex.entities]),
        "facts": _rows_table(FACT_COLUMNS, [(ex.doc_id, f) for ex in extractions for f in ex.facts]),
        "docs": pa.table(docs),
    }


def run_partition(part: Partition, out: str, bundle: Bundle, mention_vectors: bool = False) -> dict[str, Any]:
    """Extract one partition and write its files (temporary names, then renamed), then its marker.
    Idempotent: a rerun after a crash writes the same bytes."""
    from pipeline.extract import extract

    start, began = time.perf_counter(), time.time()
    docs, errors = read_partition(part)
    extractions = extract(bundle, docs, mention_vectors=mention_vectors)
    root = Path(out)
    written = {}
    for name, table in tables(extractions).items():
        target = root / name / f"part-{part.id}.parquet"
        with atomic_write(target, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        written[name] = {
            "file": str(target.relative_to(root)),
            "rows": table.num_rows,
            "sha256": _sha256(target),
        }
    marker = {
        "partition": part.id,
        "where": part.where,
        "documents": len(docs),
        "files": written,
        "errors": errors,
        "seconds": round(time.perf_counter() - start, 3),
        "wall": [round(began, 3), round(time.time(), 3)],
        "spec": asdict(part),
    }
    write_json(root / DONE / f"{part.id}.json", marker)
    return marker


def _sha256(path: Path) -> str:
    from kg.storage import sha256

    return sha256(path)


def check_done(out: Path, part: Partition) -> tuple[dict[str, Any] | None, str | None]:
    """The partition's done-marker when it and every file it names are intact (the files exist and
    match their sha256); otherwise None and what is wrong (None too when there is no marker: the
    partition was never finished)."""
    path = out / DONE / f"{part.id}.json"
    if not path.is_file():
        return None, None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        files = {
            name: (str(marker["files"][name]["file"]), str(marker["files"][name]["sha256"]))
            for name in TABLES
        }
        counts = [int(marker["files"][name]["rows"]) for name in TABLES] + [int(marker["documents"])]
        ours = marker["partition"] == part.id and isinstance(marker["errors"], list) and min(counts) >= 0
        ours = ours and isinstance(marker["where"], str) and isinstance(marker["spec"]["source"], str)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"its done-marker {DONE}/{path.name} is unreadable ({type(e).__name__})"
    if not ours:
        return None, f"its done-marker {DONE}/{path.name} does not describe this partition"
    for file, digest in files.values():
        if not (out / file).is_file():
            return None, f"{file} is missing"
        if _sha256(out / file) != digest:
            return None, f"{file} does not match the sha256 in its done-marker"
    return marker, None


class BundlePlugin(WorkerPlugin):
    """Loads the bundle once per worker process (never shipped with a task) and gives the worker
    process one torch thread: the worker owns its process, and dask runs one task a thread."""

    name = "kgpipe-bundle"

    def __init__(self, bundle: str | None) -> None:
        self.bundle = bundle

    def setup(self, worker: Worker) -> None:
        import torch

        from pipeline.bundle import load

        torch.set_num_threads(1)
        bundle = load(self.bundle)
        bundle.linker.overlap = False  # one core per worker: the workers are the parallelism
        _ = bundle.facts  # built once here, not inside the first task
        if bundle.has_relations:
            _ = bundle.relations, bundle.entity_finder.nlp
        bundle.link(["Barack Obama visited Paris."])  # and the tables the first document builds
        worker.kgpipe_bundle = bundle  # type: ignore[attr-defined]


def _task(part: Partition, out: str, mention_vectors: bool, topic: str) -> dict[str, Any]:
    """What a worker runs: its own bundle, one partition. A partition whose marker and files are
    intact is not extracted again (dask runs a finished task again when the worker that held its
    result is lost before the client read it). Each extraction begun is an event on `topic`, so
    the client counts the partitions begun twice. Returns a small dict: the files are the result."""
    from distributed import get_worker

    marker, _ = check_done(Path(out), part)
    if marker is not None:
        return {"partition": part.id, "documents": marker["documents"]}
    worker = get_worker()
    worker.log_event(topic, {"partition": part.id, "worker": worker.address})
    marker = run_partition(part, out, worker.kgpipe_bundle, mention_vectors)  # type: ignore[attr-defined]
    return {"partition": part.id, "documents": marker["documents"]}


def run(
    inputs: Sequence[str | Path],
    out: str | Path,
    bundle: str | Path | None = None,
    workers: int = 2,
    scheduler: str | None = None,
    partition_size: int = 100,
    mention_vectors: bool = False,
    memory_limit: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Run the extraction job; returns its summary. A partition whose worker died too often
    (`distributed.scheduler.allowed-failures`) is named in a `BatchError` after the others finish.
    Bad input is refused before anything is written; a job that fails having finished no
    partition removes the folders it created."""
    from kg.manifest import default_bundle, read_manifest
    from pipeline.bundle import fingerprint as bundle_fingerprint

    started = time.perf_counter()
    out = Path(out)
    _check_memory_limit(memory_limit)
    files = expand_inputs(inputs)
    fingerprint = bundle_fingerprint(read_manifest(Path(bundle) if bundle else default_bundle())[1])
    parts = partitions(files, partition_size, fingerprint)
    # what this job creates, removed again if it fails having finished nothing
    created = [p for p in (out, *out.parents) if not p.exists()]
    new = [out / n for n in (JOB, "_manifest.json", "_errors.jsonl", DONE, *TABLES) if not (out / n).exists()]
    write_json(out / JOB, {"format": FORMAT})  # marks the folder as an extraction, from the start
    try:
        for stale in (p for sub in (*TABLES, DONE) for p in (out / sub).glob(".*.tmp-*")):
            stale.unlink(missing_ok=True)  # half-written files of an interrupted run: never renamed
        done, damaged = set(), []
        for p in parts:
            marker, problem = check_done(out, p)
            if marker is not None:
                done.add(p.id)
            elif problem is not None:
                damaged.append(f"{p.where} (partition {p.id}): {problem}")
                (out / DONE / f"{p.id}.json").unlink()  # not done: a crash now leaves it to do again
        todo = [p for p in parts if p.id not in done]
        (out / DONE).mkdir(parents=True, exist_ok=True)
        failed: list[str] = []
        lost: list[str] = []
        reruns: list[str] = []
        n_workers = workers
        if todo:
            failed, lost, reruns, n_workers = _compute(
                todo, out, bundle, workers, scheduler, mention_vectors, memory_limit, progress
            )
        summary, listed = _gather(out, parts, failed, started, n_workers, len(done))
    except BaseException:
        if not any((out / DONE).glob("*.json")):
            _remove_new(new, created)
        raise
    summary.damaged, summary.workers_lost, summary.reruns = damaged, lost, reruns
    if failed:
        _write_manifest(out, summary, fingerprint, listed)
        if not listed and not any((out / DONE).glob("*.json")):
            _remove_new(new, created)
            raise BatchError(
                f"{len(failed)} partition(s) failed and none finished (nothing written): {failed[0]}"
            )
        raise BatchError(
            f"{len(failed)} partition(s) failed, the others are written to {out}: " + "; ".join(failed[:3])
        )
    summary.removed = _remove_superseded(out, parts)
    _write_manifest(out, summary, fingerprint, listed)
    return summary


def _compute(
    todo: list[Partition],
    out: Path,
    bundle: str | Path | None,
    workers: int,
    scheduler: str | None,
    mention_vectors: bool,
    memory_limit: str | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[str], list[str], list[str], int]:
    """Extract the partitions on dask: what failed, the workers lost, the partitions begun more
    than once, and how many workers there were. Each result is released as soon as it is read,
    so a worker lost later takes no finished result with it (dask would compute it again)."""
    import contextlib
    import uuid

    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    cluster = None
    if scheduler is None:
        # dask's nannies make glibc give memory back at every 64 KiB freed
        # (MALLOC_TRIM_THRESHOLD_); linking allocates and frees many small arrays, and that
        # setting cost 17 % of its speed here, so kgpipe's workers trim at 64 MiB
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 64 << 20}):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=memory_limit or _memory_per_worker(workers),
            )
    client = Client(scheduler if scheduler is not None else cluster)
    failed: list[str] = []
    lost: list[str] = []
    begun: dict[str, int] = {}
    topic = f"kgpipe-begun-{uuid.uuid4().hex}"

    def on_scheduler_event(event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") == "remove-worker" and not msg.get("expected"):
            lost.append(str(msg.get("worker")))

    def on_begun(event: tuple[float, Any]) -> None:
        key = str(event[1].get("partition"))
        begun[key] = begun.get(key, 0) + 1

    try:
        client.subscribe_topic("all", on_scheduler_event)
        client.subscribe_topic(topic, on_begun)
        try:
            client.register_plugin(BundlePlugin(None if bundle is None else str(Path(bundle).resolve())))
        except (OSError, KilledWorker) as e:  # CommClosedError is an OSError
            limit = memory_limit or (_memory_per_worker(workers) if scheduler is None else "the cluster's")
            raise BatchError(
                f"the dask workers died while loading the bundle ({type(e).__name__}); with {limit} of "
                "memory per worker the bundle may not fit (it needs about 1.5 GiB): give --memory-limit "
                "more, or fewer --workers; nothing was extracted"
            ) from e
        n_workers = len(client.scheduler_info().get("workers", {})) or workers
        if progress is not None:
            progress(0, len(todo))
        where = {f"kgpipe-{p.id}": p for p in todo}
        pending = as_completed(
            [
                client.submit(_task, p, str(out.resolve()), mention_vectors, topic, key=key, pure=False)
                for key, p in where.items()
            ]
        )  # holds each future until it finishes; then only this loop does, until it releases it
        for finished, future in enumerate(pending, start=1):
            part = where[str(future.key)]
            try:
                future.result()
            except KilledWorker:
                failed.append(
                    f"{part.where} (partition {part.id}): its worker died each time it ran it; "
                    "lower --partition-size or raise the memory limit"
                )
            except Exception as e:  # an error inside the task: named with its partition
                failed.append(f"{part.where} (partition {part.id}): {type(e).__name__}: {str(e)[:200]}")
            finally:
                future.release()
            if progress is not None:
                progress(finished, len(todo))
    finally:
        for name in ("all", topic):  # else the scheduler tells a closed client of its own leaving
            with contextlib.suppress(ValueError):  # not subscribed
                client.unsubscribe_topic(name)
        client.close()
        if cluster is not None:
            cluster.close()
    reruns = [f"{p.where} (partition {p.id})" for p in todo if begun.get(p.id, 0) > 1]
    return failed, lost, reruns, n_workers


def _check_memory_limit(memory_limit: str | None) -> None:
    """Refuse a memory limit dask cannot read, before anything starts."""
    from dask.utils import parse_bytes

    if memory_limit is None:
        return
    try:
        amount = parse_bytes(memory_limit)
    except (ValueError, TypeError, KeyError):
        amount = -1
    if amount <= 0:
        raise BatchError(
            f"memory limit {memory_limit!r} (--memory-limit): not an amount of memory; give one like 4GiB or 4000MB"
        )


def _remove_new(new: list[Path], created: list[Path]) -> None:
    """Remove the files and folders a failed job created in its output folder (each was absent
    before it), then the folders it created to hold them, each only when empty."""
    import shutil

    for path in new:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for folder in created:  # the output folder first, then the parents it needed
        try:
            folder.rmdir()
        except OSError:
            return


def _remove_superseded(out: Path, parts: list[Partition]) -> int:
    """Remove the partitions an earlier run made of this job's input files that this job does not
    list (another --partition-size, a changed file, another bundle): their marker, and the files
    it names under kgpipe's own names. Partitions of other input files are kept (a run over those
    files reuses them); nothing else is touched."""
    keep = {p.id for p in parts}
    sources = {p.source for p in parts}
    removed = 0
    for path in sorted((out / DONE).glob("*.json")):
        if path.stem in keep:
            continue
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
            source = marker["spec"]["source"]
            named = {str(f["file"]) for f in marker["files"].values()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a marker kgpipe can read: left alone
        if source not in sources:
            continue
        for name in TABLES:
            if f"{name}/part-{path.stem}.parquet" in named:
                (out / name / f"part-{path.stem}.parquet").unlink(missing_ok=True)
        path.unlink()
        removed += 1
    return removed


def _memory_per_worker(workers: int) -> str:
    """An even share of the machine's memory per worker, less 1 GiB for the rest."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max((total - (1 << 30)) // max(workers, 1), 1 << 30) // (1 << 20)}MiB"


def _gather(
    out: Path,
    parts: list[Partition],
    failed: list[str],
    started: float,
    workers: int,
    skipped: int,
) -> tuple[Summary, list[dict[str, Any]]]:
    """Gather the markers into `_errors.jsonl`, the summary, and the manifest's partitions
    (`_write_manifest` writes it, last)."""
    markers = []
    for p in parts:
        try:
            markers.append(json.loads((out / DONE / f"{p.id}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # not finished (failed)
    errors = [e for m in markers for e in m["errors"]]
    with atomic_write(out / "_errors.jsonl") as f:
        for e in errors:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    count = lambda table: sum(m["files"][table]["rows"] for m in markers)  # noqa: E731
    summary = Summary(
        out=str(out),
        partitions=len(parts),
        skipped=skipped,
        documents=count("docs"),
        entities=count("entities"),
        facts=count("facts"),
        errors=len(errors),
        seconds=round(time.perf_counter() - started, 2),
        workers=workers,
        failed=failed,
    )
    listed = [
        {
            "id": m["partition"],
            "where": m["where"],
            "source": m["spec"]["source"],
            "documents": m["documents"],
            "files": m["files"],
        }
        for m in markers
    ]
    return summary, listed


def _write_manifest(out: Path, summary: Summary, fingerprint: str, listed: list[dict[str, Any]]) -> None:
    from importlib.metadata import version

    write_json(
        out / "_manifest.json",
        {
            "format": FORMAT,
            "kgpipe_version": version("kgpipe"),
            "bundle": fingerprint,
            "partitions": listed,
            "documents": summary.documents,
            "entities": summary.entities,
            "facts": summary.facts,
            "errors": summary.errors,
            "failed": summary.failed,
            "damaged": summary.damaged,
            "workers_lost": summary.workers_lost,
            "reruns": summary.reruns,
            "removed": summary.removed,
        },
    )
