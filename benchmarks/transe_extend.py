"""Adding entities without retraining vs full retraining, on CoDEx-S.

Holds 50 entities out of training (every triple that touches them), trains TransE on the rest with
the default config, adds the 50 back with `kg.embed.extend` (old rows frozen), and compares with a
full retraining: MRR on the test triples that touch the held-out entities, and wall time.
Usage: python benchmarks/transe_extend.py [--data ../shared/data/kg/codex-s] [--held 50] [--seed 0]
Writes benchmarks/results/transe_extend.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kg import load_kg
from kg.embed import EntityVectors, TrainConfig, train_transe
from kg.embed.extend import extend
from kg.embed.run import evaluate_vectors
from kg.graph import KnowledgeGraph

ROOT = Path(__file__).resolve().parents[1]


def as_vectors(trainer_model: torch.nn.Module, kg: KnowledgeGraph, cfg: TrainConfig) -> EntityVectors:
    return EntityVectors(
        trainer_model, kg.entities, kg.qids, kg.labels, kg.relations, {"train": cfg.to_dict()}
    )  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/kg/codex-s"))
    ap.add_argument("--held", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extend-epochs", type=int, default=200)
    args = ap.parse_args()
    kg = load_kg(args.data)
    cfg = TrainConfig(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    degree = kg.degrees()
    in_test = np.zeros(kg.num_entities, bool)
    in_test[kg.triples["test"][:, [0, 2]].ravel()] = True
    eligible = np.flatnonzero(in_test & (degree >= 5))
    held_ids = rng.choice(eligible, args.held, replace=False)
    held = {kg.entities[i] for i in held_ids}
    mask = np.zeros(kg.num_entities, bool)
    mask[held_ids] = True

    test = kg.triples["test"]
    test_held = test[mask[test[:, 0]] | mask[test[:, 2]]]
    train = kg.triples["train"]
    new_triples = [
        (kg.entities[h], kg.relations[r], kg.entities[t])
        for h, r, t in train[mask[train[:, 0]] | mask[train[:, 2]]]
    ]

    base_kg = kg.without_entities(held)
    start = time.perf_counter()
    base, _ = train_transe(base_kg, cfg)
    base_seconds = time.perf_counter() - start
    start = time.perf_counter()
    extended, history = extend(
        as_vectors(base.model, base_kg, cfg), new_triples, cfg, epochs=args.extend_epochs
    )
    extend_seconds = time.perf_counter() - start
    start = time.perf_counter()
    full, _ = train_transe(kg, cfg)
    full_seconds = time.perf_counter() - start

    ext_metrics = evaluate_vectors(extended, kg, test_held)
    full_metrics = evaluate_vectors(as_vectors(full.model, kg, cfg), kg, test_held)
    unchanged = bool(torch.equal(extended.matrix[: base_kg.num_entities], base.model.entity.weight.detach()))
    result = {
        "data": Path(args.data).name,
        "held_out_entities": args.held,
        "new_train_triples": len(new_triples),
        "test_triples_touching_held": len(test_held),
        "extend": {
            "mrr": ext_metrics["mrr"],
            "hits@10": ext_metrics["hits@10"],
            "seconds": extend_seconds,
            "epochs": history.epochs_run,
        },
        "full_retrain": {
            "mrr": full_metrics["mrr"],
            "hits@10": full_metrics["hits@10"],
            "seconds": full_seconds,
        },
        "base_train_seconds": base_seconds,
        "mrr_ratio": ext_metrics["mrr"] / full_metrics["mrr"],
        "time_ratio": extend_seconds / full_seconds,
        "old_rows_bit_identical": unchanged,
        "config": cfg.to_dict(),
    }
    out = ROOT / "benchmarks" / "results" / "transe_extend.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'':14} {'MRR':>7} {'H@10':>7} {'seconds':>8}   (test triples touching the {args.held} held-out entities: {len(test_held)})"
    )
    print(f"{'extend':14} {ext_metrics['mrr']:7.4f} {ext_metrics['hits@10']:7.4f} {extend_seconds:8.1f}")
    print(
        f"{'full retrain':14} {full_metrics['mrr']:7.4f} {full_metrics['hits@10']:7.4f} {full_seconds:8.1f}"
    )
    print(
        f"extend reaches {result['mrr_ratio']:.0%} of full retraining's MRR in {result['time_ratio']:.0%} of its time; old rows identical: {unchanged}"
    )


if __name__ == "__main__":
    main()
