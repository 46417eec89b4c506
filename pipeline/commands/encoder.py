"""`kgpipe encoder ...`: fine-tune, pre-train and evaluate knowledge-fused encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kg.errors import KGPipeError
from kg.storage import check_output
from pipeline.commands.common import (
    BundleOpt,
    DeviceOpt,
    ForceOpt,
    ModelOpt,
    TranseOpt,
    console,
    encoder_app,
    from_bundle,
    link_examples_in,
    positive,
    print_result,
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
    transe: TranseOpt = None,
    model: ModelOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", help="most epochs (early stopping on dev)")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="examples per step")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="learning rate of the pretrained encoder")] = 5e-5,
    head_lr: Annotated[
        float, typer.Option("--head-lr", help="learning rate of the new weights: head, fusion, projections")
    ] = 1e-3,
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
    freeze_text_model: Annotated[
        bool,
        typer.Option(
            "--freeze-text-model",
            help="train the fusion and head only; the text model's weights are not saved but taken from the installed model (a small folder)",
        ),
    ] = False,
    device: DeviceOpt = "auto",
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
    """Fine-tune a head on a text model, with or without knowledge; writes DIR/model.safetensors + config.json.

    Example: kgpipe encoder finetune sequence --train train.jsonl --dev dev.jsonl --knowledge ernie --link --out topic
    """
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
    positive(
        ("--epochs", epochs),
        ("--batch-size", batch_size),
        ("--lr", lr),
        ("--head-lr", head_lr),
        ("--max-length", max_length),
    )
    check_output(out, FORMAT, (train, dev, kg_path, transe, model, pretrained), force)
    resolve_device(device)  # a typo or a missing GPU fails before the model loads
    kg_path, transe = from_bundle(bundle, kg_path, transe)
    train_ex, dev_ex = read_examples(train, task), read_examples(dev, task)
    if link:
        linked = link_examples_in(train_ex + dev_ex, kg_path, bundle)
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
            "text_model_frozen": freeze_text_model,
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
        FinetuneConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, seed=seed, device=device
        ),
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
    transe: TranseOpt = None,
    model: ModelOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", help="passes over the texts")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="texts per step")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="learning rate of the fusion")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    link: Annotated[
        bool, typer.Option("--link/--no-link", help="link texts given without entities to the KG first")
    ] = True,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    bundle: BundleOpt = None,
) -> None:
    """ERNIE's alignment pre-training (denoising entity auto-encoder) of the fusion on linked text;
    `encoder finetune --knowledge ernie --pretrained DIR` starts from it.

    Example: kgpipe encoder pretrain --data paragraphs.jsonl --out fusion
    """
    from encoders.data import read_texts
    from encoders.ernie import FORMAT
    from encoders.knowledge import knowledge_for
    from encoders.model import EncoderConfig, KnowledgeEncoder
    from encoders.pretrain import PretrainConfig, pretrain, save_fusion
    from kg.device import resolve_device

    positive(("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr))
    check_output(out, FORMAT, (data, kg_path, transe, model), force)
    resolve_device(device)
    kg_path, transe = from_bundle(bundle, kg_path, transe)
    texts = read_texts(data)
    if link and any(not ex.entities for ex in texts):
        bare = [i for i, ex in enumerate(texts) if not ex.entities]
        done = link_examples_in([texts[i] for i in bare], kg_path, bundle)
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


@encoder_app.command("eval")
def encoder_eval(
    model_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="a folder written by `kgpipe encoder finetune`")
    ],
    data: Annotated[Path, typer.Option("--data", help="labelled examples, JSONL, same format as --train")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    link: Annotated[bool, typer.Option("--link", help="link examples that name no entities first")] = False,
    device: DeviceOpt = "auto",
    bundle: BundleOpt = None,
) -> None:
    """Score a fine-tuned encoder on labelled examples: macro-F1 and micro-F1.

    Example: kgpipe encoder eval topic --data test.jsonl --link --json
    """
    from encoders.data import read_examples
    from encoders.finetune import evaluate
    from encoders.model import KnowledgeEncoder
    from kg.device import resolve_device

    net = KnowledgeEncoder.load(model_dir, device=str(resolve_device(device)))
    examples = read_examples(data, net.cfg.task)
    if link:
        examples = link_examples_in(examples, Path(net.cfg.kg) if net.cfg.kg else None, bundle)
    result = {**evaluate(net, examples), "task": net.cfg.task, "knowledge": net.cfg.knowledge}
    print_result(result, as_json, f"{model_dir} on {data}")
