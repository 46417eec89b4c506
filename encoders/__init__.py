"""Text + knowledge → vectors and predictions: the HF text encoder and knowledge-fused variants.

`encoders` imports `kg` only. Names load on first use (torch and transformers are slow to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from encoders.text import TextEncoder, default_model_path

__all__ = ["TextEncoder", "default_model_path"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'encoders' has no attribute {name!r}")
    return getattr(importlib.import_module("encoders.text"), name)
