"""Information extraction over a batch of documents, pure and dask-free: one `Extraction` each.

Each document gives its linked entities, the facts between linked entities of the same sentence
(known ones looked up in the KG, new ones predicted by TransE over the KG's relations) and a
document vector. It runs through a `Bundle` and changes no process-wide state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kg.errors import KGPipeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kg.embed.checkpoint import EntityVectors
    from kg.graph import KnowledgeGraph
    from pipeline.bundle import Bundle

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
PAIR_CHUNK = 256  # entity pairs scored at once against every relation


class ExtractError(KGPipeError):
    """A document that cannot be read as one."""


@dataclass(frozen=True)
class Document:
    """A document to extract from: its id, its text and every other input column."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entity:
    """A linked mention: characters [start, end) of the text, its QID, the linker's confidence, the
    NER label of the mention and the KG's coarse type of the entity (PER, LOC, ORG, ... or '')."""

    start: int
    end: int
    text: str
    qid: str
    score: float
    label: str
    kg_type: str
    name: str = ""  # the entity's name in the KG


@dataclass(frozen=True)
class Fact:
    """(head, relation, tail) between two entities of one sentence. `source` is "kg" for a triple
    the KG holds (score 1) and "predicted" for TransE's most plausible relation of a pair the KG
    does not join (score: plausibility in (0, 1), 0.5 at the threshold chosen on the KG's
    validation split)."""

    head: str
    relation: str
    tail: str
    score: float
    source: str
    sentence: int  # index of the sentence both mentions are in
    head_name: str = ""  # the KG's names of the head, the relation (see KnowledgeGraph.relation_name)
    relation_name: str = ""  # and the tail, for people to read beside the ids
    tail_name: str = ""


@dataclass
class Extraction:
    """What one document gave. `vector`: float32[hidden], unit; `mention_vectors`:
    float32[len(entities), hidden] when asked for, else None."""

    doc_id: str
    entities: list[Entity]
    facts: list[Fact]
    vector: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    mention_vectors: np.ndarray | None = None


class FactModel:
    """Known facts by pair lookup and TransE's relation plausibility for pairs the KG does not join.

    The plausibility threshold is chosen on the KG's validation split: the distance that best
    separates each validation triple from the same triple with its tail swapped for a random
    entity (TransE's triple classification, one global threshold); plausibility is a logistic of
    the distance, 0.5 at that threshold.
    """

    def __init__(self, kg: KnowledgeGraph, transe: EntityVectors, seed: int = 0) -> None:
        self.kg = kg
        self.model = transe.model
        rows, rels = transe.align(kg)
        self.rows = rows  # KG entity → TransE row (-1: none)
        self.relation_rows = rels
        self.usable = np.flatnonzero(rels >= 0)  # KG relations TransE knows
        known: dict[tuple[int, int], list[int]] = {}
        for h, r, t in kg.all_triples().tolist():
            known.setdefault((h, t), []).append(r)
        self.known = known
        self.threshold, self.scale = self._calibrate(seed)

    @torch.no_grad()
    def distances(self, heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
        """float32[pairs, usable relations]: TransE distance of (head, r, tail) for every relation."""
        entity = self.model.entity.weight
        rel = torch.as_tensor(self.relation_rows[self.usable])
        out = []
        for lo in range(0, len(heads), PAIR_CHUNK):
            h = torch.as_tensor(self.rows[heads[lo : lo + PAIR_CHUNK]])
            t = torch.as_tensor(self.rows[tails[lo : lo + PAIR_CHUNK]])
            q = self.model.query(h[:, None].expand(-1, len(rel)), rel[None, :].expand(len(h), -1), False)
            out.append((q - entity[t][:, None, :]).norm(p=self.model.config.p_norm, dim=-1))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.usable)), np.float32)

    @torch.no_grad()
    def _distance(self, heads: np.ndarray, relations: np.ndarray, tails: np.ndarray) -> np.ndarray:
        """float32[n]: TransE distance of each (head, relation, tail), KG ids."""
        h = torch.as_tensor(self.rows[heads])
        r = torch.as_tensor(self.relation_rows[relations])
        t = torch.as_tensor(self.rows[tails])
        q = self.model.query(h, r, False)
        return (q - self.model.entity.weight[t]).norm(p=self.model.config.p_norm, dim=-1).numpy()

    def plausibility(self, distance: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp((distance - self.threshold) / self.scale))

    def _calibrate(self, seed: int) -> tuple[float, float]:
        valid = self.kg.triples.get("valid", np.zeros((0, 3), np.int32))
        valid = valid[(self.rows[valid[:, 0]] >= 0) & (self.rows[valid[:, 2]] >= 0)] if len(valid) else valid
        if not len(valid):
            return float("inf"), 1.0  # no validation split: nothing is predicted
        rng = np.random.default_rng(seed)
        valid = valid[rng.permutation(len(valid))[:5000]]
        known_rows = np.flatnonzero(self.rows >= 0)
        fake_tails = known_rows[rng.integers(0, len(known_rows), len(valid))]
        keep = self.relation_rows[valid[:, 1]] >= 0
        valid, fake_tails = valid[keep], fake_tails[keep]
        pos = self._distance(valid[:, 0], valid[:, 1], valid[:, 2])
        neg = self._distance(valid[:, 0], valid[:, 1], fake_tails)
        cuts = np.quantile(np.concatenate([pos, neg]), np.linspace(0.01, 0.99, 99))
        accuracy = [((pos <= c).sum() + (neg > c).sum()) / (2 * len(pos)) for c in cuts]
        return float(cuts[int(np.argmax(accuracy))]), float(max(np.std(np.concatenate([pos, neg])) / 4, 1e-6))

    def top_relations(
        self, heads: np.ndarray, tails: np.ndarray, k: int = 3
    ) -> list[list[tuple[int, float]]]:
        """Per pair, the `k` most plausible KG relations (relation id, plausibility), best first."""
        d = self.distances(heads, tails)
        best = np.argsort(d, axis=1)[:, :k]
        p = self.plausibility(np.take_along_axis(d, best, axis=1))
        return [
            [(int(self.usable[j]), float(s)) for j, s in zip(row, ps, strict=True)]
            for row, ps in zip(best, p, strict=True)
        ]


