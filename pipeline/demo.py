"""`kgpipe demo`: the main job on the bundled defaults, one section per capability.

Each section prints what a user would want to see first; later capabilities add sections.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from kg.embed import EntityVectors, TrainConfig, train_transe
from kg.graph import KnowledgeGraph
from kg.io import data_root, load_kg

if TYPE_CHECKING:
    from pipeline.bundle import Bundle
    from pipeline.report import Report

WELL_KNOWN = ["Q90", "Q76", "Q1299", "Q2", "Q11660"]  # Paris, Barack Obama, The Beatles, Earth, AI


def run_demo(
    kg_path: Path | None = None, bundle_path: Path | None = None, out: Path = Path("demo_output")
) -> None:
    import time

    from pipeline.bundle import load
    from pipeline.report import Report

    started = time.perf_counter()
    from pipeline.commands.common import console_for

    console = console_for()
    report = Report()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading the bundle", total=3)
        bundle = load(bundle_path, eager=False)
        kg = load_kg(kg_path) if kg_path is not None else bundle.kg
        progress.update(task, advance=1, description="degrees")
        degrees = kg.degrees()
        progress.update(task, advance=1, description="adjacency")
        _ = kg.adjacency
        progress.update(task, advance=1)
    show_summary(console, kg, degrees, report)
    show_neighbours(console, kg)
    own = kg.fingerprint == bundle.kg.fingerprint
    show_transe(
        console, kg, bundle_transe(console, bundle, report) if own else train_quick_transe(console, kg)
    )
    show_linking(console, kg, bundle, report=report)
    if kg_path is None:
        show_classifier(console, bundle, report)
        extraction = show_batch(console, bundle, out, report)
        show_search(console, bundle, extraction, out / "store", report)
        served = build_demo_bundle(console, bundle, out)
        report.text(
            "serve it",
            f"The bundle this demo used, with the store it built, is in {served}: "
            f"`kgpipe serve --bundle {served}` serves it (a page to try it at http://127.0.0.1:8000/).",
        )
    report.text("run time", f"{time.perf_counter() - started:.0f} s on {_cores()} CPU cores")
    path = report.write(out / "report.html")
    console.print(f"[bold]report:[/] {path}  ({time.perf_counter() - started:.0f} s in all)")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_demo_bundle(console: Console, bundle: Bundle, out: Path) -> Path:
    """The demo's bundle plus its store, in `out/bundle`, for `kgpipe serve`."""
    from pipeline.bundle import build

    target = out / "bundle"
    build(target, store=out / "store", force=True)
    console.print(f"bundle with the store -> {target}: serve it with `kgpipe serve --bundle {target}`")
    return target


