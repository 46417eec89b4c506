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
from kg.link.linker import PIECE_CHARS, nil_threshold  # PIECE_CHARS: texts are linked in pieces
from kg.link.mentions import Mention

if TYPE_CHECKING:
    from kg.link.linker import Linker


Prediction = set[tuple[int, int, str, float]]  # (start, end, QID, score) of each linked mention
Example = tuple[list[list[Candidate]], list[np.ndarray], list[int], list[str]]
# a sentence ends at . ! or ? before a capital, or at a line break; not after an initial or an
# abbreviation's last letter ('Robert P. Smith', 'W. Va.', 'the U.K. Government')
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+(?=[A-Z])|\n+")


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
    it. The split is a plain punctuation rule, and never cuts a labelled name in two: a fragment
    that holds half a name would teach the scorer that its mentions are wrong."""
    text = doc["text"]
    a, b = doc.get("evaluation_span") or [0, len(text)]
    inside = [(lab["span"][0], lab["span"][1]) for lab in doc["labels"]]
    starts = [0] + [
        m.end() for m in _SENTENCE_END.finditer(text) if not any(s < m.end() < e for s, e in inside)
    ]
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


@dataclass
class Featurized:
    """One document as the scorer meets it: its detected mentions, their candidates, feature rows,
    gold rows (-1: NIL or not among the candidates) and normalised names. Everything but the
    scorer's decision, so that models trained on different documents can score it again cheaply."""

    doc: dict[str, Any]
    mentions: list[Mention]
    candidates: list[list[Candidate]]
    features: list[np.ndarray]
    rows: list[int]
    names: list[str]

    @property
    def example(self) -> Example:
        return (self.candidates, self.features, self.rows, self.names)

    @property
    def concept_spans(self) -> set[tuple[int, int]]:
        """(start, end) of its concept (NOUN) mentions, which have a NIL threshold of their own."""
        return {(m.start, m.end) for m in self.mentions if m.label == "NOUN"}


def featurized(linker: Linker, docs: list[dict[str, Any]], qids: set[str]) -> list[Featurized]:
    """Mentions, candidates and features of every document (see `Featurized`)."""
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
        out.append(
            Featurized(
                doc,
                mentions,
                cands,
                featurize(linker.context, mentions, cands, vec, min(len(doc["text"]), PIECE_CHARS)),
                rows,
                names,
            )
        )
    return out


def rescored(linker: Linker, docs: Sequence[Featurized], qids: set[str]) -> list[Prediction]:
    """`predictions` of the linker's current scorer on documents featurized before (the same
    mentions, candidates and features: only the decisions are made again)."""
    out = []
    for f in docs:
        lo, hi = f.doc.get("evaluation_span") or [0, len(f.doc["text"])]
        linked = linker.disambiguate(f.mentions, False, None, f.candidates, 0.0, features=f.features)
        out.append(
            {
                (x.start, x.end, x.qid, x.score)
                for x in linked
                if x.qid in qids and lo <= x.start and x.end <= hi
            }
        )
    return out


def cut(
    doc: Featurized,
    pred: Prediction,
    threshold: float,
    concept_threshold: float,
    nationality_threshold: float | None = None,
) -> Prediction:
    """The predictions that pass the NIL decision: `threshold` for names, `concept_threshold` for
    concepts (NOUN mentions), `nationality_threshold` (default `threshold`) for nationality words."""
    tn = threshold if nationality_threshold is None else nationality_threshold
    label = {(m.start, m.end): m.label for m in doc.mentions}
    return {
        x
        for x in pred
        if x[3] >= nil_threshold(label.get((x[0], x[1]), ""), threshold, concept_threshold, tn)
    }


