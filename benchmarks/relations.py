"""Document-level relation extraction on Re-DocRED: text only vs ERNIE vs K-BERT, a learning curve,
and a rule baseline, side by side.

    python benchmarks/relations.py [--modes none,ernie,kbert] [--seeds 0,1,2] [--sizes 400]
                                   [--epochs 20] [--transe-minutes 20] [--report-only]

Data: ../shared/data/docred/dev_revised.json (Re-DocRED's dev split, 500 documents, MIT). A fixed
split: documents 0-399 train (the learning curve takes the first 100 / 200 / 400 of them),
documents 400-499 choose the epoch (early stopping) and give every figure here; so these figures
are dev figures, not held-out ones (a held-back test set is run on the defaults).

Knowledge without leaks: every KG triple joining the two entities of an evaluated pair (any two
entities of documents 400-499, linked by the bundle's linker) is removed from the KG, and TransE is
trained again on what is left (CPU, `--transe-minutes`); ERNIE fuses those vectors and K-BERT grafts
that KG's triples. F1 is also given by KG coverage of a pair: both ends in the KG, one, none.

Each run (mode, seed, training size) is saved as it finishes under results/relations/runs/ and is
not run again, so the grid can be filled over several sessions; the table and the PNG are made
from the runs present. The rule baseline (the commonest relation of each entity-type pair of a
sentence in the training documents) runs every time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "docred" / "dev_revised.json"
OUT = ROOT / "benchmarks" / "results"
RUNS = OUT / "relations" / "runs"
CACHE = Path(os.environ.get("KGPIPE_BENCH_CACHE", Path.home() / ".cache" / "kgpipe-bench"))
TRAIN, DEV = slice(0, 400), slice(400, 500)


def linked_documents() -> list:
    """All 500 documents, each gold entity linked by the default bundle's linker (cached)."""
    from encoders.docred import read_docred, read_rel_info
    from encoders.entities import EntityFinder
    from pipeline.bundle import load

    docs = read_docred(DATA, read_rel_info())
    cache = CACHE / "redocred-dev-qids.json"
    if cache.exists():
        qids = json.loads(cache.read_text())
    else:
        linked = EntityFinder(load().linker).link(docs)
        qids = [[e.qid for e in d.entities] for d in linked]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(qids))
    return [
        replace(d, entities=[replace(e, qid=q) for e, q in zip(d.entities, qs, strict=True)])
        for d, qs in zip(docs, qids, strict=True)
    ]


def leak_free_knowledge(docs: list, minutes: float) -> tuple[Path, Path, dict]:
    """The bundled KG without any triple joining two entities of a dev document, and TransE trained
    again on it (cached). Returns (kg folder, TransE folder, what was removed)."""
    import numpy as np

    from kg.embed import TrainConfig, train_transe
    from kg.io import bundled_kg_path, load_kg, save_kg

    kg_dir, transe_dir = CACHE / "kg-leak-free", CACHE / "transe-leak-free"
    info_file = CACHE / "leak-free.json"
    if info_file.exists() and (transe_dir / "model.safetensors").exists():
        return kg_dir, transe_dir, json.loads(info_file.read_text())
    kg = load_kg(bundled_kg_path())
    pairs = set()
    for d in docs[DEV]:
        rows = [kg.entity_id(e.qid) for e in d.entities if e.qid and kg.has_entity(e.qid)]
        pairs |= {(a, b) for a in rows for b in rows if a != b}
    removed = {}
    triples = {}
    for split, t in kg.triples.items():
        keep = (
            np.array([(int(h), int(tl)) not in pairs for h, _, tl in t], bool)
            if len(t)
            else np.zeros(0, bool)
        )
        removed[split] = int((~keep).sum())
        triples[split] = t[keep]
    save_kg(replace(kg, triples=triples, name=f"{kg.name}-leak-free"), kg_dir)
    cfg = json.loads((ROOT / "benchmarks" / "configs" / "bundled-fb15k-237.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")} | {"max_minutes": minutes}
    _, metrics = train_transe(load_kg(kg_dir), TrainConfig(**cfg), transe_dir)
    info = {
        "pairs": len(pairs),
        "removed": removed,
        "transe": {k: metrics.get(k) for k in ("best_valid_mrr", "epochs_run", "train_seconds", "device")},
    }
    info_file.write_text(json.dumps(info, indent=2))
    return kg_dir, transe_dir, info


def coverage(doc, h: int, t: int, kg) -> str:
    ends = sum(bool(doc.entities[i].qid) and kg.has_entity(doc.entities[i].qid) for i in (h, t))
    return ("none", "one", "both")[ends]


def scores_by_coverage(docs: list, predicted: list, kg) -> dict:
    from encoders.relations import score

    out = {}
    for kind in ("both", "one", "none"):
        gold = [replace(d, facts=[f for f in d.facts if coverage(d, f.h, f.t, kg) == kind]) for d in docs]
        pred = [
            [p for p in ps if coverage(d, p.h, p.t, kg) == kind]
            for d, ps in zip(docs, predicted, strict=True)
        ]
        s = score(gold, pred)
        out[kind] = {"f1": s.f1, "precision": s.precision, "recall": s.recall, "gold": s.gold}
    return out