def show_classifier(console: Console, bundle: Bundle, report: Report) -> None:
    """The bundle's knowledge-fused classifier on the sample documents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not bundle.classifiers:
        console.print("[yellow]no classifier in the bundle[/]")
        return
    name = bundle.classifiers[0]
    with open(data_root() / "corpus" / "sample.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    with Progress(console=console, transient=True) as progress:
        progress.add_task(f"classifier {name}: loading and classifying", total=None)
        answers = bundle.classify([d["text"] for d in docs], name)
    model = bundle.classifier(name)
    table = Table(title=f"classifier {name!r} ({model.cfg.task}, knowledge: {model.cfg.knowledge})")
    for column in ("document", "label", "probability", "entities it read"):
        table.add_column(column)
    rows = []
    for d, a in zip(docs, answers, strict=True):
        read = ", ".join(list(dict.fromkeys(e.name or e.qid for e in a.entities))[:5])
        table.add_row(str(d.get("title", d["id"])), a.label, f"{a.scores[a.label]:.2f}", read)
        rows.append([d.get("title", d["id"]), a.label, a.scores[a.label], read])
    console.print(table)
    report.table(f"classifier: {name}", ["document", "label", "probability", "entities it read"], rows)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(docs)))
    labels = model.cfg.labels
    left = np.zeros(len(docs))
    for label in labels:
        v = np.array([a.scores.get(label, 0.0) for a in answers])
        ax.barh([str(d.get("title", d["id"])) for d in docs], v, left=left, label=label)
        left += v
    ax.set_xlabel("probability")
    ax.legend(ncol=3, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    report.figure("classifier scores", fig)


def show_batch(console: Console, bundle: Bundle, out: Path, report: Report) -> Path:
    """The batch job (`kgpipe extract`) over the sample corpus on a local dask cluster."""
    import pyarrow.dataset as ds

    from pipeline.batch import run

    corpus = data_root() / "corpus" / "sample.jsonl"
    console.rule("batch extraction: `kgpipe extract` on a local dask cluster")
    extraction = out / "extract"  # a rerun finds its partitions done
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("extracting (dask LocalCluster, 2 workers)", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = run([corpus], extraction, bundle=bundle.path, workers=2, partition_size=3, progress=advance)
    facts = ds.dataset(extraction / "facts", format="parquet").to_table().to_pylist()
    ents = ds.dataset(extraction / "entities", format="parquet").to_table()
    _batch_report(report, extraction, summary, facts, ents, bundle, corpus)
    table = Table(title=f"relations the text states ({summary.facts} in all; the surest shown)")
    for column in ("document", "head", "relation", "tail", "in the KG", "score", "evidence"):
        table.add_column(column)
    kg = bundle.kg
    for f in sorted(facts, key=lambda f: -f["score"])[:8]:
        head, tail = (_describe(kg, q) for q in (f["head"], f["tail"]))
        table.add_row(
            f["doc_id"],
            head,
            f"{f['relation_name']} ({f['relation']})",
            tail,
            _known(f["known"]),
            f"{f['score']:.2f}",
            "sentence " + ", ".join(str(s) for s in f["evidence"]),
        )
    console.print(table)
    console.print(
        f"{summary.documents} documents, {summary.entities} entities, {summary.facts} facts, "
        f"{summary.errors} bad lines in {summary.seconds:.1f} s on {summary.workers} dask workers "
        f"({summary.docs_per_second:.1f} documents/s, most of it starting the workers) -> {extraction}"
    )
    return extraction


def show_search(console: Console, bundle: Bundle, extraction: Path, store: Path, report: Report) -> None:
    """`kgpipe index` over the extraction (a rerun adds nothing), then a text, an entity and a
    filtered search."""
    from pipeline.search import Searcher, index_extraction
    from pipeline.store import Filter

    console.rule("vector search: `kgpipe index` and `kgpipe search`")
    summary = index_extraction(extraction, store, bundle)
    console.print(f"indexed {summary.documents} documents and {summary.entities:,} KG entities -> {store}")
    searcher = Searcher.open(store, bundle)
    shown = [
        ('text: "ancient city"', searcher.text(["ancient city"], 3)[0]),
        ('text: "music" --type PER', searcher.text(["music"], 3, Filter(types=("PER",)))[0]),
        (
            'text: "technology" --relation P159 (states a headquarters)',
            searcher.text(["technology"], 3, Filter(relations=("P159",)))[0],
        ),
    ]
    about = searcher.entity("Q90", 3)
    shown.append(("entity: --like-entity Q90 (Paris)", about["hits"]))
    table = Table(title="searches")
    for column in ("query", "score", "document", "mentions"):
        table.add_column(column)
    for query, hits in shown:
        for h in hits:
            table.add_row(
                query,
                f"{h.score:.3f}",
                str(h.metadata.get("title", h.id)),
                ", ".join(_named(bundle, h.metadata.get("entities", [])[:4])),
            )
            query = ""
    console.print(table)
    near = ", ".join(f"{h.metadata.get('label')} ({h.score:.2f})" for h in about["neighbours"])
    console.print(f"entities nearest Paris in TransE space: {near}")
    rows = [
        [
            query if i == 0 else "",
            h.score,
            h.metadata.get("title", h.id),
            ", ".join(_named(bundle, h.metadata.get("entities", [])[:4])),
        ]
        for query, hits in shown
        for i, h in enumerate(hits)
    ]
    report.table(
        "example searches",
        ["query", "score", "document", "mentions"],
        rows,
        f"store {store}: {summary.total_documents} documents, {summary.entities:,} entities; entities nearest Paris: {near}",
    )


def _named(bundle: Bundle, qids: list[str]) -> list[str]:
    """Each QID as 'name (QID)', for people to read."""
    kg = bundle.kg
    return [kg.describe(q) if kg.has_entity(q) else q for q in qids]


def show_linking(
    console: Console, kg: KnowledgeGraph, bundle: Bundle, limit: int = 3, report: Report | None = None
) -> None:
    """Link the bundled sample documents and print them with their entities marked."""
    if not any(kg.labels):
        console.print(
            f"[yellow]linking skipped:[/] {escape(kg.name)} names none of its entities, and the linker finds "
            "entities by name (put an entities.jsonl with 'id' and 'label' beside the triples)"
        )
        return
    with open(data_root() / "corpus" / "sample.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()][:limit]
    linker = bundle.linker_for(kg)
    for doc, linked in zip(docs, linker.link_many([d["text"] for d in docs]), strict=True):
        text, parts, pos = doc["text"], [], 0
        for x in linked:
            parts += [
                escape(text[pos : x.start]),
                f"[bold cyan]{escape(x.text)}[/][dim] → {x.qid} {kg.labels[x.entity]} ({x.score:.2f})[/]",
            ]
            pos = x.end
        parts.append(escape(text[pos:]))
        console.rule(f"linked: {doc.get('title', doc.get('id'))}")
        console.print("".join(parts))
        if report is not None:
            report.add(f"linked: {doc.get('title', doc.get('id'))}", _marked(text, linked, kg))


def _marked(text: str, linked: list, kg: KnowledgeGraph) -> str:
    import html

    out, pos = [], 0
    for x in linked:
        name = html.escape(f"{kg.labels[x.entity]} ({x.qid}, {x.score:.2f})")
        out += [
            html.escape(text[pos : x.start]),
            f'<mark title="{name}">{html.escape(x.text)}</mark><sub>{name}</sub>',
        ]
        pos = x.end
    out.append(html.escape(text[pos:]))
    return "<p>" + "".join(out) + "</p>"


def _describe(kg: KnowledgeGraph, head_or_tail: str) -> str:
    """'Apple Inc. (Q312)' for a QID the KG holds; a name as it is."""
    return kg.describe(head_or_tail) if kg.has_entity(head_or_tail) else head_or_tail


def _known(known: bool | None) -> str:
    return "not in the KG" if known is None else ("yes" if known else "new")


def _evidence_html(text: str, fact: dict[str, Any]) -> str:
    """The evidence sentences of a text fact, marked, with the head and tail names in bold."""
    import html
    import re

    parts = []
    for a, b in fact["evidence_spans"]:
        sentence = html.escape(text[a:b])
        for name in {fact["head_name"], fact["tail_name"]}:
            if name:
                sentence = re.sub(re.escape(html.escape(name)), lambda m: f"<b>{m.group(0)}</b>", sentence)
        parts.append(f"<mark>{sentence}</mark>")
    return " … ".join(parts)


def _batch_report(
    report: Report, extraction: Path, summary: Any, facts: list, ents: Any, bundle: Bundle, corpus: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kg = bundle.kg
    report.text(
        "batch extraction",
        f"{summary.documents} documents, {summary.entities} entities, {summary.facts} facts, {summary.errors} bad lines "
        f"in {summary.seconds:.1f} s on {summary.workers} dask workers ({summary.docs_per_second:.1f} documents/s, "
        f"most of it starting the workers) -> {extraction}",
    )
    import html

    texts = {}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            texts[str(doc.get("id"))] = str(doc.get("text", ""))
    rows = []
    for f in sorted(facts, key=lambda f: -f["score"])[:12]:
        head, tail = (html.escape(_describe(kg, q)) for q in (f["head"], f["tail"]))
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{v}</td>"
                for v in (
                    html.escape(f["doc_id"]),
                    head,
                    html.escape(f"{f['relation_name']} ({f['relation']})"),
                    tail,
                    _known(f["known"]),
                    f"{f['score']:.2f}",
                    _evidence_html(texts.get(f["doc_id"], ""), f),
                )
            )
            + "</tr>"
        )
    head_row = "".join(
        f"<th>{c}</th>" for c in ("document", "head", "relation", "tail", "in the KG", "score", "evidence")
    )
    report.add(
        "relations the text states (the surest shown)",
        f"<table><tr>{head_row}</tr>{''.join(rows)}</table><p class=note>read by the document-level relation "
        "model (ATLOP-style, knowledge-fused encoder); evidence: the sentences holding most of the pair's attention</p>",
    )
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.hist(ents.column("score").to_numpy(), bins=20, range=(0, 1), color="#4a7ab5")
    a.set(xlabel="linker confidence", ylabel="mentions", title="linking confidence")
    markers = sorted((extraction / "_done").glob("*.json"))
    rates = []
    for m in markers:
        d = json.loads(m.read_text(encoding="utf-8"))
        rates.append(d["documents"] / max(d["seconds"], 1e-9))
    b.bar(range(len(rates)), rates, color="#6a9f58")
    b.set(xlabel="partition", ylabel="documents/s", title="extraction throughput per partition")
    report.figure(
        "linking confidence and throughput", fig, "per-stage costs at scale: benchmarks/RESULTS.md (batch)"
    )


def bundle_transe(console: Console, bundle: Bundle, report: Report) -> EntityVectors:
    """The bundle's TransE checkpoint, with its test MRR."""
    path = bundle.parts["transe"].path
    metrics = path / "metrics.json"
    test = (json.loads(metrics.read_text()).get("test") or {}) if metrics.exists() else {}
    console.print(
        f"TransE: bundle checkpoint {path} (dim {bundle.transe.model.config.dim})"
        + (f", test MRR {test['mrr']:.3f}" if test else "")
    )
    if (path / "curve.png").exists():
        report.image(
            "TransE training curve",
            (path / "curve.png").read_bytes(),
            f"bundle checkpoint {path.name}, dim {bundle.transe.model.config.dim}"
            + (f", test MRR {test['mrr']:.3f}, Hits@10 {test.get('hits@10', 0):.3f}" if test else ""),
        )
    return bundle.transe


