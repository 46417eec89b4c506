"""Batch extraction over corpora on dask.distributed: one task per partition, resumable, nothing lost.

Inputs are JSONL or Parquet files (or globs): `id`, `text`, every other column kept as document
metadata. Partitions have stable ids (source path, line or row range, a hash of their content,
the bundle's fingerprint). A task extracts its partition with the bundle its worker loaded once
(a `WorkerPlugin`), writes `entities/`, `facts/` and `docs/` Parquet files under temporary names,
renames them, then writes a done-marker; a rerun skips partitions with a marker, and
`_manifest.json` is written last. The same code runs on a `LocalCluster` or on a scheduler's address.
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
    """Stable partitions of `size` lines (JSONL) or rows (Parquet) of each file."""
    out = []
    for path in files:
        source = str(path.resolve())
        if path.suffix.lower() == ".parquet":
            rows = pq.ParquetFile(path).metadata.num_rows
            table = pq.read_table(path)
            for start in range(0, rows, size):
                part = table.slice(start, size)
                digest = hashlib.sha256(str(part.to_pylist()).encode("utf-8", "surrogatepass")).hexdigest()
                out.append(Partition(source, "parquet", start, min(start + size, rows), 0, 0, digest, bundle))
            continue
        with open(path, "rb") as f:
            data = f.read()
        lines = data.splitlines(keepends=True)
        offset = 0
        for start in range(0, len(lines), size):
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
    return out


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
        if isinstance(item, bytes):
            if not item.strip():
                continue
            try:
                obj = json.loads(item.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad(number, f"not UTF-8 ({e.reason} at byte {e.start})")
                continue
            except (ValueError, RecursionError) as e:
                bad(number, f"not JSON ({str(e)[:80]})")
                continue
        else:
            obj = item
        if not isinstance(obj, dict):
            bad(number, "not a JSON object")
            continue
        text = obj.get("text")
        if not isinstance(text, str):
            bad(number, "no string 'text'")
            continue
        doc_id = obj.get("id", f"{Path(part.source).name}:{number}")
        metadata = {k: v for k, v in obj.items() if k not in ("id", "text")}
        docs.append(Document(str(doc_id), without_surrogates(text), metadata))
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


def tables(extractions: Sequence[Extraction]) -> dict[str, pa.Table]:
    """The three output tables of a partition's extractions."""
    ents: dict[str, list[Any]] = {
        k: [] for k in ("doc_id", "start", "end", "text", "qid", "score", "label", "kg_type")
    }
    facts: dict[str, list[Any]] = {
        k: [] for k in ("doc_id", "head", "relation", "tail", "score", "source", "sentence")
    }
    for ex in extractions:
        for e in ex.entities:
            for k, v in (
                ("doc_id", ex.doc_id),
                ("start", e.start),
                ("end", e.end),
                ("text", e.text),
                ("qid", e.qid),
                ("score", round(e.score, 4)),
                ("label", e.label),
                ("kg_type", e.kg_type),
            ):
                ents[k].append(v)
        for f in ex.facts:
            for k, v in (
                ("doc_id", ex.doc_id),
                ("head", f.head),
                ("relation", f.relation),
                ("tail", f.tail),
                ("score", f.score),
                ("source", f.source),
                ("sentence", f.sentence),
            ):
                facts[k].append(v)
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
        "entities": pa.table(
            ents,
            schema=pa.schema(
                [
                    ("doc_id", pa.string()),
                    ("start", pa.int32()),
                    ("end", pa.int32()),
                    ("text", pa.string()),
                    ("qid", pa.string()),
                    ("score", pa.float32()),
                    ("label", pa.string()),
                    ("kg_type", pa.string()),
                ]
            ),
        ),
        "facts": pa.table(
            facts,
            schema=pa.schema(
                [
                    ("doc_id", pa.string()),
                    ("head", pa.string()),
                    ("relation", pa.string()),
                    ("tail", pa.string()),
                    ("score", pa.float32()),
                    ("source", pa.string()),
                    ("sentence", pa.int32()),
                ]
            ),
        ),
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
        bundle.link(["Barack Obama visited Paris."])  # and the tables the first document builds
        worker.kgpipe_bundle = bundle  # type: ignore[attr-defined]


