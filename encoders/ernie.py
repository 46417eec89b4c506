"""ERNIE-style fusion: an entity stream of projected TransE vectors, fused into the top layers of
any Hugging Face encoder at each mention's first word piece (Zhang et al. 2019, "information fusion").

The encoder's own layers and weights run unchanged; each aggregator is a forward hook on one of
its layers that reads that layer's output and writes back the fused tokens, so no copy of BERT is
kept here. The token update starts at zero, so before training the model is exactly the text model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EntityStream:
    """The entities of a batch.

    rows: LongTensor[batch, entities] — row in the knowledge vectors, -1 for padding.
    positions: LongTensor[batch, entities] — the mention's first word piece.
    """

    rows: torch.Tensor
    positions: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """BoolTensor[batch, entities]: which slots hold an entity."""
        return self.rows >= 0


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-family model (BERT, RoBERTa, ELECTRA, MiniLM, DistilBERT)."""
    for path in ("encoder.layer", "transformer.layer", "encoder.layers"):
        node: object = model
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList):
            return node
    raise TypeError(f"{type(model).__name__}: no encoder.layer list found; kgpipe fuses BERT-family encoders")


class Aggregator(nn.Module):
    """One fusion step: h = gelu(W_t·token + W_e·entity); token += U_t·h; entity = LN(entity + U_e·h)."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.token_in = nn.Linear(hidden, hidden)
        self.entity_in = nn.Linear(hidden, hidden, bias=False)
        self.token_out = nn.Linear(hidden, hidden)
        self.entity_out = nn.Linear(hidden, hidden)
        self.entity_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.token_out.weight)
        nn.init.zeros_(self.token_out.bias)

    def forward(
        self, tokens: torch.Tensor, entities: torch.Tensor, index: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: float[batch, length, hidden]; entities: float[batch, entities, hidden]; index:
        LongTensor[batch, entities, hidden], each mention's first piece repeated over the hidden
        size; mask: float[batch, entities, 1], 1 where a slot holds an entity."""
        at_mention = tokens.gather(1, index)
        fused = self.dropout(nn.functional.gelu(self.token_in(at_mention) + self.entity_in(entities)))
        tokens = tokens.scatter_add(1, index, (self.token_out(fused) * mask).to(tokens.dtype))
        entities = self.entity_norm(entities + self.entity_out(fused))
        return tokens, entities


class ErnieFusion(nn.Module):
    """Projects knowledge vectors to the hidden size and fuses them after the chosen layers.

    Use `with fusion.stream(entities): base(...)`: outside that block the hooks pass through.
    """

    def __init__(
        self, base: nn.Module, vectors: torch.Tensor, layers: list[int], dropout: float, freeze: bool
    ) -> None:
        super().__init__()
        hidden = int(base.config.hidden_size)  # type: ignore[union-attr,arg-type]
        self.hidden = hidden
        self.vectors = nn.Embedding.from_pretrained(vectors.float(), freeze=freeze)
        self.project = nn.Sequential(nn.Linear(vectors.shape[1], hidden), nn.LayerNorm(hidden))
        self.layers = list(layers)
        self.aggregators = nn.ModuleList(Aggregator(hidden, dropout) for _ in self.layers)
        self.focus_project = nn.Sequential(nn.Linear(vectors.shape[1], hidden), nn.LayerNorm(hidden))
        # what the head reads for a focus entity (or pair) the KG lacks: learned, not zeros, so a
        # mention outside the KG is not mistaken for one whose features happen to be small
        self.missing = nn.Parameter(torch.zeros(hidden))
        self.dropout = nn.Dropout(dropout)
        self._stream: EntityStream | None = None
        self._entities: torch.Tensor | None = None
        self._index = self._mask = torch.empty(0)  # the stream's gather index and slot mask
        stack = encoder_layers(base)
        for slot, layer in enumerate(self.layers):
            stack[layer].register_forward_hook(self._hook(slot))

    @contextmanager
    def stream(self, entities: EntityStream) -> Iterator[None]:
        self._stream = entities
        self._entities = self.project(self.vectors(entities.rows.clamp(min=0)))
        # computed once for all aggregators: on a GPU the small kernels, not the arithmetic, are the cost
        hidden = self._entities.shape[-1]
        self._index = entities.positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden)
        self._mask = entities.mask.unsqueeze(-1).to(self._entities.dtype)
        try:
            yield
        finally:
            self._stream = self._entities = None
            self._index = self._mask = torch.empty(0)

    def focus_features(self, rows: torch.Tensor) -> torch.Tensor:
        """float[batch, n * hidden] for rows LongTensor[batch, spans] (-1: no vector): each focus
        entity's vector projected, and for a pair also the TransE translation tail − head, the
        relation the KG's geometry suggests (the pair's own triples are never needed for it); the
        learned `missing` vector where the KG lacks the entity or one of the pair."""
        known = (rows >= 0).unsqueeze(-1).float()
        vecs = self.vectors(rows.clamp(min=0)) * known
        parts = [vecs]
        if rows.shape[1] == 2:
            both = known[:, :1] * known[:, 1:]
            parts.append((vecs[:, 1:] - vecs[:, :1]) * both)
        feats = torch.cat(parts, 1)
        present = torch.cat([known, known[:, :1] * known[:, 1:]], 1) if rows.shape[1] == 2 else known
        projected = self.dropout(self.focus_project(feats))
        return (projected * present + self.missing * (1.0 - present)).flatten(1)

    @staticmethod
    def focus_slots(spans: int) -> int:
        return spans + (1 if spans == 2 else 0)

    def _hook(self, slot: int) -> Callable[[nn.Module, object, object], object]:
        def fuse(module: nn.Module, args: object, output: object) -> object:
            if self._stream is None or self._entities is None or not self._stream.rows.numel():
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            hidden, self._entities = self.aggregators[slot](hidden, self._entities, self._index, self._mask)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return fuse
