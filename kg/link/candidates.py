"""Candidate generation: alias table, in-document coreference of partial names, fuzzy names, dense
search over entity descriptions for names none of those find, longer names that start with the
mention ('Luton' → Luton Town F.C.), and graph expansion (KG neighbours of an alias match, e.g. a
city's sports teams).

`CandidateGenerator.generate` returns, per mention, up to `k` candidates with their evidence.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from rapidfuzz import fuzz

from kg.cache import Memo
from kg.graph import KnowledgeGraph
from kg.link.aliases import AliasTable, Candidate, normalize
from kg.link.context import Context
from kg.link.dense import DenseIndex
from kg.link.mentions import Mention

_DEMONYM = re.compile(r"^[A-Z][a-z]+(?:an|ian|ese|ish|i|ic|ch|ss|k|s)$")  # Israeli, Mexican, Sudanese, Tajik
_ADJECTIVE_SUFFIXES = ("an", "n", "ian", "ean", "ic", "ish", "ese", "i")
_ABBREV = re.compile(r"^[A-Z](?:\.?[A-Z])+\.?$")


@dataclass
class CandidateGenerator:
    """Everything candidate generation reads, built once per process."""

    context: Context  # the KG with its normalised names and coarse types, shared with the scorer
    aliases: AliasTable
    k: int = 30
    fuzzy: bool = True
    graph_expansion: int = 25  # neighbours added per mention, best-connected first (0: off)
    longer_names: int = 10  # entities whose name starts with the mention, best-connected first (0: off)
    dense: DenseIndex | None = None  # entity-description search for names no alias matches
    dense_k: int = 10
    dense_hits_memo: Memo[str, list[tuple[int, float]]] = field(
        default_factory=lambda: Memo(100_000), repr=False
    )
    neighbours_named_memo: Memo[tuple[str, int], list[int]] = field(
        default_factory=lambda: Memo(100_000), repr=False
    )

    def generate(self, mentions: list[Mention]) -> list[list[Candidate]]:
        base: list[dict[int, Candidate]] = []
        settled: set[int] = set()  # surnames of people named before: their candidates and no others
        for i, (m, person) in enumerate(zip(mentions, person_antecedents(mentions), strict=True)):
            if person is not None:  # 'Jordan' after 'Neil Jordan' is him, not the country
                best = sorted(base[person].values(), key=lambda c: -c.prior)[:3]
                base.append({c.entity: self._as_coref(c, mentions[person]) for c in best})
                if not best:  # a person the KG lacks: so is their surname
                    settled.add(i)
                continue
            cands = {c.entity: c for c in self.aliases.lookup(m.text, self.k)}
            if not cands:
                for c in self._coreferent(m, mentions[:i], base):
                    cands.setdefault(c.entity, c)
            if (
                not cands
                and self.fuzzy
                and m.label not in ("ALIAS", "NOUN")
                and len(m.text) > 3
                and not _ABBREV.match(m.text)
            ):
                cands = {c.entity: c for c in self.aliases.fuzzy(m.text)}
            base.append(cands)
        if self.dense is not None:  # names no alias knows, searched together in one batch
            unknown = [
                i
                for i, (m, cands) in enumerate(zip(mentions, base, strict=True))
                if not cands and _describable(m) and i not in settled
            ]
            hits = self.dense_hits([mentions[i].text for i in unknown])
            for i in unknown:
                base[i] = {
                    e: Candidate(e, 0.01 * max(score, 0.0), "dense", score)
                    for e, score in hits[mentions[i].text]
                }
        found: list[list[Candidate]] = []
        for i, (m, cands) in enumerate(zip(mentions, base, strict=True)):
            if i in settled or m.label == "NOUN":  # a concept's word names it, not a place's team
                found.append(list(cands.values()))
                continue
            if self.graph_expansion:
                for c in self._expand(normalize(m.text), list(cands.values())[:3]):
                    cands.setdefault(c.entity, c)
            if self.longer_names and m.label != "PERSON":
                for c in self._named_longer(normalize(m.text)):
                    cands.setdefault(c.entity, c)
            if _DEMONYM.search(m.text) or m.label == "NORP":
                for c in self._demonym_of(normalize(m.text)):
                    # 'European' is Europe's adjective, not a misspelling of it: the demonym
                    # evidence replaces a fuzzy match of the same entity
                    old = cands.get(c.entity)
                    if old is None or old.source == "fuzzy":
                        cands[c.entity] = c
            found.append(sorted(cands.values(), key=lambda c: -c.prior)[: self.k])
        return found

    def prefetch(self, mentions: list[Mention]) -> None:
        """Search, in one batch, the names of many documents' mentions that no alias knows, so
        that `generate` finds them cached (`Linker.link_many` calls it once per chunk of documents)."""
        if self.dense is not None:
            self.dense_hits(
                [m.text for m in mentions if _describable(m) and not self.aliases.lookup(m.text, 1)]
            )

    def dense_hits(self, texts: list[str]) -> dict[str, list[tuple[int, float]]]:
        """Dense-search hits per text, from the cache where a text was searched before."""
        assert self.dense is not None
        memo = self.dense_hits_memo
        found = {t: memo.get(t) for t in dict.fromkeys(texts)}
        todo = [t for t, hits in found.items() if hits is None]
        for t, hits in zip(todo, self.dense.search(todo, self.dense_k), strict=True):
            found[t] = memo.put(t, hits)
        return {t: found[t] or [] for t in texts}

    def names_something(self, m: Mention) -> bool:
        """Whether the span finds entities by its own name: exactly, fuzzily or as a demonym."""
        key = normalize(m.text)
        return bool(
            self.aliases.lookup(m.text, 1)
            or (self.fuzzy and len(key) > 3 and self.aliases.fuzzy(m.text, k=1))
            or ((_DEMONYM.search(m.text) or m.label == "NORP") and self._demonym_of(key))
        )

    def _coreferent(
        self, m: Mention, earlier: list[Mention], earlier_cands: list[dict[int, Candidate]]
    ) -> list[Candidate]:
        """A short mention that is a word of an earlier, longer one ('Arafat' after 'Yasser Arafat')."""
        key = normalize(m.text)
        out: list[Candidate] = []
        for prev, cands in zip(reversed(earlier), reversed(earlier_cands), strict=True):
            words = normalize(prev.text).split()
            if len(words) > 1 and key in words and cands:
                best = sorted(cands.values(), key=lambda c: -c.prior)[:3]
                out.extend(replace(c, source="coref") for c in best)
                break
        return out

    def _as_coref(self, c: Candidate, antecedent: Mention) -> Candidate:
        """A candidate of the earlier, fuller name, whose name evidence it keeps: the name scores
        compare the entity with 'Neil Jordan', not with 'Jordan'."""
        similarity = fuzz.ratio(normalize(antecedent.text), self._labels[c.entity]) / 100.0
        return replace(c, source="coref", name_score=similarity)

    def _expand(self, key: str, seeds: list[Candidate]) -> list[Candidate]:
        """KG neighbours of strong alias matches whose name contains the mention ('Chicago' →
        'Chicago White Sox', 'England' → 'England cricket team'): metonymy lives one hop away."""
        if len(key) < 3:
            return []
        out: list[Candidate] = []
        for seed in seeds:
            for n in self._neighbours_named_like(key, seed.entity):
                if len(out) < self.graph_expansion:
                    out.append(Candidate(n, seed.prior * 0.1, "graph", 0.0))
        return out

    def _neighbours_named_like(self, key: str, entity: int) -> list[int]:
        """`entity`'s KG neighbours whose name is related to `key`, best-connected first; cached,
        as documents keep naming the same places."""

        def compute() -> list[int]:
            adj = self.kg.adjacency
            neigh = np.unique(adj.neighbor[adj.row(entity)])
            neigh = neigh[np.argsort(-self._degree[neigh], kind="stable")]
            return [
                n
                for n in neigh[self._prefix3[neigh] == key[:3]].tolist()  # a cheap sieve first
                if self.kg.qids[n] and _related_name(key, self._labels[n])
            ]

        return self.neighbours_named_memo.get_or_compute((key, entity), compute)

    def _named_longer(self, key: str) -> list[Candidate]:
        """Entities whose name is the mention plus more words: a place standing for its team or
        club ('Luton' → Luton Town F.C., 'Cincinnati' → Cincinnati Reds), a short form of an
        organisation ('Red Star' → Red Star Belgrade). Person names are left to coreference."""
        if len(key) < 3:
            return []
        found = [
            i
            for i in self._by_first_word.get(key.split(" ", 1)[0], [])
            if self._labels[i].startswith(key + " ")
        ][: self.longer_names]
        total = float(sum(self._degree[i] for i in found)) or 1.0
        return [Candidate(i, 0.1 * self._degree[i] / total, "longer", 0.0) for i in found]

    @cached_property
    def _by_first_word(self) -> dict[str, list[int]]:
        """Entities with a name of two or more words, by its first word, best-connected first."""
        index: dict[str, list[int]] = {}
        for i, label in enumerate(self._labels):
            if " " in label and self.kg.qids[i]:
                index.setdefault(label.split(" ", 1)[0], []).append(i)
        for ids in index.values():
            ids.sort(key=lambda i: -self._degree[i])
        return index

    def _demonym_of(self, key: str) -> list[Candidate]:
        """What an adjective or demonym names: places sharing its stem ('Israeli' → Israel) and any
        entity whose name it derives from by an English suffix ('Islamic' → Islam, 'European' →
        Europe, 'Latin American' → Latin America)."""
        found = self._places_named_like(key)
        seen = {c.entity for c in found}
        derived = [i for i in self._derived_names.get(key, []) if i not in seen]
        if derived:
            total = float(sum(self._degree[i] for i in derived)) or 1.0
            found += [Candidate(i, 0.5 * self._degree[i] / total, "demonym", 0.0) for i in derived[:5]]
        return found

    @cached_property
    def _derived_names(self) -> dict[str, list[int]]:
        """Adjectives made from entity names by English suffixes ('islam' + 'ic', 'europ(e)' +
        'ean', 'africa' + 'n') → those entities, best-connected first."""
        out: dict[str, list[int]] = {}
        for i, label in enumerate(self._labels):
            if not self.kg.qids[i] or len(label) < 4 or not label[-1:].isalpha():
                continue
            stems = {label, label[:-1]} if label[-1] in "aeyo" else {label}
            for stem in stems:
                for suffix in _ADJECTIVE_SUFFIXES:
                    out.setdefault(stem + suffix, []).append(i)
        for ids in out.values():
            ids.sort(key=lambda i: -self._degree[i])
        return out

    def _places_named_like(self, key: str) -> list[Candidate]:
        """Places whose name shares the mention's stem: 'Israeli' → Israel, 'Mexican' → Mexico."""
        if len(key) < 4:
            return []
        if " " in key:  # 'latin american' → Latin America, 'south korean' → South Korea
            found = [
                i
                for i in self._places.get(key[:3], [])
                if self._labels[i].startswith(key[:-3]) and abs(len(self._labels[i]) - len(key)) <= 3
            ]
        else:
            found = [i for i in self._places.get(key[:3], []) if _related_name(key, self._labels[i])]
        total = float(sum(self._degree[i] for i in found)) or 1.0
        return [Candidate(i, 0.5 * self._degree[i] / total, "demonym", 0.0) for i in found[:5]]

    @cached_property
    def _places(self) -> dict[str, list[int]]:
        """Entities that head a /location/country-style relation, by name prefix, best-connected first."""
        places: dict[str, list[int]] = {}
        for i, t in enumerate(self.context.types):
            if t == "LOC" and self.kg.qids[i] and self._labels[i]:
                places.setdefault(self._labels[i][:3], []).append(i)
        for ids in places.values():
            ids.sort(key=lambda i: -self._degree[i])
        return places

    @cached_property
    def _degree(self) -> np.ndarray:
        return self.kg.degrees()

    @property
    def kg(self) -> KnowledgeGraph:
        return self.context.kg

    @property
    def _labels(self) -> list[str]:
        return self.context.norm_labels

    @cached_property
    def _prefix3(self) -> np.ndarray:
        return np.array([x[:3] for x in self._labels])


