"""Train-and-save and load-and-evaluate: what `kgpipe kg train` / `kg eval` and the demo call.

Writes model.safetensors, config.json, metrics.json and curve.png into one folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from kg.device import device_name
from kg.embed.checkpoint import EntityVectors, save_checkpoint
from kg.embed.config import TrainConfig
from kg.embed.evaluate import FilterIndex, metrics_from_ranks, rank_triples
from kg.embed.train import History, Trainer, init_distributed
from kg.errors import KGPipeError
from kg.graph import KnowledgeGraph


def plot_curve(history: History, title: str) -> Any:
    """A function that draws loss per epoch and validation MRR into a PNG at the path it is given."""

    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(range(1, len(history.loss) + 1), history.loss, color="tab:blue", label="train loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(history.valid_epochs, history.valid_mrr, "o-", color="tab:red", label="valid MRR (filtered)")
        ax2.set_ylabel("valid MRR", color="tab:red")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return draw


def train_transe(
    kg: KnowledgeGraph, cfg: TrainConfig, out: str | Path | None = None
) -> tuple[Trainer, dict[str, Any]]:
    """Train TransE on `kg`, evaluate on test, and (rank 0) save the checkpoint to `out`."""
    distributed = init_distributed()
    trainer = Trainer(kg, cfg)
    history = trainer.fit()
    metrics: dict[str, Any] = {}
    if trainer.rank == 0:
        test = trainer.evaluate(kg.triples["test"]) if len(kg.triples["test"]) else {}
        metrics = {
            "test": test,
            "best_valid_mrr": max(history.valid_mrr, default=None),
            "best_epoch": history.best_epoch,
            "epochs_run": history.epochs_run,
            "stopped_by": history.stopped,
            "train_seconds": round(history.seconds, 2),
            "seconds_per_epoch": round(history.seconds / max(history.epochs_run, 1), 3),
            "history": {
                "loss": history.loss,
                "valid_epochs": history.valid_epochs,
                "valid_mrr": history.valid_mrr,
            },
            "device": device_name(trainer.device),
            "world_size": trainer.world,
            "torch": torch.__version__,
        }
        if out is not None:
            save_checkpoint(
                out, trainer.model, kg, cfg.to_dict(), metrics, plot_curve(history, f"TransE on {kg.name}")
            )
    if distributed:
        dist.barrier()
    return trainer, metrics


def evaluate_checkpoint(
    folder: str | Path, kg: KnowledgeGraph, split: str = "test", device: str = "cpu"
) -> dict[str, float]:
    """Filtered ranking metrics of a saved model on one split of `kg` (its entities matched by key/QID)."""
    if split not in kg.triples:
        raise KGPipeError(f"KG {kg.name!r} has no split {split!r}: use one of {', '.join(kg.triples)}")
    return evaluate_vectors(EntityVectors.load(folder, device=device), kg, kg.triples[split], device)


def evaluate_vectors(
    vectors: EntityVectors, kg: KnowledgeGraph, triples: np.ndarray, device: str = "cpu"
) -> dict[str, float]:
    """Rank `triples` (ids of `kg`) with `vectors`, filtering by every split of `kg`.

    Triples with an entity or relation the model lacks are skipped and counted in `skipped_triples`.
    """
    ent_map, rel_map = vectors.align(kg)

    def mapped(t: np.ndarray) -> np.ndarray:
        return np.stack([ent_map[t[:, 0]], rel_map[t[:, 1]], ent_map[t[:, 2]]], axis=1).reshape(-1, 3)

    asked = mapped(triples)
    usable = asked[(asked >= 0).all(axis=1)]
    if len(asked) and not len(usable):
        raise KGPipeError(
            f"none of the {len(asked)} triples use entities and relations the model knows: is {kg.name!r} the KG it was trained on?"
        )
    known = mapped(kg.all_triples())
    filters = FilterIndex.build(known[(known >= 0).all(axis=1)], len(vectors.relations))
    result = metrics_from_ranks(
        rank_triples(vectors.model.score_all, usable, filters, len(vectors.entities), device)
    )
    result["skipped_triples"] = len(asked) - len(usable)
    return result
