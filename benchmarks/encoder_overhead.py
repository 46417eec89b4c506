"""Forward-time overhead of the knowledge-fused encoders over the plain text model, in one run.

The same 32 texts of 128 word pieces, each with 16 linked entities (bundled FB15k-237 KG and its
TransE vectors), through the same MiniLM: knowledge none, ernie and kbert, eval mode, no grad.
Timings alternate between modes (median of --repeats rounds) so drift hits all alike.
On a GPU (--device cuda) each timing waits for the GPU to finish; --bf16 runs the forward passes
under bfloat16 autocast, as a GPU user would serve them.
Usage: python benchmarks/encoder_overhead.py [--repeats 15] [--threads 2] [--device cuda] [--bf16] [--out F]
Writes benchmarks/results/encoder_overhead.json (or --out, a file name there).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoders.data import EntitySpan, Example  # noqa: E402
from encoders.knowledge import knowledge_for  # noqa: E402
from encoders.model import EncoderConfig, KnowledgeEncoder  # noqa: E402
from kg.device import device_name, resolve_device  # noqa: E402
from kg.io import bundled_kg_path, load_saved  # noqa: E402
from kg.storage import write_json  # noqa: E402


def make_examples(n: int, entities: int, seed: int = 0) -> list[Example]:
    """Texts made of entity labels from the KG joined by filler words, with their spans and QIDs."""
    kg = load_saved(bundled_kg_path())
    g = torch.Generator().manual_seed(seed)
    named = [i for i, (q, label) in enumerate(zip(kg.qids, kg.labels, strict=True)) if q and label]
    examples = []
    for _ in range(n):
        picks = torch.randint(len(named), (entities,), generator=g).tolist()
        text, spans = "", []
        for p in picks:
            e = named[p]
            start = len(text)
            text += kg.labels[e]
            spans.append(EntitySpan(start, len(text), kg.qids[e]))
            text += " was mentioned in the report about the region and its history , "
        examples.append(Example(text, ["x"], (), spans))
    return examples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--entities", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--bf16", action="store_true", help="forward under bfloat16 autocast")
    ap.add_argument("--out", default="encoder_overhead.json", help="results file name in benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    examples = make_examples(args.batch, args.entities)
    models, batches = {}, {}
    for mode in ("none", "ernie", "kbert"):
        torch.manual_seed(0)
        cfg = EncoderConfig("sequence", mode, ["x"], max_length=args.length, max_entities=args.entities)
        models[mode] = KnowledgeEncoder.create(cfg, knowledge_for(mode)).eval()
        batches[mode] = models[mode].encode(examples, with_targets=False)
    models["ernie"].base.load_state_dict(models["none"].base.state_dict())
    for m in models:
        models[m].to(device)
        batches[m] = batches[m].to(device)
    times: dict[str, list[float]] = {m: [] for m in models}

    def forward(m: str) -> None:
        models[m](batches[m])
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU calls return at once: time the work, not the launch

    with torch.no_grad(), precision:
        for _ in range(3 if device.type == "cuda" else 1):  # warm-up (kernels, allocator)
            for m in models:
                forward(m)
        for _ in range(args.repeats):
            for m in models:
                start = time.perf_counter()
                forward(m)
                times[m].append(time.perf_counter() - start)
    base = statistics.median(times["none"])
    result = {
        "batch": args.batch,
        "max_length": args.length,
        "entities_per_text": args.entities,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "device": device_name(device),
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "torch": torch.__version__,
        "modes": {},
    }
    print("| mode | pieces per text | linked entities | median forward (ms) | × plain |")
    print("|---|---|---|---|---|")
    for m in models:
        b = batches[m]
        med = statistics.median(times[m])
        linked = int(b.stream.mask.sum()) if b.stream is not None else 0
        result["modes"][m] = {
            "length": int(b.input_ids.shape[1]),
            "entities_fused": linked,
            "median_ms": round(1000 * med, 1),
            "ratio": round(med / base, 3),
        }
        print(f"| {m} | {b.input_ids.shape[1]} | {linked} | {1000 * med:.1f} | {med / base:.3f} |")
    write_json(ROOT / "benchmarks/results" / args.out, result)


if __name__ == "__main__":
    main()
