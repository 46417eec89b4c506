"""What one client's request does to another's, on a real `kgpipe serve` over the default bundle
(127.0.0.1, 2 CPU cores shared with the load generator):

1. Isolation: rounds of 5 plain `/link` requests sent at once beside one with `spans`; each plain
   answer is compared with the same request's answer alone (the defect of [11/16]: 68 of 100 came
   back empty). Also every route's requests in random mixes against their answers alone.
2. Stall: `/health` and `/classify` latency while one 400 KB `/link` (100,000 emoji,
   inside the limits) runs; and how long that request takes (it took 204 s, with `/health`
   silent for over a minute).

Writes benchmarks/results/api_isolation.json and prints a table.
Usage: python benchmarks/api_isolation.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api import ROOT, Server

RESULTS = Path(__file__).parent / "results"
PLAIN = [
    "Tokyo is the capital of Japan.",
    "Rome is in Italy.",
    "Barack Obama visited Paris.",
    "Berlin is a city in Germany.",
    "The Beatles came from Liverpool.",
]
MIXED = [
    ("/link", {"text": "Rome is in Italy.", "spans": [[0, 4]]}),
    ("/link", {"items": [{"id": "a", "text": PLAIN[2]}, {"id": "b", "text": "Berlin", "spans": [[0, 6]]}]}),
    ("/classify", {"text": PLAIN[4]}),
    ("/classify", {"texts": [PLAIN[0], PLAIN[2]]}),
    ("/extract", {"text": PLAIN[2]}),
    *[("/link", {"text": t}) for t in PLAIN],
]


def post(url: str, route: str, body: dict) -> dict:
    with httpx.Client(timeout=300) as c:
        r = c.post(url + route, json=body)
    r.raise_for_status()
    return r.json()


def key(answer: object) -> object:
    """An answer with its scores to 3 decimals (a batch pads texts to one length: the last bits move)."""
    if isinstance(answer, float):
        return round(answer, 3)
    if isinstance(answer, dict):
        return {k: key(v) for k, v in answer.items()}
    if isinstance(answer, list):
        return [key(v) for v in answer]
    return answer


def isolation(url: str, rounds: int) -> dict[str, object]:
    alone = {t: key(post(url, "/link", {"text": t})) for t in PLAIN}
    differ = 0
    with ThreadPoolExecutor(12) as pool:
        for _ in range(rounds):
            futures = {pool.submit(post, url, "/link", {"text": t}): t for t in PLAIN}
            pool.submit(post, url, "/link", {"text": "Rome is in Italy.", "spans": [[0, 4]]})
            differ += sum(key(f.result()) != alone[t] for f, t in futures.items())
    mixed_alone = [key(post(url, r, b)) for r, b in MIXED]
    rng = random.Random(0)
    mixed_differ = mixed_sent = 0
    with ThreadPoolExecutor(16) as pool:
        for _ in range(rounds):
            picks = [rng.randrange(len(MIXED)) for _ in range(16)]
            answers = list(pool.map(lambda i: key(post(url, *MIXED[i])), picks))
            mixed_sent += len(picks)
            mixed_differ += sum(a != mixed_alone[i] for a, i in zip(answers, picks, strict=True))
    return {
        "plain_beside_spans": {"sent": rounds * len(PLAIN), "answered_differently": differ},
        "random_mixes": {"sent": mixed_sent, "answered_differently": mixed_differ},
    }


def stall(url: str) -> dict[str, object]:
    """`/health` every 0.1 s, and `/classify` in a loop of its own, while one 400 KB `/link` runs."""
    took: list[float] = []
    health: list[float] = []
    classify: list[float] = []

    def heavy() -> None:
        start = time.perf_counter()
        post(url, "/link", {"text": "\U0001f600" * 100_000})
        took.append(time.perf_counter() - start)

    def sample(calls: list[float], call: object, pause: float) -> None:
        while thread.is_alive():
            start = time.perf_counter()
            call()  # type: ignore[operator]
            calls.append(time.perf_counter() - start)
            time.sleep(pause)

    thread = threading.Thread(target=heavy)
    thread.start()
    time.sleep(0.5)
    samplers = [
        threading.Thread(target=sample, args=(health, lambda: httpx.get(url + "/health", timeout=60), 0.1)),
        threading.Thread(
            target=sample, args=(classify, lambda: post(url, "/classify", {"text": PLAIN[0]}), 0.2)
        ),
    ]
    for t in samplers:
        t.start()
    for t in (thread, *samplers):
        t.join()

    def summary(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {
            "n": len(xs),
            "median": round(xs[len(xs) // 2], 3),
            "p95": round(xs[int(0.95 * (len(xs) - 1))], 3),
            "max": round(xs[-1], 3),
        }

    return {"link_400kb_s": round(took[0], 2), "health_s": summary(health), "classify_s": summary(classify)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    server = Server(ROOT / "data")
    try:
        result = {"isolation": isolation(server.url, args.rounds), "stall": stall(server.url)}
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api_isolation.json").write_text(json.dumps(result, indent=2) + "\n")
    iso, st = result["isolation"], result["stall"]
    print(f"{'what':<58} {'figure':>22}")
    for name, row in iso.items():  # type: ignore[union-attr]
        print(
            f"{name + ': answered differently from alone':<58} {row['answered_differently']:>10} of {row['sent']:<9}"
        )
    print(f"{'/link of 100,000 emoji (400 KB)':<58} {st['link_400kb_s']:>20} s")  # type: ignore[index]
    for name in ("health_s", "classify_s"):
        x = st[name]  # type: ignore[index]
        what = f"/{name[:-2]} meanwhile ({x['n']} calls): median / p95 / max"
        print(f"{what:<58} {x['median']} / {x['p95']} / {x['max']} s")


if __name__ == "__main__":
    main()
