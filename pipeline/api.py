"""The REST API (FastAPI): linking, classification, extraction and search over one bundle.

Routes: `POST /link` (also REL's tuple format with `?format=rel`), `POST /classify`,
`POST /extract`, `POST /search`; `GET /health` (the process is up), `GET /ready` (the models are
loaded), `GET /info` (the bundle's manifest and versions), `GET /` (a page to try it), `/docs`.

The bundle is loaded once, in the lifespan, in a thread (so `/health` answers while it loads).
Model work never runs on the event loop: each kind of request has one worker thread that owns
its model calls, fed by a queue; requests that arrive while it works are batched together (up to
`max_batch` items, waiting at most `max_wait_ms` for more). A full queue answers 429 with
`Retry-After`; bodies over `max_body_bytes` 413; texts, batches or k over their limits 413/422
with what to change. No stack trace reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kg.errors import KGPipeError
from pipeline.classify import Classification, Informant
from pipeline.extract import Entity, Fact


class Limits(BaseModel):
    """What one server accepts: `KGPIPE_API_*` settings (environment or the `KGPIPE_CONFIG` file),
    overridden by `kgpipe serve`'s flags."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = 2_000_000
    max_text_chars: int = 100_000
    max_items: int = 256  # texts or items in one request
    max_k: int = 1000
    max_batch: int = 32  # items one model call may take from concurrent requests
    max_wait_ms: float = 5.0
    max_queue: int = 512  # requests waiting per model before 429
    timeout_s: float = 120.0  # a request still unanswered then gets 503 (its work is dropped if not begun)


DRAIN_BYTES = 64 * 2**20  # a body over the limit is read and dropped up to this size before the 413


class Busy(Exception):
    """The queue of a model worker is full."""


class TimedOut(Exception):
    """A request was not answered within the server's time limit."""

    def __init__(self, worker: str, seconds: float) -> None:
        super().__init__(worker)
        self.worker, self.seconds = worker, seconds


# ------------------------------------------------------------------------------- request models


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the text holds only whitespace; send at least one character that is not a space")
    return text


Text = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class Item(BaseModel):
    """One text of a batch, with the client's own id."""

    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    text: Text
    spans: list[tuple[int, int]] | None = None


class TextsRequest(BaseModel):
    """One `text`, or a batch: `texts` (plain strings) or `items` (with ids and spans)."""

    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    spans: list[tuple[int, int]] | None = Field(
        default=None,
        description="[start, end) character spans to disambiguate only (REL format: [start, length])",
    )
    texts: list[Text] | None = None
    items: list[Item] | None = None

    @model_validator(mode="after")
    def one_input(self) -> TextsRequest:
        given = [n for n in ("text", "texts", "items") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'text', 'texts' or 'items'")
        return self

    def as_items(self) -> list[Item]:
        if self.text is not None:
            return [Item(text=self.text, spans=self.spans)]
        if self.texts is not None:
            return [Item(id=i, text=t) for i, t in enumerate(self.texts)]
        return list(self.items or [])

    @property
    def single(self) -> bool:
        return self.text is not None


class ClassifyRequest(TextsRequest):
    classifier: str | None = Field(
        default=None, description="a classifier of the bundle (default: its first)"
    )


class ExtractRequest(TextsRequest):
    vector: StrictBool = Field(default=False, description="also return the document vector (true or false)")


class SearchFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entities: list[str] = Field(default_factory=list, description="documents mentioning any of these QIDs")
    types: list[str] = Field(
        default_factory=list,
        description="documents about an entity of these KG types (PER, LOC, ORG, WORK, LANG): the type "
        "the KG gives the entity the document is about (its title, else the name it opens with)",
    )
    where: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="metadata column = value"
    )
    relations: list[str] = Field(
        default_factory=list,
        description="documents whose text states any of these relations (Wikidata properties, e.g. P159), as extraction read them",
    )


class SearchRequest(BaseModel):
    """Search by `query` text, by `entity` QID, or a batch of `queries`."""

    model_config = ConfigDict(extra="forbid")
    query: Text | None = None
    queries: list[Text] | None = None
    entity: str | None = Field(default=None, min_length=1)
    k: int = Field(default=10, ge=1)
    filter: SearchFilter = Field(default_factory=SearchFilter)

    @model_validator(mode="after")
    def one_input(self) -> SearchRequest:
        given = [n for n in ("query", "queries", "entity") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'query', 'queries' or 'entity'")
        return self


# ------------------------------------------------------------------------------ response models
# Every answer is declared as it is sent (extra fields forbidden, so the unions below are exact): a
# single request gets its result alone, a batch `{"results": [...]}` in order, and an item of a
# batch that failed `{"id", "error"}`. Fields that are null are left out.


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Answer):
    field: str = Field(description="where in the body: a dotted path such as items.0.text, or 'body'")
    problem: str