def train_quick_transe(console: Console, kg: KnowledgeGraph) -> EntityVectors:
    """A quick TransE (two minutes at most) for a KG the bundle has no vectors for."""
    console.print(f"TransE: training on {kg.name} for at most 2 minutes (`kgpipe kg train` trains properly)")
    trainer, metrics = train_transe(kg, TrainConfig(dim=64, epochs=50, max_minutes=2.0))
    console.print(f"TransE: {metrics['epochs_run']} epochs, test MRR {metrics['test'].get('mrr', 0):.3f}")
    return EntityVectors(
        trainer.model.eval(), kg.entities, kg.qids, kg.labels, kg.relations, {"train": trainer.cfg.to_dict()}
    )


def show_transe(console: Console, kg: KnowledgeGraph, vectors: EntityVectors) -> None:
    table = Table(title="Nearest entities in TransE space")
    table.add_column("entity")
    table.add_column("nearest")
    for qid in showcase(kg):
        if not vectors.has(qid):
            continue
        near = vectors.nearest(qid, k=4)
        table.add_row(kg.describe(qid), ", ".join(vectors.labels[i] or vectors.entities[i] for i, _ in near))
    console.print(table)


def showcase(kg: KnowledgeGraph) -> list[str]:
    """Well-known entities when the KG has them, else its three best-connected ones."""
    known = [q for q in WELL_KNOWN if kg.has_entity(q)]
    return known or [kg.entities[i] for i in np.argsort(-kg.degrees())[:3]]


