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

from kg.errors import KGFormatError
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
    "src_demonym",
    "ner_mention",
    "all_caps",
    "alias_caps",
    "demonym_country",
    "common_noun",
    "context_sim",
    "context_best",
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


@dataclass
class Context:
    """What the features read about the KG, built once per linker."""

    kg: KnowledgeGraph
    types: list[str]
    log_degree: np.ndarray
    norm_labels: list[str]
    vectors: np.ndarray | None = None  # float32[num_entities, dim] unit rows, for context similarity

    @classmethod
    def build(cls, kg: KnowledgeGraph) -> Context:
        deg = kg.degrees(("train", "valid", "test"))
        return cls(
            kg,
            coarse_types(kg),
            np.log1p(deg) / max(np.log1p(deg.max()), 1.0),
            [normalize(x) for x in kg.labels],
        )


def featurize(
    ctx: Context,
    mentions: list[Mention],
    candidates: list[list[Candidate]],
    doc_vector: np.ndarray | None = None,
) -> list[np.ndarray]:
    """float32[n_candidates, len(FEATURES)] per mention; `doc_vector` (unit) enables context features."""
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
                    float(c.source == "demonym"),
                    float(m.label != "ALIAS"),
                    float(m.text.isupper()),
                    float(m.label == "ALIAS" and m.text.isupper()),
                    float(m.label == "NORP" and kg_type == "LOC"),  # nationality words name their country
                    float(
                        ctx.kg.labels[c.entity][:1].islower()
                    ),  # 'tennis', 'president': concepts, not names
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


@dataclass
class Scorer:
    """Two small models over FEATURES, saved as JSON.

    `rank` scores a mention's candidates against each other (softmax over them): a linear term plus
    a one-hidden-layer ReLU term (`hidden` units) for interactions such as "a nationality word and a
    country". `confidence` is a logistic model of whether the top candidate is right, reading its
    features plus its softmax probability and margin: below `threshold` the mention is NIL.
    """

    rank: np.ndarray = field(default_factory=lambda: _default_weights())
    confidence: np.ndarray = field(default_factory=lambda: np.r_[_default_weights(), 0.0, 0.0])
    threshold: float = 0.5
    hidden: dict[str, np.ndarray] = field(default_factory=dict)  # w1 [F, H], b1 [H], w2 [H]

    def logits(self, features: np.ndarray) -> np.ndarray:
        z = features @ self.rank
        if self.hidden:
            z = z + np.maximum(features @ self.hidden["w1"] + self.hidden["b1"], 0.0) @ self.hidden["w2"]
        return z

    def choose(self, features: np.ndarray) -> tuple[int, float]:
        """(index of the best candidate, P(it is right)) for one mention's candidate rows."""
        best, p, margin = self._top(features)
        z = np.r_[features[best], p, margin] @ self.confidence
        return best, float(1.0 / (1.0 + np.exp(-z)))

    def _top(self, features: np.ndarray) -> tuple[int, float, float]:
        logits = self.logits(features)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p)
        return int(order[0]), float(p[order[0]]), float(p[order[0]] - (p[order[1]] if len(p) > 1 else 0.0))

    def fit(
        self, groups: list[np.ndarray], gold: list[int], l2: float = 1e-3, hidden: int = 16, seed: int = 0
    ) -> Scorer:
        """`groups`: per mention its candidate rows; `gold`: the right row, or -1 (NIL / not found)."""
        known = [(g, i) for g, i in zip(groups, gold, strict=True) if i >= 0]
        width = max(len(g) for g, _ in known)
        x = torch.zeros(len(known), width, len(FEATURES))
        mask = torch.zeros(len(known), width, dtype=torch.bool)
        for row, (g, _) in enumerate(known):
            x[row, : len(g)] = torch.from_numpy(g)
            mask[row, : len(g)] = True
        target = torch.tensor([i for _, i in known])
        torch.manual_seed(seed)
        lin = torch.zeros(len(FEATURES), requires_grad=True)
        w1 = (0.1 * torch.randn(len(FEATURES), hidden)).requires_grad_()
        b1 = torch.zeros(hidden, requires_grad=True)
        w2 = torch.zeros(hidden, requires_grad=True)
        opt = torch.optim.Adam([lin, w1, b1, w2], lr=0.02)
        for _ in range(400):
            logits = (x @ lin + torch.relu(x @ w1 + b1) @ w2).masked_fill(~mask, -1e9)
            loss = F.cross_entropy(logits, target) + l2 * (
                lin[1:].pow(2).sum() + w1.pow(2).sum() + w2.pow(2).sum()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.rank = lin.detach().double().numpy()
        self.hidden = {
            "w1": w1.detach().double().numpy(),
            "b1": b1.detach().double().numpy(),
            "w2": w2.detach().double().numpy(),
        }
        rows, labels = [], []
        for g, i in zip(groups, gold, strict=True):
            best, p, margin = self._top(g)
            rows.append(np.r_[g[best], p, margin])
            labels.append(float(best == i))
        xc, y = torch.from_numpy(np.array(rows, np.float32)), torch.tensor(labels)
        self.confidence = _lbfgs(xc.shape[1], lambda c: F.binary_cross_entropy_with_logits(xc @ c, y), l2)
        return self

    def save(self, path: str | Path) -> None:
        state = {
            "features": FEATURES,
            "rank": self.rank.tolist(),
            "confidence": self.confidence.tolist(),
            "threshold": self.threshold,
        }
        state["hidden"] = {k: v.tolist() for k, v in self.hidden.items()}
        Path(path).write_text(json.dumps(state))

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        d = json.loads(Path(path).read_text())
        if d["features"] != FEATURES:
            raise KGFormatError(
                path,
                None,
                f"the scorer was trained on features {d['features']}, not the {len(FEATURES)} this kgpipe computes",
                "Retrain it with `python benchmarks/el.py train`",
            )
        hidden = {k: np.array(v) for k, v in d.get("hidden", {}).items()}
        return cls(np.array(d["rank"]), np.array(d["confidence"]), float(d["threshold"]), hidden)


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
