"""The `kgpipe` command line (typer): KG tools, TransE, linking, encoders and the demo.

Errors kgpipe raises on purpose print one line to stderr, with no traceback, and exit 2.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from kg.embed.config import TrainConfig
from kg.errors import KGPipeError
from kg.storage import check_output

if TYPE_CHECKING:
    from encoders.data import Example
    from kg.graph import KnowledgeGraph
    from kg.link.linker import Linker

_TRAIN = TrainConfig()  # the defaults, for --help

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

console = Console(stderr=True)
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
    path: Annotated[Path, typer.Argument(metavar="PATH", help="KG folder or triple file")],
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
    path: Annotated[Path, typer.Argument(metavar="PATH", help="KG folder or triple file to read")],
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="folder to write (kgpipe layout: Parquet + npz + manifest.json)"),
    ],
    format: FormatOpt = None,
    unseen: UnseenOpt = "add",
    force: ForceOpt = False,
) -> None:
    """Convert any supported KG into kgpipe's pickle-free layout (written atomically)."""
    from kg.io import MANIFEST_FORMAT, save_kg

    check_output(out, MANIFEST_FORMAT, (path,), force)
    kg = _load(path, format, unseen)
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
        typer.Option(help=f"maximum epochs, early stopping may end sooner [default: {_TRAIN.epochs}]"),
    ] = None,
    dim: Annotated[int | None, typer.Option(help=f"embedding dimension [default: {_TRAIN.dim}]")] = None,
    seed: Annotated[int | None, typer.Option(help=f"random seed [default: {_TRAIN.seed}]")] = None,
    device: Annotated[
        str | None, typer.Option(help=f"auto, cpu, cuda or cuda:N [default: {_TRAIN.device}]")
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
    kg = _load(data, format)
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
    """Filtered link-prediction metrics (MRR, MR, Hits@1/3/10; realistic ties) of a checkpoint."""
    from kg.device import resolve_device
    from kg.embed import evaluate_checkpoint

    resolve_device(device)
    result = evaluate_checkpoint(model_dir, _load(data, format), split, device)
    _print_result(result, as_json, f"{model_dir} on {data} ({split}, filtered)")


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
    """Mine other names of KG entities ('Britain', 'UK') from the first sentence of their articles."""
    from kg.io import bundled_kg_path, load_kg
    from kg.link.leads import mine, qids_by_title, read_articles, save_names

    check_output(out, None, (corpus, kg_path, titles))
    kg = load_kg(kg_path or bundled_kg_path())
    names = mine(read_articles(corpus), qids_by_title(kg, titles))
    save_names(names, out)
    console.print(f"wrote {out}: {sum(map(len, names.values())):,} names of {len(names):,} entities")


def _print_result(result: Mapping[str, object], as_json: bool, title: str) -> None:
    """One JSON object on stdout, or a one-row table."""
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=title)
    for key in result:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in result.values()))
    Console().print(table)


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
        typer.Option("--min-score", help="NIL below this score, 0 to 1 (default: the scorer's threshold)"),
    ] = None,
    bundle: BundleOpt = None,
) -> None:
    """Link entity mentions in English text to KG entities (Wikidata QIDs), writing ELEVANT-style
    JSONL. The default command: `kgpipe link IN.jsonl --out OUT.jsonl` runs it."""
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
    linker = _linker(kg_path, bundle)
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


