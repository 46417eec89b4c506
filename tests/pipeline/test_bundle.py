"""The bundle: built, checked and opened by one code path; safe to share between threads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kg.errors import KGFormatError
from kg.manifest import read_manifest
from pipeline import Bundle, load
from pipeline.bundle import build

KGPIPE = str(Path(sys.executable).parent / "kgpipe")
TEXTS = [
    "Barack Obama visited Paris.",
    "London and Berlin are large cities in Europe.",
    "The Beatles recorded Abbey Road in London.",
    "Angela Merkel met Emmanuel Macron in Brussels on Tuesday.",
    "films by steven spielberg",
    "Tom Hanks starred in Forrest Gump, directed by Robert Zemeckis.",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([KGPIPE, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "b"
    build(out)
    return out


def test_the_defaults_link_and_encode_and_a_second_call_loads_nothing(bundle: Bundle) -> None:
    (first,) = bundle.link(["Barack Obama visited Paris."])
    assert {"Q76", "Q90"} <= {x.qid for x in first}
    start = time.perf_counter()
    bundle.link(["Barack Obama visited Paris."])
    assert time.perf_counter() - start < 1.0  # models are loaded once, at load()
    vectors = bundle.encode(["Paris", "the capital of France", "a banana"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_eight_threads_of_link_and_encode_give_what_one_thread_gives(bundle: Bundle) -> None:
    calls = [("link", t) if i % 2 == 0 else ("encode", t) for i, t in enumerate(TEXTS * 4)]

    def call(kind_text: tuple[str, str]) -> object:
        kind, text = kind_text
        if kind == "link":
            return [(x.start, x.end, x.qid, round(x.score, 6)) for x in bundle.link([text])[0]]
        return np.round(bundle.encode([text])[0], 5).tolist()

    alone = [call(c) for c in calls]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(call, calls))
    assert together == alone


def test_a_built_bundle_lists_every_part_with_checksums_and_links_as_the_defaults(
    bundle: Bundle, built: Path
) -> None:
    manifest, parts = read_manifest(built)
    assert manifest["format_version"] == 1 and set(parts) == {
        "kg",
        "transe",
        "linker",
        "classifiers/topic",
        "relations",
    }  # the default classifier and relation model come along
    other = load(built)
    assert other.kg.fingerprint == bundle.kg.fingerprint
    assert [[(x.start, x.qid, x.score) for x in d] for d in other.link(TEXTS)] == [
        [(x.start, x.qid, x.score) for x in d] for d in bundle.link(TEXTS)
    ]
    p = run("bundle", "info", str(built), "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["format_version"] == 1 and all(part["sha256"] for part in info["parts"].values())


def damaged(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy)
    return copy


def test_a_changed_byte_a_missing_part_or_another_version_fails_at_load(built: Path, tmp_path: Path) -> None:
    copy = damaged(built, tmp_path)
    victim = max((p for p in (copy / "linker").iterdir()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(KGFormatError, match=victim.name):
        load(copy)
    p = run("bundle", "info", str(copy))
    assert p.returncode == 2 and victim.name in p.stderr and "Traceback" not in p.stderr
    shutil.rmtree(copy / "transe")
    with pytest.raises(KGFormatError, match="part 'transe' is missing"):
        load(copy)
    copy = damaged(built, tmp_path / "v")
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(KGFormatError, match="format version 99"):
        load(copy)


def test_a_manifest_naming_a_path_outside_the_bundle_is_refused(built: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(built / "transe", outside)  # real files, whose checksums match the manifest's
    for n, edit in enumerate(
        [
            lambda m: m["parts"]["transe"].update(path="../elsewhere"),
            lambda m: m["parts"]["transe"].update(path=str(outside)),
            lambda m: m["parts"]["kg"]["files"].update({"../../elsewhere/config.json": "0" * 64}),
        ]
    ):
        copy = damaged(built, tmp_path / f"c{n}")
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(KGFormatError, match="outside the bundle folder"):
            load(copy)
        p = run("bundle", "info", str(copy))
        assert p.returncode == 2 and "outside the bundle folder" in p.stderr, p.stderr
        assert "every file matches" not in p.stdout
    link = damaged(built, tmp_path / "link")
    shutil.rmtree(link / "transe")
    (link / "transe").symlink_to(outside, target_is_directory=True)
    with pytest.raises(KGFormatError, match="outside the bundle folder"):
        load(link)


def test_parts_that_do_not_fit_together_are_refused(built: Path, tmp_path: Path, kg_dir: Path) -> None:
    from kg.io import load_kg
    from kg.link.linker import Linker

    # a linker built for another KG
    other = load_kg(kg_dir / "fb15k-237")
    with pytest.raises(KGFormatError, match="built for KG 'fb15k-237'"):
        Linker.load(built / "linker", other)
    # TransE trained on another KG: refused when the bundle is built
    p = run(
        "bundle",
        "build",
        "--out",
        str(tmp_path / "b2"),
        "--kg",
        str(kg_dir / "wn18rr"),
        "--transe",
        str(built / "transe"),
    )
    assert p.returncode == 2 and "trained on another KG" in p.stderr, p.stderr
    assert not (tmp_path / "b2").exists()


def test_link_with_bundle_writes_the_same_bytes_as_the_defaults(built: Path, tmp_path: Path) -> None:
    docs = tmp_path / "in.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    a = run("link", str(docs), "--out", str(tmp_path / "a.jsonl"))
    b = run("link", str(docs), "--out", str(tmp_path / "b.jsonl"), "--bundle", str(built))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert "Q76" in (tmp_path / "a.jsonl").read_text()


def test_the_shipped_defaults_are_a_bundle_whose_checksums_hold() -> None:
    from kg.settings import settings

    _, parts = read_manifest(settings().data, verify=True)
    assert {"kg", "transe", "linker"} <= set(parts)


def test_a_bundle_for_another_kg_gets_its_own_linker_and_refuses_a_foreign_one(
    kg_dir: Path, tmp_path: Path
) -> None:
    from kg.embed import TrainConfig, train_transe
    from kg.io import load_kg
    from kg.manifest import write_manifest
    from kg.settings import settings

    kg = load_kg(kg_dir / "fb15k-237")  # a 300-triple slice: another KG than the default's
    train_transe(kg, TrainConfig(dim=16, epochs=2, eval_every=1), tmp_path / "transe")
    p = run("bundle", "build", "--out", str(tmp_path / "b"), "--kg", str(kg_dir / "fb15k-237"))
    assert p.returncode == 2 and "needs its own TransE" in p.stderr, p.stderr
    build(tmp_path / "b", kg=kg_dir / "fb15k-237", transe=tmp_path / "transe")
    small = load(tmp_path / "b")
    assert small.kg.num_entities == kg.num_entities
    (found,) = small.link(["Barack Obama visited Paris."])
    assert {x.qid for x in found} <= set(kg.qids)
    # the default linker (built for the whole FB15k-237) swapped in, the checksums rewritten to
    # match: refused at load, naming the linker
    shutil.rmtree(tmp_path / "b" / "linker")
    shutil.copytree(settings().data / "linker", tmp_path / "b" / "linker")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    write_manifest(tmp_path / "b", {n: e["path"] for n, e in manifest["parts"].items()}, {}, {})
    with pytest.raises(KGFormatError, match="linker was built for KG 'fb15k-237', not the bundle's"):
        load(tmp_path / "b", eager=False)
