"""KnowledgeGraph at scale: load time and peak RSS for a synthetic 1M-triple KG.

Each measurement runs in a fresh process so peak RSS is its own. Writes benchmarks/results/kg_scale.json.
Usage: python benchmarks/kg_scale.py [--triples 1000000] [--entities 100000] [--relations 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "kg_scale.json"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from kg.io import load_kg
step, path = sys.argv[1], sys.argv[2]
imported = time.perf_counter()
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
kg = load_kg(path)
loaded = time.perf_counter() - start
extra = {}
if step == "query":
    start = time.perf_counter(); _ = kg.adjacency; extra["adjacency_s"] = time.perf_counter() - start
    start = time.perf_counter()
    queries = range(0, kg.num_entities, kg.num_entities // 1000)
    for e in queries:
        kg.neighbors(e, hops=2, limit=100)
    extra["neighbors_2hop_limit100_ms"] = (time.perf_counter() - start) * 1000 / len(queries)
    start = time.perf_counter(); kg.triples_between(0, 1); extra["triples_between_ms"] = (time.perf_counter() - start) * 1000
if step == "networkx":
    start = time.perf_counter(); g = kg.graph; extra["networkx_build_s"] = time.perf_counter() - start
    extra["networkx_edges"] = g.number_of_edges()  # repeated (h, r, t) rows are one edge
print(json.dumps({"load_s": loaded, "import_s": imported - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_import_mb": rss_before / 1024, **extra}))
"""


def make_kg(folder: Path, triples: int, entities: int, relations: int, seed: int = 0) -> None:
    """Power-law-ish synthetic KG: entity popularity follows a Zipf law, as in real KGs."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, entities + 1) ** 0.8
    weights /= weights.sum()
    total = int(triples * 1.1)
    h = rng.choice(entities, total, p=weights)
    t = rng.choice(entities, total, p=weights)
    r = rng.integers(0, relations, total)
    split = {
        "train": slice(0, triples),
        "valid": slice(triples, triples + total // 22),
        "test": slice(triples + total // 22, total),
    }
    for name, s in split.items():
        with open(folder / f"{name}.txt", "w") as f:
            f.writelines(f"e{a}\tr{b}\te{c}\n" for a, b, c in zip(h[s], r[s], t[s], strict=True))


def measure(step: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--triples", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--relations", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, saved = Path(tmp) / "tsv", Path(tmp) / "saved"
        raw.mkdir()
        make_kg(raw, args.triples, args.entities, args.relations)
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "kg", "convert", str(raw), str(saved)],
            check=True,
            capture_output=True,
        )
        rows = {
            "TSV (parse + validate)": measure("load", raw),
            "kgpipe layout (Parquet + npz)": measure("load", saved),
            "kgpipe layout + adjacency + queries": measure("query", saved),
            "kgpipe layout + networkx view": measure("networkx", saved),
        }
    result = {
        "triples": args.triples,
        "entities": args.entities,
        "relations": args.relations,
        "machine": f"{platform.processor() or platform.machine()}, 2 cores (CI size)",
        "runs": rows,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'what':38} {'load s':>8} {'peak RSS MB':>12}  extra")
    for name, r in rows.items():
        extra = {
            k: round(v, 3)
            for k, v in r.items()
            if k not in ("load_s", "peak_rss_mb", "import_s", "rss_after_import_mb")
        }
        print(f"{name:38} {r['load_s']:8.2f} {r['peak_rss_mb']:12.0f}  {extra}")


if __name__ == "__main__":
    main()
