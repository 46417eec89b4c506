"""Training the linker's scorers on labelled documents (ELEVANT JSONL): `kgpipe link train`.

The scorer learns from whole documents, from each of their sentences alone (short texts: a
query, one sentence sent to the API) and, for text without capitals, from lower-cased copies.
The NIL threshold is chosen on cross-validated predictions (each document scored by a model that
did not see it), never on the documents a model trained on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kg.errors import KGFormatError
from kg.io import read_json_lines
from kg.link.aliases import Candidate, normalize
from kg.link.disambiguate import Scorer
from kg.link.features import featurize

if TYPE_CHECKING:
    from kg.link.linker import Linker

Prediction = set[tuple[int, int, str, float]]  # (start, end, QID, score) of each linked mention
Example = tuple[list[list[Candidate]], list[np.ndarray], list[int], list[str]]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])|\n+")


def read_documents(path: str | Path) -> list[dict[str, Any]]:
    """Labelled documents of an ELEVANT benchmark file: `text`, `labels` (each with `span` and
    `entity_id`), optional `evaluation_span`; anything else fails with file:line."""
    path = Path(path)
    if not path.is_file():
        raise KGFormatError(path, None, "no such file", "Give an ELEVANT .benchmark.jsonl file")
    fix = 'Write {"text": "...", "labels": [{"span": [start, end], "entity_id": "Q90"}, ...]} per line'
    docs = []
    for line, obj in read_json_lines(path):
        text, labels = obj.get("text"), obj.get("labels")
        if not isinstance(text, str) or not isinstance(labels, list):
            raise KGFormatError(path, line, "no string 'text' and list 'labels'", fix)
        for label in labels:
            span = label.get("span") if isinstance(label, dict) else None
            if not (
                isinstance(span, list)
                and len(span) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
                and 0 <= span[0] < span[1] <= len(text)
            ):
                raise KGFormatError(path, line, f"label {str(label)[:80]} has no span inside the text", fix)
            if not isinstance(label.get("entity_id", ""), str | None):
                raise KGFormatError(path, line, f"label {str(label)[:80]}: entity_id is not a string", fix)
        docs.append(obj)
    if not docs:
        raise KGFormatError(path, None, "no documents", fix)
    return docs


def gold_of(doc: dict[str, Any], qids: set[str]) -> set[tuple[int, int, str]]:
    return {
        (lab["span"][0], lab["span"][1], lab["entity_id"])
        for lab in doc["labels"]
        if lab.get("entity_id") in qids
    }


def sentences(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's sentences as documents of their own, with the gold labels inside each:
    training on them too teaches the scorer short texts, where a mention has few others beside
    it. The split is a plain punctuation rule."""
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


