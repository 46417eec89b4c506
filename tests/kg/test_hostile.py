"""Generated hostile input for every file `kg` parses: each is accepted or refused with kgpipe's own
error (a `KGPipeError`), never another exception."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kg.embed.checkpoint import EntityVectors
from kg.embed.config import TrainConfig
from kg.errors import KGPipeError
from kg.graph import KnowledgeGraph
from kg.io import FORMATS, load_kg, read_json_lines, without_surrogates
from kg.link.io import read_documents
from kg.link.linker import text_pieces
from kg.storage import read_model_config, read_tensors

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# text that is likely to break parsers: separators, quotes, braces, newlines, odd Unicode
ALPHABET = st.sampled_from([*list("ab\t,\n\r \"'{}[]:\\Q1P2.#-"), "é", "\u2028", "\x00", "\ufeff", "😀"])
LINES = st.text(ALPHABET, max_size=200)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def accepted_or_ours(call: object) -> object:
    """Run `call`; a KGPipeError is a fine answer, any other exception fails the test."""
    try:
        return call()  # type: ignore[operator]
    except KGPipeError as e:
        assert str(e), "an error must say what is wrong"
        return e


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="kgpipe-hostile-"))


@SETTINGS
@given(content=LINES, fmt=st.sampled_from(["tsv", "csv", "jsonl", None]))
def test_any_triple_file_loads_or_fails_with_our_error(content: str, fmt: str | None) -> None:
    path = scratch() / f"kg.{fmt or 'txt'}"
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    got = accepted_or_ours(lambda: load_kg(path, format=fmt))
    if isinstance(got, KnowledgeGraph):
        assert got.num_entities > 0 and len(got.triples["train"]) > 0


@SETTINGS
@given(
    name=st.sampled_from(sorted(set(FORMATS) - {"kgpipe"})),
    train=LINES | st.just("a\tr\tb\nb\tr\tc\n"),
    valid=LINES | st.just(""),
    side=st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
)
def test_any_kg_folder_loads_or_fails_with_our_error(name: str, train: str, valid: str, side: bytes) -> None:
    folder = scratch()
    ext = FORMATS[name].extensions[0]
    if name in ("wd50k", "csv"):
        train = train.replace("\t", ",")
    (folder / f"train.{ext}").write_text(train, encoding="utf-8")
    (folder / f"valid.{ext}").write_text(valid, encoding="utf-8")
    side_file = {"fb15k-237": "entity2wikidata.json", "wn18rr": "entity2text.txt"}.get(name, "entities.jsonl")
    (folder / side_file).write_bytes(side)
    accepted_or_ours(lambda: load_kg(folder, format=name))


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_jsonl_parse_or_fail_with_our_error(raw: bytes) -> None:
    path = scratch() / "docs.jsonl"
    path.write_bytes(raw)
    got = accepted_or_ours(lambda: list(read_json_lines(path)))
    if isinstance(got, list):
        for _, obj in got:
            json.dumps(obj).encode("utf-8")  # what was read can be written back as UTF-8


@SETTINGS
@given(objects=st.lists(JSON_VALUES, max_size=5), spans=st.booleans())
def test_any_json_documents_read_or_fail_with_our_error(objects: list[object], spans: bool) -> None:
    path = scratch() / "docs.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    got = accepted_or_ours(lambda: read_documents(path, spans))
    if isinstance(got, list):
        for doc in got:
            assert isinstance(doc.text, str)
            for s, e in doc.spans or []:
                assert 0 <= s < e <= len(doc.text)


@SETTINGS
@given(text=st.text(max_size=60))
def test_lone_surrogates_are_replaced_one_for_one(text: str) -> None:
    escaped = json.dumps({"text": text + "\ud800"})  # ensure_ascii writes the surrogate as \\ud800
    path = scratch() / "s.jsonl"
    path.write_text(escaped + "\n")
    ((_, obj),) = list(read_json_lines(path))
    assert len(obj["text"]) == len(text) + 1  # type: ignore[arg-type]
    str(obj["text"]).encode("utf-8")
    assert without_surrogates(text) == text or "\ufffd" in without_surrogates(text)


@SETTINGS
@given(
    values=st.dictionaries(
        st.sampled_from([*sorted(TrainConfig.__dataclass_fields__), "dimm", "_note"]), JSON_VALUES, max_size=4
    )
)
def test_any_training_config_is_valid_or_refused_with_our_error(values: dict[str, object]) -> None:
    path = scratch() / "config.json"
    path.write_text(json.dumps(values))
    got = accepted_or_ours(lambda: TrainConfig.from_file(path))
    if isinstance(got, TrainConfig):
        assert got.dim > 0 and got.epochs > 0 and isinstance(got.reciprocal, bool)


@SETTINGS
@given(raw=st.binary(max_size=400), config=JSON_VALUES)
def test_any_checkpoint_bytes_load_or_fail_with_our_error(raw: bytes, config: object) -> None:
    folder = scratch()
    (folder / "model.safetensors").write_bytes(raw)
    (folder / "config.json").write_text(json.dumps(config))
    accepted_or_ours(lambda: read_tensors(folder / "model.safetensors", "kgpipe kg train"))
    accepted_or_ours(
        lambda: read_model_config(folder, "kgpipe-transe", "a TransE checkpoint", "kgpipe kg train")
    )
    accepted_or_ours(lambda: EntityVectors.load(folder))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kg.embed import train_transe

    root = tmp_path_factory.mktemp("ckpt")
    (root / "train.tsv").write_text("a\tr\tb\nb\tr\tc\nc\ts\ta\n")
    out = root / "m"
    train_transe(load_kg(root / "train.tsv"), TrainConfig(dim=8, epochs=1, negatives=2, batch_size=4), out)
    return out


@SETTINGS
@given(cut=st.integers(0, 2000), model=JSON_VALUES)
def test_damaged_checkpoints_fail_with_our_error(checkpoint: Path, cut: int, model: object) -> None:
    import shutil

    folder = scratch() / "m"
    shutil.copytree(checkpoint, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: min(cut, len(data) - 1)])
    accepted_or_ours(lambda: EntityVectors.load(folder))
    shutil.copy(checkpoint / "model.safetensors", folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["model"] = model
    (folder / "config.json").write_text(json.dumps(config))
    accepted_or_ours(lambda: EntityVectors.load(folder))


@SETTINGS
@given(
    text=st.text(st.sampled_from(list("ab .\n?!;")), max_size=3000),
    limit=st.integers(1, 400),
    keep=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 50)), max_size=5),
)
def test_text_pieces_cover_any_text_without_cutting_a_kept_span(
    text: str, limit: int, keep: list[tuple[int, int]]
) -> None:
    spans = sorted({(s, min(s + n, len(text))) for s, n in keep if s < len(text)})
    spans = [sp for i, sp in enumerate(spans) if all(sp[0] >= o[1] or sp[1] <= o[0] for o in spans[:i])]
    pieces = text_pieces(text, limit, spans)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(text)
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(pieces))
    for s, e in spans:
        assert any(lo <= s and e <= hi for lo, hi in pieces), (s, e, pieces)
