"""Extraction, pure and dask-free: entities, facts between entities of a sentence, vectors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Bundle, load
from pipeline.extract import Document, extract


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load()


APPLE = (
    "Apple Inc. is an American multinational technology company headquartered in Cupertino, California, "
    "in Silicon Valley. It was founded in 1976 by Steve Jobs, Steve Wozniak and Ronald Wayne."
)


def test_entities_facts_and_vectors_of_each_document(bundle: Bundle) -> None:
    docs = [Document("a", APPLE, {"source": "x"}), Document("b", "Nothing to see here.")]
    a, b = extract(bundle, docs, mention_vectors=True)
    assert a.doc_id == "a" and a.metadata == {"source": "x"} and b.entities == [] and b.facts == []
    qids = {e.qid for e in a.entities}
    assert {"Q312", "Q189471"} <= qids
    apple = next(e for e in a.entities if e.qid == "Q312")
    assert (apple.start, apple.end, apple.text, apple.kg_type) == (0, 10, "Apple Inc.", "ORG")
    assert a.facts and all(f.source == "text" for f in a.facts)
    hq = [
        f
        for f in a.facts
        if (f.head, f.tail) == ("Q312", "Q189471") and f.relation in ("P159", "P131", "P276")
    ]
    assert hq, [(f.head_name, f.relation_name, f.tail_name) for f in a.facts]
    f = hq[0]
    assert f.relation_name in (
        "headquarters location",
        "located in the administrative territorial entity",
        "location",
    )
    assert (f.head_name, f.tail_name, f.head_qid, f.tail_qid) == (
        "Apple Inc.",
        "Cupertino",
        "Q312",
        "Q189471",
    )
    assert f.evidence[0] == f.sentence == 0 and 0.5 < f.score <= 1
    start, end = f.evidence_spans[0]
    assert "headquartered in Cupertino" in APPLE[start:end]
    kg, known = bundle.kg, bundle.facts.known
    for f in a.facts:  # `known` says whether the KG joins the two, either way round
        if f.head_qid and f.tail_qid and kg.has_entity(f.head_qid) and kg.has_entity(f.tail_qid):
            h, t = kg.entity_id(f.head_qid), kg.entity_id(f.tail_qid)
            assert f.known == ((h, t) in known or (t, h) in known)
            assert f.plausibility is None or 0 < f.plausibility < 1
        else:
            assert f.known is None and f.plausibility is None
    dates = [f for f in a.facts if f.tail == "1976"]
    assert all(f.tail_qid == "" for f in dates)  # a date is an entity of the text, not of the KG
    assert a.vector.shape == (384,) and abs(float(np.linalg.norm(a.vector)) - 1) < 1e-5
    assert a.mention_vectors is not None and a.mention_vectors.shape == (len(a.entities), 384)


def test_transe_plausibility_uses_a_threshold_chosen_on_the_validation_split(bundle: Bundle) -> None:
    model = bundle.facts
    valid = bundle.kg.triples["valid"][:500]
    rows = model.rows
    valid = valid[(rows[valid[:, 0]] >= 0) & (rows[valid[:, 2]] >= 0)]
    top = model.top_relations(valid[:, 0], valid[:, 2], k=3)
    hits = np.mean([any(r == t for r, _ in pairs) for pairs, t in zip(top, valid[:, 1], strict=True)])
    assert hits > 0.3  # TransE ranks the true relation of held-out pairs high (chance: 3/237)
    assert (
        np.isfinite(model.threshold) and 0.4 < float(model.plausibility(np.array([model.threshold]))[0]) < 0.6
    )
