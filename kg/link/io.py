"""Reading documents to link (JSONL, ELEVANT-compatible) and writing linked results atomically.

Bad lines fail with file:line and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kg.errors import KGFormatError
from kg.io import read_json_lines
from kg.storage import atomic_write

if TYPE_CHECKING:
    from kg.link.linker import LinkedEntity


@dataclass(frozen=True)
class Document:
    id: object
    text: str
    spans: list[tuple[int, int]] | None = None


def _spans(obj: dict[str, object], text: str, path: Path, line: int) -> list[tuple[int, int]]:
    raw = obj.get("labels", obj.get("mentions"))
    if not isinstance(raw, list):
        raise KGFormatError(
            path,
            line,
            "--spans needs a 'labels' or 'mentions' list",
            'Give spans as "mentions": [[start, end], ...]',
        )
    spans = []
    for item in raw:
        span = item.get("span") if isinstance(item, dict) else item
        if not (
            isinstance(span, list | tuple)
            and len(span) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
        ):
            raise KGFormatError(
                path, line, f"a span must be [start, end] character offsets, got {span!r}", "Fix the span"
            )
        if not 0 <= span[0] < span[1] <= len(text):
            raise KGFormatError(
                path,
                line,
                f"span {list(span)} is not inside the {len(text)}-character text",
                "Give [start, end) offsets into 'text' with start < end",
            )
        spans.append((span[0], span[1]))
    return spans


def read_documents(path: str | Path, with_spans: bool = False) -> list[Document]:
    path = Path(path)
    docs: list[Document] = []
    for number, obj in read_json_lines(path):
        text = obj.get("text")
        if not isinstance(text, str):
            raise KGFormatError(
                path,
                number,
                f"expected a string 'text', got {json.dumps(obj)[:60]}",
                'Write lines like {"id": 1, "text": "..."}',
            )
        docs.append(
            Document(obj.get("id", len(docs)), text, _spans(obj, text, path, number) if with_spans else None)
        )
    return docs


def write_linked(path: str | Path, docs: list[Document], results: list[list[LinkedEntity]]) -> None:
    with atomic_write(path) as f:
        for doc, linked in zip(docs, results, strict=True):
            mentions = [
                {"span": [x.start, x.end], "id": x.qid, "score": round(x.score, 4), "text": x.text}
                for x in linked
                if x.qid
            ]
            f.write(json.dumps({"id": doc.id, "entity_mentions": mentions}, ensure_ascii=False) + "\n")
