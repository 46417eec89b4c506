"""Loaders: every source format from real slices, detection, validation with file:line, save/load."""

import json
from pathlib import Path

import numpy as np
import pytest

from kg import KGFormatError, UnknownFormatError, load_kg
from kg.io import detect_format, load_saved, save_kg


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("fb15k-237", "fb15k-237"), ("wn18rr", "wn18rr"), ("codex-s", "codex"), ("wd50k", "wd50k")],
)
def test_source_formats_are_detected_and_counted(kg_dir: Path, name: str, fmt: str) -> None:
    assert detect_format(kg_dir / name) == fmt
    kg = load_kg(kg_dir / name)
    lines = {
        s: sum(1 for x in (kg_dir / name / f"{s}.txt").read_text().splitlines() if x.strip())
        for s in ("train", "valid", "test")
    }
    assert {s: len(a) for s, a in kg.triples.items()} == lines
    assert kg.triples["train"].max() < kg.num_entities


def test_fb15k_names_come_from_wikidata_mapping(kg_dir: Path) -> None:
    kg = load_kg(kg_dir / "fb15k-237")
    usa = kg.entity_id("Q30")
    assert kg.entities[usa] == "/m/09c7w0"
    assert kg.labels[usa] == "United States of America"
    assert "USA" in kg.aliases[usa]
    assert kg.relation_labels[0]


def test_wn18rr_lemmas_and_glosses(kg_dir: Path) -> None:
    kg = load_kg(kg_dir / "wn18rr")
    assert all(kg.labels)
    assert sum(1 for d in kg.descriptions if d) == kg.num_entities


def test_wikidata_formats_use_keys_as_qids(kg_dir: Path) -> None:
    kg = load_kg(kg_dir / "wd50k")
    assert kg.qids == kg.entities
    assert all(r.startswith("P") for r in kg.relations)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a\tr\tb\nb\tr\tc\nc\tr\n")
    with pytest.raises(
        KGFormatError, match=r"train\.txt:3: expected 3 tab-separated fields .* got 2: 'c\\tr'"
    ):
        load_kg(tmp_path)


def test_empty_field_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("a,r,b\n\nb,,c\n")
    with pytest.raises(KGFormatError, match=r"train\.csv:3"):
        load_kg(tmp_path)


def test_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_bytes(b"a\tr\tb\n\xff\xfe\tr\tc\n")
    with pytest.raises(KGFormatError, match="not UTF-8"):
        load_kg(tmp_path)


def test_unseen_entities_add_drop_or_error(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a\tr\tb\n")
    (tmp_path / "test.txt").write_text("a\tr\tb\nb\tr\tz\n")
    assert load_kg(tmp_path).num_entities == 3
    assert load_kg(tmp_path).summary()["entities_unseen_in_train"] == {"valid": 0, "test": 1}
    dropped = load_kg(tmp_path, unseen="drop")
    assert (dropped.num_entities, len(dropped.triples["test"])) == (2, 1)
    with pytest.raises(KGFormatError, match=r"test\.txt:2: entity 'z' does not occur in the train split"):
        load_kg(tmp_path, unseen="error")


def test_jsonl_triples_with_entities_file(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"head": "Q42", "relation": "P31", "tail": "Q5"})
        + "\n"
        + json.dumps({"head": "ada", "relation": "P31", "tail": "Q5"})
        + "\n"
    )
    (tmp_path / "entities.jsonl").write_text(
        json.dumps(
            {"id": "Q42", "label": "Douglas Adams", "aliases": ["DNA"], "description": "English writer"}
        )
        + "\n"
        + json.dumps({"id": "ada", "qid": "Q7259", "label": "Ada Lovelace"})
        + "\n"
    )
    kg = load_kg(tmp_path)
    assert kg.describe("Q42") == "Douglas Adams (Q42)"
    assert kg.aliases[kg.entity_id("Q42")] == ["DNA"]
    assert kg.entity_id("Q7259") == kg.entity_id("ada")


def test_jsonl_bad_line(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"head": "a", "relation": "r", "tail": "b"}\n{"head": "a"\n')
    with pytest.raises(KGFormatError, match=r"train\.jsonl:2: invalid JSON"):
        load_kg(tmp_path)


def test_single_triple_file_and_explicit_format(tmp_path: Path) -> None:
    f = tmp_path / "facts.tsv"
    f.write_text("x\tlikes\ty\ny\tlikes\tz\n")
    kg = load_kg(f)
    assert (kg.num_entities, len(kg.triples["train"])) == (3, 2)
    with pytest.raises(KGFormatError, match="comma-separated"):
        load_kg(f, format="csv")


def test_unknown_folder_says_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(UnknownFormatError, match=r"no train split found .* notes\.md"):
        load_kg(tmp_path)
    with pytest.raises(UnknownFormatError, match="unknown KG format 'rdf'"):
        load_kg(tmp_path, format="rdf")


def test_save_and_load_round_trip_without_pickle(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "fb15k-237")
    out = save_kg(kg, tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == [
        "entities.parquet",
        "manifest.json",
        "relations.parquet",
        "triples.npz",
    ]
    back = load_kg(out)
    assert back.entities == kg.entities and back.qids == kg.qids and back.aliases == kg.aliases
    for split in kg.triples:
        np.testing.assert_array_equal(back.triples[split], kg.triples[split])
    assert json.loads((out / "manifest.json").read_text())["counts"]["entities"] == kg.num_entities


def test_save_replaces_atomically_and_detects_tampering(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "codex-s")
    out = save_kg(kg, tmp_path / "saved")
    save_kg(kg, out)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no temp or backup folders left behind
    with open(out / "triples.npz", "ab") as f:
        f.write(b"junk")
    with pytest.raises(KGFormatError, match="checksum differs"):
        load_saved(out)


def test_union_of_real_kgs_by_qid(kg_dir: Path) -> None:
    from kg import KnowledgeGraph

    fb, wd, cx = (load_kg(kg_dir / n) for n in ("fb15k-237", "wd50k", "codex-s"))
    u = KnowledgeGraph.union([fb, wd, cx])
    shared = set(fb.qids) & (set(wd.qids) | set(cx.qids)) - {""}
    assert shared, "the fixture slices share QIDs (e.g. Q30)"
    assert u.num_entities == len(
        {q or k for q, k in zip(fb.qids, fb.entities, strict=True)} | set(wd.qids) | set(cx.qids)
    )
    usa = u.entity_id("Q30")
    assert u.labels[usa] == "United States of America"
