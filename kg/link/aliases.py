"""The alias table: normalised names → candidate entities with priors, built from a KG's names.

Priors come from the evidence the KG gives: whether a name is the entity's label or an alias, and
how connected the entity is (degree); `AliasTable.lookup` is exact, `fuzzy` uses rapidfuzz.
Countries also get the names and demonyms the `countryinfo` package knows ('Holland', 'UK',
'Dutch', 'Israelis'): news text names countries by their adjectives far more often than by label.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kg.cache import Memo
from kg.graph import KnowledgeGraph
from kg.storage import atomic_write

_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")
LABEL_WEIGHT, ALIAS_WEIGHT, SHORT_WEIGHT = 1.0, 0.5, 0.6
# legal-form and club words that names drop in running text: 'St Mirren' for 'St. Mirren F.C.'
_FORMS = re.compile(
    r"^(?:fc|afc|cf|sc|ac|as|ss|sv|fk|nk)\s+|\s+(?:fc|afc|cf|sc|ac|bc|fk|inc|ltd|plc|corp|corporation|co|llc|ag|sa|gmbh|nv)$"
)


def _country_names() -> list[tuple[set[str], str]]:
    """(other names and demonyms, normalised name) of each country `countryinfo` knows; ISO codes
    other than 'UK'/'USA'-style ones in common use are left out ('CH', 'AND' are words)."""
    from countryinfo import all_countries

    out = []
    for c in all_countries():
        info = c.info()
        codes = set((info.get("ISO") or {}).values())
        names = {normalize(a) for a in c.alt_spellings() if a not in codes or a in ("UK", "USA")}
        for demonym in (c.demonym() or "").split(","):
            key = normalize(demonym)
            if key:
                names |= {key, key + "s"} if key.endswith(("an", "i")) else {key}  # Israelis, Americans
        out.append(({n for n in names if len(n) >= 2}, normalize(c.name())))
    return out


@lru_cache(maxsize=1 << 18)
def normalize(name: str) -> str:
    """Case-folded, accents stripped, '.' dropped (U.N. = UN), spaces collapsed, edge punctuation trimmed."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().replace(".", "")
    return _EDGE_PUNCT.sub("", _SPACES.sub(" ", plain)).strip()


def plural(name: str) -> str:
    """The English plural of a common noun's last word ('physicist' → 'physicists', 'city' →
    'cities', 'full professor' → 'full professors'): the regular rules, which cover the concepts
    a KG names; irregular plurals stay unmatched."""
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def short_form(key: str) -> str:
    """A normalised name without its legal-form or club word ('manchester united fc' → 'manchester united')."""
    return _FORMS.sub("", key).strip()


@dataclass(frozen=True)
class Candidate:
    """One entity a mention may refer to, with the evidence gathered so far."""

    entity: int
    prior: float
    source: str  # "alias", "fuzzy", "coref", "graph", "longer", "demonym"
    name_score: float = 1.0


class AliasTable:
    """alias (normalised) → [(entity id, prior)], priors summing to 1 per alias."""

    def __init__(self, aliases: dict[str, list[tuple[int, float]]]) -> None:
        self.aliases = aliases
        self._keys: list[str] | None = None
        self.fuzzy_memo: Memo[tuple[str, int, float], list[Candidate]] = Memo(100_000)

    @classmethod
    def from_kg(
        cls, kg: KnowledgeGraph, popularity: float = 0.5, other_names: Mapping[str, list[str]] | None = None
    ) -> AliasTable:
        """Weights: label 1.0, alias 0.5, times (1 + degree) ** popularity; only entities with a QID.
        `other_names`: QID → more names, weighted as aliases (`kg.link.leads` mines them)."""
        degree = kg.degrees(("train", "valid", "test")).astype(np.float64)
        weight: dict[str, dict[int, float]] = defaultdict(dict)
        more = other_names or {}
        for i, qid in enumerate(kg.qids):
            if not qid:
                continue
            pop = (1.0 + degree[i]) ** popularity
            names = [(kg.labels[i], LABEL_WEIGHT)] + [
                (a, ALIAS_WEIGHT) for a in (*kg.aliases[i], *more.get(qid, ()))
            ]
            if kg.labels[i][:1].islower():  # a concept ('physicist'): text names it in the plural too
                names.append((plural(kg.labels[i]), ALIAS_WEIGHT))
            for name, w in names:
                key = normalize(name)
                for variant, vw in ((key, w), (short_form(key), w * SHORT_WEIGHT)):
                    if len(variant) >= 2:
                        weight[variant][i] = max(weight[variant].get(i, 0.0), vw * pop)
        for country_names, country in _country_names():
            named = weight.get(country, {})
            if not named:
                continue
            e = max(named, key=lambda x: named[x])  # the best-connected entity of that name
            pop = (1.0 + degree[e]) ** popularity
            for other in country_names:
                weight[other][e] = max(weight[other].get(e, 0.0), ALIAS_WEIGHT * pop)
        table = {}
        for key, ents in weight.items():
            total = sum(ents.values())
            table[key] = sorted(((e, w / total) for e, w in ents.items()), key=lambda x: -x[1])
        return cls(table)

    def __len__(self) -> int:
        return len(self.aliases)

    def lookup(self, name: str, k: int = 30) -> list[Candidate]:
        return [Candidate(e, p, "alias") for e, p in self.aliases.get(normalize(name), [])[:k]]

    def names(self) -> list[str]:
        if self._keys is None:
            self._keys = list(self.aliases)
        return self._keys

    @cached_property
    def _by_initial(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for key in self.aliases:
            groups[key[0]].append(key)
        return groups

    def fuzzy(self, name: str, k: int = 10, cutoff: float = 80.0) -> list[Candidate]:
        """Entities of the aliases most similar to `name` (rapidfuzz ratio ≥ cutoff), among
        aliases with the same first letter: misspellings rarely change it, and it is 20× faster."""
        from rapidfuzz import fuzz, process

        key = normalize(name)

        def compute() -> list[Candidate]:
            out: dict[int, Candidate] = {}
            for alias, score, _ in process.extract(
                key, self._by_initial.get(key[:1], []), scorer=fuzz.ratio, limit=k, score_cutoff=cutoff
            ):
                for e, p in self.aliases[alias][:3]:
                    if e not in out:
                        out[e] = Candidate(e, p * score / 100.0, "fuzzy", score / 100.0)
            return list(out.values())

        return self.fuzzy_memo.get_or_compute((key, k, cutoff), compute)  # names recur across documents

    def save(self, path: str | Path) -> None:
        keys, ents, priors = [], [], []
        for key, cands in self.aliases.items():
            for e, p in cands:
                keys.append(key)
                ents.append(e)
                priors.append(p)
        table = pa.table(
            {"alias": keys, "entity": pa.array(ents, pa.int32()), "prior": pa.array(priors, pa.float32())}
        )
        with atomic_write(path, "wb") as f:
            pq.write_table(table, f, compression="zstd")

    @classmethod
    def load(cls, path: str | Path) -> AliasTable:
        t = pq.read_table(path).to_pydict()
        table: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for key, e, p in zip(t["alias"], t["entity"], t["prior"], strict=True):
            table[key].append((e, p))
        return cls(dict(table))