def _task(part: Partition, out: str, mention_vectors: bool) -> dict[str, Any]:
    """What a worker runs: its own bundle, one partition."""
    from distributed import get_worker

    bundle = get_worker().kgpipe_bundle  # type: ignore[attr-defined]
    return run_partition(part, out, bundle, mention_vectors)


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
    (`distributed.scheduler.allowed-failures`) is named in a `BatchError` after the others finish."""
    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    from kg.manifest import default_bundle, read_manifest
    from pipeline.bundle import fingerprint as bundle_fingerprint

    started = time.perf_counter()
    out = Path(out)
    files = expand_inputs(inputs)
    fingerprint = bundle_fingerprint(read_manifest(Path(bundle) if bundle else default_bundle())[1])
    parts = partitions(files, partition_size, fingerprint)
    write_json(out / JOB, {"format": FORMAT})  # marks the folder as an extraction, from the start
    for stale in (p for sub in (*TABLES, DONE) for p in (out / sub).glob(".*.tmp-*")):
        stale.unlink(missing_ok=True)  # half-written files of an interrupted run: never renamed
    done = {p.id for p in parts if (out / DONE / f"{p.id}.json").is_file()}
    todo = [p for p in parts if p.id not in done]
    (out / DONE).mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    n_workers = workers
    if todo:
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
        try:
            try:
                client.register_plugin(BundlePlugin(None if bundle is None else str(Path(bundle).resolve())))
            except (OSError, KilledWorker) as e:  # CommClosedError is an OSError
                limit = memory_limit or (
                    _memory_per_worker(workers) if scheduler is None else "the cluster's"
                )
                raise BatchError(
                    f"the dask workers died while loading the bundle ({type(e).__name__}); with {limit} of "
                    "memory per worker the bundle may not fit (it needs about 1.5 GiB): give --memory-limit "
                    "more, or fewer --workers; nothing was extracted"
                ) from e
            n_workers = len(client.scheduler_info().get("workers", {})) or workers
            futures = {
                client.submit(
                    _task, p, str(out.resolve()), mention_vectors, key=f"kgpipe-{p.id}", pure=False
                ): p
                for p in todo
            }
            for finished, future in enumerate(as_completed(futures), start=1):
                part = futures[future]
                try:
                    future.result()
                except KilledWorker:
                    failed.append(
                        f"{part.where} (partition {part.id}): its worker died each time it ran it; "
                        "lower --partition-size or raise the memory limit"
                    )
                except Exception as e:  # an error inside the task: named with its partition
                    failed.append(f"{part.where} (partition {part.id}): {type(e).__name__}: {str(e)[:200]}")
                if progress is not None:
                    progress(finished, len(todo))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    summary = _manifest(out, parts, fingerprint, failed, started, n_workers, len(done))
    if failed:
        raise BatchError(
            f"{len(failed)} partition(s) failed, the others are written to {out}: " + "; ".join(failed[:3])
        )
    return summary


def _memory_per_worker(workers: int) -> str:
    """An even share of the machine's memory per worker, less 1 GiB for the rest."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max((total - (1 << 30)) // max(workers, 1), 1 << 30) // (1 << 20)}MiB"


def _manifest(
    out: Path,
    parts: list[Partition],
    fingerprint: str,
    failed: list[str],
    started: float,
    workers: int,
    skipped: int,
) -> Summary:
    """Gather the markers into `_errors.jsonl` and `_manifest.json` (written last)."""
    from importlib.metadata import version

    markers = []
    for p in parts:
        path = out / DONE / f"{p.id}.json"
        if path.is_file():
            markers.append(json.loads(path.read_text(encoding="utf-8")))
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
    write_json(
        out / "_manifest.json",
        {
            "format": FORMAT,
            "kgpipe_version": version("kgpipe"),
            "bundle": fingerprint,
            "partitions": [
                {"id": m["partition"], "where": m["where"], "documents": m["documents"], "files": m["files"]}
                for m in markers
            ],
            "documents": summary.documents,
            "entities": summary.entities,
            "facts": summary.facts,
            "errors": summary.errors,
            "failed": failed,
        },
    )
    return summary
