"""The entities of a document for relation extraction: gold clusters linked to the KG, or entities
found in the text itself (spaCy's NER, kgpipe's linker, mentions grouped into entities).

Found entities include dates and numbers (many Wikidata properties take them). Mentions linked to
one QID form one entity; so do unlinked mentions with the same name, and a person's first or last
name alone after the full name earlier in the document.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from encoders.docred import DocEntity, DocMention, RelDocument

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

    from kg.link.linker import LinkedEntity, Linker

# spaCy's (OntoNotes) NER labels → DocRED's entity types
NER_TYPES: dict[str, str] = {
    "PERSON": "PER",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
    "NORP": "LOC",  # "American", "French": DocRED annotates them as the country, a LOC
    "DATE": "TIME",
    "TIME": "TIME",
    "CARDINAL": "NUM",
    "QUANTITY": "NUM",
    "MONEY": "NUM",
    "PERCENT": "NUM",
    "ORDINAL": "NUM",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
    "PRODUCT": "MISC",
}
NOT_LINKED = ("TIME", "NUM")  # values, not KG entities
_ARTICLE = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class TextDocument:
    """A plain text read as a relation document: `doc` (tokens by sentence, entities found) and
    each token's character offsets [start, end) in `text`, by sentence."""

    text: str
    doc: RelDocument
    offsets: list[list[tuple[int, int]]]


