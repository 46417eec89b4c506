"""`kgpipe demo`: the main job on the bundled defaults, one section per capability.

Each section prints what a user would want to see first; later capabilities add sections.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

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

WELL_KNOWN = ["Q90", "Q76", "Q1299", "Q2", "Q11660"]  # Paris, Barack Obama, The Beatles, Earth, AI


def run_demo(
    kg_path: Path | None = None, bundle_path: Path | None = None, out: Path = Path("demo_output")
) -> None:
    from pipeline.bundle import load

    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading the bundle", total=3)
        bundle = load(bundle_path, eager=False)
        kg = load_kg(kg_path) if kg_path is not None else bundle.kg
        progress.update(task, advance=1, description="degrees")
        degrees = kg.degrees()
        progress.update(task, advance=1, description="adjacency")
        _ = kg.adjacency
        progress.update(task, advance=1)
    show_summary(console, kg, degrees)
    show_neighbours(console, kg)
    own = kg.fingerprint == bundle.kg.fingerprint
    show_transe(console, kg, bundle_transe(console, bundle) if own else train_quick_transe(console, kg))
    show_linking(console, kg, bundle)
    if kg_path is None:
        extraction = show_batch(console, bundle, out)
        show_search(console, bundle, extraction, out / "store")


def show_batch(console: Console, bundle: Bundle, out: Path) -> Path:
    """The batch job (`kgpipe extract`) over the sample corpus on a local dask cluster."""
    import pyarrow.dataset as ds

    from pipeline.batch import run

    corpus = data_root() / "corpus" / "sample.jsonl"
    console.rule("batch extraction: `kgpipe extract` on a local dask cluster")
    extraction = out / "extract"  # a rerun finds its partitions done
    summary = run([corpus], extraction, bundle=bundle.path, workers=2, partition_size=3)
    facts = ds.dataset(extraction / "facts", format="parquet").to_table().to_pylist()
    table = Table(title=f"facts between entities of a sentence ({summary.facts} in all; a few shown)")
    for column in ("document", "head", "relation", "tail", "source", "score"):
        table.add_column(column)
    kg = bundle.kg
    for f in facts[:8]:
        head, tail = (kg.labels[kg.entity_id(q)] or q for q in (f["head"], f["tail"]))
        relation = f["relation"].rsplit("/", 1)[-1].replace("_", " ")
        table.add_row(f["doc_id"], head, relation, tail, f["source"], f"{f['score']:.2f}")
    console.print(table)
    console.print(
        f"{summary.documents} documents, {summary.entities} entities, {summary.facts} facts, "
        f"{summary.errors} bad lines in {summary.seconds:.1f} s on {summary.workers} dask workers "
        f"({summary.docs_per_second:.1f} documents/s, most of it starting the workers) -> {extraction}"
    )
    return extraction


def show_search(console: Console, bundle: Bundle, extraction: Path, store: Path) -> None:
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
                ", ".join(h.metadata.get("entities", [])[:4]),
            )
            query = ""
    console.print(table)
    near = ", ".join(f"{h.metadata.get('label')} ({h.score:.2f})" for h in about["neighbours"])
    console.print(f"entities nearest Paris in TransE space: {near}")


def show_linking(console: Console, kg: KnowledgeGraph, bundle: Bundle, limit: int = 3) -> None:
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


def bundle_transe(console: Console, bundle: Bundle) -> EntityVectors:
    """The bundle's TransE checkpoint, with its test MRR."""
    path = bundle.parts["transe"].path
    metrics = path / "metrics.json"
    test = (json.loads(metrics.read_text()).get("test") or {}) if metrics.exists() else {}
    console.print(
        f"TransE: bundle checkpoint {path} (dim {bundle.transe.model.config.dim})"
        + (f", test MRR {test['mrr']:.3f}" if test else "")
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


def show_summary(console: Console, kg: KnowledgeGraph, degrees: np.ndarray) -> None:
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
