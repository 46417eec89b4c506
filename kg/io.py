"""Loaders for KG formats (one registry, detected from the files present) and the kgpipe layout.

Every reader validates as it goes and fails with `file:line`, the offending text and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from kg.errors import KGFormatError, UnknownFormatError
from kg.graph import SPLITS, KnowledgeGraph
from kg.settings import describe
from kg.storage import atomic_dir, sha256, write_json

Unseen = Literal["add", "drop", "error"]
QID = re.compile(r"Q\d+")
PID = re.compile(r"P\d+")
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "dev"), "test": ("test",)}
MANIFEST_FORMAT = "kgpipe-kg"


@dataclass(frozen=True)
class KGFormat:
    """One entry of the loader registry."""

    name: str
    description: str
    delimiter: str | None  # None: JSON lines
    extensions: tuple[str, ...]
    enrich: Callable[[Path, _Builder], None] | None = None


# ---- reading triples -------------------------------------------------------------------------
class _Builder:
    """Grows vocabularies while triple files are read; applies the `unseen` rule to valid/test."""

    def __init__(self, unseen: Unseen) -> None:
        self.unseen = unseen
        self.entities: dict[str, int] = {}
        self.relations: dict[str, int] = {}
        self.triples: dict[str, np.ndarray] = {}
        self.meta: dict[str, dict[str, object]] = {}
        self.relation_labels: dict[str, str] = {}
        self.dropped: dict[str, int] = {}

    def add_split(self, split: str, rows: Iterator[tuple[int, str, str, str]], path: Path) -> None:
        ents, rels = self.entities, self.relations
        out: list[tuple[int, int, int]] = []
        grow = split == "train" or self.unseen == "add"
        dropped = 0
        for line, h, r, t in rows:
            if not grow and (h not in ents or t not in ents):
                if self.unseen == "error":
                    missing = h if h not in ents else t
                    raise KGFormatError(
                        path,
                        line,
                        f"entity {missing!r} does not occur in the train split",
                        "Pass --unseen add to give it a vector anyway or --unseen drop to skip such triples",
                    )
                dropped += 1
                continue
            hi = ents.setdefault(h, len(ents))
            ti = ents.setdefault(t, len(ents))
            out.append((hi, rels.setdefault(r, len(rels)), ti))
        self.triples[split] = np.array(out, dtype=np.int32).reshape(-1, 3)
        if dropped:
            self.dropped[split] = dropped

    def set_meta(self, key: str, **values: object) -> None:
        if key in self.entities:
            self.meta.setdefault(key, {}).update({k: v for k, v in values.items() if v})

    def build(self, name: str, source: str) -> KnowledgeGraph:
        keys = list(self.entities)
        meta = [self.meta.get(k, {}) for k in keys]
        rel_keys = list(self.relations)
        return KnowledgeGraph(
            entities=keys,
            relations=rel_keys,
            triples=self.triples,
            qids=[
                str(m.get("qid") or (k if QID.fullmatch(k) else "")) for k, m in zip(keys, meta, strict=True)
            ],
            labels=[str(m.get("label", "")) for m in meta],
            aliases=[list(m.get("aliases", [])) for m in meta],  # type: ignore[call-overload]
            descriptions=[str(m.get("description", "")) for m in meta],
            types=[list(m.get("types", [])) for m in meta],  # type: ignore[call-overload]
            relation_labels=[self.relation_labels.get(r, "") for r in rel_keys],
            name=name,
            source=source,
        )


def _delimited_rows(path: Path, delimiter: str) -> Iterator[tuple[int, str, str, str]]:
    shown = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for number, raw in enumerate(f, 1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split(delimiter)
                if len(fields) != 3 or not all(x.strip() for x in fields):
                    raise KGFormatError(
                        path,
                        number,
                        f"expected 3 {shown}-separated fields (head, relation, tail), got {len(fields)}: {line[:80]!r}",
                        "Fix or delete the line, or pass --format if this is not a "
                        f"{shown}-separated triple file",
                    )
                yield number, fields[0].strip(), fields[1].strip(), fields[2].strip()
        except UnicodeDecodeError as e:
            raise KGFormatError(
                path, None, f"not UTF-8 text ({e.reason} at byte {e.start})", "Re-encode as UTF-8"
            ) from e


SURROGATE = re.compile(r"[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """`text` with each lone UTF-16 surrogate ('\\ud800' escapes in JSON, which no UTF-8 text can
    hold) replaced by U+FFFD, one character for one, so character offsets stay valid."""
    return SURROGATE.sub("\ufffd", text) if SURROGATE.search(text) else text


def _clean(value: object) -> object:
    """A parsed JSON value with every string freed of lone surrogates."""
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {without_surrogates(k): _clean(v) for k, v in value.items()}
    return value


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) for each non-blank line; bad JSON or non-objects fail with file:line."""
    path = Path(path)
    if path.is_dir():
        raise KGFormatError(path, None, "is a folder, not a JSONL file", "Give the path of a .jsonl file")
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError as e:
        raise KGFormatError(
            path, None, f"not UTF-8 text ({e.reason} at byte {e.start})", "Re-encode as UTF-8"
        ) from e
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if "\\u" in raw:  # only an escape can make a lone surrogate
                obj = _clean(obj)
        except (ValueError, RecursionError) as e:  # bad JSON, a 5000-digit number, nesting too deep
            reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)[:80] or "nested too deeply"
            raise KGFormatError(
                path,
                number,
                f"invalid JSON ({reason}): {raw.strip()[:80]!r}",
                "Write one JSON object per line",
            ) from e
        if not isinstance(obj, dict):
            raise KGFormatError(
                path,
                number,
                f"expected a JSON object, got {raw.strip()[:80]!r}",
                "Write one JSON object per line",
            )
        yield number, obj


