"""Batch extraction on dask against one plain process, on the Wikipedia corpus in ../shared/data.

  python benchmarks/batch.py [--docs 1000] [--growth 1000,3000,10000] [--partition-size 100]

Measures, on the first `--docs` documents: documents/s of `kgpipe extract`'s job with 1 and 2
LocalCluster workers, the same `extract` in one plain process (dask's overhead), linking alone
(the extraction's cost against it), time per stage (NER and mentions, candidates and
disambiguation, facts, vectors), peak memory per worker; then documents/s with 2 workers at each
size of `--growth` (the cost must grow linearly); and the predicted facts: over the corpus's
same-sentence linked pairs that a test-split triple joins (TransE never trained on test), the
share whose triple is TransE's top-1 / top-3 relation. Writes results/batch.json and batch.png.
"""

from __future__ import annotations

import os

# one BLAS/OpenMP thread, as dask gives each worker process: the plain process is then a fair
# baseline for one worker (set before numpy loads)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"


def subset(n: int, folder: Path) -> Path:
    path = folder / f"corpus-{n}.jsonl"
    with open(CORPUS, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= n:
                break
            out.write(line)
    return path


def dask_run(path: Path, workers: int, partition_size: int, scratch: Path) -> dict[str, float]:
    from pipeline.batch import run

    out = scratch / f"out-{workers}-{path.stem}"
    shutil.rmtree(out, ignore_errors=True)
    summary = run([path], out, workers=workers, partition_size=partition_size)
    markers = [json.loads(p.read_text()) for p in (out / "_done").glob("*.json")]
    span = max(m["wall"][1] for m in markers) - min(m["wall"][0] for m in markers)
    return {
        "documents": summary.documents,
        "seconds": summary.seconds,  # the whole command: cluster start, bundle loads, tasks
        "docs_per_s": round(summary.docs_per_second, 2),
        "task_span_seconds": round(span, 2),  # first task's start to last task's end
        "steady_docs_per_s": round(summary.documents / span, 2),
        "entities": summary.entities,
        "facts": summary.facts,
        "task_seconds": round(sum(m["seconds"] for m in markers), 2),
    }


def plain_run(path: Path) -> dict[str, object]:
    """The same work in plain processes, each fresh (cold caches, as a worker starts) and on one
    core as a worker is: `extract` per 100 documents, `link` alone, and the stages one by one."""
    import subprocess
    import sys

    runs = {}
    for mode in ("extract", "link", "stages"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=True
        )
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    documents = runs["extract"]["documents"]
    return {
        "documents": documents,
        "extract_seconds": runs["extract"]["seconds"],
        "extract_docs_per_s": round(documents / runs["extract"]["seconds"], 2),
        "link_only_seconds": runs["link"]["seconds"],
        "extract_vs_link": round(runs["extract"]["seconds"] / runs["link"]["seconds"], 3),
        "stages_seconds": runs["stages"]["stages"],
        "peak_rss_mb": runs["extract"]["peak_rss_mb"],
    }


def child(mode: str, path: Path) -> None:
    """One fresh process: load the bundle, then time `mode` over the documents of `path`."""
    import torch

    from pipeline import load
    from pipeline.batch import Partition, read_partition
    from pipeline.extract import Entity, _facts, extract

    torch.set_num_threads(1)
    bundle = load()
    bundle.linker.overlap = False  # as in a worker: one core
    _ = bundle.facts
    lines = len(path.read_text(encoding="utf-8").splitlines())
    docs, _ = read_partition(Partition(str(path), "jsonl", 1, lines + 1, 0, path.stat().st_size, "", ""))
    texts = [d.text for d in docs]
    chunks = range(0, len(docs), 100)
    start = time.perf_counter()
    stages = {"ner_and_mentions": 0.0, "vectors": 0.0, "candidates_and_disambiguation": 0.0, "facts": 0.0}
    linker = bundle.linker
    for lo in chunks:
        if mode == "extract":
            extract(bundle, docs[lo : lo + 100])
        elif mode == "link":
            bundle.link(texts[lo : lo + 100])
        else:
            chunk = texts[lo : lo + 100]
            t0 = time.perf_counter()
            found = [linker.finder.find(d) for d in linker.nlp.pipe(chunk, batch_size=32)]
            t1 = time.perf_counter()
            vecs = linker.doc_vectors(chunk)
            t2 = time.perf_counter()
            linker.candidates.prefetch([m for ms in found for m in ms])
            linked = [
                linker.disambiguate(ms, False, v, text_length=len(t))
                for t, ms, v in zip(chunk, found, vecs, strict=True)
            ]
            t3 = time.perf_counter()
            for text, ls in zip(chunk, linked, strict=True):
                ents = [Entity(x.start, x.end, x.text, x.qid, x.score, x.label, "") for x in ls if x.qid]
                _facts(bundle.facts, bundle.kg, text, ents, [x.entity for x in ls if x.qid])
            t4 = time.perf_counter()
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[key] += dt
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "documents": len(docs),
                "seconds": round(seconds, 2),
                "stages": {k: round(v, 2) for k, v in stages.items()},
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


def predicted_fact_quality(out_dir: Path) -> dict[str, float]:
    """Top-1 / top-3 recovery of test-split triples joining same-sentence linked pairs."""
    import pyarrow.dataset as ds

    from pipeline import load

    bundle = load(eager=False)
    kg, model = bundle.kg, bundle.facts
    test = kg.triples["test"]
    by_pair: dict[tuple[int, int], set[int]] = {}
    for h, r, t in test.tolist():
        by_pair.setdefault((h, t), set()).add(r)
    ents = ds.dataset(out_dir / "entities", format="parquet").to_table().to_pylist()
    docs = (
        ds.dataset(out_dir / "docs", format="parquet")
        .to_table(columns=["doc_id"])
        .column("doc_id")
        .to_pylist()
    )
    del docs
    from pipeline.extract import sentences

    texts = {}
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            texts[str(obj["id"])] = obj["text"]
    by_doc: dict[str, list[dict]] = {}
    for e in ents:
        by_doc.setdefault(e["doc_id"], []).append(e)
    pairs = set()
    for doc_id, es in by_doc.items():
        for a, b in sentences(texts.get(doc_id, "")):
            inside = {kg.entity_id(e["qid"]) for e in es if a <= e["start"] and e["end"] <= b}
            pairs |= {(h, t) for h in inside for t in inside if h != t and (h, t) in by_pair}
    pairs_list = sorted(p for p in pairs if model.rows[p[0]] >= 0 and model.rows[p[1]] >= 0)
    if not pairs_list:
        return {"pairs": 0}
    top = model.top_relations(np.array([p[0] for p in pairs_list]), np.array([p[1] for p in pairs_list]), k=3)
    hit1 = np.mean([top[i][0][0] in by_pair[p] for i, p in enumerate(pairs_list)])
    hit3 = np.mean([any(r in by_pair[p] for r, _ in top[i]) for i, p in enumerate(pairs_list)])
    return {
        "pairs": len(pairs_list),
        "top1": round(float(hit1), 3),
        "top3": round(float(hit3), 3),
        "relations": len(model.usable),
        "threshold_distance": round(model.threshold, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--growth", default="1000,3000,10000")
    parser.add_argument("--partition-size", type=int, default=100)
    parser.add_argument(
        "--plain-only",
        action="store_true",
        help="measure the plain process again into the existing results/batch.json",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    scratch = Path(tempfile.mkdtemp(prefix="kgpipe-batch-"))
    result: dict[str, object] = {
        "corpus": str(CORPUS),
        "partition_size": args.partition_size,
        "cores": os.cpu_count(),
    }
    base = subset(args.docs, scratch)
    result["plain_process"] = plain = plain_run(base)
    print("plain", plain, flush=True)
    if args.plain_only:
        old = json.loads((RESULTS / "batch.json").read_text())
        old["plain_process"] = plain
        one = old["dask"]["1"]
        old["dask_overhead_1_worker"] = round(plain["extract_docs_per_s"] / one["steady_docs_per_s"] - 1, 3)  # type: ignore[operator]
        (RESULTS / "batch.json").write_text(json.dumps(old, indent=2) + "\n")
        plot(old, RESULTS / "batch.png")
        print(
            f"dask overhead (1 worker) {old['dask_overhead_1_worker']:.0%}; extract vs link {plain['extract_vs_link']}x"
        )
        return
    one = dask_run(base, 1, args.partition_size, scratch)
    print("1 worker", one, flush=True)
    two = dask_run(base, 2, args.partition_size, scratch)
    print("2 workers", two, flush=True)
    result["dask"] = {"1": one, "2": two}
    result["scaling_efficiency"] = round(two["steady_docs_per_s"] / (2 * one["steady_docs_per_s"]), 3)
    result["scaling_efficiency_whole_command"] = round(two["docs_per_s"] / (2 * one["docs_per_s"]), 3)
    result["dask_overhead_1_worker"] = round(plain["extract_docs_per_s"] / one["steady_docs_per_s"] - 1, 3)  # type: ignore[operator]
    growth = {}
    for n in [int(x) for x in args.growth.split(",") if x]:
        growth[str(n)] = dask_run(subset(n, scratch), 2, args.partition_size, scratch)
        print("growth", n, growth[str(n)], flush=True)
    result["growth_2_workers"] = growth
    biggest = scratch / f"out-2-corpus-{max(int(x) for x in args.growth.split(','))}"
    result["predicted_facts"] = predicted_fact_quality(biggest)
    print("predicted facts", result["predicted_facts"], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "batch.png")
    print(f"\n{'run':28} {'docs':>6} {'docs/s':>8} {'steady docs/s':>14}")
    print(f"{'plain process (extract)':28} {plain['documents']:>6} {plain['extract_docs_per_s']:>8}")
    for k, v in result["dask"].items():  # type: ignore[attr-defined]
        print(
            f"{'dask, ' + k + ' worker(s)':28} {v['documents']:>6} {v['docs_per_s']:>8} {v['steady_docs_per_s']:>14}"
        )
    for k, v in growth.items():
        print(
            f"{'dask 2 workers, ' + k + ' docs':28} {v['documents']:>6} {v['docs_per_s']:>8} {v['steady_docs_per_s']:>14}"
        )
    print(
        f"scaling efficiency {result['scaling_efficiency']:.0%}; dask overhead (1 worker) {result['dask_overhead_1_worker']:.0%}; "
        f"extract vs link {plain['extract_vs_link']}x; stages {plain['stages_seconds']}"
    )
    shutil.rmtree(scratch, ignore_errors=True)


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    dask = result["dask"]  # type: ignore[index]
    labels = ["plain process", "dask 1 worker", "dask 2 workers"]
    values = [
        result["plain_process"]["extract_docs_per_s"],
        dask["1"]["steady_docs_per_s"],
        dask["2"]["steady_docs_per_s"],
    ]  # type: ignore[index]
    a.bar(labels, values, color=["grey", "tab:blue", "tab:orange"])
    a.set_ylabel("documents per second")
    a.set_title("Extraction throughput (2 CPU cores)")
    growth = result["growth_2_workers"]  # type: ignore[index]
    sizes = sorted(int(k) for k in growth)
    b.plot(sizes, [growth[str(n)]["seconds"] for n in sizes], "o-")
    b.set_xlabel("documents")
    b.set_ylabel("seconds, 2 workers")
    b.set_title("Cost against corpus size")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
