"""`KnowledgeGraph`: entity and relation vocabularies, int32 triple arrays per split, and names.

Arrays are the source of truth; adjacency (CSR) and the networkx view are built lazily from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from kg.errors import UnknownEntityError

if TYPE_CHECKING:
    import networkx as nx

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Adjacency:
    """Compressed sparse rows over both edge directions: row `e` lists `e`'s neighbours.

    `indptr`: int64[num_entities + 1]; `neighbor`, `relation`: int32[2 * num_triples];
    `outgoing`: bool[2 * num_triples], False where the edge is read tail → head.
    """

    indptr: np.ndarray
    neighbor: np.ndarray
    relation: np.ndarray
    outgoing: np.ndarray

    def row(self, entity: int) -> slice:
        return slice(int(self.indptr[entity]), int(self.indptr[entity + 1]))


@dataclass
class KnowledgeGraph:
    """A knowledge graph held as arrays.

    Entities and relations are numbered 0..n-1. `triples[split]` is int32[n, 3] of
    (head, relation, tail) ids. Per-entity metadata lists are aligned with `entities`;
    a missing QID, label or description is the empty string.
    """

    entities: list[str]
    relations: list[str]
    triples: dict[str, np.ndarray]
    qids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    aliases: list[list[str]] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    types: list[list[str]] = field(default_factory=list)
    relation_labels: list[str] = field(default_factory=list)
    name: str = "kg"
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.entities)
        for column in ("qids", "labels", "descriptions"):
            if not getattr(self, column):
                setattr(self, column, [""] * n)
        for column in ("aliases", "types"):
            if not getattr(self, column):
                setattr(self, column, [[] for _ in range(n)])
        if not self.relation_labels:
            self.relation_labels = [""] * len(self.relations)
        for split in SPLITS:
            self.triples.setdefault(split, np.zeros((0, 3), dtype=np.int32))
        self.triples = {
            s: np.ascontiguousarray(a, dtype=np.int32).reshape(-1, 3) for s, a in self.triples.items()
        }
        for column in ("qids", "labels", "aliases", "descriptions", "types"):
            if len(getattr(self, column)) != n:
                raise ValueError(f"KnowledgeGraph.{column} has {len(getattr(self, column))} rows, want {n}")

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(a)}" for s, a in self.triples.items())
        return (
            f"KnowledgeGraph(name={self.name!r}, entities={self.num_entities}, "
            f"relations={self.num_relations}, {counts})"
        )

    def summary(self) -> dict[str, object]:
        """The counts `kgpipe kg info` prints."""
        seen = np.zeros(self.num_entities, dtype=bool)
        train = self.triples["train"]
        seen[train[:, 0]] = True
        seen[train[:, 2]] = True
        unseen = {}
        for split in ("valid", "test"):
            a = self.triples[split]
            unseen[split] = int(np.count_nonzero(~seen[np.unique(a[:, [0, 2]])])) if len(a) else 0
        return {
            "name": self.name,
            "source": self.source,
            "entities": self.num_entities,
            "relations": self.num_relations,
            "triples": {s: len(a) for s, a in self.triples.items()},
            "with_qid": sum(1 for q in self.qids if q),
            "with_label": sum(1 for x in self.labels if x),
            "with_description": sum(1 for x in self.descriptions if x),
            "aliases": sum(len(x) for x in self.aliases),
            "entities_unseen_in_train": unseen,
        }

    # ---- lookup ------------------------------------------------------------------------------
    @cached_property
    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the entity and relation vocabularies: what a model built on
        this KG (a linker, TransE rows) depends on, so a part built for another KG is told apart."""
        import hashlib

        h = hashlib.sha256()
        for key in (*self.entities, "\x00", *self.relations):
            h.update(key.encode("utf-8", "surrogatepass") + b"\n")
        return h.hexdigest()[:16]

    @cached_property
    def _entity_index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.entities)}

    @cached_property
    def _qid_index(self) -> dict[str, int]:
        return {q: i for i, q in enumerate(self.qids) if q}

    @cached_property
    def _relation_index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.relations)}

    def entity_id(self, key_or_qid: str | int) -> int:
        """The id of an entity given its id, key (e.g. `/m/02mjmr`) or Wikidata QID."""
        if isinstance(key_or_qid, int | np.integer):
            if 0 <= key_or_qid < self.num_entities:
                return int(key_or_qid)
            raise UnknownEntityError(f"entity id {key_or_qid} is out of range 0..{self.num_entities - 1}")
        found = self._entity_index.get(key_or_qid)
        if found is None:
            found = self._qid_index.get(key_or_qid)
        if found is None:
            raise UnknownEntityError(
                f"entity {key_or_qid!r} is not in KG {self.name!r}: give an entity key or a Wikidata QID "
                f"that it holds (e.g. {self.entities[0]!r})"
            )
        return found

    def has_entity(self, key_or_qid: str) -> bool:
        return key_or_qid in self._entity_index or key_or_qid in self._qid_index

    def relation_id(self, key: str) -> int:
        found = self._relation_index.get(key)
        if found is None:
            raise UnknownEntityError(f"relation {key!r} is not in KG {self.name!r}")
        return found

    def relation_name(self, relation: str | int) -> str:
        """A short name people read: a Freebase path's last field ('/people/person/place_of_birth':
        'place of birth'; through a compound value, its final field), else the relation's label,
        else its key with underscores as spaces ('_hypernym': 'hypernym')."""
        i = relation if isinstance(relation, int | np.integer) else self.relation_id(relation)
        key = self.relations[int(i)]
        if key.startswith("/"):
            return key.rsplit("/", 1)[-1].replace("_", " ")
        label = self.relation_labels[int(i)] if self.relation_labels else ""
        return label or key.replace("_", " ").strip()

    def describe(self, entity: str | int) -> str:
        """A short human name: label (QID), or the key when nothing else is known."""
        i = self.entity_id(entity)
        label, qid = self.labels[i], self.qids[i]
        if label and qid:
            return f"{label} ({qid})"
        return label or qid or self.entities[i]

    # ---- structure ---------------------------------------------------------------------------
    def all_triples(self, splits: Sequence[str] = SPLITS) -> np.ndarray:
        return np.concatenate([self.triples[s] for s in splits if s in self.triples])

    def degrees(self, splits: Sequence[str] = ("train",)) -> np.ndarray:
        """int64[num_entities]: edges touching each entity (in + out) in the given splits."""
        t = self.all_triples(splits)
        return np.bincount(np.concatenate([t[:, 0], t[:, 2]]), minlength=self.num_entities)

    @cached_property
    def adjacency(self) -> Adjacency:
        """CSR adjacency over the train split, both directions."""
        t = self.triples["train"]
        src = np.concatenate([t[:, 0], t[:, 2]])
        order = np.argsort(src, kind="stable")
        neighbor = np.concatenate([t[:, 2], t[:, 0]])[order]
        relation = np.concatenate([t[:, 1], t[:, 1]])[order]
        outgoing = np.concatenate([np.ones(len(t), bool), np.zeros(len(t), bool)])[order]
        indptr = np.zeros(self.num_entities + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=self.num_entities), out=indptr[1:])
        return Adjacency(indptr, neighbor.astype(np.int32), relation.astype(np.int32), outgoing)

    def neighbors(self, entity: str | int, hops: int = 1, limit: int | None = None) -> list[int]:
        """Entities within `hops` edges of `entity` (train split, either direction), nearest first.

        Within one hop distance, neighbours come in the order of their edges; `limit` caps the count.
        """
        start = self.entity_id(entity)
        adj = self.adjacency
        seen = {start}
        frontier = [start]
        found: list[int] = []
        for _ in range(hops):
            next_frontier: list[int] = []
            for e in frontier:
                for n in adj.neighbor[adj.row(e)].tolist():
                    if n in seen:
                        continue
                    seen.add(n)
                    found.append(n)
                    next_frontier.append(n)
                    if limit is not None and len(found) >= limit:
                        return found
            frontier = next_frontier
        return found

    def triples_between(self, a: str | int, b: str | int, splits: Sequence[str] = SPLITS) -> np.ndarray:
        """int32[n, 3]: every triple that joins `a` and `b`, in either direction."""
        ia, ib = self.entity_id(a), self.entity_id(b)
        t = self.all_triples(splits)
        mask = ((t[:, 0] == ia) & (t[:, 2] == ib)) | ((t[:, 0] == ib) & (t[:, 2] == ia))
        return t[mask]

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """A networkx view of the train split (nodes are entity ids, edge key the relation id)."""
        import networkx as nx

        g = nx.MultiDiGraph(name=self.name)
        g.add_nodes_from(range(self.num_entities))
        g.add_edges_from((int(h), int(t), int(r)) for h, r, t in self.triples["train"])
        return g

    # ---- derived graphs ----------------------------------------------------------------------
    def without_triples(self, mask_by_split: dict[str, np.ndarray]) -> KnowledgeGraph:
        """A copy whose splits drop the rows where the given boolean masks are True."""
        triples = {
            s: a[~mask_by_split[s]] if s in mask_by_split else a.copy() for s, a in self.triples.items()
        }
        return self._with_triples(triples)

    def without_entities(self, entities: Iterable[str | int]) -> KnowledgeGraph:
        """A copy without these entities: their triples (any split) go, the rest are renumbered."""
        drop = np.zeros(self.num_entities, dtype=bool)
        drop[[self.entity_id(e) for e in entities]] = True
        keep = np.flatnonzero(~drop)
        new_id = np.full(self.num_entities, -1, dtype=np.int32)
        new_id[keep] = np.arange(len(keep), dtype=np.int32)
        triples = {}
        for split, a in self.triples.items():
            a = a[~(drop[a[:, 0]] | drop[a[:, 2]])]
            triples[split] = np.stack([new_id[a[:, 0]], a[:, 1], new_id[a[:, 2]]], axis=1).reshape(-1, 3)
        pick = keep.tolist()
        return KnowledgeGraph(
            entities=[self.entities[i] for i in pick],
            relations=list(self.relations),
            triples=triples,
            qids=[self.qids[i] for i in pick],
            labels=[self.labels[i] for i in pick],
            aliases=[list(self.aliases[i]) for i in pick],
            descriptions=[self.descriptions[i] for i in pick],
            types=[list(self.types[i]) for i in pick],
            relation_labels=list(self.relation_labels),
            name=self.name,
            source=self.source,
        )

    def _with_triples(self, triples: dict[str, np.ndarray]) -> KnowledgeGraph:
        return KnowledgeGraph(
            entities=list(self.entities),
            relations=list(self.relations),
            triples=triples,
            qids=list(self.qids),
            labels=list(self.labels),
            aliases=[list(a) for a in self.aliases],
            descriptions=list(self.descriptions),
            types=[list(t) for t in self.types],
            relation_labels=list(self.relation_labels),
            name=self.name,
            source=self.source,
        )

    @staticmethod
    def union(graphs: Iterable[KnowledgeGraph], name: str = "union") -> KnowledgeGraph:
        """Merge graphs, identifying entities by Wikidata QID (by `name:key` where none is known).

        Relations are identified by key, so Wikidata PIDs from different sources merge. Splits are
        concatenated; a triple present in several graphs is kept once per split.
        """
        graphs = list(graphs)
        merged = _Merger()
        for g in graphs:
            ent_map = np.array([merged.entity(g, i) for i in range(g.num_entities)], dtype=np.int32)
            rel_map = np.array([merged.relation(g, i) for i in range(g.num_relations)], dtype=np.int32)
            for split, a in g.triples.items():
                if len(a):
                    merged.parts.setdefault(split, []).append(
                        np.stack([ent_map[a[:, 0]], rel_map[a[:, 1]], ent_map[a[:, 2]]], axis=1)
                    )
        triples = {s: np.unique(np.concatenate(p), axis=0) for s, p in merged.parts.items()}
        return KnowledgeGraph(
            entities=merged.entities,
            relations=merged.relations,
            triples=triples,
            qids=merged.qids,
            labels=merged.labels,
            aliases=merged.aliases,
            descriptions=merged.descriptions,
            types=merged.types,
            relation_labels=merged.relation_labels,
            name=name,
            source=" + ".join(g.source or g.name for g in graphs),
        )