def run_one(
    mode: str,
    seed: int,
    size: int,
    epochs: int,
    docs: list,
    kg_dir: Path,
    transe_dir: Path,
    reuse: Path | None = None,
) -> dict:
    """Train one model and score it; `reuse`: a text-only model already trained the same way
    (`kgpipe relations train --knowledge none --seed S --docs 0:N --dev-docs 400:500`), scored instead."""
    import torch

    from encoders.docred import read_rel_info
    from encoders.finetune import History
    from encoders.knowledge import knowledge_for
    from encoders.relations import (
        RelationConfig,
        RelationModel,
        RelationTrainConfig,
        relation_labels,
        score,
        train,
        train_names,
    )
    from kg.io import load_kg

    names = read_rel_info()
    train_docs, dev_docs = docs[TRAIN][:size], docs[DEV]
    if reuse is not None:
        model = RelationModel.load(reuse)
        if model.cfg.knowledge != "none" or mode != "none":
            raise SystemExit(
                f"--reuse takes a text-only model (no KG to leak); {reuse} is {model.cfg.knowledge}"
            )
        m = json.loads((reuse / "metrics.json").read_text())
        history = History(m["train_loss"], m["dev_scores"], m["best_epoch"], m["train_seconds"])
    else:
        cfg = RelationConfig(knowledge=mode, labels=relation_labels(docs[TRAIN], names), names=names)  # type: ignore[arg-type]
        model = RelationModel.create(cfg, knowledge_for(mode, kg_dir, transe_dir), seed=seed)
        history = train(model, train_docs, dev_docs, RelationTrainConfig(epochs=epochs, seed=seed))
    predicted = model.predict(dev_docs)
    s = score(dev_docs, predicted, train_names(train_docs))
    return {
        "mode": mode,
        "seed": seed,
        "train_docs": size,
        "split": "train: Re-DocRED dev 0-399 (first N); epoch chosen on and scored on 400-499",
        "f1": s.f1,
        "ign_f1": s.ign_f1,
        "precision": s.precision,
        "recall": s.recall,
        "evidence_f1": s.evidence_f1,
        "by_coverage": scores_by_coverage(dev_docs, predicted, load_kg(kg_dir)),
        "per_relation": s.per_relation,
        "epochs_run": len(history.loss),
        "best_epoch": history.best_epoch,
        "dev_curve": [d.get("f1") for d in history.dev],
        "train_seconds": history.seconds,
        "threads": torch.get_num_threads(),
        "reused": str(reuse) if reuse is not None else None,
    }


def rule_baseline(docs: list) -> dict:
    """The commonest relation of each (head type, tail type) pair of entities in one sentence."""
    from encoders.relations import PairFact, score

    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for d in docs[TRAIN]:
        for f in d.facts:
            counts[(d.entities[f.h].type, d.entities[f.t].type)][f.r] += 1
    best = {k: c.most_common(1)[0][0] for k, c in counts.items()}
    predicted = []
    for d in docs[DEV]:
        facts = []
        sents = [{m.sent for m in e.mentions} for e in d.entities]
        for h, eh in enumerate(d.entities):
            for t, et in enumerate(d.entities):
                if h != t and sents[h] & sents[t] and (eh.type, et.type) in best:
                    facts.append(PairFact(h, t, best[(eh.type, et.type)], 1.0, (min(sents[h] & sents[t]),)))
        predicted.append(facts)
    s = score(docs[DEV], predicted)
    return {"f1": s.f1, "precision": s.precision, "recall": s.recall, "per_relation": s.per_relation}


