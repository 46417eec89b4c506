"""`Linker`: text → mentions → candidates → scored entities (QIDs), or NIL.

Build once per process (spaCy, alias matcher, KG context); `link_many` streams docs via `nlp.pipe`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kg.cache import TurnLock
from kg.embed.checkpoint import EntityVectors
from kg.errors import KGFormatError, KGPipeError
from kg.graph import KnowledgeGraph
from kg.io import without_surrogates
from kg.link.aliases import AliasTable, Candidate, normalize
from kg.link.candidates import CandidateGenerator, person_antecedents
from kg.link.context import Context
from kg.link.dense import DenseIndex, Embed, entity_vectors, vectors_file_name
from kg.link.disambiguate import Scorer
from kg.link.features import featurize
from kg.link.leads import load_names, save_names
from kg.link.mentions import Mention, MentionFinder, given_mentions
from kg.link.nlp import load_spacy
from kg.storage import atomic_dir, read_model_config, write_json

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

MAX_TEXT_BYTES = 100_000_000
DOC_CONTEXT_CHARS = 400  # the opening of a document that its context vector reads (about 80 word pieces)
# a longer text is linked as pieces of at most this many characters, cut between paragraphs (else
# lines, sentences, words): what coheres in a document (the collective pass, a surname after the
# full name) is near at hand, and comparing each mention with every other of a book would make the
# cost grow with the square of its length. 20k characters hold a long news article whole.
PIECE_CHARS = 20_000
# spaCy's tokenizer strips affixes off a word one at a time, each time searching the rest of the
# word: its cost grows with the square of a word's length (100,000 emoji took 204 s, and held the
# GIL all along). spaCy reads a copy of the text with a space put in every WORD_CHARS characters of
# a longer run without whitespace (a URL, an emoji wall, text in a script without spaces); offsets
# are the same, and mentions keep the original text
WORD_CHARS = 200
_LONG_RUN = re.compile(rf"\S{{{WORD_CHARS + 1},}}")
# and no piece of more than about this many words and symbols: spaCy's parser and NER hold the GIL
# for a whole document, and 20,000 emoji are 20,000 tokens (1.5 s of NER alone); English text
# has 4,000-5,500 in 20,000 characters, so its pieces are as before
PIECE_TOKENS = 6_000
_TOKEN = re.compile(r"\w+|[^\w\s]")
_CUTS = ("\n\n", "\n", ". ", "? ", "! ", "; ", " ")


class BadTextError(KGPipeError):
    """Input that is not linkable text: not a string, not UTF-8, or too long."""


def transe_rows(
    kg: KnowledgeGraph, vectors: EntityVectors | None, min_share: float = 0.0
) -> np.ndarray | None:
    """float32[num_entities, dim]: `kg`'s entities' TransE vectors as unit rows, zeros where none;
    None without vectors or when they cover less than `min_share` of `kg`'s entities."""
    if vectors is None:
        return None
    rows, _ = vectors.align(kg)
    if (rows >= 0).mean() < min_share:
        return None
    table = vectors.matrix.numpy().astype(np.float32)
    out = np.zeros((kg.num_entities, table.shape[1]), np.float32)
    out[rows >= 0] = table[rows[rows >= 0]]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)


@dataclass(frozen=True)
class LinkedEntity:
    """A mention with the entity chosen for it: `qid` is '' when the mention is NIL."""

    start: int
    end: int
    text: str
    qid: str
    score: float
    entity: int  # row in the KG, -1 for NIL
    label: str  # NER label of the mention


def check_text(text: object, where: str = "input") -> str:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadTextError(
                f"{where}: not UTF-8 ({e.reason} at byte {e.start}); re-encode the text as UTF-8"
            ) from e
    if not isinstance(text, str):
        raise BadTextError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    text = without_surrogates(text)
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise BadTextError(
            f"{where}: text is {len(text.encode('utf-8')):,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit; split it into documents"
        )
    return text


