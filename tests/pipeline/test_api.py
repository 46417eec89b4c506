"""The REST API on a real uvicorn server (`kgpipe serve`) over a bundle with a store and the
default classifier: every route, REL's format, batches, bad input, concurrent load, the page."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent
TEXT = "Paris is the capital of France. Barack Obama visited the Eiffel Tower."
OBAMA = "Barack Obama was born in Honolulu and later taught law at the University of Chicago."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from pipeline.batch import run
    from pipeline.bundle import build, load
    from pipeline.search import index_extraction
    from tests.pipeline.test_batch import corpus_lines

    root = tmp_path_factory.mktemp("api")
    docs = [json.loads(line) for line in corpus_lines(30)]  # the sample, repeated, where ../shared is absent
    lines = [json.dumps({**d, "id": f"{d['id']}-{i}"}) for i, d in enumerate(docs)]
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    run([root / "in.jsonl"], root / "x", workers=1, partition_size=30)
    index_extraction(root / "x", root / "store", load(eager=False))
    build(root / "bundle", store=root / "store")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "kgpipe"), "serve", "--bundle", str(root / "bundle"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (root / "serve.log").read_text()
            time.sleep(1)
        else:
            pytest.fail("the server did not become ready in 180 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        assert "Traceback" not in (root / "serve.log").read_text()


@pytest.mark.slow
def test_every_route_answers_with_its_documented_shape(server: str) -> None:
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    info = httpx.get(f"{server}/info").json()
    assert info["bundle"]["parts"]["store"] and info["classifiers"]
    assert info["relations"]["relations"]["P159"] == "headquarters location"
    linked = httpx.post(f"{server}/link", json={"text": TEXT}).json()["entities"]
    qids = [e["qid"] for e in linked]
    assert {"Q90", "Q142"} <= set(qids)
    obama = httpx.post(f"{server}/link", json={"text": OBAMA}).json()["entities"]
    assert "Q76" in {e["qid"] for e in obama}
    paris = next(e for e in linked if e["qid"] == "Q90")
    assert (
        TEXT[paris["start"] : paris["end"]] == "Paris"
        and paris["name"] == "Paris"
        and 0 < paris["score"] <= 1
    )
    # only the given spans are disambiguated
    only = httpx.post(f"{server}/link", json={"text": TEXT, "spans": [[0, 5]]}).json()["entities"]
    assert [(e["start"], e["end"], e["qid"]) for e in only] == [(0, 5, "Q90")]
    # REL's format: spans as [start, length], answers as tuples
    rel = httpx.post(
        f"{server}/link", params={"format": "rel"}, json={"text": TEXT, "spans": [[0, 5]]}
    ).json()
    assert rel == [[0, 5, "Paris", "Paris", rel[0][4], 1.0, rel[0][6]]]
    cls = httpx.post(f"{server}/classify", json={"text": TEXT}).json()
    assert cls["label"] in cls["scores"] and abs(sum(cls["scores"].values()) - 1) < 1e-3
    assert cls["label"] == max(cls["scores"], key=cls["scores"].get)
    assert {e["qid"] for e in cls["entities"]} >= {"Q90"}
    person = httpx.post(
        f"{server}/classify",
        json={
            "text": "Barack Obama is an American politician who served as the 44th president of the United States."
        },
    ).json()
    assert person["label"] == "person"
    ex = httpx.post(f"{server}/extract", json={"text": TEXT, "vector": True}).json()
    assert any(
        {f["head"], f["tail"]} == {"Q142", "Q90"} and f["source"] == "text" and f["evidence"] == [0]
        for f in ex["facts"]
    ), ex["facts"]
    assert len(ex["vector"]) == 384
    hits = httpx.post(f"{server}/search", json={"query": "ancient history", "k": 5}).json()["hits"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    some = next(h["metadata"] for h in hits if h["metadata"]["entities"])
    names = httpx.post(f"{server}/search", json={"query": "ancient history", "k": 5}).json()["names"]
    assert names[some["entities"][0]] not in ("", some["entities"][0])  # a name, by its QID
    only_q = httpx.post(
        f"{server}/search", json={"query": "history", "k": 5, "filter": {"entities": [some["entities"][0]]}}
    ).json()["hits"]
    assert only_q and all(some["entities"][0] in h["metadata"]["entities"] for h in only_q)
    about = httpx.post(f"{server}/search", json={"entity": "Q90", "k": 3}).json()
    assert about["hits"] and about["neighbours"]
    many = httpx.post(f"{server}/search", json={"queries": ["art", "war"], "k": 2}).json()["results"]
    assert [len(r["hits"]) for r in many] == [2, 2]


@pytest.mark.slow
def test_batches_keep_client_ids_and_fail_item_by_item(server: str) -> None:
    out = httpx.post(
        f"{server}/link",
        json={"items": [{"id": "a", "text": TEXT}, {"id": 7, "text": "No entity here at all."}]},
    ).json()["results"]
    assert [r["id"] for r in out] == ["a", 7] and out[0]["entities"]
    texts = httpx.post(
        f"{server}/classify", json={"texts": [TEXT, "The Beatles were an English rock band."]}
    ).json()
    assert [r["id"] for r in texts["results"]] == [0, 1] and all(r["label"] for r in texts["results"])
    mixed = httpx.post(
        f"{server}/search", json={"queries": ["art"], "k": 2, "filter": {"where": {"nocolumn": "x"}}}
    )
    assert mixed.status_code == 200 and "no column 'nocolumn'" in mixed.json()["results"][0]["error"]


@pytest.mark.slow
def test_bad_input_gets_a_clear_4xx_and_never_a_trace(server: str) -> None:
    cases = [
        ("/link", {"json": {"text": ""}}, 422, "at least 1 character"),
        ("/link", {"json": {"text": 5}}, 422, "valid string"),
        (
            "/link",
            {"content": b"x" * 10_000_000, "headers": {"content-type": "application/json"}},
            413,
            "body over",
        ),
        (
            "/link",
            {"content": b'{"text": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
            400,
            "not UTF-8",
        ),
        (
            "/link",
            {"content": b'{"text": ', "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ("/link", {"json": {"text": "Paris", "spans": [[3, 99]]}}, 422, "not inside"),
        ("/link", {"json": {"text": "x", "texts": ["y"]}}, 422, "exactly one of"),
        ("/search", {"json": {"entity": "Q0000000"}}, 422, "not in this store's KG"),
        ("/search", {"json": {"query": "x", "k": 10**9}}, 422, "at most 1000"),
        ("/search", {"json": {"query": "x", "k": 0}}, 422, "greater than or equal to 1"),
        ("/classify", {"json": {"text": "x", "classifier": "nope"}}, 422, "not in the bundle"),
        ("/classify", {"json": {"texts": ["a"] * 1_000_000}}, 413, ""),
        ("/extract", {"json": {"text": "a" * 100_001}}, 413, "at most 100,000"),
    ]
    for route, kwargs, status, says in cases:
        r = httpx.post(f"{server}{route}", timeout=60, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (route, r.status_code, r.text[:300])
        body = r.json()
        assert "error" in body, (route, body)
        assert says in body["error"] and "Traceback" not in r.text, (route, body)


@pytest.mark.slow
def test_640_mixed_requests_from_32_clients_get_no_server_error(server: str) -> None:
    routes = [
        ("/link", {"text": TEXT}),
        ("/classify", {"text": TEXT}),
        ("/search", {"query": "ancient history", "k": 5}),
    ]

    def call(i: int) -> int:
        route, body = routes[i % 3]
        with httpx.Client(timeout=120) as c:
            return c.post(f"{server}{route}", json=body).status_code

    with ThreadPoolExecutor(32) as pool:
        codes = Counter(pool.map(call, range(640)))
    assert not [c for c in codes if c >= 500], codes
    assert codes[200] >= 600, codes


@pytest.mark.slow
def test_the_page_shows_linked_entities_the_label_and_search_hits_in_chromium(server: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it with apt-get where it can)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server + "/")
        page.fill("#text", TEXT)
        page.click("#go")
        page.wait_for_selector("#entities mark", timeout=60_000)
        marks = page.eval_on_selector_all("#entities mark", "els => els.map(e => e.dataset.qid)")
        assert {"Q90", "Q142"} <= set(marks)
        assert "Paris" in page.inner_text("#entities")
        page.wait_for_selector("#label-value", timeout=60_000)
        assert page.inner_text("#label-value").strip()
        page.fill("#query", "ancient history")
        page.click("#search")
        page.wait_for_selector("#hits table tr:nth-child(2)", timeout=60_000)
        assert len(page.query_selector_all("#hits table tr")) == 6
        # /docs with no network beyond the server: every asset comes from the server itself
        docs = browser.new_page()
        elsewhere: list[str] = []

        def only_here(route: Any) -> None:
            if route.request.url.startswith(server):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        docs.route("**/*", only_here)
        docs.goto(server + "/docs")
        docs.wait_for_selector(".opblock-summary-path", timeout=60_000)
        paths = docs.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        assert {"/link", "/classify", "/extract", "/search"} <= {p.strip() for p in paths}, paths
        assert not elsewhere, elsewhere
        browser.close()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(server: str) -> None:
    p = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{server}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:]


def test_openapi_lists_every_route_with_its_models() -> None:
    from pipeline.api import create_app

    spec = create_app().openapi()
    assert {"/link", "/classify", "/extract", "/search", "/health", "/ready", "/info"} <= set(spec["paths"])
    assert json.dumps(spec)  # serialisable as served at /openapi.json


def test_limits_come_from_the_config_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.api import limits_from_settings

    config = tmp_path / "kgpipe.json"
    config.write_text(json.dumps({"api_max_k": 50, "api_max_batch": 8}))
    monkeypatch.setenv("KGPIPE_CONFIG", str(config))
    monkeypatch.setenv("KGPIPE_API_MAX_BATCH", "4")
    limits = limits_from_settings()
    assert (limits.max_k, limits.max_batch, limits.max_text_chars) == (50, 4, 100_000)


def test_a_worker_batches_concurrent_requests_isolates_bad_items_and_refuses_when_full() -> None:
    import asyncio
    import threading

    from pipeline.api import Busy, Limits, Worker

    calls: list[list[int]] = []
    gate = threading.Event()

    def model(items: list[int]) -> list[int]:
        gate.wait(5)
        calls.append(list(items))
        if any(x < 0 for x in items):
            raise ValueError(f"negative: {next(x for x in items if x < 0)}")
        return [x * 10 for x in items]

    async def scenario() -> None:
        worker = Worker("test", model, Limits(max_batch=8, max_wait_ms=50, max_queue=3))
        worker.start()
        first = asyncio.create_task(worker.submit([1]))  # taken at once; the model waits on the gate
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(worker.submit([i])) for i in (2, -3, 4)]
        await asyncio.sleep(0.05)
        try:
            await worker.submit([5])  # three requests already wait
            raise AssertionError("a full queue must refuse")
        except Busy:
            pass
        gate.set()
        assert await first == [10]
        results = [await w for w in waiting]
        assert results[0] == [20] and results[2] == [40]
        assert isinstance(results[1][0], ValueError) and "negative: -3" in str(results[1][0])
        assert [2, -3, 4] in calls  # the three waiting requests went to the model as one batch
        await worker.stop()

    asyncio.run(scenario())


# ------------------------------------------------------------- batching never changes an answer

POOL: list[tuple[str, dict[str, object]]] = [
    ("/link", {"text": "Tokyo is the capital of Japan."}),
    ("/link", {"text": "Rome is in Italy.", "spans": [[0, 4]]}),
    ("/link", {"text": TEXT}),
    ("/link", {"items": [{"id": "x", "text": OBAMA}, {"id": "y", "text": "Berlin", "spans": [[0, 6]]}]}),
    ("/link", {"text": "Rome is in Italy.", "spans": []}),
    ("/classify", {"text": TEXT}),
    ("/classify", {"texts": [OBAMA, "The Beatles came from Liverpool."]}),
    ("/extract", {"text": OBAMA}),
    ("/extract", {"items": [{"id": 3, "text": TEXT}], "vector": True}),
    ("/search", {"query": "ancient history", "k": 5}),
    ("/search", {"query": "war", "k": 3, "filter": {"types": ["PER"]}}),
    ("/search", {"queries": ["art", "music"], "k": 2}),
    ("/search", {"entity": "Q90", "k": 3}),
]


def same(a: object, b: object, tol: float = 1e-3) -> bool:
    """Equal, with floats within `tol` (a batch pads texts to one length: the last bits move)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_an_answer_given_in_a_batch_equals_the_answer_given_alone(server: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    alone: dict[int, object] = {}
    with httpx.Client(timeout=120) as c:
        for i, (route, body) in enumerate(POOL):
            r = c.post(f"{server}{route}", json=body)
            assert r.status_code == 200, (route, r.text[:300])
            alone[i] = r.json()
    assert alone[0]["entities"] and alone[1]["entities"]  # type: ignore[index]

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(range(len(POOL))), min_size=4, max_size=24))
    def mixed(picks: list[int]) -> None:
        def call(i: int) -> object:
            route, body = POOL[i]
            with httpx.Client(timeout=120) as c:
                r = c.post(f"{server}{route}", json=body)
            assert r.status_code == 200, (route, r.text[:300])
            return r.json()

        with ThreadPoolExecutor(len(picks)) as pool:
            answers = list(pool.map(call, picks))
        for i, answer in zip(picks, answers, strict=True):
            assert same(answer, alone[i]), (POOL[i], answer, alone[i])

    mixed()


