"""`KnowledgeEncoder`: a Hugging Face encoder, optional knowledge (ERNIE or K-BERT) and a task head.

`knowledge="none"` runs the very same code with the knowledge switched off: the text-only ablation.
Saved as model.safetensors + config.json + knowledge.json + text_model/ (HF config and tokenizer).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import pydantic.dataclasses
import torch
from pydantic import Field, StrictBool, StrictInt, StrictStr
from safetensors.torch import save_file
from torch import nn

from encoders.data import EntitySpan, Example
from encoders.ernie import EntityStream, ErnieFusion, encoder_layers
from encoders.heads import HEADS
from encoders.kbert import build_tree, visible_to_mask
from encoders.knowledge import KnowledgeSource
from encoders.text import ModelNotFoundError, default_model_path
from kg.cache import Memo
from kg.errors import KGFormatError
from kg.settings import STRICT, NonNegativeFloat, NonNegativeInt, PositiveInt, Share, validate
from kg.storage import atomic_dir, load_weights, read_model_config, read_tensors

FORMAT: Final = "kgpipe-encoder/1"
KNOWLEDGE = ("none", "ernie", "kbert")
MARKERS = {"relation": (("@", "@"), ("#", "#")), "typing": (("@", "@"),), "sequence": ()}


@pydantic.dataclasses.dataclass(config=STRICT)
class EncoderConfig:
    """What builds a KnowledgeEncoder; saved as config.json."""

    task: Literal["sequence", "relation", "typing"]
    knowledge: Literal["none", "ernie", "kbert"]
    labels: list[StrictStr]
    max_length: Annotated[StrictInt, Field(ge=8)] = 128  # room for [CLS], [SEP] and a few pieces
    fusion_layers: list[NonNegativeInt] = field(
        default_factory=list
    )  # ERNIE: after these layers; [] = upper half
    triples_per_entity: NonNegativeInt = 2  # K-BERT: branches per entity
    branch_pieces: PositiveInt = 8  # K-BERT: word pieces per branch at most
    max_entities: PositiveInt = 16
    dropout: Share = 0.1
    freeze_entities: StrictBool = True
    entity_features: StrictBool = True  # ERNIE: the head also reads the focus entities' vectors
    knowledge_dropout: Share = 0.0  # ERNIE, training only: share of examples seen without their entities
    # ERNIE: weight of the knowledge expert's own loss; 0 = no expert (see KnowledgeEncoder.loss)
    knowledge_expert: NonNegativeFloat = 0.0
    descriptions: StrictBool = False  # ERNIE: entity vectors also hold embedded KG descriptions
    pretrained: str = ""  # ERNIE: the alignment pre-trained fusion it started from (provenance only)
    text_model: str = ""  # where the text model came from (provenance only)
    # the text model's weights are not trained, so not saved: `load` takes them from the installed
    # text model (KGPIPE_TEXT_MODEL or the default), checked against text_model_digest
    text_model_frozen: StrictBool = False
    text_model_digest: str = ""
    kg: str = ""
    transe: str = ""
    format: Literal["kgpipe-encoder/1"] = FORMAT

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("labels is empty: a head needs at least one label to predict")


def write_model_folder(
    tmp: Path,
    state: dict[str, torch.Tensor],
    cfg: Any,
    fmt: str,
    knowledge: KnowledgeSource,
    tokenizer: Any,
    base: nn.Module,
    metrics: dict[str, Any] | None,
) -> None:
    """What every kgpipe model folder holds, written into `tmp` (an `atomic_dir`): the weights
    (`state`, marked `fmt`), config.json (the dataclass `cfg`), the knowledge index, the text model's
    config and tokenizer, and `metrics` as metrics.json when given."""
    if metrics is not None:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": fmt})
    (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    knowledge.save(tmp)
    tokenizer.save_pretrained(tmp / "text_model")
    base.config.save_pretrained(tmp / "text_model")  # type: ignore[union-attr,operator]


def text_model_error(folder: Path, e: Exception, writer: str) -> KGFormatError:
    """The error for a model folder whose text_model/ config or tokenizer cannot be read."""
    reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    return KGFormatError(
        folder / "text_model",
        None,
        f"damaged text model config or tokenizer ({reason})",
        f"Write the folder again with `{writer}`",
    )


def weights_digest(module: torch.nn.Module) -> str:
    """16 hex digits over a module's weights (names, shapes and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass
class Batch:
    """Model inputs for one batch.

    input_ids: LongTensor[batch, length]; attention: LongTensor[batch, length] padding mask, or
    for K-BERT the visible matrix as float[batch, 1, length, length]; positions: LongTensor[batch,
    length] soft positions (K-BERT) or None; main: float[batch, length], 1 on sentence pieces;
    focus: LongTensor[batch, spans], the first piece of each focus span; stream: the ERNIE
    entity stream or None; targets: LongTensor[batch] or float[batch, labels] or None;
    focus_rows: LongTensor[batch, spans], each focus entity's vector row (-1: none), ERNIE only.
    """

    input_ids: torch.Tensor
    attention: torch.Tensor
    positions: torch.Tensor | None
    main: torch.Tensor
    focus: torch.Tensor
    stream: EntityStream | None
    targets: torch.Tensor | None = None
    focus_rows: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        def move(t: Any) -> Any:
            return t.to(device) if isinstance(t, torch.Tensor) else t

        stream = self.stream and EntityStream(move(self.stream.rows), move(self.stream.positions))
        return Batch(
            move(self.input_ids),
            move(self.attention),
            move(self.positions),
            move(self.main),
            move(self.focus),
            stream,
            move(self.targets),
            move(self.focus_rows),
        )


def mark(example: Example, task: str) -> tuple[str, list[EntitySpan]]:
    """The text with marker characters around its focus spans, and every entity span shifted.

    Markers ("@ head @", "# tail #") are plain characters every tokenizer knows, so no
    vocabulary grows; they are the same in every knowledge mode.
    """
    inserts: list[tuple[int, int, str]] = []  # (position, closes before opens, text)
    for span, (left, right) in zip(example.focus, MARKERS[task], strict=False):
        inserts += [(span.start, 1, left + " "), (span.end, 0, " " + right)]
    inserts.sort()
    out, last = [], 0
    for pos, _, s in inserts:
        out += [example.text[last:pos], s]
        last = pos
    out.append(example.text[last:])

    def shift(pos: int, inclusive: bool) -> int:
        return pos + sum(len(s) for p, _, s in inserts if p < pos or (inclusive and p == pos))

    spans = [EntitySpan(shift(e.start, True), shift(e.end, False), e.qid) for e in example.entities]
    return "".join(out), spans


def _piece_range(offsets: list[tuple[int, int]], span: EntitySpan) -> tuple[int, int] | None:
    inside = [i for i, (a, b) in enumerate(offsets) if b > span.start and a < span.end and b > a]
    return (inside[0], inside[-1]) if inside else None