def _jsonl_rows(path: Path) -> Iterator[tuple[int, str, str, str]]:
    for number, obj in read_json_lines(path):
        values = [obj.get(k) for k in ("head", "relation", "tail")]
        if not all(isinstance(v, str | int) and str(v).strip() for v in values):
            raise KGFormatError(
                path,
                number,
                f"expected string fields 'head', 'relation', 'tail', got {json.dumps(obj)[:80]}",
                'Write lines like {"head": "Q42", "relation": "P31", "tail": "Q5"}',
            )
        yield number, str(values[0]).strip(), str(values[1]).strip(), str(values[2]).strip()


def _load_json(path: Path) -> object:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise KGFormatError(path, e.lineno, f"invalid JSON ({e.msg})", "Repair the file or remove it") from e
    except (ValueError, RecursionError) as e:
        raise KGFormatError(
            path, None, f"invalid JSON ({str(e)[:80]})", "Repair the file or remove it"
        ) from e


def _read_text(path: Path) -> str:
    """A whole side file as text; bytes that are not UTF-8 fail with the file and the fix."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KGFormatError(
            path, None, f"not UTF-8 text ({e.reason} at byte {e.start})", "Re-encode as UTF-8"
        ) from e


# ---- side files (names, aliases, descriptions, types) ----------------------------------------
class EntityRecord(BaseModel):
    """One entity's names in a side file, typed: a number is no label, a string no alias list.
    FB15k-237's `wikidata_id` and `alternatives` are read as `qid` and `aliases`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    qid: str | None = Field(None, validation_alias=AliasChoices("qid", "wikidata_id"))
    label: str | None = None
    aliases: list[str] | None = Field(None, validation_alias=AliasChoices("aliases", "alternatives"))
    description: str | None = None
    types: list[str] | None = None
    wikipedia: str | None = None  # FB15k-237: the entity's Wikipedia article


_TYPES = TypeAdapter(dict[str, list[str]])


def _records(path: Path, obj: object, line: int | None = None) -> dict[str, EntityRecord]:
    """{key: record} from a JSON object keyed by entity, each value checked."""
    fix = 'Write {"KEY": {"label": "...", "aliases": ["..."], "description": "..."}, ...}'
    if not isinstance(obj, dict):
        raise KGFormatError(
            path, line or 1, f"expected a JSON object keyed by entity, got {str(obj)[:60]}", fix
        )
    out = {}
    for key, value in obj.items():
        try:
            out[str(key)] = EntityRecord.model_validate(value)
        except ValidationError as e:
            raise KGFormatError(path, line, f"entity {key!r}: {describe(e)}", fix) from e
    return out


