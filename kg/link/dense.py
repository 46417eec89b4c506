"""Dense entity vectors for context similarity: each entity's "label. description" embedded once
by a text embedder that the caller supplies (kg does not import encoders), cached as safetensors
under a fingerprint of the KG and the embedder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save
from tqdm.auto import tqdm

from kg.errors import KGFormatError
from kg.graph import KnowledgeGraph
from kg.storage import atomic_write

Embed = Callable[[list[str]], np.ndarray]


def entity_text(kg: KnowledgeGraph, i: int) -> str:
    return f"{kg.labels[i]}. {kg.descriptions[i]}" if kg.descriptions[i] else kg.labels[i]


def fingerprint(kg: KnowledgeGraph, embed: Embed) -> str:
    """What the vectors depend on: the entities' texts and the embedder (its `model_id`, if it has one)."""
    h = hashlib.sha256(str(getattr(embed, "model_id", "custom")).encode())
    for i in range(kg.num_entities):
        h.update(f"{kg.entities[i]}\t{entity_text(kg, i)}\n".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """Where computed vectors are kept between runs: `KGPIPE_CACHE`, else ~/.cache/kgpipe."""
    from kg.settings import settings

    return settings().cache


def vectors_file_name(kg: KnowledgeGraph, embed: Embed) -> str:
    """The file the entity vectors of `kg` under `embed` are kept in: named by what they depend on."""
    return f"entities-{fingerprint(kg, embed)}.safetensors"


def entity_vectors(
    kg: KnowledgeGraph, embed: Embed, folder: Path | None = None, batch_size: int = 256
) -> np.ndarray:
    """float32[num_entities, dim], unit rows (float16 precision); zero rows for entities with no name.

    Looked up by fingerprint in `folder` (a linker folder) and then the user cache; computed (with a
    progress bar) and written to the user cache when neither has them.
    """
    name = vectors_file_name(kg, embed)
    for place in (folder, cache_root()):
        if place is not None and (place / name).exists():
            try:
                return load_file(place / name)["vectors"].astype(np.float32)
            except (SafetensorError, OSError, KeyError) as e:
                raise KGFormatError(
                    place / name,
                    None,
                    f"damaged entity vectors ({e})",
                    "Delete the file: it is computed again",
                ) from e
    named = [i for i in range(kg.num_entities) if kg.labels[i]]
    parts = []
    for start in tqdm(
        range(0, len(named), batch_size), desc="embedding entities", unit="batch", disable=None
    ):
        parts.append(embed([entity_text(kg, i) for i in named[start : start + batch_size]]))
    dim = parts[0].shape[1] if parts else 1
    vectors = np.zeros((kg.num_entities, dim), dtype=np.float32)
    if parts:
        vectors[named] = np.concatenate(parts)
    stored = vectors.astype(np.float16)  # what the file keeps, so a later run reads the same
    with atomic_write(cache_root() / name, "wb") as f:
        f.write(save({"vectors": stored}))
    return stored.astype(np.float32)


class DenseIndex:
    """Exact inner-product search (a FAISS flat index) over unit entity vectors: the candidate
    source for mentions whose name matches no label or alias ('Moslem' → Islam)."""

    def __init__(self, vectors: np.ndarray, embed: Embed) -> None:
        import faiss

        self.embed = embed
        self.rows = np.flatnonzero(np.abs(vectors).sum(axis=1) > 0)  # entities that have a name
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors[self.rows], dtype=np.float32))

    def search(self, texts: list[str], k: int = 10) -> list[list[tuple[int, float]]]:
        """Per text, up to `k` (entity row, cosine similarity) pairs, most similar first."""
        if not texts:
            return []
        scores, ids = self.index.search(np.ascontiguousarray(self.embed(texts), dtype=np.float32), k)
        return [
            [(int(self.rows[j]), float(s)) for j, s in zip(row_ids, row_scores, strict=True) if j >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]
