"""Entity-linking benchmark on the ELEVANT sets, scored restricted to the KG's QIDs.

  python benchmarks/el.py train     # `kgpipe link train` on every visible set into data/linker (the
                                    # shipped linker); leave-one-corpus-out scores in results/el_loco.json
  python benchmarks/el.py aida-cv   # AIDA dev 5-fold cross-validated, every other set always in training
  python benchmarks/el.py eval      # every set: P/R/F1 next to the prior p(e|m) baseline's,
                                    # candidate recall@30, ECE, throughput

Restricted scoring (as ../shared/data/README.md): gold labels whose QID is in the KG, predictions
whose QID is in the KG, strict (doc, start, end, QID) match, inside each doc's evaluation span.
The shipped linker trains on every visible set (TRAIN_SETS). The held-out figure is
leave-one-corpus-out: each set linked by a scorer trained on all the others; the NIL threshold is
chosen on those held-out predictions, for the mean F1 over the sets. `eval` scores the shipped linker (in-sample on every
set, reported as such). Writes benchmarks/results/el.json, el_loco.json, el_aida_cv.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from kg.link.linker import Linker
from kg.link.mentions import given_mentions
from kg.link.train import cut, f1_at, featurized, gold_of, lowercased, rescored, stages, train_linker
from kg.manifest import write_manifest
from pipeline import load as load_bundle

ROOT = Path(__file__).resolve().parents[1]
EL = ROOT.parent / "shared" / "data" / "el"
TRAIN_SETS = (
    "aida-conll-dev",
    "derczynski",
    "oke-2015-eval",
    "oke-2015-train",
    "oke-2016-eval",
    "oke-2016-train",
    "reuters-128",
    "rss-500",
    "spotlight",
)


# REL's F1 on each non-AIDA visible set, scored the same way (restricted to the KG's QIDs, from
# ELEVANT's stored predictions): the reference of issue #24
REL_F1 = {
    "derczynski": 0.611,
    "oke-2015-train": 0.479,
    "oke-2015-eval": 0.657,
    "oke-2016-train": 0.588,
    "oke-2016-eval": 0.629,
    "reuters-128": 0.565,
    "rss-500": 0.320,
    "spotlight": 0.432,
}


def load(name: str) -> list[dict]:
    with open(EL / f"{name}.benchmark.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train(args: argparse.Namespace) -> None:
    """`kgpipe link train` on every training set, written over the shipped linker (data/linker),
    whose manifest entry is refreshed; its leave-one-corpus-out figures go to results/el_loco.json."""
    from kg.settings import settings

    linker = load_bundle(eager=False).linker_to_train()
    report = train_linker(
        linker,
        {name: load(name) for name in TRAIN_SETS},
        vote=args.vote,
        with_sentences=args.sentences,
        caseless=args.caseless,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    data = settings().data
    linker.save(data / "linker")
    manifest = json.loads((data / "manifest.json").read_text())
    write_manifest(
        data,
        {name: entry["path"] for name, entry in manifest["parts"].items()},
        {name: entry.get("source", "") for name, entry in manifest["parts"].items()},
        {k: manifest[k] for k in ("text_model", "spacy_model") if k in manifest},
    )
    print(
        "held-out mean F1 over the sets by name threshold: "
        + ", ".join(f"{t:.2f} {f:.4f}" for t, f in report.curve)
    )
    result = {
        "held_out": "corpus: each set scored by a scorer trained on all the others",
        "trained_on": list(TRAIN_SETS),
        "threshold_chosen_on": "the mean over the sets of their leave-one-corpus-out F1",
        "threshold": report.threshold,
        "concept_threshold": report.concept_threshold,
        "nationality_threshold": report.nationality_threshold,
        "nationality_curve": report.nationality_curve,
        "mean_f1_of_the_sets": report.f1_all,
        "curves": report.set_curves,
        "trained_on_sentences_too": args.sentences,
        "trained_on_lowercased_copies_too": args.caseless,
        "each_set_one_vote_per_kind_of_mention": args.vote,
        "sets": report.sets,
    }
    (ROOT / "benchmarks" / "results" / "el_loco.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"trained on {', '.join(TRAIN_SETS)}: {report.documents} docs, {report.mentions:,} mentions "
        f"({report.mentions_with_gold_candidate:,} with gold among candidates) -> {data / 'linker'}"
    )
    print(
        f"leave-one-corpus-out, thresholds {report.threshold} (names), {report.concept_threshold} (concepts), "
        f"{report.nationality_threshold} (nationality words):"
    )
    print(f"  {'set':40} {'P':>6} {'R':>6} {'F1':>6} {'ment R':>6} {'REL F1':>6}")
    for name, r in report.sets.items():
        ref = f"{REL_F1[name]:6.3f}" if name in REL_F1 else ""
        mr = f"{r['mention_recall']:6.3f}" if "mention_recall" in r else " " * 6
        print(f"  {name:40} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {mr} {ref}")
    unseen = [report.sets[n]["f1"] for n in REL_F1 if n in report.sets]
    print(
        f"mean F1 of the eight non-AIDA sets: {np.mean(unseen):.3f} (REL {np.mean(list(REL_F1.values())):.3f}, ReFinED 0.561)"
    )


def aida_cv(args: argparse.Namespace) -> None:
    """AIDA dev 5-fold cross-validated by document with every other visible set always in
    training (the in-domain figure next to the held-out one): results/el_aida_cv.json."""

    linker = load_bundle(eager=False).linker_to_train()
    sets = {name: load(name) for name in TRAIN_SETS}
    aida = len(sets["aida-conll-dev"])
    folds = np.random.default_rng(0).permutation(aida) % args.folds
    fold_of = [
        int(folds[i]) if name == "aida-conll-dev" else -1
        for name, docs in sets.items()
        for i in range(len(docs))
    ]
    report = train_linker(
        linker,
        sets,
        fold_of=fold_of,
        vote=args.vote,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    result = {
        "held_out": f"aida-conll-dev, {args.folds} folds by document; every other set always in training",
        "thresholds_chosen_on": "aida-conll-dev's own cross-validated predictions",
        "each_set_one_vote_per_kind_of_mention": args.vote,
        "threshold": report.threshold,
        "concept_threshold": report.concept_threshold,
        "nationality_threshold": report.nationality_threshold,
        "sets": report.sets,
    }
    (ROOT / "benchmarks" / "results" / "el_aida_cv.json").write_text(json.dumps(result, indent=2) + "\n")
    r = report.sets["aida-conll-dev"]
    print(
        f"AIDA dev cross-validated: P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} (threshold {report.threshold})"
    )


def prior_predictions(
    linker: Linker, docs: list[dict], qids: set[str]
) -> list[set[tuple[int, int, str, float]]]:
    """The reference every entity-linking paper reports first, the prior p(e|m): the same mentions
    and candidates as the linker, each mention linked to its candidate of highest prior (the alias
    table's share for that name), with no NIL decision."""
    out = []
    for doc, sdoc in zip(docs, linker.nlp.pipe([d["text"] for d in docs], batch_size=32), strict=True):
        mentions = linker.finder.find(sdoc)
        lo, hi = doc.get("evaluation_span") or [0, len(doc["text"])]
        linked = {
            (m.start, m.end, linker.kg.qids[max(cs, key=lambda c: c.prior).entity], 1.0)
            for m, all_cs in zip(mentions, linker.candidates.generate(mentions), strict=True)
            for cs in [[c for c in all_cs if c.source == "alias"]]  # the alias table's own
            if cs and lo <= m.start and m.end <= hi
        }
        out.append({x for x in linked if x[2] in qids})
    return out


def candidate_recall(linker: Linker, docs: list[dict], qids: set[str]) -> dict[str, float]:
    """Recall@30 of candidates on gold KG mentions (their gold spans given as mentions)."""
    hit = total = 0
    for doc in docs:
        gold = sorted(gold_of(doc, qids))
        cands = linker.candidates.generate(given_mentions(doc["text"], [(s, e) for s, e, _ in gold]))
        total += len(gold)
        hit += sum(
            q in {linker.kg.qids[c.entity] for c in cs} for (_, _, q), cs in zip(gold, cands, strict=True)
        )
    return {"recall@30": hit / total if total else 0.0, "mentions": total}


def top_given_span(linker: Linker, docs: list[dict], qids: set[str]) -> float:
    """Share of the gold KG mentions whose top candidate is the gold entity when the gold spans
    are given as the mentions (no NIL cut): disambiguation alone."""
    golds = [sorted(gold_of(d, qids)) for d in docs]
    linked = linker.link_many(
        [d["text"] for d in docs], spans=[[(s, e) for s, e, _ in g] for g in golds], min_score=0.0
    )
    right = sum(
        any((x.start, x.end, x.qid) == (s, e, q) for x in found)
        for g, found in zip(golds, linked, strict=True)
        for s, e, q in g
    )
    total = sum(map(len, golds))
    return right / total if total else 0.0


def calibration(docs: list[dict], qids: set[str], preds: list[set[tuple[int, int, str, float]]]) -> float:
    """ECE of the confidence of every linked mention (before the NIL cut): right = in the gold set."""
    conf, right = [], []
    for doc, pred in zip(docs, preds, strict=True):
        gold = gold_of(doc, qids)
        for s, e, q, score in pred:
            conf.append(score)
            right.append(float((s, e, q) in gold))
    return ece(np.array(conf), np.array(right))


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top candidate's score on gold mentions."""
    if not len(conf):
        return 0.0
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(conf[idx == b].mean() - correct[idx == b].mean()) * (idx == b).mean()
            for b in range(bins)
            if (idx == b).any()
        )
    )


