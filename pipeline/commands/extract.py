"""`kgpipe extract`: entities, facts and vectors of every document of a corpus, on dask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kg.storage import check_output
from pipeline.commands.common import BundleOpt, ForceOpt, app, console, progress_bar


@app.command("extract")
def extract_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...",
            help="JSONL or Parquet files or globs: 'id', 'text', every other column kept as metadata",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for entities/, facts/, docs/ and _manifest.json")
    ],
    workers: Annotated[int, typer.Option("--workers", help="worker processes of the local dask cluster")] = 2,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="address of a running dask scheduler (tcp://HOST:PORT) instead"),
    ] = None,
    partition_size: Annotated[
        int, typer.Option("--partition-size", help="documents (lines or rows) per task")
    ] = 100,
    mention_vectors: Annotated[
        bool, typer.Option("--mention-vectors", help="also a vector per linked mention (its text in context)")
    ] = False,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit", help="per local worker, e.g. 4GiB (default: an even share of the machine)"
        ),
    ] = None,
    bundle: BundleOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run entity linking, fact extraction and document vectors over corpora; resumable: a rerun
    skips finished partitions.

    Example: kgpipe extract corpus/*.jsonl --out extracted --workers 2
    """
    from pipeline.batch import FORMAT, expand_inputs, run

    if workers < 1:
        raise typer.BadParameter(f"must be at least 1, not {workers}", param_hint="'--workers'")
    if partition_size < 1:
        raise typer.BadParameter(f"must be at least 1, not {partition_size}", param_hint="'--partition-size'")
    files = expand_inputs(inputs)
    check_output(out, FORMAT, tuple(files), force)
    with progress_bar("partitions", "part") as progress:
        summary = run(
            files,
            out,
            bundle=bundle,
            workers=workers,
            scheduler=scheduler,
            partition_size=partition_size,
            mention_vectors=mention_vectors,
            memory_limit=memory_limit,
            progress=progress,
        )
    console.print(
        f"extracted {summary.documents:,} documents ({summary.partitions} partitions, {summary.skipped} "
        f"already done): {summary.entities:,} entities, {summary.facts:,} facts, {summary.errors:,} bad "
        f"lines (_errors.jsonl), {summary.docs_per_second:.1f} documents/s on {summary.workers} worker(s) "
        f"-> {summary.out}"
    )
    if summary.damaged:
        console.print(
            f"{len(summary.damaged)} partition(s) damaged, extracted again (the first: {summary.damaged[0]})"
        )
    if summary.workers_lost:
        console.print(
            f"{len(summary.workers_lost)} dask worker(s) lost during the job ({', '.join(summary.workers_lost[:3])}); "
            f"{len(summary.reruns)} unfinished partition(s) started again on the others, no finished one"
        )
    if summary.removed:
        console.print(
            f"{summary.removed} partition(s) of an earlier run over these inputs (another --partition-size, "
            "changed inputs or another bundle) removed"
        )
