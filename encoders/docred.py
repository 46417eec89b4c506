"""Documents for document-level relation extraction, in DocRED's JSON format (DocRED, Re-DocRED).

A file is a JSON list of documents: `title`, `sents` (each a list of tokens), `vertexSet` (each
entity a list of mentions `{"name", "sent_id", "pos": [start, end), "type"}`) and, for training
data, `labels` (`{"h", "t", "r", "evidence"}`). Every document is checked on reading; a bad one
fails with the file, the document's index and title, the field, and the fix.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.errors import KGFormatError

# Wikidata properties → labels: DocRED's 96 relations (Re-DocRED's rel_info.json, MIT)
RELATIONS_FILE = Path(__file__).with_name("rel_info.json")
# DocRED's entity types; "" where a mention's type is unknown
TYPES: tuple[str, ...] = ("PER", "ORG", "LOC", "TIME", "NUM", "MISC")


@dataclass(frozen=True)
class DocMention:
    """Tokens [start, end) of sentence `sent`."""

    sent: int
    start: int
    end: int
    name: str = ""


@dataclass
class DocEntity:
    """One entity: its mentions (at least one), its type (one of TYPES or "") and its QID ("" when
    not linked)."""

    mentions: list[DocMention]
    type: str = ""
    qid: str = ""
    score: float = 0.0  # the linker's confidence in `qid`

    @property
    def name(self) -> str:
        """The longest of its mentions' names (the full name rather than a surname alone)."""
        return max((m.name for m in self.mentions), key=len, default="")


@dataclass(frozen=True)
class DocFact:
    """Entity `h` stands in relation `r` (a Wikidata property) to entity `t`; `evidence`: the
    sentences that say so."""

    h: int
    t: int
    r: str
    evidence: tuple[int, ...] = ()


@dataclass
class RelDocument:
    """One document: tokenised sentences, its entities and (training data) its facts."""

    title: str
    sents: list[list[str]]
    entities: list[DocEntity]
    facts: list[DocFact] = field(default_factory=list)

    def text(self) -> tuple[str, list[list[tuple[int, int]]]]:
        """The document as one string (tokens joined by spaces) and each token's character
        offsets [start, end) in it, by sentence."""
        parts: list[str] = []
        offsets: list[list[tuple[int, int]]] = []
        at = 0
        for sent in self.sents:
            row = []
            for token in sent:
                if parts:
                    parts.append(" ")
                    at += 1
                parts.append(token)
                row.append((at, at + len(token)))
                at += len(token)
            offsets.append(row)
        return "".join(parts), offsets

    def mention_chars(self, m: DocMention, offsets: list[list[tuple[int, int]]]) -> tuple[int, int]:
        """Character offsets [start, end) of a mention in `text()`."""
        return offsets[m.sent][m.start][0], offsets[m.sent][m.end - 1][1]


def _fail(path: Path, i: int, title: object, fieldname: str, problem: str, fix: str) -> KGFormatError:
    name = f" ({str(title)[:60]!r})" if isinstance(title, str) and title else ""
    return KGFormatError(path, None, f"document {i}{name}, field {fieldname}: {problem}", fix)


FORMAT_FIX = (
    "Write each document as DocRED does: "
    '{"title": ..., "sents": [[tokens]], "vertexSet": [[{"name", "sent_id", "pos": [start, end], "type"}]], '
    '"labels": [{"h", "t", "r", "evidence"}]}'
)


def read_rel_info(path: str | Path | None = None) -> dict[str, str]:
    """DocRED's `rel_info.json`: Wikidata property → its label (default: the shipped one)."""
    path = Path(path) if path is not None else RELATIONS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise KGFormatError(
            path, None, "no such file", "Give the rel_info.json that names the properties"
        ) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KGFormatError(
            path, None, f"not a JSON file ({e})", 'Write it as {"P17": "country", ...}'
        ) from e
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise KGFormatError(
            path, None, "not an object of property → label strings", 'Write it as {"P17": "country", ...}'
        )
    return raw