class EntityFinder:
    """Finds and links the entities of documents. `nlp`: a spaCy pipeline with NER and sentence
    boundaries (by default the linker's spaCy model with its `senter`)."""

    def __init__(self, linker: Linker | None, nlp: Language | None = None) -> None:
        self.linker = linker
        self._nlp = nlp

    @property
    def nlp(self) -> Language:
        """Loaded at first use: linking gold entities needs none."""
        if self._nlp is None:
            from kg.link.nlp import load_spacy

            nlp = load_spacy(exclude=["tagger", "parser", "attribute_ruler", "lemmatizer"])
            if "senter" in nlp.disabled:
                nlp.enable_pipe("senter")  # sentences without the parser: 3 ms a 120-character text
            elif "senter" not in nlp.pipe_names:  # a pipeline of the user's without one: punctuation rules
                nlp.add_pipe("sentencizer", first=True)
            self._nlp = nlp
        return self._nlp

    # ---- gold entities --------------------------------------------------------------------------
    def link(self, docs: Sequence[RelDocument]) -> list[RelDocument]:
        """The documents with each entity's QID filled in (where it had none): every mention linked
        in its document, the QID the mentions' scores favour."""
        if self.linker is None:
            return list(docs)
        read = [d.text() for d in docs]  # (text, token offsets) of each document, once
        spans = [
            [d.mention_chars(m, offsets) for e in d.entities for m in e.mentions]
            for d, (_, offsets) in zip(docs, read, strict=True)
        ]
        linked = self.linker.link_many([text for text, _ in read], spans) if docs else []
        out = []
        for d, found, (_, offsets) in zip(docs, linked, read, strict=True):
            by_span = {(x.start, x.end): x for x in found}
            entities = []
            for e in d.entities:
                if e.qid:
                    entities.append(e)
                    continue
                votes: dict[str, float] = defaultdict(float)
                for m in e.mentions:
                    x = by_span.get(d.mention_chars(m, offsets))
                    if x is not None and x.qid:
                        votes[x.qid] += x.score
                if votes:
                    qid, total = max(votes.items(), key=lambda kv: kv[1])
                    entities.append(replace(e, qid=qid, score=round(total / len(e.mentions), 4)))
                else:
                    entities.append(e)
            out.append(replace(d, entities=entities))
        return out

    # ---- found entities -------------------------------------------------------------------------
    def find(self, docs: Sequence[RelDocument]) -> list[RelDocument]:
        """The documents (their tokens and sentences as given) with entities found by NER and the
        linker instead of their own."""
        from spacy.tokens import Doc

        spacy_docs = []
        for d in docs:
            words = [w for s in d.sents for w in s]
            spacy_docs.append(Doc(self.nlp.vocab, words=words or [""]))
        parsed = list(self.nlp.pipe(spacy_docs, disable=["senter"]))
        return self._entities(docs, parsed, [None] * len(docs))

    def read(
        self,
        titles: Sequence[str],
        texts: Sequence[str],
        linked: Sequence[Sequence[LinkedEntity]] | None = None,
    ) -> list[TextDocument]:
        """Plain texts read as documents: tokens and sentences by spaCy, entities found. `linked`:
        each text's mentions as the linker already linked them (reused, not linked again; linked
        names NER missed join as mentions)."""
        parsed = list(self.nlp.pipe(texts))
        docs, offsets = [], []
        for title, sp in zip(titles, parsed, strict=True):
            sents = [[t.text for t in s if not t.is_space] for s in sp.sents]
            offs = [[(t.idx, t.idx + len(t.text)) for t in s if not t.is_space] for s in sp.sents]
            keep = [i for i, s in enumerate(sents) if s]
            docs.append(RelDocument(title, [sents[i] for i in keep], []))
            offsets.append([offs[i] for i in keep])
        found = self._entities(docs, parsed, offsets, linked)
        return [TextDocument(t, d, o) for t, d, o in zip(texts, found, offsets, strict=True)]

    def _entities(
        self,
        docs: Sequence[RelDocument],
        parsed: Sequence[Doc],
        offsets: Sequence[list[list[tuple[int, int]]] | None],
        linked: Sequence[Sequence[LinkedEntity]] | None = None,
    ) -> list[RelDocument]:
        """Mentions from each parsed doc's NER, mapped onto the document's sentences, linked and
        grouped into entities."""
        found: list[list[tuple[DocMention, str]]] = []
        for d, sp, offs in zip(docs, parsed, offsets, strict=True):
            if offs is None:  # the tokens are the document's own: token i of the doc is word i
                where = [(s, j) for s, sent in enumerate(d.sents) for j in range(len(sent))]
            else:  # spaCy's tokens, spaces left out
                by_char = {start: (s, j) for s, row in enumerate(offs) for j, (start, _) in enumerate(row)}
                where = [by_char.get(t.idx, (-1, -1)) for t in sp]
            mentions = []
            for ent in sp.ents:
                kind = NER_TYPES.get(ent.label_)
                places = [where[i] for i in range(ent.start, ent.end) if where[i][0] >= 0]
                if kind is None or not places:
                    continue
                s = places[0][0]
                toks = [j for ss, j in places if ss == s]  # an entity across a sentence end: its first part
                name = " ".join(d.sents[s][toks[0] : toks[-1] + 1])
                name = _ARTICLE.sub("", name) if kind != "MISC" else name
                mentions.append((DocMention(s, toks[0], toks[-1] + 1, name), kind))
            found.append(mentions)
        if linked is None:
            qids = self._link_mentions(docs, found)
        else:
            qids = [
                _reuse(d, mentions, links, offs or [])
                for d, mentions, links, offs in zip(docs, found, linked, offsets, strict=True)
            ]
        return [
            replace(d, entities=_group(mentions, q), facts=[])
            for d, mentions, q in zip(docs, found, qids, strict=True)
        ]

    def _link_mentions(
        self, docs: Sequence[RelDocument], found: list[list[tuple[DocMention, str]]]
    ) -> list[list[tuple[str, float]]]:
        """(QID, score) of each found mention ("" for values and NIL)."""
        out = [[("", 0.0)] * len(m) for m in found]
        if self.linker is None:
            return out
        texts, spans, which = [], [], []
        for d, mentions in zip(docs, found, strict=True):
            text, offsets = d.text()
            todo = [k for k, (_, kind) in enumerate(mentions) if kind not in NOT_LINKED]
            texts.append(text)
            spans.append([d.mention_chars(mentions[k][0], offsets) for k in todo])
            which.append(todo)
        for i, (todo, linked, doc_spans) in enumerate(
            zip(which, self.linker.link_many(texts, spans) if texts else [], spans, strict=True)
        ):
            by_span = {(x.start, x.end): x for x in linked}
            for k, span in zip(todo, doc_spans, strict=True):
                x = by_span.get(span)
                if x is not None and x.qid:
                    out[i][k] = (x.qid, round(float(x.score), 4))
        return out


