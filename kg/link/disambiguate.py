"""Disambiguation: a learned scorer over the features (`kg.link.features`) and the NIL decision.

A ranking model and a confidence model, both gradient-boosted trees. A second, collective pass
re-scores every candidate against the first pass's choices for the other mentions of its document:
how alike their descriptions are (a sports page's 'Luton' is the club when the page's other names
are clubs) and how many of them are its KG neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from kg.errors import KGFormatError
from kg.link.aliases import Candidate
from kg.link.context import Context
from kg.link.features import COLLECTIVE, FEATURES, collective_features
from kg.link.mentions import Mention, without_capitals
from kg.storage import atomic_write

# Gradient-boosted trees (LightGBM) for both models: the features are few and of mixed kinds
# (flags, ratios, log-counts) and the decisions hinge on their interactions ("a place beside a
# number, on a page of results, with a club among the candidates"); trees found those better than
# the earlier linear + one-hidden-layer model (5-fold CV on the training sets, benchmarks/RESULTS.md).
TREE_PARAMS: dict[str, object] = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}
TREE_ROUNDS = 200
RANK_OBJECTIVE = "lambdarank"
# a document's weight in training: one number for all its mentions, or one per mention
Weight = float | Sequence[float] | np.ndarray


@dataclass
class Scorer:
    """Two models over FEATURES, saved as JSON (LightGBM's text model format inside), and
    optionally a second pass (`collective`, the same two models over FEATURES + COLLECTIVE) nested
    in the same file.

    `rank` scores a mention's candidates against each other (a LambdaRank model; softmax over its
    scores gives each candidate's probability). `confidence` models whether the top candidate is
    right, reading its features plus its softmax probability and its margin over the runner-up:
    below `threshold` (the outer scorer's) the mention is NIL. With a collective pass, the first
    pass's probabilities feed `collective_features` and the second pass decides. Untrained (no
    trees), a hand-set linear rule trusts the prior and the name.

    `caseless`, when trained, is a whole scorer of its own for text without capitals (a query, a
    chat line), trained on lower-cased copies of the training documents: there NER misses most
    names and the alias matches carry the evidence, so what the features mean changes, and a
    separate model leaves the scoring of ordinary text exactly as it was.
    """

    threshold: float = 0.5
    rank: lgb.Booster | None = None
    confidence: lgb.Booster | None = None
    collective: Scorer | None = None  # the second pass, over FEATURES + COLLECTIVE
    caseless: Scorer | None = None  # for text without capitals
    concept_threshold: float | None = None  # for NOUN mentions (concepts); None: `threshold`
    nationality_threshold: float | None = None  # for NORP mentions ('Japanese'); None: `threshold`

    def for_mentions(self, mentions: list[Mention]) -> Scorer:
        """The scorer for a document with these mentions: the caseless one when no mention has a
        capital letter (the text had none, or NER and the alias matcher found nothing else);
        concepts ('physicist', lower-case in any text) do not count."""
        names = [m for m in mentions if m.label != "NOUN"]  # concepts are lower-case in any text
        if self.caseless is not None and names and all(without_capitals(m.text) for m in names):
            return self.caseless
        return self

    def decide(
        self,
        ctx: Context,
        candidates: list[list[Candidate]],
        features: list[np.ndarray],
        names: list[str] | None = None,
    ) -> list[tuple[int, float]]:
        """(best candidate row, P(it is right)) per mention of one document; (-1, 0.0) where a
        mention has no candidates. Runs the collective pass when one was trained; `names`: each
        mention's normalised text, for its same-name feature."""
        if self.collective is not None:
            features = self.with_collective(ctx, candidates, features, names)
            return self.collective.decide(ctx, candidates, features)
        return self.choose(features)

    def with_collective(
        self,
        ctx: Context,
        candidates: list[list[Candidate]],
        features: list[np.ndarray],
        names: list[str] | None = None,
    ) -> list[np.ndarray]:
        extra = collective_features(ctx, candidates, self.probabilities(features), names)
        return [np.hstack([f, x]) for f, x in zip(features, extra, strict=True)]

    def probabilities(self, features: list[np.ndarray]) -> list[np.ndarray]:
        """Each mention's softmax over its candidates (one model call for the whole document)."""
        if not any(len(f) for f in features):
            return [np.zeros(0) for _ in features]
        stacked = np.vstack([f for f in features if len(f)])
        if self.rank is None:
            logits = stacked @ _default_weights(stacked.shape[1])
        else:
            logits = np.asarray(self.rank.predict(stacked, num_threads=1))
        out, at = [], 0
        for f in features:
            z = logits[at : at + len(f)]
            at += len(f)
            p = np.exp(z - z.max()) if len(z) else z
            out.append(p / p.sum() if len(z) else np.zeros(0))
        return out

    def choose(self, features: list[np.ndarray]) -> list[tuple[int, float]]:
        """(index of the best candidate, P(it is right)) per mention; (-1, 0.0) without candidates."""
        tops = self._confidence_inputs(features)
        if not tops:
            return [(-1, 0.0)] * len(features)
        x = np.vstack([row for _, row in tops.values()])
        if self.confidence is None:
            conf = 1.0 / (1.0 + np.exp(-(x[:, :-2] @ _default_weights(x.shape[1] - 2))))
        else:
            conf = np.asarray(self.confidence.predict(x, num_threads=1))
        sure = dict(zip(tops, conf.tolist(), strict=True))
        return [(tops[i][0], float(sure[i])) if i in tops else (-1, 0.0) for i in range(len(features))]

    def _confidence_inputs(self, features: list[np.ndarray]) -> dict[int, tuple[int, np.ndarray]]:
        """Per mention with candidates: its top candidate and what the confidence model reads of
        it: the candidate's features, its softmax probability and its margin over the runner-up."""
        out = {}
        for i, (f, p) in enumerate(zip(features, self.probabilities(features), strict=True)):
            if len(f):
                order = np.argsort(-p)
                best, second = float(p[order[0]]), float(p[order[1]]) if len(p) > 1 else 0.0
                out[i] = (int(order[0]), np.concatenate([f[order[0]], (best, best - second)]))
        return out

    def fit(
        self, groups: list[np.ndarray], gold: list[int], seed: int = 0, weights: list[float] | None = None
    ) -> Scorer:
        """`groups`: per mention its candidate rows; `gold`: the right row, or -1 (NIL / not found);
        `weights`: per mention, how much the confidence model heeds it (default all 1)."""
        known = [(g, i) for g, i in zip(groups, gold, strict=True) if i >= 0 and len(g)]
        if not known:
            raise ValueError(
                "no mention to learn from: none of the training mentions has its gold entity among its candidates"
            )
        relevant = np.concatenate([np.arange(len(g)) == i for g, i in known]).astype(np.float32)
        self.rank = lgb.train(
            {**TREE_PARAMS, "objective": RANK_OBJECTIVE, "seed": seed},
            lgb.Dataset(np.vstack([g for g, _ in known]), relevant, group=[len(g) for g, _ in known]),
            TREE_ROUNDS,
        )
        tops = self._confidence_inputs(groups)
        x = np.vstack([row for _, row in tops.values()])
        right = np.array([float(best == gold[i]) for i, (best, _) in tops.items()], np.float32)
        w = None if weights is None else np.array([weights[i] for i in tops], np.float32)
        self.confidence = lgb.train(
            {**TREE_PARAMS, "objective": "binary", "seed": seed}, lgb.Dataset(x, right, weight=w), TREE_ROUNDS
        )
        return self

    def fit_documents(
        self,
        ctx: Context,
        documents: list[tuple[list[list[Candidate]], list[np.ndarray], list[int], list[str]]],
        folds: int = 5,
        seed: int = 0,
        groups: list[int] | None = None,
        weights: Sequence[Weight] | None = None,
    ) -> Scorer:
        """Fit both passes. `documents`: per document, each mention's candidates, feature rows, gold
        row (-1: NIL or not among the candidates) and normalised text. The second pass learns from first-pass
        choices made by models that did not see the document (cross-fitting over `folds`), as it
        will meet them on new text; documents with the same `groups` id (a text and its sentences)
        share a fold; `weights` (per document: one number, or one per mention) weigh its mentions in
        the confidence model."""
        doc_weight: Sequence[Weight] = weights if weights is not None else [1.0] * len(documents)

        def flat(docs: list, ws: Sequence[Weight]) -> tuple[list[np.ndarray], list[int], list[float]]:
            triples = [
                (f, g, float(wm))
                for (_, feats, golds, _), w in zip(docs, ws, strict=True)
                for f, g, wm in zip(feats, golds, _per_mention(w, len(feats)), strict=True)
                if len(f)
            ]
            return [f for f, _, _ in triples], [g for _, g, _ in triples], [w for _, _, w in triples]

        self.collective = None
        feats, golds, ws = flat(documents, doc_weight)
        self.fit(feats, golds, seed=seed, weights=ws if weights is not None else None)
        group = np.asarray(groups if groups is not None else range(len(documents)))
        fold = (np.random.default_rng(seed).permutation(int(group.max()) + 1) % folds)[group]
        second: list[np.ndarray] = []
        second_gold: list[int] = []
        second_weight: list[float] = []
        for k in range(folds):
            kf, kg_, kw = flat(
                [d for d, f in zip(documents, fold, strict=True) if f != k],
                [w for w, f in zip(doc_weight, fold, strict=True) if f != k],
            )
            if not any(g >= 0 for g in kg_):  # a fold with nothing else to learn from (few documents)
                continue
            first = Scorer().fit(kf, kg_, seed=seed, weights=kw if weights is not None else None)
            for (cands, feats, golds, names), f, w in zip(documents, fold, doc_weight, strict=True):
                if f == k:
                    rows = first.with_collective(ctx, cands, feats, names)
                    for row, g, wm in zip(rows, golds, _per_mention(w, len(rows)), strict=True):
                        if len(row):
                            second.append(row)
                            second_gold.append(g)
                            second_weight.append(float(wm))
        self.collective = Scorer(threshold=self.threshold).fit(
            second, second_gold, seed=seed, weights=second_weight if weights is not None else None
        )
        return self

    def state(self, names: list[str] = FEATURES) -> dict:
        out: dict[str, object] = {"features": names, "threshold": self.threshold}
        for key in ("concept_threshold", "nationality_threshold"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key, model in (("rank", self.rank), ("confidence", self.confidence)):
            out[key] = None if model is None else model.model_to_string()
        if self.collective is not None:
            out["collective"] = self.collective.state(names + COLLECTIVE)
        if self.caseless is not None:
            out["caseless"] = self.caseless.state(names)
        return out

    def save(self, path: str | Path) -> None:
        """Written to a temporary file beside `path`, then renamed: a failed save leaves the old file."""
        with atomic_write(path) as f:
            f.write(json.dumps(self.state()))

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as e:
            raise KGFormatError(
                path, None, f"damaged scorer file ({str(e)[:120]})", "Train it again with `kgpipe link train`"
            ) from e
        if not isinstance(state, dict):
            raise KGFormatError(path, 1, "not a scorer (a JSON object)", "Train it with `kgpipe link train`")
        try:
            return cls.from_state(state, path)
        except (lgb.basic.LightGBMError, KeyError, TypeError, ValueError) as e:
            if isinstance(e, KGFormatError):
                raise
            raise KGFormatError(
                path, None, f"damaged scorer ({str(e)[:120]})", "Train it again with `kgpipe link train`"
            ) from e

    @classmethod
    def from_state(cls, d: dict, path: str | Path, names: list[str] = FEATURES) -> Scorer:
        if d.get("features") != names or not isinstance(d.get("rank"), str | None):
            raise KGFormatError(
                path,
                None,
                f"the scorer was trained on features {d.get('features')} by another kgpipe version, not on the {len(names)} features of this one",
                "Train it again with `kgpipe link train`",
            )
        second, caseless = d.get("collective"), d.get("caseless")
        return cls(
            float(d["threshold"]),
            None if d.get("rank") is None else lgb.Booster(model_str=d["rank"]),
            None if d.get("confidence") is None else lgb.Booster(model_str=d["confidence"]),
            cls.from_state(second, path, names + COLLECTIVE) if second else None,
            cls.from_state(caseless, path, names) if caseless else None,
            None if d.get("concept_threshold") is None else float(d["concept_threshold"]),
            None if d.get("nationality_threshold") is None else float(d["nationality_threshold"]),
        )


def _per_mention(weight: Weight, n: int) -> np.ndarray:
    """A document's weight for each of its `n` mentions: one number for all, or one each."""
    w = np.asarray(weight, np.float64)
    if w.ndim == 0:
        return np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(
            f"{w.size} weights for a document of {n} mentions: give one number or one per mention"
        )
    return w


def _default_weights(width: int) -> np.ndarray:
    """Hand-set linear rule before any training, over the first `width` features: trust the prior
    and the name."""
    w = dict.fromkeys(FEATURES, 0.0) | {
        "bias": -3.0,
        "prior": 3.0,
        "name_ratio": 2.0,
        "rank_1": 1.0,
        "coherence_any": 1.0,
    }
    return np.r_[[w[f] for f in FEATURES], np.zeros(max(width - len(FEATURES), 0))][:width]
