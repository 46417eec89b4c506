"""One fine-tuning and evaluation loop for every head and every knowledge mode.

Seeds, length-bucketed batches, a linear warm-up/decay schedule, early stopping on dev macro-F1,
progress bars; the best epoch's weights are the ones kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic.dataclasses
import torch
from pydantic import StrictBool
from tqdm.auto import tqdm

from encoders.data import Example
from encoders.model import KnowledgeEncoder
from encoders.training import adamw, length_batches, set_seed, step, warmup_decay
from kg.device import device_name, resolve_device
from kg.settings import STRICT, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Share


@pydantic.dataclasses.dataclass(config=STRICT)
class FinetuneConfig:
    """Training settings; the defaults fit a MiniLM on 2 CPU cores."""

    epochs: PositiveInt = 3
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 5e-5  # the pretrained encoder
    head_lr: PositiveFloat = 1e-3  # head, fusion layers, projections: new weights learn faster
    weight_decay: NonNegativeFloat = 0.01
    warmup: Share = 0.1
    patience: NonNegativeInt = 1  # epochs without a better dev macro-F1 before stopping
    seed: NonNegativeInt = 0
    eval_batch_size: PositiveInt = 64
    progress: StrictBool = True
    # auto (CUDA when present), cpu, cuda or cuda:N: the model is moved there; None: it stays where it is
    device: str | None = None
    # training steps under bfloat16 autocast (weights, optimizer and evaluation stay float32): for
    # GPUs and CPUs with bf16 matrix units (AMX); on other CPUs it is slower than float32
    bf16: StrictBool = False


@dataclass
class History:
    """Per-epoch training loss and dev scores, and which epoch's weights were kept."""

    loss: list[float] = field(default_factory=list)
    dev: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = ""  # where it trained, with the GPU's name or the CPU's threads


def f1_scores(gold: torch.Tensor, pred: torch.Tensor) -> dict[str, float]:
    """Macro- and micro-F1 from bool[examples, labels] gold and predicted label sets.

    Macro averages over the labels that occur in gold or in predictions; for single-label tasks
    micro-F1 equals accuracy.
    """
    tp = (gold & pred).sum(0).double()
    wrong = (gold ^ pred).sum(0).double()  # false positives + false negatives
    seen = (gold | pred).any(0)
    per_label = per_label_f1(gold, pred)
    micro = 2 * tp.sum() / (2 * tp.sum() + wrong.sum()).clamp(min=1)
    macro = per_label[seen].mean() if bool(seen.any()) else torch.tensor(0.0)
    return {"macro_f1": round(float(macro), 4), "micro_f1": round(float(micro), 4), "examples": len(gold)}


def per_label_f1(gold: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """double[labels]: each label's F1 from bool[examples, labels] gold and predicted label sets
    (0 where a label is in neither)."""
    tp = (gold & pred).sum(0).double()
    return 2 * tp / (2 * tp + (gold ^ pred).sum(0).double()).clamp(min=1)


@torch.no_grad()
def predict_logits(model: KnowledgeEncoder, examples: list[Example], batch_size: int = 64) -> torch.Tensor:
    """float[examples, labels]: the head's logits, in input order."""
    model.eval()
    device = next(model.parameters()).device
    index = {id(ex): i for i, ex in enumerate(examples)}
    out = torch.zeros(len(examples), len(model.cfg.labels))
    for batch in length_batches(examples, batch_size, None):
        logits = model(model.encode(batch, with_targets=False).to(device))
        out[[index[id(ex)] for ex in batch]] = logits.float().cpu()
    return out


def predict(model: KnowledgeEncoder, examples: list[Example], batch_size: int = 64) -> torch.Tensor:
    """bool[examples, labels]: the predicted label sets, in input order."""
    return model.head.decide(predict_logits(model, examples, batch_size))


def gold_sets(model: KnowledgeEncoder, examples: list[Example]) -> torch.Tensor:
    """bool[examples, labels]: the gold label sets (labels the model never saw are left out)."""
    gold = model.targets(examples)
    if not model.head.multi_label:
        known = gold >= 0
        gold = torch.nn.functional.one_hot(gold.clamp(min=0), len(model.cfg.labels)).bool() & known[:, None]
    return gold.bool()


def evaluate(model: KnowledgeEncoder, examples: list[Example], batch_size: int = 64) -> dict[str, float]:
    """Macro/micro F1 of the model on labelled examples (labels it never saw count as misses)."""
    return f1_scores(gold_sets(model, examples), predict(model, examples, batch_size))


def finetune(
    model: KnowledgeEncoder, train: list[Example], dev: list[Example], cfg: FinetuneConfig
) -> History:
    """Train `model` in place, on `cfg.device` (default: where it is); it ends there, with the
    weights of its best dev epoch."""
    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = resolve_device(cfg.device) if cfg.device else next(model.parameters()).device
    model.to(device)
    opt = adamw(model, cfg.lr, cfg.head_lr, cfg.weight_decay)
    sched = warmup_decay(opt, cfg.epochs * -(-len(train) // cfg.batch_size), cfg.warmup)
    history, best, best_state, start = History(), -1.0, None, time.time()
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        bar = tqdm(
            length_batches(train, cfg.batch_size, rng), desc=f"epoch {epoch + 1}", disable=not cfg.progress
        )
        for batch in bar:
            enc = model.encode(batch).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model.loss(enc)
            losses.append(step(model, opt, sched, loss))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        history.loss.append(float(np.mean(losses)))
        scores = evaluate(model, dev, cfg.eval_batch_size)
        history.dev.append(scores)
        if scores["macro_f1"] > best:
            best, history.best_epoch = scores["macro_f1"], epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - history.best_epoch >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = round(time.time() - start, 1)
    history.device = device_name(device)
    return history


def summary(history: History) -> dict[str, Any]:
    return {
        "epochs_run": len(history.loss),
        "best_epoch": history.best_epoch,
        "train_loss": [round(x, 4) for x in history.loss],
        "dev": history.dev,
        "train_seconds": history.seconds,
        "device": history.device,
    }
