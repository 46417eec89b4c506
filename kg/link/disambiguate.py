"""Disambiguation: features per (mention, candidate), a small logistic scorer, and the NIL decision.

Features: prior, name similarity, exact label match, NER-type/KG-type agreement, popularity,
graph coherence with the document's other candidates, and the candidate's source.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rapidfuzz import fuzz

from kg.graph import KnowledgeGraph
from kg.link.aliases import Candidate, normalize
from kg.link.mentions import Mention

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
    "ner_mention",
    "all_caps",
    "alias_caps",
    "demonym_country",
]
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
    """PER / ORG / LOC / '' per entity, from the relations it heads (Freebase-style keys)."""
    types = [""] * kg.num_entities
    rel_type = [
        next((t for prefix, t in RELATION_TYPES if key.startswith(prefix)), "") for key in kg.relations
    ]
    for h, r, _ in kg.triples["train"]:
        t = rel_type[r]
        if t and not types[h]:
            types[h] = t
    return types


@dataclass
class Context:
    """What the features read about the KG, built once per linker."""

    kg: KnowledgeGraph
    types: list[str]
    log_degree: np.ndarray
    norm_labels: list[str]

    @classmethod
    def build(cls, kg: KnowledgeGraph) -> Context:
        deg = kg.degrees(("train", "valid", "test"))
        return cls(
            kg,
            coarse_types(kg),
            np.log1p(deg) / max(np.log1p(deg.max()), 1.0),
            [normalize(x) for x in kg.labels],
        )


def featurize(ctx: Context, mentions: list[Mention], candidates: list[list[Candidate]]) -> list[np.ndarray]:
    """float32[n_candidates, len(FEATURES)] per mention."""
    adj = ctx.kg.adjacency
    doc_cands = [{c.entity for c in cands[:5]} for cands in candidates]
    out = []
    for i, (m, cands) in enumerate(zip(mentions, candidates, strict=True)):
        others = set().union(*(doc_cands[:i] + doc_cands[i + 1 :])) if len(doc_cands) > 1 else set()
        key = normalize(m.text)
        ner_type = NER_COARSE.get(m.label, "")
        rows = []
        for rank, c in enumerate(cands):
            neigh = set(adj.neighbor[adj.row(c.entity)].tolist()) if others else set()
            shared = len(neigh & others)
            kg_type = ctx.types[c.entity]
            rows.append(
                [
                    1.0,
                    c.prior,
                    np.log(c.prior + 1e-4),
                    float(rank == 0),
                    fuzz.ratio(key, ctx.norm_labels[c.entity]) / 100.0,
                    float(key == ctx.norm_labels[c.entity]),
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
                    float(m.label != "ALIAS"),
                    float(m.text.isupper()),
                    float(m.label == "ALIAS" and m.text.isupper()),
                    float(m.label == "NORP" and kg_type == "LOC"),  # nationality words name their country
                ]
            )
        out.append(np.array(rows, dtype=np.float32).reshape(-1, len(FEATURES)))
    return out


@dataclass
class Scorer:
    """Two small linear models over FEATURES, saved as JSON.

    `rank` scores a mention's candidates against each other (softmax over them, a conditional
    logit); `confidence` is a logistic model of whether the top candidate is right, reading its
    features plus its softmax probability and margin: below `threshold` the mention is NIL.
    """

    rank: np.ndarray = field(default_factory=lambda: _default_weights())
    confidence: np.ndarray = field(default_factory=lambda: np.r_[_default_weights(), 0.0, 0.0])
    threshold: float = 0.5

    def choose(self, features: np.ndarray) -> tuple[int, float]:
        """(index of the best candidate, P(it is right)) for one mention's candidate rows."""
        logits = features @ self.rank
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p)
        best = int(order[0])
        margin = float(p[best] - (p[order[1]] if len(p) > 1 else 0.0))
        z = np.r_[features[best], p[best], margin] @ self.confidence
        return best, float(1.0 / (1.0 + np.exp(-z)))

    def fit(self, groups: list[np.ndarray], gold: list[int], l2: float = 1e-3) -> Scorer:
        """`groups`: per mention its candidate rows; `gold`: the right row, or -1 (NIL / not found)."""
        known = [(torch.from_numpy(g), i) for g, i in zip(groups, gold, strict=True) if i >= 0]
        w = _lbfgs(
            len(FEATURES),
            lambda w: torch.stack([-torch.log_softmax(g @ w, 0)[i] for g, i in known]).mean(),
            l2,
        )
        self.rank = w
        rows, labels = [], []
        for g, i in zip(groups, gold, strict=True):
            logits = g @ w
            p = np.exp(logits - logits.max())
            p /= p.sum()
            order = np.argsort(-p)
            margin = p[order[0]] - (p[order[1]] if len(p) > 1 else 0.0)
            rows.append(np.r_[g[order[0]], p[order[0]], margin])
            labels.append(float(order[0] == i))
        x, y = torch.from_numpy(np.array(rows, np.float32)), torch.tensor(labels)
        self.confidence = _lbfgs(x.shape[1], lambda c: F.binary_cross_entropy_with_logits(x @ c, y), l2)
        return self

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps(
                {
                    "features": FEATURES,
                    "rank": self.rank.tolist(),
                    "confidence": self.confidence.tolist(),
                    "threshold": self.threshold,
                },
                indent=1,
            )
        )

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        d = json.loads(Path(path).read_text())
        if d["features"] != FEATURES:
            raise ValueError(
                f"{path}: scorer was trained on features {d['features']}, this kgpipe computes {FEATURES}: retrain it"
            )
        return cls(np.array(d["rank"]), np.array(d["confidence"]), float(d["threshold"]))


def _lbfgs(n: int, loss_of: Callable[[torch.Tensor], torch.Tensor], l2: float) -> np.ndarray:
    w = torch.zeros(n, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=0.5, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_of(w) + l2 * (w[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float64)


def _default_weights() -> np.ndarray:
    """Hand-set fallback before any training: trust the prior and the name."""
    w = dict.fromkeys(FEATURES, 0.0) | {
        "bias": -3.0,
        "prior": 3.0,
        "name_ratio": 2.0,
        "rank_1": 1.0,
        "coherence_any": 1.0,
    }
    return np.array([w[f] for f in FEATURES])
