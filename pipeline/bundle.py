"""`Bundle`: every model kgpipe runs, loaded once from one folder, safe to share between threads.

A bundle is a folder with `manifest.json` and parts `kg/`, `transe/`, `linker/`, optional
`classifiers/NAME/` and `store/` (see `kg.manifest`). `load(path)` checks every file's sha256 and
that the parts fit together, then loads them; `load()` opens the defaults shipped in `data/` by the
same code. The CLI, the batch job and the API all go through it.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kg.errors import KGFormatError
from kg.manifest import FILE, FORMAT_VERSION, Part, default_bundle, read_manifest, write_manifest
from kg.storage import OutputError, atomic_dir, check_output

if TYPE_CHECKING:
    from collections.abc import Sequence

    from encoders.entities import EntityFinder
    from encoders.model import KnowledgeEncoder
    from encoders.relations import RelationModel
    from encoders.text import TextEncoder
    from kg.embed.checkpoint import EntityVectors
    from kg.graph import KnowledgeGraph
    from kg.link.linker import LinkedEntity, Linker
    from pipeline.classify import Classification
    from pipeline.extract import FactModel
    from pipeline.search import Searcher

MIN_TRANSE_SHARE = 0.5  # TransE must know at least this share of the KG's entities to belong to it


@dataclass
class Bundle:
    """The loaded parts of one bundle. `link` and `encode` may be called from many threads at once."""

    path: Path
    manifest: dict[str, Any]
    parts: dict[str, Part]
    kg: KnowledgeGraph
    transe: EntityVectors
    text: TextEncoder
    min_score: float | None = None
    _linker: Linker | None = field(default=None, repr=False)
    _facts: FactModel | None = field(default=None, repr=False)
    _linkers: dict[str, Linker] = field(default_factory=dict, repr=False)
    _searcher: Searcher | None = field(default=None, repr=False)
    _classifiers: dict[str, KnowledgeEncoder] = field(default_factory=dict, repr=False)
    _relations: RelationModel | None = field(default=None, repr=False)
    _finder: EntityFinder | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def linker(self) -> Linker:
        """The linker over the bundle's KG (loaded on first use when the bundle was opened with
        `eager=False`; loading takes a few seconds: spaCy, the alias tables, the entity vectors)."""
        with self._lock:
            if self._linker is None:
                from kg.link.linker import Linker

                self._linker = Linker.load(
                    self.parts["linker"].path,
                    self.kg,
                    embed=self.text.embedder(),
                    transe=self.transe,
                    min_score=self.min_score,
                )
            return self._linker

    @property
    def facts(self) -> FactModel:
        """Known facts by pair and TransE's relation plausibility (built on first use)."""
        with self._lock:
            if self._facts is None:
                from pipeline.extract import FactModel

                self._facts = FactModel(self.kg, self.transe)
            return self._facts

    @property
    def has_relations(self) -> bool:
        """Whether the bundle holds a relation extraction model (part `relations`)."""
        return "relations" in self.parts

    @property
    def relations(self) -> RelationModel:
        """The document-level relation extraction model, loaded on first use."""
        with self._lock:
            if self._relations is None:
                from encoders.relations import RelationModel
                from kg.errors import KGPipeError

                if not self.has_relations:
                    raise KGPipeError(
                        f"bundle {self.path} has no relation model: train one with `kgpipe relations train` "
                        "and add it with `kgpipe bundle build --relations DIR`"
                    )
                self._relations = RelationModel.load(self.parts["relations"].path)
            return self._relations

    @property
    def entity_finder(self) -> EntityFinder:
        """NER (values included), sentences and the bundle's linker, for relation extraction."""
        with self._lock:
            if self._finder is None:
                from encoders.entities import EntityFinder

                self._finder = EntityFinder(self.linker)
            return self._finder

    @property
    def fingerprint(self) -> str:
        """16 hex digits over every part's checksum: what outputs made with this bundle depend on."""
        return fingerprint(self.parts)

    def link(
        self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]] | None] | None = None
    ) -> list[list[LinkedEntity]]:
        """Each text's linked entities (offsets into the text, Wikidata QIDs, scores); `spans`, per
        text, disambiguates only those spans (None for a text: its mentions are found)."""
        return self.linker.link_many(texts, spans)

    def link_with_vectors(self, texts: Sequence[str]) -> tuple[list[list[LinkedEntity]], np.ndarray]:
        """`link`, and each text's document vector as linking computes it (the text model over the
        opening 400 characters of each 20,000-character piece, averaged): free beside linking."""
        linked, vectors = self.linker.link_with_vectors(texts)
        dim = self.text.hidden_size
        return linked, np.stack(
            [v if v is not None else np.zeros(dim, np.float32) for v in vectors]
        ) if vectors else np.zeros((0, dim), np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32[len(texts), hidden]: unit document vectors from the bundle's text model (mean
        pooled over at most 256 word pieces), what the vector store indexes."""
        return self.text.embed(list(texts), max_length=256).numpy()

    @property
    def classifiers(self) -> list[str]:
        """Names of the bundle's classifiers (`classifiers/NAME` parts)."""
        return sorted(n.split("/", 1)[1] for n in self.parts if n.startswith("classifiers/"))

    def classifier(self, name: str | None = None) -> KnowledgeEncoder:
        """The classifier `name` (default: the first), loaded on first use."""
        from pipeline.classify import ClassifierError

        names = self.classifiers
        if not names:
            raise ClassifierError(
                f"bundle {self.path} has no classifier: train one with `kgpipe encoder finetune` and add "
                "it with `kgpipe bundle build --classifier NAME=DIR`"
            )
        name = name or names[0]
        if name not in names:
            raise ClassifierError(f"no classifier {name!r} in bundle {self.path}; it has {', '.join(names)}")
        with self._lock:
            if name not in self._classifiers:
                from encoders.model import KnowledgeEncoder

                self._classifiers[name] = KnowledgeEncoder.load(self.parts[f"classifiers/{name}"].path)
            return self._classifiers[name]

    def classify(
        self,
        texts: Sequence[str],
        name: str | None = None,
        focus: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> list[Classification]:
        """Each text's label, per-label probabilities and the entities the classifier read."""
        from pipeline.classify import classify

        model = self.classifier(name)
        return classify(self, model, name or self.classifiers[0], texts, focus)

    @property
    def searcher(self) -> Searcher:
        """Search over the bundle's store (opened on first use); an error when it has none."""
        with self._lock:
            if self._searcher is None:
                from pipeline.search import Searcher
                from pipeline.store import StoreError

                if "store" not in self.parts:
                    raise StoreError(
                        f"bundle {self.path} has no store: build one with `kgpipe index EXTRACT_DIR --out STORE` "
                        "and add it with `kgpipe bundle build --store STORE`"
                    )
                self._searcher = Searcher.open(self.parts["store"].path, self)
            return self._searcher

    def linker_for(self, kg: KnowledgeGraph) -> Linker:
        """A linker over another KG with this bundle's scorer and names (its entity vectors are
        computed once and cached); the bundle's own linker when `kg` is the bundle's KG."""
        if kg.fingerprint == self.kg.fingerprint:
            return self.linker
        with self._lock:
            if kg.fingerprint not in self._linkers:
                from kg.link.linker import Linker

                self._linkers[kg.fingerprint] = Linker.load(
                    self.parts["linker"].path,
                    kg,
                    same_kg=False,
                    nlp=self.linker.nlp,
                    embed=self.linker.embed,
                    transe=self.transe,
                    min_score=self.min_score,
                )
            return self._linkers[kg.fingerprint]

    def linker_to_train(self, kg: KnowledgeGraph | None = None) -> Linker:
        """A new linker over `kg` (default the bundle's) with the bundle's names and entity vectors
        and an untrained scorer, which `kgpipe link train` fits. The bundle's scorer is not read:
        one saved by an older kgpipe (other features) must not stop its own retraining."""
        from kg.link.linker import Linker

        kg = kg if kg is not None else self.kg
        return Linker.load(
            self.parts["linker"].path,
            kg,
            same_kg=kg.fingerprint == self.kg.fingerprint,
            trained=False,
            embed=self.text.embedder(),
            transe=self.transe,
        )

    def info(self) -> dict[str, Any]:
        return bundle_info(self.manifest)


def fingerprint(parts: dict[str, Part]) -> str:
    """16 hex digits over the checksums of the parts extraction reads — the KG, TransE, the linker —
    (`Bundle.fingerprint`, without loading anything). The store (made from extraction's output)
    and the classifiers (extraction does not read them) are left out, so adding either to a
    bundle does not make earlier extractions stale."""
    import hashlib

    h = hashlib.sha256()
    for name, part in sorted(parts.items()):
        if name == "store" or name.startswith("classifiers/"):
            continue
        h.update(f"{name}\t{part.sha256}\n".encode())
    return h.hexdigest()[:16]


def load(
    path: str | Path | None = None,
    *,
    verify: bool = True,
    min_score: float | None = None,
    eager: bool = True,
) -> Bundle:
    """Open the bundle at `path` (default: `KGPIPE_BUNDLE`, else the shipped defaults in `data/`).

    Every file is checked against its sha256 first (unless `verify` is False), then the parts
    are checked to fit: TransE trained on the bundle's KG, a linker built for it. `eager` loads
    the linker now (a server or a worker), not on its first use (a command that may not link).
    """
    from encoders.text import TextEncoder
    from kg.embed.checkpoint import EntityVectors
    from kg.io import load_saved
    from kg.link.linker import check_built_for

    root = Path(path) if path is not None else default_bundle()
    manifest, parts = read_manifest(root, verify=verify)
    kg = load_saved(parts["kg"].path, verify=False)  # verified above with the bundle
    transe = EntityVectors.load(parts["transe"].path)
    check_transe(transe, kg, parts["transe"].path)
    check_built_for(parts["linker"].path, kg, "the bundle's")
    bundle = Bundle(root, manifest, parts, kg, transe, TextEncoder.load(), min_score)
    if eager:
        _ = bundle.linker
    return bundle


def check_transe(transe: EntityVectors, kg: KnowledgeGraph, where: Path) -> None:
    """Refuse TransE vectors that know too few of `kg`'s entities: trained on another KG."""
    rows, _ = transe.align(kg)
    share = float((rows >= 0).mean()) if len(rows) else 0.0
    if share < MIN_TRANSE_SHARE:
        raise KGFormatError(
            where,
            None,
            f"this TransE checkpoint knows {share:.0%} of the KG's entities: it was trained on another KG",
            "Train one on this KG with `kgpipe kg train KG --out DIR` and pass --transe DIR",
        )


def bundle_info(manifest: dict[str, Any]) -> dict[str, Any]:
    """What `kgpipe bundle info --json` prints: versions and each part's source and checksum."""
    parts = {
        name: {
            "path": entry["path"],
            "source": entry.get("source", ""),
            "sha256": entry["sha256"],
            "files": len(entry["files"]),
        }
        for name, entry in manifest["parts"].items()
    }
    keep = ("format", "format_version", "kgpipe_version", "created", "text_model", "spacy_model")
    return {**{k: manifest[k] for k in keep if k in manifest}, "parts": parts}


def build(
    out: str | Path,
    kg: str | Path | None = None,
    transe: str | Path | None = None,
    linker: str | Path | None = None,
    classifiers: dict[str, Path] | None = None,
    force: bool = False,
    store: str | Path | None = None,
    relations: str | Path | None = None,
) -> dict[str, Any]:
    """Write a bundle folder (atomically) from parts; each one left out comes from the default
    bundle. A KG other than the default's gets a linker with the default's scorer and names and
    its own entity vectors, unless `linker` is given; TransE must come with such a KG."""
    from encoders.model import KnowledgeEncoder
    from encoders.text import TextEncoder
    from kg.embed.checkpoint import EntityVectors
    from kg.io import load_kg, save_kg
    from kg.link.linker import Linker, check_built_for

    out = Path(out)
    inputs = tuple(
        Path(p)
        for p in (kg, transe, linker, store, relations, *(classifiers or {}).values())
        if p is not None
    )
    if store is not None:
        from pipeline.store import StoreError, is_milvus, open_store

        if is_milvus(store):
            raise StoreError(
                f"{store}: a bundle holds a FAISS store folder; a Milvus store stays in Milvus (give its "
                "address to `kgpipe search` and `kgpipe serve --store`)"
            )
        open_store(store, verify=True)  # a damaged store fails here, not at serving time
    check_output(out, "kgpipe-bundle", inputs, force)
    base_manifest, base = read_manifest(default_bundle(), verify=True)
    base_kg = load_kg(base["kg"].path)
    graph = load_kg(kg) if kg is not None else base_kg
    own_kg = graph.fingerprint == base_kg.fingerprint
    if transe is None and not own_kg:
        raise OutputError(
            f"{kg}: a KG other than the default's needs its own TransE vectors: "
            "train them with `kgpipe kg train KG --out DIR` and pass --transe DIR"
        )
    transe_dir = Path(transe) if transe is not None else base["transe"].path
    vectors = EntityVectors.load(transe_dir)
    check_transe(vectors, graph, transe_dir)
    text = TextEncoder.load()
    if linker is not None:
        check_built_for(Path(linker), graph)  # refuses one built for another KG, loading nothing
    sources = {
        "kg": str(kg) if kg is not None else base["kg"].source,
        "transe": str(transe) if transe is not None else base["transe"].source,
        "linker": str(linker) if linker is not None else base["linker"].source,
    }
    with atomic_dir(out) as tmp:
        save_kg(graph, tmp / "kg")
        shutil.copytree(transe_dir, tmp / "transe")
        if linker is not None:
            shutil.copytree(linker, tmp / "linker")
        elif own_kg:
            shutil.copytree(base["linker"].path, tmp / "linker")
        else:  # the default scorer and names over the new KG, its entity vectors computed here
            Linker.load(base["linker"].path, graph, same_kg=False, embed=text.embedder()).save(tmp / "linker")
            sources["linker"] = f"{base['linker'].source}; entity vectors computed for {graph.name}"
        parts = {"kg": "kg", "transe": "transe", "linker": "linker"}
        given = dict(classifiers or {})
        for part_name, part in base.items():  # the default bundle's classifiers, unless given
            if part_name.startswith("classifiers/") and part_name.split("/", 1)[1] not in given:
                given[part_name.split("/", 1)[1]] = part.path
                sources[part_name] = part.source
        for name, folder in given.items():
            KnowledgeEncoder.load(folder)  # a damaged classifier fails here, not at serving time
            shutil.copytree(folder, tmp / "classifiers" / name)
            parts[f"classifiers/{name}"] = f"classifiers/{name}"
            sources.setdefault(f"classifiers/{name}", str(folder))
        relations_dir = (
            Path(relations)
            if relations is not None
            else (base["relations"].path if "relations" in base else None)
        )
        if relations_dir is not None:
            from encoders.relations import RelationModel

            RelationModel.load(relations_dir)  # a damaged model fails here, not at extraction time
            shutil.copytree(relations_dir, tmp / "relations")
            parts["relations"] = "relations"
            sources["relations"] = str(relations) if relations is not None else base["relations"].source
        if store is not None:
            shutil.copytree(store, tmp / "store")
            parts["store"] = "store"
            sources["store"] = str(store)
        extra: dict[str, Any] = {
            k: base_manifest[k] for k in ("text_model", "spacy_model") if k in base_manifest
        }
        return write_manifest(tmp, parts, sources, extra)


__all__ = ["FILE", "FORMAT_VERSION", "Bundle", "build", "bundle_info", "load"]
