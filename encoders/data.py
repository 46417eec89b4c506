"""Training and evaluation examples for the encoder heads: JSONL in, typed `Example`s out.

One JSON object per line; the README documents the fields for each task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kg.errors import KGFormatError
from kg.io import read_json_lines

TASKS: tuple[str, ...] = ("sequence", "relation", "typing")


@dataclass(frozen=True)
class EntitySpan:
    """A mention in `text`: characters [start, end) and the QID it names ("" when unknown)."""

    start: int
    end: int
    qid: str = ""


@dataclass
class Example:
    """One input. `focus` holds the spans a head reads: () for sequence, (head, tail) for
    relation, (mention,) for typing; `entities` holds every span with knowledge, focus ones first."""

    text: str
    labels: list[str]
    focus: tuple[EntitySpan, ...] = ()
    entities: list[EntitySpan] = field(default_factory=list)
    id: str = ""


def _span(value: object, path: Path, line: int, name: str, text: str) -> EntitySpan:
    fix = f'Write "{name}" as {{"span": [start, end], "id": "Q..."}} with character offsets into "text"'
    if not isinstance(value, dict) or "span" not in value:
        raise KGFormatError(path, line, f'"{name}" is {value!r}', fix)
    span = value["span"]
    if (
        not isinstance(span, list | tuple)
        or len(span) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)
        or not 0 <= span[0] < span[1] <= len(text)
    ):
        raise KGFormatError(
            path, line, f'"{name}" span {span!r} is not inside the text ({len(text)} chars)', fix
        )
    qid = value.get("id") or ""
    if not isinstance(qid, str):
        raise KGFormatError(path, line, f'"{name}" id {qid!r} is not a string', fix)
    return EntitySpan(int(span[0]), int(span[1]), "" if qid.startswith("<") else qid)


def _labels(obj: dict[str, object], task: str, path: Path, line: int) -> list[str]:
    if task == "typing":
        labels = obj.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise KGFormatError(
                path, line, f'"labels" is {labels!r}', 'Typing needs "labels": a list of type names'
            )
        return list(labels)
    label = obj.get("label")
    if not isinstance(label, str | int) or isinstance(label, bool):
        raise KGFormatError(path, line, f'"label" is {label!r}', f'A {task} example needs "label": a string')
    return [str(label)]


def parse_example(obj: dict[str, object], task: str, path: Path, line: int) -> Example:
    """One JSON object → `Example`; anything malformed names the file, the line and the fix."""
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        raise KGFormatError(path, line, f'"text" is {text!r}', 'Give each line a non-empty "text" string')
    focus_names = {"sequence": (), "relation": ("head", "tail"), "typing": ("mention",)}[task]
    focus = tuple(_span(obj.get(n), path, line, n, text) for n in focus_names)
    extra = obj.get("entities") or []
    if not isinstance(extra, list):
        raise KGFormatError(path, line, f'"entities" is {extra!r}', '"entities" is a list of spans')
    others = [_span(e, path, line, "entities[]", text) for e in extra]
    entities = list(focus) + [e for e in others if e not in focus]
    return Example(text, _labels(obj, task, path, line), focus, entities, str(obj.get("id", line)))


def read_examples(path: str | Path, task: str) -> list[Example]:
    """Every example in a JSONL file, for `task` (sequence, relation or typing)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    path = Path(path)
    if not path.exists():
        raise KGFormatError(path, None, "no such file", "Give the path of a JSONL file of examples")
    examples = [parse_example(obj, task, path, line) for line, obj in read_json_lines(path)]
    if not examples:
        raise KGFormatError(path, None, "no examples", "Write one JSON object per line")
    return examples


def read_texts(path: str | Path) -> list[Example]:
    """Unlabelled texts for alignment pre-training: JSONL with "text" and, optionally, "entities"
    (spans with QIDs, as in the task files); lines without "entities" are to be linked."""
    path = Path(path)
    if not path.exists():
        raise KGFormatError(path, None, "no such file", 'Give a JSONL file with one {"text": ...} per line')
    out = []
    for line, obj in read_json_lines(path):
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text:
            raise KGFormatError(path, line, f'"text" is {text!r}', 'Give each line a non-empty "text" string')
        spans = obj.get("entities") or []
        if not isinstance(spans, list):
            raise KGFormatError(path, line, f'"entities" is {spans!r}', '"entities" is a list of spans')
        entities = [_span(e, path, line, "entities[]", text) for e in spans]
        out.append(Example(text, [], (), entities, str(obj.get("id", line))))
    if not out:
        raise KGFormatError(path, None, "no texts", "Write one JSON object per line")
    return out
