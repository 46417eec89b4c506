"""Entity linking on the bundled KG with the real spaCy pipeline: mentions, candidates, NIL, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from encoders.text import text_embedder
from kg import load_kg
from kg.link.aliases import AliasTable, normalize
from kg.link.linker import BadTextError, Linker


@pytest.fixture(scope="module")
def linker() -> Linker:
    return Linker.load(embed=text_embedder())  # as `kgpipe link` builds it


def test_normalize_folds_case_accents_and_dots() -> None:
    assert normalize("  Zürich ") == "zurich"
    assert normalize("U.N.") == "un"
    assert normalize("NEW  YORK") == "new york"


def test_alias_table_priors_favour_labels_and_popular_entities(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "fb15k-237")
    table = AliasTable.from_kg(kg)
    usa = table.lookup("usa")
    assert usa and kg.qids[usa[0].entity] == "Q30"
    assert sum(c.prior for c in table.lookup("United States of America")) == pytest.approx(1.0)
    table.save(tmp_path / "aliases.parquet")
    back = AliasTable.load(tmp_path / "aliases.parquet")
    assert back.aliases.keys() == table.aliases.keys()
    assert [e for e, _ in back.aliases["usa"]] == [e for e, _ in table.aliases["usa"]]


def test_links_well_known_entities(linker: Linker) -> None:
    found = {(x.text, x.qid) for x in linker.link("Barack Obama met Angela Merkel in Paris on Tuesday.")}
    assert ("Barack Obama", "Q76") in found
    assert ("Paris", "Q90") in found
    assert all(text != "Angela Merkel" for text, _ in found)  # not in FB15k-237: NIL, so not output


def test_partial_name_inherits_candidates_of_full_name(linker: Linker) -> None:
    text = "Barack Obama spoke first. Later Obama left."
    linked = linker.link(text)
    assert [x.qid for x in linked if x.text == "Obama"] == ["Q76"]


def test_given_spans_are_the_only_mentions(linker: Linker) -> None:
    text = "Paris and London are large cities."
    linked = linker.link(text, spans=[(10, 16)])
    assert [(x.start, x.end, x.qid) for x in linked] == [(10, 16, "Q84")]


def test_bad_input_is_a_clear_error_and_empty_text_links_nothing(linker: Linker) -> None:
    assert linker.link("") == []
    with pytest.raises(BadTextError, match="must be a string, got int"):
        linker.link(42)  # type: ignore[arg-type]
    with pytest.raises(BadTextError, match="over the 1,000,000-byte limit"):
        linker.link("a" * 1_000_001)
    with pytest.raises(BadTextError, match=r"span \[5, 99\] is not inside its 5-character text"):
        linker.link("Paris", spans=[(5, 99)])
    with pytest.raises(BadTextError, match="not UTF-8"):
        linker.link(b"\xff\xfe caf\xe9")  # type: ignore[arg-type]


def test_cli_link_keeps_order_and_spans_mode(tmp_path: Path) -> None:
    kgpipe = str(Path(sys.executable).parent / "kgpipe")
    docs = [
        {"id": "a", "text": "Barack Obama visited Paris."},
        {"id": "b", "text": ""},
        {"text": "London calling.", "mentions": [[0, 6]]},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", "b", 2]
    first = {(m["text"], m["id"]) for m in out[0]["entity_mentions"]}
    assert ("Barack Obama", "Q76") in first and ("Paris", "Q90") in first
    assert all(
        0 <= m["score"] <= 1 and docs[0]["text"][m["span"][0] : m["span"][1]] == m["text"]
        for m in out[0]["entity_mentions"]
    )
    assert out[1]["entity_mentions"] == []
    (tmp_path / "spans.jsonl").write_text(json.dumps(docs[2]) + "\n")
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "spans.jsonl"), "--out", str(tmp_path / "s.jsonl"), "--spans"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "s.jsonl").read_text())["entity_mentions"][0]["id"] == "Q84"


def test_cli_bad_line_names_file_and_line(tmp_path: Path) -> None:
    kgpipe = str(Path(sys.executable).parent / "kgpipe")
    (tmp_path / "in.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    assert "in.jsonl:2" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_spacy_component_sets_kb_ids_and_scores() -> None:
    import kg.link.component  # noqa: F401  (registers the factory, as the entry point does when installed)
    from kg.link import load_spacy

    nlp = load_spacy()
    nlp.add_pipe("kgpipe_linker", config={"keep_nil": True})
    docs = list(nlp.pipe(["Barack Obama visited Paris.", "Zxqwv Blorptin met Angela Merkel."]))
    ents = {(e.text, e.kb_id_) for e in docs[0].ents}
    assert ("Barack Obama", "Q76") in ents and ("Paris", "Q90") in ents
    assert all(0 <= e._.kg_score <= 1 for e in docs[0].ents)
    # Angela Merkel is not in FB15k-237: kept as an entity (keep_nil) with no KB id and no score
    merkel = [e for e in docs[1].ents if e.text == "Angela Merkel"]
    assert merkel and merkel[0].kb_id_ == "" and merkel[0]._.kg_score is None


def test_context_similarity_separates_senses(linker: Linker) -> None:
    vectors = linker.doc_vectors(["The striker scored twice as the club won the league title."])
    assert vectors[0] is not None and linker.context.vectors is not None
    sport = linker.context.vectors[linker.kg.entity_id("Q2736")] @ vectors[0]  # association football
    fruit = linker.context.vectors[linker.kg.entity_id("Q89")] @ vectors[0]  # apple
    assert sport > fruit + 0.1


def test_bundled_entity_vectors_match_the_bundled_kg_and_model(linker: Linker) -> None:
    from kg.io import data_root
    from kg.link.dense import fingerprint

    assert linker.embed is not None
    bundled = data_root() / "linker" / f"entities-{fingerprint(linker.kg, linker.embed)}.safetensors"
    assert bundled.exists(), "regenerate data/linker vectors: the KG or the text model changed"
