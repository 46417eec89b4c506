"""The `kgpipe` command line (typer): KG tools, TransE, linking, encoders and the demo.

Errors kgpipe raises on purpose print one line to stderr, with no traceback, and exit 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kg.errors import KGPipeError
from kg.graph import KnowledgeGraph

app = typer.Typer(
    name="kgpipe",
    help=(
        "kgpipe: link text to a knowledge graph, train TransE vectors, fuse them into BERT encoders.\n\n"
        "Start with `kgpipe demo`, which runs on the bundled FB15k-237 KG. "
        "`kgpipe kg info PATH` summarises any KG folder (FB15k-237, WN18RR, CoDEx, WD50K, TSV/CSV/JSONL)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kg_app = typer.Typer(
    help="Knowledge graphs: inspect, convert, train and evaluate TransE.", no_args_is_help=True
)
app.add_typer(kg_app, name="kg")

console = Console(stderr=True)
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="KG format (detected when omitted): fb15k-237, wn18rr, codex, wd50k, tsv, csv, jsonl, kgpipe",
    ),
]
UnseenOpt = Annotated[
    str,
    typer.Option(
        "--unseen",
        help="valid/test entities absent from train: add (give them ids), drop (skip triples), error",
    ),
]


def _load(path: Path, fmt: str | None, unseen: str = "add") -> KnowledgeGraph:
    from kg.io import load_kg

    if unseen not in ("add", "drop", "error"):
        raise typer.BadParameter(f"--unseen must be add, drop or error, not {unseen!r}")
    return load_kg(path, format=fmt, unseen=unseen)  # type: ignore[arg-type]


@kg_app.command("info")
def kg_info(
    path: Annotated[Path, typer.Argument(help="KG folder or triple file")],
    format: FormatOpt = None,
    unseen: UnseenOpt = "add",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """Count entities, relations and triples per split, and how many entities have QIDs and names."""
    start = time.perf_counter()
    kg = _load(path, format, unseen)
    info = kg.summary()
    info["load_seconds"] = round(time.perf_counter() - start, 3)
    if as_json:
        print(json.dumps(info))
        return
    table = Table(title=f"{kg.name}  ({info['source']})", show_header=False)
    for key, value in info.items():
        if key not in ("name", "source"):
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


@kg_app.command("convert")
def kg_convert(
    path: Annotated[Path, typer.Argument(help="KG folder or triple file to read")],
    out: Annotated[
        Path, typer.Argument(help="folder to write (kgpipe layout: Parquet + npz + manifest.json)")
    ],
    format: FormatOpt = None,
    unseen: UnseenOpt = "add",
) -> None:
    """Convert any supported KG into kgpipe's pickle-free layout (written atomically)."""
    from kg.io import save_kg

    kg = _load(path, format, unseen)
    save_kg(kg, out)
    console.print(f"wrote {out}: {kg}")


@app.command("demo")
def demo(
    kg_path: Annotated[
        Path | None, typer.Option("--kg", help="KG to use (default: the bundled FB15k-237)")
    ] = None,
) -> None:
    """Run the main job on the bundled defaults and show what kgpipe does."""
    from pipeline.demo import run_demo

    run_demo(kg_path)


def main() -> None:
    """Console entry point: run the app, turning kgpipe's own errors into one line on stderr."""
    try:
        app()
    except KGPipeError as e:
        print(f"kgpipe: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"kgpipe: error: {e.strerror}: {e.filename}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