class ErrorBody(Answer):
    """Every error: one line saying what is wrong and what to do; for a 422, each field's problem."""

    error: str
    details: list[ErrorDetail] | None = None


class LinkResult(Answer):
    id: str | int | None = None
    entities: list[Entity] = Field(default_factory=list)
    error: str | None = None


ItemAnswer = TypeVar("ItemAnswer", "LinkResult", "ClassifyResult", "ExtractResult")


class LinkResults(Answer):
    results: list[LinkResult]


# REL's answer for one mention: [start, length, mention, entity title, disambiguation score,
# NER score, NER tag]
RelMention = tuple[int, int, str, str, float, float, str]


class ClassifyResult(Answer):
    id: str | int | None = None
    label: str | None = None
    labels: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    entities: list[Informant] = Field(default_factory=list)
    classifier: str | None = None
    error: str | None = None


class ClassifyResults(Answer):
    results: list[ClassifyResult]


class ExtractResult(Answer):
    id: str | int | None = None
    entities: list[Entity] = Field(default_factory=list)
    facts: list[Fact] = Field(default_factory=list)
    vector: list[float] | None = None
    error: str | None = None


class ExtractResults(Answer):
    results: list[ExtractResult]


class SearchHit(Answer):
    id: str = Field(description="the document's id (a QID for an entity)")
    score: float = Field(description="cosine similarity to the query, higher is closer")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="the document's own columns, and source, entities, types"
    )


class SearchResult(Answer):
    entity: dict[str, Any] | None = Field(default=None, description="the entity searched for")
    hits: list[SearchHit]
    neighbours: list[SearchHit] | None = Field(
        default=None, description="the entities closest to the one searched for, in TransE space"
    )
    via: list[str] | None = Field(
        default=None, description="the entities whose documents are the hits (the entity, or its neighbours)"
    )
    names: dict[str, str] = Field(
        default_factory=dict,
        description="QID -> name of every entity the hits mention, to show beside the QIDs",
    )


class SearchResults(Answer):
    results: list[SearchResult | ErrorBody]


class Health(Answer):
    status: Literal["ok"]
    uptime_s: float


class Readiness(Answer):
    status: Literal["ready", "loading", "failed"]
    error: str | None = None


_ERROR_STATUSES = {
    400: "the body is not JSON, or not UTF-8",
    413: "the body, a text or a batch is over the server's limits",
    415: "the body was not sent as JSON (Content-Type: application/json)",
    422: "a field is missing or invalid (`details` names each)",
    429: "the queue is full: retry after `Retry-After` seconds",
    500: "a bug in kgpipe; the server log has the details",
    503: "the models are loading or failed to load, or the request took over the time limit",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what} for code, what in _ERROR_STATUSES.items()
}


# ------------------------------------------------------------------------------------ batching


