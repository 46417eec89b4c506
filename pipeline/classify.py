"""Classification with a bundle's knowledge-fused classifiers (`classifiers/NAME/` parts).

A text is linked first (the bundle's linker), so the classifier reads the entities it mentions;
they come back with the answer as the entities that informed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from kg.errors import KGPipeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from encoders.model import KnowledgeEncoder
    from pipeline.bundle import Bundle


@dataclass(frozen=True)
class Informant:
    """An entity the classifier read: characters [start, end) of the text, its QID and KG name."""

    start: int
    end: int
    text: str
    qid: str
    name: str


@dataclass(frozen=True)
class Classification:
    """The classifier's answer: the best `label` (for a multi-label typing head, `labels` holds
    every label over its threshold), a probability per label, and the entities it read."""

    label: str
    scores: dict[str, float]
    entities: list[Informant] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    classifier: str = ""


class ClassifierError(KGPipeError):
    """A classifier that is not there, or an input it cannot read."""


def classify(
    bundle: Bundle,
    model: KnowledgeEncoder,
    name: str,
    texts: Sequence[str],
    focus: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> list[Classification]:
    """One `Classification` per text. `focus`: per text, the spans a relation head (head, tail)
    or a typing head (mention) reads; a sequence head reads none."""
    from encoders.data import EntitySpan, Example
    from encoders.finetune import predict_logits
    from encoders.knowledge import link_examples

    want = {"sequence": 0, "typing": 1, "relation": 2}[model.cfg.task]
    examples = []
    for i, text in enumerate(texts):
        spans = list(focus[i]) if focus is not None else []
        if len(spans) != want:
            what = {0: "no spans", 1: "one mention span", 2: "a head and a tail span"}[want]
            raise ClassifierError(
                f"text {i}: classifier {name!r} is a {model.cfg.task} classifier and reads {what}, "
                f"not {len(spans)}"
            )
        for s, e in spans:
            if not 0 <= s < e <= len(text):
                raise ClassifierError(
                    f"text {i}: span [{s}, {e}] is not inside its {len(text)}-character text; "
                    "give [start, end) character offsets"
                )
        span_objs = tuple(EntitySpan(s, e, "") for s, e in spans)
        examples.append(Example(text, [], span_objs, list(span_objs)))
    if model.cfg.knowledge != "none" and examples:
        examples, _ = link_examples(examples, bundle.linker)
    logits = predict_logits(model, examples) if examples else torch.zeros(0, len(model.cfg.labels))
    multi = model.head.multi_label
    probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
    chosen = model.head.decide(logits)
    kg = bundle.kg
    out = []
    for ex, p, picked in zip(examples, probs.tolist(), chosen.tolist(), strict=True):
        scores = {label: round(float(v), 4) for label, v in zip(model.cfg.labels, p, strict=True)}
        best = max(scores, key=scores.__getitem__)
        informants = [
            Informant(s.start, s.end, ex.text[s.start : s.end], s.qid, _name(kg, s.qid))
            for s in ex.entities
            if s.qid
        ]
        labels = (
            [label for label, on in zip(model.cfg.labels, picked, strict=True) if on] if multi else [best]
        )
        out.append(Classification(best, scores, informants, labels, name))
    return out


def _name(kg: object, qid: str) -> str:
    try:
        i = kg.entity_id(qid)  # type: ignore[attr-defined]
    except KGPipeError:
        return ""
    return str(kg.labels[i])  # type: ignore[attr-defined]
