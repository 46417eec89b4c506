"""The vector store on real FAISS files and on Milvus Lite: writes, deletes, filters applied before
the search, reopening, refusals; and a store built from a real extraction, searched by the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.search import Searcher
from pipeline.store import FaissCollection, Filter, Hit, StoreError, create_store, int_id, open_store

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


def test_metadata_of_several_types_is_kept_as_text_and_apart_from_the_hit(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s", {"model_id": "m"})
    docs = store.create_collection("docs", DIM)
    ids, x, _ = items(10)
    # numbers in one write, text in the next (after reopening): the column becomes text, and says so
    docs.upsert(ids[:5], x[:5], [{"year": 1990 + i, "score": "high"} for i in range(5)])
    store.save()
    again = open_store(tmp_path / "s")
    docs = again.collection("docs")
    assert isinstance(docs, FaissCollection)
    docs.upsert(ids[5:], x[5:], [{"year": "c. 1995", "score": "low", "later": [1]} for _ in range(5)])
    assert docs.as_text == {"year": "int (1990) and str ('c. 1995')"}
    # within one write too: ints and text, a column only later rows have
    docs.upsert(["m0", "m1"], x[:2], [{"score": 3}, {"score": "low", "late": True}])
    assert docs.as_text["score"] == "int (3) and str ('low')"
    again.save()
    final = open_store(tmp_path / "s").collection("docs")
    assert [final.get([i])[0]["year"] for i in ("d0", "d5")] == ["1990", "c. 1995"]  # type: ignore[index]
    assert final.get(["m1"])[0]["late"] is True  # type: ignore[index]
    assert [h.id for h in final.search(x[:1], 10, Filter(where=(("year", "1990"),)))[0]] == ["d0"]
    # a column named like a field of the hit stays in the hit's metadata
    hit = final.search(x[:1], 1)[0][0]
    assert hit.as_dict() == {"id": "d0", "score": round(hit.score, 6), "metadata": hit.metadata}
    assert isinstance(hit.as_dict()["score"], float) and hit.as_dict()["metadata"]["score"] == "high"
    assert Hit("a", 0.5, {"id": "x"}).as_dict()["id"] == "a"
    with pytest.raises(StoreError, match="item 'z' has metadata id 'other'"):
        final.upsert(["z"], x[:1], [{"id": "other"}])
    with pytest.raises(StoreError, match="column 'bad' holds a value of type object"):
        final.upsert(["z", "y"], x[:2], [{"bad": object()}, {"bad": 1}])
    assert len(final) == 12


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
        # columns a user may have: one named like a hit's field (`score`), one with numbers in some
        # documents and text in others (`year`), one that the first document lacks (`note`)
        mine = {"score": "high" if i % 2 else "low", "year": 1900 + i if i % 3 else f"c. {1900 + i}"}
        if i % 5 == 4:
            mine["note"] = f"note {i}"
        lines.append(json.dumps({**d, "id": f"{d['id']}-{i}", "title": title, **mine}))
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    run([root / "in.jsonl"], root / "x", workers=1, partition_size=20)
    return root


def kgpipe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
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
            assert only and all(mentioned[0] in h["metadata"]["entities"] for h in only)
        where = json.loads(
            kgpipe("search", store, "history", "--where", f"title={docs[3]['title']}", "--json").stdout
        )
        assert [h["id"] for h in where["hits"]] == [docs[3]["id"]]
        # documents whose text states a relation, as extraction read it
        stated = next(r for hits in found for h in hits for r in h.metadata["relations"])
        rel = json.loads(kgpipe("search", store, "history", "--relation", stated, "--json").stdout)["hits"]
        assert rel and all(stated in h["metadata"]["relations"] for h in rel)
        never = json.loads(kgpipe("search", store, "history", "--relation", "P99999", "--json").stdout)
        assert never["hits"] == []
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


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed (exit 2, no traceback)."""
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgpipe: error: "), p.stderr
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def built(extraction: Path, name: str) -> Path:
    """A store of the extraction, indexed by the CLI once per module."""
    store = extraction / name
    if not store.exists():
        made = kgpipe("index", str(extraction / "x"), "--out", str(store))
        assert made.returncode == 0, made.stderr
    return store