def read_docred(
    path: str | Path, relations: Mapping[str, str] | None = None, labels: bool = True
) -> list[RelDocument]:
    """The documents of a DocRED-format file, checked. `relations`: the properties a label may
    name (others are an error); `labels=False` ignores any labels (input to prediction)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise KGFormatError(path, None, "no such file", "Give a DocRED-format JSON file") from e
    except json.JSONDecodeError as e:
        raise KGFormatError(path, e.lineno, f"invalid JSON ({e.msg})", FORMAT_FIX) from e
    except UnicodeDecodeError as e:
        raise KGFormatError(path, None, f"not UTF-8 text ({e.reason})", "Re-encode the file as UTF-8") from e
    if not isinstance(raw, list):
        raise KGFormatError(path, 1, f"a JSON {type(raw).__name__}, not a list of documents", FORMAT_FIX)
    return [parse_document(d, path, i, relations, labels) for i, d in enumerate(raw)]


def parse_document(
    d: Any, path: Path, i: int, relations: Mapping[str, str] | None = None, labels: bool = True
) -> RelDocument:
    """One document of a DocRED-format list, checked (see `read_docred`)."""
    if not isinstance(d, dict):
        raise _fail(path, i, None, "(document)", f"a {type(d).__name__}, not an object", FORMAT_FIX)
    title = d.get("title", "")
    for key in ("sents", "vertexSet"):
        if key not in d:
            raise _fail(path, i, title, key, "missing", FORMAT_FIX)
    if not isinstance(title, str):
        raise _fail(
            path,
            i,
            title,
            "title",
            f"a {type(title).__name__}, not a string",
            "Give each document a title string",
        )
    sents = d["sents"]
    if not isinstance(sents, list) or not all(
        isinstance(s, list) and all(isinstance(t, str) for t in s) for s in sents
    ):
        raise _fail(
            path, i, title, "sents", "not a list of sentences, each a list of token strings", FORMAT_FIX
        )
    if not any(sents):
        raise _fail(path, i, title, "sents", "the document is empty (no tokens)", "Leave empty documents out")
    for s, sent in enumerate(sents):
        for j, token in enumerate(sent):
            if not token:  # a blank one (a no-break space) is a token: Re-DocRED has some
                raise _fail(
                    path,
                    i,
                    title,
                    f"sents[{s}][{j}]",
                    "the token is an empty string",
                    "Give tokens of at least one character; leave out empty ones",
                )
    vertex = d["vertexSet"]
    if not isinstance(vertex, list):
        raise _fail(path, i, title, "vertexSet", "not a list of entities", FORMAT_FIX)
    entities = []
    for e, mentions in enumerate(vertex):
        where = f"vertexSet[{e}]"
        if not isinstance(mentions, list) or not mentions:
            raise _fail(path, i, title, where, "not a non-empty list of mentions", FORMAT_FIX)
        got, kinds = [], []
        for k, m in enumerate(mentions):
            at = f"{where}[{k}]"
            if not isinstance(m, dict):
                raise _fail(path, i, title, at, "not an object", FORMAT_FIX)
            for key in ("sent_id", "pos"):
                if key not in m:
                    raise _fail(path, i, title, f"{at}.{key}", "missing", FORMAT_FIX)
            s, pos = m["sent_id"], m["pos"]
            if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < len(sents):
                raise _fail(
                    path,
                    i,
                    title,
                    f"{at}.sent_id",
                    f"{s!r} is not a sentence of the {len(sents)}",
                    f"Give a sentence index from 0 to {len(sents) - 1}",
                )
            if (
                not isinstance(pos, list)
                or len(pos) != 2
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos)
                or not 0 <= pos[0] < pos[1] <= len(sents[s])
            ):
                raise _fail(
                    path,
                    i,
                    title,
                    f"{at}.pos",
                    f"{pos!r} is not inside sentence {s} ({len(sents[s])} tokens)",
                    "Give [start, end) token offsets into that sentence, start < end",
                )
            kind = m.get("type", "")
            if kind not in TYPES and kind != "":
                raise _fail(
                    path,
                    i,
                    title,
                    f"{at}.type",
                    f"{kind!r} is not a DocRED type",
                    f"Use one of {', '.join(TYPES)}",
                )
            kinds.append(kind)
            given = m.get("name")
            name = given if isinstance(given, str) else " ".join(sents[s][pos[0] : pos[1]])
            got.append(DocMention(s, pos[0], pos[1], name))
        kind = Counter(kinds).most_common(1)[0][0] if kinds else ""  # ties: the first mention's
        entities.append(DocEntity(got, kind))
    facts = []
    raw_labels = d.get("labels", []) if labels else []
    if not isinstance(raw_labels, list):
        raise _fail(path, i, title, "labels", "not a list", FORMAT_FIX)
    for k, lab in enumerate(raw_labels):
        at = f"labels[{k}]"
        if not isinstance(lab, dict):
            raise _fail(path, i, title, at, "not an object", FORMAT_FIX)
        for key in ("h", "t", "r"):
            if key not in lab:
                raise _fail(path, i, title, f"{at}.{key}", "missing", FORMAT_FIX)
        for key in ("h", "t"):
            v = lab[key]
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < len(entities):
                raise _fail(
                    path,
                    i,
                    title,
                    f"{at}.{key}",
                    f"entity index {v!r} is out of range ({len(entities)} entities)",
                    "Give an index into vertexSet",
                )
        r = lab["r"]
        if not isinstance(r, str) or (relations is not None and r not in relations):
            raise _fail(
                path,
                i,
                title,
                f"{at}.r",
                f"{r!r} is not a property of rel_info.json",
                "Use a Wikidata property the relation list names, or add it there",
            )
        evidence = lab.get("evidence", [])
        if not isinstance(evidence, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < len(sents) for x in evidence
        ):
            raise _fail(
                path,
                i,
                title,
                f"{at}.evidence",
                f"{evidence!r} is not a list of sentence indices",
                "Give sentence ids",
            )
        facts.append(DocFact(lab["h"], lab["t"], r, tuple(evidence)))
    return RelDocument(title, sents, entities, facts)
