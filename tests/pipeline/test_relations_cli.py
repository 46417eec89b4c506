"""`kgpipe relations train / eval / predict` as users run them, with the shipped relation model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KGPIPE = str(Path(sys.executable).parent / "kgpipe")
MINI = Path(__file__).parents[1] / "fixtures" / "docred" / "mini.json"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KGPIPE, *args], capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "120"}
    )


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = json.loads(MINI.read_text())
    for d in docs:
        d.pop("labels")
    path = tmp_path_factory.mktemp("re") / "in.json"
    path.write_text(json.dumps(docs))
    return path


def test_predict_with_gold_entities_writes_docred_result_format(tmp_path: Path, unlabelled: Path) -> None:
    p = run("relations", "predict", str(unlabelled), "--out", str(tmp_path / "p.json"))
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "p.json").read_text())
    gold = json.loads(MINI.read_text())
    titles = {d["title"]: d for d in gold}
    assert rows and {"title", "h_idx", "t_idx", "r", "evidence", "score"} <= set(rows[0])
    for r in rows:
        doc = titles[r["title"]]
        assert 0 <= r["h_idx"] < len(doc["vertexSet"]) and 0 <= r["t_idx"] < len(doc["vertexSet"])
        assert all(0 <= s < len(doc["sents"]) for s in r["evidence"])
    truth = {(d["title"], lab["h"], lab["t"], lab["r"]) for d in gold for lab in d["labels"]}
    right = sum((r["title"], r["h_idx"], r["t_idx"], r["r"]) in truth for r in rows)
    assert right / len(rows) > 0.5  # these documents are in the shipped model's training data
    assert f"{len(rows):,} facts from 4 documents (gold entities)" in p.stdout


def test_predict_finds_its_own_entities(tmp_path: Path, unlabelled: Path) -> None:
    p = run(
        "relations", "predict", str(unlabelled), "--out", str(tmp_path / "p.json"), "--entities", "predicted"
    )
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "p.json").read_text())
    assert rows and {"title", "h_mentions", "t_mentions", "r", "score", "h_qid", "t_qid"} <= set(rows[0])
    docs = {d["title"]: d for d in json.loads(MINI.read_text())}
    for r in rows:
        for s, a, b in r["h_mentions"] + r["t_mentions"]:
            assert 0 <= a < b <= len(docs[r["title"]]["sents"][s])
    assert any(r["h_qid"] for r in rows)  # linked where the KG knows the entity


def test_eval_prints_scores_and_a_table_per_relation(tmp_path: Path) -> None:
    from encoders.docred import read_docred
    from pipeline import load

    model = load(eager=False).parts["relations"].path
    p = run(
        "relations",
        "eval",
        str(model),
        "--data",
        str(MINI),
        "--json",
        "--train",
        str(MINI),
        "--train-docs",
        "0:2",
    )
    assert p.returncode == 0, p.stderr
    scores = json.loads(p.stdout)
    assert scores["gold"] == sum(len(d.facts) for d in read_docred(MINI))
    assert 0 < scores["f1"] <= 1 and scores["ign_f1"] <= scores["f1"] and "P17" in scores["per_relation"]
    table = run("relations", "eval", str(model), "--data", str(MINI), "--docs", "0:2")
    assert table.returncode == 0 and "Ign F1" in table.stdout and "per relation" in table.stdout


def test_train_reports_each_epoch_and_writes_a_model(tmp_path: Path) -> None:
    out = tmp_path / "re"
    p = run(
        "relations",
        "train",
        "--data",
        str(MINI),
        "--docs",
        "0:2",
        "--dev-docs",
        "2:3",
        "--knowledge",
        "none",
        "--epochs",
        "1",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "epoch 1: loss" in p.stderr and "dev F1" in p.stderr
    assert "trained none on 2 documents" in p.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_docs"] == 2 and metrics["dev_docs"] == 1 and len(metrics["dev_scores"]) == 1


def test_bad_input_is_one_line_naming_file_document_and_field(tmp_path: Path) -> None:
    docs = json.loads(MINI.read_text())
    docs[2]["vertexSet"][1][0]["pos"] = [0, 999]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(docs))
    p = run("relations", "predict", str(bad), "--out", str(tmp_path / "p.json"))
    assert p.returncode == 2
    assert f"{bad}: document 2 (" in p.stderr and "field vertexSet[1][0].pos" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.json").exists()
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    p = run("relations", "predict", str(empty), "--out", str(tmp_path / "e.json"))
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "e.json").read_text()) == []
