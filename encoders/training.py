"""What fine-tuning and alignment pre-training share: seeds, batches of similar length, the
learning-rate schedule (transformers' own linear warm-up and decay).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch
from transformers import get_linear_schedule_with_warmup, set_seed

if TYPE_CHECKING:
    from encoders.data import Example

__all__ = ["adamw", "length_batches", "set_seed", "step", "warmup_decay"]


def length_batches(examples: list[Example], size: int, rng: random.Random | None) -> list[list[Example]]:
    """Batches of similar length (less padding); shuffled when `rng` is given."""
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    chunk = size * 50
    out = []
    for c in range(0, len(order), chunk):
        block = sorted(order[c : c + chunk], key=lambda i: len(examples[i].text))
        out += [[examples[i] for i in block[b : b + size]] for b in range(0, len(block), size)]
    if rng is not None:
        rng.shuffle(out)
    return out


def warmup_decay(opt: torch.optim.Optimizer, steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup` share of `steps`, then linear decay to zero."""
    return get_linear_schedule_with_warmup(opt, max(1, int(warmup * steps)), max(1, steps))


def adamw(model: torch.nn.Module, lr: float, head_lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the pretrained text model (`base.*`) at `lr`, new weights at `head_lr`, and no
    weight decay on biases and norms."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            rate = lr if name.startswith("base.") else head_lr
            groups.setdefault((rate, 0.0 if p.ndim == 1 else weight_decay), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": r, "weight_decay": wd} for (r, wd), ps in groups.items()])


def step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    loss: torch.Tensor,
) -> float:
    """One training step: gradients, clipped to norm 1, applied; the schedule advanced. The loss."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.item())
