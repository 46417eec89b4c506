"""kgpipe's runners: the bundle every user goes through, and the CLI; batch extraction, the vector
store, search and the API are layers over the bundle.

`pipeline` composes `kg` and `encoders`; nothing imports it back. `load()` opens a bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.bundle import Bundle, load

__all__ = ["Bundle", "load"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    from pipeline import bundle

    return getattr(bundle, name)
