"""Dense entity vectors for context similarity: each entity's "label. description" embedded once
by a text embedder that the caller supplies (kg does not import encoders), cached as safetensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save
from tqdm.auto import tqdm

from kg.graph import KnowledgeGraph
from kg.storage import atomic_write

Embed = Callable[[list[str]], np.ndarray]


def entity_text(kg: KnowledgeGraph, i: int) -> str:
    return f"{kg.labels[i]}. {kg.descriptions[i]}" if kg.descriptions[i] else kg.labels[i]


def entity_vectors(
    kg: KnowledgeGraph, embed: Embed, cache: Path | None = None, batch_size: int = 256
) -> np.ndarray:
    """float32[num_entities, dim], unit rows; zero rows for entities with no name."""
    if cache is not None and cache.exists():
        stored = load_file(cache)
        if stored["vectors"].shape[0] == kg.num_entities:
            return stored["vectors"].astype(np.float32)
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
    if cache is not None:
        with atomic_write(cache, "wb") as f:
            f.write(save({"vectors": vectors.astype(np.float16)}))
    return vectors