def throughput(linker: Linker, docs: list[dict], repeats: int = 3) -> dict[str, float]:
    """Seconds for spaCy NER alone and for the whole linker (cold: no name searched before) on
    the same documents, each the median of `repeats` runs taken in turns, so that a busy moment of
    the machine does not decide the ratio."""
    texts = [d["text"] for d in docs]
    chars = sum(map(len, texts))
    ner_runs, full_runs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        list(linker.nlp.pipe(texts, batch_size=32))
        ner_runs.append(time.perf_counter() - start)
        linker.clear()
        start = time.perf_counter()
        linker.link_many(texts)
        full_runs.append(time.perf_counter() - start)
    ner, full = float(np.median(ner_runs)), float(np.median(full_runs))
    ratios = [f / n for f, n in zip(full_runs, ner_runs, strict=True)]
    return {
        "docs_per_s": len(texts) / full,
        "chars_per_s": chars / full,
        "spacy_ner_docs_per_s": len(texts) / ner,
        "spacy_ner_chars_per_s": chars / ner,
        "cost_vs_ner": float(np.median(ratios)),  # each run against the NER run just before it
        "cost_vs_ner_runs": [round(r, 3) for r in ratios],
        "repeats": repeats,
    }


def evaluate(args: argparse.Namespace) -> None:
    linker = load_bundle().linker
    qids = {q for q in linker.kg.qids if q}
    sets = args.sets or sorted(p.name.removesuffix(".benchmark.jsonl") for p in EL.glob("*.benchmark.jsonl"))
    results = {}
    # AIDA dev once more without capitals (a training set, so in-sample too): text without case
    for name in [*sets, *(["aida-conll-dev, lower-cased"] if "aida-conll-dev" in sets else [])]:
        docs = (
            load(name)
            if not name.endswith("lower-cased")
            else [lowercased(d) for d in load("aida-conll-dev")]
        )
        found = featurized(linker, docs, qids)
        preds = rescored(linker, found, qids)
        kept = [
            cut(f, p, linker.min_score, linker.concept_min_score, linker.nationality_min_score)
            for f, p in zip(found, preds, strict=True)
        ]
        results[name] = {
            "role": "train/tune" if name.split(",")[0] in TRAIN_SETS else "evaluation only",
            **f1_at(docs, qids, kept, 0.0),
            # where the recall goes: mentions found, gold among their candidates, top candidate
            # right, the NIL decision; and candidates and the top one given the gold spans
            **stages(
                found, qids, preds, linker.min_score, linker.concept_min_score, linker.nationality_min_score
            ),
            **candidate_recall(linker, docs, qids),
            "top_right_given_gold_span": top_given_span(linker, docs, qids),
            "ece": calibration(docs, qids, preds),
            "prior_baseline": f1_at(docs, qids, prior_predictions(linker, docs, qids), 0.0),
        }
        print(f"{name:18} F1 {results[name]['f1']:.3f}", file=sys.stderr)
    speed = throughput(linker, load("aida-conll-dev"))
    out = ROOT / "benchmarks" / "results" / "el.json"
    out.write_text(
        json.dumps({"sets": results, "throughput_aida_dev": speed, "kg": linker.kg.name}, indent=2) + "\n"
    )
    print(
        f"{'set':28} {'role':16} {'P':>6} {'R':>6} {'F1':>6} {'prior F1':>8} {'ment R':>6} {'cand R@30':>9} "
        f"{'top|span':>8} {'NIL P':>6} {'NIL R':>6} {'ECE':>6} {'gold':>6}"
    )
    for name, r in results.items():
        print(
            f"{name:28} {r['role']:16} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
            f"{r['prior_baseline']['f1']:8.3f} {r['mention_recall']:6.3f} {r['recall@30']:9.3f} "
            f"{r['top_right_given_gold_span']:8.3f} {r['nil_precision']:6.3f} {r['nil_recall']:6.3f} "
            f"{r['ece']:6.3f} {r['gold']:6d}"
        )
    print(
        f"throughput on aida-conll-dev: {speed['docs_per_s']:.1f} docs/s, {speed['chars_per_s']:,.0f} chars/s; "
        f"spaCy NER alone {speed['spacy_ner_docs_per_s']:.1f} docs/s -> {speed['cost_vs_ner']:.2f}x its cost "
        f"(median of {speed['repeats']}; runs {', '.join(f'{x:.2f}x' for x in speed['cost_vs_ner_runs'])})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument(
        "--no-sentences",
        dest="sentences",
        action="store_false",
        help="train on whole documents only, not also on their sentences one by one",
    )
    t.add_argument(
        "--no-caseless",
        dest="caseless",
        action="store_false",
        help="do not train the scorer for text without capitals (on lower-cased copies of the documents)",
    )
    t.add_argument(
        "--no-vote",
        dest="vote",
        action="store_false",
        help="every mention counts once in the NIL decision (default: each set one vote per kind of mention)",
    )
    e = sub.add_parser("eval")
    e.add_argument("--sets", nargs="*")
    a = sub.add_parser("aida-cv")
    a.add_argument("--folds", type=int, default=5)
    a.add_argument("--no-vote", dest="vote", action="store_false", help="every mention counts once")
    args = ap.parse_args()
    {"train": train, "eval": evaluate, "aida-cv": aida_cv}[args.cmd](args)


if __name__ == "__main__":
    main()
