"""Candidate generation: alias table, in-document coreference of partial names, fuzzy names, and
graph expansion (KG neighbours of an alias match, e.g. a city's sports teams).

`CandidateGenerator.generate` returns, per mention, up to `k` candidates with their evidence.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from kg.graph import KnowledgeGraph
from kg.link.aliases import AliasTable, Candidate, normalize
from kg.link.mentions import Mention

_ABBREV = re.compile(r"^[A-Z](?:\.?[A-Z])+\.?$")


@dataclass
class CandidateGenerator:
    """Everything candidate generation reads, built once per process."""

    kg: KnowledgeGraph
    aliases: AliasTable
    k: int = 30
    fuzzy: bool = True
    graph_expansion: int = 10  # neighbours added per alias-matched candidate (0: off)

    def generate(self, mentions: list[Mention]) -> list[list[Candidate]]:
        found: list[list[Candidate]] = []
        for i, m in enumerate(mentions):
            cands = {c.entity: c for c in self.aliases.lookup(m.text, self.k)}
            if not cands:
                for c in self._coreferent(m, mentions[:i], found):
                    cands.setdefault(c.entity, c)
            if (
                not cands
                and self.fuzzy
                and m.label != "ALIAS"
                and len(m.text) > 3
                and not _ABBREV.match(m.text)
            ):
                cands = {c.entity: c for c in self.aliases.fuzzy(m.text)}
            if self.graph_expansion:
                for c in self._expand(normalize(m.text), list(cands.values())[:3]):
                    cands.setdefault(c.entity, c)
            found.append(sorted(cands.values(), key=lambda c: -c.prior)[: self.k])
        return found

    def _coreferent(
        self, m: Mention, earlier: list[Mention], earlier_cands: list[list[Candidate]]
    ) -> list[Candidate]:
        """A short mention that is a word of an earlier, longer one ('Arafat' after 'Yasser Arafat')."""
        key = normalize(m.text)
        out: list[Candidate] = []
        for prev, cands in zip(reversed(earlier), reversed(earlier_cands), strict=True):
            words = normalize(prev.text).split()
            if len(words) > 1 and key in words and cands:
                out.extend(replace(c, source="coref") for c in cands[:3])
                break
        return out

    def _expand(self, key: str, seeds: list[Candidate]) -> list[Candidate]:
        """KG neighbours of strong alias matches whose name contains the mention ('Chicago' →
        'Chicago White Sox', 'England' → 'England cricket team'): metonymy lives one hop away."""
        if len(key) < 3:
            return []
        adj = self.kg.adjacency
        out: list[Candidate] = []
        for seed in seeds:
            neigh = np.unique(adj.neighbor[adj.row(seed.entity)])
            for n in neigh[self._prefix3[neigh] == key[:3]].tolist():  # a cheap sieve before the string test
                if (
                    self.kg.qids[n]
                    and _related_name(key, self._labels[n])
                    and len(out) < self.graph_expansion
                ):
                    out.append(Candidate(n, seed.prior * 0.1, "graph", 0.0))
        return out

    @cached_property
    def _labels(self) -> list[str]:
        return [normalize(x) for x in self.kg.labels]

    @cached_property
    def _prefix3(self) -> np.ndarray:
        return np.array([x[:3] for x in self._labels])


def _related_name(key: str, label: str) -> bool:
    """The neighbour's name contains the mention ('chicago' in 'chicago white sox') or shares its
    stem ('polish'/'poland', 'israeli'/'israel'): metonymy and demonyms."""
    if key in label:
        return True
    first = label.split(" ", 1)[0]
    common = len(os.path.commonprefix([key, first]))  # noqa: RUF071 (characters are what we compare)
    return common >= 3 and common >= 0.5 * min(len(key), len(first))


def candidate_recall(gold: list[int | None], candidates: list[list[Candidate]]) -> float:
    """Share of mentions with a gold entity whose candidates contain it."""
    hits = [
        g in {c.entity for c in cands} for g, cands in zip(gold, candidates, strict=True) if g is not None
    ]
    return float(np.mean(hits)) if hits else 0.0
