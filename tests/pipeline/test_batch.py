"""Batch extraction on real dask clusters: a LocalCluster, and a `dask scheduler` with two
`dask worker` processes on 127.0.0.1; bad lines reported, reruns idle, nothing lost."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.batch import run

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"
BIN = Path(sys.executable).parent
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "corpus" / "sample.jsonl"


def corpus_lines(n: int) -> list[str]:
    """n documents of the corpus; where ../shared is absent, the sample repeated, each repeat with
    its own id (an extraction refuses one id twice)."""
    if CORPUS.exists():
        return CORPUS.read_text(encoding="utf-8").splitlines()[:n]
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in (lines * (n // len(lines) + 1))[:n]]
    return [
        json.dumps({**d, "id": d["id"] if i < len(lines) else f"{d['id']}-{i}"}) for i, d in enumerate(docs)
    ]


def parquet_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def doc_ids(folder: Path) -> list[str]:
    return [
        str(x) for x in ds.dataset(folder / "docs", format="parquet").to_table().column("doc_id").to_pylist()
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two JSONL files (one with a bad line and one line that is not UTF-8) and a Parquet file."""
    root = tmp_path_factory.mktemp("inputs")
    lines = [json.loads(line) for line in corpus_lines(24)]
    for i, obj in enumerate(lines):
        obj["id"] = f"doc-{i}"
        obj["source"] = "wiki"
    good = [json.dumps(o) for o in lines[:10]]
    (root / "a.jsonl").write_text("\n".join([*good[:4], "{not json", *good[4:], '{"id": "x"}']) + "\n")
    (root / "b.jsonl").write_bytes(
        ("\n".join(json.dumps(o) for o in lines[10:16]) + "\n").encode()
        + b'{"id": "bad", "text": "caf\xe9"}\n'
    )
    pq.write_table(pa.Table.from_pylist(lines[16:24]), root / "c.parquet")
    return root


@pytest.mark.slow
def test_a_local_cluster_extracts_every_document_once_reports_bad_lines_and_reruns_idle(
    inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x"
    files = [inputs / "a.jsonl", inputs / "b.jsonl", inputs / "c.parquet"]
    summary = run(files, out, workers=2, partition_size=4)
    assert sorted(doc_ids(out)) == sorted(f"doc-{i}" for i in range(24))
    assert summary.documents == 24 and summary.entities > 24 and summary.errors == 3
    errors = [json.loads(line) for line in (out / "_errors.jsonl").read_text().splitlines()]
    assert {(Path(e["file"]).name, e["line"]) for e in errors} == {
        ("a.jsonl", 5),
        ("a.jsonl", 12),
        ("b.jsonl", 7),
    }
    assert any("UTF-8" in e["reason"] for e in errors) and any("JSON" in e["reason"] for e in errors)
    docs = ds.dataset(out / "docs", format="parquet").to_table().to_pylist()
    assert all(json.loads(d["metadata"])["source"] == "wiki" for d in docs)
    assert all(len(d["vector"]) == 384 for d in docs)
    facts = ds.dataset(out / "facts", format="parquet").to_table()
    assert set(facts.column("source").to_pylist()) == {"text"} and facts.num_rows > 0
    assert all(f["evidence"] and f["relation"].startswith("P") for f in facts.to_pylist())
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["documents"] == 24 and len(manifest["partitions"]) == summary.partitions
    before = parquet_digest(out)
    again = run(files, out, workers=2, partition_size=4)
    assert again.skipped == again.partitions and parquet_digest(out) == before


def entities(root: Path) -> pa.Table:
    table = ds.dataset(root / "entities", format="parquet").to_table()
    return table.sort_by([("doc_id", "ascending"), ("start", "ascending")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_same_job_runs_on_a_dask_scheduler_and_two_worker_processes(inputs: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        time.sleep(3)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        f"tcp://127.0.0.1:{port}",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(5)
        files = [inputs / "a.jsonl", inputs / "c.parquet"]
        remote = run(files, tmp_path / "remote", scheduler=f"tcp://127.0.0.1:{port}", partition_size=4)
        assert remote.workers == 2
        run(files, tmp_path / "local", workers=1, partition_size=4)
        assert sorted(doc_ids(tmp_path / "remote")) == sorted(doc_ids(tmp_path / "local"))
        assert entities(tmp_path / "remote").equals(entities(tmp_path / "local"))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def extract_command(inputs: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(
        [
            str(BIN / "kgpipe"),
            "extract",
            str(inputs),
            "--out",
            str(out),
            "--workers",
            "2",
            "--partition-size",
            "5",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_first_output(out: Path, job: subprocess.Popen[str], seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and job.poll() is None:
        if list(out.glob("docs/*.parquet")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no output appeared (exit {job.poll()})")


def workers_of(pid: int) -> list[int]:
    """The dask worker processes under `pid`: leaves of its process tree but the resource tracker
    (whole command lines, -ww: a worker's own names `tracker_fd`, so match the tracker's module)."""
    tree = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True
    ).stdout.splitlines()
    rows = [(int(a), int(b), c) for a, b, c in (line.split(None, 2) for line in tree if line.strip())]
    children: dict[int, list[int]] = {}
    for p, parent, _ in rows:
        children.setdefault(parent, []).append(p)
    below, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            below.append(child)
            todo.append(child)
    args = {p: c for p, _, c in rows}
    return [p for p in below if not children.get(p) and "resource_tracker" not in args.get(p, "")]


@pytest.fixture(scope="module")
def sixty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sixty") / "in.jsonl"
    path.write_text("\n".join(corpus_lines(60)) + "\n")
    return path


@pytest.mark.slow
def test_a_killed_worker_loses_and_duplicates_nothing(sixty: Path, tmp_path: Path) -> None:
    import signal

    out = tmp_path / "killed"
    job = extract_command(sixty, out)
    wait_for_first_output(out, job)
    victims = workers_of(job.pid)
    assert victims, "no dask worker process found"
    os.kill(victims[0], signal.SIGKILL)
    _, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-2000:]
    assert "1 dask worker(s) lost during the job" in " ".join(err.split()), err[-2000:]
    ids = doc_ids(out)
    want = [str(json.loads(line)["id"]) for line in corpus_lines(60)]
    assert sorted(ids) == sorted(want)


@pytest.mark.slow
def test_an_interrupted_job_resumes_to_the_bytes_of_an_uninterrupted_one(sixty: Path, tmp_path: Path) -> None:
    import signal

    whole = extract_command(sixty, tmp_path / "whole")
    assert whole.wait(timeout=600) == 0
    out = tmp_path / "resumed"
    job = extract_command(sixty, out)
    wait_for_first_output(out, job)
    os.killpg(job.pid, signal.SIGKILL)  # the client and its cluster, mid-job
    job.wait(timeout=60)
    assert not (out / "_manifest.json").exists()
    again = extract_command(sixty, out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert parquet_digest(out) == parquet_digest(tmp_path / "whole")
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["documents"] == 60


@pytest.mark.slow
def test_workers_over_their_memory_limit_end_the_job_with_a_clear_error(sixty: Path, tmp_path: Path) -> None:
    from pipeline.batch import BatchError

    start = time.time()
    with pytest.raises(BatchError, match="memory"):
        run([sixty], tmp_path / "x", workers=1, partition_size=30, memory_limit="700MiB")
    assert time.time() - start < 300  # an error, not a hang
    assert not (tmp_path / "x").exists()  # the job made the folder, finished nothing: nothing is left