def show_summary(
    console: Console, kg: KnowledgeGraph, degrees: np.ndarray, report: Report | None = None
) -> None:
    info = kg.summary()
    table = Table(title=f"Knowledge graph: {kg.name}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("entities", f"{kg.num_entities:,}")
    table.add_row("  with Wikidata QID", f"{info['with_qid']:,}")
    table.add_row("relations", f"{kg.num_relations:,}")
    for split, n in info["triples"].items():  # type: ignore[attr-defined]
        table.add_row(f"triples ({split})", f"{n:,}")
    console.print(table)
    if report is not None:
        rows = [
            ["entities", kg.num_entities],
            ["with Wikidata QID", info["with_qid"]],
            ["relations", kg.num_relations],
        ]
        rows += [[f"triples ({split})", n] for split, n in info["triples"].items()]  # type: ignore[attr-defined]
        report.table(f"knowledge graph: {kg.name}", ["what", "count"], rows)
    hubs = Table(title="Best-connected entities (train degree)")
    hubs.add_column("entity")
    hubs.add_column("degree", justify="right")
    for i in np.argsort(-degrees)[:5]:
        hubs.add_row(kg.describe(int(i)), f"{int(degrees[i]):,}")
    console.print(hubs)


def show_neighbours(console: Console, kg: KnowledgeGraph) -> None:
    table = Table(title="Graph neighbours of well-known entities")
    table.add_column("entity")
    table.add_column("first neighbours")
    for qid in showcase(kg):
        near = kg.neighbors(qid, hops=1, limit=4)
        table.add_row(kg.describe(qid), ", ".join(kg.labels[n] or kg.entities[n] for n in near))
    console.print(table)
