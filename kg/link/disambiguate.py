"""Disambiguation: features per (mention, candidate), a learned scorer, and the NIL decision.

Features: prior, name similarity, exact label match, NER-type/KG-type agreement, popularity,
graph coherence with the document's other candidates, and the candidate's source; a ranking model
and a confidence model over them, both gradient-boosted trees.

A second, collective pass re-scores every candidate against the first pass's choices for the other
mentions of its document: how alike their descriptions are (a sports page's 'Luton' is the club when
the page's other names are clubs) and how many of them are its KG neighbours.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
from rapidfuzz import fuzz

from kg.cache import Memo
from kg.errors import KGFormatError
from kg.graph import KnowledgeGraph
from kg.link.aliases import Candidate, normalize
from kg.link.mentions import Mention, without_capitals
from kg.storage import atomic_write

FEATURES = [
    "bias",
    "prior",
    "log_prior",
    "rank_1",
    "name_ratio",
    "label_match",
    "type_match",
    "type_clash",
    "popularity",
    "coherence",
    "coherence_any",
    "n_candidates",
    "src_alias",
    "src_coref",
    "src_fuzzy",
    "src_graph",
    "src_demonym",
    "src_longer",
    "src_dense",
    "dense_sim",
    "ner_mention",
    "all_caps",
    "alias_caps",
    "demonym_country",
    "common_noun",
    "beside_number",
    "team_beside_number",
    "place_beside_number",
    "team_doc_numbers",
    "place_doc_numbers",
    "in_compound",
    "dateline",
    "place_dateline",
    "team_dateline",
    "bracketed",
    "place_bracketed",
    "team_bracketed",
    "place_word",
    "place_place_word",
    "team_place_word",
    "contest",
    "place_contest",
    "team_contest",
    "context_sim",
    "context_best",
]
FULL_EVIDENCE = 5  # other mentions in a document for the collective features' full weight
COLLECTIVE = [
    "doc_kind",
    "doc_kind_best",
    "doc_neighbours",
    "doc_transe",
    "doc_transe_best",
    "doc_teams",
    "cand_team",
    "cand_place",
    "same_name",
    "first_log_prob",
]
_C = {name: i for i, name in enumerate(COLLECTIVE)}
NER_COARSE = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC", "NORP": "LOC"}
# Freebase relation prefixes that say what their head entity is
RELATION_TYPES = (
    ("/people/person", "PER"),
    ("/location/", "LOC"),
    ("/organization/", "ORG"),
    ("/sports/sports_team", "ORG"),
    ("/business/business_operation", "ORG"),
    ("/education/educational_institution", "ORG"),
    ("/music/group_member", "PER"),
    ("/film/actor", "PER"),
    ("/music/artist", "PER"),
    ("/language/", "LANG"),
    ("/film/film", "WORK"),
    ("/tv/tv_program", "WORK"),
    ("/music/album", "WORK"),
)


def coarse_types(kg: KnowledgeGraph) -> list[str]:
    """PER / ORG / LOC / LANG / WORK / '' per entity: the type most of the relations it heads imply
    (Freebase-style keys; countries also belong to organisations, so the majority decides)."""
    rel_type = [
        next((t for prefix, t in RELATION_TYPES if key.startswith(prefix)), "") for key in kg.relations
    ]
    names = sorted({t for t in rel_type if t})
    code = np.array([names.index(t) if t else -1 for t in rel_type])
    heads = kg.triples["train"][:, 0]
    per_triple = code[kg.triples["train"][:, 1]]
    counts = np.zeros((kg.num_entities, max(len(names), 1)), dtype=np.int64)
    keep = per_triple >= 0
    np.add.at(counts, (heads[keep], per_triple[keep]), 1)
    best = counts.argmax(axis=1)
    return [names[b] if counts[i, b] else "" for i, b in enumerate(best)]


_TEAM_WORDS = re.compile(r"\b(?:team|club|franchise)\b", re.IGNORECASE)
_TEAM_RELATIONS = ("/sports/sports_team/", "/soccer/football_team/", "/sports/professional_sports_team/")


def sports_teams(kg: KnowledgeGraph) -> np.ndarray:
    """bool[num_entities]: entities whose description calls them a team or club ('association
    football club', 'national cricket team'), or that head a Freebase sports-team relation."""
    out = np.array(
        [
            bool(_TEAM_WORDS.search(d or "")) and label[:1].isupper()  # not 'defender', 'ice hockey'
            for d, label in zip(kg.descriptions, kg.labels, strict=True)
        ],
        dtype=bool,
    )
    team_rel = [i for i, key in enumerate(kg.relations) if key.startswith(_TEAM_RELATIONS)]
    train = kg.triples["train"]
    out[train[np.isin(train[:, 1], team_rel), 0]] = True
    return out


@dataclass
class Context:
    """What the features read about the KG, built once per linker."""

    kg: KnowledgeGraph
    types: list[str]
    log_degree: np.ndarray
    norm_labels: list[str]
    teams: np.ndarray  # bool[num_entities]: sports teams and clubs
    vectors: np.ndarray | None = None  # float32[num_entities, dim] unit rows, for context similarity
    transe: np.ndarray | None = None  # float32[num_entities, dim] unit TransE rows (zero: no vector)

    neighbours_memo: Memo[int, frozenset[int]] = field(default_factory=lambda: Memo(50_000), repr=False)

    def neighbours(self, entity: int) -> frozenset[int]:
        """The entity's KG neighbours (either direction), cached: documents keep meeting the same ones."""

        def compute() -> frozenset[int]:
            adj = self.kg.adjacency
            return frozenset(adj.neighbor[adj.row(entity)].tolist())

        return self.neighbours_memo.get_or_compute(entity, compute)

    @classmethod
    def build(cls, kg: KnowledgeGraph) -> Context:
        deg = kg.degrees(("train", "valid", "test"))
        return cls(
            kg,
            coarse_types(kg),
            np.log1p(deg) / max(np.log1p(deg.max()), 1.0),
            [normalize(x) for x in kg.labels],
            sports_teams(kg),
        )


def featurize(
    ctx: Context,
    mentions: list[Mention],
    candidates: list[list[Candidate]],
    doc_vector: np.ndarray | None = None,
) -> list[np.ndarray]:
    """float32[n_candidates, len(FEATURES)] per mention; `doc_vector` (unit) enables context features."""
    doc_cands = [{c.entity for c in cands[:5]} for cands in candidates]
    doc_numbers = sum(m.beside_number for m in mentions) / max(len(mentions), 1)  # a results table
    out = []
    for i, (m, cands) in enumerate(zip(mentions, candidates, strict=True)):
        others = set().union(*(doc_cands[:i] + doc_cands[i + 1 :])) if len(doc_cands) > 1 else set()
        key = normalize(m.text)
        ner_type = NER_COARSE.get(m.label, "")
        rows = []
        for rank, c in enumerate(cands):
            shared = len(ctx.neighbours(c.entity) & others) if others else 0
            kg_type = ctx.types[c.entity]
            team = bool(ctx.teams[c.entity])
            rows.append(
                [
                    1.0,
                    c.prior,
                    np.log(c.prior + 1e-4),
                    float(rank == 0),
                    # a coreferent mention ('Jordan') keeps its fuller antecedent's name evidence
                    c.name_score
                    if c.source == "coref"
                    else fuzz.ratio(key, ctx.norm_labels[c.entity]) / 100.0,
                    float(c.name_score == 1.0 if c.source == "coref" else key == ctx.norm_labels[c.entity]),
                    float(bool(ner_type) and ner_type == kg_type),
                    float(bool(ner_type) and bool(kg_type) and ner_type != kg_type),
                    ctx.log_degree[c.entity],
                    min(shared / max(len(mentions) - 1, 1), 1.0),
                    float(shared > 0),
                    np.log1p(len(cands)),
                    float(c.source == "alias"),
                    float(c.source == "coref"),
                    float(c.source == "fuzzy"),
                    float(c.source == "graph"),
                    float(c.source == "demonym"),
                    float(c.source == "longer"),
                    float(c.source == "dense"),
                    c.name_score if c.source == "dense" else 0.0,
                    float(m.label != "ALIAS"),
                    float(m.text.isupper()),
                    float(m.label == "ALIAS" and m.text.isupper()),
                    float(m.label == "NORP" and kg_type == "LOC"),  # nationality words name their country
                    float(
                        ctx.kg.labels[c.entity][:1].islower()
                    ),  # 'tennis', 'president': concepts, not names
                    float(m.beside_number),
                    float(m.beside_number and team),
                    float(m.beside_number and kg_type == "LOC"),
                    doc_numbers * team,
                    doc_numbers * (kg_type == "LOC"),
                    float(m.in_compound),
                    # each mark of the words beside the mention, alone and with the candidate's kind
                    *(
                        float(v)
                        for mark in (m.dateline, m.bracketed, m.place_word, m.contest)
                        for v in (mark, mark and kg_type == "LOC", mark and team)
                    ),
                    0.0,
                    0.0,
                ]
            )
        block = np.array(rows, dtype=np.float32).reshape(-1, len(FEATURES))
        if doc_vector is not None and ctx.vectors is not None and len(cands):
            sims = ctx.vectors[[c.entity for c in cands]] @ doc_vector
            block[:, -2] = sims
            block[:, -1] = sims >= sims.max() - 1e-6
        out.append(block)
    return out


def collective_features(
    ctx: Context,
    candidates: list[list[Candidate]],
    probs: list[np.ndarray],
    names: list[str] | None = None,
) -> list[np.ndarray]:
    """float32[n_candidates, len(COLLECTIVE)] per mention, from the first pass's `probs` over each
    mention's candidates: description similarity to the other mentions' expected entities, the
    probability mass of the other mentions that sits on the candidate's KG neighbours, and (with
    each mention's normalised `names`) the mean probability that the other mentions of the same
    name give the candidate: one sense per document ('England' is the cricket team throughout); and
    the first pass's own log-probability, so that the second pass corrects the first rather than
    starting over (it learns from first-pass choices made by models that did not see the document).
    Also the share of the other mentions' probability on sports teams (a sports page) and whether
    the candidate is a team or a place, for the trees to combine."""
    n = len(candidates)
    out = [np.zeros((len(c), len(COLLECTIVE)), np.float32) for c in candidates]
    for block, p in zip(out, probs, strict=True):
        block[:, -1] = np.log(np.maximum(p, 1e-6))
    for block, cands in zip(out, candidates, strict=True):
        for r, c in enumerate(cands):
            block[r, _C["cand_team"]] = float(ctx.teams[c.entity])
            block[r, _C["cand_place"]] = float(ctx.types[c.entity] == "LOC")
    if n < 2:
        return out
    mass: dict[int, np.ndarray] = {}  # entity → probability mass per mention
    for j, (cands, p) in enumerate(zip(candidates, probs, strict=True)):
        for c, pj in zip(cands, p, strict=True):
            mass.setdefault(c.entity, np.zeros(n, np.float32))[j] += pj
    for col, table in ((0, ctx.vectors), (3, ctx.transe)):
        if table is not None:
            _similarity_to_others(table, candidates, probs, out, col)
    # a sports page: how much of the other mentions' probability sits on sports teams ('Surrey' on
    # a cricket page is the club, which the KG may lack: the county is then wrong)
    team_mass = np.array(
        [
            sum(pj for c, pj in zip(cands, p, strict=True) if ctx.teams[c.entity])
            for cands, p in zip(candidates, probs, strict=True)
        ]
    )
    for i in range(n):
        out[i][:, _C["doc_teams"]] = (team_mass.sum() - team_mass[i]) / (n - 1)
    in_doc = set(mass)
    for i, cands in enumerate(candidates):
        block = out[i]
        for r, c in enumerate(cands):
            linked = np.zeros(n, np.float32)
            for e in ctx.neighbours(c.entity) & in_doc:
                linked += mass[e]
            linked[i] = 0.0
            block[r, 2] = np.minimum(linked, 1.0).sum() / (n - 1)
    # one or two other mentions are thin evidence ('Barack Obama visited Paris.': Paris is no
    # person): the features grow to full weight with the number of other mentions
    weight = min(1.0, (n - 1) / FULL_EVIDENCE)
    for block in out:
        block[:, : _C["doc_teams"] + 1] *= weight  # the document features, not the candidate's own
    if names is not None:
        same: dict[str, list[int]] = {}
        for i, key in enumerate(names):
            same.setdefault(key, []).append(i)
        for i, cands in enumerate(candidates):
            others = [j for j in same[names[i]] if j != i]
            for r, c in enumerate(cands if others else []):
                out[i][r, -2] = mass[c.entity][others].sum() / len(others)
    return out


def _similarity_to_others(
    table: np.ndarray,
    candidates: list[list[Candidate]],
    probs: list[np.ndarray],
    out: list[np.ndarray],
    col: int,
) -> None:
    """out[i][:, col]: each candidate's mean similarity (rows of `table`) to the other mentions'
    expected entities; out[i][:, col + 1]: whether it is the mention's most similar candidate."""
    expected = np.stack(
        [
            p @ table[[c.entity for c in cands]] if len(cands) else np.zeros(table.shape[1], table.dtype)
            for cands, p in zip(candidates, probs, strict=True)
        ]
    )
    total = expected.sum(axis=0)
    for i, cands in enumerate(candidates):
        if cands:
            # the mean similarity to the others is the similarity to their mean
            sims = table[[c.entity for c in cands]] @ ((total - expected[i]) / (len(candidates) - 1))
            out[i][:, col] = sims
            out[i][:, col + 1] = sims >= sims.max() - 1e-6


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

    def for_mentions(self, mentions: list[Mention]) -> Scorer:
        """The scorer for a document with these mentions: the caseless one when no mention has a
        capital letter (the text had none, or NER and the alias matcher found nothing else)."""
        if self.caseless is not None and mentions and all(without_capitals(m.text) for m in mentions):
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

    def fit(self, groups: list[np.ndarray], gold: list[int], seed: int = 0) -> Scorer:
        """`groups`: per mention its candidate rows; `gold`: the right row, or -1 (NIL / not found)."""
        known = [(g, i) for g, i in zip(groups, gold, strict=True) if i >= 0 and len(g)]
        relevant = np.concatenate([np.arange(len(g)) == i for g, i in known]).astype(np.float32)
        self.rank = lgb.train(
            {**TREE_PARAMS, "objective": RANK_OBJECTIVE, "seed": seed},
            lgb.Dataset(np.vstack([g for g, _ in known]), relevant, group=[len(g) for g, _ in known]),
            TREE_ROUNDS,
        )
        tops = self._confidence_inputs(groups)
        x = np.vstack([row for _, row in tops.values()])
        right = np.array([float(best == gold[i]) for i, (best, _) in tops.items()], np.float32)
        self.confidence = lgb.train(
            {**TREE_PARAMS, "objective": "binary", "seed": seed}, lgb.Dataset(x, right), TREE_ROUNDS
        )
        return self

    def fit_documents(
        self,
        ctx: Context,
        documents: list[tuple[list[list[Candidate]], list[np.ndarray], list[int], list[str]]],
        folds: int = 5,
        seed: int = 0,
        groups: list[int] | None = None,
    ) -> Scorer:
        """Fit both passes. `documents`: per document, each mention's candidates, feature rows, gold
        row (-1: NIL or not among the candidates) and normalised text. The second pass learns from first-pass
        choices made by models that did not see the document (cross-fitting over `folds`), as it
        will meet them on new text; documents with the same `groups` id (a text and its sentences)
        share a fold."""

        def flat(docs: list) -> tuple[list[np.ndarray], list[int]]:
            pairs = [
                (f, g) for _, feats, golds, _ in docs for f, g in zip(feats, golds, strict=True) if len(f)
            ]
            return [f for f, _ in pairs], [g for _, g in pairs]

        self.collective = None
        self.fit(*flat(documents), seed=seed)
        group = np.asarray(groups if groups is not None else range(len(documents)))
        fold = (np.random.default_rng(seed).permutation(int(group.max()) + 1) % folds)[group]
        second: list[np.ndarray] = []
        second_gold: list[int] = []
        for k in range(folds):
            first = Scorer().fit(
                *flat([d for d, f in zip(documents, fold, strict=True) if f != k]), seed=seed
            )
            for (cands, feats, golds, names), f in zip(documents, fold, strict=True):
                if f == k:
                    rows = first.with_collective(ctx, cands, feats, names)
                    for row, g in zip(rows, golds, strict=True):
                        if len(row):
                            second.append(row)
                            second_gold.append(g)
        self.collective = Scorer(threshold=self.threshold).fit(second, second_gold, seed=seed)
        return self

    def state(self, names: list[str] = FEATURES) -> dict:
        out: dict[str, object] = {"features": names, "threshold": self.threshold}
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
        )


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
