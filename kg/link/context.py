"""What linking reads about the KG, built once per linker: coarse entity types, sports teams, kinds
of person, popularity, normalised labels, neighbours (cached), and the entity and TransE vector
tables.

Candidate generation and the features both read it; it imports neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kg.cache import Memo
from kg.graph import KnowledgeGraph
from kg.link.aliases import normalize

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


# relations that say their head is a kind of person ('physicist', 'mayor', 'quarterback'), or their
# tail is: a profession, a job title, an office, a position on a team (the other sports' positions
# head a /sports/sports_position/ relation)
_ROLE_HEADS = (
    "/people/profession/",
    "/business/job_title/",
    "/organization/role/",
    "/government/government_office_category/",
    "/sports/sports_position/",
)
_ROLE_TAILS = (
    "/people/person/profession",
    "/government/government_position_held/basic_title",
    "/sports/sports_team_roster/position",
    "/american_football/football_roster_position/position",
)


def person_roles(kg: KnowledgeGraph) -> np.ndarray:
    """bool[num_entities]: entities that are a kind of person (a profession, a title, an office, a
    team position: 'poet', 'professor', 'quarterback'), by the relations they head or end. A concept
    of this kind ('the physicist') is what corpora that annotate concepts annotate most; an activity
    or a thing ('golf', 'interview') much less. Freebase files a few fields as professions too
    ('acting', 'photography', 'engineering': 22 of FB15k-237's 291); they are taken as they come."""
    head = np.array([key.startswith(_ROLE_HEADS) for key in kg.relations], dtype=bool)
    tail = np.array([key.endswith(_ROLE_TAILS) for key in kg.relations], dtype=bool)
    train = kg.triples["train"]
    out = np.zeros(kg.num_entities, dtype=bool)
    out[train[head[train[:, 1]], 0]] = True
    out[train[tail[train[:, 1]], 2]] = True
    return out


@dataclass
class Context:
    """What the features read about the KG, built once per linker."""

    kg: KnowledgeGraph
    types: list[str]
    log_degree: np.ndarray
    norm_labels: list[str]
    teams: np.ndarray  # bool[num_entities]: sports teams and clubs
    roles: np.ndarray  # bool[num_entities]: kinds of person ('physicist', 'mayor')
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
            person_roles(kg),
        )
