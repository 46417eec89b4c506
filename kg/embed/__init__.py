"""TransE knowledge-graph embeddings: model, training, filtered evaluation, checkpoints.

`train_transe` and `EntityVectors.load` are the entry points; `extend` adds entities later.
"""

from kg.embed.checkpoint import EntityVectors, save_checkpoint
from kg.embed.config import TrainConfig
from kg.embed.model import TransE, TransEConfig
from kg.embed.run import evaluate_checkpoint, train_transe

__all__ = [
    "EntityVectors",
    "TrainConfig",
    "TransE",
    "TransEConfig",
    "evaluate_checkpoint",
    "save_checkpoint",
    "train_transe",
]
