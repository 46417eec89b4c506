"""Linear probes on KG features alone for FewRel relation labels, on the KG-covered instances.

Diagnostic for the knowledge expert (benchmarks/RESULTS.md): how much the leak-free union KG says
about a relation without any text. Features: head and tail TransE vectors (zeros and a flag where
the KG lacks one), optionally each entity's relation profile (log counts of its relations, by
direction). A multinomial logistic regression (L-BFGS; `--hidden N`: one ReLU layer of N units
first, to see whether a linear probe leaves anything out) fits the train split; the L2 weight (on
the first layer) is chosen on the covered dev instances; the covered test instances are scored
(accuracy, per-label F1).
Needs `python benchmarks/fewrel.py kg` first. Usage: python benchmarks/fewrel_probe.py [--hidden N]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewrel import CACHE, split_examples

from encoders.data import Example
from kg.embed.checkpoint import EntityVectors
from kg.io import load_saved


@dataclass
class Probe:
    """A fitted probe: label order, its L2 weight, and per split the gold label ids, the KG-covered
    mask and the predicted label probabilities (float[examples, labels])."""

    labels: list[str]
    l2: float
    gold: dict[str, np.ndarray]
    covered: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]


def classifier(inputs: int, labels: int, hidden: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The probe (linear, or one ReLU layer of `hidden` units first) and its L2-penalised weight."""
    if hidden <= 0:
        lin = torch.nn.Linear(inputs, labels)
        return lin, lin.weight
    first = torch.nn.Linear(inputs, hidden)
    return torch.nn.Sequential(first, torch.nn.ReLU(), torch.nn.Linear(hidden, labels)), first.weight


def fit_probe(use_profile: bool, data: dict[str, list[Example]] | None = None, hidden: int = 0) -> Probe:
    """Fit the probe on the train split (L2 chosen on covered dev accuracy)."""
    torch.set_num_threads(1)
    kg = load_saved(CACHE / "kg", verify=False)
    vec = EntityVectors.load(CACHE / "transe")
    qrow = {q: i for i, q in enumerate(kg.qids) if q}
    vrow = {q: i for i, q in enumerate(vec.qids) if q}
    emb = next(p for n, p in vec.model.named_parameters() if "ent" in n).detach().numpy()
    rels = kg.num_relations
    trip = np.concatenate(list(kg.triples.values()))
    profile = np.zeros((kg.num_entities, 2 * rels), dtype=np.float32)
    np.add.at(profile, (trip[:, 0], trip[:, 1]), 1)
    np.add.at(profile, (trip[:, 2], rels + trip[:, 1]), 1)
    profile = np.log1p(profile)
    data = data or split_examples()
    labels = sorted({ex.labels[0] for ex in data["train"]})
    index = {label: i for i, label in enumerate(labels)}

    def features(ex: Example) -> np.ndarray:
        out = []
        for span in ex.focus:
            r, k = vrow.get(span.qid), qrow.get(span.qid)
            parts = [emb[r] if r is not None else np.zeros(emb.shape[1], np.float32), [float(r is not None)]]
            if use_profile:
                parts.append(profile[k] if k is not None else np.zeros(2 * rels, np.float32))
            out.append(np.concatenate(parts))
        return np.concatenate(out)

    x = {p: np.stack([features(ex) for ex in data[p]]) for p in data}
    y = {p: np.array([index[ex.labels[0]] for ex in data[p]]) for p in data}
    cov = {p: np.array([any(s.qid in qrow for s in ex.focus) for ex in data[p]]) for p in data}
    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    xt = {p: torch.tensor((x[p] - mu) / sd, dtype=torch.float32) for p in x}
    target = torch.tensor(y["train"])
    best: tuple[float, float, torch.nn.Module] | None = None
    for l2 in (1e-3, 1e-2, 1e-1):
        torch.manual_seed(0)
        lin, weight = classifier(xt["train"].shape[1], len(labels), hidden)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=300)

        def closure(
            lin: torch.nn.Module = lin,
            weight: torch.Tensor = weight,
            opt: torch.optim.LBFGS = opt,
            l2: float = l2,
            inputs: torch.Tensor = xt["train"],
            target: torch.Tensor = target,
        ) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(inputs), target) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)  # type: ignore[arg-type]
        dev = float((lin(xt["dev"]).argmax(1).numpy() == y["dev"])[cov["dev"]].mean())
        if best is None or dev > best[0]:
            best = (dev, l2, lin)
    assert best is not None
    with torch.no_grad():
        probs = {p: best[2](xt[p]).softmax(-1).numpy() for p in xt}
    return Probe(labels, best[1], y, cov, probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--hidden", type=int, default=0, help="units of a ReLU layer before the output (0: linear)"
    )
    args = ap.parse_args()
    for use_profile in (False, True):
        probe = fit_probe(use_profile, hidden=args.hidden)
        pred, gold, m = probe.probs["test"].argmax(1), probe.gold["test"], probe.covered["test"]
        per = {}
        for i, label in enumerate(probe.labels):
            g, p = (gold == i) & m, (pred == i) & m
            per[label] = round(float(2 * (g & p).sum() / max(1, g.sum() + p.sum())), 3)
        name = ("TransE + relation profile" if use_profile else "TransE") + (
            f", {args.hidden} hidden units" if args.hidden > 0 else ""
        )
        print(f"{name}: L2 {probe.l2}, covered test accuracy {float((pred == gold)[m].mean()):.4f}")
        print("  per-label F1:", " ".join(f"{k} {v}" for k, v in per.items()))


if __name__ == "__main__":
    main()
