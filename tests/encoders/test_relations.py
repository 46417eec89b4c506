"""Document-level relation extraction: DocRED reading, the ATLOP-style model on each knowledge mode."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from encoders.docred import read_docred, read_rel_info
from encoders.knowledge import knowledge_for
from encoders.relations import (
    RelationConfig,
    RelationModel,
    RelationTrainConfig,
    at_loss,
    relation_labels,
    score,
    train,
)
from kg.errors import KGFormatError

MINI = Path(__file__).parents[1] / "fixtures" / "docred" / "mini.json"


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    return read_rel_info()


@pytest.fixture(scope="module")
def docs(names: dict[str, str]) -> list:
    return read_docred(MINI, names)


def write(tmp_path: Path, docs: object) -> Path:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(docs))
    return path


def test_reads_docred_documents(docs: list, names: dict[str, str]) -> None:
    assert len(names) == 96 and names["P159"] == "headquarters location"
    raw = json.loads(MINI.read_text())
    d = docs[0]
    assert d.title == raw[0]["title"] and len(d.entities) == len(raw[0]["vertexSet"])
    assert len(d.facts) == len(raw[0]["labels"])
    text, offsets = d.text()
    m = d.entities[0].mentions[0]
    a, b = d.mention_chars(m, offsets)
    assert text[a:b] == " ".join(d.sents[m.sent][m.start : m.end])


BAD = [
    (lambda d: d.pop("vertexSet"), "document 0 ('T'), field vertexSet: missing"),
    (
        lambda d: d["vertexSet"][0][0].update(pos=[2, 9]),
        "field vertexSet[0][0].pos: [2, 9] is not inside sentence 0",
    ),
    (lambda d: d["labels"][0].update(h=7), "field labels[0].h: entity index 7 is out of range (2 entities)"),
    (lambda d: d.update(sents=[[]]), "field sents: the document is empty"),
    (lambda d: d["sents"][0].__setitem__(2, ""), "field sents[0][2]: the token is an empty string"),
    (
        lambda d: d["labels"][0].update(r="P99999"),
        "field labels[0].r: 'P99999' is not a property of rel_info.json",
    ),
    (
        lambda d: d["vertexSet"][1][0].update(sent_id=3),
        "field vertexSet[1][0].sent_id: 3 is not a sentence of the 1",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_documents_name_the_file_document_and_field(
    tmp_path: Path, names: dict[str, str], change, message
) -> None:
    doc = {
        "title": "T",
        "sents": [["Apple", "is", "in", "Cupertino", "."]],
        "vertexSet": [
            [{"name": "Apple", "sent_id": 0, "pos": [0, 1], "type": "ORG"}],
            [{"name": "Cupertino", "sent_id": 0, "pos": [3, 4], "type": "LOC"}],
        ],
        "labels": [{"h": 0, "t": 1, "r": "P159", "evidence": [0]}],
    }
    read_docred(write(tmp_path, [doc]), names)  # the document as given is fine
    bad = copy.deepcopy(doc)
    change(bad)
    with pytest.raises(KGFormatError) as e:
        read_docred(write(tmp_path, [bad]), names)
    assert str(e.value).startswith(f"{tmp_path / 'in.json'}: ") and message in str(e.value)
    assert (
        "Give" in str(e.value) or "Use" in str(e.value) or "Write" in str(e.value) or "Leave" in str(e.value)
    )


def test_zero_documents_are_an_empty_list(tmp_path: Path) -> None:
    assert read_docred(write(tmp_path, [])) == []


def test_adaptive_threshold_loss_ranks_gold_above_the_threshold() -> None:
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # pair 0: relation 1; pair 1: none
    good = torch.tensor([[0.0, 5.0, -5.0], [5.0, -5.0, -5.0]])
    bad = torch.tensor([[5.0, -5.0, 0.0], [-5.0, 5.0, 5.0]])
    assert at_loss(good, labels) < 0.1 < 5.0 < at_loss(bad, labels)


def model_for(mode: str, docs: list, names: dict[str, str], max_length: int = 512) -> RelationModel:
    cfg = RelationConfig(
        knowledge=mode, labels=relation_labels(docs, names), names=names, max_length=max_length
    )  # type: ignore[arg-type]
    return RelationModel.create(cfg, knowledge_for(mode), seed=0)


def test_windows_cover_a_long_document_and_overlap(docs: list, names: dict[str, str]) -> None:
    model = model_for("none", docs, names, max_length=48)
    x = model.featurize(docs[0])
    windows = model._windows(x)
    assert len(x.ids) > 48 and len(windows) > 1
    assert all(len(w) <= 48 and w[0] == 0 and w[-1] == len(x.ids) - 1 for w in windows)
    assert set().union(*map(set, windows)) == set(range(len(x.ids)))
    ((seq, att),) = model.encode([x])
    assert seq.shape == (len(x.ids), 384) and att.shape[1:] == (len(x.ids), len(x.ids))
    assert torch.allclose(att.sum(-1), torch.ones(att.shape[:2]), atol=1e-4)  # rows are distributions


@pytest.mark.parametrize("mode", ["ernie", "kbert"])
def test_knowledge_enters_through_linked_entities(mode: str, docs: list, names: dict[str, str]) -> None:
    """An entity with a QID changes what the model computes; one without does not."""
    model = model_for(mode, docs, names, max_length=64).eval()
    doc = docs[0]
    qid = "Q312"  # Apple Inc., in the bundled KG with a TransE vector and triples
    linked = replace(doc, entities=[replace(doc.entities[0], qid=qid), *doc.entities[1:]])
    x, y = model.featurize(doc), model.featurize(linked)
    if mode == "kbert":
        assert len(y.ids) > len(x.ids)  # the branches grafted after its first mention
    else:
        assert y.rows[0] >= 0 and x.rows[0] == -1
        torch.nn.init.normal_(model.fusion.aggregators[0].token_out.weight)  # type: ignore[union-attr]
    with torch.no_grad():
        (_, a, _), (_, b, _) = model.pair_logits([x, y])
    assert not torch.allclose(a, b)


def test_trains_saves_and_reloads_to_the_same_predictions(
    tmp_path: Path, docs: list, names: dict[str, str]
) -> None:
    model = model_for("none", docs, names, max_length=96)
    history = train(
        model, docs[:2], docs[2:3], RelationTrainConfig(epochs=3, patience=3, progress=False, head_lr=1e-3)
    )
    assert len(history.loss) == 3 and history.loss[-1] < history.loss[0]
    assert set(history.dev[0]) == {"f1", "precision", "recall"}
    before = model.predict(docs)
    again = RelationModel.load(model.save(tmp_path / "m"))
    assert again.predict(docs) == before
    for d, facts in zip(docs, before, strict=True):
        for f in facts:
            assert 0 <= f.h < len(d.entities) and 0 <= f.t < len(d.entities) and f.h != f.t
            assert f.r in names and 0.5 < f.score <= 1 and f.evidence
            assert all(0 <= s < len(d.sents) for s in f.evidence)
    scores = score(docs, before)
    assert scores.gold == sum(len(d.facts) for d in docs) and 0 <= scores.f1 <= 1
