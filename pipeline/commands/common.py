"""What every `kgpipe` command shares: the typer apps, the common options, and the helpers that
open KGs and bundles for a command.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from kg.embed.config import TrainConfig

if TYPE_CHECKING:
    from encoders.data import Example
    from kg.graph import KnowledgeGraph
    from kg.link.linker import Linker

TRAIN_DEFAULTS = TrainConfig()  # the defaults, for --help

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
    rich_markup_mode=None,
)
kg_app = typer.Typer(
    help="Knowledge graphs: inspect, convert, train and evaluate TransE.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(kg_app, name="kg")
encoder_app = typer.Typer(
    help="Knowledge-fused encoders: fine-tune and evaluate text-only, ERNIE-style or K-BERT-style models.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(encoder_app, name="encoder")
bundle_app = typer.Typer(
    help="Bundles: one folder with the KG, TransE, the linker and classifiers, checksummed.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(bundle_app, name="bundle")


class _DefaultRun(TyperGroup):
    """`kgpipe link IN.jsonl ...` runs the linker; `kgpipe link train ...` trains one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


link_app = typer.Typer(
    cls=_DefaultRun,
    help=(
        "Link entity mentions in English text to KG entities: `kgpipe link IN.jsonl --out OUT.jsonl`; "
        "`kgpipe link train` trains the linker's scorers."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(link_app, name="link")


def console_for(stderr: bool = False) -> Console:
    """A rich console for a command's output. On a terminal it fits the window; anywhere else (a
    log file, a pipe, CI) text lines are printed whole rather than wrapped at rich's default 80
    columns, so a summary stays one line that grep finds, and tables and rules take up to 160."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, soft_wrap=True, width=width)


console = console_for(stderr=True)


@contextlib.contextmanager
def progress_bar(desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A `progress(done, total)` callback for long work, whose tqdm bar appears at its first call:
    input refused before any work stays one line, with no empty bar above it."""
    from tqdm.auto import tqdm

    bars: list[tqdm] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit=unit))
        bars[0].total, bars[0].n = total, done
        bars[0].refresh()

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()


FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="KG format (detected when omitted): fb15k-237, wn18rr, codex, wd50k, tsv, csv, jsonl, kgpipe",
    ),
]
BundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--bundle",
        help="bundle folder with the models to use (default: KGPIPE_BUNDLE, else the shipped defaults)",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="write into a non-empty folder kgpipe did not write; only kgpipe's own files are replaced",
    ),
]
TranseOpt = Annotated[
    Path | None,
    typer.Option("--transe", help="TransE checkpoint (`kgpipe kg train`; default: the bundle's)"),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", help="local Hugging Face checkpoint (default: the bundled MiniLM)"),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N")
]
UnseenOpt = Annotated[
    str,
    typer.Option(
        "--unseen",
        help="valid/test entities absent from train: add (give them ids), drop (skip triples), error",
    ),
]


def open_kg(path: Path, fmt: str | None, unseen: str = "add") -> KnowledgeGraph:
    from kg.io import load_kg

    if unseen not in ("add", "drop", "error"):
        raise typer.BadParameter(f"--unseen must be add, drop or error, not {unseen!r}")
    return load_kg(path, format=fmt, unseen=unseen)  # type: ignore[arg-type]


def print_result(result: Mapping[str, object], as_json: bool, title: str) -> None:
    """One JSON object on stdout, or a one-row table."""
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=title)
    for key in result:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in result.values()))
    console_for().print(table)


def positive(*options: tuple[str, float]) -> None:
    """Exit 2 naming the first option whose value is not positive."""
    for name, value in options:
        if value <= 0:
            raise typer.BadParameter(f"{name} must be positive, not {value}")


def bundle_linker(kg_path: Path | None, bundle: Path | None, to_train: bool = False) -> Linker:
    """The bundle's linker, over `kg_path` when given (a KG it cannot use fails before any model
    loads); `to_train`: a new one with an untrained scorer (`Bundle.linker_to_train`)."""
    from kg.io import load_kg
    from kg.link.linker import require_names
    from pipeline.bundle import load

    kg = require_names(load_kg(kg_path)) if kg_path is not None else None
    opened = load(bundle, eager=kg is None and not to_train)
    if to_train:
        return opened.linker_to_train(kg)
    return opened.linker if kg is None else opened.linker_for(kg)


def from_bundle(bundle: Path | None, kg_path: Path | None, transe: Path | None) -> tuple[Path, Path]:
    """--kg and --transe, or where they are not given, the bundle's KG and TransE parts (checked)."""
    from kg.manifest import default_bundle, read_manifest

    _, parts = read_manifest(bundle or default_bundle(), verify=True)
    return kg_path or parts["kg"].path, transe or parts["transe"].path


def link_examples_in(examples: list[Example], kg_path: Path | None, bundle: Path | None) -> list[Example]:
    from encoders.knowledge import link_examples

    linked, n = link_examples(examples, bundle_linker(kg_path, bundle))
    console.print(f"linked {n:,} entity mentions in examples that named none")
    return linked
