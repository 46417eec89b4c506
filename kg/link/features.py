"""Features of each (mention, candidate) pair, for the scorer: columns built by name.

`featurize` (first pass): prior, name similarity, exact label match, NER-type/KG-type agreement,
popularity, graph coherence with the document's other candidates, the candidate's source, marks of
the words beside the mention, context similarity. `collective_features` (second pass): how each
candidate fits the first pass's choices for the document's other mentions.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import pairwise

import numpy as np
from rapidfuzz import fuzz

from kg.link.aliases import Candidate, normalize
from kg.link.context import NER_COARSE, Context
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
    "src_longer",
    "src_dense",
    "dense_sim",
    "ner_mention",
    "noun_mention",
    "word_freq",
    "doc_length",
    "all_caps",
    "alias_caps",
    "demonym_country",
    "common_noun",
    "person_role",
    "apposed_related",
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
    "name_beside",
    "place_name_beside",
    "team_name_beside",
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


def featurize(
    ctx: Context,
    mentions: list[Mention],
    candidates: list[list[Candidate]],
    doc_vector: np.ndarray | None = None,
    text_length: int | None = None,
) -> list[np.ndarray]:
    """float32[n_candidates, len(FEATURES)] per mention, its columns built by name in the order of
    FEATURES; `doc_vector` (unit) enables the context features; `text_length` (characters, default
    where the last mention ends) tells a tweet from an article."""
    if text_length is None:
        text_length = max((m.end for m in mentions), default=0)
    doc_length = float(np.log1p(text_length)) / 10.0
    doc_cands = [{c.entity for c in cands[:5]} for cands in candidates]
    apposed = _apposed(mentions, doc_cands)
    # coherence counts the other mentions that could share a neighbour: those with candidates (a
    # user handle or an unknown name in a tweet has none)
    with_candidates = sum(bool(c) for c in doc_cands)
    doc_numbers = sum(m.beside_number for m in mentions) / max(len(mentions), 1)  # a results table
    return [
        _mention_block(
            ctx,
            m,
            cands,
            doc_cands[:i] + doc_cands[i + 1 :],
            with_candidates - bool(doc_cands[i]),
            apposed[i],
            doc_numbers,
            doc_vector,
            doc_length,
        )
        for i, (m, cands) in enumerate(zip(mentions, candidates, strict=True))
    ]


APPOSED_GAP = 3  # characters between two mentions side by side: ', ', ' , ', ' / ', a space


def _apposed(mentions: list[Mention], doc_cands: list[set[int]]) -> list[set[int]]:
    """Per mention, the top candidates of the mentions right beside it (at most APPOSED_GAP
    characters apart, before or after, with only a comma or a space between: not across a
    sentence's end): a place and its state or country, a person and their title stand so, and
    are KG neighbours."""
    out: list[set[int]] = [set() for _ in mentions]
    order = sorted(range(len(mentions)), key=lambda i: (mentions[i].start, mentions[i].end))
    for i, j in pairwise(order):
        if mentions[i].joined_after and 0 <= mentions[j].start - mentions[i].end <= APPOSED_GAP:
            out[i] |= doc_cands[j]
            out[j] |= doc_cands[i]
    return out


def _mention_block(
    ctx: Context,
    m: Mention,
    cands: list[Candidate],
    other_cands: list[set[int]],
    others_with_candidates: int,
    apposed: set[int],
    doc_numbers: float,
    doc_vector: np.ndarray | None,
    doc_length: float,
) -> np.ndarray:
    """One mention's feature rows: a column per name of FEATURES."""
    n = len(cands)
    if not n:
        return np.zeros((0, len(FEATURES)), np.float32)
    others = set().union(*other_cands) if other_cands else set()
    key = normalize(m.text)
    ner_type = NER_COARSE.get(m.label, "")
    ents = [c.entity for c in cands]
    source = np.array([c.source for c in cands])
    prior = np.array([c.prior for c in cands], np.float64)
    name_score = np.array([c.name_score for c in cands], np.float64)
    coref = source == "coref"
    kg_type = np.array([ctx.types[e] for e in ents])
    team = ctx.teams[ents].astype(bool)
    place = kg_type == "LOC"
    shared = np.array([len(ctx.neighbours(e) & others) if others else 0 for e in ents], np.float64)
    # a coreferent mention ('Jordan') keeps its fuller antecedent's name evidence
    ratio = np.array([fuzz.ratio(key, ctx.norm_labels[e]) / 100.0 for e in ents])
    exact = np.array([key == ctx.norm_labels[e] for e in ents])
    col: dict[str, object] = {
        "bias": 1.0,
        "prior": prior,
        "log_prior": np.log(prior + 1e-4),
        "rank_1": np.arange(n) == 0,
        "name_ratio": np.where(coref, name_score, ratio),
        "label_match": np.where(coref, name_score == 1.0, exact),
        "type_match": (kg_type == ner_type) & bool(ner_type),
        "type_clash": (kg_type != ner_type) & (kg_type != "") & bool(ner_type),
        "popularity": ctx.log_degree[ents],
        "coherence": np.minimum(shared / max(others_with_candidates, 1), 1.0),
        "coherence_any": shared > 0,
        "n_candidates": np.log1p(n),
        **{
            f"src_{s}": source == s
            for s in ("alias", "coref", "fuzzy", "graph", "demonym", "longer", "dense")
        },
        "dense_sim": np.where(source == "dense", name_score, 0.0),
        "ner_mention": m.label not in ("ALIAS", "NOUN"),
        "noun_mention": m.label == "NOUN",
        # how common the words are in English (Zipf scale / 8): 'red' and 'government' are words
        # first, 'physicist' names its concept whenever it is used
        "word_freq": word_frequency(m.text),
        "doc_length": doc_length,
        "all_caps": m.text.isupper(),
        "alias_caps": m.label == "ALIAS" and m.text.isupper(),
        "demonym_country": (m.label == "NORP") & place,  # nationality words name their country
        "common_noun": np.array([ctx.kg.labels[e][:1].islower() for e in ents]),  # 'tennis': a concept
        "person_role": ctx.roles[ents],  # 'poet', 'mayor': the concepts corpora annotate most
        # a KG neighbour of a likely entity of the mention right beside it: 'Columbus , GA',
        # 'Salem,Ore', 'Paris, France', 'actress Joanne Woodward'
        "apposed_related": np.array([bool(apposed and ctx.neighbours(e) & apposed) for e in ents]),
        "beside_number": m.beside_number,
        "team_beside_number": m.beside_number & team,
        "place_beside_number": m.beside_number & place,
        "team_doc_numbers": doc_numbers * team,
        "place_doc_numbers": doc_numbers * place,
        "in_compound": m.in_compound,
        "context_sim": 0.0,
        "context_best": 0.0,
    }
    # each mark of the words beside the mention, alone and with the candidate's kind
    for mark, flag in (
        ("dateline", m.dateline),
        ("bracketed", m.bracketed),
        ("place_word", m.place_word),
        ("contest", m.contest),
        ("name_beside", m.name_beside),
    ):
        col[mark], col[f"place_{mark}"], col[f"team_{mark}"] = flag, flag & place, flag & team
    if doc_vector is not None and ctx.vectors is not None:
        sims = ctx.vectors[ents] @ doc_vector
        col["context_sim"], col["context_best"] = sims, sims >= sims.max() - 1e-6
    block = np.empty((n, len(FEATURES)), np.float32)
    for j, name in enumerate(FEATURES):
        block[:, j] = col[name]  # type: ignore[call-overload]
    return block


@lru_cache(maxsize=1 << 16)
def word_frequency(text: str) -> float:
    """The text's frequency in English on the Zipf scale (0: unknown, 8: 'the'), divided by 8."""
    from wordfreq import zipf_frequency

    return zipf_frequency(text.lower(), "en") / 8.0


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
