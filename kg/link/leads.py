"""Other names of entities, mined from the first sentence of their encyclopedia article.

Wikipedia writes an article's other names before the first verb: 'The United Kingdom of Great
Britain and Northern Ireland, commonly known as the United Kingdom (UK) or Britain, is ...' gives
'UK' and 'Britain', names that Wikidata's aliases (and so the KG) often lack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from kg.errors import KGFormatError
from kg.graph import KnowledgeGraph
from kg.io import read_entity_records, read_json_lines
from kg.storage import atomic_write, read_parquet

_VERB = re.compile(r"\s(?:is|was|are|were|refers to|has been)\s")
_PARENS = re.compile(r"\(([^()]*)\)")
# 'commonly known as the', 'also called', 'or simply': what introduces another name
_INTRO = re.compile(
    r"^(?:(?:also|commonly|officially|simply|often|formerly|better|popularly|colloquially|sometimes|"
    r"usually|originally|widely|more commonly|or)\s+)*(?:(?:known|referred to|called|abbreviated|"
    r"shortened|styled|named)\s+(?:as\s+|to\s+as\s+)?)?(?:the\s+)?",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[A-Z][\w'’.&-]*(?:\s+(?:[A-Z][\w'’.&-]*|of|the|and|de|du|la|von|van|der|for|&)){0,4}$")
_HEAD_CHARS = 400  # the other names sit in the opening words; a verb later than this is no copula


def names_in_lead(text: str, title: str = "") -> list[str]:
    """The names that the first sentence gives its subject besides `title`, in order: those in
    parentheses before the verb ('(UK)') and those after 'known as', 'called' or 'or' ('Britain')."""
    verb = _VERB.search(text[:_HEAD_CHARS])
    if verb is None:
        return []
    head = text[: verb.start()]
    pieces = [p for group in _PARENS.findall(head) for p in re.split(r"[;,]|\s+or\s+", group)]
    rest = _PARENS.sub("", head)
    for clause in rest.split(",")[1:]:  # the first clause is the article's own full name
        intro = _INTRO.match(clause.strip())
        if intro and intro.group(0).strip():
            pieces += re.split(r"\s+or\s+(?:simply\s+)?(?:the\s+)?", clause.strip()[intro.end() :])
    seen, out = {title.casefold()}, []
    for piece in pieces:
        name = _INTRO.sub("", piece.strip(" \"'“”")).strip(" \"'“”")
        if _NAME.match(name) and not any(ch.isdigit() for ch in name) and name.casefold() not in seen:
            seen.add(name.casefold())
            out.append(name)
    return out


def mine(articles: Iterable[Mapping[str, str]], qid_of_title: Mapping[str, str]) -> dict[str, list[str]]:
    """QID → other names, from articles ({'title', 'text'}) whose title names a KG entity."""
    out: dict[str, list[str]] = {}
    for article in articles:
        qid = qid_of_title.get(article.get("title", ""))
        if qid:
            names = names_in_lead(article.get("text", ""), article["title"])
            if names:
                known = out.setdefault(qid, [])
                known += [n for n in names if n not in known]
    return out


def qids_by_title(kg: KnowledgeGraph, wikidata_json: str | Path | None = None) -> dict[str, str]:
    """Article title → QID: each label that names one entity only, and where `wikidata_json`
    (FB15k-237's `entity2wikidata.json`) is given, each entity's Wikipedia title."""
    by_label: dict[str, set[str]] = {}
    for label, qid in zip(kg.labels, kg.qids, strict=True):
        if qid and label:
            by_label.setdefault(label, set()).add(qid)
    out = {label: next(iter(q)) for label, q in by_label.items() if len(q) == 1}
    if wikidata_json is not None:
        known = set(kg.qids)
        for entry in read_entity_records(Path(wikidata_json)).values():
            url, qid = entry.wikipedia or "", entry.qid or ""
            if url and qid in known:
                out[unquote(url.rsplit("/", 1)[-1]).replace("_", " ")] = qid
    return out


def read_articles(path: str | Path) -> list[dict[str, str]]:
    """JSONL with `title` and `text` per line (the shared Wikipedia lead paragraphs)."""
    out = []
    for n, doc in read_json_lines(Path(path)):
        if not isinstance(doc.get("title"), str) or not isinstance(doc.get("text"), str):
            raise KGFormatError(
                path, n, "no string 'title' and 'text'", 'Give {"title": ..., "text": ...} per line'
            )
        out.append(doc)
    return out  # type: ignore[return-value]


def save_names(names: Mapping[str, list[str]], path: str | Path) -> None:
    """Parquet (qid, name), written atomically."""
    rows = [(q, n) for q, ns in sorted(names.items()) for n in ns]
    table = pa.table({"qid": [q for q, _ in rows], "name": [n for _, n in rows]})
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")


def load_names(path: str | Path) -> dict[str, list[str]]:
    t = read_parquet(Path(path), ("qid", "name"), "kgpipe kg names")
    out: dict[str, list[str]] = {}
    for q, n in zip(t["qid"], t["name"], strict=True):
        out.setdefault(q, []).append(n)
    return out
