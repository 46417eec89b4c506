"""Entity linking: mentions, candidates, disambiguation, and the spaCy component.

For now: loading the spaCy pipeline that finds mentions, by a name users can set.
"""

from kg.link.nlp import DEFAULT_SPACY_MODEL, load_spacy

__all__ = ["DEFAULT_SPACY_MODEL", "load_spacy"]
