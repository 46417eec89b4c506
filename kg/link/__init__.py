"""Entity linking: mentions, candidates, disambiguation, and the spaCy component `kgpipe_linker`.

`Linker` is the Python API; `kgpipe link` and the component use the same code.
"""

from kg.link.linker import LinkedEntity, Linker
from kg.link.nlp import DEFAULT_SPACY_MODEL, load_spacy

__all__ = ["DEFAULT_SPACY_MODEL", "LinkedEntity", "Linker", "load_spacy"]
