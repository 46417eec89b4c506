"""FewRel val_wiki as supervised 16-way relation classification: text-only vs ERNIE vs K-BERT.

Steps (each reuses what the previous one wrote):
  split  the fixed stratified split, seed 0: per relation 450 train + 50 dev (the "500 train") and
         200 test, written to benchmarks/data/fewrel-split.json (committed).
  kg     FB15k-237 (by QID) ∪ WD50K ∪ CoDEx-S, minus every triple that directly joins the head and
         tail of any FewRel instance (either direction); TransE trained on it (CPU, time-boxed).
         Saved under benchmarks/.cache/fewrel/ (not committed: rebuilt by this step).
  run    for each mode (none, ernie, kbert) and seed: fine-tune the default MiniLM on train, stop
         early on dev, score test macro-F1 on all instances and on KG-covered ones (head or tail in
         the KG). Results are merged into benchmarks/results/fewrel.json after every run.
  typing FewRel heads and tails typed with CoDEx entity2types.json (types with >= 100 training
         examples; --min-type-examples 20 gives the finer 37-type set), multi-label mention typing,
         micro-F1, same ablation; into benchmarks/results/fewrel_typing.json. With --untyped-kg,
         `kg` builds (into benchmarks/.cache/fewrel-untyped/) and `typing` reads a KG without the
         triples that state a FewRel entity's CoDEx type, the typing label.
  pretrain  ERNIE's alignment pre-training (dEA) of the fusion on the 10k Wikipedia lead paragraphs
         (../shared/data/corpus), linked by kgpipe's default linker (cached), with the KG step's
         TransE; into benchmarks/.cache/fewrel/dea/. `run --pretrained` starts ERNIE from it.
Usage: python benchmarks/fewrel.py split|kg|pretrain|run|typing [--seeds 0 1 2] [--modes none ernie kbert]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoders.data import EntitySpan, Example  # noqa: E402
from kg.storage import write_json  # noqa: E402

SHARED = ROOT.parent / "shared/data"
SPLIT = ROOT / "benchmarks/data/fewrel-split.json"
CACHE = ROOT / "benchmarks/.cache/fewrel"
# the same KG without the triples that state a FewRel entity's CoDEx type (for the typing step)
CACHE_UNTYPED = ROOT / "benchmarks/.cache/fewrel-untyped"
RESULTS = ROOT / "benchmarks/results"
PER_RELATION = {"train": 450, "dev": 50, "test": 200}


def load_fewrel() -> dict[str, list[dict[str, Any]]]:
    return json.loads((SHARED / "fewrel/val_wiki.json").read_text())


def to_example(pid: str, inst: dict[str, Any], key: str) -> Example:
    """FewRel tokens joined by spaces; head/tail spans from their token ids; gold QIDs kept."""
    tokens, starts, pos = inst["tokens"], [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1

    def span(e: list[Any]) -> EntitySpan:
        ids = e[2][0]
        return EntitySpan(starts[ids[0]], starts[ids[-1]] + len(tokens[ids[-1]]), e[1])

    head, tail = span(inst["h"]), span(inst["t"])
    return Example(" ".join(tokens), [pid], (head, tail), [head, tail], key)


def make_split() -> None:
    data, rng = load_fewrel(), random.Random(0)
    split: dict[str, list[str]] = {s: [] for s in PER_RELATION}
    for pid in sorted(data):
        order = list(range(len(data[pid])))
        rng.shuffle(order)
        at = 0
        for part, n in PER_RELATION.items():
            split[part] += [f"{pid}:{i}" for i in sorted(order[at : at + n])]
            at += n
    SPLIT.parent.mkdir(parents=True, exist_ok=True)
    write_json(SPLIT, {"seed": 0, "per_relation": PER_RELATION, **split})
    print(f"wrote {SPLIT}: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))


def split_examples() -> dict[str, list[Example]]:
    data, split = load_fewrel(), json.loads(SPLIT.read_text())
    out = {}
    for part in PER_RELATION:
        out[part] = [
            to_example(k.split(":")[0], data[k.split(":")[0]][int(k.split(":")[1])], k) for k in split[part]
        ]
    return out


def build_kg(cache: Path = CACHE, drop_types: bool = False) -> None:
    """The union KG without the triples that give a FewRel label away, and TransE on it, into
    `cache`. Always dropped: every triple that joins a FewRel head and tail (the relation label);
    with `drop_types`, also every triple that joins a FewRel head or tail to one of its CoDEx types
    (the typing label: 'Malayalam' instance of 'Dravidian languages'), whatever the relation."""
    from kg import load_kg
    from kg.embed import TrainConfig, train_transe
    from kg.graph import KnowledgeGraph
    from kg.io import save_kg

    kgs = [load_kg(SHARED / "kg" / name) for name in ("fb15k-237", "wd50k", "codex-s")]
    union = KnowledgeGraph.union(kgs, name="fb15k237+wd50k+codex-s")
    types = json.loads((SHARED / "kg/codex/entity2types.json").read_text()) if drop_types else {}
    pairs = set()
    for insts in load_fewrel().values():
        for inst in insts:
            pairs |= {(inst["h"][1], inst["t"][1]), (inst["t"][1], inst["h"][1])}
            for e in (inst["h"][1], inst["t"][1]):
                pairs |= {p for t in types.get(e, []) for p in ((e, t), (t, e))}
    qid = np.array(union.qids, dtype=object)
    masks, dropped = {}, 0
    for split, a in union.triples.items():
        keys = zip(qid[a[:, 0]], qid[a[:, 2]], strict=True)
        masks[split] = np.fromiter(((h, t) in pairs for h, t in keys), dtype=bool, count=len(a))
        dropped += int(masks[split].sum())
    kg = union.without_triples(masks)
    print(
        f"union: {kg.num_entities} entities, {kg.num_relations} relations; {dropped} leaking triples removed"
    )
    save_kg(kg, cache / "kg")
    cfg = TrainConfig(dim=128, negatives=128, eval_every=5, valid_sample=2000, max_minutes=9.0, seed=0)
    _, metrics = train_transe(kg, cfg, cache / "transe")
    meta = {"entities": kg.num_entities, "triples": {s: len(a) for s, a in kg.triples.items()}}
    write_json(cache / "kg-info.json", {**meta, "leaking_triples_removed": dropped, "transe": metrics})
    print(json.dumps({k: metrics[k] for k in ("test", "epochs_run", "train_seconds")}))


def _knowledge(mode: str, descriptions: bool = False, cache: Path = CACHE) -> Any:
    from encoders.knowledge import KnowledgeSource
    from encoders.text import text_embedder
    from kg.embed.checkpoint import EntityVectors
    from kg.io import load_saved

    if mode == "ernie":
        source = KnowledgeSource.from_transe(EntityVectors.load(cache / "transe"))
        if descriptions:
            source = source.with_descriptions(load_saved(cache / "kg", verify=False), text_embedder())
        return source
    if mode == "kbert":
        return KnowledgeSource.from_kg(load_saved(cache / "kg"))
    return KnowledgeSource.empty()


def pretrain_fusion(cache: Path = CACHE, epochs: int = 1, seed: int = 0, device: str = "auto") -> None:
    """dEA on the Wikipedia lead paragraphs, linked once by the default linker (bundled KG; its
    QIDs find their rows in the union's TransE), saved into `cache`/dea."""
    import torch

    from encoders.data import read_texts
    from encoders.model import EncoderConfig, KnowledgeEncoder
    from encoders.pretrain import PretrainConfig, pretrain, save_fusion

    torch.set_num_threads(2)
    linked = cache / "wiki-linked.jsonl"
    if not linked.exists():
        link_corpus(SHARED / "corpus/wiki_vital_summaries.jsonl", linked)
    texts = read_texts(linked)
    cfg = EncoderConfig("sequence", "ernie", ["-"], transe=str(cache / "transe"))
    model = KnowledgeEncoder.create(cfg, _knowledge("ernie", False, cache), seed=seed)
    settings = PretrainConfig(epochs=epochs, seed=seed, device=device)
    result = pretrain(model, texts, settings)
    save_fusion(model, cache / "dea", settings, result)
    out = {"corpus": "wiki_vital_summaries.jsonl", "linked_texts": len(texts), **asdict(result)}
    write_json(RESULTS / "fewrel_dea_pretrain.json", out)
    print(json.dumps(out))


def link_corpus(source: Path, target: Path) -> None:
    """Each paragraph of `source` with the entities kgpipe's default linker finds, as JSONL."""
    from kg.storage import atomic_write
    from pipeline import load

    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    linker = load().linker
    start, out = time.time(), []
    for at in range(0, len(rows), 500):
        chunk = rows[at : at + 500]
        for row, found in zip(chunk, linker.link_many([r["text"] for r in chunk]), strict=True):
            spans = [{"span": [e.start, e.end], "id": e.qid} for e in found if e.qid]
            out.append(json.dumps({"id": row.get("id", ""), "text": row["text"], "entities": spans}))
        print(
            f"linked {at + len(chunk):,}/{len(rows):,} paragraphs in {time.time() - start:.0f} s", flush=True
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as f:
        f.write("\n".join(out) + "\n")


def covered_mask(examples: list[Example], cache: Path = CACHE) -> list[bool]:
    from kg.io import load_saved

    kg = load_saved(cache / "kg", verify=False)
    in_kg = {q for q in kg.qids if q}
    return [any(s.qid in in_kg for s in ex.focus) for ex in examples]


def run(
    task: str,
    modes: list[str],
    seeds: list[int],
    epochs: int,
    out_name: str,
    knowledge_dropout: float = 0.0,
    descriptions: bool = False,
    min_type_examples: int = 100,
    cache: Path = CACHE,
    device: str = "auto",
    knowledge_expert: float = 0.0,
    bf16: bool = False,
    pretrained: Path | None = None,
) -> None:
    import torch

    from encoders.finetune import FinetuneConfig, finetune, gold_sets, predict, summary
    from encoders.model import EncoderConfig, KnowledgeEncoder

    torch.set_num_threads(2)
    data = split_examples() if task == "relation" else typing_examples(min_type_examples)
    covered = covered_mask(data["test"], cache)
    test_cov = [ex for ex, c in zip(data["test"], covered, strict=True) if c]
    labels = sorted({label for ex in data["train"] for label in ex.labels})
    path = RESULTS / out_name
    results = json.loads(path.read_text()) if path.exists() else {}
    for seed in seeds:
        for mode in modes:
            start = time.time()
            cfg = EncoderConfig(
                task,
                mode,
                labels,
                knowledge_dropout=knowledge_dropout,
                descriptions=descriptions,
                knowledge_expert=knowledge_expert,
            )
            fusion = pretrained if mode == "ernie" else None
            model = KnowledgeEncoder.create(
                cfg, _knowledge(mode, descriptions, cache), seed=seed, fusion=fusion
            )
            history = finetune(
                model,
                data["train"],
                data["dev"],
                FinetuneConfig(epochs=epochs, seed=seed, device=device, bf16=bf16),
            )
            scores = test_scores(gold_sets(model, data["test"]), predict(model, data["test"]), covered)
            entry = results.setdefault(mode, {"runs": []})
            entry["runs"] = [r for r in entry["runs"] if r["seed"] != seed] + [
                {
                    "seed": seed,
                    **scores,
                    **summary(history),
                    "seconds": round(time.time() - start, 1),
                    "knowledge_expert": knowledge_expert,
                    "knowledge_dropout": knowledge_dropout,
                    "pretrained_fusion": str(fusion.relative_to(ROOT)) if fusion else "",
                }
            ]
            entry["runs"].sort(key=lambda r: r["seed"])
            for part in ("all", "covered", "uncovered"):
                entry[f"macro_f1_{part}"] = [r[part]["macro_f1"] for r in entry["runs"]]
                entry[f"micro_f1_{part}"] = [r[part]["micro_f1"] for r in entry["runs"]]
                if all("macro_f1_gold_labels" in r[part] for r in entry["runs"]):
                    entry[f"macro_f1_{part}_gold_labels"] = [
                        r[part]["macro_f1_gold_labels"] for r in entry["runs"]
                    ]
            results["setup"] = {
                "task": task,
                "train": len(data["train"]),
                "dev": len(data["dev"]),
                "test": len(data["test"]),
                "test_covered": len(test_cov),
                "epochs": epochs,
                **(
                    {"min_type_examples": min_type_examples, "types": len(labels)} if task == "typing" else {}
                ),
                "text_model": model.cfg.text_model.rsplit("/", 2)[-2],
                "kg": json.loads((cache / "kg-info.json").read_text())
                | {"transe": "see kg step", "cache": cache.name},
                "cpu_threads": torch.get_num_threads(),
                "device": history.device,
                "knowledge_dropout": knowledge_dropout,
                "knowledge_expert": knowledge_expert,
                "descriptions": descriptions,
                "precision": "bf16 autocast (training steps)" if bf16 else "fp32",
                "pretrained_fusion": "dEA (fewrel.py pretrain)" if pretrained else "",
            }
            write_json(path, results)
            print(
                f"{mode} seed {seed}: " + json.dumps(scores) + f" in {time.time() - start:.0f} s", flush=True
            )
    table(results)


def table(results: dict[str, Any]) -> None:
    key = "macro_f1" if results.get("setup", {}).get("task") == "relation" else "micro_f1"
    print(f"| mode | {key} all | {key} covered | {key} uncovered | seeds |")
    print("|---|---|---|---|---|")
    for mode in ("none", "ernie", "kbert"):
        if mode not in results:
            continue
        cells = []
        for part in ("all", "covered", "uncovered"):
            xs = [100 * x for x in results[mode][f"{key}_{part}"]]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.2f} ± {sd:.2f}")
        print(f"| {mode} | " + " | ".join(cells) + f" | {len(xs)} |")


def plot(results: dict[str, Any], path: Path) -> None:
    """Bars: mean score per mode on all / covered / uncovered test instances, seed std as whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "macro_f1" if results.get("setup", {}).get("task") == "relation" else "micro_f1"
    modes = [m for m in ("none", "ernie", "kbert") if m in results]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for j, part in enumerate(("all", "covered", "uncovered")):
        means = [100 * statistics.mean(results[m][f"{key}_{part}"]) for m in modes]
        sds = [100 * statistics.pstdev(results[m][f"{key}_{part}"]) for m in modes]
        xs = [i + (j - 1) * 0.27 for i in range(len(modes))]
        ax.bar(xs, means, 0.27, yerr=sds, capsize=3, label=part)
    ax.set_xticks(range(len(modes)), modes)
    lows = [100 * min(results[m][f"{key}_{p}"]) for m in modes for p in ("all", "covered", "uncovered")]
    ax.set_ylim(max(0, min(lows) - 5), 100)
    ax.set_ylabel(f"test {key.replace('_', '-')} (%)")
    ax.set_title(f"FewRel {results.get('setup', {}).get('task', '')}: text-only vs knowledge")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def test_scores(gold: Any, pred: Any, covered: list[bool]) -> dict[str, Any]:
    """F1 on all test instances, the KG-covered and the uncovered ones (gold, pred: bool[examples,
    labels]). Each part's macro-F1 averages over the labels in its gold or predictions (sklearn's
    convention); `macro_f1_gold_labels` over the labels in its gold only, so that one prediction of
    a label the part lacks (two relations have no covered instance) does not add a zero class; and
    per-label F1 for the diagnosis."""
    import torch

    from encoders.finetune import f1_scores, per_label_f1

    mask = torch.tensor(covered)
    out: dict[str, Any] = {}
    for part, rows in (("all", torch.ones_like(mask)), ("covered", mask), ("uncovered", ~mask)):
        g, p = gold[rows], pred[rows]
        per_label, present = per_label_f1(g, p), g.any(0)
        out[part] = f1_scores(g, p) | {
            "macro_f1_gold_labels": round(float(per_label[present].mean()), 4),
            "per_label_f1": [
                round(float(x), 4) if bool(s) else None
                for x, s in zip(per_label, present | p.any(0), strict=True)
            ],
        }
    return out


def typing_examples(min_examples: int = 100) -> dict[str, list[Example]]:
    """Each FewRel head and tail as a mention; labels: its CoDEx types with >= `min_examples`
    examples in train (mentions left without a label are dropped)."""
    types = json.loads((SHARED / "kg/codex/entity2types.json").read_text())
    names = json.loads((SHARED / "kg/codex/types.json").read_text())
    out: dict[str, list[Example]] = {}
    for part, examples in split_examples().items():
        out[part] = []
        for ex in examples:
            for i, span in enumerate(ex.focus):
                got = types.get(span.qid)
                if got:
                    labels = [names.get(t, {}).get("label", t) for t in got]
                    out[part].append(Example(ex.text, labels, (span,), [span], f"{ex.id}:{i}"))
    counts = Counter(label for ex in out["train"] for label in ex.labels)
    keep = {label for label, n in counts.items() if n >= min_examples}
    for part in out:
        out[part] = [
            Example(ex.text, [x for x in ex.labels if x in keep], ex.focus, ex.entities, ex.id)
            for ex in out[part]
            if any(x in keep for x in ex.labels)
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["split", "kg", "pretrain", "run", "typing", "table"])
    ap.add_argument("--modes", nargs="+", default=["none", "ernie", "kbert"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--knowledge-dropout",
        type=float,
        default=0.0,
        help="ERNIE: share of training examples without entities",
    )
    ap.add_argument(
        "--descriptions",
        action="store_true",
        help="ERNIE: entity vectors also hold each entity's description, embedded by MiniLM",
    )
    ap.add_argument(
        "--min-type-examples",
        type=int,
        default=100,
        help="typing: keep the CoDEx types with at least this many training mentions",
    )
    ap.add_argument(
        "--untyped-kg",
        action="store_true",
        help="kg, typing: the KG without the triples that state a FewRel entity's CoDEx type "
        f"(built into {CACHE_UNTYPED.relative_to(ROOT)})",
    )
    ap.add_argument(
        "--knowledge-expert",
        type=float,
        default=0.0,
        help="ERNIE: weight of the loss of a classifier over the KG features alone (0: none)",
    )
    ap.add_argument(
        "--pretrained",
        action="store_true",
        help="run, typing: ERNIE starts from the fusion of the pretrain step",
    )
    ap.add_argument("--pretrain-epochs", type=int, default=1, help="pretrain: passes over the paragraphs")
    ap.add_argument("--bf16", action="store_true", help="run, typing: training steps under bf16 autocast")
    ap.add_argument("--device", default="auto", help="run, typing: auto (a GPU when present), cpu or cuda")
    ap.add_argument(
        "--out",
        help="results file name in benchmarks/results (default: fewrel.json / fewrel_typing.json; "
        "for table: the one file to show)",
    )
    args = ap.parse_args()
    if args.pretrained and args.descriptions:
        ap.error("--pretrained fusions are trained on TransE vectors alone; leave out --descriptions")
    cache = CACHE_UNTYPED if args.untyped_kg else CACHE
    if args.step == "split":
        make_split()
    elif args.step == "kg":
        build_kg(cache, drop_types=args.untyped_kg)
    elif args.step == "pretrain":
        pretrain_fusion(cache, args.pretrain_epochs, device=args.device)
    elif args.step == "run":
        run(
            "relation",
            args.modes,
            args.seeds,
            args.epochs,
            args.out or "fewrel.json",
            args.knowledge_dropout,
            args.descriptions,
            device=args.device,
            knowledge_expert=args.knowledge_expert,
            bf16=args.bf16,
            pretrained=cache / "dea" if args.pretrained else None,
        )
    elif args.step == "typing":
        run(
            "typing",
            args.modes,
            args.seeds,
            args.epochs,
            args.out or "fewrel_typing.json",
            args.knowledge_dropout,
            args.descriptions,
            args.min_type_examples,
            cache,
            args.device,
            args.knowledge_expert,
            args.bf16,
            cache / "dea" if args.pretrained else None,
        )
    else:
        main_sets = [
            "fewrel.json",
            "fewrel_typing.json",
            "fewrel_typing_fine.json",
            "fewrel_typing_fine_untyped.json",
        ]
        for name in [args.out] if args.out else main_sets:
            if (RESULTS / name).exists():
                results = json.loads((RESULTS / name).read_text())
                table(results)
                plot(results, (RESULTS / name).with_suffix(".png"))


if __name__ == "__main__":
    main()
