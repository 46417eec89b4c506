"""Every command over a table of bad inputs, as a user would type them: exit 2, one line on stderr
that names the problem, no traceback, and every file that existed before is byte-identical after."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

KGPIPE = str(Path(sys.executable).parent / "kgpipe")
FIXTURES = Path(__file__).parents[1] / "fixtures"
TRIPLES = "a\tr\tb\nb\tr\tc\nc\tr\ta\na\ts\tc\n"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([KGPIPE, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (symlinks by target)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of inputs a user might have: a tiny KG, a trained TransE checkpoint, an encoder."""
    w = tmp_path_factory.mktemp("world")
    kg = w / "kg"
    kg.mkdir()
    (kg / "train.txt").write_text(TRIPLES)
    (kg / "valid.txt").write_text("a\tr\tc\n")
    (kg / "test.txt").write_text("b\tr\ta\n")
    p = run("kg", "train", str(kg), "--out", str(w / "transe"), "--epochs", "1", "--dim", "8")
    assert p.returncode == 0, p.stderr
    p = run("kg", "train", str(kg), "--out", str(w / "transe16"), "--epochs", "1", "--dim", "16")
    assert p.returncode == 0, p.stderr
    from encoders.knowledge import KnowledgeSource
    from encoders.model import EncoderConfig, KnowledgeEncoder

    KnowledgeEncoder.create(EncoderConfig("sequence", "none", ["a", "b"]), KnowledgeSource.empty()).save(
        w / "encoder"
    )
    (w / "docs.jsonl").write_text('{"id": 1, "text": "Paris is in France."}\n')
    (w / "notes").mkdir()
    (w / "notes" / "keep.txt").write_text("mine\n")
    (w / "plain.txt").write_text("a file\n")
    (w / "typing.jsonl").write_text('{"text": "Paris is big.", "labels": [], "mention": {"span": [0, 5]}}\n')
    (w / "seq.jsonl").write_text('{"text": "Paris is big.", "label": "place"}\n')
    (w / "codex").mkdir()
    shutil.copy(FIXTURES / "kg" / "codex-s" / "train.txt", w / "codex" / "train.txt")
    return w


