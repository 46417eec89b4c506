"""Information extraction over a batch of documents, pure and dask-free: one `Extraction` each.

Each document gives its linked entities, the relations its text states between its entities
(read by the bundle's document-level relation model, each with its evidence sentences and
whether the KG already holds a triple between the two) and a document vector. It runs through a
`Bundle` and changes no process-wide state.
"""

from __future__ import annotations

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
    from kg.link.linker import LinkedEntity
    from pipeline.bundle import Bundle

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
    """A relation the text states: (head, relation, tail) with `source` "text". `head` and `tail`
    are QIDs where linked, else the entity's name; `relation` a Wikidata property ("P159") and
    `relation_name` its label. `score` in (0.5, 1): how far the relation scored above the pair's
    own threshold (logistic). `evidence`: the supporting sentences (indices, first one also in
    `sentence`) and `evidence_spans` their characters [start, end) in the text. `known`: whether
    the KG holds a triple between the two entities (either way round), None when an end is not in
    the KG."""

    head: str
    relation: str
    tail: str
    score: float
    source: str
    sentence: int
    head_name: str = ""
    relation_name: str = ""
    tail_name: str = ""
    head_qid: str = ""
    tail_qid: str = ""
    known: bool | None = None
    evidence: tuple[int, ...] = ()
    evidence_spans: tuple[tuple[int, int], ...] = ()
    # TransE's plausibility of the pair's most plausible KG relation, in (0, 1), 0.5 at the
    # threshold chosen on the KG's validation split; None when an end has no TransE vector
    plausibility: float | None = None


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
    """Known facts by pair lookup and TransE's relation plausibility of a pair (how plausible the
    KG finds some relation between two entities: it scores each text fact).

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
    kg = bundle.kg
    types = bundle.linker.context.types
    facts = text_facts(bundle, documents, linked) if bundle.has_relations else [[] for _ in documents]
    out = []
    for doc, found, vector, doc_facts in zip(documents, linked, vectors, facts, strict=True):
        entities = [
            Entity(x.start, x.end, x.text, x.qid, x.score, x.label, types[x.entity], kg.labels[x.entity])
            for x in found
            if x.qid
        ]
        mvecs = None
        if mention_vectors:
            windows = [doc.text[max(0, e.start - 100) : e.end + 100] for e in entities]
            mvecs = bundle.encode(windows) if windows else np.zeros((0, vectors.shape[1]), np.float32)
        out.append(Extraction(doc.id, entities, doc_facts, vector, dict(doc.metadata), mvecs))
    return out


def text_facts(
    bundle: Bundle, documents: Sequence[Document], linked: Sequence[Sequence[LinkedEntity]]
) -> list[list[Fact]]:
    """The relations each document's text states, by the bundle's relation model, over the
    entities its NER finds (dates and numbers too) and the links already made."""
    read = bundle.entity_finder.read([d.id for d in documents], [d.text for d in documents], linked)
    model = bundle.relations
    # one document a pass: its facts never depend on which documents shared its batch (padding
    # changes the low bits of a matrix product, and a relation at its threshold could flip)
    predicted = model.predict([r.doc for r in read], batch_size=1)
    kg, pairs = bundle.kg, bundle.facts
    out = []
    for r, facts in zip(read, predicted, strict=True):
        rows: list[Fact] = []
        spans = [(offs[0][0], offs[-1][1]) if offs else (0, 0) for offs in r.offsets]
        ends = [
            (
                kg.entity_id(r.doc.entities[f.h].qid) if kg.has_entity(r.doc.entities[f.h].qid) else -1,
                kg.entity_id(r.doc.entities[f.t].qid) if kg.has_entity(r.doc.entities[f.t].qid) else -1,
            )
            for f in facts
        ]
        scored = [
            i
            for i, (hk, tk) in enumerate(ends)
            if hk >= 0 and tk >= 0 and pairs.rows[hk] >= 0 and pairs.rows[tk] >= 0
        ]
        plausible: dict[int, float] = {}
        if scored:
            top = pairs.top_relations(
                np.array([ends[i][0] for i in scored]), np.array([ends[i][1] for i in scored]), k=1
            )
            plausible = {i: round(best[0][1], 4) for i, best in zip(scored, top, strict=True)}
        for i, (f, (hk, tk)) in enumerate(zip(facts, ends, strict=True)):
            h, t = r.doc.entities[f.h], r.doc.entities[f.t]
            rows.append(
                Fact(
                    head=h.qid or h.name,
                    relation=f.r,
                    tail=t.qid or t.name,
                    score=f.score,
                    source="text",
                    sentence=f.evidence[0] if f.evidence else -1,
                    head_name=kg.labels[hk] if hk >= 0 and kg.labels[hk] else h.name,
                    relation_name=model.cfg.names.get(f.r, ""),
                    tail_name=kg.labels[tk] if tk >= 0 and kg.labels[tk] else t.name,
                    head_qid=h.qid,
                    tail_qid=t.qid,
                    known=None if hk < 0 or tk < 0 else ((hk, tk) in pairs.known or (tk, hk) in pairs.known),
                    evidence=f.evidence,
                    evidence_spans=tuple(spans[s] for s in f.evidence),
                    plausibility=plausible.get(i),
                )
            )
        out.append(sorted(rows, key=lambda x: (-x.score, x.head, x.relation, x.tail)))
    return out
