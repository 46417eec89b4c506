"""Extraction, pure and dask-free: entities, facts between entities of a sentence, vectors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Bundle, load
from pipeline.extract import Document, extract, sentences


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load()


def test_entities_facts_and_vectors_of_each_document(bundle: Bundle) -> None:
    docs = [
        Document("a", "Paris is the capital of France. Barack Obama was born in Honolulu.", {"source": "x"}),
        Document("b", "Nothing to see here."),
    ]
    a, b = extract(bundle, docs, mention_vectors=True)
    assert a.doc_id == "a" and a.metadata == {"source": "x"} and b.entities == [] and b.facts == []
    qids = {e.qid for e in a.entities}
    assert {"Q90", "Q142", "Q76"} <= qids
    paris = next(e for e in a.entities if e.qid == "Q90")
    assert (paris.start, paris.end, paris.text, paris.kg_type) == (0, 5, "Paris", "LOC")
    known = {(f.head, f.relation, f.tail) for f in a.facts if f.source == "kg"}
    assert ("Q142", "/location/country/capital", "Q90") in known
    # facts join entities of one sentence only: France and Obama are in different sentences
    assert not [f for f in a.facts if {f.head, f.tail} == {"Q142", "Q76"}]
    assert all(f.score == 1.0 for f in a.facts if f.source == "kg")
    assert a.vector.shape == (384,) and abs(float(np.linalg.norm(a.vector)) - 1) < 1e-5
    assert a.mention_vectors is not None and a.mention_vectors.shape == (len(a.entities), 384)


def test_predicted_facts_use_a_threshold_chosen_on_the_validation_split(bundle: Bundle) -> None:
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
    # a predicted fact is never one the KG holds, and passes the threshold
    docs = [Document("c", "Tom Hanks starred in Forrest Gump, directed by Robert Zemeckis, in Los Angeles.")]
    (c,) = extract(bundle, docs)
    for f in c.facts:
        if f.source == "predicted":
            assert 0.5 <= f.score < 1.0
            h, t = bundle.kg.entity_id(f.head), bundle.kg.entity_id(f.tail)
            assert (h, t) not in model.known


def test_sentences_split_on_punctuation_and_lines() -> None:
    text = "One. Two is here!\nThree"
    assert [text[a:b].strip() for a, b in sentences(text)] == ["One.", "Two is here!", "Three"]
