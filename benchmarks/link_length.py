"""Linking cost against text length: one text of 1k, 10k, 100k and 1M characters (Wikipedia leads
joined by blank lines) beside many short documents, with kgpipe's pieces and, as the reference,
the same linker reading each text whole (what `kgpipe link` did before it cut long texts).

Writes benchmarks/results/link_length.json and link_length.png and prints a table.
Usage: python benchmarks/link_length.py [--corpus PATH] [--whole-up-to 300000] [--short 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"
LENGTHS = (1_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)


def joined(texts: list[str], n: int) -> str:
    """Leads joined by blank lines until the text holds at least `n` characters, cut to `n`."""
    out, size, i = [], 0, 0
    while size < n:
        out.append(texts[i % len(texts)])
        size += len(out[-1]) + 2
        i += 1
    return "\n\n".join(out)[:n]


def rate(link: object, docs: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    results = link(docs)  # type: ignore[operator]
    seconds = time.perf_counter() - start
    chars = sum(map(len, docs))
    return {
        "chars": chars,
        "seconds": round(seconds, 3),
        "chars_per_s": round(chars / seconds),
        "mentions": sum(map(len, results)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--whole-up-to", type=int, default=300_000, help="longest text read whole")
    parser.add_argument("--short", type=int, default=1000, help="short documents in the many-docs run")
    args = parser.parse_args()

    import torch

    import kg.link.linker as linker_module
    from pipeline import load

    texts = [json.loads(line)["text"] for line in args.corpus.open(encoding="utf-8")]
    linker = load().linker
    linker.link_many(texts[:20])  # warm up: caches, lazy tables, the text model's first batch

    def pieces(docs: list[str]) -> list[list[object]]:
        return linker.link_many(docs)  # type: ignore[return-value]

    def whole(docs: list[str]) -> list[list[object]]:
        old = linker_module.PIECE_CHARS
        linker_module.PIECE_CHARS = 10**12  # the reference: no pieces, one spaCy doc per text
        linker.nlp.max_length = 10**8
        try:
            return linker.link_many(docs)  # type: ignore[return-value]
        finally:
            linker_module.PIECE_CHARS = old

    short = texts[1000 : 1000 + args.short]  # leads the long texts below do not start with
    rows = {"short_documents": {"pieces": rate(pieces, short), "documents": len(short)}}
    for n in LENGTHS:
        doc = joined(texts, n)
        row = {"pieces": rate(pieces, [doc])}
        if n <= args.whole_up_to:
            row["whole"] = rate(whole, [doc])
        rows[str(n)] = row
        print(n, row, flush=True)

    base = rows["short_documents"]["pieces"]["chars_per_s"]
    result = {
        "what": "chars/s of `Linker.link_many` on one text of each length vs many short Wikipedia leads",
        "corpus": str(args.corpus),
        "piece_chars": linker_module.PIECE_CHARS,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "rows": rows,
        "ratio_1m_to_short": round(rows["1000000"]["pieces"]["chars_per_s"] / base, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "link_length.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "link_length.png")
    print(f"\n{'text':>16} {'pieces chars/s':>15} {'whole chars/s':>14} {'mentions':>9}")
    for key, row in rows.items():
        w = row.get("whole", {}).get("chars_per_s", "-")
        print(f"{key:>16} {row['pieces']['chars_per_s']:>15,} {w:>14} {row['pieces']['mentions']:>9,}")
    print(f"1M-character text at {result['ratio_1m_to_short']:.2f}x the chars/s of short documents")


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]  # type: ignore[index]
    lengths = [n for n in LENGTHS if str(n) in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(lengths, [rows[str(n)]["pieces"]["chars_per_s"] for n in lengths], "o-", label="kgpipe (pieces)")
    whole = [n for n in lengths if "whole" in rows[str(n)]]
    ax.plot(
        whole, [rows[str(n)]["whole"]["chars_per_s"] for n in whole], "s--", label="text read whole (before)"
    )
    ax.axhline(
        rows["short_documents"]["pieces"]["chars_per_s"], color="grey", ls=":", label="many short documents"
    )
    ax.set_xscale("log")
    ax.set_xlabel("characters in one text")
    ax.set_ylabel("characters linked per second")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Linking cost against text length (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
