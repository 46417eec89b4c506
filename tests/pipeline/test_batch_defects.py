"""Defects of the batch job, each on a real dask cluster and real files: a lost worker costs no
finished partition and is named; a damaged partition or done-marker is extracted again; `kgpipe
index` reads exactly the files the manifest lists, each checked; a rerun with another layout
removes the old layout's partitions and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.batch import run
from pipeline.search import _read_extraction
from pipeline.store import StoreError
from tests.pipeline.test_batch import BIN, corpus_lines, free_port, parquet_digest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture
def scheduler_and_two_workers() -> Iterator[tuple[str, dict[str, int]]]:
    """A `dask scheduler` and two `dask worker` processes (no nanny: a killed worker stays dead)
    on 127.0.0.1: the scheduler's address and each worker's address -> its pid."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"

    def dask(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "dask"), *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    procs = [dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")]
    try:
        for _ in range(2):
            procs.append(dask("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            pids = client.run(os.getpid)
        yield address, pids
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_a_lost_worker_reruns_no_finished_partition_and_is_named(
    scheduler_and_two_workers: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    address, pids = scheduler_and_two_workers
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(corpus_lines(24)) + "\n")
    out = tmp_path / "x"
    first_seen: dict[str, tuple[int, int]] = {}  # marker -> (inode, mtime) when it first appeared
    done_at_kill: set[str] = set()
    victim = ""
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run, [source], out, scheduler=address, partition_size=2)  # 12 partitions
        while not job.done():
            for marker in (out / "_done").glob("*.json"):
                stat = marker.stat()
                first_seen.setdefault(marker.stem, (stat.st_ino, stat.st_mtime_ns))
            if not victim and len(first_seen) >= 4:  # a third of the job done, on both workers
                victim, pid = sorted(pids.items())[0]
                os.kill(pid, signal.SIGKILL)
                done_at_kill = set(first_seen)
            time.sleep(0.02)
        summary = job.result()
    assert victim, "the job ended before a third of it was done"
    markers = {m.stem: m.stat() for m in (out / "_done").glob("*.json")}
    assert len(markers) == 12
    rewritten = sorted(k for k, st in markers.items() if (st.st_ino, st.st_mtime_ns) != first_seen[k])
    assert not rewritten, f"done-markers written twice: {rewritten}"
    assert summary.workers_lost == [victim]
    assert not [r for r in summary.reruns if any(d in r for d in done_at_kill)]
    assert len(summary.reruns) <= 1  # at most the partition the lost worker was extracting
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["workers_lost"] == [victim] and manifest["reruns"] == summary.reruns
    _, docs, _, _, _ = _read_extraction(out)
    want = [str(json.loads(line)["id"]) for line in corpus_lines(24)]
    assert sorted(docs.column("doc_id").to_pylist()) == sorted(want)


def extract(source: Path, out: Path, size: int) -> subprocess.CompletedProcess[str]:
    args = [str(BIN / "kgpipe"), "extract", str(source), "--out", str(out), "--workers", "1"]
    return subprocess.run(
        [*args, "--partition-size", str(size)], capture_output=True, text=True, env=ENV, timeout=300
    )


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture(scope="module")
def extraction(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """in.jsonl (6 documents) and x/, its extraction in 3 partitions; each test works on a copy."""
    root = tmp_path_factory.mktemp("extraction")
    (root / "in.jsonl").write_text("\n".join(corpus_lines(6)) + "\n")
    run([root / "in.jsonl"], root / "x", workers=1, partition_size=2)
    return root


WANT = sorted(str(json.loads(line)["id"]) for line in corpus_lines(6))


@pytest.mark.slow
def test_a_rerun_extracts_a_truncated_partition_file_and_done_marker_again(
    extraction: Path, tmp_path: Path
) -> None:
    source = extraction / "in.jsonl"
    out = tmp_path / "x"
    shutil.copytree(extraction / "x", out)
    whole = parquet_digest(out)
    listed = json.loads((out / "_manifest.json").read_text())["partitions"]
    truncate(out / listed[0]["files"]["docs"]["file"], 100)  # a partition file cut short
    truncate(out / "_done" / f"{listed[1]['id']}.json", 30)  # a done-marker cut short
    again = extract(source, out, 2)  # the same command again
    assert again.returncode == 0, again.stderr[-2000:]
    said = " ".join(again.stderr.split())
    assert "2 partition(s) damaged, extracted again" in said and "1 already done" in said
    assert parquet_digest(out) == whole
    manifest = json.loads((out / "_manifest.json").read_text())
    assert len(manifest["damaged"]) == 2 and manifest["documents"] == 6
    _, docs, _, _, _ = _read_extraction(out)
    assert sorted(docs.column("doc_id").to_pylist()) == WANT


@pytest.mark.slow
def test_index_reads_only_the_files_the_manifest_lists_and_checks_each(
    extraction: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x"
    shutil.copytree(extraction / "x", out)
    listed = json.loads((out / "_manifest.json").read_text())["partitions"]
    _, docs, ents, _, sources = _read_extraction(out)
    assert sorted(docs.column("doc_id").to_pylist()) == WANT and ents.num_rows > 0
    assert set(sources) == {Path(p["files"]["docs"]["file"]).name for p in listed}
    assert set(sources.values()) == {"in.jsonl"}
    # a Parquet file no manifest lists (a copy of a listed one: its ids twice if it were read)
    stray = out / "docs" / "part-00000000000000000000.parquet"
    stray.write_bytes((out / listed[2]["files"]["docs"]["file"]).read_bytes())
    _, docs, _, _, _ = _read_extraction(out)
    assert sorted(docs.column("doc_id").to_pylist()) == WANT
    damaged = out / listed[2]["files"]["entities"]["file"]
    truncate(damaged, 50)
    with pytest.raises(StoreError, match=f"{damaged.name}.*damaged.*kgpipe extract .* again"):
        _read_extraction(out)
    damaged.unlink()
    with pytest.raises(StoreError, match=f"{damaged.name}.*missing.*kgpipe extract .* again"):
        _read_extraction(out)


@pytest.mark.slow
def test_a_rerun_with_another_partition_size_removes_the_old_partitions_and_nothing_else(
    extraction: Path, tmp_path: Path
) -> None:
    source = extraction / "in.jsonl"
    out = tmp_path / "x"
    shutil.copytree(extraction / "x", out)
    (out / "docs" / "notes.txt").write_text("mine\n")
    stray = out / "docs" / "part-00000000000000000000.parquet"  # no marker names it: not kgpipe's
    stray.write_bytes(b"PAR1")
    relaid = run([source], out, workers=1, partition_size=3)  # another layout of the same input
    assert relaid.removed == 3 and relaid.partitions == 2 and relaid.skipped == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    named = {f["file"] for p in manifest["partitions"] for f in p["files"].values()}
    on_disk = {
        str(p.relative_to(out)) for sub in ("docs", "entities", "facts") for p in (out / sub).iterdir()
    }
    assert on_disk == named | {"docs/notes.txt", f"docs/{stray.name}"}
    assert sorted(m.stem for m in (out / "_done").glob("*.json")) == sorted(
        p["id"] for p in manifest["partitions"]
    )
    _, docs, _, _, _ = _read_extraction(out)
    assert sorted(docs.column("doc_id").to_pylist()) == WANT


@pytest.mark.slow
def test_kgpipe_index_of_a_damaged_partition_names_the_file_and_the_fix(tmp_path: Path) -> None:
    out = tmp_path / "x"
    files = {
        t: {"file": f"{t}/part-a.parquet", "rows": 1, "sha256": "0" * 64}
        for t in ("docs", "entities", "facts")
    }
    for t in files:
        (out / t).mkdir(parents=True)
        (out / t / "part-a.parquet").write_bytes(b"PAR1 cut short")
    partition = {"id": "a", "where": "in.jsonl lines 1-1", "documents": 1, "files": files}
    (out / "_manifest.json").write_text(json.dumps({"format": "kgpipe-extract/1", "partitions": [partition]}))
    p = subprocess.run(
        [str(BIN / "kgpipe"), "index", str(out), "--out", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    error = [line for line in p.stderr.splitlines() if line.startswith("kgpipe: error: ")]
    assert len(error) == 1 and "docs/part-a.parquet: damaged" in error[0] and "--out" in error[0], p.stderr
    assert not (tmp_path / "store").exists()