def test_docs_and_redoc_load_nothing_from_another_host() -> None:
    import re

    from fastapi.testclient import TestClient

    from pipeline.api import create_app

    with TestClient(create_app()) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
            assert urls and not [u for u in urls if re.match(r"(?:https?:)?//", u)], urls
            for u in urls:
                assert client.get(u).status_code == 200, u
            assert "fonts.googleapis" not in html


def test_openapi_declares_the_answer_and_every_error_of_each_model_route() -> None:
    from pipeline.api import create_app

    spec = create_app().openapi()
    schemas = spec["components"]["schemas"]
    for route in ("/link", "/classify", "/extract", "/search"):
        responses = spec["paths"][route]["post"]["responses"]
        assert {"200", "400", "413", "415", "422", "429", "500", "503"} <= set(responses), route
        ok = json.dumps(responses["200"]["content"]["application/json"]["schema"])
        assert "$ref" in ok, (route, ok)  # a declared model, not "any"
        for code in ("400", "413", "415", "422", "429", "503"):
            error = responses[code]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}, (route, code, error)
    assert set(schemas["ErrorBody"]["properties"]) == {"error", "details"}
    assert "entities" in schemas["LinkResult"]["properties"]
    assert {"head_name", "relation_name", "tail_name"} <= set(schemas["Fact"]["properties"])