def damaged(w: Path, name: str, source: str, change: Callable[[Path], None]) -> Path:
    """A copy of artifact `source` with one thing broken by `change`."""
    out = w / "damaged" / name
    if not out.exists():
        shutil.copytree(w / source, out)
        change(out)
    return out


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def edit_json(path: Path, **changes: object) -> None:
    values = json.loads(path.read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            values[outer][inner] = value
        else:
            values[key] = value
    path.write_text(json.dumps(values))


def write(w: Path, name: str, text: str | bytes) -> Path:
    path = w / "inputs" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# each case: (id, function of the world folder → argv, a word the one-line error must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # kg info
    ("info-missing", lambda w: ["kg", "info", str(w / "nope")], "no such file"),
    ("info-device", lambda w: ["kg", "info", "/dev/null"], "neither a folder nor a regular file"),
    ("info-empty-file", lambda w: ["kg", "info", str(write(w, "empty.tsv", ""))], "no triples"),
    ("info-binary", lambda w: ["kg", "info", str(write(w, "bin.tsv", b"\xff\xfe\x00a\tb\tc\n"))], "UTF-8"),
    ("info-two-fields", lambda w: ["kg", "info", str(write(w, "two.tsv", "a\tb\n"))], "two.tsv:1"),
    ("info-no-train", lambda w: ["kg", "info", str(w / "notes")], "no train split"),
    ("info-bad-format", lambda w: ["kg", "info", str(w / "kg"), "--format", "rdf"], "unknown KG format"),
    ("info-bad-unseen", lambda w: ["kg", "info", str(w / "kg"), "--unseen", "keep"], "--unseen"),
    ("info-no-option", lambda w: ["kg", "info", str(w / "kg"), "--bogus"], "No such option"),
    ("info-no-argument", lambda w: ["kg", "info"], "Missing argument"),
    ("info-json-as-tsv", lambda w: ["kg", "info", str(w / "docs.jsonl"), "--format", "tsv"], "docs.jsonl:1"),
    # kg convert: never lose a file
    ("convert-into-foreign", lambda w: ["kg", "convert", str(w / "kg"), str(w / "notes")], "--force"),
    ("convert-onto-itself", lambda w: ["kg", "convert", str(w / "kg"), str(w / "kg")], "is the input"),
    ("convert-inside-input", lambda w: ["kg", "convert", str(w / "kg"), str(w / "kg" / "x")], "inside"),
    ("convert-onto-file", lambda w: ["kg", "convert", str(w / "kg"), str(w / "plain.txt")], "is a file"),
    (
        "convert-containing-input",
        lambda w: ["kg", "convert", str(w / "kg" / "train.txt"), str(w)],
        "contains",
    ),
    # kg train: settings and outputs
    *[
        (
            f"train-config-{key}",
            lambda w, key=key, value=value: [
                "kg",
                "train",
                str(w / "kg"),
                "--out",
                str(w / "new-model"),
                "--config",
                str(write(w, f"cfg-{key}.json", json.dumps({key: value}))),
            ],
            key,
        )
        for key, value in [
            ("dim", 8.5),
            ("device", 5),
            ("seed", "abc"),
            ("reciprocal", "no"),
            ("epochs", 1.5),
            ("patience", -1),
            ("lr_decay", 2),
            ("adversarial_temperature", -1),
            ("regularization", -0.1),
            ("dimm", 3),
        ]
    ],
    (
        "train-config-not-json",
        lambda w: [
            "kg",
            "train",
            str(w / "kg"),
            "-o",
            str(w / "m2"),
            "--config",
            str(write(w, "c.json", "{dim: 3")),
        ],
        "invalid JSON",
    ),
    (
        "train-config-list",
        lambda w: [
            "kg",
            "train",
            str(w / "kg"),
            "-o",
            str(w / "m2"),
            "--config",
            str(write(w, "l.json", "[1]")),
        ],
        "JSON object",
    ),
    (
        "train-epochs-float",
        lambda w: ["kg", "train", str(w / "kg"), "-o", str(w / "m2"), "--epochs", "1.5"],
        "--epochs",
    ),
    (
        "train-epochs-zero",
        lambda w: ["kg", "train", str(w / "kg"), "-o", str(w / "m2"), "--epochs", "0"],
        "epochs",
    ),
    (
        "train-into-foreign",
        lambda w: ["kg", "train", str(w / "kg"), "-o", str(w / "notes"), "--epochs", "1"],
        "--force",
    ),
    (
        "train-into-input",
        lambda w: ["kg", "train", str(w / "kg"), "-o", str(w / "kg"), "--epochs", "1"],
        "input",
    ),
    (
        "train-into-encoder",
        lambda w: ["kg", "train", str(w / "kg"), "-o", str(w / "encoder"), "--epochs", "1"],
        "--force",
    ),
    (
        "train-empty-kg",
        lambda w: ["kg", "train", str(write(w, "empty2.tsv", "\n\n")), "-o", str(w / "m3")],
        "no triples",
    ),
    # kg eval: damaged or foreign checkpoints
    (
        "eval-truncated",
        lambda w: [
            "kg",
            "eval",
            str(damaged(w, "trunc", "transe", lambda d: truncate(d / "model.safetensors", 100))),
            "--data",
            str(w / "kg"),
        ],
        "model.safetensors",
    ),
    (
        "eval-empty-weights",
        lambda w: [
            "kg",
            "eval",
            str(damaged(w, "empty", "transe", lambda d: truncate(d / "model.safetensors", 0))),
            "--data",
            str(w / "kg"),
        ],
        "damaged",
    ),
    (
        "eval-unknown-key",
        lambda w: [
            "kg",
            "eval",
            str(damaged(w, "key", "transe", lambda d: edit_json(d / "config.json", **{"model.colour": 1}))),
            "--data",
            str(w / "kg"),
        ],
        "colour",
    ),
    (
        "eval-wrong-type",
        lambda w: [
            "kg",
            "eval",
            str(damaged(w, "type", "transe", lambda d: edit_json(d / "config.json", **{"model.dim": "8"}))),
            "--data",
            str(w / "kg"),
        ],
        "dim",
    ),
    (
        "eval-other-weights",
        lambda w: [
            "kg",
            "eval",
            str(
                damaged(
                    w,
                    "other",
                    "transe",
                    lambda d: shutil.copy(w / "transe16" / "model.safetensors", d / "model.safetensors"),
                )
            ),
            "--data",
            str(w / "kg"),
        ],
        "shape",
    ),
    (
        "eval-bad-parquet",
        lambda w: [
            "kg",
            "eval",
            str(damaged(w, "pq", "transe", lambda d: truncate(d / "entities.parquet", 10))),
            "--data",
            str(w / "kg"),
        ],
        "entities.parquet",
    ),
    (
        "eval-no-config",
        lambda w: [
            "kg",
            "eval",
            str(damaged(w, "noconf", "transe", lambda d: (d / "config.json").unlink())),
            "--data",
            str(w / "kg"),
        ],
        "config.json",
    ),
    (
        "eval-not-a-checkpoint",
        lambda w: ["kg", "eval", str(w / "notes"), "--data", str(w / "kg")],
        "not a TransE checkpoint",
    ),
    ("eval-file", lambda w: ["kg", "eval", str(w / "plain.txt"), "--data", str(w / "kg")], "no such folder"),
    # link: documents, options, KGs
    (
        "link-not-json",
        lambda w: ["link", str(write(w, "bad.jsonl", "{oops\n")), "-o", str(w / "o.jsonl")],
        "bad.jsonl:1",
    ),
    (
        "link-text-number",
        lambda w: ["link", str(write(w, "num.jsonl", '{"text": 5}\n')), "-o", str(w / "o.jsonl")],
        "num.jsonl:1",
    ),
    (
        "link-not-object",
        lambda w: ["link", str(write(w, "list.jsonl", "[1, 2]\n")), "-o", str(w / "o.jsonl")],
        "JSON object",
    ),
    (
        "link-deep",
        lambda w: [
            "link",
            str(write(w, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")),
            "-o",
            str(w / "o.jsonl"),
        ],
        "deep.jsonl:1",
    ),
    (
        "link-not-utf8",
        lambda w: [
            "link",
            str(write(w, "latin.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"))),
            "-o",
            str(w / "o.jsonl"),
        ],
        "UTF-8",
    ),
    (
        "link-min-score-nan",
        lambda w: ["link", str(w / "docs.jsonl"), "-o", str(w / "o.jsonl"), "--min-score", "nan"],
        "--min-score",
    ),
    (
        "link-min-score-5",
        lambda w: ["link", str(w / "docs.jsonl"), "-o", str(w / "o.jsonl"), "--min-score", "5"],
        "--min-score",
    ),
    (
        "link-out-is-input",
        lambda w: ["link", str(w / "docs.jsonl"), "-o", str(w / "docs.jsonl")],
        "is the input",
    ),
    ("link-out-folder", lambda w: ["link", str(w / "docs.jsonl"), "-o", str(w / "notes")], "is a folder"),
    ("link-in-folder", lambda w: ["link", str(w / "notes"), "-o", str(w / "o.jsonl")], "is a folder"),
    (
        "link-bad-span",
        lambda w: [
            "link",
            str(write(w, "span.jsonl", '{"text": "Paris", "mentions": [[3, 99]]}\n')),
            "-o",
            str(w / "o.jsonl"),
            "--spans",
        ],
        "span",
    ),
    (
        "link-no-spans",
        lambda w: ["link", str(w / "docs.jsonl"), "-o", str(w / "o.jsonl"), "--spans"],
        "docs.jsonl:1",
    ),
    (
        "link-kg-without-names",
        lambda w: ["link", str(w / "docs.jsonl"), "-o", str(w / "o.jsonl"), "--kg", str(w / "codex")],
        "no entity has a name",
    ),
    # encoder finetune / eval / pretrain
    (
        "finetune-bad-task",
        lambda w: [
            "encoder",
            "finetune",
            "tagging",
            "--train",
            str(w / "seq.jsonl"),
            "--dev",
            str(w / "seq.jsonl"),
            "--knowledge",
            "none",
            "-o",
            str(w / "e2"),
        ],
        "TASK",
    ),
    (
        "finetune-bad-knowledge",
        lambda w: [
            "encoder",
            "finetune",
            "sequence",
            "--train",
            str(w / "seq.jsonl"),
            "--dev",
            str(w / "seq.jsonl"),
            "--knowledge",
            "rdf",
            "-o",
            str(w / "e2"),
        ],
        "--knowledge",
    ),
    (
        "finetune-no-labels",
        lambda w: [
            "encoder",
            "finetune",
            "typing",
            "--train",
            str(w / "typing.jsonl"),
            "--dev",
            str(w / "typing.jsonl"),
            "--knowledge",
            "none",
            "-o",
            str(w / "e2"),
        ],
        "no example has a label",
    ),
    (
        "finetune-into-foreign",
        lambda w: [
            "encoder",
            "finetune",
            "sequence",
            "--train",
            str(w / "seq.jsonl"),
            "--dev",
            str(w / "seq.jsonl"),
            "--knowledge",
            "none",
            "-o",
            str(w / "notes"),
        ],
        "--force",
    ),
    (
        "finetune-into-inputs",
        lambda w: [
            "encoder",
            "finetune",
            "sequence",
            "--train",
            str(w / "seq.jsonl"),
            "--dev",
            str(w / "seq.jsonl"),
            "--knowledge",
            "none",
            "-o",
            str(w),
        ],
        "contains the input",
    ),
    (
        "finetune-missing-train",
        lambda w: [
            "encoder",
            "finetune",
            "sequence",
            "--train",
            str(w / "nope.jsonl"),
            "--dev",
            str(w / "seq.jsonl"),
            "--knowledge",
            "none",
            "-o",
            str(w / "e2"),
        ],
        "nope.jsonl",
    ),
    (
        "finetune-lr-zero",
        lambda w: [
            "encoder",
            "finetune",
            "sequence",
            "--train",
            str(w / "seq.jsonl"),
            "--dev",
            str(w / "seq.jsonl"),
            "--knowledge",
            "none",
            "-o",
            str(w / "e2"),
            "--lr",
            "0",
        ],
        "--lr",
    ),
    (
        "encoder-eval-no-text-model",
        lambda w: [
            "encoder",
            "eval",
            str(damaged(w, "notext", "encoder", lambda d: shutil.rmtree(d / "text_model"))),
            "--data",
            str(w / "seq.jsonl"),
        ],
        "text_model",
    ),
    (
        "encoder-eval-truncated",
        lambda w: [
            "encoder",
            "eval",
            str(damaged(w, "etrunc", "encoder", lambda d: truncate(d / "model.safetensors", 5000))),
            "--data",
            str(w / "seq.jsonl"),
        ],
        "model.safetensors",
    ),
    (
        "encoder-eval-unknown-key",
        lambda w: [
            "encoder",
            "eval",
            str(damaged(w, "ekey", "encoder", lambda d: edit_json(d / "config.json", colour=1))),
            "--data",
            str(w / "seq.jsonl"),
        ],
        "colour",
    ),
    (
        "encoder-eval-wrong-type",
        lambda w: [
            "encoder",
            "eval",
            str(damaged(w, "etype", "encoder", lambda d: edit_json(d / "config.json", max_length="128"))),
            "--data",
            str(w / "seq.jsonl"),
        ],
        "max_length",
    ),
    (
        "encoder-eval-bad-knowledge",
        lambda w: [
            "encoder",
            "eval",
            str(damaged(w, "eknow", "encoder", lambda d: (d / "knowledge.json").write_text('{"qids": 3}'))),
            "--data",
            str(w / "seq.jsonl"),
        ],
        "knowledge.json",
    ),
    (
        "encoder-eval-transe-folder",
        lambda w: ["encoder", "eval", str(w / "transe"), "--data", str(w / "seq.jsonl")],
        "format",
    ),
    (
        "pretrain-missing-data",
        lambda w: ["encoder", "pretrain", "--data", str(w / "nope.jsonl"), "-o", str(w / "f2")],
        "nope.jsonl",
    ),
    (
        "pretrain-into-foreign",
        lambda w: ["encoder", "pretrain", "--data", str(w / "docs.jsonl"), "-o", str(w / "notes")],
        "--force",
    ),
    (
        "names-bad-titles",
        lambda w: [
            "kg",
            "names",
            str(write(w, "leads.jsonl", '{"title": "Paris", "text": "Paris is big."}\n')),
            "-o",
            str(w / "n.parquet"),
            "--titles",
            str(write(w, "t.json", "[1]")),
        ],
        "t.json",
    ),
    (
        "names-title-number",
        lambda w: [
            "kg",
            "names",
            str(write(w, "leads5.jsonl", '{"title": 5, "text": "x"}\n')),
            "-o",
            str(w / "n.parquet"),
        ],
        "leads5.jsonl:1",
    ),
    ("info-format-kgpipe", lambda w: ["kg", "info", str(w / "kg"), "--format", "kgpipe"], "manifest.json"),
    (
        "info-bad-side-file",
        lambda w: [
            "kg",
            "info",
            str(
                damaged(
                    w,
                    "side",
                    "kg",
                    lambda d: (d / "entities.jsonl").write_text('{"id": "a", "aliases": "xyz"}\n'),
                )
            ),
        ],
        "aliases",
    ),
    (
        "eval-no-gpu",
        lambda w: ["kg", "eval", str(w / "transe"), "--data", str(w / "kg"), "--device", "cuda:7"],
        "cuda",
    ),
    (
        "train-no-gpu",
        lambda w: ["kg", "train", str(w / "kg"), "-o", str(w / "m4"), "--device", "cuda:7"],
        "cuda",
    ),
    (
        "names-out-is-input",
        lambda w: ["kg", "names", str(w / "docs.jsonl"), "-o", str(w / "docs.jsonl")],
        "is the input",
    ),
    # kgpipe extract: refused before any work, and no output folder left behind
    (
        "extract-memory-limit",
        lambda w: ["extract", str(w / "docs.jsonl"), "--out", str(w / "ex1"), "--memory-limit", "lots"],
        "'lots'",
    ),
    (
        "extract-jsonl-named-parquet",
        lambda w: [
            "extract",
            str(write(w, "lines.parquet", '{"id": "a", "text": "Paris."}\n')),
            "-o",
            str(w / "ex2"),
        ],
        "lines.parquet: not a Parquet file",
    ),
    (
        "extract-1-and-quoted-1",
        lambda w: [
            "extract",
            str(write(w, "ids.jsonl", '{"id": 1, "text": "Paris."}\n{"id": "1", "text": "Rome."}\n')),
            "-o",
            str(w / "ex3"),
        ],
        "ids.jsonl:1",
    ),
    (
        "extract-null-id",
        lambda w: [
            "extract",
            str(write(w, "nullid.jsonl", '{"id": "a", "text": "x"}\n{"id": null, "text": "y"}\n')),
            "-o",
            str(w / "ex4"),
        ],
        "nullid.jsonl:2",
    ),
    (
        "extract-no-document",
        lambda w: ["extract", str(write(w, "nodoc.jsonl", 'nope\n{"id": "a"}\n')), "-o", str(w / "ex5")],
        "no document",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "word"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    world: Path, argv: Callable[[Path], list[str]], word: str
) -> None:
    args = argv(world)  # builds the damaged copies and input files first
    before = snapshot(world, FIXTURES)
    p = run(*args)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgpipe: error: "), p.stderr
    assert word in lines[0], lines[0]
    assert snapshot(world, FIXTURES) == before


def test_serve_on_a_port_in_use_and_a_missing_config_file_are_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        p = run("serve", "--port", str(port))
    assert p.returncode == 2 and f"127.0.0.1:{port}" in p.stderr and "another --port" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    env = {**os.environ, "KGPIPE_CONFIG": str(tmp_path / "nope.json")}
    p = subprocess.run([KGPIPE, "kg", "info", str(FIXTURES / "kg")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "nope.json" in p.stderr and "no such file" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
