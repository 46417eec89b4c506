"""TransE knowledge-graph embeddings: model, training, filtered evaluation, checkpoints.

`train_transe` and `EntityVectors.load` are the entry points; `extend` adds entities later.
Names load on first use, so `kgpipe --help` and the settings do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kg.embed.checkpoint import EntityVectors, save_checkpoint
    from kg.embed.config import TrainConfig
    from kg.embed.model import TransE, TransEConfig
    from kg.embed.run import evaluate_checkpoint, train_transe

_HOME = {
    "EntityVectors": "kg.embed.checkpoint",
    "save_checkpoint": "kg.embed.checkpoint",
    "TrainConfig": "kg.embed.config",
    "TransE": "kg.embed.model",
    "TransEConfig": "kg.embed.model",
    "evaluate_checkpoint": "kg.embed.run",
    "train_transe": "kg.embed.run",
}
__all__ = [
    "EntityVectors",
    "TrainConfig",
    "TransE",
    "TransEConfig",
    "evaluate_checkpoint",
    "save_checkpoint",
    "train_transe",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'kg.embed' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
