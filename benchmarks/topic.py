"""The default bundle's `topic` classifier: what a paragraph is about, with and without knowledge.

    python benchmarks/topic.py [--epochs 2] [--install]

Data: the 10,033 Wikipedia lead paragraphs of ../shared/data/corpus. A lead is labelled with the
coarse KG type of the FB15k-237 entity whose label is exactly its title (person, place,
organisation, creative work, language, other); leads whose title names no entity, or several,
are left out. Split by a hash of the document id: 70 % train, 15 % dev (early stopping, model
choice), 15 % test (held out: reported first). Entities in the texts are found by the bundle's
linker (`--link`); the text model's weights stay frozen (only the fusion and the head are
trained), so the classifier ships without a copy of the text model.

Both models, text only (`none`) and ERNIE-style (`ernie`), are trained in one run with the same
seed, data and settings; `--install` copies the better one on dev into data/classifiers/topic and
adds it to the default bundle's manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"
NAMES = {
    "PER": "person",
    "LOC": "place",
    "ORG": "organisation",
    "WORK": "creative work",
    "LANG": "language",
    "": "other",
}


def split_of(doc_id: str) -> str:
    h = int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 70 else "dev" if h < 85 else "test"


def build(out: Path) -> dict:
    from kg.link.context import coarse_types
    from pipeline.bundle import load

    bundle = load(eager=False)
    kg = bundle.kg
    kinds = coarse_types(kg)
    by_label: dict[str, list[int]] = {}
    for e, label in enumerate(kg.labels):
        if label and kg.qids[e]:
            by_label.setdefault(label, []).append(e)
    rows: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for line in CORPUS.open(encoding="utf-8"):
        doc = json.loads(line)
        found = by_label.get(doc["title"], [])
        if len(found) != 1:
            continue
        label = NAMES[kinds[found[0]]]
        rows[split_of(doc["id"])].append({"id": doc["id"], "text": doc["text"], "label": label})
    out.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for r in items:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {split: dict(Counter(r["label"] for r in items)) for split, items in rows.items()}


def kgpipe(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run(
        [str(Path(sys.executable).parent / "kgpipe"), *args], env=env, capture_output=True, text=True
    )
    if p.returncode:
        sys.exit(f"kgpipe {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--head-lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep the data and models here")
    ap.add_argument(
        "--install", action="store_true", help="put the better model on dev in the default bundle"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "topic.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kgpipe-topic-"))
    counts = build(work / "data")
    print(json.dumps(counts, indent=1))
    res: dict = {"data": counts, "epochs": args.epochs, "seed": args.seed, "models": {}}
    for knowledge in ("none", "ernie"):
        t = time.perf_counter()
        folder = work / f"topic-{knowledge}"
        kgpipe(
            "encoder",
            "finetune",
            "sequence",
            "--train",
            str(work / "data" / "train.jsonl"),
            "--dev",
            str(work / "data" / "dev.jsonl"),
            "--knowledge",
            knowledge,
            "--out",
            str(folder),
            "--link",
            "--freeze-text-model",
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
            "--head-lr",
            str(args.head_lr),
            "--max-length",
            "96",
            "--batch-size",
            "16",
            "--force",
        )
        train_s = time.perf_counter() - t
        scores = {}
        for split in ("test", "dev"):
            scores[split] = json.loads(
                kgpipe(
                    "encoder",
                    "eval",
                    str(folder),
                    "--data",
                    str(work / "data" / f"{split}.jsonl"),
                    "--link",
                    "--json",
                )
            )
        res["models"][knowledge] = {"train_s": round(train_s), **scores}
        print(knowledge, json.dumps(res["models"][knowledge]))
    best = max(res["models"], key=lambda k: res["models"][k]["dev"]["macro_f1"])
    res["chosen_on_dev"] = best
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\n{'model':8}{'test macro-F1':>15}{'test micro-F1':>15}{'dev macro-F1':>14}{'train s':>9}")
    for k, m in res["models"].items():
        print(
            f"{k:8}{m['test']['macro_f1']:>15.4f}{m['test']['micro_f1']:>15.4f}{m['dev']['macro_f1']:>14.4f}{m['train_s']:>9}"
        )
    if args.install:
        install(work / f"topic-{best}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def install(folder: Path) -> None:
    """Copy the model into data/classifiers/topic and re-hash the default bundle's manifest."""
    from kg.manifest import read_manifest, write_manifest

    target = ROOT / "data" / "classifiers" / "topic"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    manifest, parts = read_manifest(ROOT / "data", verify=False)
    rel = {name: str(p.path.relative_to(ROOT / "data")) for name, p in parts.items()}
    rel["classifiers/topic"] = "classifiers/topic"
    sources = {name: p.source for name, p in parts.items()}
    sources["classifiers/topic"] = (
        "python benchmarks/topic.py --install (Wikipedia leads, titles typed by FB15k-237)"
    )
    extra = {k: manifest[k] for k in ("text_model", "spacy_model") if k in manifest}
    write_manifest(ROOT / "data", rel, sources, extra)
    print(f"installed {folder} as {target}")


if __name__ == "__main__":
    main()
