"""The vector store: named collections of vectors with string ids and Parquet metadata.

Two engines behind one interface, chosen by the address (`open_store`, `create_store`):

- a folder → FAISS on disk (the default). Each collection is a FAISS index with int64 ids
  (`IDMap2,Flat` below `IVF_FROM` vectors; `IDMap2,IVF{4√N},SQ8` above, trained on a sample), the
  vectors themselves (`vectors.npy`, for exact search over a filter's few ids) and `meta.parquet`;
  `manifest.json` holds the format version, dimensions, metric, factory strings, the encoder
  that made the vectors and every file's sha256, checked each time the store opens. `save` writes
  each file under a temporary name beside the old one, renames it into place once all are written
  and writes the manifest last: a failed save leaves the previous store whole, and files of the
  user's in the store's folders stay. No pickle anywhere.
- `milvus:PATH.db` → Milvus Lite (embedded, one file); `milvus://HOST:PORT` → a Milvus server or
  cluster. Each collection is a Milvus collection; the manifest lives in a `kgpipe_manifest`
  collection. Every write is committed at once, so `save` only records the manifest.

Filters (mentioned entities, entity types, metadata columns) are applied *before* the vector
search: on FAISS the allowed ids go to the index as an `IDSelector`, and when few ids pass they
are searched exactly, so a selective filter returns k hits whenever k matching items exist. On
Milvus they become a boolean expression, which Milvus also applies before its search.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kg.errors import KGPipeError
from kg.storage import sha256, write_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

FORMAT = "kgpipe-store"
FORMAT_VERSION = 1
METRIC = "ip"  # inner product over unit vectors: cosine similarity
IVF_FROM = 100_000  # from this many vectors a collection gets an IVF index with scalar quantization
RECALL_TARGET = 0.97  # recall@10 an IVF index's nprobe is calibrated to reach on its own vectors
RERANK = 4  # an IVF search fetches RERANK × k candidates and re-ranks them with the exact vectors
EXACT_BELOW = 20_000  # a filter that lets fewer ids through is searched exactly over their vectors
LIST_COLUMNS = ("entities", "types", "relations")  # metadata columns holding lists: filtered by membership
FILES = ("index.faiss", "vectors.npy", "meta.parquet")  # a FAISS collection's files, in its folder
# metadata values a column of mixed types keeps (as text; anything else is refused)
JSON_TYPES = (str, int, float, bool, list, tuple, dict, np.generic)
MILVUS_MANIFEST = "kgpipe_manifest"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class StoreError(KGPipeError):
    """A store that cannot be opened or written as asked; the message says what to do."""


@dataclass(frozen=True)
class Hit:
    """One search result: the item's id, its similarity to the query (cosine, higher is closer) and
    its metadata."""

    id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """`{"id", "score", "metadata"}`: the item's metadata in a namespace of its own, so that a
        column named like a field of the hit (`score`, `id`) never replaces it."""
        return {"id": self.id, "score": round(self.score, 6), "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class Filter:
    """Which items a search may return: items mentioning any of `entities` (QIDs), of any of
    `types`, stating any of `relations` (Wikidata properties their text states, as extraction
    read them), and whose metadata column equals the value for each `(column, value)` of `where`.
    Values are compared as text, so `year=1990` matches the number 1990 and the string "1990"."""

    entities: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()
    relations: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entities or self.types or self.where or self.relations)

    @classmethod
    def parse(
        cls,
        entities: Iterable[str] = (),
        types: Iterable[str] = (),
        where: Iterable[str] = (),
        relations: Iterable[str] = (),
    ) -> Filter:
        """From command-line values: `where` items are `COLUMN=VALUE`."""
        pairs = []
        for item in where:
            column, sep, value = item.partition("=")
            if not sep or not column.strip():
                raise StoreError(f"--where {item!r}: give COLUMN=VALUE, e.g. --where source=wikipedia")
            pairs.append((column.strip(), value))
        return cls(tuple(entities), tuple(types), tuple(pairs), tuple(relations))

    def columns(self) -> list[str]:
        return (
            (["entities"] if self.entities else [])
            + (["types"] if self.types else [])
            + (["relations"] if self.relations else [])
            + [c for c, _ in self.where]
        )

    def mask(self, meta: pa.Table) -> np.ndarray:
        """bool[rows]: the rows of `meta` this filter lets through."""
        keep = np.ones(meta.num_rows, bool)
        for column, wanted in (
            ("entities", self.entities),
            ("types", self.types),
            ("relations", self.relations),
        ):
            if wanted:
                keep &= _contains_any(meta.column(column), wanted)
        for column, value in self.where:
            values = meta.column(column)
            if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                keep &= _contains_any(values, (value,))
            else:
                text = pc.cast(values, pa.string()) if not pa.types.is_string(values.type) else values
                keep &= pc.fill_null(pc.equal(text, value), False).to_numpy(zero_copy_only=False)
        return keep

    def milvus_expr(self) -> str:
        """The same filter as a Milvus boolean expression."""
        parts = []
        if self.entities:
            parts.append(f"ARRAY_CONTAINS_ANY(entities, {json.dumps(list(self.entities))})")
        if self.types:
            parts.append(f"ARRAY_CONTAINS_ANY(types, {json.dumps(list(self.types))})")
        if self.relations:
            parts.append(f"ARRAY_CONTAINS_ANY(relations, {json.dumps(list(self.relations))})")
        for column, value in self.where:
            alternatives = [f"{column} == {json.dumps(value)}"]
            try:  # metadata is compared as text; Milvus keeps numbers as numbers
                number = float(value)
                if math.isfinite(number):
                    alternatives.append(f"{column} == {int(number) if number.is_integer() else number}")
            except ValueError:
                pass
            parts.append("(" + " or ".join(alternatives) + ")")
        return " and ".join(parts)


def _contains_any(values: pa.ChunkedArray, wanted: Sequence[str]) -> np.ndarray:
    flat = pc.list_flatten(values)
    parents = pc.list_parent_indices(values).to_numpy()
    hit = pc.is_in(flat, value_set=pa.array(list(wanted), flat.type)).to_numpy(zero_copy_only=False)
    keep = np.zeros(len(values), bool)
    keep[parents[hit]] = True
    return keep


def int_id(key: str) -> int:
    """The int64 a string id is stored under (63 bits of its BLAKE2b hash: FAISS and Milvus ids)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def auto_factory(n: int) -> str:
    """The FAISS index for `n` vectors: exact below `IVF_FROM`, else IVF with ≈4√n lists and 8-bit
    scalar quantization (no HNSW: it cannot delete, and loses recall under filters)."""
    if n < IVF_FROM:
        return "IDMap2,Flat"
    return f"IDMap2,IVF{int(4 * math.sqrt(n))},SQ8"


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise StoreError(
            f"{kind} {name!r}: use letters, digits and underscores, starting with a letter (at most 64)"
        )


