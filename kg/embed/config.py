"""`TrainConfig`: every knob of TransE training in one small typed object, loadable from JSON.

Defaults are what `kgpipe kg train DATA --out DIR` uses on any KG.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kg.errors import KGFormatError

LOSSES = ("self_adversarial", "margin_ranking")
SAMPLERS = ("bernoulli", "uniform")


@dataclass
class TrainConfig:
    """TransE training settings.

    `margin` is γ in the self-adversarial loss (score = γ - distance) and the hinge margin in
    `margin_ranking`. `negatives` entities are shared by each chunk of `chunk_size` positives.
    Training stops at `epochs`, after `patience` validations without a better MRR, or after
    `max_minutes`; the best validated weights are kept.
    """

    dim: int = 256
    p_norm: int = 1
    margin: float = 9.0
    reciprocal: bool = True
    loss: str = "self_adversarial"
    adversarial_temperature: float = 0.25
    negatives: int = 256
    chunk_size: int = 64
    batch_size: int = 1024
    sampler: str = "bernoulli"
    lr: float = 2e-3
    lr_decay: float = 0.5  # learning rate factor after each validation that brings no better MRR
    regularization: float = 0.0
    epochs: int = 200
    eval_every: int = 10
    patience: int = 3
    valid_sample: int = 5000
    max_minutes: float = 0.0  # 0: no time limit
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True  # bf16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        checks = [
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, not {self.loss!r}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, not {self.sampler!r}"),
            (self.p_norm in (1, 2), f"p_norm must be 1 or 2, not {self.p_norm}"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                f"device must be auto, cpu or cuda, not {self.device!r}",
            ),
        ]
        checks += [
            (getattr(self, k) > 0, f"{k} must be positive, not {getattr(self, k)}")
            for k in ("dim", "negatives", "chunk_size", "batch_size", "lr", "epochs", "eval_every")
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KGFormatError(
                where, None, f"unknown training setting(s) {unknown}", f"Use only: {', '.join(sorted(known))}"
            )
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise KGFormatError(where, None, str(e), "Fix the value") from e

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise KGFormatError(
                path, e.lineno, f"invalid JSON ({e.msg})", "Write the config as one JSON object"
            ) from e
        if not isinstance(values, dict):
            raise KGFormatError(
                path, 1, "expected a JSON object of settings", 'Write e.g. {"dim": 512, "epochs": 100}'
            )
        # keys starting with "_" are notes for people and scripts (e.g. "_data", "_comment")
        return cls.from_dict({k: v for k, v in values.items() if not k.startswith("_")}, where=str(path))
