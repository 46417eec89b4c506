"""What an encoder knows about entities: TransE vectors (ERNIE) and triples as text (K-BERT).

Built once from a KG and a TransE checkpoint, saved inside the encoder folder so a trained model
needs neither again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydantic.dataclasses
import torch
from pydantic import StrictStr

from encoders.data import EntitySpan, Example
from kg.embed.checkpoint import EntityVectors
from kg.errors import KGFormatError
from kg.graph import KnowledgeGraph
from kg.settings import STRICT, NonNegativeInt, validate

if TYPE_CHECKING:
    from kg.link.dense import Embed
    from kg.link.linker import Linker

FILE_INDEX = "knowledge.json"


@pydantic.dataclasses.dataclass(config=STRICT)
class KnowledgeIndex:
    """What knowledge.json holds: the QID of each vector row, their width, K-BERT's branches."""

    qids: list[StrictStr]
    dim: NonNegativeInt
    branches: dict[StrictStr, list[StrictStr]]


def relation_name(kg: KnowledgeGraph, r: int) -> str:
    """Words for a relation: its label, or for Freebase paths the last segment ("nationality")."""
    key = kg.relations[r]
    if key.startswith("/"):
        return key.rstrip("/").rsplit("/", 1)[-1].replace("_", " ")
    return kg.relation_labels[r]


