"""`kgpipe relations ...`: train, evaluate and run document-level relation extraction."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.commands.common import (
    BundleOpt,
    DeviceOpt,
    ForceOpt,
    ModelOpt,
    TranseOpt,
    app,
    bundle_linker,
    console,
    console_for,
    from_bundle,
    positive,
)

if TYPE_CHECKING:
    from encoders.docred import RelDocument
    from encoders.relations import RelationModel, Scores
    from kg.link.linker import Linker

relations_app = typer.Typer(
    help=(
        "Document-level relation extraction (ATLOP-style, on the knowledge-fused encoder): "
        "train on DocRED-format documents, evaluate, predict."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(relations_app, name="relations")

DocsOpt = Annotated[
    str, typer.Option("--docs", help="which documents of --data, as START:END (Python slice; default all)")
]
RelInfoOpt = Annotated[
    Path | None,
    typer.Option(
        "--rel-info", help="DocRED's rel_info.json naming the properties (default: the shipped one)"
    ),
]


def _slice(spec: str, option: str) -> slice:
    try:
        parts = [int(p) if p.strip() else None for p in spec.split(":")]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise typer.BadParameter(f"{option} must be START:END (e.g. 0:400), not {spec!r}")
    return slice(parts[0], parts[1])


def _read(
    path: Path, docs: str, option: str, names: dict[str, str] | None, labels: bool = True
) -> list[RelDocument]:
    from encoders.docred import read_docred

    return read_docred(path, names, labels)[_slice(docs, option)]


def _scores_table(scores: Scores, title: str, top: int = 20) -> None:
    from rich.table import Table

    out = console_for()
    table = Table(title=title)
    for col in ("precision", "recall", "F1", "Ign F1", "evidence F1", "gold", "predicted", "correct"):
        table.add_column(col, justify="right")
    table.add_row(
        *(
            f"{v:.4f}"
            for v in (scores.precision, scores.recall, scores.f1, scores.ign_f1, scores.evidence_f1)
        ),
        *(f"{v:,}" for v in (scores.gold, scores.predicted, scores.correct)),
    )
    out.print(table)
    per = Table(title=f"per relation (the {top} commonest in the gold facts)")
    for col in ("relation", "gold", "predicted", "correct", "F1"):
        per.add_column(col, justify="right" if col != "relation" else "left")
    for r, v in list(scores.per_relation.items())[:top]:
        per.add_row(r, str(v["gold"]), str(v["predicted"]), str(v["correct"]), f"{v['f1']:.4f}")
    out.print(per)


@relations_app.command("train")
def relations_train(
    data: Annotated[Path, typer.Option("--data", help="training documents, DocRED-format JSON")],
    knowledge: Annotated[
        str,
        typer.Option("--knowledge", help="none (text only), ernie (TransE entity stream) or kbert (triples)"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the model to")],
    dev: Annotated[
        Path | None, typer.Option("--dev", help="dev documents (default: --data, with --dev-docs)")
    ] = None,
    docs: DocsOpt = ":",
    dev_docs: Annotated[
        str, typer.Option("--dev-docs", help="which documents of the dev file, START:END")
    ] = ":",
    rel_info: RelInfoOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help="most epochs (early stopping on dev F1)")] = 20,
    patience: Annotated[
        int, typer.Option("--patience", help="epochs without a better dev F1 before stopping")
    ] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="documents per step")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="learning rate of the pretrained encoder")] = 5e-5,
    head_lr: Annotated[float, typer.Option("--head-lr", help="learning rate of the new weights")] = 3e-4,
    kg_path: Annotated[
        Path | None, typer.Option("--kg", help="KG for kbert branches and linking (default: the bundle's)")
    ] = None,
    transe: TranseOpt = None,
    model: ModelOpt = None,
    threads: Annotated[
        int, typer.Option("--threads", help="torch threads (default: torch's own choice)")
    ] = 0,
    device: DeviceOpt = "auto",
    half: Annotated[
        bool,
        typer.Option("--half", help="store the weights as float16: half the size (for shipping a model)"),
    ] = False,
    force: ForceOpt = False,
    bundle: BundleOpt = None,
) -> None:
    """Train a relation extraction model; prints dev F1 each epoch and a summary, writes DIR.

    Example: kgpipe relations train --data dev_revised.json --docs 0:400 --dev-docs 400:500 --knowledge ernie --out re
    """
    import torch

    from encoders.docred import read_rel_info
    from encoders.entities import EntityFinder
    from encoders.knowledge import knowledge_for
    from encoders.relations import (
        FORMAT,
        RelationConfig,
        RelationModel,
        RelationTrainConfig,
        relation_labels,
        train,
    )
    from kg.storage import check_output

    if knowledge not in ("none", "ernie", "kbert"):
        raise typer.BadParameter(f"--knowledge must be none, ernie or kbert, not {knowledge!r}")
    positive(("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr), ("--head-lr", head_lr))
    check_output(out, FORMAT, (data, dev, rel_info, kg_path, transe, model), force)
    from kg.device import device_name, resolve_device

    where = resolve_device(device)  # a typo or a missing GPU fails before the model loads
    if threads > 0:
        torch.set_num_threads(threads)
    names = read_rel_info(rel_info)
    train_docs = _read(data, docs, "--docs", names)
    dev_set = (
        _read(dev or data, dev_docs, "--dev-docs", names) if (dev is not None or dev_docs != ":") else []
    )
    if not train_docs:
        raise typer.BadParameter(f"--data {data} --docs {docs}: no documents to train on")
    own_kg, own_transe = kg_path, transe  # "" in the config: the bundle's own
    kg_path, transe = from_bundle(bundle, kg_path, transe)
    start = time.time()
    if knowledge != "none":
        finder = EntityFinder(bundle_linker(own_kg, bundle))
        linked = finder.link(train_docs + dev_set)
        train_docs, dev_set = linked[: len(train_docs)], linked[len(train_docs) :]
        n = sum(bool(e.qid) for d in linked for e in d.entities)
        total = sum(len(d.entities) for d in linked)
        console.print(f"linked {n:,} of {total:,} entities ({time.time() - start:.0f} s)")
    source = knowledge_for(knowledge, kg_path, transe)
    cfg = RelationConfig(
        knowledge=knowledge,  # type: ignore[arg-type]
        labels=relation_labels(train_docs, names),
        names=names,
        kg=str(own_kg or ""),
        transe=str(own_transe or ""),
        trained_on=f"{data} [{docs}]",
    )
    net = RelationModel.create(cfg, source, model, seed=seed).to(where)

    def show(epoch: int, loss: float, scores: dict[str, float]) -> None:
        dev_text = (
            f"dev F1 {scores['f1']:.4f} (P {scores['precision']:.4f}, R {scores['recall']:.4f})"
            if scores
            else "no dev set"
        )
        console.print(f"epoch {epoch}: loss {loss:.4f}, {dev_text}")

    tcfg = RelationTrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, seed=seed, patience=patience
    )
    history = train(net, train_docs, dev_set, tcfg, on_epoch=show)
    metrics = {
        "train_docs": len(train_docs),
        "dev_docs": len(dev_set),
        "data": str(data),
        "docs": docs,
        "dev": str(dev or data) if dev_set else None,
        "dev_docs_range": dev_docs if dev_set else None,
        "knowledge": knowledge,
        "seed": seed,
        "epochs_run": len(history.loss),
        "best_epoch": history.best_epoch,
        "train_loss": [round(x, 4) for x in history.loss],
        "dev_scores": history.dev,
        "train_seconds": history.seconds,
        "threads": torch.get_num_threads(),
        "device": device_name(where),
    }
    net.save(out, metrics, half=half)
    best = history.dev[history.best_epoch - 1] if history.dev and history.best_epoch else {}
    console_for().print(
        f"trained {knowledge} on {len(train_docs)} documents in {history.seconds / 60:.1f} min "
        f"({len(history.loss)} epochs, best {history.best_epoch}"
        + (f", dev F1 {best['f1']:.4f}" if best else "")
        + f"); wrote {out}"
    )


def _linker_for(net: RelationModel, bundle: Path | None) -> Linker:
    """The linker over the KG the model was trained with (its `--kg`), else the bundle's."""
    kg = Path(net.cfg.kg) if net.cfg.kg else None
    if kg is not None and not kg.exists():
        console.print(
            f"the model was trained with the KG {kg}, which is not here: linking with the bundle's KG"
        )
        kg = None
    return bundle_linker(kg, bundle)


