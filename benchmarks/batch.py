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

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

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
    return {
        "documents": summary.documents,
        "seconds": summary.seconds,
        "docs_per_s": round(summary.docs_per_second, 2),
        "entities": summary.entities,
        "facts": summary.facts,
        "task_seconds": round(sum(m["seconds"] for m in markers), 2),
    }


def plain_run(path: Path) -> dict[str, object]:
    """The same extraction in this process, one thread for torch (as a worker has), per stage."""
    import torch

    from pipeline import load
    from pipeline.batch import Partition, read_partition
    from pipeline.extract import _facts

    torch.set_num_threads(1)
    bundle = load()
    _ = bundle.facts
    lines = len(path.read_text(encoding="utf-8").splitlines())
    part = Partition(str(path), "jsonl", 1, lines + 1, 0, path.stat().st_size, "", "")
    docs, _ = read_partition(part)
    texts = [d.text for d in docs]
    bundle.link(texts[:20])  # warm up
    bundle.linker.clear()
    linker = bundle.linker
    stages = {"ner_and_mentions": 0.0, "candidates_and_disambiguation": 0.0, "vectors": 0.0, "facts": 0.0}
    start = time.perf_counter()
    for lo in range(0, len(texts), 100):
        chunk = texts[lo : lo + 100]
        t0 = time.perf_counter()
        sdocs = list(linker.nlp.pipe(chunk, batch_size=32))
        found = [linker.finder.find(d) for d in sdocs]
        t1 = time.perf_counter()
        vecs = linker.doc_vectors(chunk)
        t2 = time.perf_counter()
        linker.candidates.prefetch([m for ms in found for m in ms])
        linked = [linker.disambiguate(ms, False, v) for ms, v in zip(found, vecs, strict=True)]
        t3 = time.perf_counter()
        model = bundle.facts
        from pipeline.extract import Entity

        for text, ls in zip(chunk, linked, strict=True):
            ents = [Entity(x.start, x.end, x.text, x.qid, x.score, x.label, "") for x in ls if x.qid]
            _facts(model, bundle.kg, text, ents, [x.entity for x in ls if x.qid])
        t4 = time.perf_counter()
        stages["ner_and_mentions"] += t1 - t0
        stages["vectors"] += t2 - t1
        stages["candidates_and_disambiguation"] += t3 - t2
        stages["facts"] += t4 - t3
    staged = time.perf_counter() - start
    bundle.linker.clear()
    from pipeline.extract import extract

    start = time.perf_counter()
    for lo in range(0, len(docs), 100):
        extract(bundle, docs[lo : lo + 100])
    whole = time.perf_counter() - start
    bundle.linker.clear()
    start = time.perf_counter()
    for lo in range(0, len(texts), 100):
        bundle.link(texts[lo : lo + 100])
    link_only = time.perf_counter() - start
    return {
        "documents": len(docs),
        "extract_seconds": round(whole, 2),
        "extract_docs_per_s": round(len(docs) / whole, 2),
        "link_only_seconds": round(link_only, 2),
        "extract_vs_link": round(whole / link_only, 3),
        "stages_seconds": {k: round(v, 2) for k, v in stages.items()},
        "staged_total_seconds": round(staged, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


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
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    scratch = Path(tempfile.mkdtemp(prefix="kgpipe-batch-"))
    result: dict[str, object] = {
        "corpus": str(CORPUS),
        "partition_size": args.partition_size,
        "cores": os.cpu_count(),
    }
    base = subset(args.docs, scratch)
    result["plain_process"] = plain = plain_run(base)
    print("plain", plain, flush=True)
    one = dask_run(base, 1, args.partition_size, scratch)
    print("1 worker", one, flush=True)
    two = dask_run(base, 2, args.partition_size, scratch)
    print("2 workers", two, flush=True)
    result["dask"] = {"1": one, "2": two}
    result["scaling_efficiency"] = round(two["docs_per_s"] / (2 * one["docs_per_s"]), 3)
    result["dask_overhead_1_worker"] = round(plain["extract_docs_per_s"] / one["docs_per_s"] - 1, 3)  # type: ignore[operator]
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
    print(f"\n{'run':28} {'docs':>6} {'docs/s':>8}")
    print(f"{'plain process (extract)':28} {plain['documents']:>6} {plain['extract_docs_per_s']:>8}")
    for k, v in result["dask"].items():  # type: ignore[attr-defined]
        print(f"{'dask, ' + k + ' worker(s)':28} {v['documents']:>6} {v['docs_per_s']:>8}")
    for k, v in growth.items():
        print(f"{'dask 2 workers, ' + k + ' docs':28} {v['documents']:>6} {v['docs_per_s']:>8}")
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
    values = [result["plain_process"]["extract_docs_per_s"], dask["1"]["docs_per_s"], dask["2"]["docs_per_s"]]  # type: ignore[index]
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
