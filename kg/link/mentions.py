"""Mention detection: spaCy NER merged with a case-insensitive alias matcher over KG names.

NER spans win overlaps, except with a KG name that joins several of them; alias matches fill the
gaps, longest first. Given spans skip detection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kg.link.aliases import normalize

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc, Span, Token

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
    # spaCy NER label; "PART": a piece of a cut NER span, or a KG name that NER saw as part of a
    # longer span or as several; "ALIAS": an alias-matcher span NER did not see; "NOUN": a
    # lower-case KG name of a concept ('physicist', 'jazz'); "GIVEN": user span
    label: str
    beside_number: bool = False  # a score or count next to it ('Luton 2 Bolton 1', 'Surrey 320-5')
    in_compound: bool = False  # a hyphen joins it to another word ('Boston-based', 'pro-Moscow')
    # the place of a news dateline: 'LONDON 1996-08-30', 'PARIS (Reuters) -', 'ROME, Aug 30'
    dateline: bool = False
    # alone in brackets, as a nationality after a name ('Maarten den Bakker ( Netherlands )')
    bracketed: bool = False
    place_word: bool = False  # after a word that takes a place ('in Pittsburgh', 'northern Iraq')
    # beside a word of a match ('Milan beat Parma', 'against Russia', 'Celtic v Rangers')
    contest: bool = False
    # a capitalised word or a number right beside it that is not part of it: the name goes on
    # into a longer one the mention does not cover ('HTC Desire Z', 'London Irish', 'Google Music')
    name_beside: bool = False
    # the next word follows within a comma or a space, in the same sentence ('Columbus , GA',
    # 'Salem,Ore'): a mention there stands beside this one (see features.APPOSED_GAP)
    joined_after: bool = False


class MentionFinder:
    """Finds mentions in spaCy docs; build once per process (the alias matcher is the slow part)."""

    def __init__(
        self,
        nlp: Language,
        aliases: AliasTable | None = None,
        max_alias_tokens: int = 6,
        names_something: Callable[[Mention], bool] | None = None,
        proper_name: Callable[[str], bool] | None = None,
        concept: Callable[[str], bool] | None = None,
    ) -> None:
        """`names_something(mention)`: whether a span finds entities by itself (exact, fuzzy or
        demonym); an NER span that does not gives way to the KG names inside it. Default: exact.
        `proper_name(text)`: whether an alias match names a proper name's entity ('paris': Paris),
        not a concept's ('film'); in a text without capitals (a query, a chat line), where case
        cannot tell names from words, such matches are mentions too. Default: none are.
        `concept(text)`: whether a lower-case alias match names one of the KG's concepts (an entity
        with a lower-case label: 'physicist', 'jazz'); such matches are mentions labelled NOUN,
        and the scorer decides whether the text means the concept. Default: none are."""
        from spacy.matcher import PhraseMatcher

        self.names_something = names_something
        self.proper_name = proper_name
        self.concept = concept
        self.matcher: PhraseMatcher | None = None
        self.aliases = aliases
        self.stop_words: frozenset[str] = frozenset(nlp.Defaults.stop_words)  # 'He', 'It' are no names
        if aliases is not None:
            self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
            tokenizer = nlp.tokenizer
            patterns = [tokenizer(key) for key in aliases.names() if len(key.split()) <= max_alias_tokens]
            for i in range(0, len(patterns), 10_000):
                self.matcher.add("ALIAS", patterns[i : i + 10_000])

    def find(self, doc: Doc) -> list[Mention]:
        table = self.aliases.aliases if self.aliases is not None else {}
        text = doc.text  # spaCy joins it anew on every access
        proper = self.proper_name if without_capitals(text) else None

        def name_like(span: str) -> bool:
            return _looks_like_a_name(span) or (proper is not None and proper(span))

        chosen = []
        for e in doc.ents:
            # a pronoun NER took for a name ('Enlighten Us !': GPE) is none; 'US' in capitals is
            if e.label_ in ENTITY_LABELS and not (e.text.lower() in self.stop_words and not e.text.isupper()):
                pieces = _pieces(e, table)
                # the NER label was for the whole span ('Sri Lanka - Arjuna Ranatunga': PERSON):
                # its pieces carry none
                label = e.label_ if len(pieces) == 1 else "PART"
                chosen += [_trimmed(Mention(p.start_char, p.end_char, p.text, label), table) for p in pieces]
        if self.matcher is None or self.aliases is None:
            return chosen
        stop = self.stop_words
        # stop words are no names, in any case: 'He', 'IN' and 'AT' in headlines ('US' is NER's)
        spans = [doc[s:e] for _, s, e in self.matcher(doc) if doc[s:e].text.lower() not in stop]
        # an NER span that names nothing in the KG but holds names that do ('SEOUL 1996-08-30
        # Results of South Korean', 'President Bill Clinton', 'DETROIT CHICAGO' in headlines) gives
        # way to those names; 'Paris St Germain' (fuzzy) or 'Latin American' (demonym) stays
        names = [(s.start_char, s.end_char) for s in spans]
        framed = [
            m
            for m in chosen
            if _holds_names(m, names)
            and normalize(m.text) not in table
            and not (self.names_something is not None and self.names_something(m))
        ]
        chosen = [m for m in chosen if m not in framed]
        # a KG name that joins several NER spans wins over them: 'Cleveland Indians' over
        # 'Cleveland' + 'Indians', 'Red Star' over 'Red' + 'Star' (not 'President Bill Clinton'
        # over 'Bill Clinton': titles and the words after a name are not part of it)
        for span in sorted(spans, key=lambda s: (-(s.end_char - s.start_char), s.start_char)):
            inside = [m for m in chosen if span.start_char <= m.start and m.end <= span.end_char]
            crossing = [
                m for m in chosen if m.start < span.end_char and span.start_char < m.end and m not in inside
            ]
            if (
                len(inside) > 1
                and not crossing
                and name_like(span.text)
                and all(_proper(t.text) for t in span if not any(m.start <= t.idx < m.end for m in inside))
            ):
                chosen = [m for m in chosen if m not in inside]
                # NER saw names here, though cut otherwise: a piece of NER's, not a bare alias match
                chosen.append(_trimmed(Mention(span.start_char, span.end_char, span.text, "PART"), table))
        taken = [(m.start, m.end) for m in chosen]
        concepts = []
        for span in sorted(spans, key=lambda s: (-(s.end_char - s.start_char), s.start_char)):
            if not name_like(span.text):
                if span.text[:1].islower() and self.concept is not None and self.concept(span.text):
                    concepts.append(span)
                continue
            if any(span.start_char < e and s < span.end_char for s, e in taken):
                continue
            taken.append((span.start_char, span.end_char))
            # a name inside an NER span that gave way to it is NER's find too, without its label
            # ('Kellogg School of Management in Northwestern University': ORG, one span)
            inside_ner = any(m.start <= span.start_char and span.end_char <= m.end for m in framed)
            label = "PART" if inside_ner else "ALIAS"
            chosen.append(_trimmed(Mention(span.start_char, span.end_char, span.text, label), table))
        for span in concepts:  # the concepts in what names left free, longest first
            if any(span.start_char < e and s < span.end_char for s, e in taken):
                continue
            taken.append((span.start_char, span.end_char))
            chosen.append(Mention(span.start_char, span.end_char, span.text, "NOUN"))
        return sorted((_in_context(_hashtag(m, text), text) for m in chosen), key=lambda m: m.start)


# tokens that part two names inside one NER span: results ('Pohang 3 Ulsan', 'Celtic v Rangers'),
# datelines and bylines ('Sri Lanka - Arjuna Ranatunga', 'Oval ( London')
_SEPARATORS = frozenset({"-", "--", "–", "(", ")", "v", "vs", "vs.", ",", ":", ";", "/"})


def _pieces(ent: Span, names: Container[str]) -> list[Span]:
    """An NER span cut at separator tokens and numbers ('Pohang 3 Ulsan' → 'Pohang', 'Ulsan'), unless
    the KG knows it whole ('Apollo 13', 'Schalke 04'). A hyphen inside a word ('Saint-Etienne',
    'Ontario-based') separates nothing."""
    doc = ent.doc

    def separates(t: Token) -> bool:
        if t.text in ("-", "--", "–"):
            return t.i > ent.start and bool(doc[t.i - 1].whitespace_)
        return t.text in _SEPARATORS or (t.text[:1].isdigit() and t.like_num)

    cuts = [t.i for t in ent if separates(t)]
    if not cuts or normalize(ent.text) in names:
        return [ent]
    bounds = zip([ent.start, *(i + 1 for i in cuts)], [*cuts, ent.end], strict=True)
    pieces = [doc[lo:hi] for lo, hi in bounds if hi > lo]
    return [p for p in pieces if any(ch.isalpha() for ch in p.text)]


def given_mentions(text: str, spans: Iterable[tuple[int, int]], doc: Doc | None = None) -> list[Mention]:
    """Mentions for user-given character spans (the `--spans` mode), typed by the NER where it
    found the same span, else labelled GIVEN."""
    ner = {(e.start_char, e.end_char): e.label_ for e in doc.ents} if doc is not None else {}
    return [_in_context(Mention(s, e, text[s:e], ner.get((s, e), "GIVEN")), text) for s, e in spans]


_NUMBER_AFTER = re.compile(r"[ \t]*\(?\d")
_NUMBER_BEFORE = re.compile(r"\d\)?[ \t]*$")
_DATE_AFTER = re.compile(r"[ \t]*\d{4}-\d\d-\d\d")  # a dateline ('LONDON 1996-08-31'), no score
# a news-wire dateline: the place opens the text, a line or a sentence (AIDA's run after the
# headline's ' . '), and an ISO date, an agency in brackets, or a day and month follow it
# ('LONDON 1996-08-31', 'NEW YORK (Reuters) -', 'MOSCOW, Aug 30', 'ROME, Sept. 4', 'PARIS, 30 May')
_MONTH = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
_NAMES = r"[A-Z][\w.'-]*(?:[ \t]+[A-Z][\w.'-]*)*"  # capitalised words: 'NADI', 'New South Wales'
_DATELINE_AFTER = re.compile(  # a second place may come between: 'NADI , Fiji 1996-12-06'
    rf"[ \t]*(?:,[ \t]*{_NAMES}[ \t]*)?(?:\d{{4}}-\d\d-\d\d|\((?i:reuters|ap|afp|upi|dpa|xinhua|bloomberg|ians|pti)\)"
    rf"|,?[ \t]*(?:{_MONTH}[ \t]+\d{{1,2}}|\d{{1,2}}[ \t]+{_MONTH})\b)"
)
_DATELINE_BEFORE = re.compile(rf"(?:^|[\n.!?])[ \t]*(?:{_NAMES}[ \t]*,[ \t]*)?$")


# the word before a name that makes it a place, and the words beside a name that make it a side
# in a match (English, like the default spaCy pipeline): where a city or a country and its team
# share a name, these tell which one the text means
_PLACE_BEFORE = frozenset(
    [
        "in",
        "into",
        "from",
        "near",
        "across",
        "outside",
        "inside",
        "throughout",
        "northern",
        "southern",
        "eastern",
        "western",
        "central",
    ]
)
_CONTEST_BESIDE = frozenset(
    [
        "beat",
        "beats",
        "beating",
        "defeated",
        "defeat",
        "drew",
        "draw",
        "v",
        "vs",
        "vs.",
        "v.",
        "versus",
        "against",
        "thrashed",
        "edged",
        "routed",
    ]
)
# searched in the 24 characters before a mention: the whole word, not the tail of a longer one
# cut by the window ('...in' of 'within'), and on the mention's own line (\Z, not $, which would
# also match before a line break)
_WORD_BEFORE = re.compile(r"(?<![\w.])([\w.]+)[ \t]*\Z")
_WORD_AFTER = re.compile(r"[ \t]*([\w.]+)")
_SPACED_WORD_BEFORE = re.compile(r"(?<![\w.'&-])([\w.'&-]+)[ \t]+\Z")
_SPACED_WORD_AFTER = re.compile(r"[ \t]+([\w'&-]+)")
_SENTENCE_OPEN = re.compile(r"(?:\A|[.!?:\n\"“]|\s-)[ \t]*\Z")  # before a sentence's first word
_OPEN_BEFORE = re.compile(r"\([ \t]*\Z")
_CLOSE_AFTER = re.compile(r"[ \t]*\)")
_JOINED_AFTER = re.compile(r"[ \t]*[,/]?[ \t]*(?=[\w@#])")


def _in_context(m: Mention, text: str) -> Mention:
    """`m` with what its neighbourhood says: whether a number stands right before or after it, as
    in results tables, where place names stand for teams; whether a hyphen glues it to a word, so
    that it is part of a modifier ('Boston-based', 'Arab-Israeli') more than a name; whether it is
    the place of a news dateline, which is always the place, never its team; whether it stands
    alone in brackets, after a word that takes a place, or beside a word of a match."""
    after, before = text[m.end : m.end + 12], text[max(0, m.start - 12) : m.start]
    beside = bool(
        (_NUMBER_AFTER.match(after) and not _DATE_AFTER.match(after)) or _NUMBER_BEFORE.search(before)
    )
    glued = (after[:1] == "-" and after[1:2].isalpha()) or (before[-1:] == "-" and before[-2:-1].isalpha())
    dateline = bool(
        _DATELINE_AFTER.match(text, m.end, m.end + 48)
        and _DATELINE_BEFORE.search(text, max(0, m.start - 40), m.start)
    )
    word_before = _WORD_BEFORE.search(text, max(0, m.start - 24), m.start)
    word_after = _WORD_AFTER.match(after)
    prev = word_before.group(1).lower() if word_before else ""
    nxt = word_after.group(1).lower() if word_after else ""
    # a capitalised word or a number beside it, apart by a space: a word that opens its sentence
    # is capitalised for that alone ('Yesterday Obama said'), a title is no part of a name
    spaced_before = _SPACED_WORD_BEFORE.search(text, max(0, m.start - 24), m.start)
    spaced_after = _SPACED_WORD_AFTER.match(after)
    beside_words = [spaced_after.group(1)] if spaced_after else []
    if (
        spaced_before
        and not _SENTENCE_OPEN.search(text, max(0, spaced_before.start() - 8), spaced_before.start())
        and not _ends_sentence(spaced_before.group(1))
    ):
        beside_words.append(spaced_before.group(1))
    name_beside = any(_capitalised(w) for w in beside_words)
    return replace(
        m,
        beside_number=beside,
        in_compound=glued,
        dateline=dateline,
        bracketed=bool(
            _OPEN_BEFORE.search(text, max(0, m.start - 12), m.start) and _CLOSE_AFTER.match(after)
        ),
        place_word=prev in _PLACE_BEFORE,
        contest=prev in _CONTEST_BESIDE or nxt in _CONTEST_BESIDE,
        name_beside=name_beside,
        joined_after=bool(_JOINED_AFTER.match(after)),
    )


def _ends_sentence(word: str) -> bool:
    """A word with a full stop that ends its sentence ('France.'), not an abbreviation ('U.S.',
    'St.', 'Mr.'): the name after it opens the next sentence, and the word is not beside it."""
    return word.endswith(".") and "." not in word[:-1] and len(word) > 4


_LINK_WORDS = frozenset({"of", "de", "del", "la", "le", "and", "&", "-", "du", "von", "van", "da"})


# words that precede a name without being part of it: 'President Bill Clinton', 'Mr Major'
_TITLES = frozenset(
    [
        "president",
        "prime",
        "minister",
        "mr",
        "mrs",
        "ms",
        "dr",
        "sir",
        "king",
        "queen",
        "prince",
        "princess",
        "pope",
        "general",
        "gen",
        "senator",
        "sen",
        "rep",
        "governor",
        "gov",
        "judge",
        "coach",
        "chancellor",
        "premier",
        "secretary",
        "foreign",
        "defence",
        "defense",
        "finance",
        "vice",
        "deputy",
        "chairman",
        "chief",
        "leader",
        "captain",
        "lord",
        "lady",
        "state",
        "former",
        "new",
    ]
)


def _holds_names(m: Mention, spans: list[tuple[int, int]]) -> bool:
    """Whether NER span `m` is only a frame around the KG names inside it and gives way to them:
    two or more names ('DETROIT CHICAGO', 'SEOUL 1996-08-30 Results of South Korean'), or one name
    with nothing but titles, lower-case words and numbers around it ('President Bill Clinton').
    A capitalised word beside the name makes it part of a longer one that the KG lacks ('Human
    Rights in China', 'HONG KONG OPEN', 'Iraqi News Agency'): that name stays whole."""
    inside = sorted((s, e) for s, e in spans if m.start <= s and e <= m.end and e - s < m.end - m.start)
    if not inside:
        return False
    outer = [inside[0]]
    for s, e in inside[1:]:
        if s >= outer[-1][1]:
            outer.append((s, e))
    if len(outer) > 1:
        return True
    s, e = outer[0]
    rest = (m.text[: s - m.start] + " " + m.text[e - m.start :]).split()
    return all(
        not w[:1].isupper() or w.rstrip(".").lower() in _TITLES or any(ch.isdigit() for ch in w) for w in rest
    )


def _proper(word: str) -> bool:
    """A word that may sit inside a name between NER spans: capitalised ('St', 'Trade') or a
    linking word ('of'); 'said' in 'Cleveland said Indians' is not."""
    return word[:1].isupper() or word[:1].isdigit() or word.lower() in _LINK_WORDS


def _capitalised(word: str) -> bool:
    """A word that may go on a name: capitalised or a number, not a stop word ('The', 'I') or a
    title ('President', 'Mr')."""
    lower = word.lower().rstrip(".")
    return (
        (word[:1].isupper() or word[:1].isdigit()) and lower not in _NOT_NAME_WORDS and lower not in _TITLES
    )


# capitalised words that go on no name: they open sentences, or are words of a chat line
_NOT_NAME_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "i",
        "i'm",
        "i'll",
        "i've",
        "it",
        "it's",
        "we",
        "he",
        "she",
        "they",
        "you",
        "rt",
        "via",
        "and",
        "or",
        "but",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "is",
        "are",
        "was",
        "my",
        "our",
        "your",
        "his",
        "her",
        "their",
        "this",
        "that",
        "these",
        "those",
    ]
)


