"""`TrainConfig`: every knob of TransE training in one small typed object, loadable from JSON.

Defaults are what `kgpipe kg train DATA --out DIR` uses on any KG.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, field_validator
from pydantic.dataclasses import dataclass

from kg.errors import KGFormatError
from kg.settings import (
    STRICT,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    known_fields,
    validate,
)

LOSSES = ("self_adversarial", "margin_ranking")
SAMPLERS = ("bernoulli", "uniform")


@dataclass(config=STRICT)
class TrainConfig:
    """TransE training settings.

    `margin` is γ in the self-adversarial loss (score = γ - distance) and the hinge margin in
    `margin_ranking`. `negatives` entities are shared by each chunk of `chunk_size` positives.
    Training stops at `epochs`, after `patience` validations without a better MRR, or after
    `max_minutes`; the best validated weights are kept.
    """

    dim: PositiveInt = 256
    p_norm: Literal[1, 2] = 1
    margin: PositiveFloat = 9.0
    reciprocal: StrictBool = True
    loss: Literal["self_adversarial", "margin_ranking"] = "self_adversarial"
    adversarial_temperature: NonNegativeFloat = 0.25
    negatives: PositiveInt = 256
    chunk_size: PositiveInt = 64
    batch_size: PositiveInt = 1024
    sampler: Literal["bernoulli", "uniform"] = "bernoulli"
    lr: PositiveFloat = 2e-3
    # learning rate factor after each validation that brings no better MRR (1: never lowered)
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 0.5
    regularization: NonNegativeFloat = 0.0
    epochs: PositiveInt = 200
    eval_every: PositiveInt = 10
    patience: NonNegativeInt = 3
    valid_sample: NonNegativeInt = 5000
    max_minutes: NonNegativeFloat = 0.0  # 0: no time limit
    seed: NonNegativeInt = 0
    device: str = "auto"
    mixed_precision: StrictBool = True  # bf16 autocast on CUDA; ignored on CPU

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"should be auto, cpu, cuda or cuda:N, not {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        return validate(
            cls, values, where, f"Fix the value; the settings are: {', '.join(known_fields(cls))}"
        )

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
