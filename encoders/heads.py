"""Task heads over the encoder's last hidden states: sequence, relation (entity pair), typing.

Each head reads `hidden: float[batch, length, hidden]` plus the positions it needs, and returns
logits; `loss` and `decide` say how those logits are trained and read.
"""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """Base: a dropout and a linear layer over a pooled vector; single-label softmax."""

    multi_label = False
    inputs = 1

    def __init__(
        self, hidden: int, num_labels: int, dropout: float, extra: int = 0, expert: bool = False
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden * self.inputs + extra, num_labels)
        # a classifier of its own over the extra (knowledge) features, whose logits are added
        self.expert = nn.Linear(extra, num_labels) if expert and extra else None

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor, focus: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """hidden: float[batch, length, hidden]; mask: float[batch, length], 1 on sentence pieces;
        focus: LongTensor[batch, spans], first piece of each focus span; extra: float[batch, extra]
        features read beside the pooled text (ERNIE's entity features). → float[batch, labels]."""
        pooled = self.dropout(self.pool(hidden, mask, focus))
        logits = self.classifier(pooled if extra is None else torch.cat([pooled, extra], -1))
        return logits if self.expert is None or extra is None else logits + self.expert(extra)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets)

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """bool[batch, labels]: the predicted label set."""
        return nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).bool()


def _at(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """float[batch, spans * hidden]: the hidden state at each position, side by side."""
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index).flatten(1)


class SequenceHead(Head):
    """Classifies a whole text from the mean of its sentence pieces (injected branches excluded)."""

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class RelationHead(Head):
    """Classifies the relation between a head and a tail mention from their first pieces."""

    inputs = 2

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        return _at(hidden, focus[:, :2])


class TypingHead(Head):
    """Multi-label types of one mention, from its first piece; a label is on above probability 0.5
    (the most likely one when none is)."""

    multi_label = True

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        return _at(hidden, focus[:, :1])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.float())

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        on = logits > 0
        top = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
        return torch.where(on.any(-1, keepdim=True), on, top)


HEADS: dict[str, type[Head]] = {"sequence": SequenceHead, "relation": RelationHead, "typing": TypingHead}