@pytest.mark.slow
def test_reindexing_keeps_the_users_files_in_the_store_folder(extraction: Path) -> None:
    store = built(extraction, "s_notes")
    mine = {
        store / "docs" / "mynote.txt": "beside index.faiss",
        store / "entities" / "keep.txt": "mine",
        store / "notes.md": "mine too",
    }
    for path, text in mine.items():
        path.write_text(text)
    again = kgpipe("index", str(extraction / "x"), "--out", str(store))
    assert again.returncode == 0, again.stderr
    assert {path: path.read_text() for path in mine if path.exists()} == mine
    # the store's own files replaced, no temporary file left
    assert sorted(p.name for p in (store / "docs").iterdir()) == [
        "index.faiss",
        "meta.parquet",
        "mynote.txt",
        "vectors.npy",
    ]
    found = kgpipe("search", str(store), "history", "--json")
    assert found.returncode == 0 and json.loads(found.stdout)["hits"], found.stderr


def _halve(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


DAMAGE = {  # a file of the store, what happens to it, what the error says
    "truncated-index": ("docs/index.faiss", _halve, "does not match its checksum"),
    "foreign-index": (  # a valid FAISS index, of the other collection
        "docs/index.faiss",
        lambda f: shutil.copy(f.parents[1] / "entities" / "index.faiss", f),
        "does not match its checksum",
    ),
    "garbage-vectors": (
        "docs/vectors.npy",
        lambda f: f.write_bytes(os.urandom(f.stat().st_size)),
        "checksum",
    ),
    "truncated-entity-vectors": ("entities/vectors.npy", _halve, "does not match its checksum"),
    "missing-metadata": ("docs/meta.parquet", lambda f: f.unlink(), "missing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_named_in_one_line_exit_2(extraction: Path, tmp_path: Path, case: str) -> None:
    rel, damage, says = DAMAGE[case]
    store = tmp_path / "store"
    shutil.copytree(built(extraction, "s_pristine"), store)
    damage(store / rel)
    before = snapshot(store)
    for args in (["search", str(store), "history"], ["index", str(extraction / "x"), "--out", str(store)]):
        line = one_line_error(kgpipe(*args))
        assert f"{store / rel}: " in line and says in line and "rebuild the store" in line, line
        assert snapshot(store) == before  # never written over


@pytest.mark.slow
def test_user_columns_named_like_hit_fields_or_of_mixed_types_are_kept(extraction: Path) -> None:
    docs = [json.loads(line) for line in (extraction / "in.jsonl").read_text().splitlines()]
    store = extraction / "s_columns"
    made = kgpipe("index", str(extraction / "x"), "--out", str(store))
    assert made.returncode == 0, made.stderr
    said = " ".join(made.stderr.split())
    assert "note: metadata column 'year' holds" in said and "int (19" in said and "str ('c. 19" in said
    assert "column 'score'" not in said
    p = kgpipe("search", str(store), docs[1]["title"], "--k", "5", "--json")
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)["hits"]
    by_id = {d["id"]: d for d in docs}
    assert hits and all(set(h) == {"id", "score", "metadata"} and isinstance(h["score"], float) for h in hits)
    assert all(h["metadata"]["score"] == by_id[h["id"]]["score"] for h in hits)
    assert all(h["metadata"]["year"] == str(by_id[h["id"]]["year"]) for h in hits)
    table = kgpipe("search", str(store), docs[1]["title"], "--k", "5")
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr
    assert f"{hits[0]['score']:.3f}" in table.stdout and "score=" in table.stdout
    # filters on the text column and on one that the first document lacks
    for column, doc in (("year", docs[3]), ("year", docs[4]), ("note", docs[4])):
        where = kgpipe("search", str(store), "history", "--where", f"{column}={doc[column]}", "--json")
        assert [h["id"] for h in json.loads(where.stdout)["hits"]] == [doc["id"]], where.stderr
