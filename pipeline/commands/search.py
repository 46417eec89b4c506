"""`kgpipe index` and `kgpipe search`: a vector store of an extraction, searched by text or entity."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.commands.common import BundleOpt, app, console, console_for, progress_bar

StoreArg = Annotated[
    str,
    typer.Argument(
        metavar="STORE", help="a store folder (FAISS), milvus:PATH.db (Milvus Lite) or milvus://HOST:PORT"
    ),
]


@app.command("index")
def index_command(
    extraction: Annotated[
        str, typer.Argument(metavar="EXTRACT_DIR", help="the --out folder of `kgpipe extract`")
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="store to create or grow: a folder (FAISS), milvus:PATH.db or milvus://HOST:PORT",
        ),
    ],
    factory: Annotated[
        str | None,
        typer.Option(
            "--factory",
            help="FAISS index factory string for the documents (default: IDMap2,Flat below 100k vectors, "
            "else IDMap2,IVF{4√N},SQ8); a Milvus index type (FLAT, IVF_FLAT, ...) for Milvus",
        ),
    ] = None,
    bundle: BundleOpt = None,
) -> None:
    """Build a vector store from `kgpipe extract` output, or add the documents it does not hold yet.

    Example: kgpipe index out/extract --out out/store
    """
    from pathlib import Path

    from pipeline.bundle import load
    from pipeline.search import index_extraction

    if not Path(extraction).is_dir():
        raise typer.BadParameter(f"{extraction}: no such folder", param_hint="EXTRACT_DIR")
    opened = load(bundle, eager=False)
    with progress_bar("documents", "doc") as progress:
        summary = index_extraction(extraction, out, opened, factory=factory, progress=progress)
    console.print(
        f"indexed {summary.documents:,} new documents ({summary.skipped:,} already there; "
        f"{summary.total_documents:,} in all) and {summary.entities:,} entities -> {summary.store}"
    )
    for column, kinds in summary.as_text.items():
        console.print(
            f"note: metadata column {column!r} holds {kinds}; stored as text "
            f"(--where {column}=VALUE compares text either way)",
            markup=False,
            highlight=False,
        )


@app.command("search")
def search_command(
    store: StoreArg,
    query: Annotated[str | None, typer.Argument(metavar="[QUERY]", help="text to search for")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="hits to return")] = 10,
    entity: Annotated[
        list[str] | None,
        typer.Option("--entity", help="only documents that mention this QID (repeatable: any)"),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="only documents about an entity of this KG type (PER, LOC, ORG, WORK, LANG): the type the KG gives the entity the document is about (its title, else the name it opens with)",
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="COLUMN=VALUE on the documents' metadata (repeatable: all)"),
    ] = None,
    relation: Annotated[
        list[str] | None,
        typer.Option(
            "--relation",
            help="only documents whose text states this relation (a Wikidata property, e.g. P159; repeatable: any)",
        ),
    ] = None,
    like_entity: Annotated[
        str | None,
        typer.Option(
            "--like-entity", help="documents about this QID, and its neighbours in the KG's vector space"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object on stdout: {'hits': [...]}")
    ] = False,
) -> None:
    """Search a store by text or by entity, with filters applied before the search.

    Example: kgpipe search out/store "French painters" --k 5 --type PER
    """
    from pipeline.search import Searcher
    from pipeline.store import Filter

    if (query is None) == (like_entity is None):
        raise typer.BadParameter("give QUERY text or --like-entity QID (one of them)")
    if not 1 <= k <= 10_000:
        raise typer.BadParameter(f"must be between 1 and 10000, not {k}", param_hint="'--k'")
    if query is not None and not query.strip():
        raise typer.BadParameter("is empty; give the text to search for", param_hint="QUERY")
    where_ = Filter.parse(entity or (), kind or (), where or (), relation or ())
    searcher = Searcher.open(store)
    if query is not None:
        hits = searcher.text([query], k, where_)[0]
        result: dict[str, object] = {
            "query": query,
            "hits": [h.as_dict() for h in hits],
            "names": searcher.names(hits),
        }
    else:
        assert like_entity is not None
        found = searcher.entity(like_entity, k, where_)
        result = {
            "entity": found["entity"],
            "via": found["via"],
            "hits": [h.as_dict() for h in found["hits"]],
            "neighbours": [h.as_dict() for h in found["neighbours"]],
            "names": searcher.names(found["hits"], found["neighbours"]),
        }
    if as_json:
        print(json.dumps(result, ensure_ascii=False, default=str))
        return
    _print_hits(result)


def _print_hits(result: dict[str, object]) -> None:
    """A table per section: the similarity and id of each hit, then its metadata (a column of the
    user's named like one of these, `score` say, stays in the metadata column)."""
    from rich.table import Table
    from rich.text import Text

    out = console_for()
    sections = [("hits", "documents")] + (
        [("neighbours", "neighbouring entities")] if "neighbours" in result else []
    )
    shown = ("title", "label", "entities", "type")
    for key, title in sections:
        table = Table(title=title)
        for col in ("score", "id", "title / label", "entities / type", "metadata"):
            table.add_column(col)
        for h in result[key]:  # type: ignore[attr-defined]
            m = h["metadata"]
            label = m.get("title") or m.get("label") or ""
            names: dict[str, str] = result.get("names") or {}  # type: ignore[assignment]
            mentioned = [f"{names[q]} ({q})" if q in names else str(q) for q in (m.get("entities") or [])[:6]]
            extra = ", ".join(mentioned) if "entities" in m else m.get("type", "")
            rest = "; ".join(
                f"{k}={v}" for k, v in m.items() if k not in (*shown, "types", "mention_types", "relations")
            )
            cells = (f"{h['score']:.3f}", str(h["id"]), str(label)[:60], str(extra), rest[:80])
            table.add_row(*(Text(c) for c in cells))
        out.print(table)