@dataclass
class _Merger:
    """Accumulates the vocabularies of a union of graphs."""

    entities: list[str] = field(default_factory=list)
    qids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    aliases: list[list[str]] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    types: list[list[str]] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    relation_labels: list[str] = field(default_factory=list)
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    entity_ids: dict[str, int] = field(default_factory=dict)
    relation_ids: dict[str, int] = field(default_factory=dict)

    def entity(self, g: KnowledgeGraph, i: int) -> int:
        qid = g.qids[i]
        identity = qid or f"{g.name}:{g.entities[i]}"
        j = self.entity_ids.get(identity)
        if j is None:
            j = self.entity_ids[identity] = len(self.entities)
            self.entities.append(identity)
            self.qids.append(qid)
            self.labels.append(g.labels[i])
            self.aliases.append(list(g.aliases[i]))
            self.descriptions.append(g.descriptions[i])
            self.types.append(list(g.types[i]))
            return j
        self.labels[j] = self.labels[j] or g.labels[i]
        self.descriptions[j] = self.descriptions[j] or g.descriptions[i]
        self.aliases[j] += [a for a in g.aliases[i] if a not in self.aliases[j]]
        self.types[j] += [t for t in g.types[i] if t not in self.types[j]]
        return j

    def relation(self, g: KnowledgeGraph, i: int) -> int:
        key = g.relations[i]
        j = self.relation_ids.get(key)
        if j is None:
            j = self.relation_ids[key] = len(self.relations)
            self.relations.append(key)
            self.relation_labels.append(g.relation_labels[i])
        return j