@encoder_app.command("finetune")
def encoder_finetune(
    task: Annotated[str, typer.Argument(metavar="TASK", help="sequence, relation or typing")],
    train: Annotated[Path, typer.Option("--train", help="training examples, JSONL (see README)")],
    dev: Annotated[
        Path, typer.Option("--dev", help="dev examples, JSONL: early stopping and the score shown")
    ],
    knowledge: Annotated[
        str,
        typer.Option("--knowledge", help="none (text only), ernie (TransE entity stream) or kbert (triples)"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the model to")],
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    kg_path: Annotated[
        Path | None,
        typer.Option("--kg", help="KG for kbert branches and --link (default: bundled FB15k-237)"),
    ] = None,
    transe: Annotated[
        Path | None, typer.Option("--transe", help="TransE checkpoint for ernie (default: the bundled one)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="local Hugging Face checkpoint (default: bundled MiniLM)")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="most epochs (early stopping on dev)")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="examples per step")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="learning rate of the pretrained encoder")] = 5e-5,
    max_length: Annotated[int, typer.Option("--max-length", help="word pieces per text at most")] = 128,
    link: Annotated[
        bool, typer.Option("--link", help="link examples that name no entities with `kgpipe link`'s linker")
    ] = False,
    descriptions: Annotated[
        bool,
        typer.Option(
            "--descriptions",
            help="ernie: the entity stream also holds each entity's KG description, embedded by the default text model",
        ),
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N")
    ] = "auto",
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained",
            help="ernie: start the fusion from a folder written by `kgpipe encoder pretrain` (same --transe)",
        ),
    ] = None,
    force: ForceOpt = False,
    bundle: BundleOpt = None,
) -> None:
    """Fine-tune a head on a text model, with or without knowledge; writes DIR/model.safetensors + config.json."""
    from encoders.data import TASKS, read_examples
    from encoders.finetune import FinetuneConfig, evaluate, finetune, summary
    from encoders.knowledge import knowledge_for
    from encoders.model import FORMAT, KNOWLEDGE, EncoderConfig, KnowledgeEncoder
    from kg.device import resolve_device
    from kg.errors import KGFormatError
    from kg.settings import validate

    if task not in TASKS:
        raise typer.BadParameter(f"TASK must be one of {', '.join(TASKS)}, not {task!r}")
    if knowledge not in KNOWLEDGE:
        raise typer.BadParameter(f"--knowledge must be one of {', '.join(KNOWLEDGE)}, not {knowledge!r}")
    if descriptions and knowledge != "ernie":
        raise typer.BadParameter(f"--descriptions widens ERNIE's entity stream; --knowledge is {knowledge!r}")
    if pretrained is not None and knowledge != "ernie":
        raise typer.BadParameter(f"--pretrained starts ERNIE's fusion; --knowledge is {knowledge!r}")
    if pretrained is not None and descriptions:
        raise typer.BadParameter(
            "--pretrained fusions are trained on TransE vectors alone; leave out --descriptions"
        )
    _positive(("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr), ("--max-length", max_length))
    check_output(out, FORMAT, (train, dev, kg_path, transe, model, pretrained), force)
    resolve_device(device)  # a typo or a missing GPU fails before the model loads
    kg_path, transe = _from_bundle(bundle, kg_path, transe)
    train_ex, dev_ex = read_examples(train, task), read_examples(dev, task)
    if link:
        linked = _link_examples(train_ex + dev_ex, kg_path, bundle)
        train_ex, dev_ex = linked[: len(train_ex)], linked[len(train_ex) :]
    labels = sorted({label for ex in train_ex for label in ex.labels})
    if not labels:
        raise KGFormatError(
            train, None, "no example has a label", 'Give typing examples "labels": ["type", ...]'
        )
    cfg = validate(
        EncoderConfig,
        {
            "task": task,
            "knowledge": knowledge,
            "labels": labels,
            "max_length": max_length,
            "descriptions": descriptions,
            "kg": str(kg_path or ""),
            "transe": str(transe or ""),
        },
        "command line",
        "Fix the option",
    )
    source = knowledge_for(knowledge, kg_path, transe, descriptions=descriptions)
    net = KnowledgeEncoder.create(cfg, source, model, seed=seed, fusion=pretrained)
    history = finetune(
        net,
        train_ex,
        dev_ex,
        FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device),
    )
    result = {**summary(history), "best_dev": evaluate(net, dev_ex)}
    net.save(out, metrics=result)
    console.print(
        f"{task}/{knowledge}: dev macro-F1 {result['best_dev']['macro_f1']:.4f}, micro-F1 {result['best_dev']['micro_f1']:.4f} "
        f"(best epoch {history.best_epoch}, {history.seconds:.0f} s) -> {out}"
    )


@encoder_app.command("pretrain")
def encoder_pretrain(
    data: Annotated[
        Path,
        typer.Option(
            "--data", help='texts, JSONL: {"text": ...} and optionally "entities" (spans with QIDs)'
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the pre-trained fusion to")],
    kg_path: Annotated[
        Path | None, typer.Option("--kg", help="KG the linker links to (default: bundled FB15k-237)")
    ] = None,
    transe: Annotated[
        Path | None, typer.Option("--transe", help="TransE checkpoint (default: the bundled one)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="local Hugging Face checkpoint (default: bundled MiniLM)")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="passes over the texts")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="texts per step")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="learning rate of the fusion")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    link: Annotated[
        bool, typer.Option("--link/--no-link", help="link texts given without entities to the KG first")
    ] = True,
    device: Annotated[
        str, typer.Option("--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N")
    ] = "auto",
    force: ForceOpt = False,
    bundle: BundleOpt = None,
) -> None:
    """ERNIE's alignment pre-training (denoising entity auto-encoder) of the fusion on linked text;
    `encoder finetune --knowledge ernie --pretrained DIR` starts from it."""
    from encoders.data import read_texts
    from encoders.ernie import FORMAT
    from encoders.knowledge import knowledge_for
    from encoders.model import EncoderConfig, KnowledgeEncoder
    from encoders.pretrain import PretrainConfig, pretrain, save_fusion
    from kg.device import resolve_device

    _positive(("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr))
    check_output(out, FORMAT, (data, kg_path, transe, model), force)
    resolve_device(device)
    kg_path, transe = _from_bundle(bundle, kg_path, transe)
    texts = read_texts(data)
    if link and any(not ex.entities for ex in texts):
        bare = [i for i, ex in enumerate(texts) if not ex.entities]
        done = _link_examples([texts[i] for i in bare], kg_path, bundle)
        for i, ex in zip(bare, done, strict=True):
            texts[i] = ex
    cfg = EncoderConfig("sequence", "ernie", ["-"])
    cfg.kg, cfg.transe = str(kg_path or ""), str(transe or "")
    net = KnowledgeEncoder.create(cfg, knowledge_for("ernie", kg_path, transe), model, seed=seed)
    settings = PretrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    try:
        result = pretrain(net, texts, settings)
    except KGPipeError as e:
        raise KGPipeError(f"{data}: {e}") from e
    save_fusion(net, out, settings, result)
    console.print(
        f"dEA: {result.texts:,} texts, {result.alignments:,} alignments a pass; entity accuracy "
        f"{result.accuracy[0]:.3f} -> {result.accuracy[-1]:.3f} (hidden ones {result.hidden_accuracy[-1]:.3f}), "
        f"{result.seconds:.0f} s -> {out}"
    )


def _positive(*options: tuple[str, float]) -> None:
    """Exit 2 naming the first option whose value is not positive."""
    for name, value in options:
        if value <= 0:
            raise typer.BadParameter(f"{name} must be positive, not {value}")


def _linker(kg_path: Path | None, bundle: Path | None) -> Linker:
    """The bundle's linker, over `kg_path` when given (a KG it cannot use fails before any model
    loads)."""
    from kg.io import load_kg
    from kg.link.linker import require_names
    from pipeline.bundle import load

    kg = require_names(load_kg(kg_path)) if kg_path is not None else None
    opened = load(bundle, eager=kg is None)
    return opened.linker if kg is None else opened.linker_for(kg)


def _from_bundle(bundle: Path | None, kg_path: Path | None, transe: Path | None) -> tuple[Path, Path]:
    """--kg and --transe, or where they are not given, the bundle's KG and TransE parts (checked)."""
    from kg.manifest import default_bundle, read_manifest

    _, parts = read_manifest(bundle or default_bundle(), verify=True)
    return kg_path or parts["kg"].path, transe or parts["transe"].path


def _link_examples(examples: list[Example], kg_path: Path | None, bundle: Path | None) -> list[Example]:
    from encoders.knowledge import link_examples

    linked, n = link_examples(examples, _linker(kg_path, bundle))
    console.print(f"linked {n:,} entity mentions in examples that named none")
    return linked


@encoder_app.command("eval")
def encoder_eval(
    model_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="a folder written by `kgpipe encoder finetune`")
    ],
    data: Annotated[Path, typer.Option("--data", help="labelled examples, JSONL, same format as --train")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    link: Annotated[bool, typer.Option("--link", help="link examples that name no entities first")] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N")
    ] = "auto",
    bundle: BundleOpt = None,
) -> None:
    """Score a fine-tuned encoder on labelled examples: macro-F1 and micro-F1."""
    from encoders.data import read_examples
    from encoders.finetune import evaluate
    from encoders.model import KnowledgeEncoder
    from kg.device import resolve_device

    net = KnowledgeEncoder.load(model_dir, device=str(resolve_device(device)))
    examples = read_examples(data, net.cfg.task)
    if link:
        examples = _link_examples(examples, Path(net.cfg.kg) if net.cfg.kg else None, bundle)
    result = {**evaluate(net, examples), "task": net.cfg.task, "knowledge": net.cfg.knowledge}
    _print_result(result, as_json, f"{model_dir} on {data}")


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
        int, typer.Option("--folds", help="cross-validation folds that choose the NIL threshold")
    ] = 5,
    sentences: Annotated[
        bool,
        typer.Option("--sentences/--no-sentences", help="also train on each sentence alone (short texts)"),
    ] = True,
    caseless: Annotated[
        bool,
        typer.Option("--caseless/--no-caseless", help="also train the scorer for text without capitals"),
    ] = True,
    bundle: BundleOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train the linker's scorers on labelled documents and write a linker folder."""
    from rich.progress import Progress

    from kg.link.disambiguate import Scorer
    from kg.link.linker import LINKER_FORMAT
    from kg.link.train import read_documents, train_linker

    if folds < 2:
        raise typer.BadParameter(f"must be at least 2, not {folds}", param_hint="'--folds'")
    check_output(out, LINKER_FORMAT, (*data, kg_path), force)
    sets = {
        path.name.removesuffix(".jsonl").removesuffix(".benchmark"): read_documents(path) for path in data
    }
    start = time.perf_counter()
    linker = _linker(kg_path, bundle)
    linker.scorer = Scorer()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training the linker", total=folds + 5)

        def step(message: str) -> None:
            progress.update(task, advance=1, description=message)

        report = train_linker(
            linker, sets, folds=folds, with_sentences=sentences, caseless=caseless, progress=step
        )
    linker.save(out)
    console.print(
        f"linker trained on {report.documents:,} documents ({report.mentions:,} mentions with candidates, "
        f"{report.mentions_with_gold_candidate:,} with the gold entity among them) in "
        f"{time.perf_counter() - start:.0f} s; NIL threshold {report.threshold} chosen on {report.folds}-fold "
        f"cross-validated predictions -> {out}"
    )
    table = Table(
        title=f"{report.folds}-fold cross-validated (each document scored by a model that did not see it)"
    )
    for column in ("set", "P", "R", "F1", "gold"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, r in report.sets.items():
        table.add_row(
            name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", f"{int(r['gold']):,}"
        )
    console.print(table)


@bundle_app.command("build")
def bundle_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")],
    kg_path: Annotated[Path | None, typer.Option("--kg", help="KG (default: the default bundle's)")] = None,
    transe: Annotated[
        Path | None, typer.Option("--transe", help="TransE checkpoint trained on that KG (`kgpipe kg train`)")
    ] = None,
    linker: Annotated[
        Path | None, typer.Option("--linker", help="linker folder built for that KG (`kgpipe link train`)")
    ] = None,
    classifier: Annotated[
        list[str] | None,
        typer.Option(
            "--classifier", help="NAME=DIR: a fine-tuned encoder (`kgpipe encoder finetune`); repeatable"
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Write a bundle: the KG, TransE, the linker and classifiers in one checksummed folder."""
    from pipeline.bundle import build, bundle_info

    classifiers = {}
    for item in classifier or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder or "/" in name:
            raise typer.BadParameter(f"expected NAME=DIR, got {item!r}", param_hint="'--classifier'")
        classifiers[name] = Path(folder)
    manifest = build(out, kg_path, transe, linker, classifiers, force)
    info = bundle_info(manifest)
    console.print(
        f"wrote bundle {out}: "
        + ", ".join(f"{name} ({p['files']} files)" for name, p in info["parts"].items())
    )


@bundle_app.command("info")
def bundle_info_command(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="bundle folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Check every file of a bundle against its checksum and show its parts."""
    from kg.manifest import read_manifest
    from pipeline.bundle import bundle_info

    manifest, _ = read_manifest(path, verify=True)
    info = bundle_info(manifest)
    if as_json:
        print(json.dumps(info))
        return
    table = Table(
        title=f"bundle {path} (format {info['format_version']}, kgpipe {info.get('kgpipe_version')})"
    )
    for column in ("part", "folder", "files", "sha256", "source"):
        table.add_column(column)
    for name, p in info["parts"].items():
        table.add_row(name, p["path"], str(p["files"]), p["sha256"][:16], p["source"])
    Console().print(table)
    console.print("every file matches its checksum")


@app.command("demo")
def demo(
    kg_path: Annotated[Path | None, typer.Option("--kg", help="KG to use (default: the bundle's)")] = None,
    bundle: BundleOpt = None,
) -> None:
    """Run the main job on the bundled defaults and show what kgpipe does."""
    from pipeline.demo import run_demo

    run_demo(kg_path, bundle)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; every error is one line on stderr, exit 2 for bad input.

    A bug (any other exception) is one line too, exit 1, with the traceback when KGPIPE_DEBUG=1.
    """
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar
    try:
        code = app(args=argv, standalone_mode=False)
    except KGPipeError as e:
        _fail(str(e), 2)
    except typer.Abort:
        _fail("interrupted", 130)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except typer.TyperException as e:  # click's usage errors: bad option, missing argument, ...
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            sys.exit(0)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(" ".join(message.split()) + hint, int(getattr(e, "exit_code", 2)))
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        _fail(f"{e.strerror or e}{where}", 2)
    except Exception as e:
        from kg.settings import settings

        if settings().debug:
            raise
        first = str(e).splitlines()[0][:300] if str(e) else ""
        _fail(
            f"internal error, a bug in kgpipe ({type(e).__name__}: {first}); please report it with "
            "the command, or run again with KGPIPE_DEBUG=1 for the traceback",
            1,
        )
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str, code: int) -> None:
    print(f"kgpipe: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
