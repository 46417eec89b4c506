"""Document-level relation extraction on the knowledge-fused encoder, ATLOP-style (Zhou et al. 2021).

One encoder pass per document (windows with overlap where it is longer than the model takes), a
"*" marker around every mention, each entity pooled over all its mentions (logsumexp of the
markers), the context of a pair pooled from the attention the two entities share, a grouped
bilinear classifier and an adaptive threshold class (class 0): a pair gets every relation that
scores above its own threshold, so zero or more. Knowledge enters the way the mode says: `ernie`
fuses each linked entity's TransE vector at its mentions and gives the classifier the pair's
vectors; `kbert` grafts each linked entity's KG triples after its first mention; `none` is the
same code without either. Evidence: the sentences holding most of the pair's shared attention.

Saved as model.safetensors + config.json + knowledge.json + text_model/ (HF config, tokenizer).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
import pydantic.dataclasses
import torch
from pydantic import Field, StrictBool, StrictInt, StrictStr
from torch import nn

from encoders.docred import TYPES, DocEntity, DocFact, RelDocument
from encoders.ernie import EntityStream, ErnieFusion, encoder_layers
from encoders.finetune import History
from encoders.kbert import build_tree, visible_to_mask
from encoders.knowledge import KnowledgeSource
from encoders.model import text_model_error, write_model_folder
from encoders.text import ModelNotFoundError, default_model_path
from encoders.training import adamw, set_seed, step, warmup_decay
from kg.settings import STRICT, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Share, validate
from kg.storage import atomic_dir, load_weights, read_model_config, read_tensors

FORMAT: Final = "kgpipe-relations/1"
WRITER: Final = "kgpipe relations train"
NO_RELATION: Final = "NA"  # class 0: the adaptive threshold


@pydantic.dataclasses.dataclass(config=STRICT)
class RelationConfig:
    """What builds a RelationModel; saved as config.json. `labels[0]` is the threshold class."""

    knowledge: Literal["none", "ernie", "kbert"]
    labels: list[StrictStr]
    names: dict[StrictStr, StrictStr]  # property → its label ("P159" → "headquarters location")
    max_length: Annotated[StrictInt, Field(ge=16)] = 512  # a window, in word pieces
    block: PositiveInt = 64  # the grouped bilinear's group size
    max_labels: PositiveInt = 4  # relations a pair may get at most
    fusion_layers: list[NonNegativeInt] = field(default_factory=list)  # ERNIE: [] = upper half
    triples_per_entity: NonNegativeInt = 2  # K-BERT
    branch_pieces: PositiveInt = 8  # K-BERT
    dropout: Share = 0.1
    evidence_share: Share = 0.2  # a sentence is evidence when it holds this share of the pair's attention
    text_model: str = ""  # provenance only
    kg: str = ""
    transe: str = ""
    trained_on: str = ""  # what the training data was (provenance only)
    format: Literal["kgpipe-relations/1"] = FORMAT

    def __post_init__(self) -> None:
        if len(self.labels) < 2 or self.labels[0] != NO_RELATION:
            raise ValueError(f"labels must start with {NO_RELATION!r} and name at least one relation")


@pydantic.dataclasses.dataclass(config=STRICT)
class RelationTrainConfig:
    """Training settings; the defaults fit a MiniLM on 2 CPU cores (about 2 min an epoch on 400
    Re-DocRED documents)."""

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 4  # documents
    lr: PositiveFloat = 5e-5  # the pretrained encoder
    head_lr: PositiveFloat = 3e-4  # classifier, fusion, type vectors
    weight_decay: NonNegativeFloat = 0.01
    warmup: Share = 0.06
    patience: NonNegativeInt = 4  # epochs without a better dev F1 before stopping
    min_epochs: NonNegativeInt = 0  # no early stop before this many epochs, nor before half of `epochs`
    seed: NonNegativeInt = 0
    progress: StrictBool = True


@dataclass(frozen=True)
class PairFact:
    """A predicted relation between entities `h` and `t` of a document: `score` in (0.5, 1) is the
    logistic of how far it scores above the pair's threshold; `evidence`: sentence indices."""

    h: int
    t: int
    r: str
    score: float
    evidence: tuple[int, ...]


