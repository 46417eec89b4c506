"""TransE: entity and relation embeddings plus a pure scoring function.

The interaction is stateless (`distance`), so training, ranking and search share one definition.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

import torch
from pydantic import StrictBool
from pydantic.dataclasses import dataclass
from torch import nn

from kg.settings import STRICT, PositiveFloat, PositiveInt


def distance(q: torch.Tensor, t: torch.Tensor, p: int) -> torch.Tensor:
    """||q - t||_p along the last dimension, broadcasting; TransE's q is h + r (or t - r for heads)."""
    return (q - t).norm(p=p, dim=-1)


def pairwise_distance(q: torch.Tensor, candidates: torch.Tensor, p: int) -> torch.Tensor:
    """float[..., B, K]: ||q_b - c_k||_p for every query row and candidate row (batched over ...).

    This is the shared-negatives trick: one block of K candidates for a whole batch turns scoring
    into one `cdist` (a matrix product for p=2) instead of a [B, K, dim] gather.
    """
    if p == 2:
        # ||q||² + ||c||² - 2 q·c: a matrix product; clamp guards tiny negative rounding
        cross = q @ candidates.transpose(-1, -2)
        sq = (q * q).sum(-1, keepdim=True) + (candidates * candidates).sum(-1).unsqueeze(-2) - 2 * cross
        return sq.clamp_min(1e-12).sqrt()
    if q.dim() == 2:
        return torch.cdist(q.unsqueeze(0), candidates.unsqueeze(0), p=p).squeeze(0)
    return torch.cdist(q, candidates, p=p)


@dataclass(config=STRICT)
class TransEConfig:
    """Shapes and geometry of a TransE model (what `config.json` stores beside the weights)."""

    num_entities: PositiveInt
    num_relations: PositiveInt
    dim: PositiveInt = 256
    p_norm: Literal[1, 2] = 2
    margin: PositiveFloat = 9.0  # γ: the score is γ - distance
    reciprocal: StrictBool = False  # head prediction uses its own inverse relation vectors (t + r⁻¹ ≈ h)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TransE(nn.Module):
    """`entity`: float[num_entities, dim]; `relation`: float[num_relations, dim]."""

    def __init__(self, config: TransEConfig) -> None:
        super().__init__()
        self.config = config
        self.entity = nn.Embedding(config.num_entities, config.dim)
        self.relation = nn.Embedding(config.num_relations * (2 if config.reciprocal else 1), config.dim)
        bound = (config.margin + 2.0) / config.dim  # RotatE's init: keeps initial distances near γ
        nn.init.uniform_(self.entity.weight, -bound, bound)
        nn.init.uniform_(self.relation.weight, -bound, bound)

    def query(self, anchor: torch.Tensor, r: torch.Tensor, predict_head: torch.Tensor | bool) -> torch.Tensor:
        """float[B, dim]: where the missing side should lie: h + r for a tail, t - r (or t + r⁻¹) for a head."""
        e = self.entity(anchor)
        head = torch.as_tensor(predict_head, device=r.device)
        if self.config.reciprocal:
            return e + self.relation(r + self.config.num_relations * head.long())
        sign = 1 - 2 * head.to(e.dtype)
        return e + self.relation(r) * (sign.unsqueeze(-1) if sign.dim() else sign)

    def forward(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """float[B]: γ - ||h + r - t||_p for triples given as id tensors."""
        return self.config.margin - distance(self.query(h, r, False), self.entity(t), self.config.p_norm)

    def score_all(self, anchor: torch.Tensor, r: torch.Tensor, predict_head: bool) -> torch.Tensor:
        """float[B, num_entities]: distances to every entity for (anchor, r, ?) or (?, r, anchor)."""
        return pairwise_distance(self.query(anchor, r, predict_head), self.entity.weight, self.config.p_norm)