def f1_grid(
    docs: Sequence[Featurized],
    preds: Sequence[Prediction],
    qids: set[str],
    grid: Sequence[float],
    nationality_threshold: float | None = None,
) -> np.ndarray:
    """F1 of `preds` at every pair of thresholds (names, concepts) of `grid`: float[len(grid),
    len(grid)], what `f1_at` of `cut` gives at each pair, counted once and then thresholded.
    Nationality words are cut at `nationality_threshold`, if given, else as names."""
    gold_n, rows = 0, []  # rows: (score, kind: 0 name, 1 concept, 2 nationality word, is right)
    for f, pred in zip(docs, preds, strict=True):
        gold = gold_of(f.doc, qids)
        gold_n += len(gold)
        # each mention's kind as the NIL decision tells them apart: 0 name, 1 concept, 2 nationality
        kind_of = {(m.start, m.end): nil_threshold(m.label, 0, 1, 2) for m in f.mentions}
        rows += [(x[3], kind_of.get((x[0], x[1]), 0), (x[0], x[1], x[2]) in gold) for x in pred]
    score, kind, right = np.array(rows, dtype=np.float64).reshape(-1, 3).T
    if nationality_threshold is None:
        kind[kind == 2] = 0
    g = np.asarray(grid, dtype=np.float64)
    # kept at (t, tc): a name whose score >= t, a concept whose score >= tc, a nationality word
    # whose score >= the nationality threshold
    names_kept = (score[None, :] >= g[:, None]) & (kind[None, :] == 0)  # [t, prediction]
    concepts_kept = (score[None, :] >= g[:, None]) & (kind[None, :] == 1)  # [tc, prediction]
    fixed = (score >= (nationality_threshold or 0.0)) & (kind == 2)
    tp = (names_kept @ right)[:, None] + (concepts_kept @ right)[None, :] + float(fixed @ right)
    n_pred = names_kept.sum(axis=1)[:, None] + concepts_kept.sum(axis=1)[None, :] + int(fixed.sum())
    p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    r = tp / gold_n if gold_n else np.zeros_like(tp)
    return np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)


def stages(
    docs: Sequence[Featurized],
    qids: set[str],
    preds: Sequence[Prediction],
    threshold: float,
    concept_threshold: float,
    nationality_threshold: float | None = None,
) -> dict[str, float]:
    """Where the recall goes, stage by stage: `mention_recall` (gold spans of KG entities that
    mention detection found exactly), `candidate_recall` (of those, the share with the gold entity
    among the candidates), `top_right` (of those, the share whose top candidate is the gold one)
    and the NIL decision on every linked mention (`nil_precision`: of the mentions it dropped, the
    share that were wrong; `nil_recall`: of the wrong ones, the share it dropped)."""
    gold_n = found = with_cand = top = dropped = wrong = dropped_wrong = 0
    for f, pred in zip(docs, preds, strict=True):
        gold = {(s, e): q for s, e, q in gold_of(f.doc, qids)}
        gold_n += len(gold)
        passed = cut(f, pred, threshold, concept_threshold, nationality_threshold)
        by_span = {(s, e): q for s, e, q, _ in pred}
        for m, row in zip(f.mentions, f.rows, strict=True):
            if (m.start, m.end) in gold:
                found += 1
                with_cand += row >= 0
                top += by_span.get((m.start, m.end)) == gold[(m.start, m.end)]
        for x in pred:
            bad, drop = gold.get((x[0], x[1])) != x[2], x not in passed
            dropped, wrong, dropped_wrong = dropped + drop, wrong + bad, dropped_wrong + (drop and bad)
    return {
        "mention_recall": found / gold_n if gold_n else 0.0,
        "candidate_recall": with_cand / found if found else 0.0,
        "top_right": top / with_cand if with_cand else 0.0,
        "nil_precision": dropped_wrong / dropped if dropped else 0.0,
        "nil_recall": dropped_wrong / wrong if wrong else 0.0,
    }


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
    """What training chose and how the held-out predictions scored."""

    threshold: float
    concept_threshold: float
    nationality_threshold: float
    folds: int
    documents: int
    mentions: int
    mentions_with_gold_candidate: int
    f1_all: float  # the mean over the sets of their held-out F1
    sets: dict[str, dict[str, float]] = field(default_factory=dict)  # per set (and per variant)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (threshold, mean held-out F1)
    set_curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # per set
    # (nationality threshold, mean held-out F1) at the chosen names' and concepts' thresholds
    nationality_curve: list[tuple[float, float]] = field(default_factory=list)
    # what a fold holds out: "documents" (k-fold), "corpus" (one set each) or "given" (`fold_of`)
    held_out: str = "documents"


# kinds of mention whose annotation conventions differ between corpora: AIDA links nationality
# words to their country, most sets do not; some sets link concepts ('physicist'), others never
MENTION_KINDS = {
    "PERSON": "person",
    "ORG": "organisation",
    "GPE": "place",
    "LOC": "place",
    "FAC": "place",
    "NORP": "nationality",
    "PART": "part of a name",
    "ALIAS": "KG name beside NER",
    "NOUN": "concept",
}
VOTE_FLOOR = 20  # a set's vote on a kind it has fewer mentions of shrinks in proportion