@dataclass
class _Input:
    """One document, featurised once: `ids` (with [CLS]/[SEP]; K-BERT's branches included),
    `positions` (soft, K-BERT) or None, `visible` bool[n, n] (K-BERT) or None; `mentions[e]`: the
    marker pieces of entity e; `sentences[s]`: the pieces of sentence s; `rows[e]`: entity e's
    knowledge vector row (-1: none); `types[e]`: index into TYPES (+1; 0 = unknown)."""

    ids: list[int]
    positions: list[int] | None
    visible: torch.Tensor | None
    mentions: list[list[int]]
    sentences: list[list[int]]
    rows: list[int]
    types: list[int]


def at_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ATLOP's adaptive-threshold loss. logits float[pairs, classes]; labels float[pairs, classes],
    0/1, class 0 the threshold (1 where the pair has no relation)."""
    th = torch.zeros_like(labels)
    th[:, 0] = 1.0
    labels = labels.clone()
    labels[:, 0] = 0.0
    big = 1e30 if logits.dtype == torch.float32 else 1e4
    positive = logits - (1 - labels - th) * big  # each gold relation above the threshold
    loss1 = -(torch.log_softmax(positive, -1) * labels).sum(1)
    negative = logits - labels * big  # the threshold above every other relation
    loss2 = -(torch.log_softmax(negative, -1) * th).sum(1)
    return (loss1 + loss2).mean()


class RelationModel(nn.Module):
    """Text model + knowledge + ATLOP's pair classifier over one document's entities."""

    def __init__(self, cfg: RelationConfig, base: nn.Module, tokenizer: Any, knowledge: KnowledgeSource):
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            raise ModelNotFoundError(
                f"{cfg.text_model}: kgpipe needs a fast (Rust) tokenizer; give a checkpoint with tokenizer.json"
            )
        self.cfg = cfg
        self.base = base
        self.tokenizer = tokenizer
        self.knowledge = knowledge
        hidden = int(base.config.hidden_size)  # type: ignore[union-attr,arg-type]
        limit = int(getattr(base.config, "max_position_embeddings", 512) or 512)
        # RoBERTa-style position ids start after the padding id
        self.window = min(cfg.max_length, limit - (2 if limit in (514, 130) else 0))
        self.fusion: ErnieFusion | None = None
        extra = 0
        if cfg.knowledge == "ernie":
            depth = len(encoder_layers(base))
            cfg.fusion_layers = cfg.fusion_layers or list(range(depth // 2, depth))
            self.fusion = ErnieFusion(base, knowledge.vectors, cfg.fusion_layers, cfg.dropout, True)
            extra = hidden * ErnieFusion.focus_slots(2)
        emb = hidden - hidden % cfg.block if hidden >= cfg.block else hidden
        self.block = min(cfg.block, emb)
        self.types = nn.Embedding(len(TYPES) + 1, hidden)
        nn.init.zeros_(self.types.weight)
        self.head_in = nn.Linear(2 * hidden + extra, emb)
        self.tail_in = nn.Linear(2 * hidden + extra, emb)
        self.bilinear = nn.Linear(emb * self.block, len(cfg.labels))
        self.dropout = nn.Dropout(cfg.dropout)
        self.marker = tokenizer("*", add_special_tokens=False)["input_ids"][-1]

    # ---- building and saving --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        cfg: RelationConfig,
        knowledge: KnowledgeSource,
        text_model: str | Path | None = None,
        seed: int | None = None,
    ) -> RelationModel:
        """A fresh model on a pretrained Hugging Face checkpoint (the bundled MiniLM by default)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(text_model) if text_model else default_model_path()
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(
                f"{folder}: no config.json, so not a Hugging Face checkpoint folder. "
                "Pass --model the folder that holds config.json, the weights and the tokenizer files"
            )
        cfg.text_model = str(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        config = _no_attention_dropout(AutoConfig.from_pretrained(folder, local_files_only=True))
        base = _quiet(
            lambda: AutoModel.from_pretrained(
                folder, config=config, local_files_only=True, attn_implementation="eager"
            )
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return cls(cfg, base, tokenizer, knowledge)

    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None, half: bool = False) -> Path:
        """Write the folder whole (atomically); `half` stores floating weights as float16 (half the
        size; `load` reads them back as float32)."""
        with atomic_dir(folder) as tmp:
            state = {
                k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
                for k, v in self.state_dict().items()
            }
            write_model_folder(
                tmp, state, self.cfg, FORMAT, self.knowledge, self.tokenizer, self.base, metrics
            )
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> RelationModel:
        """The exact mirror of `save`."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(folder)
        values = read_model_config(
            folder,
            FORMAT,
            "a relation model folder",
            WRITER,
            needs=("text_model/config.json", "knowledge.json"),
        )
        cfg = validate(
            RelationConfig, values, folder / "config.json", f"Write the folder again with `{WRITER}`"
        )
        try:
            hf = AutoConfig.from_pretrained(folder / "text_model", local_files_only=True)
            base = AutoModel.from_config(_no_attention_dropout(hf), attn_implementation="eager")
            tokenizer = AutoTokenizer.from_pretrained(folder / "text_model", local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise text_model_error(folder, e, WRITER) from e
        model = cls(cfg, base, tokenizer, KnowledgeSource.load(folder))
        weights = folder / "model.safetensors"
        load_weights(model, read_tensors(weights, WRITER), weights, WRITER)
        return model.to(device).eval()

    # ---- inputs ---------------------------------------------------------------------------------
    def featurize(self, doc: RelDocument) -> _Input:
        """Word pieces of the document with a "*" before and after each mention."""
        tok = self.tokenizer
        words = [w for s in doc.sents for w in s]
        starts: dict[
            tuple[int, int], list[int]
        ] = {}  # (sentence, token) → entities whose mention starts there
        ends: set[tuple[int, int]] = set()
        closing: dict[tuple[int, int], int] = {}  # (sentence, last token) → its closing marker
        for e, ent in enumerate(doc.entities):
            for m in ent.mentions:
                starts.setdefault((m.sent, m.start), []).append(e)
                ends.add((m.sent, m.end - 1))
        enc = tok(words or [""], is_split_into_words=True, add_special_tokens=False)
        per_word: list[list[int]] = [[] for _ in words]
        for piece, w in zip(enc["input_ids"], enc.word_ids(), strict=True):
            if w is not None and w < len(per_word):
                per_word[w].append(piece)
        pieces: list[int] = []
        mentions: list[list[int]] = [[] for _ in doc.entities]
        sentences: list[list[int]] = []
        w = 0
        for s, sent in enumerate(doc.sents):
            lo = len(pieces)
            for j in range(len(sent)):
                if (s, j) in starts:
                    for e in starts[(s, j)]:
                        mentions[e].append(len(pieces))
                    pieces.append(self.marker)
                pieces += per_word[w]
                w += 1
                if (s, j) in ends:
                    closing[(s, j)] = len(pieces)
                    pieces.append(self.marker)
            sentences.append(list(range(lo, len(pieces))))
        rows = [self.knowledge.row(ent.qid) if ent.qid else -1 for ent in doc.entities]
        types = [TYPES.index(ent.type) + 1 if ent.type in TYPES else 0 for ent in doc.entities]
        grafts = []
        if self.cfg.knowledge == "kbert":
            for e, ent in enumerate(doc.entities):
                texts = (
                    self.knowledge.branches.get(ent.qid, [])[: self.cfg.triples_per_entity] if ent.qid else []
                )
                if texts and mentions[e]:
                    m = min(ent.mentions, key=lambda m: (m.sent, m.start, m.end))
                    first = mentions[e][0]  # the opening marker of its first mention
                    last = closing[(m.sent, m.end - 1)]  # its closing marker: the branch hangs after it
                    branches = [
                        p[: self.cfg.branch_pieces] for p in tok(texts, add_special_tokens=False)["input_ids"]
                    ]
                    grafts.append((first, last, branches))
        tree = build_tree(pieces, grafts, tok.cls_token_id, tok.sep_token_id)
        at = tree.main  # piece i of the sentence sits at tree.main[i + 1]
        return _Input(
            ids=tree.ids,
            positions=tree.positions if self.cfg.knowledge == "kbert" else None,
            visible=tree.visible if self.cfg.knowledge == "kbert" else None,
            mentions=[[at[p + 1] for p in ms] for ms in mentions],
            sentences=[[at[p + 1] for p in ps] for ps in sentences],
            rows=rows,
            types=types,
        )

    def _windows(self, x: _Input) -> list[list[int]]:
        """Index lists into `x.ids`: [CLS] + a stretch + [SEP], overlapping by half a window."""
        n = len(x.ids)
        if n <= self.window:
            return [list(range(n))]
        size = self.window - 2
        stride = size // 2
        starts = [*range(1, n - 1 - size, stride), n - 1 - size]
        return [[0, *range(a, a + size), n - 1] for a in starts]

    # ---- forward --------------------------------------------------------------------------------
    def encode(self, inputs: list[_Input]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each document's last hidden states float[n, hidden] and last-layer attention
        float[heads, n, n], windows put back together (averaged where they overlap)."""
        device = self.types.weight.device
        spans: list[tuple[int, list[int]]] = [(d, w) for d, x in enumerate(inputs) for w in self._windows(x)]
        length = max(len(w) for _, w in spans)
        b = len(spans)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((b, length), pad, dtype=torch.long)
        padding = torch.zeros(b, length, dtype=torch.long)
        kbert = self.cfg.knowledge == "kbert"
        positions = torch.zeros(b, length, dtype=torch.long) if kbert else None
        visible = torch.zeros(b, length, length, dtype=torch.bool) if kbert else None
        stream: list[list[tuple[int, int]]] = []
        for i, (d, w) in enumerate(spans):
            x = inputs[d]
            idx = torch.tensor(w)
            ids[i, : len(w)] = torch.tensor(x.ids)[idx]
            padding[i, : len(w)] = 1
            if (
                positions is not None
                and visible is not None
                and x.positions is not None
                and x.visible is not None
            ):
                pos = torch.tensor(x.positions)[idx]
                inner = pos[1:-1] - pos[1:-1].min() + 1  # a window may open inside a branch
                positions[i, : len(w)] = torch.cat(
                    [pos[:1] * 0, inner, inner.max(0, keepdim=True).values + 1]
                )
                visible[i, : len(w), : len(w)] = x.visible[idx][:, idx]
            where = {p: k for k, p in enumerate(w)}
            stream.append(
                [
                    (x.rows[e], where[p])
                    for e, ms in enumerate(x.mentions)
                    if x.rows[e] >= 0
                    for p in ms
                    if p in where
                ]
            )
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": (
                visible_to_mask(visible, torch.float32) if visible is not None else padding
            ).to(device),
            "output_attentions": True,
        }
        if positions is not None:
            kwargs["position_ids"] = positions.to(device)
        n_ent = max((len(s) for s in stream), default=0)
        if self.fusion is not None and n_ent:
            rows = torch.full((b, n_ent), -1, dtype=torch.long)
            at = torch.zeros(b, n_ent, dtype=torch.long)
            for i, s in enumerate(stream):
                for j, (r, p) in enumerate(s):
                    rows[i, j], at[i, j] = r, p
            with self.fusion.stream(EntityStream(rows.to(device), at.to(device))):
                out = self.base(**kwargs)
        else:
            out = self.base(**kwargs)
        hidden, attention = out.last_hidden_state, out.attentions[-1]
        results = []
        for d, x in enumerate(inputs):
            mine = [i for i, (dd, _) in enumerate(spans) if dd == d]
            if len(mine) == 1:
                n = len(x.ids)
                results.append((hidden[mine[0], :n], attention[mine[0], :, :n, :n]))
                continue
            n = len(x.ids)
            h = hidden.new_zeros(n, hidden.shape[-1])
            hc = hidden.new_zeros(n, 1)
            a = attention.new_zeros(attention.shape[1], n, n)
            for i in mine:
                at = torch.tensor(spans[i][1], device=device)
                k = len(at)
                h = h.index_add(0, at, hidden[i, :k])
                hc = hc.index_add(0, at, torch.ones(k, 1, device=device))
                grid = (at[:, None] * n + at[None, :]).flatten()
                a = a.flatten(1).index_add(1, grid, attention[i, :, :k, :k].flatten(1)).view(-1, n, n)
            h = h / hc.clamp(min=1)
            # each row: the plain mean of the distributions of the windows that hold it (ATLOP's)
            a = a / hc.view(1, n, 1).clamp(min=1)
            results.append((h, a))
        return results

    def pair_logits(self, inputs: list[_Input]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per document: the pairs LongTensor[pairs, 2] (every ordered pair of distinct entities),
        their logits float[pairs, classes] and their shared attention float[pairs, n]."""
        out = []
        for x, (seq, att) in zip(inputs, self.encode(inputs), strict=True):
            m = len(x.mentions)
            device = seq.device
            if m < 2:
                out.append(
                    (
                        torch.zeros(0, 2, dtype=torch.long),
                        seq.new_zeros(0, len(self.cfg.labels)),
                        seq.new_zeros(0, seq.shape[0]),
                    )
                )
                continue
            ents, atts = [], []
            for ms in x.mentions:
                p = torch.tensor(ms, device=device)
                ents.append(torch.logsumexp(seq[p], 0))
                atts.append(att[:, p].mean(1))
            ent = torch.stack(ents) + self.types(torch.tensor(x.types, device=device))
            ent_att = torch.stack(atts)  # [entities, heads, n]
            hs, ts = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
            keep = hs != ts
            pairs = torch.stack([hs[keep], ts[keep]], 1).to(device)
            shared = (ent_att[pairs[:, 0]] * ent_att[pairs[:, 1]]).mean(1)
            shared = shared / (shared.sum(1, keepdim=True) + 1e-5)
            context = shared @ seq
            head = [ent[pairs[:, 0]], context]
            tail = [ent[pairs[:, 1]], context]
            if self.fusion is not None:
                rows = torch.tensor(x.rows, device=device)[pairs]
                feats = self.fusion.focus_features(rows)
                head.append(feats)
                tail.append(feats)
            zh = torch.tanh(self.head_in(self.dropout(torch.cat(head, 1))))
            zt = torch.tanh(self.tail_in(self.dropout(torch.cat(tail, 1))))
            g = zh.shape[1] // self.block
            bl = (zh.view(-1, g, self.block, 1) * zt.view(-1, g, 1, self.block)).view(zh.shape[0], -1)
            out.append((pairs, self.bilinear(bl), shared))
        return out

    def targets(self, doc: RelDocument, pairs: torch.Tensor) -> torch.Tensor:
        """float[pairs, classes]: each pair's gold relations (class 0 where none)."""
        index = {r: i for i, r in enumerate(self.cfg.labels)}
        m = len(doc.entities)
        rows = {(h, t): k for k, (h, t) in enumerate(pairs.tolist())}
        y = torch.zeros(len(pairs), len(self.cfg.labels))
        for f in doc.facts:
            if f.r in index and (f.h, f.t) in rows and f.h < m and f.t < m:
                y[rows[(f.h, f.t)], index[f.r]] = 1.0
        y[:, 0] = (y[:, 1:].sum(1) == 0).float()
        return y

    def decide(
        self, pairs: torch.Tensor, logits: torch.Tensor, shared: torch.Tensor, x: _Input
    ) -> list[PairFact]:
        """The relations above each pair's threshold (at most `max_labels`), with evidence."""
        logits = logits.float()
        margin = logits[:, 1:] - logits[:, :1]
        k = min(self.cfg.max_labels, margin.shape[1])
        top, which = margin.topk(k, dim=1)
        found = (top > 0).nonzero().tolist()
        if not found:
            return []
        n = shared.shape[1]
        owner = torch.full((n,), -1, dtype=torch.long)
        for s, ps in enumerate(x.sentences):
            if ps:
                owner[torch.tensor(ps)] = s
        inside = owner >= 0
        per_sentence = torch.zeros(shared.shape[0], len(x.sentences) or 1)
        per_sentence.index_add_(1, owner[inside], shared.float().cpu()[:, inside])
        per_sentence = per_sentence / per_sentence.sum(1, keepdim=True).clamp(min=1e-9)
        facts = []
        for row, j in found:
            shares = per_sentence[row]
            evidence = (shares >= self.cfg.evidence_share).nonzero().flatten().tolist() or [
                int(shares.argmax())
            ]
            h, t = pairs[row].tolist()
            facts.append(
                PairFact(
                    h,
                    t,
                    self.cfg.labels[int(which[row, j]) + 1],
                    round(float(torch.sigmoid(top[row, j])), 4),
                    tuple(evidence),
                )
            )
        return facts

    @torch.no_grad()
    def predict(
        self, docs: Sequence[RelDocument], batch_size: int = 4, progress: Callable[[int], None] | None = None
    ) -> list[list[PairFact]]:
        """Each document's predicted facts between its entities (indices into `doc.entities`)."""
        self.eval()
        got: dict[int, list[PairFact]] = {i: [] for i, d in enumerate(docs) if len(d.entities) < 2}
        if got and progress is not None:
            progress(len(got))  # no pair to relate: no encoder pass
        inputs = {i: self.featurize(d) for i, d in enumerate(docs) if i not in got}
        order = sorted(inputs, key=lambda i: len(inputs[i].ids))
        for lo in range(0, len(order), batch_size):
            part = order[lo : lo + batch_size]
            xs = [inputs[i] for i in part]
            for i, x, (pairs, logits, shared) in zip(part, xs, self.pair_logits(xs), strict=True):
                got[i] = self.decide(pairs.cpu(), logits.cpu(), shared.cpu(), x)
            if progress is not None:
                progress(len(part))
        return [got[i] for i in range(len(docs))]


def _no_attention_dropout(config: Any) -> Any:
    """The config with dropout on attention weights off: the last layer's attention is read as the
    pairs' context, and on a CPU that dropout costs as much as the attention itself (0.41 s vs
    0.19 s a 400-piece document, forward and backward, measured on MiniLM, 2 cores)."""
    for name in ("attention_probs_dropout_prob", "attention_dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    return config


def _quiet(load: Callable[[], Any]) -> Any:
    """Run a transformers load without its report of the pooler weights the model leaves out."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return load()
    finally:
        hf_logging.set_verbosity(level)


# ---- scoring ------------------------------------------------------------------------------------
@dataclass
class Scores:
    """Precision, recall, F1 and Ign F1 (facts whose names occur in the training data left out,
    as DocRED's scorer does), evidence F1, and per relation."""

    precision: float
    recall: float
    f1: float
    ign_f1: float
    evidence_f1: float
    gold: int
    predicted: int
    correct: int
    per_relation: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def train_names(docs: Sequence[RelDocument]) -> set[tuple[str, str, str]]:
    """(head name, tail name, relation) of every training fact, for Ign F1."""
    seen = set()
    for d in docs:
        for f in d.facts:
            for hm in d.entities[f.h].mentions:
                for tm in d.entities[f.t].mentions:
                    seen.add((hm.name, tm.name, f.r))
    return seen


def score(
    docs: Sequence[RelDocument],
    predicted: Sequence[Sequence[PairFact]],
    train: set[tuple[str, str, str]] | None = None,
) -> Scores:
    """Gold-entity scores of predictions against the documents' facts."""
    gold = {(i, f.h, f.t, f.r): f for i, d in enumerate(docs) for f in d.facts}
    n_pred = correct = in_train = 0
    ev_tp = ev_pred = 0
    ev_gold = sum(len(f.evidence) for f in gold.values())
    per: dict[str, list[int]] = {}
    for f in gold.values():
        per.setdefault(f.r, [0, 0, 0])[0] += 1
    for i, facts in enumerate(predicted):
        d = docs[i]
        for p in {(p.h, p.t, p.r): p for p in facts}.values():
            n_pred += 1
            ev_pred += len(p.evidence)  # DocRED's scorer: evidence of every fact, right or wrong
            per.setdefault(p.r, [0, 0, 0])[1] += 1
            g = gold.get((i, p.h, p.t, p.r))
            if g is None:
                continue
            correct += 1
            per[p.r][2] += 1
            ev_tp += len(set(g.evidence) & set(p.evidence))
            if train is not None and any(
                (hm.name, tm.name, p.r) in train
                for hm in d.entities[p.h].mentions
                for tm in d.entities[p.t].mentions
            ):
                in_train += 1
    prec = correct / n_pred if n_pred else 0.0
    rec = correct / len(gold) if gold else 0.0
    ign_p = (correct - in_train) / (n_pred - in_train) if n_pred > in_train else 0.0
    per_relation = {
        r: {
            "gold": g,
            "predicted": p,
            "correct": c,
            "f1": round(_f1(c / p if p else 0.0, c / g if g else 0.0), 4),
        }
        for r, (g, p, c) in sorted(per.items(), key=lambda kv: -kv[1][0])
    }
    ev = _f1(ev_tp / ev_pred if ev_pred else 0.0, ev_tp / ev_gold if ev_gold else 0.0)
    return Scores(
        round(prec, 4),
        round(rec, 4),
        round(_f1(prec, rec), 4),
        round(_f1(ign_p, rec), 4),
        round(ev, 4),
        len(gold),
        n_pred,
        correct,
        per_relation,
    )


# ---- training -----------------------------------------------------------------------------------
def train(
    model: RelationModel,
    docs: Sequence[RelDocument],
    dev: Sequence[RelDocument],
    cfg: RelationTrainConfig,
    on_epoch: Callable[[int, float, dict[str, float]], None] | None = None,
) -> History:
    """Train `model` in place; it ends with the weights of its best dev epoch (by F1)."""
    from tqdm.auto import tqdm

    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = model.types.weight.device
    inputs = [model.featurize(d) for d in docs]
    targets: list[torch.Tensor | None] = [None] * len(docs)
    opt = adamw(model, cfg.lr, cfg.head_lr, cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(docs) / cfg.batch_size)
    sched = warmup_decay(opt, steps, cfg.warmup)
    history, best, best_state, start = History(), -math.inf, None, time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = list(range(len(docs)))
        rng.shuffle(order)
        losses = []
        bar = tqdm(
            range(0, len(order), cfg.batch_size),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
        )
        for lo in bar:
            part = order[lo : lo + cfg.batch_size]
            outs = model.pair_logits([inputs[i] for i in part])
            terms = []
            for i, (pairs, logits, _) in zip(part, outs, strict=True):
                if len(pairs) == 0:
                    continue
                if targets[i] is None:
                    targets[i] = model.targets(docs[i], pairs.cpu())
                terms.append(at_loss(logits.float(), targets[i].to(device)))  # type: ignore[union-attr]
            if not terms:
                continue
            losses.append(step(model, opt, sched, torch.stack(terms).mean()))
            bar.set_postfix(loss=f"{np.mean(losses[-25:]):.4f}")
        history.loss.append(float(np.mean(losses)) if losses else 0.0)
        got = score(dev, model.predict(dev)) if dev else None
        scores = {"f1": got.f1, "precision": got.precision, "recall": got.recall} if got else {}
        history.dev.append(scores)
        if on_epoch is not None:
            on_epoch(epoch + 1, history.loss[-1], scores)
        f1 = scores.get("f1", -history.loss[-1])
        if f1 > best:
            best, history.best_epoch = f1, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif (
            epoch + 1 >= max(cfg.min_epochs, cfg.epochs // 2)
            and epoch + 1 - history.best_epoch >= cfg.patience
        ):
            # never before half the epochs: with few documents the threshold class wins the first
            # ones (text only on 100 documents: dev F1 at most 0.011 for 5 epochs, then 0.39)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = round(time.time() - start, 1)
    return history


def relation_labels(docs: Sequence[RelDocument], names: dict[str, str]) -> list[str]:
    """The threshold class, then every property of `names` (kept in its order), so a model knows
    every relation of the list even where the training data has few."""
    used = {f.r for d in docs for f in d.facts}
    return [NO_RELATION, *[r for r in names if r in used or not used]]


__all__ = [
    "DocEntity",
    "DocFact",
    "PairFact",
    "RelDocument",
    "RelationConfig",
    "RelationModel",
    "RelationTrainConfig",
    "Scores",
    "at_loss",
    "relation_labels",
    "score",
    "train",
    "train_names",
]
