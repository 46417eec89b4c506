"""`pipeline.load()` cold start on the shipped defaults, and what a first and a second `link` call
on the same bundle cost. Each run is a fresh process (nothing cached in memory; files in the page
cache, as on any second start). Writes benchmarks/results/bundle_load.json and prints a table.

Usage: python benchmarks/bundle_load.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "bundle_load.json"

CHILD = r"""
import json, time
t0 = time.perf_counter()
from pipeline import load
imported = time.perf_counter()
bundle = load()
loaded = time.perf_counter()
text = ["Barack Obama visited Paris and met Angela Merkel in Berlin."]
bundle.link(text)
first = time.perf_counter()
bundle.link(text)
second = time.perf_counter()
bundle.encode(text)
encoded = time.perf_counter()
print(json.dumps({"import_s": imported - t0, "load_s": loaded - imported, "first_link_s": first - loaded,
                  "second_link_s": second - first, "encode_s": encoded - second}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    runs = []
    for i in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"run {i + 1}: {runs[-1]}", flush=True)
    median = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    result = {
        "what": "fresh process: import, pipeline.load(), two link calls, one encode",
        "runs": runs,
        "median": median,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'step':16} {'median s':>9}")
    for k, v in median.items():
        print(f"{k:16} {v:9.3f}")


if __name__ == "__main__":
    main()