def without_capitals(text: str) -> bool:
    """A text that carries no case (a query, a chat line): no capital letter anywhere."""
    return not any(ch.isupper() for ch in text)


def _looks_like_a_name(text: str) -> bool:
    """Alias matches must start with a capital or a digit: 'apple' in prose is rarely Apple Inc."""
    return bool(text) and (text[0].isupper() or text[0].isdigit())


def _hashtag(m: Mention, text: str) -> Mention:
    """A name written as a hashtag ('#Astros') is mentioned with its '#': the tag is the mention."""
    at = m.start - 1
    if at >= 0 and text[at] == "#" and (at == 0 or not text[at - 1].isalnum()):
        return replace(m, start=at, text=text[at : m.end])
    return m


def _trimmed(m: Mention, names: Container[str] = ()) -> Mention:
    """'the United States' → 'United States', "Ronald Reagan 's" → 'Ronald Reagan', 'Everton 3 ,'
    → 'Everton': NER spans may start with an article or end in a possessive or a score; names do
    not, except the `names` the KG knows ('Apollo 13')."""
    for article in ("the ", "The ", "THE "):
        if m.text.startswith(article) and len(m.text) > len(article):
            m = Mention(m.start + len(article), m.end, m.text[len(article) :], m.label)
            break
    match = _TAIL.search(m.text)
    # a tail that the name's normal form drops anyway ("Mariners '") goes whatever the KG knows
    if (
        match
        and match.start() > 0
        and (normalize(m.text) not in names or normalize(m.text) == normalize(m.text[: match.start()]))
    ):
        m = Mention(m.start, m.start + match.start(), m.text[: match.start()], m.label)
    return m


_TAIL = re.compile(r"(?:\s*['’]s?|\s+[\d.,:;()\-–!?]+)+$")  # possessive, scores, punctuation
