"""Filtered link-prediction evaluation: head and tail ranks over all entities, realistic ties.

Every known true answer (any split) other than the target is removed before ranking (filtered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class _Answers:
    """Known answers per query key (anchor * R + relation), as sorted CSR arrays."""

    keys: np.ndarray
    indptr: np.ndarray
    answers: np.ndarray

    @classmethod
    def build(
        cls, anchors: np.ndarray, relations: np.ndarray, answers: np.ndarray, num_relations: int
    ) -> _Answers:
        key = anchors.astype(np.int64) * num_relations + relations
        order = np.lexsort((answers, key))
        key, answers = key[order], answers[order]
        keys, starts = np.unique(key, return_index=True)
        return cls(keys, np.append(starts, len(key)), answers.astype(np.int64))

    def mask_pairs(
        self, anchors: np.ndarray, relations: np.ndarray, num_relations: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of every known answer of each query in the batch."""
        key = anchors.astype(np.int64) * num_relations + relations
        pos = np.searchsorted(self.keys, key)
        found = (pos < len(self.keys)) & (self.keys[np.minimum(pos, len(self.keys) - 1)] == key)
        start = np.where(found, self.indptr[pos.clip(max=len(self.keys) - 1)], 0)
        end = np.where(found, self.indptr[np.minimum(pos + 1, len(self.keys))], 0)
        counts = end - start
        rows = np.repeat(np.arange(len(key)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.answers[np.repeat(start, counts) + offsets]


@dataclass
class FilterIndex:
    """Known true heads and tails of every (entity, relation) pair, from all splits."""

    tails: _Answers
    heads: _Answers
    num_relations: int

    @classmethod
    def build(cls, known: np.ndarray, num_relations: int) -> FilterIndex:
        h, r, t = known[:, 0], known[:, 1], known[:, 2]
        return cls(
            _Answers.build(h, r, t, num_relations), _Answers.build(t, r, h, num_relations), num_relations
        )


def realistic_rank(distances: torch.Tensor, target: torch.Tensor, filtered: torch.Tensor) -> torch.Tensor:
    """float[B]: 1 + #strictly better + half the #equally good (other than the target), filtered out excluded.

    `distances`: float[B, N] (lower is better); `target`: long[B]; `filtered`: bool[B, N], True where a
    known true answer other than the target must not count.
    """
    true_d = distances.gather(1, target.unsqueeze(1))
    better = ((distances < true_d) & ~filtered).sum(1)
    equal = ((distances == true_d) & ~filtered).sum(1) - 1  # minus the target itself
    return 1.0 + better.double() + equal.double() / 2.0


def rank_triples(
    score_all: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor],
    triples: np.ndarray,
    filters: FilterIndex,
    num_entities: int,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """float64[2 * n]: filtered realistic ranks, tail prediction for each triple then head prediction.

    `score_all(anchor, relation, predict_head)` returns distances float[B, num_entities].
    """
    ranks = []
    for predict_head in (False, True):
        answers = filters.heads if predict_head else filters.tails
        for i in range(0, len(triples), batch_size):
            batch = triples[i : i + batch_size]
            anchor, target = (batch[:, 2], batch[:, 0]) if predict_head else (batch[:, 0], batch[:, 2])
            rows, cols = answers.mask_pairs(anchor, batch[:, 1], filters.num_relations)
            mask = torch.zeros(len(batch), num_entities, dtype=torch.bool)
            mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
            tgt = torch.from_numpy(target.astype(np.int64))
            mask[torch.arange(len(batch)), tgt] = False
            with torch.no_grad():
                d = score_all(
                    torch.from_numpy(anchor.astype(np.int64)).to(device),
                    torch.from_numpy(batch[:, 1].astype(np.int64)).to(device),
                    predict_head,
                )
            ranks.append(realistic_rank(d.float(), tgt.to(d.device), mask.to(d.device)).cpu().numpy())
    return np.concatenate(ranks) if ranks else np.zeros(0)


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """MRR, MR and Hits@1/3/10 of realistic ranks (a tie-averaged rank of 1.5 counts for Hits@2+)."""
    if len(ranks) == 0:
        return {"mrr": 0.0, "mr": 0.0, "hits@1": 0.0, "hits@3": 0.0, "hits@10": 0.0, "count": 0}
    return {
        "mrr": float(np.mean(1.0 / ranks)),
        "mr": float(np.mean(ranks)),
        "hits@1": float(np.mean(ranks <= 1)),
        "hits@3": float(np.mean(ranks <= 3)),
        "hits@10": float(np.mean(ranks <= 10)),
        "count": len(ranks),
    }
