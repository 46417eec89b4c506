"""ERNIE-style fusion: an entity stream of projected TransE vectors, fused into the top layers of
any Hugging Face encoder at each mention's first word piece (Zhang et al. 2019, "information fusion").

The encoder's own layers and weights run unchanged; each aggregator is a forward hook on one of
its layers that reads that layer's output and writes back the fused tokens, so no copy of BERT is
kept here. The token update starts at zero, so before training the model is exactly the text model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from kg.errors import KGFormatError
from kg.storage import atomic_dir, read_model_config, read_tensors, write_json


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


@dataclass
class _Fusing:
    """One forward pass's entity stream as the hooks pass it from layer to layer."""

    fusion: ErnieFusion
    entities: torch.Tensor  # float[batch, entities, hidden], updated by each aggregator
    index: torch.Tensor  # LongTensor[batch, entities, hidden]: each mention's first piece
    mask: torch.Tensor  # float[batch, entities, 1]


# the pass now running in this thread (or asyncio task): hooks read it from here, not from the
# module, so one model serves several threads at once, each with its own batch's entities
_FUSING: ContextVar[_Fusing | None] = ContextVar("kgpipe_ernie_fusing", default=None)


FORMAT = "kgpipe-fusion/1"
FILE_WEIGHTS = "fusion.safetensors"
FILE_CONFIG = "pretrain.json"
# what dEA trains and a fine-tuned model starts from; the frozen vectors and the head's own
# focus features are not part of it
PRETRAINED = ("project.", "aggregators.")


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

    Use `with fusion.stream(entities): base(...)`: outside that block the hooks pass through. The
    stream is this thread's own (a context variable), so concurrent forward passes do not mix.
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
        stack = encoder_layers(base)
        for slot, layer in enumerate(self.layers):
            stack[layer].register_forward_hook(self._hook(slot))

    @contextmanager
    def stream(self, entities: EntityStream) -> Iterator[None]:
        if not entities.rows.numel():
            yield
            return
        projected = self.project(self.vectors(entities.rows.clamp(min=0)))
        # computed once for all aggregators: on a GPU the small kernels, not the arithmetic, are the cost
        hidden = projected.shape[-1]
        index = entities.positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden)
        mask = entities.mask.unsqueeze(-1).to(projected.dtype)
        token = _FUSING.set(_Fusing(self, projected, index, mask))
        try:
            yield
        finally:
            _FUSING.reset(token)

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

    def save(self, folder: str | Path, base: nn.Module, provenance: dict[str, Any]) -> Path:
        """Write what alignment pre-training trains (projection and aggregators) and what it fits
        (the text model `base`, the layers, the entity vector table) atomically; `provenance`
        (text model path, settings, result) is kept in pretrain.json beside it."""
        state = {
            k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k.startswith(PRETRAINED)
        }
        meta = {
            "format": FORMAT,
            **provenance,
            "hidden": self.hidden,
            "fusion_layers": list(self.layers),
            "entities": int(self.vectors.weight.shape[0]),
            "entity_dim": int(self.vectors.weight.shape[1]),
            "vectors_sha256": vectors_fingerprint(self.vectors.weight),
            "text_model_sha256": text_model_fingerprint(base),
        }
        with atomic_dir(folder) as tmp:
            save_file(state, str(tmp / FILE_WEIGHTS), metadata={"format": FORMAT})
            write_json(tmp / FILE_CONFIG, meta)
        return Path(folder)

    def load(self, folder: str | Path, base: nn.Module | None = None) -> dict[str, Any]:
        """Start this fusion from a pre-trained one; refuses one trained for other layers, another hidden
        size, another entity vector table or (given `base`) another text model. Returns its pretrain.json."""
        folder = Path(folder)
        config = folder / FILE_CONFIG
        writer = "kgpipe encoder pretrain"
        meta = read_model_config(folder, FORMAT, "a pre-trained fusion", writer, FILE_CONFIG, FILE_WEIGHTS)
        fix = "Pre-train again with the same --transe and --model as this fine-tuning"
        if base is not None and "text_model_sha256" not in meta:
            raise KGFormatError(config, None, "no text model fingerprint (an older kgpipe wrote it)", fix)
        if base is not None and meta["text_model_sha256"] != text_model_fingerprint(base):
            raise KGFormatError(
                config, None, f"it was pre-trained on another text model ({meta.get('text_model')})", fix
            )
        mine = {
            "fusion_layers": list(self.layers),
            "entities": int(self.vectors.weight.shape[0]),
            "entity_dim": int(self.vectors.weight.shape[1]),
            "hidden": self.hidden,
        }
        for key, value in mine.items():
            if meta.get(key) != value:
                raise KGFormatError(
                    config, None, f"{key} is {meta.get(key)!r}, this model has {value!r}", fix
                )
        if meta.get("vectors_sha256") != vectors_fingerprint(self.vectors.weight):
            raise KGFormatError(config, None, "it was pre-trained on another entity vector table", fix)
        state = read_tensors(folder / FILE_WEIGHTS, writer)
        own = {k: v for k, v in self.state_dict().items() if k.startswith(PRETRAINED)}
        missing = [k for k in own if k not in state]
        if missing:
            raise KGFormatError(folder / FILE_WEIGHTS, None, f"lacks {missing[:3]}", fix)
        wrong = [k for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
        if wrong:
            raise KGFormatError(folder / FILE_WEIGHTS, None, f"weight {wrong[0]!r} has another shape", fix)
        self.load_state_dict({k: state[k] for k in own}, strict=False)
        return meta

    @staticmethod
    def focus_slots(spans: int) -> int:
        return spans + (1 if spans == 2 else 0)

    def _hook(self, slot: int) -> Callable[[nn.Module, object, object], object]:
        def fuse(module: nn.Module, args: object, output: object) -> object:
            state = _FUSING.get()
            if state is None or state.fusion is not self:
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            hidden, state.entities = self.aggregators[slot](hidden, state.entities, state.index, state.mask)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return fuse


def vectors_fingerprint(vectors: torch.Tensor) -> str:
    """sha256 of the entity vector table: a fusion only fits the table it was trained on."""
    return hashlib.sha256(vectors.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def text_model_fingerprint(base: nn.Module) -> str:
    """sha256 of the text model's input embeddings: the same checkpoint wherever its folder lies."""
    return vectors_fingerprint(base.get_input_embeddings().weight)  # type: ignore[operator]
