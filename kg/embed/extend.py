"""Add entities to a trained TransE model without retraining it: only the new rows learn.

Old entity and relation vectors stay bit-identical; the new rows train on the triples that mention them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch

from kg.embed.checkpoint import EntityVectors
from kg.embed.config import TrainConfig
from kg.embed.model import TransE
from kg.embed.train import History, Trainer
from kg.errors import KGPipeError
from kg.graph import KnowledgeGraph


def extend(
    vectors: EntityVectors,
    triples: Iterable[tuple[str, str, str]],
    cfg: TrainConfig | None = None,
    epochs: int = 200,
    device: str = "auto",
) -> tuple[EntityVectors, History]:
    """A new `EntityVectors` whose vocabulary adds every entity of `triples` it lacked.

    `triples` are (head, relation, tail) keys or QIDs; relations must be known to the model.
    Training runs over these triples only, for at most `epochs` passes (early-stopped on loss), on
    `device` (auto: CUDA when present).
    """
    triples = list(triples)
    entities, qids, labels = list(vectors.entities), list(vectors.qids), list(vectors.labels)
    index = {k: i for i, k in enumerate(entities)} | {q: i for i, q in enumerate(qids) if q}
    rel_index = {k: i for i, k in enumerate(vectors.relations)}
    rows = []
    for h, r, t in triples:
        if r not in rel_index:
            raise KGPipeError(
                f"relation {r!r} is unknown to the model: extend() adds entities only; retrain to add relations"
            )
        for key in (h, t):
            if key not in index:
                index[key] = len(entities)
                entities.append(key)
                qids.append(key if key[:1] == "Q" and key[1:].isdigit() else "")
                labels.append("")
        rows.append((index[h], rel_index[r], index[t]))
    old = len(vectors.entities)
    if len(entities) == old:
        return vectors, History()

    base = vectors.model
    model = TransE(replace(base.config, num_entities=len(entities)))
    with torch.no_grad():
        model.entity.weight[:old] = base.entity.weight.detach().cpu()
        model.relation.weight.copy_(base.relation.weight.detach().cpu())
    model.relation.weight.requires_grad_(False)
    keep_old = torch.ones(len(entities), 1)
    keep_old[:old] = 0.0
    model.entity.weight.register_hook(
        lambda g: g * keep_old.to(g.device)
    )  # Adam moves rows with zero grads by exactly 0

    train_cfg = replace(
        cfg or TrainConfig(**vectors.config.get("train", {})),
        epochs=epochs,
        eval_every=max(epochs // 10, 1),
        patience=3,
        max_minutes=0.0,
        device=device,  # where the model was trained need not be where it grows
    )
    kg = KnowledgeGraph(
        entities=entities,
        relations=list(vectors.relations),
        triples={"train": np.array(rows, dtype=np.int32)},
        qids=qids,
        labels=labels,
        name="extension",
    )
    trainer = Trainer(kg, train_cfg, model=model)
    history = trainer.fit()
    extended = EntityVectors(model.eval(), entities, qids, labels, list(vectors.relations), vectors.config)
    return extended, history