def mention_kind(label: str) -> str:
    """The kind of a mention (`MENTION_KINDS`; any other NER label: 'other name')."""
    return MENTION_KINDS.get(label, "other name")


def vote_weights(set_of: Sequence[str], documents: Sequence[Featurized]) -> dict[tuple[str, str], float]:
    """(set, kind of mention) → the weight of each such mention in the confidence model, so that
    every set has one vote on each kind: whether a corpus annotates nationality words or concepts
    is its convention, and the largest set would otherwise decide it for all (AIDA's 562
    nationality words outnumber all the other sets' together). A kind's total weight (its
    mentions over all sets) divided equally among all the sets: a set with none of a kind leaves
    its share unused, and a set with fewer than `VOTE_FLOOR` mentions of a kind votes in
    proportion. `set_of`: each document's set."""
    count: dict[tuple[str, str], int] = {}
    for name, f in zip(set_of, documents, strict=True):
        for m, cands in zip(f.mentions, f.candidates, strict=True):
            if cands:
                key = (name, mention_kind(m.label))
                count[key] = count.get(key, 0) + 1
    total: dict[str, int] = {}
    for (_, kind), n in count.items():
        total[kind] = total.get(kind, 0) + n
    names = set(set_of)
    return {
        (name, kind): all_n / (len(names) * max(count.get((name, kind), 0), VOTE_FLOOR))
        for name in names
        for kind, all_n in total.items()
    }


def corpus_folds(sets: dict[str, list[dict[str, Any]]]) -> list[int]:
    """Each document's fold when every set is held out in turn (leave-one-corpus-out)."""
    return [k for k, docs in enumerate(sets.values()) for _ in docs]


