"""TransE checkpoints: `model.safetensors` + `config.json` + vocabularies, loadable without training state.

`EntityVectors` opens one and gives vectors by entity key or QID, and nearest entities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from kg.embed.model import TransE, TransEConfig, pairwise_distance
from kg.errors import KGFormatError, UnknownEntityError
from kg.graph import KnowledgeGraph
from kg.settings import validate
from kg.storage import atomic_dir, load_weights, read_model_config, read_parquet, read_tensors, write_json

FORMAT = "kgpipe-transe"


def save_checkpoint(
    out: str | Path,
    model: TransE,
    kg: KnowledgeGraph,
    train_config: dict[str, Any],
    metrics: dict[str, Any],
    curve: Any = None,
) -> Path:
    """Write the checkpoint folder atomically; `curve(path)` may draw curve.png into it."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file(
            {
                "entity": model.entity.weight.detach().float().cpu().contiguous(),
                "relation": model.relation.weight.detach().float().cpu().contiguous(),
            },
            tmp / "model.safetensors",
        )
        write_json(
            tmp / "config.json",
            {
                "format": FORMAT,
                "model": model.config.to_dict(),
                "train": train_config,
                "kg": {"name": kg.name, "source": kg.source},
            },
        )
        write_json(tmp / "metrics.json", metrics)
        pq.write_table(
            pa.table({"key": kg.entities, "qid": kg.qids, "label": kg.labels}),
            tmp / "entities.parquet",
            compression="zstd",
        )
        pq.write_table(
            pa.table({"key": kg.relations, "label": kg.relation_labels}),
            tmp / "relations.parquet",
            compression="zstd",
        )
        if curve is not None:
            curve(tmp / "curve.png")
    return out


@dataclass
class EntityVectors:
    """A trained TransE model with its vocabularies: vectors by key or QID, nearest neighbours."""

    model: TransE
    entities: list[str]
    qids: list[str]
    labels: list[str]
    relations: list[str]
    config: dict[str, Any]
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {k: i for i, k in enumerate(self.entities)}
        self._index.update({q: i for i, q in enumerate(self.qids) if q and q not in self._index})

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> EntityVectors:
        folder = Path(folder)
        writer = "kgpipe kg train"
        config = read_model_config(
            folder, FORMAT, "a TransE checkpoint", writer, needs=("entities.parquet", "relations.parquet")
        )
        model_cfg = validate(
            TransEConfig, config.get("model"), folder / "config.json", f"Write it again with `{writer}`"
        )
        model = TransE(model_cfg)
        tensors = read_tensors(folder / "model.safetensors", writer)
        load_weights(
            model, {f"{k}.weight": v for k, v in tensors.items()}, folder / "model.safetensors", writer
        )
        ents = read_parquet(folder / "entities.parquet", ("key", "qid", "label"), writer)
        rels = read_parquet(folder / "relations.parquet", ("key",), writer)
        if len(ents["key"]) != model_cfg.num_entities or len(rels["key"]) != model_cfg.num_relations:
            raise KGFormatError(
                folder,
                None,
                f"entities.parquet / relations.parquet list {len(ents['key'])} / {len(rels['key'])} rows, "
                f"the model has {model_cfg.num_entities} / {model_cfg.num_relations}",
                f"Write the folder again with `{writer}`",
            )
        return cls(model.to(device).eval(), ents["key"], ents["qid"], ents["label"], rels["key"], config)

    def entity_id(self, key_or_qid: str) -> int:
        found = self._index.get(key_or_qid)
        if found is None:
            raise UnknownEntityError(
                f"entity {key_or_qid!r} has no TransE vector: it is not in the KG this model was trained on"
            )
        return found

    def has(self, key_or_qid: str) -> bool:
        return key_or_qid in self._index

    def vector(self, key_or_qid: str) -> np.ndarray:
        return self.model.entity.weight[self.entity_id(key_or_qid)].detach().cpu().numpy()

    @property
    def matrix(self) -> torch.Tensor:
        """float[num_entities, dim]: every entity vector, rows in vocabulary order."""
        return self.model.entity.weight.detach()

    def nearest(self, key_or_qid: str, k: int = 5) -> list[tuple[int, float]]:
        """The k entities closest to one entity in TransE space (the entity itself excluded); fewer
        when the model has fewer other entities."""
        i = self.entity_id(key_or_qid)
        d = pairwise_distance(self.matrix[i : i + 1], self.matrix, self.model.config.p_norm)[0]
        d[i] = float("inf")
        top = torch.topk(d, max(0, min(k, len(d) - 1)), largest=False)
        return [(int(j), float(v)) for v, j in zip(top.values, top.indices, strict=True)]

    def align(self, kg: KnowledgeGraph) -> tuple[np.ndarray, np.ndarray]:
        """Map `kg`'s entity and relation ids onto this model's rows; -1 where the model lacks one."""
        ent = np.array(
            [
                self._index.get(k, self._index.get(q, -1) if q else -1)
                for k, q in zip(kg.entities, kg.qids, strict=True)
            ]
        )
        rel_index = {k: i for i, k in enumerate(self.relations)}
        return ent, np.array([rel_index.get(k, -1) for k in kg.relations])