def _model(model_dir: Path | None, bundle: Path | None) -> object:
    from encoders.relations import RelationModel

    if model_dir is not None:
        return RelationModel.load(model_dir)
    from pipeline.bundle import load

    return load(bundle).relations


@relations_app.command("eval")
def relations_eval(
    model_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="a model folder (`kgpipe relations train`)")
    ],
    data: Annotated[Path, typer.Option("--data", help="labelled documents, DocRED-format JSON")],
    docs: DocsOpt = ":",
    train_data: Annotated[
        Path | None, typer.Option("--train", help="the training documents, for Ign F1 (default: none)")
    ] = None,
    train_docs: Annotated[
        str, typer.Option("--train-docs", help="which documents of --train, START:END")
    ] = ":",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    bundle: BundleOpt = None,
) -> None:
    """Precision, recall, F1, Ign F1 and evidence F1 on gold entities, and a per-relation table.

    Example: kgpipe relations eval re --data dev_revised.json --docs 400:500 --train dev_revised.json --train-docs 0:400
    """
    from encoders.relations import RelationModel, score, train_names

    net = RelationModel.load(model_dir)
    gold = _read(data, docs, "--docs", net.cfg.names)
    if net.cfg.knowledge != "none":
        from encoders.entities import EntityFinder

        gold = EntityFinder(_linker_for(net, bundle)).link(gold)
    seen = train_names(_read(train_data, train_docs, "--train-docs", net.cfg.names)) if train_data else None
    scores = score(gold, net.predict(gold), seen)
    if as_json:
        print(json.dumps(scores.as_dict()))
        return
    _scores_table(scores, f"{model_dir} on {data} [{docs}] ({len(gold)} documents, gold entities)")


