"""The REST API under load, on a real uvicorn server (`kgpipe serve`) on 127.0.0.1.

    python benchmarks/api.py [--requests 10000] [--concurrency 32] [--bundle DIR]

1. Mixed load: `--requests` requests (/link, /classify, /search in turn) from `--concurrency`
   concurrent connections: status codes, p50/p95/p99 latency per route, requests/s, the server's
   RSS before and after.
2. Request batching: 32 concurrent /classify clients against servers started with --max-batch 32
   and --max-batch 1 (one text per model call): requests/s of each.
3. One client, /link on a 1,000-character text: p50 and p95 latency.
4. schemathesis over /openapi.json: server errors found (one worker: with two, hypothesis itself
   failed here, "AST constructor recursion depth mismatch", in its own threads).

Every route is warmed with 600 requests at full concurrency before the RSS "before"; a second run
of half the requests after the first shows whether memory keeps growing.

Without --bundle it builds one: the default bundle plus a store of 200 corpus documents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wiki_vital_summaries.jsonl"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, bundle: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(BIN / "kgpipe"), "serve", "--bundle", str(bundle), "--port", str(self.port), *extra],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t = time.time()
        while time.time() - t < 300:
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.ready_s = round(time.time() - t, 1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def build_bundle(tmp: Path, docs: int) -> Path:
    from pipeline.bundle import build, load
    from pipeline.search import index_extraction

    lines = CORPUS.read_text(encoding="utf-8").splitlines()[:docs]
    (tmp / "in.jsonl").write_text("\n".join(lines) + "\n")
    subprocess.run(
        [str(BIN / "kgpipe"), "extract", str(tmp / "in.jsonl"), "--out", str(tmp / "x")], check=True, env=ENV
    )
    index_extraction(tmp / "x", tmp / "store", load(eager=False))
    build(tmp / "bundle", store=tmp / "store")
    return tmp / "bundle"


async def load_run(url: str, bodies: list[tuple[str, dict]], concurrency: int) -> dict:
    latencies: dict[str, list[float]] = {}
    codes: Counter[int] = Counter()
    queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while True:
                try:
                    route, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                r = await client.post(route, json=body)
                latencies.setdefault(route, []).append(time.perf_counter() - t)
                codes[r.status_code] += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        secs = time.perf_counter() - t
    per_route = {
        route: {q: round(float(np.percentile(v, int(q[1:]))) * 1000, 1) for q in ("p50", "p95", "p99")}
        for route, v in latencies.items()
    }
    every = [x for v in latencies.values() for x in v]
    return {
        "requests": len(bodies),
        "concurrency": concurrency,
        "seconds": round(secs, 1),
        "requests_per_s": round(len(bodies) / secs, 1),
        "status": {str(k): v for k, v in sorted(codes.items())},
        "server_errors": sum(v for k, v in codes.items() if k >= 500),
        "latency_ms": {
            **per_route,
            "all": {
                q: round(float(np.percentile(every, int(q[1:]))) * 1000, 1) for q in ("p50", "p95", "p99")
            },
        },
    }


def texts(n: int) -> list[str]:
    lines = [json.loads(x)["text"] for x in CORPUS.read_text(encoding="utf-8").splitlines()[1000 : 1000 + n]]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batching-requests", type=int, default=1000)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "api.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kgpipe-api-"))
    res: dict = {"machine": f"{os.cpu_count()} cores, CPU only"}
    try:
        bundle = args.bundle or build_bundle(tmp, 200)
        sample = texts(200)
        # 3. one client, /link on a 1,000-character text
        server = Server(bundle)
        res["ready_s"] = server.ready_s
        doc = next(t for t in texts(2000) if len(t) >= 1000)[:1000]
        one = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(5):
                c.post("/link", json={"text": doc})
            for _ in range(100):
                t = time.perf_counter()
                assert c.post("/link", json={"text": doc}).status_code == 200
                one.append(time.perf_counter() - t)
        res["link_1000_chars_one_client_ms"] = {
            q: round(float(np.percentile(one, int(q[1:]))) * 1000, 1) for q in ("p50", "p95")
        }
        print("link, 1,000 chars, one client:", res["link_1000_chars_one_client_ms"])
        # 1. mixed load
        bodies = []
        for i in range(args.requests):
            t = sample[i % len(sample)]
            route = ("/link", "/classify", "/search")[i % 3]
            bodies.append((route, {"query": t[:200], "k": 10} if route == "/search" else {"text": t}))
        # every route warmed at full concurrency first (first-use allocations are not growth)
        asyncio.run(load_run(server.url, bodies[:600], args.concurrency))
        before = rss_mb(server.proc.pid)
        res["mixed"] = asyncio.run(load_run(server.url, bodies, args.concurrency))
        after = rss_mb(server.proc.pid)
        # a second run of half as many: does memory keep growing?
        res["mixed_second_run"] = asyncio.run(
            load_run(server.url, bodies[: args.requests // 2], args.concurrency)
        )
        res["mixed_second_run"]["rss_mb"] = {"before": round(after), "after": round(rss_mb(server.proc.pid))}
        res["mixed"]["rss_mb"] = {
            "before": round(before),
            "after": round(after),
            "growth": round(after / before - 1, 4),
        }
        print("mixed:", json.dumps(res["mixed"]))
        # 4. schemathesis
        res["schemathesis"] = schemathesis(server.url)
        print("schemathesis:", res["schemathesis"])
        server.stop()
        # 2. batching
        batching = {}
        for max_batch in (32, 1):
            s = Server(bundle, "--max-batch", str(max_batch))
            cls = [("/classify", {"text": sample[i % len(sample)]}) for i in range(args.batching_requests)]
            asyncio.run(load_run(s.url, cls[:64], 32))  # warm-up
            batching[f"max_batch_{max_batch}"] = asyncio.run(load_run(s.url, cls, 32))
            s.stop()
        res["classify_batching"] = batching
        res["batching_speedup"] = round(
            batching["max_batch_32"]["requests_per_s"] / batching["max_batch_1"]["requests_per_s"], 2
        )
        print("batching:", json.dumps(batching), "speed-up", res["batching_speedup"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    m = res["mixed"]
    print(
        f"\n{m['requests']:,} mixed requests, {m['concurrency']} concurrent: {m['requests_per_s']} req/s, "
        f"{m['server_errors']} 5xx, status {m['status']}, RSS {m['rss_mb']}"
    )
    print(f"{'route':12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for route, q in m["latency_ms"].items():
        print(f"{route:12}{q['p50']:>9}{q['p95']:>9}{q['p99']:>9}")
    b = res["classify_batching"]
    print(
        f"/classify, 32 clients: {b['max_batch_32']['requests_per_s']} req/s batched vs {b['max_batch_1']['requests_per_s']} one at a time ({res['batching_speedup']}x)"
    )


def schemathesis(url: str) -> dict:
    exe = BIN / "schemathesis"
    if not exe.exists():
        return {"ran": False, "why": "schemathesis is not installed (pip install schemathesis)"}
    t = time.time()
    p = subprocess.run(
        [
            str(exe),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=1200,
    )
    tail = p.stdout[-1500:]
    return {"ran": True, "exit": p.returncode, "seconds": round(time.time() - t), "summary": tail}


if __name__ == "__main__":
    main()