def lowercased(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without capitals, offsets kept (a character whose lower case is longer stays
    as it is): training on such copies teaches the scorer text without case."""
    return {**doc, "text": "".join(c.lower() if len(c.lower()) == 1 else c for c in doc["text"])}


def examples(linker: Linker, docs: list[dict[str, Any]], qids: set[str]) -> list[Example]:
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


def predictions(linker: Linker, docs: list[dict[str, Any]], qids: set[str]) -> list[Prediction]:
    """Every linked mention with its score (no NIL cut), inside each doc's evaluation span."""
    out = []
    for doc, linked in zip(docs, linker.link_many([d["text"] for d in docs], min_score=0.0), strict=True):
        lo, hi = doc.get("evaluation_span") or [0, len(doc["text"])]
        out.append(
            {
                (x.start, x.end, x.qid, x.score)
                for x in linked
                if x.qid in qids and lo <= x.start and x.end <= hi
            }
        )
    return out


def f1_at(
    docs: Sequence[dict[str, Any]], qids: set[str], preds: Sequence[Prediction], threshold: float
) -> dict[str, float]:
    """Strict (start, end, QID) precision, recall and F1 of the predictions scored ≥ `threshold`."""
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


@dataclass
class TrainReport:
    """What training chose and how the cross-validated predictions scored."""

    threshold: float
    folds: int
    documents: int
    mentions: int
    mentions_with_gold_candidate: int
    f1_all: float  # pooled over every training document, cross-validated
    sets: dict[str, dict[str, float]] = field(default_factory=dict)  # per set (and per variant)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (threshold, CV F1)


def train_linker(
    linker: Linker,
    sets: dict[str, list[dict[str, Any]]],
    folds: int = 5,
    with_sentences: bool = True,
    caseless: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> TrainReport:
    """Fit `linker.scorer` on every document of `sets` (set name → ELEVANT documents).

    The threshold and the report come from `folds`-fold cross-validation by document; the final
    scorer is then trained on everything. `progress(message)` hears of each step.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, not {folds}")
    qids = {q for q in linker.kg.qids if q}
    named = [(name, d) for name, docs in sets.items() for d in docs]
    docs = [d for _, d in named]
    if len(docs) < folds:
        raise KGFormatError(
            "--data", None, f"{len(docs)} documents, fewer than the {folds} folds", "Give more documents"
        )
    progress(f"features of {len(docs):,} documents")
    documents = examples(linker, docs, qids)
    per_doc = [sentences(d) for d in docs]
    split = [s for ss in per_doc for s in ss]
    parent = [i for i, ss in enumerate(per_doc) for _ in ss]
    progress(f"features of {len(split):,} sentences")
    short = examples(linker, split, qids) if with_sentences else []
    short_parent = list(parent) if with_sentences else []
    lower = [lowercased(d) for d in docs] if caseless else []
    lower_split = [lowercased(x) for x in split] if caseless else []
    if caseless:
        progress("features of the lower-cased copies")
    lower_examples = examples(linker, lower + lower_split, qids) if caseless else []
    lower_parent = list(range(len(lower))) + (parent if caseless else [])  # a copy keeps its fold
    fold = np.random.default_rng(seed).permutation(len(docs)) % folds
    held_out: list[Prediction] = [set()] * len(docs)
    held_short: list[Prediction] = [set()] * len(split)
    held_lower: list[Prediction] = [set()] * len(lower)

    def fit(keep: Callable[[int], bool], threshold: float = 0.5) -> Scorer:
        scorer = Scorer(threshold=threshold).fit_documents(
            linker.context,
            [x for x, f in zip(documents, fold, strict=True) if keep(f)]
            + [x for x, i in zip(short, short_parent, strict=True) if keep(fold[i])],
            groups=[i for i, f in enumerate(fold) if keep(f)] + [i for i in short_parent if keep(fold[i])],
        )
        if caseless:
            scorer.caseless = Scorer(threshold=threshold).fit_documents(
                linker.context,
                [x for x, i in zip(lower_examples, lower_parent, strict=True) if keep(fold[i])],
                groups=[i for i in lower_parent if keep(fold[i])],
            )
        return scorer

    for k in range(folds):
        progress(f"fold {k + 1} of {folds}")
        linker.scorer = fit(lambda f, k=k: f != k)  # type: ignore[misc]
        held = [i for i, f in enumerate(fold) if f == k]
        for i, pred in zip(held, predictions(linker, [docs[i] for i in held], qids), strict=True):
            held_out[i] = pred
        held = [j for j, i in enumerate(parent) if fold[i] == k]
        for j, pred in zip(held, predictions(linker, [split[j] for j in held], qids), strict=True):
            held_short[j] = pred
        held = [i for i, f in enumerate(fold) if f == k and caseless]
        for i, pred in zip(held, predictions(linker, [lower[i] for i in held], qids), strict=True):
            held_lower[i] = pred
    curve = [(round(float(t), 2), f1_at(docs, qids, held_out, t)["f1"]) for t in np.arange(0.2, 0.85, 0.05)]
    # the curve is flat near its top, where a single point's lead is noise: choose the threshold
    # whose neighbourhood (it and the grid points beside it) scores best
    smooth = [float(np.mean([f for _, f in curve[max(i - 1, 0) : i + 2]])) for i in range(len(curve))]
    threshold, best = curve[int(np.argmax(smooth))]
    report = {
        name: f1_at(
            [d for n, d in named if n == name],
            qids,
            [p for (n, _), p in zip(named, held_out, strict=True) if n == name],
            threshold,
        )
        for name in sets
    }
    for name in sets:
        ids = [j for j, i in enumerate(parent) if named[i][0] == name]
        report[f"{name}, sentence by sentence"] = f1_at(
            [split[j] for j in ids], qids, [held_short[j] for j in ids], threshold
        )
        if caseless:
            ids = [i for i, (n, _) in enumerate(named) if n == name]
            report[f"{name}, lower-cased"] = f1_at(
                [lower[i] for i in ids], qids, [held_lower[i] for i in ids], threshold
            )
    progress("the final scorer, on every document")
    linker.scorer = fit(lambda f: True, threshold)
    linker.min_score = threshold
    gold = [g for cands, _, golds, _ in documents for cs, g in zip(cands, golds, strict=True) if cs]
    return TrainReport(threshold, folds, len(docs), len(gold), sum(g >= 0 for g in gold), best, report, curve)