def _unit(vectors: np.ndarray, dim: int, where: str) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise StoreError(
            f"{where}: vectors of shape {tuple(x.shape)}, but this collection holds {dim}-dimensional ones"
        )
    if not np.isfinite(x).all():
        raise StoreError(f"{where}: vectors hold NaN or infinite values; check the encoder's output")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _check_own_id(collection: str, key: str, metadata: dict[str, Any]) -> None:
    """Metadata's `id` would be replaced by the item's: refused unless it is the same."""
    if "id" in metadata and str(metadata["id"]) != key:
        raise StoreError(
            f"collection {collection}: item {key!r} has metadata id {metadata['id']!r}, but `id` is the "
            "item's own; rename that key (kgpipe index stores an input column `id` as `input_id`)"
        )


def _as_text(value: Any) -> str | None:
    """A metadata value of a column stored as text: text as it is, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _kinds(values: Iterable[Any]) -> str:
    """The types among `values`, with an example of each: "int (1990) and str ('c. 1990')"."""
    first: dict[str, Any] = {}
    for v in values:
        if v is not None:
            first.setdefault(type(v).__name__, v)
    return " and ".join(f"{kind} ({repr(v)[:40]})" for kind, v in first.items())


def _metadata_table(rows: Sequence[dict[str, Any]], where: str) -> tuple[pa.Table, dict[str, str]]:
    """The rows as a table: a column for every key of any row (null where a row lacks it). A column
    whose values Arrow cannot hold as one type (numbers in some rows, text in others) is stored as
    text; the second value says which, with the types found: {column: "int (1990) and str (...)"}."""
    arrays: dict[str, pa.Array] = {}
    as_text: dict[str, str] = {}
    for column in dict.fromkeys(k for row in rows for k in row):
        values = [row.get(column) for row in rows]
        try:
            arrays[column] = pa.array(values)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        odd = next((v for v in values if v is not None and not isinstance(v, JSON_TYPES)), None)
        if odd is not None:
            raise StoreError(
                f"{where}: metadata column {column!r} holds a value of type {type(odd).__name__} ({repr(odd)[:40]}), "
                "which Parquet cannot hold; give text, numbers, booleans or lists of them"
            )
        as_text[column] = _kinds(values)
        arrays[column] = pa.array([_as_text(v) for v in values], pa.string())
    return pa.table(arrays), as_text


def _merge_metadata(old: pa.Table, new: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """`old` and `new` rows in one table; a column whose types cannot be merged (int in the store,
    text in the new rows) becomes text in both, and is named in the second value."""
    as_text: dict[str, str] = {}
    for column in [c for c in new.column_names if c in old.column_names]:
        a, b = old.schema.field(column).type, new.schema.field(column).type
        try:
            pa.unify_schemas(
                [pa.schema([(column, a)]), pa.schema([(column, b)])], promote_options="permissive"
            )
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        before, after = old.column(column).to_pylist(), new.column(column).to_pylist()
        as_text[column] = _kinds(before + after)
        old = old.set_column(
            old.column_names.index(column), column, pa.array([_as_text(v) for v in before], pa.string())
        )
        new = new.set_column(
            new.column_names.index(column), column, pa.array([_as_text(v) for v in after], pa.string())
        )
    return pa.concat_tables([old, new], promote_options="permissive"), as_text


def _temp_file(final: Path) -> Path:
    """A new empty file beside `final` under a hidden temporary name (permissions as open() gives)."""
    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return tmp


def _rebuild(store: Path) -> str:
    return (
        "rebuild the store: delete it (or choose a new folder) and run "
        f"`kgpipe index EXTRACT_DIR --out {store}` for each extraction it held"
    )


# ---------------------------------------------------------------------------------------- FAISS


@dataclass
class FaissCollection:
    """One collection on FAISS: rows of `meta` (with `id`) are aligned with `vectors`; the index
    holds the same vectors under `int_id(id)`."""

    name: str
    dim: int
    factory: str | None = None  # None: `auto_factory` of the size, re-chosen when it grows past IVF_FROM
    nprobe: int = 64
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    meta: pa.Table = field(default_factory=lambda: pa.table({"id": pa.array([], pa.string())}))
    index: Any = None
    built_factory: str = ""  # the factory string `index` was built from
    _sorted_iids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _ids: np.ndarray = field(default_factory=lambda: np.zeros(0, object), repr=False)
    _filters: dict[Filter, tuple[np.ndarray, Any]] = field(default_factory=dict, repr=False)
    # metadata columns stored as text because their values had several types (ints and text, ...):
    # {column: the types, with an example of each}, for the writer to tell the user
    as_text: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.vectors.shape[1:] != (self.dim,):
            self.vectors = np.zeros((0, self.dim), np.float32)
        self._reindex_ids()

    def __len__(self) -> int:
        return self.meta.num_rows

    @property
    def index_factory(self) -> str:
        return self.factory or auto_factory(len(self))

    def _reindex_ids(self) -> None:
        self._filters = {}
        self._ids = np.array(self.meta.column("id").to_pylist(), dtype=object)
        iids = np.fromiter((int_id(i) for i in self._ids), np.int64, len(self._ids))
        self._order = np.argsort(iids, kind="stable")
        self._sorted_iids = iids[self._order]
        if len(np.unique(self._sorted_iids)) != len(iids):
            raise StoreError(
                f"collection {self.name}: two different ids hash to one int64; rename one of them"
            )

    def rows_of(self, iids: np.ndarray) -> np.ndarray:
        """Row of each int64 id (-1 where absent)."""
        if not len(self._sorted_iids):
            return np.full(len(iids), -1, np.int64)
        pos = np.searchsorted(self._sorted_iids, iids).clip(0, len(self._sorted_iids) - 1)
        return np.where(self._sorted_iids[pos] == iids, self._order[pos], -1)

    def ids(self) -> list[str]:
        return list(self._ids)

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Add items, replacing those whose id is already here."""
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise StoreError(f"collection {self.name}: the same id twice in one write ({_first_dup(ids)!r})")
        x = _unit(vectors, self.dim, f"collection {self.name}")
        if len(x) != len(ids):
            raise StoreError(f"collection {self.name}: {len(ids)} ids but {len(x)} vectors")
        rows = [dict(m) for m in (metadata or [{} for _ in ids])]
        for i, row in zip(ids, rows, strict=True):
            _check_own_id(self.name, i, row)
            row["id"] = i
        new, as_text = _metadata_table(rows, f"collection {self.name}")
        self.delete(ids)
        if len(self):
            new, merged = _merge_metadata(self.meta, new)
            as_text.update(merged)
        self.meta = new
        self.as_text.update(as_text)
        self.vectors = np.concatenate([self.vectors, x]) if len(self.vectors) else x
        self._reindex_ids()
        self._add_to_index(np.fromiter((int_id(i) for i in ids), np.int64, len(ids)), x)

    add = upsert

    def delete(self, ids: Sequence[str]) -> int:
        """Remove these ids (absent ones are ignored); how many were removed."""
        if not len(self) or not ids:
            return 0
        iids = np.fromiter((int_id(str(i)) for i in ids), np.int64, len(ids))
        rows = self.rows_of(iids)
        rows = rows[rows >= 0]
        if not len(rows):
            return 0
        import faiss

        keep = np.ones(len(self), bool)
        keep[rows] = False
        self.vectors = self.vectors[keep]
        self.meta = self.meta.filter(pa.array(keep))
        if self.index is not None:
            self.index.remove_ids(faiss.IDSelectorBatch(iids[self.rows_of(iids) >= 0]))
        self._reindex_ids()
        return len(rows)

    def _add_to_index(self, iids: np.ndarray, x: np.ndarray) -> None:
        wanted = self.index_factory
        if self.index is None or self.built_factory != wanted:
            self.build_index()  # a new or outgrown index: built from every vector
            return
        self.index.add_with_ids(x, iids)

    def build_index(self) -> None:
        """(Re)build the FAISS index from the vectors (training an IVF index on a sample)."""
        import faiss

        factory = self.index_factory
        try:
            index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise StoreError(
                f"FAISS cannot build index {factory!r}: {str(e).strip().splitlines()[-1]}"
            ) from e
        if not index.is_trained:
            n_lists = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 1
            if len(self.vectors) < n_lists:
                raise StoreError(
                    f"index {factory!r} needs at least {n_lists} vectors to train, has {len(self.vectors)}"
                )
            rng = np.random.default_rng(0)
            sample = self.vectors[
                rng.choice(len(self.vectors), min(len(self.vectors), 64 * n_lists), replace=False)
            ]
            index.train(sample)
        iids = np.fromiter((int_id(i) for i in self._ids), np.int64, len(self._ids))
        if len(iids):
            index.add_with_ids(self.vectors, iids)
        self.index, self.built_factory = index, factory
        if faiss.try_extract_index_ivf(index) is not None and len(self) > 1000:
            self.nprobe = self.calibrate()

    def calibrate(self, target: float = RECALL_TARGET, queries: int = 200) -> int:
        """The smallest nprobe (lists an IVF search visits), from 1/64 of the lists up, whose
        recall@10 against exact search reaches `target`, measured with a sample of the
        collection's own vectors as queries (each one's exact 10 nearest others as the truth)."""
        import faiss

        ivf = faiss.extract_index_ivf(self.index)
        rng = np.random.default_rng(1)
        pick = rng.choice(len(self), min(queries, len(self)), replace=False)
        q = self.vectors[pick]
        _, exact = faiss.knn(q, self.vectors, 11, faiss.METRIC_INNER_PRODUCT)
        truth = [set(row[row != p][:10].tolist()) for row, p in zip(exact, pick, strict=True)]
        # a floor of 1/64 of the lists: queries unlike the collection's own vectors (other topics)
        # need more lists than its own vectors do (1M synthetic vectors: recall@10 0.81 at 16 lists
        # of 4,000 for such queries, 0.955 at 64)
        nprobe = max(16, ivf.nlist // 64)
        while True:
            self.nprobe = min(nprobe, ivf.nlist)
            _, rows = self.search_rows(q, 11)
            got = [set(row[row != p][:10].tolist()) for row, p in zip(rows, pick, strict=True)]
            recall = float(np.mean([len(g & t) / max(len(t), 1) for g, t in zip(got, truth, strict=True)]))
            if recall >= target or self.nprobe >= ivf.nlist:
                return self.nprobe
            nprobe *= 2

    def search(self, queries: np.ndarray, k: int, where: Filter | None = None) -> list[list[Hit]]:
        """The k items closest to each query (rows of float32[m, dim]), best first."""
        q = _unit(queries, self.dim, f"query of collection {self.name}")
        scores, rows = self.search_rows(q, k, where)
        return [self._hits(s, r) for s, r in zip(scores, rows, strict=True)]

    def search_rows(
        self, q: np.ndarray, k: int, where: Filter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of float32/int64[m, ≤k]; row -1 where fewer than k items exist."""
        import faiss

        if not len(self) or k < 1:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        k = min(k, len(self))
        allowed = None
        if where:
            self._check_columns(where)
            allowed = self._allowed(where)
            if len(allowed) == 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            if len(allowed) < EXACT_BELOW or len(allowed) <= k:
                return _exact(q, self.vectors, allowed, k)
        if self.index is None:
            self.build_index()
        params: Any = None
        ivf = faiss.try_extract_index_ivf(self.index)
        if allowed is not None:
            sel = self._selector(where, allowed)  # type: ignore[arg-type]
            if ivf is not None:  # fewer ids in each list: probe more lists, in proportion
                share = len(allowed) / len(self)
                params = faiss.SearchParametersIVF(
                    sel=sel,  # type: ignore[call-arg]
                    nprobe=min(ivf.nlist, math.ceil(self.nprobe / share)),
                )
            else:
                params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
        elif ivf is not None:
            params = faiss.SearchParametersIVF(nprobe=min(ivf.nlist, self.nprobe))  # type: ignore[call-arg]
        wide = min(len(self), k * RERANK) if ivf is not None else k
        scores, iids = self.index.search(q, wide, params=params)
        rows = self.rows_of(iids.reshape(-1)).reshape(iids.shape)
        rows[iids < 0] = -1
        if ivf is not None:  # quantized scores: re-rank the candidates exactly with the kept vectors
            exact = np.einsum("md,mkd->mk", q, self.vectors[np.maximum(rows, 0)])
            exact[rows < 0] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            rows = np.take_along_axis(rows, order, 1)
            scores = np.take_along_axis(exact, order, 1).astype(np.float32)
        return scores, rows

    def _allowed(self, where: Filter) -> np.ndarray:
        """Rows the filter lets through (the last few filters' answers are kept until a write)."""
        if where not in self._filters:
            if len(self._filters) >= 8:
                self._filters.clear()
            self._filters[where] = (np.flatnonzero(where.mask(self.meta)), None)
        return self._filters[where][0]

    def _selector(self, where: Filter, allowed: np.ndarray) -> Any:
        import faiss

        rows, sel = self._filters[where]
        if sel is None:
            iids = self._sorted_iids[np.argsort(self._order)][allowed]  # each row's int64 id
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(iids))
            self._filters[where] = (rows, sel)
        return sel

    def _check_columns(self, where: Filter) -> None:
        missing = [c for c in where.columns() if c not in self.meta.column_names]
        if missing:
            cols = ", ".join(c for c in self.meta.column_names if c != "id")
            raise StoreError(f"collection {self.name} has no column {missing[0]!r}; its columns: {cols}")

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        keep = rows >= 0
        rows, scores = rows[keep], scores[keep]
        metas = self.meta.take(pa.array(rows)).to_pylist() if len(rows) else []
        out = []
        for score, m in zip(scores.tolist(), metas, strict=True):
            key = m.pop("id")
            out.append(Hit(key, float(score), m))
        return out

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Each id's metadata and vector (`"vector"`), None where absent."""
        rows = self.rows_of(np.fromiter((int_id(str(i)) for i in ids), np.int64, len(ids)))
        out: list[dict[str, Any] | None] = []
        for r in rows.tolist():
            if r < 0:
                out.append(None)
                continue
            m = self.meta.slice(r, 1).to_pylist()[0]
            m["vector"] = self.vectors[r]
            out.append(m)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "count": len(self),
            "factory": self.index_factory,
            "auto": self.factory is None,
            "nprobe": self.nprobe,
        }

    def write(self, folder: Path) -> dict[str, Path]:
        """Write the collection's files (`FILES`) into `folder` under temporary names, for the caller
        to rename into place: {file name: its temporary file}. On failure none is left behind."""
        import faiss

        if self.index is None:
            self.build_index()
        tmp = {name: _temp_file(folder / name) for name in FILES}
        try:
            faiss.write_index(self.index, str(tmp["index.faiss"]))
            with open(tmp["vectors.npy"], "wb") as f:
                np.save(f, self.vectors, allow_pickle=False)
            pq.write_table(self.meta, tmp["meta.parquet"], compression="zstd")
        except BaseException:
            for path in tmp.values():
                path.unlink(missing_ok=True)
            raise
        return tmp

    @classmethod
    def read(cls, folder: Path, name: str, spec: dict[str, Any], verify: bool) -> FaissCollection:
        """The collection in `folder`; with `verify`, each file is first checked against its sha256
        in the manifest (`spec["files"]`), so a damaged or replaced file is named before it is read."""
        import faiss

        files = spec.get("files", {})
        for fname in FILES:
            path = folder / fname
            if not path.is_file():
                raise StoreError(f"{path}: missing, so the store is incomplete; {_rebuild(folder.parent)}")
            if verify and sha256(path) != files.get(fname):
                raise StoreError(
                    f"{path}: does not match its checksum in the store's manifest (damaged or replaced); "
                    f"{_rebuild(folder.parent)}"
                )
        vectors = _read_file(folder / "vectors.npy", lambda p: np.load(p, allow_pickle=False))
        meta = _read_file(folder / "meta.parquet", pq.read_table)
        index = _read_file(folder / "index.faiss", lambda p: faiss.read_index(str(p)))
        if vectors.ndim != 2 or vectors.shape != (meta.num_rows, int(spec["dim"])):
            raise StoreError(
                f"{folder}: vectors of shape {vectors.shape}, but {meta.num_rows} rows of metadata and "
                f"{spec['dim']} dimensions in the manifest; {_rebuild(folder.parent)}"
            )
        col = cls(
            name,
            int(spec["dim"]),
            None if spec.get("auto", True) else spec["factory"],
            int(spec.get("nprobe", 64)),
            vectors,
            meta,
            None,
        )
        if index.ntotal != len(col) or index.d != col.dim:
            raise StoreError(
                f"{folder}: the index holds {index.ntotal} vectors of {index.d} dimensions, the metadata "
                f"{len(col)} of {col.dim}; {_rebuild(folder.parent)}"
            )
        col.index, col.built_factory = index, spec["factory"]
        return col


def _read_file(path: Path, load: Callable[[Path], Any]) -> Any:
    """`load(path)`, a file that cannot be read as what it should be being a StoreError naming it."""
    try:
        return load(path)
    except (RuntimeError, ValueError, OSError, EOFError, pa.ArrowException) as e:
        first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise StoreError(f"{path}: cannot be read ({first}); {_rebuild(path.parent.parent)}") from e


def _exact(q: np.ndarray, vectors: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ vectors[allowed].T
    k = min(k, len(allowed))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(sims, top, 1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top_scores, order, 1).astype(np.float32), allowed[
        np.take_along_axis(top, order, 1)
    ]


def _first_dup(ids: Sequence[str]) -> str:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return ""


@dataclass
class FaissStore:
    """A store in a folder: `collection(name)` to read and write, `save()` to persist."""

    path: Path
    manifest: dict[str, Any]
    collections: dict[str, FaissCollection]
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    engine = "faiss"

    def collection(self, name: str) -> FaissCollection:
        if name not in self.collections:
            raise StoreError(
                f"{self.path}: no collection {name!r}; it has {', '.join(self.collections) or 'none'}"
            )
        return self.collections[name]

    def create_collection(self, name: str, dim: int, factory: str | None = None) -> FaissCollection:
        _check_name("collection", name)
        if name in self.collections:
            col = self.collections[name]
            if col.dim != dim:
                raise StoreError(
                    f"{self.path}: collection {name} holds {col.dim}-dimensional vectors, not {dim}"
                )
            return col
        self.collections[name] = FaissCollection(name, dim, factory)
        return self.collections[name]

    def save(self) -> None:
        """Write every collection's files beside the old ones under temporary names; once all are
        written, rename each onto its own name, then write the manifest with their checksums. Only
        the store's own files are replaced: anything else in its folders stays. A failed write
        leaves the previous store whole; a crash among the renames leaves files that no longer match
        the manifest's checksums, which `open_store` reports."""
        with self._lock:
            made = [p for p in (self.path, *(self.path / n for n in self.collections)) if not p.is_dir()]
            written: dict[str, dict[str, Path]] = {}
            specs = {}
            try:
                for folder in made:
                    folder.mkdir(parents=True)
                for name, col in self.collections.items():
                    written[name] = col.write(self.path / name)
                    digests = {fname: sha256(tmp) for fname, tmp in written[name].items()}
                    specs[name] = {**col.info(), "files": digests}
            except BaseException:
                for tmp in (t for files in written.values() for t in files.values()):
                    tmp.unlink(missing_ok=True)
                for folder in reversed(made):
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
                raise
            for files in written.values():
                for fname, tmp in files.items():
                    os.replace(tmp, tmp.parent / fname)
            self.manifest = {**self.manifest, "collections": specs}
            write_json(self.path / "manifest.json", self.manifest)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------- Milvus


@dataclass
class MilvusCollection:
    """One collection on Milvus: primary key `int_id(id)`, the vector, `id`, the list columns as
    arrays, every other metadata column as a dynamic field."""

    client: Any
    name: str
    dim: int
    engine = "milvus"

    def __len__(self) -> int:
        return int(self.client.query(self.name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[dict[str, Any]] | None = None
    ) -> None:
        ids = [str(i) for i in ids]
        x = _unit(vectors, self.dim, f"collection {self.name}")
        rows = []
        for i, v, m in zip(ids, x, metadata or [{} for _ in ids], strict=True):
            _check_own_id(self.name, i, m)
            row = {k: val for k, val in m.items() if val is not None}
            for column in LIST_COLUMNS:
                row[column] = [str(e) for e in row.get(column) or []][:4096]
            row.update(pk=int_id(i), id=i, vector=v.tolist())
            rows.append(row)
        for lo in range(0, len(rows), 2000):
            self.client.upsert(self.name, rows[lo : lo + 2000])

    add = upsert

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        keys = [int_id(str(i)) for i in ids]
        present = [r["pk"] for r in self.client.get(self.name, ids=keys, output_fields=["pk"])]
        if present:
            self.client.delete(self.name, ids=present)
        return len(present)

    def search(self, queries: np.ndarray, k: int, where: Filter | None = None) -> list[list[Hit]]:
        q = _unit(queries, self.dim, f"query of collection {self.name}")
        if k < 1:
            return [[] for _ in q]
        for column, _ in where.where if where else ():
            _check_name("column", column)
        res = self.client.search(
            self.name,
            data=q.tolist(),
            limit=min(k, 16384),
            filter=where.milvus_expr() if where else "",
            output_fields=["*"],
            search_params={"metric_type": "IP"},
        )
        out = []
        for hits in res:
            row = []
            for h in hits:
                m = dict(h["entity"])
                for drop in ("pk", "vector"):
                    m.pop(drop, None)
                key = m.pop("id")
                row.append(Hit(key, float(h["distance"]), m))
            out.append(row)
        return out

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        keys = [int_id(str(i)) for i in ids]
        found = {r["pk"]: r for r in self.client.get(self.name, ids=keys)} if keys else {}
        out: list[dict[str, Any] | None] = []
        for key in keys:
            r = found.get(key)
            if r is None:
                out.append(None)
                continue
            r = dict(r)
            r.pop("pk", None)
            r["vector"] = np.asarray(r["vector"], np.float32)
            out.append(r)
        return out

    def info(self) -> dict[str, Any]:
        return {"dim": self.dim, "count": len(self), "index": "FLAT" if len(self) < IVF_FROM else "IVF_FLAT"}


@dataclass
class MilvusStore:
    """A store in Milvus (Lite or a server): the same interface as `FaissStore`."""

    address: str
    client: Any
    manifest: dict[str, Any]
    collections: dict[str, MilvusCollection]
    engine = "milvus"

    @property
    def path(self) -> str:
        return self.address

    def collection(self, name: str) -> MilvusCollection:
        if name not in self.collections:
            raise StoreError(
                f"{self.address}: no collection {name!r}; it has {', '.join(self.collections) or 'none'}"
            )
        return self.collections[name]

    def create_collection(self, name: str, dim: int, factory: str | None = None) -> MilvusCollection:
        from pymilvus import DataType, MilvusClient

        _check_name("collection", name)
        if name in self.collections:
            return self.collections[name]
        if not self.client.has_collection(name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
            schema.add_field("pk", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("id", DataType.VARCHAR, max_length=1024)
            for column in LIST_COLUMNS:
                schema.add_field(
                    column, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4096, max_length=256
                )
            params = self.client.prepare_index_params()
            params.add_index(field_name="vector", index_type=factory or "FLAT", metric_type="IP")
            self.client.create_collection(name, schema=schema, index_params=params)
        self.collections[name] = MilvusCollection(self.client, name, dim)
        return self.collections[name]

    def save(self) -> None:
        """Seal what was written (Milvus indexes sealed segments; rows still in a growing segment
        are searched by brute force, 1 s a query at 100k) and record the manifest."""
        for name in self.collections:
            self.client.flush(name)
        specs = {name: col.info() for name, col in self.collections.items()}
        self.manifest = {**self.manifest, "collections": specs}
        _milvus_write_manifest(self.client, self.manifest)

    def close(self) -> None:
        """Close the connection; for Milvus Lite also stop its embedded server, so that another
        process may open the file."""
        self.client.close()
        if not self.address.startswith("milvus://"):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.address.removeprefix("milvus:"))


def _milvus_client(address: str) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as e:
        raise StoreError(
            f"{address}: Milvus needs pymilvus (and milvus-lite for a .db file): pip install pymilvus milvus-lite"
        ) from e
    import logging

    # Milvus Lite logs its own tracebacks (a locked file) and gRPC's (a call it does not implement)
    for name in ("milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    uri = address.removeprefix("milvus:")
    if address.startswith("milvus://"):
        uri = "http://" + address.removeprefix("milvus://")
    elif not uri.endswith(".db"):
        raise StoreError(
            f"{address}: a Milvus Lite store is a file ending in .db (milvus:PATH.db), or give milvus://HOST:PORT"
        )
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri)
    except Exception as e:
        if "lock" in repr(e).lower() or "Failed to start MilvusLite" in str(e):
            raise StoreError(
                f"{address}: another process has this Milvus Lite file open (Milvus Lite serves one process "
                "at a time); stop it, or move the store to a Milvus server (milvus://HOST:PORT) for several"
            ) from e
        raise StoreError(f"{address}: cannot open Milvus ({str(e).strip().splitlines()[0][:200]})") from e


def _milvus_read_manifest(client: Any) -> dict[str, Any] | None:
    if not client.has_collection(MILVUS_MANIFEST):
        return None
    client.load_collection(MILVUS_MANIFEST)
    rows = client.get(MILVUS_MANIFEST, ids=[0])
    return json.loads(rows[0]["manifest"]) if rows else None


def _milvus_write_manifest(client: Any, manifest: dict[str, Any]) -> None:
    from pymilvus import DataType, MilvusClient

    if not client.has_collection(MILVUS_MANIFEST):
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        schema.add_field("manifest", DataType.VARCHAR, max_length=65535)
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        client.create_collection(MILVUS_MANIFEST, schema=schema, index_params=params)
    client.upsert(MILVUS_MANIFEST, [{"pk": 0, "vector": [0.0, 0.0], "manifest": json.dumps(manifest)}])


# ---------------------------------------------------------------------------------------- opening

Store = FaissStore | MilvusStore


def is_milvus(address: str | Path) -> bool:
    return str(address).startswith("milvus:")


def new_manifest(encoder: dict[str, Any] | None) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kgpipe_version": version("kgpipe"),
        "metric": METRIC,
        "encoder": encoder or {},
        "collections": {},
    }


def _check_manifest(manifest: dict[str, Any], where: str) -> None:
    if manifest.get("format") != FORMAT:
        raise StoreError(
            f"{where}: not a kgpipe store (format {manifest.get('format')!r}); build one with `kgpipe index EXTRACT_DIR --out STORE`"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{where}: store format version {manifest.get('format_version')}, this kgpipe reads version {FORMAT_VERSION}; "
            "rebuild it with `kgpipe index`"
        )


def open_store(address: str | Path, *, verify: bool = True) -> Store:
    """Open an existing store: a folder (FAISS) or `milvus:PATH.db` / `milvus://HOST:PORT`.
    `verify` checks every file of a FAISS store against its sha256 in the manifest before reading
    it, so that a damaged or replaced file is named rather than read: a second pass over the files
    at about 1.2 GB/s, which the loading then reads from the page cache (200k 384-d documents,
    588 MB: 0.5 s of a 1.2 s open; a million, 1.9 GB with their IVF index: about 1.6 s)."""
    if is_milvus(address):
        address = str(address)
        if not address.startswith("milvus://") and not Path(address.removeprefix("milvus:")).exists():
            raise StoreError(
                f"{address}: no such Milvus Lite file; build it with `kgpipe index EXTRACT_DIR --out {address}`"
            )
        client = _milvus_client(address)
        manifest = _milvus_read_manifest(client)
        if manifest is None:
            raise StoreError(
                f"{address}: not a kgpipe store (no {MILVUS_MANIFEST} collection); build it with `kgpipe index`"
            )
        _check_manifest(manifest, address)
        for name in manifest["collections"]:
            client.load_collection(name)  # a reopened collection is "released" until loaded
        cols = {n: MilvusCollection(client, n, int(s["dim"])) for n, s in manifest["collections"].items()}
        return MilvusStore(address, client, manifest, cols)
    path = Path(address)
    file = path / "manifest.json"
    if not file.is_file():
        raise StoreError(
            f"{path}: no store here (no manifest.json); build one with `kgpipe index EXTRACT_DIR --out {path}`"
        )
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"{file}: not valid JSON ({e}); rebuild the store with `kgpipe index`") from e
    _check_manifest(manifest, str(path))
    faiss_cols = {n: FaissCollection.read(path / n, n, s, verify) for n, s in manifest["collections"].items()}
    return FaissStore(path, manifest, faiss_cols)


def create_store(address: str | Path, encoder: dict[str, Any] | None = None) -> Store:
    """A new, empty store at `address` (nothing is written until `save`). An existing store there
    is opened instead when its encoder is the same, so it can grow; another encoder is an error, and
    so is a store there that cannot be opened (damaged): it is never written over."""
    store = None
    if is_milvus(address):
        try:
            store = open_store(address)
        except StoreError:
            store = None
    elif (Path(address) / "manifest.json").is_file():
        store = open_store(address)
    if store is not None:
        theirs = store.manifest.get("encoder", {}).get("model_id")
        if encoder and theirs and theirs != encoder.get("model_id"):
            raise StoreError(
                f"{address}: built with encoder {store.manifest['encoder'].get('name')} ({theirs}), not "
                f"{encoder.get('name')} ({encoder.get('model_id')}); write to a new store or delete this one"
            )
        return store
    if is_milvus(address):
        client = _milvus_client(str(address))
        return MilvusStore(str(address), client, new_manifest(encoder), {})
    path = Path(address)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StoreError(f"{path}: exists and is not a kgpipe store; give a new or empty folder")
    return FaissStore(path, new_manifest(encoder), {})
