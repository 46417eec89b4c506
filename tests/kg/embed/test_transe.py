"""TransE: scoring, filtered realistic ranks, training that learns, checkpoints, extension, CLI."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kg import load_kg
from kg.embed import EntityVectors, TrainConfig, TransE, TransEConfig, evaluate_checkpoint, train_transe
from kg.embed.evaluate import FilterIndex, metrics_from_ranks, rank_triples, realistic_rank
from kg.embed.extend import extend
from kg.embed.model import pairwise_distance
from kg.embed.train import Trainer, head_probabilities
from kg.errors import KGFormatError

FAST = {
    "dim": 32,
    "epochs": 30,
    "eval_every": 10,
    "batch_size": 128,
    "negatives": 32,
    "chunk_size": 16,
    "lr": 0.01,
}


def test_pairwise_distance_matches_direct_norm() -> None:
    q, c = torch.randn(5, 8), torch.randn(7, 8)
    for p in (1, 2):
        direct = (q[:, None, :] - c[None, :, :]).norm(p=p, dim=-1)
        torch.testing.assert_close(pairwise_distance(q, c, p), direct, rtol=1e-4, atol=1e-4)


def test_score_is_margin_minus_distance() -> None:
    m = TransE(TransEConfig(3, 1, dim=2, p_norm=1, margin=5.0))
    with torch.no_grad():
        m.entity.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]]))
        m.relation.weight.copy_(torch.tensor([[1.0, 1.0]]))
    s = m(torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([1, 2]))
    torch.testing.assert_close(s, torch.tensor([5.0, 5.0 - 3.0]))


def test_realistic_rank_averages_ties_and_ignores_filtered() -> None:
    d = torch.tensor([[1.0, 0.5, 1.0, 1.0, 0.2]])
    filtered = torch.tensor([[False, False, False, False, True]])
    # target 0: one better (0.5), two equal others (2, 3) -> 1 + 1 + 2/2 = 3; entity 4 is filtered
    assert realistic_rank(d, torch.tensor([0]), filtered).item() == 3.0


def test_filtered_ranking_removes_other_true_answers() -> None:
    known = np.array([[0, 0, 1], [0, 0, 2]])
    filters = FilterIndex.build(known, 1)

    def score_all(anchor: torch.Tensor, r: torch.Tensor, predict_head: bool) -> torch.Tensor:
        return torch.tensor([[9.0, 0.2, 0.1, 0.5]]).expand(len(anchor), 4)  # entity 2 closest

    ranks = rank_triples(score_all, np.array([[0, 0, 1]]), filters, 4)
    assert ranks[0] == 1.0  # 2 is also a true tail of (0, r0), so it does not count against 1
    assert metrics_from_ranks(np.array([1.0, 2.0, 4.0]))["mrr"] == pytest.approx((1 + 0.5 + 0.25) / 3)


def test_bernoulli_probabilities_favour_the_many_side() -> None:
    # relation 0: one head, many tails -> corrupt the head more often (tph high)
    t = np.array([[0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, 4]])
    assert head_probabilities(t, 1)[0] > 0.7


def test_training_learns_and_checkpoint_round_trips(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "codex-s")
    untrained = Trainer(kg, TrainConfig(**FAST, seed=3))
    before = (untrained.evaluate(kg.triples["train"])["mrr"], untrained.evaluate(kg.triples["test"])["mrr"])
    trainer, metrics = train_transe(kg, TrainConfig(**FAST, seed=3), tmp_path / "m")
    assert metrics["history"]["loss"][-1] < metrics["history"]["loss"][0]
    assert trainer.evaluate(kg.triples["train"])["mrr"] > 3 * before[0]  # it fits what it was shown
    assert metrics["test"]["mrr"] > 1.5 * before[1]  # and generalises to held-out triples
    for f in ("model.safetensors", "config.json", "metrics.json", "curve.png", "entities.parquet"):
        assert (tmp_path / "m" / f).stat().st_size > 0
    again = evaluate_checkpoint(tmp_path / "m", kg, "test")
    assert again["mrr"] == pytest.approx(metrics["test"]["mrr"], abs=1e-6)
    vectors = EntityVectors.load(tmp_path / "m")
    np.testing.assert_array_equal(
        vectors.vector("Q30"), trainer.model.entity.weight[kg.entity_id("Q30")].detach().numpy()
    )
    assert len(vectors.nearest("Q30", k=3)) == 3


def test_training_is_reproducible_with_a_seed(kg_dir: Path) -> None:
    kg = load_kg(kg_dir / "codex-s")
    cfg = TrainConfig(**{**FAST, "epochs": 5, "eval_every": 5})
    a, _ = train_transe(kg, cfg)
    b, _ = train_transe(kg, cfg)
    torch.testing.assert_close(a.model.entity.weight, b.model.entity.weight, rtol=0, atol=0)


def test_margin_ranking_loss_and_l2_also_learn(kg_dir: Path) -> None:
    kg = load_kg(kg_dir / "codex-s")
    _, m = train_transe(
        kg,
        TrainConfig(**{**FAST, "loss": "margin_ranking", "margin": 1.0, "p_norm": 2, "sampler": "uniform"}),
    )
    assert m["history"]["loss"][-1] < m["history"]["loss"][0]


def test_extend_trains_only_new_rows(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "codex-s")
    held = {kg.entities[i] for i in np.argsort(-kg.degrees())[5:10]}  # five well-connected entities
    rows = kg.triples["train"]
    touches = np.array([kg.entities[h] in held or kg.entities[t] in held for h, _, t in rows])
    base = kg.without_entities(held)
    assert base.num_entities == kg.num_entities - 5
    train_transe(base, TrainConfig(**FAST), tmp_path / "base")
    before = EntityVectors.load(tmp_path / "base")
    new = [(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t in rows[touches]]
    after, _ = extend(before, new, TrainConfig(**FAST), epochs=50)
    old = len(before.entities)
    assert torch.equal(after.matrix[:old], before.matrix)
    assert torch.equal(after.model.relation.weight, before.model.relation.weight)
    held_ids = [after.entity_id(e) for e in held]
    assert all(i >= old for i in held_ids)
    moved = (after.matrix[held_ids] - after.matrix[held_ids].mean(0)).abs().sum()
    assert moved > 0


def test_bad_config_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"dimm": 3}))
    with pytest.raises(KGFormatError, match=r"c\.json: unknown setting 'dimm'.*the settings are: .*dim"):
        TrainConfig.from_file(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"loss": "hinge"}))
    with pytest.raises(KGFormatError, match="loss='hinge': should be 'self_adversarial' or 'margin_ranking'"):
        TrainConfig.from_file(tmp_path / "d.json")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"dim": 8.5}, "dim=8.5: should be a valid integer"),
        ({"dim": True}, "dim=True: should be a valid integer"),
        ({"device": 5}, "device=5: should be a valid string"),
        ({"device": "gpu"}, "should be auto, cpu, cuda or cuda:N"),
        ({"seed": "abc"}, "seed='abc': should be a valid integer"),
        ({"reciprocal": "no"}, "reciprocal='no': should be a valid boolean"),
        ({"epochs": 1.5}, "epochs=1.5: should be a valid integer"),
        ({"patience": -1}, "patience=-1: should be greater than or equal to 0"),
        ({"lr_decay": 0}, "lr_decay=0: should be greater than 0"),
        ({"lr_decay": 1.5}, "lr_decay=1.5: should be less than or equal to 1"),
        ({"adversarial_temperature": -0.5}, "should be greater than or equal to 0"),
        ({"regularization": -1e-3}, "should be greater than or equal to 0"),
        ({"lr": float("nan")}, "lr=nan: should be a finite number"),
    ],
)
def test_every_training_setting_is_typed_and_ranged(
    tmp_path: Path, setting: dict[str, object], message: str
) -> None:
    """Wrong types and out-of-range values are refused with the field and the allowed range,
    never coerced ('no' is not True, 8.5 is not 8, True is not 1)."""
    (tmp_path / "c.json").write_text(json.dumps(setting))
    with pytest.raises(KGFormatError, match=re.escape(message)):
        TrainConfig.from_file(tmp_path / "c.json")


BIN = Path(sys.executable).parent


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, env=env)


def test_cli_train_and_eval(kg_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "fast.json").write_text(json.dumps(FAST))
    data, out = kg_dir / "codex-s", tmp_path / "m"
    p = run(
        BIN / "kgpipe",
        "kg",
        "train",
        data,
        "--out",
        out,
        "--config",
        tmp_path / "fast.json",
        "--epochs",
        "10",
        "--seed",
        "1",
        "--device",
        "cpu",
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 10
    p = run(BIN / "kgpipe", "kg", "eval", out, "--data", data, "--split", "test", "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert {"mrr", "mr", "hits@1", "hits@3", "hits@10"} <= set(result)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is exercised on Linux")
def test_torchrun_two_cpu_processes(kg_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "fast.json").write_text(json.dumps({**FAST, "epochs": 10}))
    p = run(
        BIN / "torchrun", "--nproc-per-node", "2", "--master-port", "29517",
        BIN / "kgpipe", "kg", "train", kg_dir / "codex-s", "--out", tmp_path / "m", "--config", tmp_path / "fast.json", "--device", "cpu",
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["history"]["loss"][-1] < metrics["history"]["loss"][0]


def test_extend_a_checkpoint_trained_elsewhere_runs_here(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "codex-s")
    train_transe(kg, TrainConfig(**{**FAST, "epochs": 3, "eval_every": 3}), tmp_path / "m")
    vectors = EntityVectors.load(tmp_path / "m")
    vectors.config["train"]["device"] = "cuda"  # as the bundled checkpoint, trained on a GPU
    grown, _ = extend(vectors, [("Q_new", kg.relations[0], kg.entities[0])], epochs=5, device="cpu")
    assert grown.entities[-1] == "Q_new" and grown.has("Q_new")