def _reuse(
    doc: RelDocument,
    mentions: list[tuple[DocMention, str]],
    links: Sequence[LinkedEntity],
    offsets: list[list[tuple[int, int]]],
) -> list[tuple[str, float]]:
    """QIDs for the found mentions from links already made over the same text (the link that
    overlaps a mention most); linked mentions no found one overlaps are added to `mentions`."""
    spans = [doc.mention_chars(m, offsets) for m, _ in mentions]
    out: list[tuple[str, float]] = []
    for (a, b), (_, kind) in zip(spans, mentions, strict=True):

        def shared(x: LinkedEntity, a: int = a, b: int = b) -> int:
            return min(b, x.end) - max(a, x.start)

        # a link names the mention when it covers most of it and it most of the link: "California"
        # inside "University of California" names another entity
        fits = [
            x
            for x in links
            if x.qid and x.label != "NOUN" and 2 * shared(x) > b - a and 2 * shared(x) > x.end - x.start
        ]
        best = max(fits, key=shared, default=None) if kind not in NOT_LINKED else None
        out.append((best.qid, round(float(best.score), 4)) if best else ("", 0.0))
    starts = {start: (s, j) for s, row in enumerate(offsets) for j, (start, _) in enumerate(row)}
    ends = {end: (s, j) for s, row in enumerate(offsets) for j, (_, end) in enumerate(row)}
    for x in links:
        if not x.qid or x.label == "NOUN" or any(x.start < b and a < x.end for a, b in spans):
            continue
        first, last = starts.get(x.start), ends.get(x.end)
        if first is None or last is None or first[0] != last[0] or last[1] < first[1]:
            continue  # not on token boundaries of one sentence
        m = DocMention(first[0], first[1], last[1] + 1, x.text)
        mentions.append((m, NER_TYPES.get(x.label, "MISC")))
        spans.append((x.start, x.end))
        out.append((x.qid, round(float(x.score), 4)))
    return out


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def _group(mentions: list[tuple[DocMention, str]], qids: list[tuple[str, float]]) -> list[DocEntity]:
    """Mentions into entities: one per QID, else one per name (a person's first or last name
    alone joins the full name that came before it)."""
    groups: dict[str, list[int]] = defaultdict(list)
    persons: list[tuple[str, list[str]]] = []  # (group key, the full name's words), in order
    order: list[str] = []
    for k, ((m, kind), (qid, _)) in enumerate(zip(mentions, qids, strict=True)):
        key = f"qid:{qid}" if qid else f"name:{kind}:{_key(m.name)}"
        if not qid and kind == "PER":
            words = _key(m.name).split()
            if len(words) == 1:
                earlier = next(
                    (g for g, full in reversed(persons) if len(full) > 1 and words[0] in (full[0], full[-1])),
                    None,
                )
                key = earlier or key
            elif key not in groups:
                persons.append((key, words))
        elif qid and kind == "PER":
            persons.append((key, _key(m.name).split()))
        if key not in groups:
            order.append(key)
        groups[key].append(k)
    entities = []
    for key in order:
        ks = groups[key]
        kinds = Counter(mentions[k][1] for k in ks)
        qid = qids[ks[0]][0]
        score = max(qids[k][1] for k in ks) if qid else 0.0
        ms = sorted({mentions[k][0] for k in ks}, key=lambda m: (m.sent, m.start, m.end))
        entities.append(DocEntity(ms, kinds.most_common(1)[0][0], qid, score))
    return entities