class Worker:
    """One thread that owns a model's calls; concurrent requests are batched into one call."""

    def __init__(self, name: str, fn: Callable[[list[Any]], list[Any]], limits: Limits) -> None:
        self.name, self.fn, self.limits = name, fn, limits
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future[list[Any]]]] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"kgpipe-{name}")
        self.task: asyncio.Task[None] | None = None
        self.calls = 0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"kgpipe-{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        """Each item's result, or the exception it raised; `TimedOut` after `timeout_s` (the items
        are dropped if the model has not taken them yet)."""
        if self.queue.qsize() >= self.limits.max_queue:
            raise Busy(self.name)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((items, future))
        try:
            return await asyncio.wait_for(future, self.limits.timeout_s)
        except TimeoutError:
            raise TimedOut(self.name, self.limits.timeout_s) from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while size < self.limits.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                batch.append(nxt)
                size += len(nxt[0])
            batch = [(items, future) for items, future in batch if not future.done()]  # timed out
            if not batch:
                continue
            flat = [x for items, _ in batch for x in items]
            results = await loop.run_in_executor(self.pool, self._call, flat)
            self.calls += 1
            pos = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(results[pos : pos + len(items)])
                pos += len(items)

    def _call(self, items: list[Any]) -> list[Any]:
        """The model on all items; when that fails, on each alone, so one bad item fails alone."""
        try:
            return list(self.fn(items))
        except Exception as e:
            if len(items) == 1:
                return [e]
        results: list[Any] = []
        for x in items:
            try:
                results.append(self.fn([x])[0])
            except Exception as e:
                results.append(e)
        return results


# ------------------------------------------------------------------------------------ the app


class State:
    def __init__(self) -> None:
        self.bundle: Any = None
        self.error: str | None = None
        self.loaded = threading.Event()
        self.workers: dict[str, Worker] = {}
        self.started = time.time()


def create_app(
    bundle: str | Path | None = None, limits: Limits | None = None, store: str | None = None
) -> FastAPI:
    """The API over the bundle at `bundle` (default: the shipped one); `store` searches another
    store than the bundle's (a folder, milvus:PATH.db or milvus://HOST:PORT)."""
    limits = limits or Limits()
    state = State()

    def load() -> None:
        from pipeline.bundle import load as load_bundle

        try:
            b = load_bundle(bundle, eager=True)
            if store is not None:
                from pipeline.search import Searcher

                b._searcher = Searcher.open(store, b)
            b.facts  # noqa: B018 - built now, not on the first request
            if b.has_relations:  # the relation model and its NER, likewise
                b.relations  # noqa: B018
                b.entity_finder.nlp  # noqa: B018
            for name in b.classifiers:  # all of them: /info reads each one's labels
                b.classifier(name)
            if "store" in b.parts or store is not None:
                b.searcher.store.collection("docs")
            state.bundle = b
        except Exception as e:  # shown by /ready; the server stays up to say so
            state.error = f"{type(e).__name__}: {e}"
        finally:
            state.loaded.set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.workers = {
            "link": Worker("link", lambda items: _link(state.bundle, items), limits),
            "classify": Worker("classify", lambda items: _classify(state.bundle, items), limits),
            "extract": Worker("extract", lambda items: _extract(state.bundle, items), limits),
            "search": Worker("search", lambda items: _search(state.bundle, items), limits),
        }
        for w in state.workers.values():
            w.start()
        threading.Thread(target=load, name="kgpipe-load", daemon=True).start()
        yield
        for w in state.workers.values():
            await w.stop()

    app = FastAPIOffline(  # /docs and /redoc from the package's own copies of their scripts: no CDN
        title="kgpipe",
        version=version("kgpipe"),
        description="Entity linking, knowledge-fused classification, extraction and vector search over one bundle.",
        lifespan=lifespan,
    )
    app.state.kgpipe = state
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _errors(app)

    def ready_bundle() -> Any:
        if state.bundle is None:
            raise _NotReady(state.error)
        return state.bundle

    def check_items(items: list[Item]) -> None:
        if len(items) > limits.max_items:
            raise _TooLarge(
                f"{len(items):,} items in one request; send at most {limits.max_items} (split the batch)"
            )
        for i, it in enumerate(items):
            if len(it.text) > limits.max_text_chars:
                raise _TooLarge(
                    f"item {i}: text of {len(it.text):,} characters; send at most {limits.max_text_chars:,} "
                    "(split it, or raise --max-text-chars)"
                )
            for s, e in it.spans or []:
                if not 0 <= s < e <= len(it.text):
                    raise _Invalid(
                        f"item {i}: span [{s}, {e}] is not inside its {len(it.text)}-character text; "
                        "give [start, end) character offsets"
                    )

    async def run(kind: str, payload: list[Any], single: bool = False) -> list[Any]:
        """Each item's result; for a single-item request, its error is raised (a 4xx for bad
        input, a 500 for anything else)."""
        ready_bundle()
        results = await state.workers[kind].submit(payload)
        if single and isinstance(results[0], Exception):
            raise results[0]
        return results

    @app.get("/health", tags=["status"], response_model=Health)
    async def health() -> Health:
        """The process is up (models may still be loading: see /ready)."""
        return Health(status="ok", uptime_s=round(time.time() - state.started, 1))

    @app.get(
        "/ready",
        tags=["status"],
        response_model=Readiness,
        response_model_exclude_none=True,
        responses={503: {"model": Readiness, "description": "models still loading, or failed"}},
    )
    async def ready() -> Any:
        """200 once every model is loaded; 503 before, or with the reason loading failed."""
        if state.bundle is not None:
            return Readiness(status="ready")
        body = Readiness(status="failed", error=state.error) if state.error else Readiness(status="loading")
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)

    @app.get("/info", tags=["status"], responses={503: ERRORS[503], 500: ERRORS[500]})
    async def info() -> dict[str, Any]:
        """The bundle's manifest (parts, checksums, sources), classifiers, store and versions."""
        b = ready_bundle()
        store_info = None
        if b._searcher is not None:
            store_info = {"address": str(b._searcher.store.path), **b._searcher.store.manifest}
        import torch

        return {
            "kgpipe": version("kgpipe"),
            "torch": torch.__version__,
            "bundle": {"path": str(b.path), "fingerprint": b.fingerprint, **b.info()},
            "classifiers": {
                n: {
                    "task": b.classifier(n).cfg.task,
                    "labels": b.classifier(n).cfg.labels,
                    "knowledge": b.classifier(n).cfg.knowledge,
                }
                for n in b.classifiers
            },
            "relations": {
                "knowledge": b.relations.cfg.knowledge,
                "relations": {r: b.relations.cfg.names.get(r, "") for r in b.relations.cfg.labels[1:]},
            }
            if b.has_relations
            else None,
            "store": store_info,
            "limits": limits.model_dump(),
        }

    @app.post(
        "/link",
        tags=["models"],
        response_model=LinkResult | LinkResults | list[RelMention] | list[list[RelMention] | ErrorBody],
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def link(
        body: TextsRequest,
        format: Literal["kgpipe", "rel"] = Query(
            "kgpipe", description="rel: REL's [start, length, mention, entity, score, ner score, tag] tuples"
        ),
    ) -> Any:
        """Entities in the text, linked to the KG. With `spans`, only those spans are disambiguated."""
        items = body.as_items()
        if format == "rel":  # REL sends spans as [start, length]
            items = [
                it.model_copy(update={"spans": [(s, s + n) for s, n in it.spans] if it.spans else it.spans})
                for it in items
            ]
        check_items(items)
        results = await run("link", items, body.single)
        if format == "rel":
            b = ready_bundle()
            rel = [
                _rel(b, r) if not isinstance(r, Exception) else ErrorBody(error=_message(r)) for r in results
            ]
            return rel[0] if body.single else rel
        out = _each(LinkResult, items, results, lambda r: {"entities": r})
        return out[0] if body.single else LinkResults(results=out)

    @app.post(
        "/classify",
        tags=["models"],
        response_model=ClassifyResult | ClassifyResults,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def classify(body: ClassifyRequest) -> Any:
        """The classifier's label and per-label scores, and the entities it read."""
        items = body.as_items()
        check_items(items)
        b = ready_bundle()
        name = body.classifier
        if name is not None and name not in b.classifiers:
            raise _Invalid(
                f"classifier {name!r} is not in the bundle; it has {', '.join(b.classifiers) or 'none'}"
            )
        if not b.classifiers:
            raise _Invalid(
                "the bundle has no classifier; build one with `kgpipe bundle build --classifier NAME=DIR`"
            )
        results = await run("classify", [(name, it) for it in items], body.single)
        out = _each(ClassifyResult, items, results, asdict)
        return out[0] if body.single else ClassifyResults(results=out)

    @app.post(
        "/extract",
        tags=["models"],
        response_model=ExtractResult | ExtractResults,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def extract(body: ExtractRequest) -> Any:
        """One document's entities, the facts between them and, on request, its vector."""
        items = body.as_items()
        check_items(items)
        results = await run("extract", items, body.single)
        out = _each(
            ExtractResult,
            items,
            results,
            lambda r: {
                "entities": r.entities,
                "facts": r.facts,
                "vector": r.vector.tolist() if body.vector else None,
            },
        )
        return out[0] if body.single else ExtractResults(results=out)

    @app.post(
        "/search",
        tags=["models"],
        response_model=SearchResult | SearchResults,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def search(body: SearchRequest) -> Any:
        """Documents near a text or an entity, filtered before the search."""
        if body.k > limits.max_k:
            raise _Invalid(f"k = {body.k:,} is over the limit; ask for at most {limits.max_k} hits")
        queries = body.queries if body.queries is not None else None
        if queries is not None:
            check_items([Item(text=q) for q in queries])
        elif body.query is not None:
            check_items([Item(text=body.query)])
        ready_bundle()
        if body.queries is not None:
            results = await run("search", [(q, None, body.k, body.filter) for q in body.queries])
            return SearchResults(
                results=[ErrorBody(error=_message(r)) if isinstance(r, Exception) else r for r in results]
            )
        (r,) = await run("search", [(body.query, body.entity, body.k, body.filter)], single=True)
        return r

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8"))

    return app


def _each(
    answer: type[ItemAnswer], items: list[Item], results: list[Any], fields: Callable[[Any], dict[str, Any]]
) -> list[ItemAnswer]:
    """One answer per item, with the client's id: its result's `fields`, or the error it failed
    with (alone: the worker retries a failed batch item by item)."""
    return [
        answer(id=it.id, error=_message(r)) if isinstance(r, Exception) else answer(id=it.id, **fields(r))
        for it, r in zip(items, results, strict=True)
    ]


# ------------------------------------------------------------------------ model calls (threads)


def _link(bundle: Any, items: list[Item]) -> list[Any]:
    texts = [it.text for it in items]
    # each item keeps its own request: given spans (even none) or, without spans, found mentions
    linked = bundle.link(texts, [None if it.spans is None else list(it.spans) for it in items])
    types, names = bundle.linker.context.types, bundle.kg.labels
    return [
        [
            Entity(
                x.start, x.end, x.text, x.qid, round(x.score, 4), x.label, types[x.entity], names[x.entity]
            )
            for x in found
            if x.qid
        ]
        for found in linked
    ]


def _rel(bundle: Any, entities: list[Entity]) -> list[list[Any]]:
    """REL's answer: [start, length, mention, entity, disambiguation score, NER score, NER tag];
    the entity is its Wikipedia-style title (the KG label, spaces as underscores)."""
    kg = bundle.kg
    out = []
    for e in entities:
        title = kg.labels[kg.entity_id(e.qid)].replace(" ", "_") or e.qid
        out.append([e.start, e.end - e.start, e.text, title, e.score, 1.0, e.label or "MISC"])
    return out


def _classify(bundle: Any, items: list[tuple[str | None, Item]]) -> list[Classification | Exception]:
    by_name: dict[str | None, list[int]] = {}
    for i, (name, _) in enumerate(items):
        by_name.setdefault(name, []).append(i)
    answers: dict[int, Classification | Exception] = {}
    for name, idx in by_name.items():
        its = [items[i][1] for i in idx]
        model = bundle.classifier(name)
        focus = [list(it.spans or []) for it in its] if model.cfg.task != "sequence" else None
        for i, r in zip(idx, bundle.classify([it.text for it in its], name, focus), strict=True):
            answers[i] = r
    return [answers[i] for i in range(len(items))]


def _extract(bundle: Any, items: list[Item]) -> list[Any]:
    from pipeline.extract import Document, extract

    # an item's answer depends on its text alone, never on its place in a batch
    return extract(bundle, [Document("" if it.id is None else str(it.id), it.text) for it in items])


def _search(bundle: Any, items: list[tuple[str | None, str | None, int, SearchFilter]]) -> list[Any]:
    from pipeline.store import Filter

    searcher = bundle.searcher
    texts = [(i, q) for i, (q, e, _, _) in enumerate(items) if q is not None]
    answers: dict[int, Any] = {}
    # text queries with the same k and filter share one encoder call and one index search
    groups: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for i, q in texts:
        groups.setdefault((items[i][2], items[i][3].model_dump_json()), []).append((i, q))
    for (k, _), members in groups.items():
        f = items[members[0][0]][3]
        where = Filter(
            tuple(f.entities),
            tuple(f.types),
            tuple((c, str(v)) for c, v in f.where.items()),
            tuple(f.relations),
        )
        hits = searcher.text([q for _, q in members], k, where)
        for (i, _), row in zip(members, hits, strict=True):
            answers[i] = {"hits": [h.as_dict() for h in row], "names": searcher.names(row)}
    for i, (query, entity, k, f) in enumerate(items):
        if query is None and entity is not None:
            where = Filter(
                (), tuple(f.types), tuple((c, str(v)) for c, v in f.where.items()), tuple(f.relations)
            )
            found = searcher.entity(entity, k, where)
            answers[i] = {
                "entity": found["entity"],
                "hits": [h.as_dict() for h in found["hits"]],
                "neighbours": [h.as_dict() for h in found["neighbours"]],
                "via": found["via"],
                "names": searcher.names(found["hits"], found["neighbours"]),
            }
    return [answers[i] for i in range(len(items))]


# ------------------------------------------------------------------------------------- errors


class _NotReady(Exception):
    def __init__(self, error: str | None) -> None:
        self.error = error


class _TooLarge(Exception):
    pass


class _Invalid(Exception):
    pass


_UNION_BRANCHES = frozenset({"str", "int", "float", "bool", "list", "dict"})


def _message(e: BaseException) -> str:
    if isinstance(e, KGPipeError | _Invalid | _TooLarge | ValueError):
        return str(e)
    return f"internal error ({type(e).__name__}); the server log has the details"


def _errors(app: FastAPI) -> None:
    import logging

    log = logging.getLogger("kgpipe.api")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type.lower():
            sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            return JSONResponse(
                {
                    "error": f"the body was sent with {sent}; send it as JSON with the header "
                    "Content-Type: application/json (curl: -H 'Content-Type: application/json')"
                },
                status_code=415,
            )
        errors = exc.errors()
        details: list[dict[str, str]] = []
        for e in errors:
            # a union's branches ('id' is str or int) add their type to the path: one field, one problem
            field = ".".join(str(p) for p in e.get("loc", ())[1:] if str(p) not in _UNION_BRANCHES) or "body"
            problem = e.get("msg", "").removeprefix("Value error, ")
            if field == "body" and e.get("type") in ("model_attributes_type", "dict_type"):
                problem = 'the body must be a JSON object, such as {"text": "Paris is in France."}'
            same = next((d for d in details if d["field"] == field), None)
            if same is None:
                details.append({"field": field, "problem": problem})
            elif problem not in same["problem"]:  # another branch of a union: either would do
                same["problem"] += f", or {problem[0].lower()}{problem[1:]}"
        details = details[:10]
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(
                {
                    "error": f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'decode error')}); send a JSON object in UTF-8"
                },
                status_code=400,
            )
        status = 422
        where = details[0]["field"] if details else "body"
        return JSONResponse(
            {
                "error": f"{where}: {details[0]['problem'] if details else 'invalid request'}",
                "details": details,
            },
            status_code=status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = (
                "the body could not be read as JSON (not UTF-8, or malformed); send a JSON object in UTF-8"
            )
        elif exc.status_code == 404:
            message = f"no route {request.url.path}; see /docs for the routes"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return JSONResponse(
            {"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(_NotReady)
    async def not_ready(request: Request, exc: _NotReady) -> JSONResponse:
        message = (
            f"the models failed to load: {exc.error}"
            if exc.error
            else "the models are still loading; retry shortly (GET /ready)"
        )
        return JSONResponse({"error": message}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse(
            {"error": f"the {exc} queue is full; retry after a second, or send fewer requests at once"},
            status_code=429,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(TimedOut)
    async def timed_out(request: Request, exc: TimedOut) -> JSONResponse:
        return JSONResponse(
            {
                "error": f"the request took over {exc.seconds:g} s, the server's time limit (KGPIPE_API_TIMEOUT_S); "
                "send shorter texts or fewer items at once, or ask the operator to raise the limit"
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(_TooLarge)
    async def too_large(request: Request, exc: _TooLarge) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=413)

    @app.exception_handler(_Invalid)
    async def bad(request: Request, exc: _Invalid) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(KGPipeError)
    async def kgpipe_error(request: Request, exc: KGPipeError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": _message(exc)}, status_code=500)


class BodyLimit:
    """413 for a body over `max_bytes` (by Content-Length, or counted while it streams)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive)
            await self._reject(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await self._drain(receive)
            await self._reject(send)

    @staticmethod
    async def _drain(receive: Receive, most: int = DRAIN_BYTES) -> None:
        """Read (and drop) the rest of the body, so the client, still sending, reads the 413 rather
        than a reset connection; past `most` bytes the connection is closed anyway."""
        seen = 0
        while seen < most:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": f"request body over {self.max_bytes:,} bytes; send less (split a batch, shorten the text)"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


def limits_from_settings() -> Limits:
    """The limits the settings give (`KGPIPE_API_*`, or `api_*` keys of the KGPIPE_CONFIG file)."""
    from kg.settings import settings

    current = settings()
    return Limits(**{name: getattr(current, f"api_{name}") for name in Limits.model_fields})


def app_from_env() -> FastAPI:
    """The app `kgpipe serve` runs in each uvicorn worker: bundle, store and limits from the
    settings (KGPIPE_BUNDLE, KGPIPE_STORE, KGPIPE_API_*, the KGPIPE_CONFIG file)."""
    from kg.settings import settings

    current = settings()
    return create_app(current.bundle, limits_from_settings(), current.store)