@dataclass
class KnowledgeSource:
    """Entity knowledge by QID. `vectors` is float[num_entities, dim] (row i is `qids[i]`), empty
    when the model fuses none; `branches` maps a QID to its triples rendered as short texts."""

    qids: list[str]
    vectors: torch.Tensor
    branches: dict[str, list[str]] = field(default_factory=dict)
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rows = {q: i for i, q in enumerate(self.qids)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def row(self, qid: str) -> int:
        """The vector row of an entity, or -1 when it has none."""
        return self._rows.get(qid, -1)

    @classmethod
    def empty(cls) -> KnowledgeSource:
        return cls([], torch.zeros(0, 0))

    @classmethod
    def from_transe(cls, transe: EntityVectors) -> KnowledgeSource:
        """ERNIE's entity stream: every entity of the checkpoint that has a QID (or a key)."""
        qids = [q or k for q, k in zip(transe.qids, transe.entities, strict=True)]
        return cls(qids, transe.matrix.detach().float().cpu().clone())

    def with_descriptions(self, kg: KnowledgeGraph, embed: Embed) -> KnowledgeSource:
        """The entity stream widened by what the KG says of each entity in words: its "label.
        description" embedded by the text model (unit vectors, computed once per KG and cached),
        appended to the TransE vector; zeros where an entity has one and not the other. Entities
        with a name but no TransE vector join the stream."""
        from kg.link.dense import entity_vectors

        text = entity_vectors(kg, embed)
        by_qid = {q or k: i for i, (q, k) in enumerate(zip(kg.qids, kg.entities, strict=True))}
        named = np.abs(text).sum(axis=1) > 0
        qids = self.qids + [q for q, i in by_qid.items() if named[i] and q not in self._rows]
        out = torch.zeros(len(qids), self.dim + text.shape[1])
        out[: len(self.qids), : self.dim] = self.vectors
        rows = [(r, by_qid[q]) for r, q in enumerate(qids) if q in by_qid]
        if rows:
            at, source = zip(*rows, strict=True)
            out[list(at), self.dim :] = torch.from_numpy(text[list(source)])
        return KnowledgeSource(qids, out, self.branches)

    @classmethod
    def from_kg(cls, kg: KnowledgeGraph, per_entity: int = 3) -> KnowledgeSource:
        """K-BERT's branches: up to `per_entity` outgoing triples per entity as "relation tail".

        The commonest relations come first (they say what kind of thing an entity is: country,
        occupation, genre), then the better-connected tails; triples whose relation or tail has
        no name are skipped, since a branch must be words.
        """
        triples = kg.all_triples()
        if len(triples) == 0:
            return cls.empty()
        rel_count = np.bincount(triples[:, 1], minlength=kg.num_relations)
        degree = np.bincount(np.concatenate([triples[:, 0], triples[:, 2]]), minlength=kg.num_entities)
        names = [relation_name(kg, r) for r in range(kg.num_relations)]
        order = np.lexsort((-degree[triples[:, 2]], -rel_count[triples[:, 1]], triples[:, 0]))
        branches: dict[str, list[str]] = {}
        for h, r, t in triples[order].tolist():
            qid = kg.qids[h] or kg.entities[h]
            got = branches.setdefault(qid, [])
            text = f"{names[r]} {kg.labels[t]}".strip()
            if len(got) < per_entity and names[r] and kg.labels[t] and text not in got:
                got.append(text)
        return cls([], torch.zeros(0, 0), {q: b for q, b in branches.items() if b})

    def save(self, folder: Path) -> None:
        """The QID index and branches as JSON; the vectors travel in the model's safetensors."""
        index = {"qids": self.qids, "dim": self.dim, "branches": self.branches}
        (folder / FILE_INDEX).write_text(json.dumps(index))

    @classmethod
    def load(cls, folder: Path) -> KnowledgeSource:
        """The index and branches; vectors are zeros of the right shape until the model loads them."""
        path = folder / FILE_INDEX
        fix = "Write the folder again with `kgpipe encoder finetune`"
        if not path.exists():
            raise KGFormatError(folder, None, f"no {FILE_INDEX}", fix)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KGFormatError(path, None, f"not a JSON file ({e})", fix) from e
        index = validate(KnowledgeIndex, raw, path, fix)
        vectors = torch.zeros(len(index.qids), index.dim) if index.dim else torch.zeros(0, 0)
        return cls(index.qids, vectors, index.branches)


def knowledge_for(
    mode: str,
    kg_path: str | Path | None = None,
    transe_path: str | Path | None = None,
    per_entity: int = 2,
    descriptions: bool = False,
) -> KnowledgeSource:
    """The knowledge a mode needs: TransE vectors (ernie; with `descriptions`, each entity's
    description embedded by the default text model too), KG branches (kbert), nothing (none).

    Defaults are the bundled FB15k-237 KG and its TransE checkpoint.
    """
    from kg.io import bundled_kg_path, bundled_transe_path, load_kg

    if mode == "ernie":
        source = KnowledgeSource.from_transe(EntityVectors.load(transe_path or bundled_transe_path()))
        if descriptions:
            from encoders.text import text_embedder

            source = source.with_descriptions(load_kg(kg_path or bundled_kg_path()), text_embedder())
        return source
    if mode == "kbert":
        return KnowledgeSource.from_kg(load_kg(kg_path or bundled_kg_path()), per_entity)
    return KnowledgeSource.empty()


def link_examples(examples: list[Example], linker: Linker) -> tuple[list[Example], int]:
    """The examples with what `kg.link` finds filled in: a QID for focus spans given without one
    (the linked mention that overlaps it), and every other linked mention as context. Returns new
    examples in the same order (the given ones are not changed) and how many entities were added."""
    todo = [
        i
        for i, ex in enumerate(examples)
        if not all(s.qid for s in ex.entities) or len(ex.entities) == len(ex.focus)
    ]
    found = linker.link_many([examples[i].text for i in todo]) if todo else []
    out, n = list(examples), 0
    for i, linked in zip(todo, found, strict=True):
        ex = examples[i]
        hits = [EntitySpan(e.start, e.end, e.qid) for e in linked if e.qid]
        focus = []
        for s in ex.focus:
            match = next((h for h in hits if h.start < s.end and s.start < h.end), None)
            focus.append(EntitySpan(s.start, s.end, match.qid) if not s.qid and match else s)
        taken = {(s.start, s.end) for s in ex.entities}
        extra = [h for h in hits if (h.start, h.end) not in taken]
        n += len(extra) + sum(a != b for a, b in zip(focus, ex.focus, strict=True))
        entities = focus + [e for e in ex.entities if e not in ex.focus] + extra
        out[i] = replace(ex, focus=tuple(focus), entities=entities)
    return out, n