def train_linker(
    linker: Linker,
    sets: dict[str, list[dict[str, Any]]],
    folds: int = 5,
    with_sentences: bool = True,
    caseless: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
    held_out: str | None = None,
    fold_of: Sequence[int] | None = None,
    vote: bool = True,
) -> TrainReport:
    """Fit `linker.scorer` on every document of `sets` (set name → ELEVANT documents).

    The NIL threshold and the report come from held-out predictions, each document scored by a
    model that did not see it: with three or more sets (or `held_out="corpus"`) a model per set
    trained on all the others (leave-one-corpus-out: the figure for text unlike any seen), else
    `folds`-fold cross-validation by document. `fold_of` gives each document's fold by hand (-1:
    always in training, never scored). The final scorer is then trained on everything. With
    `vote` and two or more sets, each set has one vote per kind of mention in the confidence
    model (the NIL decision; see `vote_weights`): the largest set does not set every corpus's
    conventions alone. `progress(message)` hears of each step.
    """
    held_out = held_out or ("corpus" if len(sets) >= 3 else "documents")
    if fold_of is not None:
        held_out = "given"
    if held_out not in ("corpus", "documents", "given"):
        raise ValueError(f"held_out is 'corpus' or 'documents', not {held_out!r}")
    if held_out == "documents" and folds < 2:
        raise ValueError(f"folds must be at least 2, not {folds}")
    if held_out == "corpus" and len(sets) < 2:
        raise KGFormatError(
            "--data", None, "one set cannot be held out against the others", "Give two or more --data files"
        )
    qids = {q for q in linker.kg.qids if q}
    named = [(name, d) for name, docs in sets.items() for d in docs]
    docs = [d for _, d in named]
    if held_out == "documents" and len(docs) < folds:
        raise KGFormatError(
            "--data", None, f"{len(docs)} documents, fewer than the {folds} folds", "Give more documents"
        )
    if fold_of is not None:
        fold = np.asarray(fold_of, dtype=np.int64)
        if len(fold) != len(docs) or not (fold >= 0).any():
            raise ValueError(
                f"fold_of: one fold (or -1) per document, some >= 0; got {len(fold)} for {len(docs)} documents"
            )
    elif held_out == "corpus":
        fold = np.asarray(corpus_folds(sets))
    else:
        fold = np.random.default_rng(seed).permutation(len(docs)) % folds
    folds = int(fold.max()) + 1
    progress(f"features of {len(docs):,} documents")
    documents = featurized(linker, docs, qids)
    per_doc = [sentences(d) for d in docs]
    split = [s for ss in per_doc for s in ss]
    parent = [i for i, ss in enumerate(per_doc) for _ in ss]
    progress(f"features of {len(split):,} sentences")
    short = featurized(linker, split, qids) if with_sentences else []
    short_parent = list(parent) if with_sentences else []
    lower = [lowercased(d) for d in docs] if caseless else []
    lower_split = [lowercased(x) for x in split] if caseless else []
    if caseless:
        progress("features of the lower-cased copies")
    lower_docs = featurized(linker, lower + lower_split, qids) if caseless else []
    lower_parent = list(range(len(lower))) + (parent if caseless else [])  # a copy keeps its fold
    held: list[Prediction] = [set()] * len(docs)
    voting = vote and len(sets) >= 2
    held_short: list[Prediction] = [set()] * len(split)
    held_lower: list[Prediction] = [set()] * len(lower)

    # the votes, counted once on every set's documents (a copy, a sentence or a lower-cased text,
    # is weighed by its own mentions' kinds with its set's counts)
    cell = vote_weights([n for n, _ in named], documents) if voting else {}

    def fit_one(threshold: float, fitted: list[tuple[int, Featurized]]) -> Scorer:
        """A scorer on `fitted` (parent document, example: a document or a copy of it, a sentence
        or a lower-cased text), with the vote weighing each example's mentions."""
        weights = None
        if voting:
            weights = [
                np.array([cell.get((named[i][0], mention_kind(m.label)), 1.0) for m in x.mentions])
                for i, x in fitted
            ]
        return Scorer(threshold=threshold).fit_documents(
            linker.context, [x.example for _, x in fitted], groups=[i for i, _ in fitted], weights=weights
        )

    def fit(keep: Callable[[int], bool], threshold: float = 0.5) -> Scorer:
        scorer = fit_one(
            threshold,
            [(i, x) for i, (x, f) in enumerate(zip(documents, fold, strict=True)) if keep(f)]
            + [(i, x) for x, i in zip(short, short_parent, strict=True) if keep(fold[i])],
        )
        if caseless:
            scorer.caseless = fit_one(
                threshold, [(i, x) for x, i in zip(lower_docs, lower_parent, strict=True) if keep(fold[i])]
            )
        return scorer

    names = list(sets)
    for k in range(folds):
        progress(
            f"held out: {names[k]}"
            if held_out == "corpus" and fold_of is None
            else f"fold {k + 1} of {folds}"
        )
        try:
            linker.scorer = fit(lambda f, k=k: f != k)  # type: ignore[misc]
        except ValueError as e:
            what = names[k] if held_out == "corpus" else f"fold {k + 1}"
            raise KGFormatError(
                "--data",
                None,
                f"holding out {what}: {e}",
                "Give more labelled documents, with entities of the KG",
            ) from e
        ids = [i for i, f in enumerate(fold) if f == k]
        for i, pred in zip(ids, rescored(linker, [documents[i] for i in ids], qids), strict=True):
            held[i] = pred
        ids = [j for j, i in enumerate(parent) if fold[i] == k and with_sentences]
        for j, pred in zip(ids, rescored(linker, [short[j] for j in ids], qids), strict=True):
            held_short[j] = pred
        ids = [i for i, f in enumerate(fold) if f == k and caseless]
        for i, pred in zip(ids, rescored(linker, [lower_docs[i] for i in ids], qids), strict=True):
            held_lower[i] = pred
    scored = [i for i, f in enumerate(fold) if f >= 0]
    grid = [round(float(t), 2) for t in np.arange(0.05, 0.9, 0.05)]
    # concepts ('physicist') get a threshold of their own: whether a corpus means the concept is
    # another question than which entity a name is. Each set's held-out F1 at each pair of
    # thresholds; the pair serves the mean over the sets (each judged on its own, as a user's
    # corpus will be), not the pooled mentions, where the largest set would decide for all
    by_set = {name: ids for name in sets for ids in [[i for i in scored if named[i][0] == name]] if ids}

    def at(ids: list[int], t: float, tc: float, tn: float | None = None) -> dict[str, float]:
        return f1_at([docs[i] for i in ids], qids, [cut(documents[i], held[i], t, tc, tn) for i in ids], 0.0)

    n = len(grid)
    has_concepts = any(documents[i].concept_spans for i in scored)
    has_nationality = any(m.label == "NORP" for i in scored for m in documents[i].mentions)

    def pair(tn: float | None) -> tuple[np.ndarray, int, int]:
        """Each set's F1 over the (names, concepts) grid with nationality words cut at `tn`, and
        the pair chosen: the surface is flat near its top, where a single point's lead is noise,
        so the pair whose neighbourhood (it and the grid points around it) scores best."""
        table = np.array(
            [
                f1_grid([documents[i] for i in ids], [held[i] for i in ids], qids, grid, tn)
                for ids in by_set.values()
            ]
        )
        mean = table.mean(axis=0)
        smooth = np.array(
            [[mean[max(a - 1, 0) : a + 2, max(b - 1, 0) : b + 2].mean() for b in range(n)] for a in range(n)]
        )
        a, b = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
        if not has_concepts:  # no concept was held out: nothing chose their threshold, the names' stands
            b = a
        return table, int(a), int(b)

    # nationality words ('Japanese'): one corpus links them to their country, most do not; their
    # threshold is chosen the same way, the other two kept, on a curve smoothed the same way. The
    # three are chosen in turn (the pair given the nationality threshold, then it given the pair)
    # until none moves: each is chosen where the others will be
    tn: float | None = None
    by_tn: list[float] = []
    for _ in range(4):
        table, a, b = pair(tn)
        threshold, concept_threshold = grid[a], grid[b]
        if not has_nationality:
            break
        by_tn = [
            float(np.mean([at(ids, threshold, concept_threshold, x)["f1"] for ids in by_set.values()]))
            for x in grid
        ]
        smooth_tn = [float(np.mean(by_tn[max(j - 1, 0) : j + 2])) for j in range(n)]
        # where the curve is flat, the names' threshold stands
        j = max(range(n), key=lambda j: (round(smooth_tn[j], 9), -abs(j - a)))
        if grid[j] == tn:
            break
        tn = grid[j]
    nationality_threshold = threshold if tn is None else tn
    mean = table.mean(axis=0)
    best = float(mean[a, b])
    curve = [(t, float(mean[j, b])) for j, t in enumerate(grid)]
    per_set = {name: table[k, :, b].tolist() for k, name in enumerate(by_set)}
    report: dict[str, dict[str, float]] = {}
    for name in sets:
        ids = [i for i in scored if named[i][0] == name]
        if not ids:
            continue
        report[name] = {
            **at(ids, threshold, concept_threshold, nationality_threshold),
            **stages(
                [documents[i] for i in ids],
                qids,
                [held[i] for i in ids],
                threshold,
                concept_threshold,
                nationality_threshold,
            ),
        }
        if with_sentences:
            sub = [j for j, i in enumerate(parent) if named[i][0] == name and fold[i] >= 0]
            report[f"{name}, sentence by sentence"] = f1_at(
                [split[j] for j in sub],
                qids,
                [
                    cut(short[j], held_short[j], threshold, concept_threshold, nationality_threshold)
                    for j in sub
                ],
                0.0,
            )
        if caseless:
            report[f"{name}, lower-cased"] = f1_at(
                [lower[i] for i in ids],
                qids,
                [
                    cut(lower_docs[i], held_lower[i], threshold, concept_threshold, nationality_threshold)
                    for i in ids
                ],
                0.0,
            )
    progress("the final scorer, on every document")
    linker.scorer = fit(lambda f: True, threshold)
    linker.scorer.concept_threshold = concept_threshold
    linker.scorer.nationality_threshold = nationality_threshold
    linker.min_score, linker.concept_min_score = threshold, concept_threshold
    linker.nationality_min_score = nationality_threshold
    gold = [g for d in documents for cs, g in zip(d.candidates, d.rows, strict=True) if cs]
    return TrainReport(
        threshold,
        concept_threshold,
        nationality_threshold,
        folds,
        len(docs),
        len(gold),
        sum(g >= 0 for g in gold),
        best,
        report,
        curve,
        {name: list(zip(grid, c, strict=True)) for name, c in per_set.items()},
        held_out=held_out,
        nationality_curve=list(zip(grid, by_tn, strict=False)),
    )
