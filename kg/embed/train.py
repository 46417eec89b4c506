"""TransE training: chunked shared negatives, self-adversarial or margin loss, early stopping.

Runs on CPU threads or CUDA; under `torchrun` each process trains a shard with DDP (gloo / NCCL).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from kg.device import resolve_device
from kg.embed.config import TrainConfig
from kg.embed.evaluate import FilterIndex, metrics_from_ranks, rank_triples
from kg.embed.model import TransE, TransEConfig, pairwise_distance
from kg.graph import KnowledgeGraph


@dataclass
class History:
    """Per-epoch loss and per-validation MRR, for metrics.json and curve.png."""

    loss: list[float] = field(default_factory=list)
    valid_epochs: list[int] = field(default_factory=list)
    valid_mrr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    epochs_run: int = 0
    best_epoch: int = 0
    stopped: str = "epochs"


def head_probabilities(triples: np.ndarray, num_relations: int) -> np.ndarray:
    """float[num_relations]: Bernoulli corruption (Wang et al. 2014), P(corrupt head) = tph / (tph + hpt)."""
    probs = np.full(num_relations, 0.5)
    for r in range(num_relations):
        rows = triples[triples[:, 1] == r]
        if len(rows) == 0:
            continue
        tph = len(rows) / len(np.unique(rows[:, 0]))
        hpt = len(rows) / len(np.unique(rows[:, 2]))
        probs[r] = tph / (tph + hpt)
    return probs


def negative_loss(cfg: TrainConfig, pos_d: torch.Tensor, neg_d: torch.Tensor) -> torch.Tensor:
    """Scalar loss from positive distances float[B] and negative distances float[B, K]."""
    if cfg.loss == "margin_ranking":
        return F.relu(cfg.margin + pos_d.unsqueeze(1) - neg_d).mean()
    pos_score, neg_score = cfg.margin - pos_d, cfg.margin - neg_d
    weights = torch.softmax(cfg.adversarial_temperature * neg_score.detach(), dim=1)
    pos_loss = -F.logsigmoid(pos_score).mean()
    neg_loss = -(weights * F.logsigmoid(-neg_score)).sum(1).mean()
    return (pos_loss + neg_loss) / 2


class Trainer:
    """Trains the rows of `model` that `trainable_rows` allows (all of them by default)."""

    def __init__(self, kg: KnowledgeGraph, cfg: TrainConfig, model: TransE | None = None) -> None:
        self.kg, self.cfg = kg, cfg
        self.device = resolve_device(cfg.device)
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        torch.manual_seed(cfg.seed)
        self.model = model or TransE(
            TransEConfig(kg.num_entities, kg.num_relations, cfg.dim, cfg.p_norm, cfg.margin, cfg.reciprocal)
        )
        self.model.to(self.device)
        self.train_triples = kg.triples["train"]
        probs = head_probabilities(self.train_triples, kg.num_relations)
        self.head_prob = torch.from_numpy(probs).float().to(self.device)
        self.filters = FilterIndex.build(kg.all_triples(), kg.num_relations)
        self.history = History()

    # ---- one step ----------------------------------------------------------------------------
    def loss(self, module: torch.nn.Module, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Loss of a batch long[B, 3]: each chunk of positives shares one block of negative entities."""
        cfg, model = self.cfg, self.model
        h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
        p_head = (
            self.head_prob[r] if cfg.sampler == "bernoulli" else torch.full_like(r, 0.5, dtype=torch.float)
        )
        corrupt_head = torch.rand(len(batch), generator=gen, device=batch.device) < p_head
        pos_d, q = module(h, r, t, corrupt_head)
        chunks = math.ceil(len(batch) / cfg.chunk_size)
        pad = chunks * cfg.chunk_size - len(batch)
        q = F.pad(q, (0, 0, 0, pad)).view(chunks, cfg.chunk_size, -1)
        neg_ids = torch.randint(
            0, model.config.num_entities, (chunks, cfg.negatives), generator=gen, device=batch.device
        )
        neg_d = pairwise_distance(q, model.entity(neg_ids), cfg.p_norm).view(chunks * cfg.chunk_size, -1)[
            : len(batch)
        ]
        loss = negative_loss(cfg, pos_d, neg_d)
        if cfg.regularization:
            loss = loss + cfg.regularization * (q.pow(2).mean() + model.entity(neg_ids).pow(2).mean())
        return loss

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, on_epoch: Callable[[int, float], None] | None = None) -> History:
        cfg, model = self.cfg, self.model
        module: torch.nn.Module = _Positives(model)
        if self.world > 1:
            module = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        cuda = self.device.type == "cuda"
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True if cuda else None)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1000 * self.rank)
        data = torch.from_numpy(self.train_triples.astype(np.int64))
        use_amp = cfg.mixed_precision and self.device.type == "cuda"
        best_mrr, best_state, bad_evals = -1.0, copy.deepcopy(model.state_dict()), 0
        start = time.perf_counter()
        bar = tqdm(
            range(1, cfg.epochs + 1),
            desc="TransE",
            unit="epoch",
            disable=self.rank != 0 or None,
            dynamic_ncols=True,
        )
        for epoch in bar:
            perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            per_rank = len(perm) // self.world
            shard = data[perm[self.rank * per_rank : (self.rank + 1) * per_rank]].to(self.device)
            total, steps = torch.zeros((), device=self.device), 0
            for i in range(0, len(shard), cfg.batch_size):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    loss = self.loss(module, shard[i : i + cfg.batch_size], gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, steps = total + loss.detach(), steps + 1  # no per-step host sync
            self.history.loss.append(total.item() / max(steps, 1))
            self.history.epochs_run = epoch
            postfix = {"loss": f"{self.history.loss[-1]:.4f}"}
            out_of_time = cfg.max_minutes > 0 and time.perf_counter() - start > cfg.max_minutes * 60
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time:
                mrr = self._validate() if len(self.kg.triples["valid"]) else -self.history.loss[-1]
                self.history.valid_epochs.append(epoch)
                self.history.valid_mrr.append(mrr)
                postfix["valid_mrr"] = f"{mrr:.4f}"
                if mrr > best_mrr:
                    best_mrr, best_state, bad_evals, self.history.best_epoch = (
                        mrr,
                        copy.deepcopy(model.state_dict()),
                        0,
                        epoch,
                    )
                else:
                    bad_evals += 1
                    for group in optimizer.param_groups:  # a plateau: smaller steps before giving up
                        group["lr"] *= cfg.lr_decay
            bar.set_postfix(postfix)
            if on_epoch:
                on_epoch(epoch, self.history.loss[-1])
            stop = "patience" if bad_evals >= cfg.patience else "time" if out_of_time else ""
            if self._agree(bool(stop)):
                self.history.stopped = stop or "patience"
                break
        bar.close()
        model.load_state_dict(best_state)
        self.history.seconds = time.perf_counter() - start
        return self.history

    def _agree(self, stop: bool) -> bool:
        """Rank 0's decision, shared with every rank so all stop at the same epoch."""
        if self.world == 1:
            return stop
        flag = torch.tensor([int(stop)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _validate(self) -> float:
        valid = self.kg.triples["valid"]
        if len(valid) > self.cfg.valid_sample:
            valid = valid[
                np.random.default_rng(self.cfg.seed).choice(len(valid), self.cfg.valid_sample, replace=False)
            ]
        return self.evaluate(valid)["mrr"]

    def evaluate(self, triples: np.ndarray) -> dict[str, float]:
        self.model.eval()
        ranks = rank_triples(self.model.score_all, triples, self.filters, self.kg.num_entities, self.device)
        self.model.train()
        return metrics_from_ranks(ranks)


class _Positives(torch.nn.Module):
    """The part of a step DDP must see: positive distances and the corrupted-side queries."""

    def __init__(self, model: TransE) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, corrupt_head: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.model.query(torch.where(corrupt_head, t, h), r, corrupt_head)
        target = self.model.entity(torch.where(corrupt_head, h, t))
        return (q - target).norm(p=self.model.config.p_norm, dim=-1), q


def init_distributed() -> bool:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True
