"""`kgpipe link ...`: link documents, and train the linker."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kg.storage import check_output
from pipeline.commands.common import (
    BundleOpt,
    ForceOpt,
    bundle_linker,
    console,
    link_app,
)


@link_app.command("run")
def link(
    infile: Annotated[
        Path,
        typer.Argument(
            metavar="IN.jsonl",
            help="one JSON object per line with 'text' (and optional 'id'); ELEVANT files work as they are",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL to write: one line per input, same order")],
    kg_path: Annotated[
        Path | None, typer.Option("--kg", help="KG to link to (default: the bundled FB15k-237)")
    ] = None,
    spans: Annotated[
        bool,
        typer.Option(
            "--spans", help="only disambiguate the spans in each line's 'labels' (ELEVANT) or 'mentions'"
        ),
    ] = False,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            help="NIL below this score, 0 to 1, for names, concepts and nationality words alike "
            "(default: the scorer's three thresholds, one for each)",
        ),
    ] = None,
    bundle: BundleOpt = None,
) -> None:
    """Link entity mentions in English text to KG entities (Wikidata QIDs), writing ELEVANT-style
    JSONL. The default command: `kgpipe link IN.jsonl --out OUT.jsonl` runs it.

    Example: kgpipe link docs.jsonl --out linked.jsonl
    """
    from tqdm.auto import tqdm

    from kg.link.io import read_documents, write_linked

    if min_score is not None and not 0.0 <= min_score <= 1.0:  # NaN fails this too
        raise typer.BadParameter(
            f"must be a probability from 0 to 1, not {min_score}", param_hint="'--min-score'"
        )
    check_output(out, None, (infile, kg_path))
    start = time.perf_counter()
    docs = read_documents(infile, spans)
    if not docs:  # nothing to link: no models to load
        write_linked(out, [], [])
        console.print(f"no documents in {infile}; wrote an empty {out}")
        return
    linker = bundle_linker(kg_path, bundle)
    results = []
    batch = 64
    with tqdm(total=len(docs), desc="linking", unit="doc", file=sys.stderr) as bar:
        for i in range(0, len(docs), batch):
            part = docs[i : i + batch]
            results += linker.link_many(
                [d.text for d in part],
                [d.spans or [] for d in part] if spans else None,
                min_score=min_score,
            )
            bar.update(len(part))
    write_linked(out, docs, results)
    n = sum(map(len, results))
    console.print(
        f"linked {n:,} mentions in {len(docs):,} documents in {time.perf_counter() - start:.1f} s -> {out}"
    )


@link_app.command("train")
def link_train(
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="labelled documents, ELEVANT JSONL (text, labels with span and entity_id); repeat for more files",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="linker folder to write (`bundle build --linker` takes it)")
    ],
    kg_path: Annotated[
        Path | None, typer.Option("--kg", help="KG the linker links to (default: the bundle's)")
    ] = None,
    folds: Annotated[
        int,
        typer.Option(
            "--folds",
            help="cross-validation folds by document that choose the NIL thresholds, for one or two "
            "--data files; three or more are held out one corpus at a time instead",
        ),
    ] = 5,
    sentences: Annotated[
        bool,
        typer.Option("--sentences/--no-sentences", help="also train on each sentence alone (short texts)"),
    ] = True,
    caseless: Annotated[
        bool,
        typer.Option("--caseless/--no-caseless", help="also train the scorer for text without capitals"),
    ] = True,
    vote: Annotated[
        bool,
        typer.Option(
            "--vote/--no-vote",
            help="with two or more --data files, each has one vote per kind of mention (nationality "
            "words, concepts, ...) on whether such mentions are linked; --no-vote: each mention counts once",
        ),
    ] = True,
    bundle: BundleOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train the linker's scorers on labelled documents and write a linker folder.

    With three or more --data files, each is held out in turn (linked by a scorer trained on the
    others) and the NIL thresholds are chosen on those held-out predictions; the linker written
    trains on all of them.

    Example: kgpipe link train --data aida-dev.jsonl --data tweets.jsonl --data news.jsonl --out my-linker
    """
    from rich.progress import Progress

    from kg.link.linker import LINKER_FORMAT
    from kg.link.train import read_documents, train_linker

    if folds < 2:
        raise typer.BadParameter(f"must be at least 2, not {folds}", param_hint="'--folds'")
    check_output(out, LINKER_FORMAT, (*data, kg_path), force)
    if len(set(map(Path.resolve, data))) < len(data):
        raise typer.BadParameter("a file is given twice; give each once", param_hint="'--data'")
    sets: dict[str, list[dict]] = {}
    for path in data:  # a set is named by its file; two files of one name by their paths
        name = path.name.removesuffix(".jsonl").removesuffix(".benchmark")
        sets[str(path) if name in sets else name] = read_documents(path)
    start = time.perf_counter()
    linker = bundle_linker(kg_path, bundle, to_train=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training the linker", total=(len(sets) if len(sets) >= 3 else folds) + 5)

        def step(message: str) -> None:
            progress.update(task, advance=1, description=message)

        report = train_linker(
            linker,
            sets,
            folds=folds,
            with_sentences=sentences,
            caseless=caseless,
            progress=step,
            vote=vote,
        )
    linker.save(out)
    how = (
        "leave-one-corpus-out predictions (each set linked by a scorer trained on the others)"
        if report.held_out == "corpus"
        else f"{report.folds}-fold cross-validated predictions"
    )
    console.print(
        f"linker trained on {report.documents:,} documents ({report.mentions:,} mentions with candidates, "
        f"{report.mentions_with_gold_candidate:,} with the gold entity among them) in "
        f"{time.perf_counter() - start:.0f} s; NIL thresholds {report.threshold} (names), "
        f"{report.concept_threshold} (concepts) and {report.nationality_threshold} (nationality words) "
        f"chosen on {how} -> {out}"
    )
    table = Table(
        title=(
            "leave-one-corpus-out: each set scored by a scorer that never saw it"
            if report.held_out == "corpus"
            else f"{report.folds}-fold cross-validated (each document scored by a model that did not see it)"
        )
    )
    for column in ("set", "P", "R", "F1", "mention R", "gold"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, r in report.sets.items():
        table.add_row(
            name,
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['f1']:.3f}",
            f"{r['mention_recall']:.3f}" if "mention_recall" in r else "",
            f"{int(r['gold']):,}",
        )
    console.print(table)
