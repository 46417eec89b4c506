"""Entity-linking benchmark on the ELEVANT sets, scored restricted to the KG's QIDs.

  python benchmarks/el.py train     # fit the scorer on the TRAIN_SETS, write data/linker/scorer.json
                                    # and their 5-fold cross-validated scores (results/el_cv.json)
  python benchmarks/el.py eval      # every set: P/R/F1 next to the prior p(e|m) baseline's,
                                    # candidate recall@30, ECE, throughput

Restricted scoring (as ../shared/data/README.md): gold labels whose QID is in the KG, predictions
whose QID is in the KG, strict (doc, start, end, QID) match, inside each doc's evaluation span.
Trains/tunes on: aida-conll-dev, oke-2015-train, oke-2016-train. Every other set only evaluates.
Writes benchmarks/results/el.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from encoders.text import text_embedder
from kg.link.aliases import Candidate, normalize
from kg.link.disambiguate import Scorer, featurize
from kg.link.linker import Linker, bundled_scorer_path
from kg.link.mentions import given_mentions

ROOT = Path(__file__).resolve().parents[1]
EL = ROOT.parent / "shared" / "data" / "el"
TRAIN_SETS = ("aida-conll-dev", "oke-2015-train", "oke-2016-train")


def load(name: str) -> list[dict]:
    with open(EL / f"{name}.benchmark.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def gold_of(doc: dict, qids: set[str]) -> set[tuple[int, int, str]]:
    return {
        (lab["span"][0], lab["span"][1], lab["entity_id"])
        for lab in doc["labels"]
        if lab.get("entity_id") in qids
    }


def examples(
    linker: Linker, docs: list[dict], qids: set[str]
) -> list[tuple[list[list[Candidate]], list[np.ndarray], list[int], list[str]]]:
    """Per document, per detected mention: its candidates, their feature rows, the gold row
    (-1: NIL or not among the candidates) and its normalised text."""
    out = []
    texts = [d["text"] for d in docs]
    for doc, sdoc, vec in zip(
        docs, linker.nlp.pipe(texts, batch_size=32), linker.doc_vectors(texts), strict=True
    ):
        gold = {(s, e): q for s, e, q in gold_of(doc, qids)}
        mentions = linker.finder.find(sdoc)
        cands = linker.candidates.generate(mentions)
        rows = []
        for m, cs in zip(mentions, cands, strict=True):
            target = gold.get((m.start, m.end))
            rows.append(next((i for i, c in enumerate(cs) if linker.kg.qids[c.entity] == target), -1))
        names = [normalize(m.text) for m in mentions]
        out.append((cands, featurize(linker.context, mentions, cands, vec), rows, names))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])|\n+")


def sentences(doc: dict) -> list[dict]:
    """The document's sentences as documents of their own, with the gold labels inside each:
    training on them too teaches the scorer short texts (a query, one sentence to the API), where
    a mention has few others beside it. The split is a plain punctuation rule."""
    text = doc["text"]
    a, b = doc.get("evaluation_span") or [0, len(text)]
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
    out = []
    for lo, hi in zip(starts, [*starts[1:], len(text)], strict=True):
        if not text[lo:hi].strip() or max(a, lo) >= min(b, hi):
            continue
        labels = [
            {**lab, "span": [lab["span"][0] - lo, lab["span"][1] - lo]}
            for lab in doc["labels"]
            if lo <= lab["span"][0] and lab["span"][1] <= hi
        ]
        span = [max(a, lo) - lo, min(b, hi) - lo]
        out.append({"text": text[lo:hi], "labels": labels, "evaluation_span": span})
    return out


def lowercased(doc: dict) -> dict:
    """The document without capitals, offsets kept (a character whose lower case is longer stays
    as it is): training on such copies teaches the scorer text without case (a query, a chat
    line), where NER misses names and alias matches stand in."""
    return {**doc, "text": "".join(c.lower() if len(c.lower()) == 1 else c for c in doc["text"])}


def train(args: argparse.Namespace) -> None:
    """Fit the scorer on every training set; the NIL threshold and the reported training-set
    figures come from 5-fold cross-validation by document (each doc scored by a model that did
    not see it), written to benchmarks/results/el_cv.json."""
    linker = Linker.load(scorer=Scorer(), embed=text_embedder())
    qids = {q for q in linker.kg.qids if q}
    sets = [(name, d) for name in TRAIN_SETS for d in load(name)]
    docs = [d for _, d in sets]
    documents = examples(linker, docs, qids)
    per_doc = [sentences(d) for d in docs]
    split = [s for ss in per_doc for s in ss]
    parent = [i for i, ss in enumerate(per_doc) for _ in ss]
    short = examples(linker, split, qids) if args.sentences else []
    short_parent = list(parent) if args.sentences else []
    # the caseless scorer's training data: lower-cased copies of the documents and their sentences
    lower = [lowercased(d) for d in docs] if args.caseless else []
    lower_split = [lowercased(x) for x in split] if args.caseless else []
    lower_examples = examples(linker, lower + lower_split, qids)
    lower_parent = list(range(len(lower))) + (parent if args.caseless else [])  # a copy keeps its fold
    fold = np.random.default_rng(0).permutation(len(docs)) % args.folds
    held_out: list[set[tuple[int, int, str, float]]] = [set()] * len(docs)
    held_short: list[set[tuple[int, int, str, float]]] = [set()] * len(split)  # each sentence alone
    held_lower: list[set[tuple[int, int, str, float]]] = [set()] * len(lower)
    for k in range(args.folds):
        keep = [i for i, f in enumerate(fold) if f != k] + [i for i in short_parent if fold[i] != k]
        linker.scorer = Scorer().fit_documents(
            linker.context,
            [x for x, f in zip(documents, fold, strict=True) if f != k]
            + [x for x, i in zip(short, short_parent, strict=True) if fold[i] != k],
            groups=keep,
        )
        if lower:
            linker.scorer.caseless = Scorer().fit_documents(
                linker.context,
                [x for x, i in zip(lower_examples, lower_parent, strict=True) if fold[i] != k],
                groups=[i for i in lower_parent if fold[i] != k],
            )
        held = [i for i, f in enumerate(fold) if f == k]
        for i, pred in zip(held, predictions(linker, [docs[i] for i in held], qids), strict=True):
            held_out[i] = pred
        held = [j for j, i in enumerate(parent) if fold[i] == k]
        for j, pred in zip(held, predictions(linker, [split[j] for j in held], qids), strict=True):
            held_short[j] = pred
        held = [i for i, f in enumerate(fold) if f == k and lower and sets[i][0] == "aida-conll-dev"]
        for i, pred in zip(held, predictions(linker, [lower[i] for i in held], qids), strict=True):
            held_lower[i] = pred
    curve = [(float(round(t, 2)), f1_at(docs, qids, held_out, t)["f1"]) for t in np.arange(0.2, 0.85, 0.05)]
    print("cross-validated F1 by threshold: " + ", ".join(f"{t:.2f} {f:.4f}" for t, f in curve))
    # the curve is flat near its top, where a single point's lead is noise: choose the threshold
    # whose neighbourhood (it and the grid points beside it) scores best
    smooth = [float(np.mean([f for _, f in curve[max(i - 1, 0) : i + 2]])) for i in range(len(curve))]
    best = curve[int(np.argmax(smooth))]
    per_set = {
        name: f1_at(
            [d for n, d in sets if n == name],
            qids,
            [p for (n, _), p in zip(sets, held_out, strict=True) if n == name],
            best[0],
        )
        for name in TRAIN_SETS
    }
    linker.scorer = Scorer(threshold=best[0]).fit_documents(
        linker.context, documents + short, groups=list(range(len(docs))) + short_parent
    )
    if lower:
        linker.scorer.caseless = Scorer(threshold=best[0]).fit_documents(
            linker.context, lower_examples, groups=lower_parent
        )
    out = bundled_scorer_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    linker.scorer.save(out)
    gold = [g for cands, _, golds, _ in documents for cs, g in zip(cands, golds, strict=True) if cs]
    aida = [j for j, i in enumerate(parent) if sets[i][0] == "aida-conll-dev"]
    per_set["aida-conll-dev, sentence by sentence"] = f1_at(
        [split[j] for j in aida], qids, [held_short[j] for j in aida], best[0]
    )
    if lower:
        aida_docs = [i for i, (n, _) in enumerate(sets) if n == "aida-conll-dev"]
        per_set["aida-conll-dev, lower-cased"] = f1_at(
            [lower[i] for i in aida_docs], qids, [held_lower[i] for i in aida_docs], best[0]
        )
    result = {
        "folds": args.folds,
        "threshold": best[0],
        "f1_all_training_docs": best[1],
        "trained_on_sentences_too": args.sentences,
        "trained_on_lowercased_copies_too": args.caseless,
        "sets": per_set,
    }
    (ROOT / "benchmarks" / "results" / "el_cv.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"trained on {', '.join(TRAIN_SETS)}: {len(docs)} docs, {len(gold):,} mentions ({sum(g >= 0 for g in gold):,} with gold among candidates) -> {out}"
    )
    print(f"{args.folds}-fold cross-validated, threshold {best[0]}:")
    for name, r in per_set.items():
        print(f"  {name:18} P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f}")


def predictions(linker: Linker, docs: list[dict], qids: set[str]) -> list[set[tuple[int, int, str, float]]]:
    """Every linked mention with its score (no NIL cut), inside each doc's evaluation span."""
    saved, linker.min_score = linker.min_score, 0.0
    out = []
    for doc, linked in zip(docs, linker.link_many([d["text"] for d in docs]), strict=True):
        lo, hi = doc.get("evaluation_span") or [0, len(doc["text"])]
        out.append(
            {
                (x.start, x.end, x.qid, x.score)
                for x in linked
                if x.qid in qids and lo <= x.start and x.end <= hi
            }
        )
    linker.min_score = saved
    return out


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