class KnowledgeEncoder(nn.Module):
    """Text model + knowledge + head. `encode(examples)` → Batch; `forward(batch)` → logits."""

    def __init__(self, cfg: EncoderConfig, base: nn.Module, tokenizer: Any, knowledge: KnowledgeSource):
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            raise ModelNotFoundError(
                f"{cfg.text_model}: kgpipe needs a fast (Rust) tokenizer for character offsets; "
                "give a checkpoint with tokenizer.json"
            )
        self.cfg = cfg
        self.base = base
        self.tokenizer = tokenizer
        self.knowledge = knowledge
        hidden = int(base.config.hidden_size)  # type: ignore[union-attr,arg-type]
        self.label_index = {label: i for i, label in enumerate(cfg.labels)}
        self.fusion: ErnieFusion | None = None
        extra = 0
        if cfg.knowledge == "ernie":
            depth = len(encoder_layers(base))
            layers = cfg.fusion_layers or list(range(depth // 2, depth))
            cfg.fusion_layers = layers
            self.fusion = ErnieFusion(base, knowledge.vectors, layers, cfg.dropout, cfg.freeze_entities)
            spans = {"sequence": 0, "relation": 2, "typing": 1}[cfg.task]
            extra = hidden * ErnieFusion.focus_slots(spans) if cfg.entity_features and spans else 0
            self.focus_spans = spans
        self.head_extra = extra > 0
        self.head = HEADS[cfg.task](hidden, len(cfg.labels), cfg.dropout, extra, cfg.knowledge_expert > 0)
        self.branch_memo: Memo[str, list[list[int]]] = Memo(100_000)

    # ---- building -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        cfg: EncoderConfig,
        knowledge: KnowledgeSource,
        text_model: str | Path | None = None,
        seed: int | None = None,
        fusion: str | Path | None = None,
    ) -> KnowledgeEncoder:
        """A fresh model on a pretrained Hugging Face checkpoint (the bundled MiniLM by default).
        `seed` fixes the new weights (head, fusion); without it they come from torch's global
        random state, which depends on whatever ran before in the process. `fusion`: a folder
        written by `kgpipe encoder pretrain` (ERNIE only), whose fusion weights it starts from."""
        from transformers import AutoModel, AutoTokenizer

        folder = Path(text_model) if text_model else default_model_path()
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(
                f"{folder}: no config.json, so not a Hugging Face checkpoint folder. "
                "Pass --model the folder that holds config.json, the weights and the tokenizer files"
            )
        cfg.text_model = str(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        base = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
        with torch.random.fork_rng(devices=[]):  # the seed fixes the new weights, not the process
            if seed is not None:
                torch.manual_seed(seed)
            model = cls(cfg, base, tokenizer, knowledge)
        if cfg.text_model_frozen:
            base.requires_grad_(False)
            cfg.text_model_digest = weights_digest(base)
        if fusion is not None:
            if model.fusion is None:
                raise ValueError(
                    f"{fusion}: a pre-trained fusion is for knowledge='ernie', not {cfg.knowledge!r}"
                )
            model.fusion.load(fusion, base)
            cfg.pretrained = str(fusion)
        return model

    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the folder whole (atomically): weights, config, knowledge index, HF config +
        tokenizer, and `metrics` as metrics.json when given."""
        with atomic_dir(folder) as tmp:
            state = {
                k: v.detach().contiguous().cpu()
                for k, v in self.state_dict().items()
                if not (self.cfg.text_model_frozen and k.startswith("base."))
            }
            write_model_folder(
                tmp, state, self.cfg, FORMAT, self.knowledge, self.tokenizer, self.base, metrics
            )
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> KnowledgeEncoder:
        """The exact mirror of `save`."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(folder)
        writer = "kgpipe encoder finetune"
        values = read_model_config(
            folder, FORMAT, "an encoder folder", writer, needs=("text_model/config.json", "knowledge.json")
        )
        cfg = validate(
            EncoderConfig, values, folder / "config.json", f"Write the folder again with `{writer}`"
        )
        try:
            hf_config = AutoConfig.from_pretrained(folder / "text_model", local_files_only=True)
            if cfg.text_model_frozen:  # its weights are the installed text model's, by reference
                from transformers.utils import logging as hf_logging

                installed = default_model_path()
                level = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()  # not the report of the pooler weights it leaves out
                try:
                    base = AutoModel.from_pretrained(
                        installed, local_files_only=True, add_pooling_layer=False
                    )
                finally:
                    hf_logging.set_verbosity(level)
                if weights_digest(base) != cfg.text_model_digest:
                    raise KGFormatError(
                        folder,
                        None,
                        f"trained on a text model whose weights differ from the one installed at {installed}",
                        "Set KGPIPE_TEXT_MODEL to the text model it was trained with, or train it again",
                    )
            else:
                base = AutoModel.from_config(hf_config, add_pooling_layer=False)
            tokenizer = AutoTokenizer.from_pretrained(folder / "text_model", local_files_only=True)
        except KGFormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise text_model_error(folder, e, writer) from e
        model = cls(cfg, base, tokenizer, KnowledgeSource.load(folder))
        weights = folder / "model.safetensors"
        tensors = read_tensors(weights, writer)
        if cfg.text_model_frozen:
            tensors.update({k: v for k, v in model.state_dict().items() if k.startswith("base.")})
        load_weights(model, tensors, weights, writer)
        return model.to(device).eval()

    # ---- inputs ---------------------------------------------------------------------------------
    def _branches(self, qid: str) -> list[list[int]]:
        def compute() -> list[list[int]]:
            texts = self.knowledge.branches.get(qid, [])[: self.cfg.triples_per_entity]
            pieces = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
            return [p[: self.cfg.branch_pieces] for p in pieces]

        return self.branch_memo.get_or_compute(qid, compute)

    def targets(self, examples: list[Example]) -> torch.Tensor:
        """LongTensor[batch] of label ids, or for typing float[batch, labels] of 0/1."""
        if self.head.multi_label:
            t = torch.zeros(len(examples), len(self.cfg.labels))
            for i, ex in enumerate(examples):
                for label in ex.labels:
                    if label in self.label_index:
                        t[i, self.label_index[label]] = 1.0
            return t
        return torch.tensor([self.label_index.get(ex.labels[0], -100) for ex in examples])

    def encode(self, examples: list[Example], with_targets: bool = True) -> Batch:
        """Tokenize with offsets, map entity spans onto pieces, add knowledge; pad to a Batch."""
        tok = self.tokenizer
        marked = [mark(ex, self.cfg.task) for ex in examples]
        enc = tok(
            [m[0] for m in marked],
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.cfg.max_length - 2,
        )
        rows: list[dict[str, Any]] = []
        for (_text, spans), ids, offsets, ex in zip(
            marked, enc["input_ids"], enc["offset_mapping"], examples, strict=True
        ):
            ranges = [_piece_range(offsets, s) for s in spans]
            grafts = []
            if self.cfg.knowledge == "kbert":
                for span, r in zip(spans[: self.cfg.max_entities], ranges, strict=False):
                    if r is not None and span.qid:
                        grafts.append((r[0], r[1], self._branches(span.qid)))
            tree = build_tree(ids, grafts, tok.cls_token_id, tok.sep_token_id)
            focus = [tree.main[r[0] + 1] if r else 0 for r in ranges[: len(ex.focus)]]
            rows_of = [self.knowledge.row(s.qid) if s.qid else -1 for s in spans]
            stream = [
                (row, tree.main[r[0] + 1])
                for row, r in zip(rows_of, ranges, strict=True)
                if r is not None and row >= 0
            ][: self.cfg.max_entities]
            focus_rows = rows_of[: len(ex.focus)]
            rows.append({"tree": tree, "focus": focus, "stream": stream, "focus_rows": focus_rows})
        return self._pad(rows, self.targets(examples) if with_targets else None)

    def _pad(self, rows: list[dict[str, Any]], targets: torch.Tensor | None) -> Batch:
        b, length = len(rows), max(len(r["tree"].ids) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((b, length), pad, dtype=torch.long)
        positions = torch.zeros(b, length, dtype=torch.long)
        kbert = self.cfg.knowledge == "kbert"
        visible = torch.zeros(b, length, length, dtype=torch.bool) if kbert else None
        padding = torch.zeros(b, length, dtype=torch.long)
        main = torch.zeros(b, length)
        n_focus = max(1, max(len(r["focus"]) for r in rows))
        focus = torch.zeros(b, n_focus, dtype=torch.long)
        focus_rows = torch.full((b, n_focus), -1, dtype=torch.long)
        n_ent = max((len(r["stream"]) for r in rows), default=0)
        ent_rows = torch.full((b, n_ent), -1, dtype=torch.long)
        ent_pos = torch.zeros(b, n_ent, dtype=torch.long)
        for i, r in enumerate(rows):
            tree, n = r["tree"], len(r["tree"].ids)
            ids[i, :n] = torch.tensor(tree.ids)
            positions[i, :n] = torch.tensor(tree.positions)
            if visible is not None:
                visible[i, :n, :n] = tree.visible
            padding[i, :n] = 1
            main[i, tree.main[1:-1]] = 1.0
            focus[i, : len(r["focus"])] = torch.tensor(r["focus"], dtype=torch.long)
            focus_rows[i, : len(r["focus_rows"])] = torch.tensor(r["focus_rows"], dtype=torch.long)
            for j, (row, pos) in enumerate(r["stream"]):
                ent_rows[i, j], ent_pos[i, j] = row, pos
        return Batch(
            input_ids=ids,
            attention=visible_to_mask(visible, torch.float32) if visible is not None else padding,
            positions=positions if kbert else None,
            main=main,
            focus=focus,
            stream=EntityStream(ent_rows, ent_pos) if self.fusion is not None and n_ent else None,
            targets=targets,
            focus_rows=focus_rows,
        )

    # ---- forward --------------------------------------------------------------------------------
    def hidden(self, batch: Batch) -> torch.Tensor:
        """float[batch, length, hidden]: the last hidden states, knowledge fused or injected."""
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention}
        if batch.positions is not None:
            kwargs["position_ids"] = batch.positions
        if self.fusion is not None and batch.stream is not None:
            with self.fusion.stream(batch.stream):
                return self.base(**kwargs).last_hidden_state
        return self.base(**kwargs).last_hidden_state

    def forward(self, batch: Batch) -> torch.Tensor:
        """float[batch, labels]: the head's logits."""
        return self._forward(batch)[0]

    def loss(self, batch: Batch) -> torch.Tensor:
        """The training loss of a batch with targets. With a knowledge expert (ERNIE,
        `knowledge_expert` > 0) the expert's own logits are also trained on the labels, with that
        weight: the fine-tuned text model alone fits the training set within an epoch, after which
        the summed logits carry no gradient left for the knowledge features, so an expert trained
        only through the sum learns little. Trained on its own it learns what the KG says about
        the focus entities, and its logits are added to the text model's."""
        if batch.targets is None:
            raise ValueError("loss needs a batch with targets: encode(examples, with_targets=True)")
        logits, features = self._forward(batch)
        loss = self.head.loss(logits, batch.targets)
        if self.head.expert is not None and features is not None:
            loss = loss + self.cfg.knowledge_expert * self.head.loss(
                self.head.expert(features), batch.targets
            )
        return loss

    def _forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logits and the knowledge features the head read (None without)."""
        if self.training and self.cfg.knowledge_dropout > 0 and self.fusion is not None:
            batch = self._drop_knowledge(batch, self.cfg.knowledge_dropout)
        extra = None
        if self.fusion is not None and self.head_extra and batch.focus_rows is not None:
            extra = self.fusion.focus_features(batch.focus_rows[:, : self.focus_spans])
        return self.head(self.hidden(batch), batch.main, batch.focus, extra), extra

    @staticmethod
    def _drop_knowledge(batch: Batch, share: float) -> Batch:
        """The batch with a random `share` of its examples stripped of their entities (rows -1), so
        that 'no entity' is seen for every kind of example in training, not only for the kinds the
        KG happens to lack (else absence itself becomes a type cue: nearly every mention the KG
        lacks is a person)."""
        drop = torch.rand(batch.input_ids.shape[0], device=batch.input_ids.device) < share
        stream = batch.stream
        if stream is not None:
            stream = replace(stream, rows=stream.rows.masked_fill(drop[:, None], -1))
        rows = batch.focus_rows
        if rows is not None:
            rows = rows.masked_fill(drop[:, None], -1)
        return replace(batch, stream=stream, focus_rows=rows)
