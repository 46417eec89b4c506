"""Devices: `--device auto|cpu|cuda|cuda:N` checked once, and where a run happened, for results files.

TransE training, the encoders and the benchmarks share these.
"""

from __future__ import annotations

import platform
import re

import torch

from kg.errors import KGPipeError

__all__ = ["device_name", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when torch sees a GPU, else CPU), `cpu`, `cuda` or `cuda:N`, checked here so that
    a typo or a missing GPU fails at once with the fix, not deep inside the first forward pass."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise KGPipeError(f"device {name!r} is not one of auto, cpu, cuda or cuda:N: use --device auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KGPipeError(f"device {name!r} asked for, but torch sees no CUDA device: use --device cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise KGPipeError(
            f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s): "
            "use cuda:0 or --device auto"
        )
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """Where something ran, for results files: 'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (x86_64, 2 threads)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
