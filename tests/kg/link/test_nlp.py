"""The spaCy English pipeline installs from PyPI and finds entities offline."""

import pytest

from kg.errors import KGPipeError
from kg.link import load_spacy


def test_default_pipeline_finds_entities() -> None:
    nlp = load_spacy(enable=["ner"])
    doc = nlp("Barack Obama was born in Hawaii and later lived in Washington.")
    found = {(e.text, e.label_) for e in doc.ents}
    assert ("Barack Obama", "PERSON") in found
    assert ("Hawaii", "GPE") in found


def test_pipeline_name_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGPIPE_SPACY_MODEL", "no_such_pipeline")
    with pytest.raises(KGPipeError, match="'no_such_pipeline' is not installed"):
        load_spacy()
