"""`kgpipe kg ...`: inspect, convert, name, train and evaluate knowledge graphs and TransE."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from kg.storage import check_output
from pipeline.commands.common import (
    TRAIN_DEFAULTS,
    ForceOpt,
    FormatOpt,
    UnseenOpt,
    console,
    console_for,
    kg_app,
    open_kg,
    print_result,
)

if TYPE_CHECKING:
    pass


@kg_app.command("info")
def kg_info(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="KG folder or triple file")],
    format: FormatOpt = None,
    unseen: UnseenOpt = "add",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """Count entities, relations and triples per split, and how many entities have QIDs and names.

    Example: kgpipe kg info data/kg/fb15k-237 --json
    """
    start = time.perf_counter()
    kg = open_kg(path, format, unseen)
    info = kg.summary()
    info["load_seconds"] = round(time.perf_counter() - start, 3)
    if as_json:
        print(json.dumps(info))
        return
    table = Table(title=f"{kg.name}  ({info['source']})", show_header=False)
    for key, value in info.items():
        if key not in ("name", "source"):
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console_for().print(table)


@kg_app.command("convert")
def kg_convert(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="KG folder or triple file to read")],
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="folder to write (kgpipe layout: Parquet + npz + manifest.json)"),
    ],
    format: FormatOpt = None,
    unseen: UnseenOpt = "add",
    force: ForceOpt = False,
) -> None:
    """Convert any supported KG into kgpipe's pickle-free layout (written atomically).

    Example: kgpipe kg convert ../shared/data/kg/wn18rr out/wn18rr
    """
    from kg.io import MANIFEST_FORMAT, save_kg

    check_output(out, MANIFEST_FORMAT, (path,), force)
    kg = open_kg(path, format, unseen)
    save_kg(kg, out)
    console.print(f"wrote {out}: {kg}")


@kg_app.command("train")
def kg_train(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help="KG folder or triple file to train on (train split; valid for early stopping)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint folder to write")],
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON file of training settings (see kg/embed/config.py)")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help=f"maximum epochs, early stopping may end sooner [default: {TRAIN_DEFAULTS.epochs}]"
        ),
    ] = None,
    dim: Annotated[
        int | None, typer.Option(help=f"embedding dimension [default: {TRAIN_DEFAULTS.dim}]")
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"random seed [default: {TRAIN_DEFAULTS.seed}]")] = None,
    device: Annotated[
        str | None, typer.Option(help=f"auto, cpu, cuda or cuda:N [default: {TRAIN_DEFAULTS.device}]")
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option("--max-minutes", help="stop training after this many minutes [default: no limit]"),
    ] = None,
    format: FormatOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train TransE; write model.safetensors, config.json, metrics.json and curve.png to --out.

    Under `torchrun --nproc-per-node N $(which kgpipe) kg train ...` the processes share the work (DDP).

    Example: kgpipe kg train data/kg/fb15k-237 --out out/transe --epochs 50
    """
    from kg.embed import TrainConfig, train_transe
    from kg.embed.checkpoint import FORMAT

    check_output(out, FORMAT, (data, config), force)
    cfg = TrainConfig.from_file(config) if config else TrainConfig()
    overrides = {"epochs": epochs, "dim": dim, "seed": seed, "device": device, "max_minutes": max_minutes}
    cfg = TrainConfig.from_dict(
        {**cfg.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}, where="command line"
    )
    from kg.device import resolve_device

    resolve_device(cfg.device)
    kg = open_kg(data, format)
    trainer, metrics = train_transe(kg, cfg, out)
    if trainer.rank == 0:
        test = metrics.get("test") or {}
        console.print(
            f"[bold]TransE on {kg.name}[/]: {metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s "
            f"(best epoch {metrics['best_epoch']}, stopped by {metrics['stopped_by']}); "
            + (f"test MRR {test['mrr']:.3f}, H@10 {test['hits@10']:.3f}; " if test else "")
            + f"wrote {out}"
        )


@kg_app.command("eval")
def kg_eval(
    model_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="checkpoint folder written by `kgpipe kg train`")
    ],
    data: Annotated[Path, typer.Option("--data", help="KG whose split to rank (filtered by all its splits)")],
    split: Annotated[str, typer.Option(help="train, valid or test")] = "test",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    format: FormatOpt = None,
) -> None:
    """Filtered link-prediction metrics (MRR, MR, Hits@1/3/10; realistic ties) of a checkpoint.

    Example: kgpipe kg eval data/transe/fb15k-237 --data data/kg/fb15k-237 --split test
    """
    from kg.device import resolve_device
    from kg.embed import evaluate_checkpoint

    resolve_device(device)
    result = evaluate_checkpoint(model_dir, open_kg(data, format), split, device)
    print_result(result, as_json, f"{model_dir} on {data} ({split}, filtered)")


@kg_app.command("names")
def kg_names(
    corpus: Annotated[
        Path,
        typer.Argument(
            metavar="LEADS.jsonl",
            help="JSONL of articles with 'title' and 'text' (Wikipedia lead paragraphs)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet (qid, name) to write")],
    kg_path: Annotated[
        Path | None, typer.Option("--kg", help="KG whose entities to name (default: the bundled FB15k-237)")
    ] = None,
    titles: Annotated[
        Path | None,
        typer.Option(
            "--titles",
            help="FB15k-237's entity2wikidata.json: match articles by their Wikipedia title, not only by label",
        ),
    ] = None,
) -> None:
    """Mine other names of KG entities ('Britain', 'UK') from the first sentence of their articles.

    Example: kgpipe kg names corpus.jsonl --titles entity2wikidata.json --out names.parquet
    """
    from kg.io import bundled_kg_path, load_kg
    from kg.link.leads import mine, qids_by_title, read_articles, save_names

    check_output(out, None, (corpus, kg_path, titles))
    kg = load_kg(kg_path or bundled_kg_path())
    names = mine(read_articles(corpus), qids_by_title(kg, titles))
    save_names(names, out)
    console.print(f"wrote {out}: {sum(map(len, names.values())):,} names of {len(names):,} entities")