def sentences(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence (a plain punctuation rule, as the linker's training uses)."""
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
    return [(a, b) for a, b in zip(starts, [*starts[1:], len(text)], strict=True) if text[a:b].strip()]


def as_document(doc: Document | Mapping[str, Any] | str, i: int) -> Document:
    """A `Document` from what a caller holds: a Document, a dict with "text" (and "id", the rest
    being metadata), or a plain string (its id: its place)."""
    if isinstance(doc, Document):
        return doc
    if isinstance(doc, str):
        return Document(str(i), doc)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("text"), str):
        got = type(doc).__name__ if not isinstance(doc, Mapping) else f"keys {sorted(map(str, doc))}"
        raise ExtractError(
            f"document {i}: expected a Document, a string or a dict with a string 'text' (and an 'id'), got {got}"
        )
    ident = doc.get("id")
    metadata = {k: v for k, v in doc.items() if k not in ("id", "text")}
    return Document(str(i) if ident is None else str(ident), doc["text"], metadata)


def extract(
    bundle: Bundle, docs: Sequence[Document | Mapping[str, Any] | str], mention_vectors: bool = False
) -> list[Extraction]:
    """One `Extraction` per document, in order; a document is a `Document`, a dict
    `{"id", "text", ...}` (other keys: its metadata) or a string."""
    documents = [as_document(d, i) for i, d in enumerate(docs)]
    linked, vectors = bundle.link_with_vectors([d.text for d in documents])
    facts_model = bundle.facts
    kg = bundle.kg
    types = bundle.linker.context.types
    out = []
    for doc, found, vector in zip(documents, linked, vectors, strict=True):
        entities = [
            Entity(x.start, x.end, x.text, x.qid, x.score, x.label, types[x.entity], kg.labels[x.entity])
            for x in found
            if x.qid
        ]
        rows = [x.entity for x in found if x.qid]
        facts = _facts(facts_model, kg, doc.text, entities, rows)
        mvecs = None
        if mention_vectors:
            windows = [doc.text[max(0, e.start - 100) : e.end + 100] for e in entities]
            mvecs = bundle.encode(windows) if windows else np.zeros((0, vectors.shape[1]), np.float32)
        out.append(Extraction(doc.id, entities, facts, vector, dict(doc.metadata), mvecs))
    return out


def _facts(
    model: FactModel, kg: KnowledgeGraph, text: str, entities: list[Entity], rows: list[int]
) -> list[Fact]:
    """Facts between the distinct entities of each sentence: known ones, else TransE's best."""
    spans = sentences(text)
    found: list[Fact] = []
    pairs: list[tuple[int, int, int]] = []  # (head row, tail row, sentence) the KG does not join
    for s, (a, b) in enumerate(spans):
        inside = sorted({r for e, r in zip(entities, rows, strict=True) if a <= e.start and e.end <= b})
        for h in inside:
            for t in inside:
                if h == t:
                    continue
                relations = model.known.get((h, t))
                if relations:
                    found += [_fact(kg, h, r, t, 1.0, "kg", s) for r in sorted(set(relations))]
                elif model.rows[h] >= 0 and model.rows[t] >= 0 and (t, h) not in model.known:
                    pairs.append((h, t, s))
    if pairs:
        heads = np.array([p[0] for p in pairs])
        tails = np.array([p[1] for p in pairs])
        for (h, t, s), top in zip(pairs, model.top_relations(heads, tails, k=1), strict=True):
            r, score = top[0]
            if score >= 0.5:
                found.append(_fact(kg, h, r, t, round(score, 4), "predicted", s))
    return found


def _fact(kg: KnowledgeGraph, h: int, r: int, t: int, score: float, source: str, sentence: int) -> Fact:
    return Fact(
        kg.qids[h],
        kg.relations[r],
        kg.qids[t],
        score,
        source,
        sentence,
        kg.labels[h],
        kg.relation_name(r),
        kg.labels[t],
    )
