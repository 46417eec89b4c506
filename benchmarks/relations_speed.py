"""What reading relations costs in extraction: `extract` with the relation model against linking
alone, on the same corpus documents, one torch thread (as a dask worker runs), and the peak memory
of the process doing a worker's work.

    python benchmarks/relations_speed.py [--docs 1000] [--threads 1]

Both paths run in this one process over the first N documents of the 10,033-document corpus
(../shared/data/corpus), after one warm-up batch each: (a) `bundle.link_with_vectors` (linking and
the document vectors: what extraction did before relations), (b) `pipeline.extract.extract` (the
same, plus NER and sentences for relation extraction and the relation model). Peak memory is the
process's maximum resident set size (ru_maxrss) after both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"
OUT = ROOT / "benchmarks" / "results"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=50, help="documents per call (a partition's share)")
    args = p.parse_args(argv)
    import torch

    from pipeline import load
    from pipeline.extract import extract

    torch.set_num_threads(args.threads)
    with CORPUS.open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in itertools.islice(f, args.docs)]
    texts = [d["text"] for d in docs]
    bundle = load()
    _ = bundle.relations, bundle.entity_finder.nlp, bundle.facts
    batches = [range(lo, min(lo + args.batch, len(docs))) for lo in range(0, len(docs), args.batch)]
    bundle.link_with_vectors(texts[: args.batch])  # warm-up
    extract(bundle, docs[: args.batch])
    start = time.perf_counter()
    for b in batches:
        bundle.link_with_vectors([texts[i] for i in b])
    link_s = time.perf_counter() - start
    start = time.perf_counter()
    facts = 0
    for b in batches:
        facts += sum(len(x.facts) for x in extract(bundle, [docs[i] for i in b]))
    extract_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    chars = sum(map(len, texts))
    result = {
        "documents": len(docs),
        "characters": chars,
        "threads": args.threads,
        "link_docs_per_s": round(len(docs) / link_s, 2),
        "extract_with_relations_docs_per_s": round(len(docs) / extract_s, 2),
        "speed_ratio": round(link_s / extract_s, 3),
        "text_facts": facts,
        "peak_rss_mb": round(peak_mb),
        "relation_model": bundle.parts["relations"].source,
    }
    print(f"{'path':<34}{'docs/s':>10}")
    print(f"{'linking alone':<34}{result['link_docs_per_s']:>10.2f}")
    print(f"{'extract with relations':<34}{result['extract_with_relations_docs_per_s']:>10.2f}")
    print(
        f"ratio {result['speed_ratio']:.3f} (target >= 0.5); {facts} text facts; peak RSS {result['peak_rss_mb']} MB (target <= 3072)"
    )
    (OUT / "relations_speed.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
