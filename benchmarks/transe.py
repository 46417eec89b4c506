"""TransE benchmarks: kgpipe vs PyKEEN side by side, and full-quality runs with tuned configs.

  python benchmarks/transe.py compare [--data ../shared/data/kg/codex-s] [--epochs 20]
  python benchmarks/transe.py full benchmarks/configs/codex-s.json [...] [--device cuda]

`compare` trains both libraries in fresh processes on the same machine with the same data, dimension,
negatives per positive, batch size, loss (self-adversarial, L1), optimiser and epochs, and reports
seconds per epoch and filtered test MRR (realistic ties in both). PyKEEN is installed by this script
into benchmarks/.venv-pykeen (or give --pykeen-python). `full` runs `kgpipe kg train` per config.
Results: benchmarks/results/transe_compare.json, transe_full.json (+ a PNG of the comparison).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PYKEEN_VENV = ROOT / "benchmarks" / ".venv-pykeen"

PYKEEN_CHILD = r"""
import json, sys, time, torch
from pykeen.pipeline import pipeline
from pykeen.triples import TriplesFactory
s = json.loads(sys.argv[1])
torch.set_num_threads(s["threads"])
train = TriplesFactory.from_path(s["data"] + "/train.txt")
kw = dict(entity_to_id=train.entity_to_id, relation_to_id=train.relation_to_id)
valid = TriplesFactory.from_path(s["data"] + "/valid.txt", **kw)
test = TriplesFactory.from_path(s["data"] + "/test.txt", **kw)
result = pipeline(
    training=train, validation=valid, testing=test, model="TransE",
    model_kwargs=dict(embedding_dim=s["dim"], scoring_fct_norm=1),
    loss="NSSALoss", loss_kwargs=dict(margin=s["margin"], adversarial_temperature=s["temperature"]),
    optimizer="Adam", optimizer_kwargs=dict(lr=s["lr"]),
    negative_sampler="bernoulli", negative_sampler_kwargs=dict(num_negs_per_pos=s["negatives"]),
    training_kwargs=dict(num_epochs=s["epochs"], batch_size=s["batch_size"], use_tqdm_batch=False),
    random_seed=s["seed"], device="cpu",
)
m = result.metric_results
print(json.dumps({"train_seconds": result.train_seconds, "mrr": m.get_metric("both.realistic.inverse_harmonic_mean_rank"),
                  "hits@10": m.get_metric("both.realistic.hits_at_10")}))
"""

KGPIPE_CHILD = r"""
import json, sys, torch
from kg import load_kg
from kg.embed import TrainConfig, train_transe
s = json.loads(sys.argv[1])
torch.set_num_threads(s["threads"])
cfg = TrainConfig(dim=s["dim"], p_norm=1, reciprocal=False, margin=s["margin"], adversarial_temperature=s["temperature"], lr=s["lr"],
                  negatives=s["negatives"], batch_size=s["batch_size"], epochs=s["epochs"], eval_every=s["epochs"],
                  patience=10**6, seed=s["seed"], device="cpu", chunk_size=s.get("chunk_size", 64))
_, m = train_transe(load_kg(s["data"]), cfg)
print(json.dumps({"train_seconds": m["train_seconds"], "mrr": m["test"]["mrr"], "hits@10": m["test"]["hits@10"]}))
"""


def pykeen_python(given: str | None) -> str:
    if given:
        return given
    py = PYKEEN_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PYKEEN_VENV)], check=True)
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                str(ROOT / "constraints.txt"),
                "torch==2.13.0",
                "pykeen==1.11.1",
            ],
            check=True,
        )
    return str(py)


def run_child(python: str, code: str, settings: dict[str, object]) -> dict[str, float]:
    p = subprocess.run([python, "-c", code, json.dumps(settings)], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    import platform

    import torch

    settings = {
        "data": str(Path(args.data).resolve()),
        "dim": args.dim,
        "negatives": args.negatives,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "margin": 9.0,
        "temperature": 1.0,
        "seed": 0,
        "threads": torch.get_num_threads(),
        "chunk_size": args.chunk_size,
    }
    rows = {
        "kgpipe": run_child(sys.executable, KGPIPE_CHILD, settings),
        "pykeen 1.11.1": run_child(pykeen_python(args.pykeen_python), PYKEEN_CHILD, settings),
    }
    for r in rows.values():
        r["seconds_per_epoch"] = r["train_seconds"] / args.epochs
    ours, ref = rows["kgpipe"], rows["pykeen 1.11.1"]
    result = {
        "settings": settings,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "runs": rows,
        "speedup_per_epoch": ref["seconds_per_epoch"] / ours["seconds_per_epoch"],
        "mrr_ratio": ours["mrr"] / ref["mrr"],
    }
    out = RESULTS / f"transe_compare_{Path(args.data).name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'library':16} {'s/epoch':>9} {'test MRR':>9} {'H@10':>7}   ({Path(args.data).name}, {args.epochs} epochs, dim {args.dim}, {args.negatives} negatives)"
    )
    for name, r in rows.items():
        print(f"{name:16} {r['seconds_per_epoch']:9.2f} {r['mrr']:9.4f} {r['hits@10']:7.4f}")
    print(
        f"kgpipe is {result['speedup_per_epoch']:.1f}x faster per epoch at {result['mrr_ratio']:.2f}x the MRR -> {out}"
    )


def full(args: argparse.Namespace) -> None:
    out_path = RESULTS / "transe_full.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for config in args.configs:
        spec = json.loads(Path(config).read_text())
        name = Path(config).stem
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                str(Path(sys.executable).parent / "kgpipe"),
                "kg",
                "train",
                str((ROOT / spec["_data"]).resolve()),
                "--out",
                f"{tmp}/m",
                "--config",
                config,
            ]
            if args.device:
                cmd += ["--device", args.device]
            subprocess.run(cmd, check=True, cwd=ROOT)
            metrics = json.loads(Path(f"{tmp}/m/metrics.json").read_text())
            if args.keep:
                subprocess.run(
                    ["cp", "-r", f"{tmp}/m/curve.png", str(RESULTS / f"transe_{name}_curve.png")], check=True
                )
        metrics.pop("history", None)
        results[name] = {"config": config, **metrics}
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'config':14} {'MRR':>7} {'H@1':>7} {'H@10':>7} {'epochs':>7} {'seconds':>8}  device")
    for name, r in results.items():
        t = r["test"]
        print(
            f"{name:14} {t['mrr']:7.4f} {t['hits@1']:7.4f} {t['hits@10']:7.4f} {r['epochs_run']:7d} {r['train_seconds']:8.0f}  {r['device']}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--data", default=str(ROOT.parent / "shared/data/kg/codex-s"))
    c.add_argument("--epochs", type=int, default=20)
    c.add_argument("--dim", type=int, default=256)
    c.add_argument("--negatives", type=int, default=256)
    c.add_argument("--batch-size", type=int, default=1024)
    c.add_argument("--lr", type=float, default=2e-3)
    c.add_argument(
        "--chunk-size", type=int, default=64, help="kgpipe: positives sharing one block of negatives"
    )
    c.add_argument("--pykeen-python")
    f = sub.add_parser("full")
    f.add_argument("configs", nargs="+")
    f.add_argument("--device")
    f.add_argument("--keep", action="store_true", help="copy each run's curve.png into benchmarks/results")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    compare(args) if args.cmd == "compare" else full(args)


if __name__ == "__main__":
    main()
