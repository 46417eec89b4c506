"""The vector store against raw FAISS, exact search and Milvus Lite, side by side in one run.

    python benchmarks/search.py [--n 1000000] [--extraction DIR] [--out benchmarks/results/search.json]

1. Scale: `--n` clustered synthetic 384-d unit vectors (1M by default) in the store's default index
   for that size (IDMap2,IVF{4√N},SQ8 with exact re-ranking, nprobe calibrated at build). Build time, memory, queries/s one at
   a time and in batches of 100, recall@10 against exact search, the store's time per query over
   raw FAISS on the same index with the same parameters, recall@10 under filters that keep 50 %,
   5 % and 0.1 % of the collection (exact top 10 of the allowed items as the truth).
2. Milvus Lite on the first 100k vectors, against the FAISS store on the same slice (both exact: FLAT).
3. Real corpus: the 10,033 Wikipedia leads of ../shared/data/corpus, extracted with the default
   bundle (`--extraction DIR` reuses one) and indexed; 500 sampled titles as queries: how often the
   title's own document is in the top 10. No part of kgpipe was trained or tuned on these titles.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"
DIM = 384
K = 10


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def clustered(n: int, seed: int, topics: int = 0) -> np.ndarray:
    """Unit vectors around 2,000 centres (a corpus of topics), made in chunks. The centres come
    from `topics`, the points from `seed`: the same topics with another seed are new documents
    (or queries) on the same subjects."""
    centres = np.random.default_rng(10_000 + topics).normal(size=(2000, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        x = centres[rng.integers(0, 2000, m)] + 0.8 * rng.normal(size=(m, DIM)).astype(np.float32)
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    import faiss

    if allowed is not None:
        x = x[allowed]
    index = faiss.IndexFlatIP(DIM)
    index.add(x)
    _, rows = index.search(q, k)
    return allowed[rows] if allowed is not None else rows


def recall(got_rows: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(g) & set(t.tolist())) / len(t) for g, t in zip(got_rows, truth, strict=True)])
    )


def timed(fn, repeat: int) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def scale(n: int, tmp: Path) -> dict:
    import faiss

    from pipeline.store import Filter, auto_factory, create_store, open_store

    x = clustered(n, 0)
    q = clustered(1000, 1)  # the same topics, other points: queries on the corpus's subjects
    off_topic = clustered(200, 2, topics=1)  # queries about subjects the corpus does not hold
    ids = [f"v{i}" for i in range(n)]
    rng = np.random.default_rng(2)
    share = rng.random(n)
    meta = [
        {
            "bucket": "half" if s < 0.5 else "other",
            "tag5": "yes" if s < 0.05 else "no",
            "rare": "yes" if s < 0.001 else "no",
        }
        for s in share
    ]
    base_rss = rss_mb()
    store = create_store(tmp / "scale", {"name": "synthetic", "model_id": "none"})
    col = store.create_collection("docs", DIM)
    t = time.perf_counter()
    col.upsert(ids, x, meta)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    store.save()
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    reopened = open_store(tmp / "scale").collection("docs")
    open_s = time.perf_counter() - t
    mem = rss_mb() - base_rss
    disk = sum(p.stat().st_size for p in (tmp / "scale").rglob("*") if p.is_file()) / 2**20
    truth = exact(x, q, K)
    res: dict = {
        "n": n,
        "dim": DIM,
        "factory": auto_factory(n),
        "build_s": round(build_s, 1),
        "save_s": round(save_s, 1),
        "open_s": round(open_s, 1),
        "memory_mb": round(mem),
        "disk_mb": round(disk),
    }
    ivf = faiss.try_extract_index_ivf(col.index)
    calibrated = col.nprobe
    res["nprobe_calibrated"] = calibrated
    by_nprobe = []
    for nprobe in (16, 32, 64, 128) if ivf is not None else ():
        col.nprobe = nprobe
        got = col.search(q, K)
        by_nprobe.append(
            {
                "nprobe": nprobe,
                "recall@10": round(recall([[int(h.id[1:]) for h in r] for r in got], truth), 4),
            }
        )
    res["recall_by_nprobe"] = by_nprobe
    col.nprobe = calibrated
    got = col.search(q, K)
    res["recall@10"] = round(recall([[int(h.id[1:]) for h in r] for r in got], truth), 4)
    off = col.search(off_topic, K)
    res["recall@10_off_topic_queries"] = round(
        recall([[int(h.id[1:]) for h in r] for r in off], exact(x, off_topic, K)), 4
    )
    again = reopened.search(q[:100], K)
    res["reopened_identical"] = [[h.id for h in r] for r in again] == [[h.id for h in r] for r in got[:100]]
    # raw FAISS on the same index, the same candidates (k × RERANK, nprobe 64) without the store around it
    from pipeline.store import RERANK

    params = faiss.SearchParametersIVF(nprobe=col.nprobe) if ivf is not None else None
    wide = K * RERANK if ivf is not None else K
    # interleaved, query by query, so that the machine's other load falls on both alike
    raw_t, store_t = [], []
    for _ in range(3):
        for i in range(200):
            s = q[i : i + 1]
            t = time.perf_counter()
            col.index.search(s, wide, params=params)
            raw_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            col.search(s, K)
            store_t.append(time.perf_counter() - t)
    raw_one, store_one = float(np.median(raw_t)), float(np.median(store_t))
    # the store's own cost is fixed per query: its share depends on how long FAISS takes
    by_cost = []
    for nprobe in (16, 64, 256):
        col.nprobe = nprobe
        p = faiss.SearchParametersIVF(nprobe=nprobe) if ivf is not None else None
        rt, st = [], []
        for i in range(200):
            s = q[i : i + 1]
            t = time.perf_counter()
            col.index.search(s, wide, params=p)
            rt.append(time.perf_counter() - t)
            t = time.perf_counter()
            col.search(s, K)
            st.append(time.perf_counter() - t)
        r_ms, s_ms = float(np.median(rt)) * 1000, float(np.median(st)) * 1000
        by_cost.append(
            {
                "nprobe": nprobe,
                "raw_ms": round(r_ms, 3),
                "store_ms": round(s_ms, 3),
                "overhead": round(s_ms / r_ms - 1, 4),
            }
        )
        if ivf is None:
            break
    col.nprobe = calibrated
    res["overhead_by_nprobe"] = by_cost
    raw_b, store_b = [], []
    for _ in range(5):
        t = time.perf_counter()
        col.index.search(q, wide, params=params)
        raw_b.append(time.perf_counter() - t)
        t = time.perf_counter()
        col.search(q, K)
        store_b.append(time.perf_counter() - t)
    raw_batch, store_batch = float(np.median(raw_b)) / len(q), float(np.median(store_b)) / len(q)
    res["queries_per_s"] = {
        "raw_faiss_single": round(1 / raw_one),
        "store_single": round(1 / store_one),
        "raw_faiss_batch1000": round(1 / raw_batch),
        "store_batch1000": round(1 / store_batch),
    }
    res["store_overhead_single"] = round(store_one / raw_one - 1, 4)
    res["store_overhead_batch"] = round(store_batch / raw_batch - 1, 4)
    del ivf
    filters = {}
    for name, column, keep in (("50%", "bucket", "half"), ("5%", "tag5", "yes"), ("0.1%", "rare", "yes")):
        allowed = np.flatnonzero(np.array([m[column] == keep for m in meta]))
        where = Filter(where=((column, keep),))
        col.search(q[:1], K, where)  # the filter's mask, once
        t = time.perf_counter()
        got = col.search(q[:200], K, where)
        secs = (time.perf_counter() - t) / 200
        rows = [[int(h.id[1:]) for h in r] for r in got]
        filters[name] = {
            "allowed": len(allowed),
            "recall@10": round(recall(rows, exact(x, q[:200], K, allowed)), 4),
            "min_hits": min(len(r) for r in rows),
            "queries_per_s": round(1 / secs),
            "how": "exact over the allowed vectors" if len(allowed) < 20_000 else "IVF with an IDSelector",
        }
    res["filters"] = filters
    # Milvus Lite on a 100k slice, beside the FAISS store on the same slice
    m = min(n, 100_000)
    slice_truth = exact(x[:m], q[:200], K)
    out = {}
    for engine, address in (("faiss", tmp / "slice"), ("milvus_lite", f"milvus:{tmp / 'slice.db'}")):
        s = create_store(address, {"model_id": "none"})
        c = s.create_collection("docs", DIM, "IDMap2,Flat" if engine == "faiss" else "FLAT")  # exact, both
        t = time.perf_counter()
        for lo in range(0, m, 10_000):
            c.upsert(ids[lo : lo + 10_000], x[lo : lo + 10_000], meta[lo : lo + 10_000])
        s.save()
        build = time.perf_counter() - t
        c.search(q[:1], K)
        t = time.perf_counter()
        got = [c.search(q[i : i + 1], K)[0] for i in range(200)]
        one = (time.perf_counter() - t) / 200
        t = time.perf_counter()
        c.search(q[:200], K)
        batch = (time.perf_counter() - t) / 200
        t = time.perf_counter()
        filtered = c.search(q[:50], K, Filter(where=(("tag5", "yes"),)))
        filt = (time.perf_counter() - t) / 50
        out[engine] = {
            "n": m,
            "build_s": round(build, 1),
            "queries_per_s_single": round(1 / one),
            "queries_per_s_batch200": round(1 / batch),
            "queries_per_s_filtered_5%": round(1 / filt),
            "recall@10": round(recall([[int(h.id[1:]) for h in r] for r in got], slice_truth), 4),
            "filtered_min_hits": min(len(r) for r in filtered),
        }
        s.close()
    res["slice_100k"] = out
    return res


def corpus(extraction: Path | None, tmp: Path, titles: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    kgpipe = str(Path(sys.executable).parent / "kgpipe")
    if extraction is None or not (extraction / "_manifest.json").exists():
        extraction = extraction or tmp / "extraction"
        t = time.perf_counter()
        subprocess.run(
            [kgpipe, "extract", str(CORPUS), "--out", str(extraction), "--workers", "2"], check=True, env=env
        )
        print(f"extracted the corpus in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    from pipeline.bundle import load
    from pipeline.search import Searcher, index_extraction

    bundle = load(eager=False)
    t = time.perf_counter()
    summary = index_extraction(extraction, tmp / "corpus", bundle)
    index_s = time.perf_counter() - t
    docs = [json.loads(line) for line in CORPUS.open(encoding="utf-8")]
    random.seed(7)
    sample = random.sample(docs, titles)
    results = {}
    for address in (tmp / "corpus",):
        searcher = Searcher.open(address, bundle)
        t = time.perf_counter()
        hits = searcher.text([d["title"] for d in sample], K)
        secs = time.perf_counter() - t
        rank = [
            next((i for i, h in enumerate(row) if h.id == d["id"]), None)
            for row, d in zip(hits, sample, strict=True)
        ]
        results["faiss"] = {
            "hit@1": round(sum(r == 0 for r in rank) / titles, 4),
            "hit@10": round(sum(r is not None for r in rank) / titles, 4),
            "queries_per_s_with_encoding": round(titles / secs, 1),
        }
    missed = [d["title"] for d, r in zip(sample, rank, strict=True) if r is None][:15]
    return {
        "documents": summary.total_documents,
        "index_s": round(index_s, 1),
        "titles": titles,
        **results,
        "missed_examples": missed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--titles", type=int, default=500)
    ap.add_argument(
        "--extraction", type=Path, default=None, help="reuse (or keep) the corpus extraction here"
    )
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kgpipe-search-"))
    try:
        res: dict = {"machine": f"{os.cpu_count()} cores, CPU only"}
        if args.titles:
            res["corpus"] = corpus(args.extraction, tmp, args.titles)
            print(json.dumps(res["corpus"], indent=1))
        if not args.skip_scale:
            res["scale"] = scale(args.n, tmp)
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    report(res, args.out.with_suffix(".png"))


def report(res: dict, png: Path) -> None:
    c = res.get("corpus")
    if c:
        print(
            f"\nreal corpus ({c['documents']:,} docs): title -> own document hit@10 {c['faiss']['hit@10']:.3f}, "
            f"hit@1 {c['faiss']['hit@1']:.3f} over {c['titles']} titles"
        )
    if "scale" not in res:
        return
    s = res["scale"]
    print(
        f"\n{s['n']:,} x {s['dim']} ({s['factory']}): build {s['build_s']} s, {s['memory_mb']} MB, recall@10 {s['recall@10']}"
    )
    print(f"{'':28}{'raw FAISS':>12}{'store':>12}{'overhead':>10}")
    qps = s["queries_per_s"]
    print(
        f"{'queries/s, one at a time':28}{qps['raw_faiss_single']:>12,}{qps['store_single']:>12,}{s['store_overhead_single']:>10.1%}"
    )
    print(
        f"{'queries/s, batch of 1000':28}{qps['raw_faiss_batch1000']:>12,}{qps['store_batch1000']:>12,}{s['store_overhead_batch']:>10.1%}"
    )
    print(f"\n{'filter':8}{'allowed':>10}{'recall@10':>11}{'min hits':>10}{'q/s':>8}  how")
    for name, f in s["filters"].items():
        print(
            f"{name:8}{f['allowed']:>10,}{f['recall@10']:>11.4f}{f['min_hits']:>10}{f['queries_per_s']:>8}  {f['how']}"
        )
    print(f"\n100k slice{'':18}{'build s':>9}{'q/s 1':>8}{'q/s 200':>9}{'q/s 5%':>8}{'recall':>8}")
    for engine, r in s["slice_100k"].items():
        print(
            f"{engine:28}{r['build_s']:>9}{r['queries_per_s_single']:>8}{r['queries_per_s_batch200']:>9}{r['queries_per_s_filtered_5%']:>8}{r['recall@10']:>8}"
        )
    for o in s.get("overhead_by_nprobe", []):
        print(
            f"nprobe {o['nprobe']:>4}: raw FAISS {o['raw_ms']} ms, store {o['store_ms']} ms a query ({o['overhead']:.1%})"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    nps = s["recall_by_nprobe"]
    a.plot([p["nprobe"] for p in nps], [p["recall@10"] for p in nps], marker="o")
    a.axhline(0.95, ls="--", c="grey")
    a.set(
        xlabel="nprobe",
        ylabel="recall@10",
        title=f"{s['n']:,} vectors, {s['factory']}",
        xscale="log" if nps else "linear",
    )
    names = list(s["filters"])
    b.bar(names, [s["filters"][n]["recall@10"] for n in names])
    b.set(ylim=(0.8, 1.0), ylabel="recall@10", title="under filters (share kept)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()
