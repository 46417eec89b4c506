"""`kgpipe demo`: the main job on the bundled defaults, one section per capability.

Each section prints what a user would want to see first; later capabilities add sections.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kg.graph import KnowledgeGraph
from kg.io import bundled_kg_path, load_kg

WELL_KNOWN = ["Q90", "Q76", "Q1299", "Q2", "Q11660"]  # Paris, Barack Obama, The Beatles, Earth, AI


def run_demo(kg_path: Path | None = None) -> None:
    console = Console()
    path = kg_path or bundled_kg_path()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading KG", total=3)
        kg = load_kg(path)
        progress.update(task, advance=1, description="degrees")
        degrees = kg.degrees()
        progress.update(task, advance=1, description="adjacency")
        _ = kg.adjacency
        progress.update(task, advance=1)
    show_summary(console, kg, degrees)
    show_neighbours(console, kg)


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
    for qid in WELL_KNOWN:
        if not kg.has_entity(qid):
            continue
        near = kg.neighbors(qid, hops=1, limit=4)
        table.add_row(kg.describe(qid), ", ".join(kg.labels[n] or kg.entities[n] for n in near))
    console.print(table)