def f1_at(
    docs: list[dict], qids: set[str], preds: list[set[tuple[int, int, str, float]]], threshold: float
) -> dict[str, float]:
    tp = n_pred = n_gold = 0
    for doc, pred in zip(docs, preds, strict=True):
        gold = gold_of(doc, qids)
        kept = {(s, e, q) for s, e, q, score in pred if score >= threshold}
        tp, n_pred, n_gold = tp + len(gold & kept), n_pred + len(kept), n_gold + len(gold)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "gold": n_gold,
        "predicted": n_pred,
        "tp": tp,
    }


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
        linker.forget()
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
    linker = Linker.load(embed=text_embedder())
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
        preds = predictions(linker, docs, qids)
        results[name] = {
            "role": "train/tune" if name.split(",")[0] in TRAIN_SETS else "evaluation only",
            **f1_at(docs, qids, preds, linker.min_score),
            **candidate_recall(linker, docs, qids),
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
        f"{'set':28} {'role':16} {'P':>6} {'R':>6} {'F1':>6} {'prior F1':>8} {'cand R@30':>9} {'ECE':>6} {'gold':>6}"
    )
    for name, r in results.items():
        print(
            f"{name:28} {r['role']:16} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
            f"{r['prior_baseline']['f1']:8.3f} {r['recall@30']:9.3f} {r['ece']:6.3f} {r['gold']:6d}"
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
    t.add_argument("--folds", type=int, default=5)
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
    e = sub.add_parser("eval")
    e.add_argument("--sets", nargs="*")
    args = ap.parse_args()
    train(args) if args.cmd == "train" else evaluate(args)


if __name__ == "__main__":
    main()
