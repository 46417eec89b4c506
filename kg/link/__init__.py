"""Entity linking: mentions, candidates, disambiguation, and the spaCy component `kgpipe_linker`.

`Linker` is the Python API; `kgpipe link` and the component use the same code. Names load on
first use, so reading documents does not wait for spaCy and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kg.link.linker import LinkedEntity, Linker
    from kg.link.nlp import DEFAULT_SPACY_MODEL, load_spacy

_HOME = {
    "LinkedEntity": "kg.link.linker",
    "Linker": "kg.link.linker",
    "DEFAULT_SPACY_MODEL": "kg.link.nlp",
    "load_spacy": "kg.link.nlp",
}
__all__ = ["DEFAULT_SPACY_MODEL", "LinkedEntity", "Linker", "load_spacy"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'kg.link' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
