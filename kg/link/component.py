"""The spaCy pipeline component `kgpipe_linker`: `nlp.add_pipe("kgpipe_linker")` after the NER.

It sets `ent.kb_id_` (a Wikidata QID, or '' for NIL) and `ent._.kg_score` on `doc.ents`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from kg.io import bundled_kg_path, load_kg
from kg.link.linker import LinkedEntity, Linker
from kg.link.mentions import Mention

if not Span.has_extension("kg_score"):
    Span.set_extension("kg_score", default=None)


class KGLinkerComponent:
    """Links `doc.ents` (plus KG-alias matches the NER missed) to one KG.

    kg (str | None): KG folder or file; the bundled FB15k-237 when None.
    min_score (float | None): NIL below this confidence; the trained scorer's threshold when None.
    keep_nil (bool): keep NER entities that link to nothing, with an empty `kb_id_`.
    """

    def __init__(
        self, nlp: Language, name: str, kg: str | None, min_score: float | None, keep_nil: bool
    ) -> None:
        self.name = name
        self.keep_nil = keep_nil
        self.linker = Linker(load_kg(Path(kg) if kg else bundled_kg_path()), min_score=min_score, nlp=nlp)

    def predict(self, docs: Iterable[Doc]) -> list[list[LinkedEntity]]:
        """Decide each doc's entities without touching the docs."""
        return [
            self.linker.disambiguate(self.linker.finder.find(doc), keep_nil=self.keep_nil) for doc in docs
        ]

    def set_annotations(self, docs: Iterable[Doc], linked: list[list[LinkedEntity]]) -> None:
        for doc, entities in zip(docs, linked, strict=True):
            spans = []
            for x in entities:
                span = doc.char_span(
                    x.start,
                    x.end,
                    label=x.label if x.label != "ALIAS" else "ENTITY",
                    kb_id=x.qid,
                    alignment_mode="expand",
                )
                if span is not None:
                    span._.kg_score = x.score if x.qid else None
                    spans.append(span)
            doc.ents = filter_spans(spans)

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
    default_config={"kg": None, "min_score": None, "keep_nil": False},
    requires=["doc.ents"],
    assigns=["doc.ents", "token.ent_kb_id", "span._.kg_score"],
)
def make_kgpipe_linker(
    nlp: Language, name: str, kg: str | None, min_score: float | None, keep_nil: bool
) -> KGLinkerComponent:
    return KGLinkerComponent(nlp, name, kg, min_score, keep_nil)


__all__ = ["KGLinkerComponent", "Mention", "make_kgpipe_linker"]
