"""Generated hostile input for every file `encoders` parses: examples of each task, texts for
pre-training, a model folder's config.json and knowledge.json. Each is accepted or refused with
kgpipe's own error, never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.data import TASKS, read_examples, read_texts
from encoders.knowledge import KnowledgeSource
from encoders.model import EncoderConfig
from kg.errors import KGPipeError
from kg.settings import validate

SETTINGS = settings(max_examples=80, deadline=None)
SPAN = st.fixed_dictionaries(
    {"span": st.lists(st.integers(-3, 40) | st.floats() | st.booleans() | st.text(max_size=2), max_size=3)},
    optional={"id": st.none() | st.text(max_size=5) | st.integers()},
)
VALUE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=30)
    | st.lists(st.text(max_size=5), max_size=3)
)
EXAMPLE = st.fixed_dictionaries(
    {},
    optional={
        "text": VALUE | st.text(st.sampled_from(list("ab \ud800\n")), min_size=1, max_size=30),
        "label": VALUE,
        "labels": VALUE | st.lists(VALUE, max_size=3),
        "head": SPAN | VALUE,
        "tail": SPAN | VALUE,
        "mention": SPAN | VALUE,
        "entities": st.lists(SPAN | VALUE, max_size=3) | VALUE,
        "id": VALUE,
    },
)


def ours(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except KGPipeError as e:
        assert str(e)
        return e


def jsonl(objects: list[object]) -> Path:
    path = Path(tempfile.mkdtemp(prefix="kgpipe-hostile-")) / "examples.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


@SETTINGS
@given(objects=st.lists(EXAMPLE, max_size=4), task=st.sampled_from(TASKS))
def test_any_examples_read_or_fail_with_our_error(objects: list[object], task: str) -> None:
    got = ours(lambda: read_examples(jsonl(objects), task))
    if isinstance(got, list):
        for ex in got:
            ex.text.encode("utf-8")  # lone surrogates were replaced
            assert all(0 <= e.start < e.end <= len(ex.text) for e in ex.entities)
            assert all(isinstance(label, str) for label in ex.labels)


@SETTINGS
@given(objects=st.lists(EXAMPLE, max_size=4))
def test_any_texts_read_or_fail_with_our_error(objects: list[object]) -> None:
    ours(lambda: read_texts(jsonl(objects)))


@SETTINGS
@given(
    values=st.dictionaries(
        st.sampled_from([*EncoderConfig.__dataclass_fields__, "colour"]),
        VALUE | st.floats() | st.lists(st.integers(-2, 12), max_size=3),
        max_size=6,
    )
)
def test_any_encoder_config_is_valid_or_refused_with_our_error(values: dict[str, object]) -> None:
    base = {"task": "typing", "knowledge": "none", "labels": ["a"]}
    got = ours(lambda: validate(EncoderConfig, {**base, **values}, "config.json", "Fix it"))
    if isinstance(got, EncoderConfig):
        assert got.labels and got.max_length >= 8 and 0 <= got.dropout <= 1


@SETTINGS
@given(
    index=st.dictionaries(st.sampled_from(["qids", "dim", "branches", "x"]), VALUE | st.floats(), max_size=4)
)
def test_any_knowledge_index_loads_or_fails_with_our_error(index: dict[str, object]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="kgpipe-hostile-"))
    (folder / "knowledge.json").write_text(json.dumps(index))
    ours(lambda: KnowledgeSource.load(folder))
