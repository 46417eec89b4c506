"""ERNIE's alignment pre-training: a denoising entity auto-encoder (dEA) over text linked to the KG.

Zhang et al. 2019, §3.4: a share of the token-entity alignments is corrupted (15 % hide the
entity, 5 % replace it with another) and the model predicts every mention's true entity from the
fused token at the mention's first word piece, among the entities of the batch. So the fusion
learns, before any label is seen, to write an entity's knowledge where its mention is and to tell
when the text and the entity disagree.

Here only the fusion learns (its projection and aggregators) and the text model stays frozen:
ERNIE kept its text model a language model with masked-language-model training beside dEA, which
a checkpoint without an MLM head (the bundled MiniLM) cannot do, and fine-tuning trains the text
model anyway. Saved as `fusion.safetensors` + `pretrain.json`; `KnowledgeEncoder.create(...,
fusion=DIR)` starts fine-tuning from it.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydantic.dataclasses
import torch
from pydantic import StrictBool
from torch import nn
from tqdm.auto import tqdm

from encoders.data import Example
from encoders.ernie import (
    PRETRAINED,
    EntityStream,
    ErnieFusion,
)
from encoders.training import length_batches, set_seed, warmup_decay
from kg.device import device_name, resolve_device
from kg.errors import KGPipeError
from kg.settings import STRICT, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Share

if TYPE_CHECKING:
    from encoders.model import KnowledgeEncoder


@pydantic.dataclasses.dataclass(config=STRICT)
class PretrainConfig:
    """dEA settings; the corruption shares are ERNIE's."""

    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    warmup: Share = 0.1
    hide: Share = 0.15  # share of alignments whose entity is hidden from the fusion
    replace: Share = 0.05  # share whose entity is swapped for a random one
    seed: NonNegativeInt = 0
    progress: StrictBool = True
    device: str | None = None  # auto, cpu, cuda, cuda:N; None: where the model is


@dataclass
class PretrainResult:
    """Per-epoch loss and accuracy of the entity predictions (all alignments, and the hidden ones)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    hidden_accuracy: list[float] = field(default_factory=list)
    alignments: int = 0
    texts: int = 0
    seconds: float = 0.0
    device: str = ""


class AlignmentHead(nn.Module):
    """Scores a token against candidate entities: transform(token) · entity, both in hidden space."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))

    def forward(self, tokens: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """tokens: float[n, hidden]; candidates: float[c, hidden] → float[n, c] scores."""
        return self.transform(tokens) @ candidates.T


def _corrupt(
    rows: torch.Tensor, cfg: PretrainConfig, pool: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """The stream's rows with `hide` of the alignments set to -1 and `replace` swapped for another
    entity drawn from `pool` (the corpus's entities)."""
    draw = torch.rand(rows.shape, generator=gen)
    live = rows >= 0
    out = rows.clone()
    out[live & (draw < cfg.hide)] = -1
    swap = live & (draw >= cfg.hide) & (draw < cfg.hide + cfg.replace)
    if bool(swap.any()) and len(pool) > 1:
        pick = torch.randint(len(pool), (int(swap.sum()),), generator=gen)
        same = pool[pick] == rows[swap]
        pick[same] = (pick[same] + 1) % len(pool)  # always another entity, as in ERNIE
        out[swap] = pool[pick]
    return out


def pretrain(model: KnowledgeEncoder, examples: list[Example], cfg: PretrainConfig) -> PretrainResult:
    """Train `model.fusion` (a KnowledgeEncoder with ERNIE knowledge) by dEA on `examples`, texts
    whose `entities` carry QIDs. The text model is frozen meanwhile and unfrozen after."""
    fusion: ErnieFusion | None = model.fusion
    if fusion is None:
        raise ValueError(
            "alignment pre-training trains ERNIE's fusion: build the encoder with knowledge='ernie'"
        )
    set_seed(cfg.seed)
    known = [ex for ex in examples if any(model.knowledge.row(s.qid) >= 0 for s in ex.entities if s.qid)]
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ValueError(f"epochs, batch_size and lr must be positive: {cfg}")
    if not known:
        raise KGPipeError(
            f"none of the {len(examples)} texts names an entity with a vector: link them to the KG first "
            "(`kgpipe encoder pretrain` links texts given without entities)"
        )
    pool = torch.tensor(
        sorted({model.knowledge.row(s.qid) for ex in known for s in ex.entities if s.qid} - {-1})
    )
    device = resolve_device(cfg.device) if cfg.device else next(model.parameters()).device
    head = AlignmentHead(fusion.hidden)
    model.to(device)
    head.to(device)
    rng, gen = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    result, start = PretrainResult(texts=len(known)), time.time()
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("fusion.") and name[len("fusion.") :].startswith(PRETRAINED)
        params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = warmup_decay(opt, cfg.epochs * -(-len(known) // cfg.batch_size), cfg.warmup)
        model.train()
        for epoch in range(cfg.epochs):
            losses, right, total, right_hidden, total_hidden = [], 0, 0, 0, 0
            bar = tqdm(
                length_batches(known, cfg.batch_size, rng), desc=f"dEA {epoch + 1}", disable=not cfg.progress
            )
            for batch in bar:
                enc = model.encode(batch, with_targets=False)
                if enc.stream is None:
                    continue
                true, positions = enc.stream.rows, enc.stream.positions.to(device)
                shown = _corrupt(true, cfg, pool, gen)
                enc.stream = EntityStream(shown, enc.stream.positions)
                enc = enc.to(device)
                live = (true >= 0).to(device)
                cand, target = torch.unique(true[true >= 0], return_inverse=True)
                states = model.hidden(enc)
                rows_of = torch.arange(len(batch), device=device)[:, None].expand_as(live)
                at = states[rows_of[live], positions[live]]  # each alignment's fused first piece
                scores = head(at, fusion.project(fusion.vectors(cand.to(device))))
                target = target.to(device)
                loss = nn.functional.cross_entropy(scores, target)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
                hit = scores.argmax(-1) == target
                was_hidden = (shown.to(device) < 0)[live]
                right, total = right + int(hit.sum()), total + len(hit)
                right_hidden += int(hit[was_hidden].sum())
                total_hidden += int(was_hidden.sum())
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", acc=f"{right / max(1, total):.3f}")
            result.loss.append(round(float(np.mean(losses)), 4) if losses else 0.0)
            result.accuracy.append(round(right / max(1, total), 4))
            result.hidden_accuracy.append(round(right_hidden / max(1, total_hidden), 4))
            result.alignments = total
    finally:
        for name, p in model.named_parameters():
            p.requires_grad = frozen[name]
        model.eval()
    result.seconds = round(time.time() - start, 1)
    result.device = device_name(device)
    return result


def save_fusion(
    model: KnowledgeEncoder, folder: str | Path, cfg: PretrainConfig, result: PretrainResult
) -> Path:
    """Write the pre-trained fusion weights and what they fit (text model, layers, vector table)."""
    fusion = model.fusion
    if fusion is None:
        raise ValueError("only an ERNIE model has a fusion to save")
    return fusion.save(
        folder,
        model.base,
        {
            "text_model": model.cfg.text_model,
            "transe": model.cfg.transe,
            "config": asdict(cfg),
            "result": asdict(result),
        },
    )