def read_entity_records(path: Path) -> dict[str, EntityRecord]:
    """A JSON object of entity records keyed by entity (FB15k-237's `entity2wikidata.json`)."""
    return _records(path, _load_json(path))


def _set_names(b: _Builder, key: str, r: EntityRecord) -> None:
    b.set_meta(
        key,
        qid=r.qid or "",
        label=r.label or "",
        aliases=r.aliases or [],
        description=r.description or "",
        types=r.types or [],
    )


def _enrich_fb15k(folder: Path, b: _Builder) -> None:
    path = folder / "entity2wikidata.json"
    for mid, record in _records(path, _load_json(path)).items():
        _set_names(b, mid, record)
    _relation_text(folder, b)


def _enrich_wn18rr(folder: Path, b: _Builder) -> None:
    path = folder / "entity2text.txt"
    for number, raw in enumerate(_read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        key, sep, text = raw.rstrip("\r\n").partition("\t")
        if not sep:
            raise KGFormatError(
                path,
                number,
                f"expected 'offset<TAB>lemma, gloss', got {raw.strip()[:80]!r}",
                "Fix the line",
            )
        lemma, _, gloss = text.partition(", ")
        b.set_meta(key, label=lemma.strip(), description=gloss.strip())
    _relation_text(folder, b)


def _relation_text(folder: Path, b: _Builder) -> None:
    path = folder / "relation2text.txt"
    if not path.exists():
        return
    for raw in _read_text(path).splitlines():
        key, _, text = raw.rstrip("\r\n").partition("\t")
        if text:
            b.relation_labels[key] = text.strip()


def _enrich_wikidata(folder: Path, b: _Builder) -> None:
    """CoDEx/WD50K: QID keys; types and relation labels from CoDEx side files here or in ../codex."""
    for place in (folder, folder.parent / "codex"):
        types_path = place / "entity2types.json"
        if types_path.exists():
            try:
                types = _TYPES.validate_python(_load_json(types_path), strict=True)
            except ValidationError as e:
                raise KGFormatError(types_path, None, describe(e), 'Write {"Q42": ["Q5"], ...}') from e
            for qid, ts in types.items():
                b.set_meta(qid, types=ts)
        rel_path = place / "relations.json"
        if rel_path.exists():
            for pid, r in _records(rel_path, _load_json(rel_path)).items():
                if pid in b.relations and r.label:
                    b.relation_labels.setdefault(pid, r.label)
        ent_path = place / "entities.json"
        if ent_path.exists():
            for qid, r in _records(ent_path, _load_json(ent_path)).items():
                _set_names(b, qid, r)


def _enrich_entities_jsonl(folder: Path, b: _Builder) -> None:
    """Optional `entities.jsonl` in any folder: `id` plus `qid`, `label`, `aliases`, `description`, `types`."""
    path = folder / "entities.jsonl"
    if not path.exists():
        return
    for number, obj in read_json_lines(path):
        key = obj.get("id")
        if not isinstance(key, str) or not key:
            raise KGFormatError(
                path,
                number,
                f"missing string field 'id': {json.dumps(obj)[:80]}",
                "Give every entity an 'id' as used in the triples",
            )
        _set_names(b, key, _records(path, {key: obj}, number)[key])


FORMATS: dict[str, KGFormat] = {
    f.name: f
    for f in [
        KGFormat(
            "fb15k-237",
            "Freebase MIDs, tab-separated; entity2wikidata.json for QIDs and names",
            "\t",
            ("txt",),
            _enrich_fb15k,
        ),
        KGFormat(
            "wn18rr",
            "WordNet offsets, tab-separated; entity2text.txt for lemmas and glosses",
            "\t",
            ("txt",),
            _enrich_wn18rr,
        ),
        KGFormat(
            "codex",
            "Wikidata QID/PID triples, tab-separated; CoDEx types when present",
            "\t",
            ("txt", "tsv"),
            _enrich_wikidata,
        ),
        KGFormat("wd50k", "Wikidata QID/PID triples, comma-separated", ",", ("txt", "csv"), _enrich_wikidata),
        KGFormat("tsv", "head<TAB>relation<TAB>tail", "\t", ("tsv", "txt")),
        KGFormat("csv", "head,relation,tail", ",", ("csv", "txt")),
        KGFormat("jsonl", '{"head", "relation", "tail"} per line', None, ("jsonl",)),
        KGFormat(
            "kgpipe",
            "kgpipe's own layout: manifest.json, entities.parquet, relations.parquet, triples.npz",
            None,
            (),
        ),
    ]
}


# ---- detection -------------------------------------------------------------------------------
def _split_file(folder: Path, split: str, extensions: tuple[str, ...]) -> Path | None:
    for stem in SPLIT_NAMES[split]:
        for ext in extensions:
            p = folder / f"{stem}.{ext}"
            if p.exists():
                return p
    return None


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.rstrip("\r\n")
    return ""


def detect_format(path: Path) -> str:
    """The registry name of the format of `path` (a folder of splits or a single triple file)."""
    if path.is_file():
        ext = path.suffix.lstrip(".").lower()
        if ext == "jsonl":
            return "jsonl"
        return "csv" if ext == "csv" or "\t" not in _first_line(path) else "tsv"
    if (path / "manifest.json").exists():
        return "kgpipe"
    if (path / "entity2wikidata.json").exists():
        return "fb15k-237"
    if (path / "entity2text.txt").exists():
        return "wn18rr"
    if _split_file(path, "train", ("jsonl",)):
        return "jsonl"
    train = _split_file(path, "train", ("txt", "tsv", "csv"))
    if train is None:
        present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise UnknownFormatError(
            f"{path}: no train split found (looked for train.txt/.tsv/.csv/.jsonl or manifest.json; found {present}). "
            f"Point at a KG folder or a triple file, or pass --format ({', '.join(FORMATS)})"
        )
    first = _first_line(train)
    tabbed = "\t" in first
    fields = first.split("\t" if tabbed else ",")
    wikidata = len(fields) == 3 and QID.fullmatch(fields[0]) and PID.fullmatch(fields[1])
    if tabbed:
        return "codex" if wikidata else "tsv"
    return "wd50k" if wikidata else "csv"


def load_kg(
    path: str | Path, format: str | None = None, unseen: Unseen = "add", name: str | None = None
) -> KnowledgeGraph:
    """Load a KG folder (train/valid/test splits plus side files) or a single triple file.

    `format` is a name in `FORMATS`, detected when None. `unseen` says what to do with valid/test
    entities that never occur in train: give them ids (`add`), skip the triples (`drop`) or fail.
    """
    path = Path(path)
    if not path.exists():
        raise UnknownFormatError(
            f"{path}: no such file or folder. Give the path of a KG folder or a triple file"
        )
    if not path.is_file() and not path.is_dir():
        raise UnknownFormatError(
            f"{path}: neither a folder nor a regular file. Give the path of a KG folder or a triple file"
        )
    fmt_name = format or detect_format(path)
    fmt = FORMATS.get(fmt_name)
    if fmt is None:
        raise UnknownFormatError(f"unknown KG format {fmt_name!r}. Use one of: {', '.join(FORMATS)}")
    if fmt.name == "kgpipe":
        return load_saved(path)
    b = _Builder(unseen)
    if path.is_file():
        b.add_split("train", _rows(fmt, path), path)
        folder = path.parent
    else:
        folder = path
        for split in SPLITS:
            f = _split_file(path, split, fmt.extensions)
            if f is None and split == "train":
                raise UnknownFormatError(
                    f"{path}: no train split for format {fmt.name!r} (looked for train.{'/.'.join(fmt.extensions)})"
                )
            if f is not None:
                b.add_split(split, _rows(fmt, f), f)
        if fmt.enrich is not None:
            fmt.enrich(path, b)
    _enrich_entities_jsonl(folder, b)
    if not len(b.triples.get("train", ())):
        where = path if path.is_file() else _split_file(path, "train", fmt.extensions) or path
        raise KGFormatError(
            where, None, "no triples in the train split", "Give a KG with at least one (head, relation, tail)"
        )
    return b.build(name or (path.stem if path.is_file() else path.name), f"{fmt.name}:{path}")


def _rows(fmt: KGFormat, path: Path) -> Iterator[tuple[int, str, str, str]]:
    return _jsonl_rows(path) if fmt.delimiter is None else _delimited_rows(path, fmt.delimiter)


# ---- the kgpipe layout -----------------------------------------------------------------------
def save_kg(kg: KnowledgeGraph, out: str | Path) -> Path:
    """Write `kg` to folder `out` (replaced atomically): Parquet + npz + a JSON manifest."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        entities = pa.table(
            {
                "key": kg.entities,
                "qid": kg.qids,
                "label": kg.labels,
                "aliases": pa.array(kg.aliases, type=pa.list_(pa.string())),
                "description": kg.descriptions,
                "types": pa.array(kg.types, type=pa.list_(pa.string())),
            }
        )
        pq.write_table(entities, tmp / "entities.parquet", compression="zstd")
        pq.write_table(
            pa.table({"key": kg.relations, "label": kg.relation_labels}),
            tmp / "relations.parquet",
            compression="zstd",
        )
        np.savez_compressed(tmp / "triples.npz", **kg.triples)  # type: ignore[arg-type]
        files = ("entities.parquet", "relations.parquet", "triples.npz")
        write_json(
            tmp / "manifest.json",
            {
                "format": MANIFEST_FORMAT,
                "version": 1,
                "name": kg.name,
                "source": kg.source,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "counts": kg.summary(),
                "sha256": {f: sha256(tmp / f) for f in files},
            },
        )
    return out


def load_saved(folder: str | Path, verify: bool = True) -> KnowledgeGraph:
    """Open a folder written by `save_kg`; checksums are verified unless `verify` is False."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise KGFormatError(
            folder,
            None,
            "no manifest.json, so not a kgpipe KG folder",
            "Leave out --format kgpipe, or write one with `kgpipe kg convert`",
        )
    manifest = _load_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise KGFormatError(
            manifest_path, 1, "not a kgpipe KG manifest", "Recreate it with `kgpipe kg convert`"
        )
    checksums: dict[str, str] = manifest.get("sha256", {})
    for name, digest in checksums.items():
        if not (folder / name).exists():
            raise KGFormatError(
                folder / name,
                None,
                "missing file listed in manifest.json",
                "Recreate the folder with `kgpipe kg convert`",
            )
        if verify and sha256(folder / name) != digest:
            raise KGFormatError(
                folder / name,
                None,
                "checksum differs from manifest.json (file changed or truncated)",
                "Recreate the folder with `kgpipe kg convert`",
            )
    ents = pq.read_table(folder / "entities.parquet").to_pydict()
    rels = pq.read_table(folder / "relations.parquet").to_pydict()
    with np.load(folder / "triples.npz", allow_pickle=False) as z:
        triples = {k: z[k] for k in z.files}
    return KnowledgeGraph(
        entities=ents["key"],
        relations=rels["key"],
        triples=triples,
        qids=ents["qid"],
        labels=ents["label"],
        aliases=ents["aliases"],
        descriptions=ents["description"],
        types=ents["types"],
        relation_labels=rels["label"],
        name=str(manifest.get("name", folder.name)),
        source=str(manifest.get("source", "")),
    )


def data_root() -> Path:
    """The folder of bundled defaults: `KGPIPE_DATA`, else the project's `data/`."""
    from kg.settings import settings

    return settings().data


def bundled_kg_path() -> Path:
    """The default bundle's KG (shipped: FB15k-237 with Wikidata names)."""
    from kg.manifest import default_part

    return default_part("kg")


def bundled_transe_path() -> Path:
    """The default bundle's TransE checkpoint."""
    from kg.manifest import default_part

    return default_part("transe")
