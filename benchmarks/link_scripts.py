"""Linking cost on text with no spaces (emoji, CJK, one long URL-like word) against its length:
kgpipe, which gives spaCy no word longer than `WORD_CHARS` and no piece of more than about
`PIECE_TOKENS` words and symbols, beside the reference, spaCy reading the same text as written in
pieces of 20,000 characters (what the linker did before: 100,000 emoji took 204 s there).

Writes benchmarks/results/link_scripts.json and link_scripts.png and prints a table.
Usage: python benchmarks/link_scripts.py [--reference-up-to 16000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
LENGTHS = (1_000, 4_000, 16_000, 64_000, 100_000)
SCRIPTS = {
    "emoji": "\U0001f600",
    "cjk": "東京都は日本の首都である。",
    "url-like word": "https://example.org/wiki/Paris_France?q=",
}


def text_of(kind: str, n: int) -> str:
    unit = SCRIPTS[kind]
    return (unit * (n // len(unit) + 1))[:n]


def timed(link: object, text: str) -> float:
    start = time.perf_counter()
    link([text])  # type: ignore[operator]
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference-up-to", type=int, default=16_000, help="longest text the reference reads"
    )
    args = parser.parse_args()

    import torch

    import kg.link.linker as linker_module
    from pipeline import load

    linker = load().linker
    linker.link_many(["Paris is the capital of France."])  # warm up

    def kgpipe(docs: list[str]) -> object:
        return linker.link_many(docs)

    def reference(docs: list[str]) -> object:
        old = linker_module.short_words, linker_module.PIECE_TOKENS
        linker_module.short_words = lambda text: text  # spaCy reads each word as written,
        linker_module.PIECE_TOKENS = 10**12  # in pieces of 20,000 characters whatever they hold
        try:
            return linker.link_many(docs)
        finally:
            linker_module.short_words, linker_module.PIECE_TOKENS = old

    rows: dict[str, dict[str, dict[str, float]]] = {}
    for kind in SCRIPTS:
        rows[kind] = {}
        for n in LENGTHS:
            text = text_of(kind, n)
            row = {"kgpipe_s": timed(kgpipe, text)}
            if n <= args.reference_up_to:
                row["reference_s"] = timed(reference, text)
            rows[kind][str(n)] = row
            print(kind, n, row, flush=True)
    result = {
        "what": "seconds to link one text with no spaces, by length; reference: spaCy reads each word whole",
        "word_chars": linker_module.WORD_CHARS,
        "piece_tokens": linker_module.PIECE_TOKENS,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "link_scripts.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, RESULTS / "link_scripts.png")
    print(f"\n{'text':>14} {'characters':>11} {'kgpipe s':>9} {'reference s':>12}")
    for kind, by_length in rows.items():
        for n, row in by_length.items():
            ref = row.get("reference_s", "-")
            print(f"{kind:>14} {int(n):>11,} {row['kgpipe_s']:>9} {ref:>12}")


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]  # type: ignore[index]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, by_length in rows.items():
        ns = [int(n) for n in by_length]
        ax.plot(ns, [by_length[str(n)]["kgpipe_s"] for n in ns], "o-", label=f"{kind}: kgpipe")
        ref = [n for n in ns if "reference_s" in by_length[str(n)]]
        ax.plot(ref, [by_length[str(n)]["reference_s"] for n in ref], "s--", label=f"{kind}: words whole")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("characters in one text (no spaces)")
    ax.set_ylabel("seconds to link")
    ax.legend(fontsize=8)
    ax.set_title("Linking text without spaces (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