@relations_app.command("predict")
def relations_predict(
    infile: Annotated[
        Path, typer.Argument(metavar="IN.json", help="DocRED-format documents (labels ignored)")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="predictions, a JSON list")],
    model_dir: Annotated[
        Path | None, typer.Option("--model", help="a model folder (default: the bundle's relation model)")
    ] = None,
    entities: Annotated[
        str,
        typer.Option(
            "--entities",
            help="gold: the documents' vertexSet (DocRED's result format); predicted: kgpipe finds and links them",
        ),
    ] = "gold",
    bundle: BundleOpt = None,
) -> None:
    """Predict the relations each document states.

    Example: kgpipe relations predict in.json --out pred.json --entities predicted
    """
    from encoders.docred import read_docred
    from encoders.entities import EntityFinder
    from kg.storage import atomic_write

    if entities not in ("gold", "predicted"):
        raise typer.BadParameter(f"--entities must be gold or predicted, not {entities!r}")
    docs = read_docred(infile, labels=False)
    net: RelationModel = _model(model_dir, bundle)  # type: ignore[assignment]
    start = time.time()
    linker = _linker_for(net, bundle) if (entities == "predicted" or net.cfg.knowledge != "none") else None
    if entities == "predicted":
        docs = EntityFinder(linker).find(docs)
    elif linker is not None:
        docs = EntityFinder(linker).link(docs)
    from tqdm.auto import tqdm

    with tqdm(total=len(docs), desc="relations", unit="doc", disable=not docs) as bar:
        predicted = net.predict(docs, progress=bar.update)
    rows: list[dict[str, object]] = []
    for d, facts in zip(docs, predicted, strict=True):
        for f in facts:
            row: dict[str, object] = {"title": d.title}
            if entities == "gold":
                row |= {"h_idx": f.h, "t_idx": f.t}
            else:
                h, t = d.entities[f.h], d.entities[f.t]
                row |= {
                    "h_mentions": [[m.sent, m.start, m.end] for m in h.mentions],
                    "t_mentions": [[m.sent, m.start, m.end] for m in t.mentions],
                    "h_name": h.name,
                    "t_name": t.name,
                    "h_qid": h.qid or None,
                    "t_qid": t.qid or None,
                }
            row |= {
                "r": f.r,
                "relation_name": net.cfg.names.get(f.r, ""),
                "evidence": list(f.evidence),
                "score": f.score,
            }
            rows.append(row)
    with atomic_write(out) as fh:
        json.dump(rows, fh)
    console_for().print(
        f"{len(rows):,} facts from {len(docs):,} documents ({entities} entities) in {time.time() - start:.1f} s; wrote {out}"
    )