@pytest.mark.slow
def test_refusals_say_what_to_send(server: str) -> None:
    no_type = httpx.post(f"{server}/link", content=b'{"text": "Paris"}')
    assert no_type.status_code == 415 and "Content-Type: application/json" in no_type.json()["error"]
    form = httpx.post(f"{server}/classify", data={"text": "Paris"})
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    for route in ("/classify", "/link", "/extract"):
        blank = httpx.post(f"{server}{route}", json={"text": "  \n\t "})
        assert blank.status_code == 422 and "only whitespace" in blank.json()["error"], (route, blank.text)
    blank = httpx.post(f"{server}/classify", json={"texts": ["Paris", " "]})
    assert blank.status_code == 422 and blank.json()["details"][0]["field"] == "texts.1"
    yes = httpx.post(f"{server}/extract", json={"text": "Paris", "vector": "yes"})
    assert yes.status_code == 422 and yes.json()["details"][0]["field"] == "vector"


@pytest.mark.slow
def test_health_answers_while_a_400_kb_text_is_linked(server: str) -> None:
    import threading

    heavy = threading.Thread(
        target=lambda: httpx.post(f"{server}/link", json={"text": "\U0001f600" * 100_000}, timeout=300),
        daemon=True,
    )
    heavy.start()
    time.sleep(1)
    slowest, answered = 0.0, 0
    while heavy.is_alive() and slowest < 2:
        start = time.perf_counter()
        assert httpx.get(f"{server}/health", timeout=10).status_code == 200
        slowest = max(slowest, time.perf_counter() - start)
        # a short /classify, which links its text with the same spaCy pipeline, answers meanwhile
        # too: it waits for one piece of the long text, not for all of it (on 2 busy cores that
        # may take seconds, so only that it answers before the long one is asserted)
        r = httpx.post(f"{server}/classify", json={"text": "Rome is in Italy."}, timeout=60)
        assert r.status_code == 200
        answered += heavy.is_alive()
        time.sleep(0.3)
    heavy.join(300)
    assert not heavy.is_alive() and slowest < 2 and answered, (slowest, answered)


def test_a_request_over_the_time_limit_gets_503_and_its_work_is_dropped() -> None:
    import asyncio
    import contextlib
    import threading

    from pipeline.api import Limits, TimedOut, Worker

    seen: list[list[int]] = []
    gate = threading.Event()

    def model(items: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(list(items))
        return items

    async def scenario() -> None:
        worker = Worker("test", model, Limits(max_batch=1, max_wait_ms=0, timeout_s=0.2))
        worker.start()
        first = asyncio.create_task(worker.submit([1]))  # the model holds it at the gate
        await asyncio.sleep(0.05)
        try:
            await worker.submit([2])  # waits behind it and times out
            raise AssertionError("the second request must time out")
        except TimedOut as e:
            assert e.seconds == 0.2
        gate.set()
        with contextlib.suppress(TimedOut):
            await first
        await asyncio.sleep(0.2)
        assert [2] not in seen  # dropped: the model never spent time on it
        await worker.stop()

    asyncio.run(scenario())