def person_antecedents(mentions: list[Mention]) -> list[int | None]:
    """Per mention, the latest earlier mention that NER calls a person and whose name has it as one
    of its words ('Washington' after 'MaliVai Washington'), or None: within a document a surname
    names the person named in full before, whether or not the KG knows them (then it is NIL too)."""
    surnames: dict[str, int] = {}  # a later word of a person's name → that mention
    first_names: dict[str, int] = {}
    out: list[int | None] = []
    for i, m in enumerate(mentions):
        key = normalize(m.text)
        single = " " not in m.text.strip() and m.text[:1].isupper()
        # a surname, or a first name that NER also calls a person ('Alan' after 'Alan Shearer')
        found = surnames.get(key) if single else None
        if single and m.label == "PERSON" and key in first_names:
            found = max(found if found is not None else -1, first_names[key])
        out.append(found)
        words = key.split()
        if m.label == "PERSON" and len(words) > 1:
            first_names[words[0]] = i
            for w in words[1:]:
                surnames[w] = i
    return out


def _describable(m: Mention) -> bool:
    """Whether dense search over descriptions may find the mention's entity: not for alias-matcher
    spans (their name is known) nor for people, whose names say nothing about them ('John Smith'
    finds other Smiths); those are matched by name, fuzzily and by coreference. Nor for pieces of
    a cut NER span ('Prices' from 'UNITED STATES - Prices'): the span was wrong, its words may be
    no name at all."""
    return m.label not in ("ALIAS", "NOUN", "PERSON", "PART")


def _related_name(key: str, label: str) -> bool:
    """The neighbour's name contains the mention ('chicago' in 'chicago white sox') or shares its
    stem ('polish'/'poland', 'israeli'/'israel'): metonymy and demonyms."""
    if key in label:
        return True
    first = label.split(" ", 1)[0]
    common = len(os.path.commonprefix([key, first]))  # noqa: RUF071 (characters are what we compare)
    return common >= 3 and common >= 0.5 * min(len(key), len(first))
