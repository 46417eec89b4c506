"""The vector store on real FAISS files and on Milvus Lite: writes, deletes, filters applied before
the search, reopening, refusals; and a store built from a real extraction, searched by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.search import Searcher
from pipeline.store import Filter, StoreError, create_store, int_id, open_store

BIN = Path(sys.executable).parent
DIM = 24


def items(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    x = (centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)
    meta = [
        {
            "title": f"doc {i}",
            "source": "a" if i % 2 else "b",
            "year": 1900 + i % 50,
            "entities": ["Q90"] if i % 250 == 0 else [f"Q{i % 7 + 1}"],
            "types": ["LOC"] if i % 250 == 0 else ["PER"],
        }
        for i in range(n)
    ]
    return [f"d{i}" for i in range(n)], x, meta


def exact_top(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[int]]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    if allowed is not None:
        sims[:, ~allowed] = -np.inf
    return [list(np.argsort(-row, kind="stable")[:k]) for row in sims]


@pytest.fixture(params=["faiss", "milvus"])
def address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store") if request.param == "faiss" else f"milvus:{tmp_path / 'store.db'}"


def test_writes_deletes_filters_and_reopens_alike_on_faiss_and_milvus(address: str) -> None:
    ids, x, meta = items(1000)
    store = create_store(address, {"name": "test", "model_id": "m1"})
    docs = store.create_collection("docs", DIM)
    docs.upsert(ids, x, meta)
    q = x[:5] + 0.01
    hits = docs.search(q, 10)
    assert [[h.id for h in row] for row in hits] == [[ids[i] for i in row] for row in exact_top(x, q, 10)]
    assert all([h.score for h in row] == sorted((h.score for h in row), reverse=True) for row in hits)
    assert hits[0][0].metadata["title"] == "doc 0" and hits[0][0].metadata["year"] == 1900
    # a filter that 4 of 1000 pass still gives every one of them, nearest first
    only = docs.search(q[:1], 10, Filter(entities=("Q90",)))[0]
    assert sorted(h.id for h in only) == ["d0", "d250", "d500", "d750"]
    assert [h.id for h in only] == [ids[i] for i in exact_top(x, q[:1], 4, np.arange(1000) % 250 == 0)[0]]
    typed = docs.search(q[:1], 10, Filter(types=("PER",), where=(("source", "a"), ("year", "1911"))))[0]
    assert typed and all(h.metadata["source"] == "a" and h.metadata["year"] == 1911 for h in typed)
    # upsert replaces, delete removes
    docs.upsert(["d1"], -x[1:2], [{**meta[1], "title": "replaced"}])
    assert docs.get(["d1"])[0]["title"] == "replaced"
    assert docs.delete(["d0", "nope"]) == 1
    assert docs.get(["d0"])[0] is None and len(docs) == 999
    store.save()
    store.close()
    again = open_store(address).collection("docs")
    assert len(again) == 999
    after = again.search(q, 10)
    assert "d0" not in {h.id for row in after for h in row}
    reopened = open_store(address).collection("docs").search(q, 10, Filter(entities=("Q90",)))
    assert [h.id for h in reopened[0]] == [h.id for h in again.search(q, 10, Filter(entities=("Q90",)))[0]]


def test_an_ivf_index_keeps_recall_and_selective_filters_are_exact(tmp_path: Path) -> None:
    ids, x, meta = items(6000, seed=1)
    store = create_store(tmp_path / "s", {"model_id": "m"})
    docs = store.create_collection("docs", DIM, factory="IDMap2,IVF64,SQ8")
    docs.nprobe = 16
    docs.upsert(ids, x, meta)
    q = x[:50] + 0.05
    truth = exact_top(x, q, 10)
    got = docs.search(q, 10)
    recall = np.mean(
        [len({h.id for h in row} & {ids[i] for i in t}) / 10 for row, t in zip(got, truth, strict=True)]
    )
    assert recall >= 0.9
    # 24 of 6000 pass: searched exactly, every one of the top 10 is right
    allowed = np.arange(6000) % 250 == 0
    got = docs.search(q, 10, Filter(entities=("Q90",)))
    assert [[h.id for h in row] for row in got] == [
        [ids[i] for i in row] for row in exact_top(x, q, 10, allowed)
    ]
    store.save()
    assert open_store(tmp_path / "s").collection("docs").info()["factory"] == "IDMap2,IVF64,SQ8"


def test_a_store_refuses_what_it_cannot_hold_and_says_what_to_do(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s", {"name": "a", "model_id": "m1"})
    docs = store.create_collection("docs", DIM)
    ids, x, meta = items(10)
    with pytest.raises(StoreError, match="vectors of shape"):
        docs.upsert(ids, x[:, :5], meta)
    with pytest.raises(StoreError, match="NaN"):
        docs.upsert(ids[:1], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(StoreError, match="same id twice"):
        docs.upsert(["a", "a"], x[:2])
    docs.upsert(ids, x, meta)
    with pytest.raises(StoreError, match="no column 'colour'"):
        docs.search(x[:1], 3, Filter(where=(("colour", "red"),)))
    with pytest.raises(StoreError, match="COLUMN=VALUE"):
        Filter.parse(where=["colour"])
    store.save()
    with pytest.raises(StoreError, match="built with encoder"):
        create_store(tmp_path / "s", {"name": "b", "model_id": "m2"})
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(StoreError, match="format version 99"):
        open_store(tmp_path / "s")
    with pytest.raises(StoreError, match="no store here"):
        open_store(tmp_path / "nothing")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a kgpipe store"):
        create_store(tmp_path / "taken")
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"
    assert int_id("d1") != int_id("d2") and 0 <= int_id("x") < 2**63


def test_a_failed_save_leaves_the_previous_store_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = create_store(tmp_path / "s", {"model_id": "m"})
    docs = store.create_collection("docs", DIM)
    ids, x, meta = items(100)
    docs.upsert(ids, x, meta)
    store.save()
    before = {p.name: p.read_bytes() for p in (tmp_path / "s" / "docs").iterdir()}
    with pytest.raises(StoreError, match="Parquet cannot hold"):
        docs.upsert(["new"], x[:1], [{"bad": object()}])
    assert len(docs) == 100
    docs.upsert(["new"], x[:1])

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.save()
    assert {p.name: p.read_bytes() for p in (tmp_path / "s" / "docs").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


# ------------------------------------------------------------------ from an extraction, by the CLI


@pytest.fixture(scope="module")
def extraction(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.batch import run
    from tests.pipeline.test_batch import corpus_lines

    root = tmp_path_factory.mktemp("extraction")
    docs = [json.loads(line) for line in corpus_lines(40)]  # the sample, repeated, where ../shared is absent
    seen: set[str] = set()  # ids and titles unique, also where the sample repeats
    lines = []
    for i, d in enumerate(docs):
        title = d["title"] if d["title"] not in seen else f"{d['title']} ({i})"
        seen.add(title)
        lines.append(json.dumps({**d, "id": f"{d['id']}-{i}", "title": title}))
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    run([root / "in.jsonl"], root / "x", workers=1, partition_size=20)
    return root


def kgpipe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(BIN / "kgpipe"), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_index_and_search_an_extraction_by_title_entity_and_filter(extraction: Path) -> None:
    docs = [json.loads(line) for line in (extraction / "in.jsonl").read_text().splitlines()]
    for store in (str(extraction / "s"), f"milvus:{extraction / 'm.db'}"):
        made = kgpipe("index", str(extraction / "x"), "--out", store)
        assert made.returncode == 0, made.stderr
        assert "indexed 40 new documents" in " ".join(made.stderr.split())
        searcher = Searcher.open(store)
        found = searcher.text([d["title"] for d in docs], 10)
        own = sum(any(h.id == d["id"] for h in hits) for hits, d in zip(found, docs, strict=True))
        assert own >= 36  # of 40
        searcher.store.close()  # Milvus Lite lets one process at a time open its file
        p = kgpipe("search", store, docs[0]["title"], "--k", "10", "--json")
        assert p.returncode == 0, p.stderr
        assert [h["id"] for h in json.loads(p.stdout)["hits"]] == [h.id for h in found[0]]
        ent = json.loads(kgpipe("search", store, "--like-entity", "Q90", "--json").stdout)
        assert ent["entity"]["label"] == "Paris" and ent["hits"] and ent["neighbours"]
        mentioned = next(h.metadata["entities"] for hits in found for h in hits if h.metadata["entities"])
        if mentioned:
            only = json.loads(kgpipe("search", store, "history", "--entity", mentioned[0], "--json").stdout)[
                "hits"
            ]
            assert only and all(mentioned[0] in h["entities"] for h in only)
        where = json.loads(
            kgpipe("search", store, "history", "--where", f"title={docs[3]['title']}", "--json").stdout
        )
        assert [h["id"] for h in where["hits"]] == [docs[3]["id"]]
        # indexing again adds nothing
        again = kgpipe("index", str(extraction / "x"), "--out", store)
        assert "indexed 0 new documents (40 already there" in " ".join(again.stderr.split())


@pytest.mark.slow
def test_search_refuses_bad_requests_in_one_line(extraction: Path) -> None:
    store = str(extraction / "s")
    if not (extraction / "s").exists():
        assert kgpipe("index", str(extraction / "x"), "--out", store).returncode == 0
    for args, says in (
        (["search", store, "--like-entity", "Q99999999999"], "not in this store's KG"),
        (["search", store, "x", "--where", "nocolumn=1"], "no column 'nocolumn'"),
        (["search", store, "x", "--k", "0"], "between 1 and 10000"),
        (["search", store], "give QUERY text or --like-entity"),
        (["search", str(extraction / "nothing"), "x"], "no store here"),
        (["index", str(extraction / "in.jsonl"), "--out", store + "2"], "no such folder"),
        (["index", str(extraction), "--out", store + "3"], "no _manifest.json"),
    ):
        p = kgpipe(*args)
        assert p.returncode != 0 and says in " ".join(p.stderr.split()), (args, p.stderr)
        assert "Traceback" not in p.stderr
