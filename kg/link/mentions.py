"""Mention detection: spaCy NER merged with a case-insensitive alias matcher over KG names.

NER spans win overlaps; alias matches fill the gaps, longest first. Given spans skip detection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kg.link.aliases import normalize

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

    from kg.link.aliases import AliasTable

# NER labels that name things a KG holds (dates, numbers and quantities do not)
ENTITY_LABELS = frozenset(
    {"PERSON", "ORG", "GPE", "LOC", "NORP", "FAC", "EVENT", "WORK_OF_ART", "PRODUCT", "LAW", "LANGUAGE"}
)


@dataclass(frozen=True)
class Mention:
    """A span of text that may name an entity: character offsets [start, end) into the document."""

    start: int
    end: int
    text: str
    label: str  # spaCy NER label, "ALIAS" for alias-matcher spans, "GIVEN" for user spans


class MentionFinder:
    """Finds mentions in spaCy docs; build once per process (the alias matcher is the slow part)."""

    def __init__(self, nlp: Language, aliases: AliasTable | None = None, max_alias_tokens: int = 6) -> None:
        from spacy.matcher import PhraseMatcher

        self.matcher: PhraseMatcher | None = None
        self.aliases = aliases
        if aliases is not None:
            self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
            tokenizer = nlp.tokenizer
            patterns = [tokenizer(key) for key in aliases.names() if len(key.split()) <= max_alias_tokens]
            for i in range(0, len(patterns), 10_000):
                self.matcher.add("ALIAS", patterns[i : i + 10_000])

    def find(self, doc: Doc) -> list[Mention]:
        chosen = [
            _without_article(Mention(e.start_char, e.end_char, e.text, e.label_))
            for e in doc.ents
            if e.label_ in ENTITY_LABELS
        ]
        if self.matcher is None or self.aliases is None:
            return chosen
        spans = [doc[s:e] for _, s, e in self.matcher(doc)]
        # an NER span that names nothing in the KG but holds names that do ('SEOUL 1996-08-30 Results
        # of South Korean', 'DETROIT CHICAGO' in headlines) gives way to those names
        table = self.aliases.aliases
        chosen = [
            m
            for m in chosen
            if normalize(m.text) in table
            or not any(
                m.start <= s.start_char
                and s.end_char <= m.end
                and s.end_char - s.start_char < m.end - m.start
                for s in spans
            )
        ]
        taken = [(m.start, m.end) for m in chosen]
        for span in sorted(spans, key=lambda s: (-(s.end_char - s.start_char), s.start_char)):
            if not _looks_like_a_name(span.text):
                continue
            if any(span.start_char < e and s < span.end_char for s, e in taken):
                continue
            taken.append((span.start_char, span.end_char))
            chosen.append(Mention(span.start_char, span.end_char, span.text, "ALIAS"))
        return sorted(chosen, key=lambda m: m.start)


def given_mentions(text: str, spans: Iterable[tuple[int, int]], doc: Doc | None = None) -> list[Mention]:
    """Mentions for user-given character spans (the `--spans` mode), typed by the NER where it
    found the same span, else labelled GIVEN."""
    ner = {(e.start_char, e.end_char): e.label_ for e in doc.ents} if doc is not None else {}
    return [Mention(s, e, text[s:e], ner.get((s, e), "GIVEN")) for s, e in spans]


def _looks_like_a_name(text: str) -> bool:
    """Alias matches must start with a capital or a digit: 'apple' in prose is rarely Apple Inc."""
    return bool(text) and (text[0].isupper() or text[0].isdigit())


def _without_article(m: Mention) -> Mention:
    """'the United States' → 'United States': NER spans may start with an article; names do not."""
    for article in ("the ", "The ", "THE "):
        if m.text.startswith(article) and len(m.text) > len(article):
            return Mention(m.start + len(article), m.end, m.text[len(article) :], m.label)
    return m
