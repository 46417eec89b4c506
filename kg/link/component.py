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
from kg.link.dense import Embed
from kg.link.linker import LinkedEntity, Linker

if not Span.has_extension("kg_score"):
    Span.set_extension("kg_score", default=None)


class KGLinkerComponent:
    """Links `doc.ents` (plus KG-alias matches the NER missed) to one KG.

    kg (str | None): KG folder or file; the bundled FB15k-237 when None.
    min_score (float | None): NIL below this confidence; the trained scorer's threshold when None.
    keep_nil (bool): keep NER entities that link to nothing, with an empty `kb_id_`.
    embedder (texts → unit vectors | None): for context similarity; by default the MiniLM text
        model, named in the config as {"@misc": "kgpipe.text_embedder.v1"}; None switches it off.
    """

    def __init__(
        self,
        nlp: Language,
        name: str,
        kg: str | None,
        min_score: float | None,
        keep_nil: bool,
        embedder: Embed | None,
    ) -> None:
        self.name = name
        self.keep_nil = keep_nil
        graph = load_kg(Path(kg) if kg else bundled_kg_path())
        self.linker = Linker(graph, min_score=min_score, nlp=nlp, embed=embedder)

    def predict(self, docs: Iterable[Doc]) -> list[list[LinkedEntity]]:
        """Decide each doc's entities without touching the docs."""
        docs = list(docs)
        vectors = self.linker.doc_vectors([doc.text for doc in docs])
        return [
            self.linker.disambiguate(self.linker.finder.find(doc), keep_nil=self.keep_nil, doc_vector=v)
            for doc, v in zip(docs, vectors, strict=True)
        ]

    def set_annotations(self, docs: Iterable[Doc], linked: list[list[LinkedEntity]]) -> None:
        for doc, entities in zip(docs, linked, strict=True):
            spans = []
            for x in entities:
                label = x.label if x.label not in ("ALIAS", "PART") else "ENTITY"  # no NER type
                span = doc.char_span(x.start, x.end, label=label, kb_id=x.qid, alignment_mode="expand")
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
    default_config={
        "kg": None,
        "min_score": None,
        "keep_nil": False,
        "embedder": {"@misc": "kgpipe.text_embedder.v1"},
    },
    requires=["doc.ents"],
    assigns=["doc.ents", "token.ent_kb_id", "span._.kg_score"],
)
def make_kgpipe_linker(
    nlp: Language, name: str, kg: str | None, min_score: float | None, keep_nil: bool, embedder: Embed | None
) -> KGLinkerComponent:
    return KGLinkerComponent(nlp, name, kg, min_score, keep_nil, embedder)