def report(runs: list[dict], rule: dict, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["mode"], r["train_docs"])].append(r)
    print(
        f"Re-DocRED dev: train 0-399 (first N), epoch chosen and scored on 400-499; KG triples of evaluated pairs removed ({sum(info.get('removed', {}).values())} triples)"
    )
    print(
        f"{'model':<22}{'docs':>6}{'seeds':>7}{'F1':>16}{'Ign F1':>9}{'P':>8}{'R':>8}{'both':>8}{'one':>8}{'none':>8}"
    )
    print(
        f"{'rule baseline':<22}{400:>6}{'-':>7}{rule['f1']:>16.4f}{'':>9}{rule['precision']:>8.4f}{rule['recall']:>8.4f}"
    )
    table = {}
    for (mode, size), rs in sorted(groups.items()):
        f1 = np.array([r["f1"] for r in rs])
        cov = {k: float(np.mean([r["by_coverage"][k]["f1"] for r in rs])) for k in ("both", "one", "none")}
        row = {
            "f1_mean": round(float(f1.mean()), 4),
            "f1_std": round(float(f1.std()), 4),
            "ign_f1_mean": round(float(np.mean([r["ign_f1"] for r in rs])), 4),
            "precision": round(float(np.mean([r["precision"] for r in rs])), 4),
            "recall": round(float(np.mean([r["recall"] for r in rs])), 4),
            "by_coverage_f1": {k: round(v, 4) for k, v in cov.items()},
            "seeds": [r["seed"] for r in rs],
        }
        table[f"{mode}/{size}"] = row
        print(
            f"{mode:<22}{size:>6}{len(rs):>7}{row['f1_mean']:>10.4f} ±{row['f1_std']:.3f}{row['ign_f1_mean']:>9.4f}"
            f"{row['precision']:>8.4f}{row['recall']:>8.4f}{cov['both']:>8.4f}{cov['one']:>8.4f}{cov['none']:>8.4f}"
        )
    result = {
        "split": "train Re-DocRED dev 0-399, choose and score on 400-499",
        "leak_free": info,
        "rule_baseline": rule,
        "models": table,
        "runs": len(runs),
    }
    (OUT / "relations.json").write_text(json.dumps(result, indent=2))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for mode in sorted({m for m, _ in groups}):
        sizes = sorted(s for m, s in groups if m == mode)
        means = [table[f"{mode}/{s}"]["f1_mean"] for s in sizes]
        stds = [table[f"{mode}/{s}"]["f1_std"] for s in sizes]
        a.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=mode)
    a.axhline(rule["f1"], color="grey", linestyle=":", label="rule baseline")
    a.set(xlabel="training documents", ylabel="F1 on documents 400-499", title="learning curve")
    a.legend()
    full = [r for r in runs if r["train_docs"] == 400]
    if full:
        best = max(full, key=lambda r: r["f1"])
        top = list(best["per_relation"].items())[:20]
        b.barh([f"{k} {v['gold']}" for k, v in top][::-1], [v["f1"] for _, v in top][::-1], color="#4a7ab5")
        b.set(xlabel="F1", title=f"per relation ({best['mode']}, seed {best['seed']}; the 20 commonest)")
    fig.tight_layout()
    fig.savefig(OUT / "relations.png", dpi=90)
    print(f"wrote {OUT / 'relations.json'} and {OUT / 'relations.png'}")


def install(folder: Path, source: str) -> None:
    """Ship a trained model as the default bundle's `relations` part: its weights stored as float16
    (half the size; read back as float32), the manifest re-hashed."""
    import shutil

    from encoders.relations import RelationModel
    from kg.manifest import read_manifest, write_manifest

    model = RelationModel.load(folder)
    model.cfg.kg = model.cfg.transe = ""  # the bundle's own KG and TransE
    metrics = (
        json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else None
    )
    target = ROOT / "data" / "relations"
    shutil.rmtree(target, ignore_errors=True)
    model.save(target, metrics, half=True)
    manifest, parts = read_manifest(ROOT / "data", verify=False)
    rel = {name: str(p.path.relative_to(ROOT / "data")) for name, p in parts.items()}
    rel["relations"] = "relations"
    sources = {name: p.source for name, p in parts.items()}
    sources["relations"] = source
    extra = {k: manifest[k] for k in ("text_model", "spacy_model") if k in manifest}
    write_manifest(ROOT / "data", rel, sources, extra)
    print(f"installed {folder} as {target}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="none,ernie,kbert")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sizes", default="400")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--transe-minutes", type=float, default=20.0)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--reuse",
        type=Path,
        help="a text-only model trained with the same seed and documents: scored as that run",
    )
    p.add_argument(
        "--install", type=Path, help="ship this model folder as the default bundle's relation model, and stop"
    )
    p.add_argument(
        "--source", default="", help="with --install: the command that trained it, for the manifest"
    )
    args = p.parse_args(argv)
    if args.install:
        install(args.install, args.source)
        return 0
    docs = linked_documents()
    kg_dir, transe_dir, info = leak_free_knowledge(docs, args.transe_minutes)
    RUNS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for size in map(int, args.sizes.split(",")):
            for seed in map(int, args.seeds.split(",")):
                for mode in args.modes.split(","):
                    path = RUNS / f"{mode}-seed{seed}-docs{size}.json"
                    if path.exists():
                        continue
                    start = time.time()
                    print(f"training {mode}, seed {seed}, {size} documents ...", flush=True)
                    made = json.loads((args.reuse / "metrics.json").read_text()) if args.reuse else {}
                    same = (
                        made.get("seed") == seed
                        and made.get("train_docs") == size
                        and made.get("docs") == f"0:{size}"
                    )
                    reuse = args.reuse if mode == "none" and same else None
                    result = run_one(mode, seed, size, args.epochs, docs, kg_dir, transe_dir, reuse)
                    path.write_text(json.dumps(result, indent=2))
                    print(f"  F1 {result['f1']:.4f} ({(time.time() - start) / 60:.1f} min)", flush=True)
    runs = [json.loads(f.read_text()) for f in sorted(RUNS.glob("*.json"))]
    report(runs, rule_baseline(docs), info)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
