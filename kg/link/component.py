"""The spaCy pipeline component `kgpipe_linker`: `nlp.add_pipe("kgpipe_linker")` after the NER.

Like spaCy's own EntityLinker it keeps every entity the NER found (dates, numbers and money too)
and sets `kb_id_` (a Wikidata QID) and `._.kg_score` on those it links; the KG names the NER
missed are added to `doc.ents` where they overlap none of its entities, and every linked mention,
overlapping or not, is in the span group `doc.spans["kg_entities"]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from kg.embed.checkpoint import EntityVectors
from kg.io import load_kg
from kg.link.dense import Embed
from kg.link.linker import LinkedEntity, Linker
from kg.manifest import default_part

if not Span.has_extension("kg_score"):
    Span.set_extension("kg_score", default=None)


SPAN_GROUP = "kg_entities"


class KGLinkerComponent:
    """Links `doc.ents` (plus KG-alias matches the NER missed) to one KG.

    kg (str | None): KG folder or file; the default bundle's (FB15k-237) when None.
    linker (str | None): a linker folder (`kgpipe link train`); the default bundle's when None. Its
        scorer and names serve any KG; its entity vectors are used when it was built for `kg`.
    min_score (float | None): NIL below this confidence (0 to 1), for names, concepts and
        nationality words alike; the trained scorer's thresholds (one for each) when None.
    keep_nil (bool): also put the mentions judged NIL into `doc.spans["kg_entities"]`, with an
        empty `kb_id_` (the NER's own entities stay in `doc.ents` either way).
    embedder (texts → unit vectors | None): for context similarity; by default the MiniLM text
        model, named in the config as {"@misc": "kgpipe.text_embedder.v1"}; None switches it off.

    The text is read as English (the linker's word lists and its scorer's training data are).
    """

    def __init__(
        self,
        nlp: Language,
        name: str,
        kg: str | None,
        min_score: float | None,
        keep_nil: bool,
        embedder: Embed | None,
        linker: str | None = None,
    ) -> None:
        self.name = name
        self.keep_nil = keep_nil
        graph = load_kg(Path(kg) if kg else default_part("kg"))
        self.linker = Linker.load(
            Path(linker) if linker else default_part("linker"),
            graph,
            same_kg=False,
            min_score=min_score,
            nlp=nlp,
            embed=embedder,
            transe=EntityVectors.load(default_part("transe")),
        )

    def predict(self, docs: Iterable[Doc]) -> list[list[LinkedEntity]]:
        """Decide each doc's entities without touching the docs."""
        docs = list(docs)
        vectors = self.linker.doc_vectors([doc.text for doc in docs])
        return [
            self.linker.disambiguate(
                self.linker.finder.find(doc), keep_nil=self.keep_nil, doc_vector=v, text_length=len(doc.text)
            )
            for doc, v in zip(docs, vectors, strict=True)
        ]

    def set_annotations(self, docs: Iterable[Doc], linked: list[list[LinkedEntity]]) -> None:
        """Every NER entity stays; a linked mention gives its QID to the NER entity it is (or, as
        'Reagan' in "Reagan 's", the one NER entity it alone lies in); the others join `doc.ents`
        where they overlap nothing. Concepts ('physicist', label CONCEPT) are no named entities and
        stay out of `doc.ents`. All linked mentions go to `doc.spans["kg_entities"]`."""
        for doc, entities in zip(docs, linked, strict=True):
            ents = list(doc.ents)
            group: list[Span] = []
            inside: dict[int, list[Span]] = {}  # NER entity index → linked spans within it
            extra: list[Span] = []
            for x in entities:
                label = (
                    "CONCEPT"
                    if x.label == "NOUN"
                    else x.label
                    if x.label not in ("ALIAS", "PART")
                    else "ENTITY"
                )  # ALIAS, PART: no NER type
                span = doc.char_span(x.start, x.end, label=label, kb_id=x.qid, alignment_mode="expand")
                if span is None:
                    continue
                span._.kg_score = x.score if x.qid else None
                group.append(span)
                if not x.qid or label == "CONCEPT":
                    continue
                # a hashtag's '#' is a token of its own, outside the NER entity of the name ('#Astros')
                core = span[1:] if span.text.startswith("#") and len(span) > 1 else span
                hosts = [i for i, e in enumerate(ents) if e.start < span.end and span.start < e.end]
                if len(hosts) == 1 and ents[hosts[0]].start <= core.start and core.end <= ents[hosts[0]].end:
                    inside.setdefault(hosts[0], []).append(span)
                elif not hosts:
                    extra.append(span)
            for i, spans in inside.items():
                exact = [s for s in spans if (s.start, s.end) == (ents[i].start, ents[i].end)]
                chosen = exact[0] if exact else spans[0] if len(spans) == 1 else None
                if chosen is not None:
                    e = ents[i]
                    ents[i] = Span(doc, e.start, e.end, label=e.label_, kb_id=chosen.kb_id_)
                    ents[i]._.kg_score = chosen._.kg_score
            doc.ents = sorted(ents + filter_spans(extra), key=lambda s: s.start)
            doc.spans[SPAN_GROUP] = group

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 64) -> Iterator[Doc]:
        batch: list[Doc] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == batch_size:
                self.set_annotations(batch, self.predict(batch))
                yield from batch
                batch = []
        if batch:
            self.set_annotations(batch, self.predict(batch))
            yield from batch


@Language.factory(
    "kgpipe_linker",
    default_config={
        "kg": None,
        "linker": None,
        "min_score": None,
        "keep_nil": False,
        "embedder": {"@misc": "kgpipe.text_embedder.v1"},
    },
    requires=["doc.ents"],
    assigns=["doc.ents", "token.ent_kb_id", "span._.kg_score"],
)
def make_kgpipe_linker(
    nlp: Language,
    name: str,
    kg: str | None,
    linker: str | None,
    min_score: float | None,
    keep_nil: bool,
    embedder: Embed | None,
) -> KGLinkerComponent:
    return KGLinkerComponent(nlp, name, kg, min_score, keep_nil, embedder, linker)
