"""Indexing `kgpipe extract` output into a vector store, and searching it by text or by entity.

A store made from an extraction has two collections:

- `docs`: each document's vector (the text model over its opening, as `kgpipe extract` wrote it),
  with its metadata: every input column (title, ...), `source` (the input file's name),
  `entities` (the QIDs it mentions) and `types` (their coarse KG types: PER, LOC, ORG, ...).
- `entities`: every KG entity with a QID and its TransE vector (neighbours in graph space), with
  `label`, `description`, `type` and `mentions` (how many indexed documents mention it).

Text queries are encoded by the text model that made the document vectors; the store's manifest
names it, and a search with another model is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from kg.errors import KGPipeError
from pipeline.store import FaissCollection, Filter, Hit, Store, StoreError, create_store, open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kg.graph import KnowledgeGraph
    from pipeline.bundle import Bundle

QUERY_MAX_LENGTH = 128  # word pieces: the document vectors are made with the linker's embedder at 128
NEIGHBOURS = 10  # graph neighbours whose documents answer an entity that no document mentions


@dataclass
class IndexSummary:
    store: str
    documents: int
    skipped: int
    entities: int
    total_documents: int = 0
    # metadata columns stored as text because their values had several types: {column: the types}
    as_text: dict[str, str] = field(default_factory=dict)


def encoder_identity(bundle: Bundle) -> dict[str, Any]:
    """What the store records of the text model that made its vectors."""
    embed = bundle.text.embedder(max_length=QUERY_MAX_LENGTH)
    return {
        "name": bundle.manifest.get("text_model", {}).get("name", str(bundle.text.path)),
        "model_id": embed.model_id,  # type: ignore[attr-defined]
        "max_length": QUERY_MAX_LENGTH,
        "bundle": bundle.fingerprint,
    }


def _read_extraction(folder: Path) -> tuple[dict[str, Any], Any, Any, Any, dict[str, str]]:
    """The manifest of an extraction, its documents, entities and facts, and each docs file's input file
    name. Reads exactly the files `_manifest.json` lists, each checked against its sha256 first:
    other Parquet files in the folder (an earlier run's partitions) are never read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kg.storage import sha256

    def marker_source(partition: str) -> str:  # for manifests written before they named sources
        try:
            marker = json.loads((folder / "_done" / f"{partition}.json").read_text(encoding="utf-8"))
            return Path(str(marker["spec"]["source"])).name
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    manifest_file = folder / "_manifest.json"
    again = f"run `kgpipe extract INPUT... --out {folder}` again: it re-extracts damaged partitions"
    if not manifest_file.is_file():
        raise StoreError(
            f"{folder}: no _manifest.json, so not a finished `kgpipe extract` output; run "
            f"`kgpipe extract INPUT... --out {folder}` (again, to finish it) first"
        )
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        listed = [
            (
                Path(str(p.get("source") or "")).name,
                {
                    t: (str(p["files"][t]["file"]), str(p["files"][t]["sha256"]))
                    for t in ("docs", "entities", "facts")
                    if t in p["files"]
                },
            )
            for p in manifest["partitions"]
        ]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise StoreError(
            f"{manifest_file}: not a readable extraction manifest ({type(e).__name__}); {again}"
        ) from e
    root = folder.resolve()
    files: dict[str, list[Path]] = {"docs": [], "entities": [], "facts": []}
    sources: dict[str, str] = {}  # doc file name -> its input file's name
    for source, named in listed:
        for table, (name, digest) in named.items():
            path = folder / name
            if not path.resolve().is_relative_to(root):
                raise StoreError(f"{manifest_file}: lists {name}, outside the folder; {again}")
            if not path.is_file():
                raise StoreError(f"{path}: listed in {manifest_file.name} but missing; {again}")
            if sha256(path) != digest:
                raise StoreError(
                    f"{path}: damaged (its sha256 is not the one {manifest_file.name} lists); {again}"
                )
            files[table].append(path)
        docs_file = Path(named["docs"][0])
        sources[docs_file.name] = source or marker_source(docs_file.stem.removeprefix("part-"))

    def read(table: str, columns: list[str], empty: pa.Schema) -> pa.Table:
        parts = [t for t in (pq.read_table(f, columns=columns) for f in files[table]) if t.num_rows]
        return pa.concat_tables(parts) if parts else empty.empty_table()

    docs = read(
        "docs",
        ["doc_id", "vector", "metadata"],
        pa.schema([("doc_id", pa.string()), ("vector", pa.list_(pa.float32())), ("metadata", pa.string())]),
    )
    ents = read(
        "entities",
        ["doc_id", "start", "qid", "kg_type"],
        pa.schema(
            [("doc_id", pa.string()), ("start", pa.int32()), ("qid", pa.string()), ("kg_type", pa.string())]
        ),
    )
    facts = read(
        "facts",
        ["doc_id", "relation", "source"],
        pa.schema([("doc_id", pa.string()), ("relation", pa.string()), ("source", pa.string())]),
    )
    return manifest, docs, ents, facts, sources


def index_extraction(
    extraction: str | Path,
    out: str | Path,
    bundle: Bundle,
    factory: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IndexSummary:
    """Add the documents of a `kgpipe extract` folder to the store at `out` (created if new); a
    store that already holds some of them adds only the others."""
    folder = Path(extraction)
    manifest, docs, ents, facts, sources = _read_extraction(folder)
    made_with = manifest.get("bundle")
    if made_with and made_with != bundle.fingerprint:
        raise StoreError(
            f"{folder}: extracted with bundle {made_with}, but the bundle given is {bundle.fingerprint}; "
            "index with the bundle that extracted it (--bundle)"
        )
    store = create_store(out, encoder_identity(bundle))
    dim = bundle.text.hidden_size
    doc_col = store.create_collection("docs", dim, factory)
    ids = [str(i) for i in docs.column("doc_id").to_pylist()]
    have = {str(r["id"]) for r in doc_col.get(ids) if r is not None} if ids and len(doc_col) else set()
    new = [i for i, d in enumerate(ids) if d not in have]
    new_ids = {ids[i] for i in new}
    mentions: dict[str, list[str]] = {}
    types: dict[str, set[str]] = {}
    opening: dict[str, str] = {}  # doc id -> the entity whose name opens its text
    columns = ("doc_id", "start", "qid", "kg_type")
    for d, start, q, t in zip(*(ents.column(c).to_pylist() for c in columns), strict=True):
        if str(d) in new_ids:
            mentions.setdefault(str(d), []).append(q)
            if t:
                types.setdefault(str(d), set()).add(t)
            if start <= OPENS_AT and str(d) not in opening:
                opening[str(d)] = q
    stated: dict[str, set[str]] = {}  # doc id -> the relations its text states
    for d, r, src in zip(
        *(facts.column(c).to_pylist() for c in ("doc_id", "relation", "source")), strict=True
    ):
        if src == "text" and str(d) in new_ids:
            stated.setdefault(str(d), set()).add(str(r))
    vectors = (
        docs.column("vector").combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
        if ids
        else np.zeros((0, dim), np.float32)
    )
    if vectors.shape[1] != dim:
        raise StoreError(
            f"{folder}: document vectors of {vectors.shape[1]} dimensions, the bundle's text model makes {dim}"
        )
    metas = docs.column("metadata").to_pylist()
    source_of = _sources_per_row(folder, sources)
    subject_type = _SubjectTypes(bundle.kg)
    batch = 5000
    for lo in range(0, len(new), batch):
        rows = new[lo : lo + batch]
        meta = []
        for i in rows:
            m = _flat(json.loads(metas[i]) if metas[i] else {})
            m["source"] = source_of.get(ids[i], "")
            m["entities"] = sorted(set(mentions.get(ids[i], [])))
            m["types"] = subject_type(m.get("title"), opening.get(ids[i]))
            m["mention_types"] = sorted(types.get(ids[i], set()))
            m["relations"] = sorted(stated.get(ids[i], set()))
            meta.append(m)
        doc_col.upsert([ids[i] for i in rows], vectors[rows], meta)
        if progress:
            progress(min(lo + batch, len(new)), len(new))
    n_entities = _index_entities(store, bundle, mentions, subject_type.types)
    store.save()
    total = len(doc_col)
    store.close()
    as_text = dict(doc_col.as_text) if isinstance(doc_col, FaissCollection) else {}
    return IndexSummary(str(out), len(new), len(ids) - len(new), n_entities, total, as_text)


OPENS_AT = 4  # a mention starting this close to the text's start names its subject ('"Paris', 'The Beatles')


class _SubjectTypes:
    """A document's `types`: the KG's coarse type (PER, LOC, ORG, WORK, LANG; see
    `kg.link.context.coarse_types`) of the entity it is about, where the KG holds that entity. The
    entity is the one whose KG label is the document's `title`, else the one whose name opens its
    text (a Wikipedia lead names its subject first); a document about something the KG does not hold
    has none. The types of everything a document mentions are `mention_types`."""

    def __init__(self, kg: KnowledgeGraph) -> None:
        from kg.link.context import coarse_types

        self.kg = kg
        self.types = coarse_types(kg)
        self.by_label: dict[str, int] = {}
        for i, label in enumerate(kg.labels):
            if label and kg.qids[i]:  # a title's first letter is a capital ('Jazz' is jazz)
                self.by_label.setdefault(label[:1].upper() + label[1:], i)

    def __call__(self, title: object, opening_qid: str | None) -> list[str]:
        i = self.by_label.get(title[:1].upper() + title[1:]) if isinstance(title, str) else None
        if i is None and opening_qid and self.kg.has_entity(opening_qid):
            i = self.kg.entity_id(opening_qid)
        return [self.types[i]] if i is not None and self.types[i] else []


def _sources_per_row(folder: Path, sources: dict[str, str]) -> dict[str, str]:
    """doc id -> the name of the input file it came from."""
    out: dict[str, str] = {}
    for name, source in sorted(sources.items()):  # the docs files the manifest lists, checked
        ids = pq.read_table(folder / "docs" / name, columns=["doc_id"]).column("doc_id").to_pylist()
        out.update((str(d), source) for d in ids)
    return out


def _flat(metadata: dict[str, Any]) -> dict[str, Any]:
    """Input columns as store metadata: scalars as they are, anything else as JSON text; a column
    named like one the store sets itself gets the prefix `input_`."""
    out: dict[str, Any] = {}
    for k, v in metadata.items():
        key = (
            f"input_{k}"
            if k in ("id", "pk", "entities", "types", "mention_types", "relations", "source", "vector")
            else k
        )
        out[key] = (
            v if v is None or isinstance(v, str | int | float | bool) else json.dumps(v, ensure_ascii=False)
        )
    return out


def _index_entities(store: Store, bundle: Bundle, mentions: dict[str, list[str]], kinds: list[str]) -> int:
    """Write the entities collection the first time (every KG entity with a QID and a TransE vector)
    and add the newly indexed documents' mentions to each entity's `mentions` count."""
    import pyarrow as pa

    kg, transe = bundle.kg, bundle.transe
    col = store.create_collection("entities", int(transe.matrix.shape[1]))
    counts: dict[str, int] = {}
    for qids in mentions.values():
        for q in set(qids):
            counts[q] = counts.get(q, 0) + 1
    if len(col):  # vectors unchanged: only the counts move
        if isinstance(col, FaissCollection):
            ids = col.meta.column("id").to_pylist()
            current = col.meta.column("mentions").to_pylist()
            fresh = pa.array([c + counts.get(i, 0) for i, c in zip(ids, current, strict=True)], pa.int64())
            where = col.meta.column_names.index("mentions")
            col.meta = col.meta.set_column(where, "mentions", fresh)
        else:
            keys = [q for q in counts if q]
            found = [(q, r) for q, r in zip(keys, col.get(keys), strict=True) if r is not None]
            if found:
                vecs = np.stack([r.pop("vector") for _, r in found])
                for q, r in found:
                    r.pop("id", None)
                    r["mentions"] = int(r.get("mentions", 0)) + counts[q]
                col.upsert([q for q, _ in found], vecs, [r for _, r in found])
        return len(col)
    keys, rows, meta = [], [], []
    for e, q in enumerate(kg.qids):
        if not q or not transe.has(q):
            continue
        keys.append(q)
        rows.append(transe.entity_id(q))
        meta.append(
            {
                "label": kg.labels[e],
                "description": kg.descriptions[e],
                "type": kinds[e],
                "mentions": counts.get(q, 0),
            }
        )
    unique = dict(zip(keys, range(len(keys)), strict=True)) if len(set(keys)) == len(keys) else None
    if unique is None:  # a QID on two KG entities: keep the first
        first: dict[str, int] = {}
        for i, q in enumerate(keys):
            first.setdefault(q, i)
        pick = sorted(first.values())
        keys, rows, meta = [keys[i] for i in pick], [rows[i] for i in pick], [meta[i] for i in pick]
    matrix = transe.matrix.cpu().numpy()
    col.upsert(keys, matrix[np.array(rows, np.int64)], meta)
    return len(keys)


# ---------------------------------------------------------------------------------------- search


@dataclass
class Searcher:
    """Search one store: by text (with the text model that made it) and by entity."""

    store: Store
    encode: Callable[[list[str]], np.ndarray] | None = None

    @classmethod
    def open(cls, address: str | Path, bundle: Bundle | None = None) -> Searcher:
        store = open_store(address)
        return cls(store, _query_encoder(store, bundle) if bundle is not None else None)

    def _encoder(self) -> Callable[[list[str]], np.ndarray]:
        if self.encode is None:
            self.encode = _query_encoder(self.store, None)
        return self.encode

    def text(self, queries: Sequence[str], k: int = 10, where: Filter | None = None) -> list[list[Hit]]:
        """The k documents closest to each query text, best first; `where` filters before the search."""
        bad = [i for i, q in enumerate(queries) if not isinstance(q, str) or not q.strip()]
        if bad:
            raise KGPipeError(f"query {bad[0]} is empty; give the text to search for")
        if not queries:
            return []
        return self.store.collection("docs").search(self._encoder()(list(queries)), k, where)

    def names(self, *hit_lists: Sequence[Hit]) -> dict[str, str]:
        """QID -> name of every entity the hits mention (and of the entity hits themselves), from
        the store's entities collection: what people read beside the QIDs."""
        qids = sorted(
            {q for hits in hit_lists for h in hits for q in [*h.metadata.get("entities", []), h.id]}
        )
        if not qids:
            return {}
        try:
            entities = self.store.collection("entities")
        except StoreError:  # a store made by hand, without kgpipe's entities collection
            return {}
        found = entities.get(qids)
        return {q: str(r.get("label") or q) for q, r in zip(qids, found, strict=True) if r is not None}

    def entity(self, qid: str, k: int = 10, where: Filter | None = None) -> dict[str, Any]:
        """Documents about an entity and its neighbours in the KG's vector space.

        `hits`: documents that mention the entity, closest to its name first; when none does, the
        documents that mention its nearest graph neighbours (`via` says which). `neighbours`: the k
        entities closest to it in TransE space."""
        entities = self.store.collection("entities")
        found = entities.get([qid])[0]
        if found is None:
            raise KGPipeError(
                f"entity {qid!r} is not in this store's KG; give a Wikidata QID of the KG it was built with (e.g. Q90)"
            )
        neighbours = [h for h in entities.search(found["vector"][None, :], k + 1)[0] if h.id != qid][:k]
        query = self._encoder()([found.get("label") or qid])
        docs = self.store.collection("docs")
        base = where or Filter()
        hits = docs.search(query, k, Filter((qid,), base.types, base.where, base.relations))[0]
        via = [qid]
        if not hits:
            via = [h.id for h in neighbours[:NEIGHBOURS]]
            hits = (
                docs.search(query, k, Filter(tuple(via), base.types, base.where, base.relations))[0]
                if via
                else []
            )
        entity = {key: v for key, v in found.items() if key not in ("vector", "pk")}
        return {"entity": entity, "via": via, "hits": hits, "neighbours": neighbours}


def _query_encoder(store: Store, bundle: Bundle | None) -> Callable[[list[str]], np.ndarray]:
    """The text model that made the store's vectors, checked against the manifest."""
    from encoders.text import TextEncoder

    want = store.manifest.get("encoder", {})
    text = bundle.text if bundle is not None else TextEncoder.load()
    embed = text.embedder(max_length=int(want.get("max_length", QUERY_MAX_LENGTH)))
    have = embed.model_id  # type: ignore[attr-defined]
    if want.get("model_id") and want["model_id"] != have:
        raise StoreError(
            f"{store.path}: built with text model {want.get('name')} ({want['model_id']}), but the model here is "
            f"{text.path} ({have}); set KGPIPE_TEXT_MODEL (or --bundle) to the model that built the store"
        )
    return embed