def text_pieces(
    text: str, limit: int = PIECE_CHARS, keep: Sequence[tuple[int, int]] = (), tokens: int = PIECE_TOKENS
) -> list[tuple[int, int]]:
    """[start, end) pieces of `text`, each at most `limit` characters and about `tokens` words or
    symbols (unless a span of `keep` is longer), cut at the last paragraph break of the window,
    else line break, sentence end or space, never inside a span of `keep`."""
    out, lo = [], 0
    while len(text) - lo > (size := _window(text, lo, limit, tokens)):
        window = text[lo : lo + size]
        cut = 0
        for sep in _CUTS:
            at = window.rfind(sep, size // 2)
            if at > 0:
                cut = lo + at + len(sep)
                break
        cut = cut or lo + size
        for s, e in keep:  # never through a given span: before it, or after it when it opens the piece
            if s < cut < e:
                cut = s if s > lo else e
        out.append((lo, cut))
        lo = cut
    out.append((lo, len(text)))
    return out


def _window(text: str, lo: int, limit: int, tokens: int) -> int:
    """How many characters from `lo` the next piece may hold: `limit`, or fewer where the text
    has more than `tokens` words and symbols in them (a text of emoji is a token a character)."""
    if len(text) - lo <= tokens:  # fewer characters than tokens allowed
        return limit
    found = _TOKEN.finditer(text, lo, lo + limit)
    nth = next(itertools.islice(found, tokens, None), None)
    return limit if nth is None else max(nth.start() - lo, 1)


def _by_size(items: range, sizes: list[int], most: int) -> list[list[int]]:
    """`items` in order, in groups whose `sizes` add up to about `most` (a larger item alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for item, size in zip(items, sizes, strict=True):
        if groups[-1] and total + size > most:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += size
    return [g for g in groups if g]


def short_words(text: str) -> str:
    """`text` with a space in place of every WORD_CHARS-th character of each run of more than
    WORD_CHARS non-space characters: the same length and offsets, and no word spaCy's tokenizer
    needs quadratic time for."""
    if _LONG_RUN.search(text) is None:
        return text

    def cut(run: re.Match[str]) -> str:
        word = run.group()
        return " ".join(word[i + 1 if i else 0 : i + WORD_CHARS] for i in range(0, len(word), WORD_CHARS))

    return _LONG_RUN.sub(cut, text)


def require_names(kg: KnowledgeGraph) -> KnowledgeGraph:
    """`kg`, if any of its entities has a name; the linker finds entities by their names."""
    if not any(kg.labels):
        raise KGPipeError(
            f"KG {kg.name!r} ({kg.source}): no entity has a name (label), and the linker finds "
            "entities by their names. Put an entities.jsonl with 'id' and 'label' per entity beside "
            "its triples (README: Knowledge graphs), or link to a KG with names such as the bundled FB15k-237"
        )
    return kg


LINKER_FORMAT = "kgpipe-linker/1"
FILE_META, FILE_SCORER, FILE_NAMES = "linker.json", "scorer.json", "names.parquet"


def check_built_for(folder: Path, kg: KnowledgeGraph | None, whose: str = "this") -> None:
    """Refuse a folder that is not a linker folder, or (given `kg`) one built for another KG: its
    linker.json names the fingerprint of the KG it was built for."""
    writer = "kgpipe link train"
    meta = read_model_config(folder, LINKER_FORMAT, "a linker folder", writer, FILE_META, FILE_SCORER)
    built_for: dict[str, object] = meta["kg"] if isinstance(meta.get("kg"), dict) else {}
    if kg is not None and built_for.get("fingerprint") != kg.fingerprint:
        raise KGFormatError(
            folder / FILE_META,
            None,
            f"the linker was built for KG {built_for.get('name')!r}, not {whose} {kg.name!r} "
            f"(fingerprints {built_for.get('fingerprint')} and {kg.fingerprint})",
            f"Build a linker for this KG with `{writer} --kg KG` (and `bundle build --linker`), or leave it out",
        )


def nil_threshold(label: str, names: float, concepts: float, nationality: float) -> float:
    """The score a mention with this label must reach to be linked: concepts (NOUN) and
    nationality words (NORP) have thresholds of their own, every other mention the names'."""
    return {"NOUN": concepts, "NORP": nationality}.get(label, names)


class Linker:
    """Entity linker over one KG. `min_score` overrides the scorer's NIL thresholds (all three).

    It reads no file by itself: its parts are given (`Linker(kg, scorer=..., ...)`), or read from
    a linker folder by `Linker.load(folder, kg, ...)`, the mirror of `save(folder)`; the bundle
    (`pipeline.load()`) resolves the defaults.
    """

    def __init__(
        self,
        kg: KnowledgeGraph,
        scorer: Scorer | None = None,
        spacy_model: str | None = None,
        min_score: float | None = None,
        nlp: Language | None = None,
        embed: Embed | None = None,
        transe: EntityVectors | None = None,
        other_names: Mapping[str, list[str]] | None = None,
        vectors_from: Path | None = None,
    ) -> None:
        """`scorer`: the trained scorer (an untrained one trusts prior and name). `nlp`: an
        already loaded spaCy pipeline to share (the spaCy component passes its own); otherwise
        `spacy_model` (a name, default the offline English pipeline) is loaded, NER only.
        `embed`: the text model for context similarity and dense candidates (None: off).
        `transe`: TransE vectors for graph coherence, used where they know at least half of `kg`'s
        entities (matched by key or QID). `other_names`: QID → names the KG lacks.
        `vectors_from`: a linker folder that may hold the entity vectors already computed."""
        require_names(kg)
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise KGPipeError(f"min_score must be a probability from 0 to 1, not {min_score}")
        self.kg = kg
        self.nlp = nlp if nlp is not None else load_spacy(spacy_model, enable=["ner"])
        # spaCy's pipeline and vocabulary are not made for concurrent calls: they take turns
        self._nlp_lock = TurnLock()  # in turn: a long text's next piece waits behind a short request
        self.other_names = dict(other_names or {})
        self.aliases = AliasTable.from_kg(kg, other_names=self.other_names)
        self.context = Context.build(kg)
        self.candidates = CandidateGenerator(self.context, self.aliases)
        self.finder = MentionFinder(
            self.nlp,
            self.aliases,
            names_something=self.candidates.names_something,
            proper_name=self._proper_name,
            concept=self._concept,
        )
        self.embed = embed
        if embed is not None:
            self.context.vectors = entity_vectors(kg, embed, vectors_from)
            self.candidates.dense = DenseIndex(self.context.vectors, embed)
        self.context.transe = transe_rows(kg, transe, min_share=0.5)
        self.scorer = scorer or Scorer()
        self.min_score = self.scorer.threshold if min_score is None else min_score

        # concepts ('physicist') have a threshold of their own: whether a corpus means them is
        # another question than which entity a name is; so have nationality words ('Japanese':
        # Japan?), which one corpus links and most do not (a given `min_score` sets all three)
        def own(trained: float | None) -> float:
            return self.min_score if min_score is not None or trained is None else trained

        self.concept_min_score = own(self.scorer.concept_threshold)
        self.nationality_min_score = own(self.scorer.nationality_threshold)
        # the text model reads in a second thread while spaCy tags (two cores for one call); a
        # process that is one of several workers on the machine turns it off and uses one core
        self.overlap = True

    @classmethod
    def load(
        cls,
        folder: str | Path,
        kg: KnowledgeGraph,
        *,
        same_kg: bool = True,
        trained: bool = True,
        **kwargs: object,
    ) -> Linker:
        """The linker saved in `folder` (by `save` or `kgpipe link train`) over `kg`. With
        `same_kg` (the default) the folder must have been built for this very KG; otherwise its
        scorer and names serve another KG, whose entity vectors are computed (and cached). Without
        `trained` its scorer is left unread (an untrained one in its place): what training starts
        from, so that a scorer saved by an older kgpipe does not stop its own retraining."""
        folder = Path(folder)
        check_built_for(folder, kg if same_kg else None)
        names = load_names(folder / FILE_NAMES) if (folder / FILE_NAMES).exists() else {}
        return cls(
            kg,
            scorer=Scorer.load(folder / FILE_SCORER) if trained else Scorer(),
            other_names=names,
            vectors_from=folder,
            **kwargs,  # type: ignore[arg-type]
        )

    def save(self, folder: str | Path) -> Path:
        """Write the folder atomically: linker.json (the KG it serves, the text model), scorer.json,
        names.parquet (the names beside the KG's own) and the entity vectors, if computed."""
        from safetensors.numpy import save_file

        with atomic_dir(folder) as tmp:
            self.scorer.save(tmp / FILE_SCORER)
            save_names(self.other_names, tmp / FILE_NAMES)
            vectors = None
            if self.embed is not None and self.context.vectors is not None:
                vectors = vectors_file_name(self.kg, self.embed)
                save_file({"vectors": self.context.vectors.astype(np.float16)}, str(tmp / vectors))
            write_json(
                tmp / FILE_META,
                {
                    "format": LINKER_FORMAT,
                    "kg": {
                        "name": self.kg.name,
                        "fingerprint": self.kg.fingerprint,
                        "source": self.kg.source,
                    },
                    "text_model": getattr(self.embed, "model_id", None) if self.embed else None,
                    "entity_vectors": vectors,
                    "threshold": self.scorer.threshold,
                    "names": sum(map(len, self.other_names.values())),
                },
            )
        return Path(folder)

    def link(self, text: str, spans: Sequence[tuple[int, int]] | None = None) -> list[LinkedEntity]:
        return self.link_many([text], None if spans is None else [spans])[0]

    def link_many(
        self,
        texts: Iterable[str],
        spans: Sequence[Sequence[tuple[int, int]] | None] | None = None,
        batch_size: int = 32,
        min_score: float | None = None,
    ) -> list[list[LinkedEntity]]:
        """Each text's linked entities; `spans` (per text) links only those spans, and a text whose
        spans are None has its mentions found (so texts with and without spans share one call);
        `min_score` overrides the NIL threshold for this call (0: every mention's best candidate)."""
        return self.link_with_vectors(texts, spans, batch_size, min_score)[0]

    def link_with_vectors(
        self,
        texts: Iterable[str],
        spans: Sequence[Sequence[tuple[int, int]] | None] | None = None,
        batch_size: int = 32,
        min_score: float | None = None,
    ) -> tuple[list[list[LinkedEntity]], list[np.ndarray | None]]:
        """`link_many`'s result and each text's context vector, which linking computes anyway:
        the text model's unit vector of its opening (of each piece's opening, averaged, for a
        long text); None without a text model."""
        texts = [check_text(t, f"document {i}") for i, t in enumerate(texts)]
        if spans is not None and len(spans) != len(texts):
            raise BadTextError(
                f"{len(spans)} span lists for {len(texts)} texts; give one per text (None: find)"
            )
        for i, doc_spans in enumerate(spans or []):
            bad = [(s, e) for s, e in doc_spans or () if not 0 <= s < e <= len(texts[i])]
            if bad:
                raise BadTextError(
                    f"document {i}: span {list(bad[0])} is not inside its {len(texts[i])}-character text; give [start, end) offsets with start < end"
                )
        # long texts are linked piece by piece (see PIECE_CHARS), so the cost grows with the length
        where: list[tuple[int, int]] = []  # each piece's document and offset
        piece_texts: list[str] = []
        piece_spans: list[list[tuple[int, int]] | None] = []  # None: find the piece's mentions
        for i, text in enumerate(texts):
            given = None if spans is None or spans[i] is None else list(spans[i] or ())
            for lo, hi in text_pieces(text, PIECE_CHARS, given or (), PIECE_TOKENS):
                where.append((i, lo))
                piece_texts.append(text[lo:hi])
                piece_spans.append(
                    None if given is None else [(s - lo, e - lo) for s, e in given if lo <= s and e <= hi]
                )
        linked, piece_vectors = self._link_pieces(piece_texts, piece_spans, batch_size, min_score)
        results: list[list[LinkedEntity]] = [[] for _ in texts]
        sums: list[np.ndarray | None] = [None] * len(texts)
        for (i, lo), found, vector in zip(where, linked, piece_vectors, strict=True):
            results[i] += [replace(x, start=x.start + lo, end=x.end + lo) for x in found] if lo else found
            if vector is not None:
                sums[i] = vector if sums[i] is None else sums[i] + vector
        vectors = [None if v is None else v / max(float(np.linalg.norm(v)), 1e-9) for v in sums]
        return results, vectors

    def _link_pieces(
        self,
        texts: list[str],
        spans: Sequence[Sequence[tuple[int, int]] | None],
        batch_size: int,
        min_score: float | None,
    ) -> tuple[list[list[LinkedEntity]], list[np.ndarray | None]]:
        """Each piece linked on its own: its given spans (kept when NIL), or, where they are None,
        the mentions the finder reads in it."""
        results, all_vectors = [], []
        chunk = 8 * batch_size  # documents held at once
        with ThreadPoolExecutor(1) as pool:
            for lo in range(0, len(texts), chunk):
                part = texts[lo : lo + chunk]
                # the text model reads the openings while spaCy tags the documents: both release
                # the GIL in their matrix code, so they overlap; on one core the text model is the
                # slower, so it goes on reading while mentions and candidates are found. torch's
                # thread count is the process owner's to set (the CLI, a worker), never a call's
                pending = pool.submit(self.doc_vectors, part) if self.overlap else None
                docs: list[Doc] = []
                found: list[list[Mention]] = []
                for group in _by_size(range(lo, lo + len(part)), [len(t) for t in part], PIECE_CHARS):
                    # spaCy is shared: one group of about a piece's size at a time, so that another
                    # request (another thread) waits for one group, never for a whole long text
                    with self._nlp_lock:
                        docs += self.nlp.pipe((short_words(texts[i]) for i in group), batch_size=batch_size)
                        found += [
                            self.finder.find(doc)
                            if (given := spans[i]) is None
                            else given_mentions(doc.text, given, doc)
                            for i, doc in zip(group, docs[-len(group) :], strict=True)
                        ]
                found = [
                    ms if doc.text == text else [replace(m, text=text[m.start : m.end]) for m in ms]
                    for ms, doc, text in zip(found, docs, part, strict=True)
                ]
                self.candidates.prefetch([m for mentions in found for m in mentions])
                cands = [self.candidates.generate(mentions) for mentions in found]
                vectors = pending.result() if pending is not None else self.doc_vectors(part)
                all_vectors += vectors
                for i, (text, mentions, cs, vector) in enumerate(
                    zip(part, found, cands, vectors, strict=True), start=lo
                ):
                    keep_nil = spans[i] is not None  # a given span is answered even when NIL
                    results.append(
                        self.disambiguate(mentions, keep_nil, vector, cs, min_score, text_length=len(text))
                    )
        return results, all_vectors

    def _proper_name(self, text: str) -> bool:
        """Whether the best-known entity of an alias-matched name has a capitalised label: 'paris'
        names Paris, 'film' the concept film."""
        found = self.aliases.aliases.get(normalize(text))
        return found is not None and len(found) > 0 and self.kg.labels[found[0][0]][:1].isupper()

    def _concept(self, text: str) -> bool:
        """Whether a lower-case name's best-known entities include a concept (an entity with a
        lower-case label: 'physicist', 'red'), not only proper names ('apple': Apple Inc.)."""
        found = self.aliases.aliases.get(normalize(text))
        return (
            found is not None
            and len(text) >= 3
            and any(self.kg.labels[e][:1].islower() for e, _ in found[:3])
        )

    def clear(self) -> None:
        """Empty the caches that fill as documents are linked (dense hits, fuzzy matches, KG
        neighbour sets): for timing a cold linker, or to give the memory back."""
        self.candidates.dense_hits_memo.clear()
        self.candidates.neighbours_named_memo.clear()
        self.aliases.fuzzy_memo.clear()
        self.context.neighbours_memo.clear()

    def doc_vectors(self, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray | None]:
        """Unit vectors of each text's opening (what the context features compare entities with)."""
        if self.embed is None or not texts:
            return [None] * len(texts)
        parts = [
            self.embed([t[:DOC_CONTEXT_CHARS] for t in texts[i : i + batch_size]])
            for i in range(0, len(texts), batch_size)
        ]
        return list(np.concatenate(parts))

    def disambiguate(
        self,
        mentions: list[Mention],
        keep_nil: bool = False,
        doc_vector: np.ndarray | None = None,
        candidates: list[list[Candidate]] | None = None,
        min_score: float | None = None,
        features: list[np.ndarray] | None = None,
        text_length: int | None = None,
    ) -> list[LinkedEntity]:
        """Choose an entity for each mention (among `candidates`, generated here if not given, by
        their `features`, computed here if not given); NIL (below `min_score`, default the
        linker's: `min_score` for names, `concept_min_score` for concepts, `nationality_min_score`
        for nationality words) mentions are dropped
        unless `keep_nil`."""
        threshold = self.min_score if min_score is None else min_score
        concept = self.concept_min_score if min_score is None else min_score
        nationality = self.nationality_min_score if min_score is None else min_score
        cands = self.candidates.generate(mentions) if candidates is None else candidates
        if features is None:
            features = featurize(self.context, mentions, cands, doc_vector, text_length)
        decisions = self.scorer.for_mentions(mentions).decide(
            self.context, cands, features, [normalize(m.text) for m in mentions]
        )
        # a surname is as sure as the full name it repeats ('Obama' after 'Barack Obama'), when
        # both chose the same entity: the full name carried the evidence
        for i, j in enumerate(person_antecedents(mentions)):
            if j is not None and cands[i] and cands[j]:
                (bi, si), (bj, sj) = decisions[i], decisions[j]
                if cands[i][bi].entity == cands[j][bj].entity and sj > si:
                    decisions[i] = (bi, sj)
        out = []
        for m, cs, (best, score) in zip(mentions, cands, decisions, strict=True):
            if cs and score >= nil_threshold(m.label, threshold, concept, nationality):
                e = cs[best].entity
                out.append(LinkedEntity(m.start, m.end, m.text, self.kg.qids[e], score, e, m.label))
                continue
            if keep_nil:
                out.append(LinkedEntity(m.start, m.end, m.text, "", 0.0, -1, m.label))
        return out
