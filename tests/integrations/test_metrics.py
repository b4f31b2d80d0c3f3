"""lembro.metrics: the values an operator scrapes match what a scripted run did, on a
MemoryStore (with a fake clock) and a real Redis, through Flask's test client; the
exposition is parsed back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lembro import MemoryStore, RedisStore
from lembro.errors import InvalidOption
from lembro.flask import Lembro, logout_everywhere
from lembro.metrics import LembroCollector
from lembro.protocol import as_async
from lembro.starlette import SessionMiddleware

from ..conftest import FakeClock
from ..redis_server import RedisServer

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the client is the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

Samples = dict[tuple[str, str], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the exposition, parsed back: ``(name, reason label or "")`` -> value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("reason", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rejected(samples: Samples, before: Samples) -> dict[str, float]:
    """Cookies rejected since ``before`` (the counts are the process's), by reason."""
    name = "lembro_cookies_rejected_total"
    return {
        reason: samples[(name, reason)] - before[(name, reason)]
        for reason in ("bad_signature", "unknown_id", "malformed")
    }


def make_app(store: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="metrics-secret", TESTING=True, LEMBRO_OWNER_KEY="user")
    Lembro(app, store)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        return "in"

    @app.get("/")
    def home() -> str:
        return f"hello {session.get('user', 'stranger')}"

    @app.post("/regenerate")
    def regenerate() -> str:
        session.regenerate()  # type: ignore[attr-defined]
        return "new id"

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "out"

    @app.post("/logout-everywhere")
    def everywhere() -> str:
        return str(logout_everywhere(session["user"], keep_current=False))

    return app


def tamper(value: str) -> str:
    """``value`` with the last character of its signature changed."""
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def scripted_run(app: Flask) -> str:
    """Sign in 5 users and ada on 3 devices, regenerate 2 sessions, log 2 out, log ada out
    everywhere, read once, then send a malformed, a forged and a logged-out cookie (one
    each). Return the id of a session still live."""
    clients: list[FlaskClient] = [app.test_client() for _ in range(8)]
    for number, client in enumerate(clients[:5]):
        assert client.post(f"/login/u{number}").status_code == 200
    for client in clients[5:]:
        client.post("/login/ada")
    for client in clients[:2]:
        client.post("/regenerate")
    logged_out = clients[2].get_cookie("session")
    assert logged_out is not None
    for client in clients[2:4]:
        client.post("/logout")
    assert clients[5].post("/logout-everywhere").text == "3"
    assert clients[4].get("/").text == "hello u4"
    live = clients[4].get_cookie("session")
    assert live is not None

    stranger = app.test_client()
    stranger.set_cookie("session", "not-a-session-cookie")
    assert stranger.get("/").text == "hello stranger"
    stranger.set_cookie("session", tamper(live.value))
    assert stranger.get("/").text == "hello stranger"
    stranger.set_cookie("session", logged_out.value)
    assert stranger.get("/").text == "hello stranger"
    return live.value.partition(".")[0]


# What scripted_run does, as the collector should count it.
CREATED = 5 + 3 + 2  # sign-ins, and each regenerate's new id
DESTROYED = {"logout": 2, "regenerate": 2, "logout_everywhere": 3}
LIVE_AFTER = 3  # u0 and u1 (regenerated), u4
# Reads with a cookie: 2 regenerates, 2 logouts, the logout everywhere, the read.
HITS = 2 + 2 + 1 + 1
MISSES = 1  # the logged-out cookie
REJECTED = {"bad_signature": 1, "unknown_id": 1, "malformed": 1}


def test_memory_store_metrics_count_what_a_scripted_run_did(clock: FakeClock) -> None:
    with MemoryStore("1M", None, clock=clock, owner_key="user", ttl=3600) as store:
        registry = CollectorRegistry()
        LembroCollector(store, registry=registry)
        before = scrape(registry)
        scripted_run(make_app(store))
        after = scrape(registry)

        assert after[("lembro_up", "")] == 1
        assert after[("lembro_sessions", "")] == LIVE_AFTER
        assert after[("lembro_signed_in_users", "")] == LIVE_AFTER  # u0, u1, u4
        assert after[("lembro_bytes", "")] == store.size > 0
        assert after[("lembro_max_bytes", "")] == 1024 * 1024
        assert after[("lembro_created_total", "")] == CREATED
        for reason, count in DESTROYED.items():
            assert after[("lembro_destroyed_total", reason)] == count
        assert after[("lembro_hits_total", "")] == HITS
        assert after[("lembro_misses_total", "")] == MISSES
        assert after[("lembro_expired_total", "")] == 0
        assert after[("lembro_evicted_total", "")] == 0
        assert ("lembro_unavailable_total", "") not in after  # a Redis store's only
        assert rejected(after, before) == REJECTED

        clock.advance(3601)  # every session left expires
        expired = scrape(registry)
        assert expired[("lembro_expired_total", "")] == LIVE_AFTER
        assert expired[("lembro_sessions", "")] == 0
        assert expired[("lembro_signed_in_users", "")] == 0


def test_memory_store_metrics_count_evictions_under_the_cap() -> None:
    with MemoryStore("64K", None) as store:
        registry = CollectorRegistry()
        LembroCollector(store, registry=registry)
        for _ in range(200):
            store.set(uuid.uuid4().hex, {"payload": "x" * 1000})
        samples = scrape(registry)
    evicted = samples[("lembro_evicted_total", "")]
    assert evicted > 0
    assert samples[("lembro_created_total", "")] == 200
    assert samples[("lembro_sessions", "")] == 200 - evicted
    assert samples[("lembro_bytes", "")] <= samples[("lembro_max_bytes", "")]


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    prefix = f"lembro-metrics:{uuid.uuid4().hex[:12]}:"
    with RedisStore(redis_server.url, prefix=prefix, owner_key="user") as store:
        yield store
        store.clear()


def test_redis_store_metrics_count_what_a_scripted_run_did(redis_store: RedisStore) -> None:
    registry = CollectorRegistry()
    LembroCollector(redis_store, registry=registry)
    before = scrape(registry)
    live = scripted_run(make_app(redis_store))
    after = scrape(registry)

    assert after[("lembro_up", "")] == 1
    assert after[("lembro_sessions", "")] == LIVE_AFTER
    # ada's set lives on past her sessions, one ttl: Redis counts owner sets.
    assert after[("lembro_signed_in_users", "")] >= LIVE_AFTER
    assert after[("lembro_bytes", "")] > 0
    assert after[("lembro_created_total", "")] == CREATED
    for reason, count in DESTROYED.items():
        assert after[("lembro_destroyed_total", reason)] == count
    assert after[("lembro_hits_total", "")] == HITS
    assert after[("lembro_misses_total", "")] == MISSES
    assert after[("lembro_unavailable_total", "")] == 0
    # Redis expires and evicts keys itself, uncounted: no metric rather than a false 0.
    assert ("lembro_expired_total", "") not in after
    assert ("lembro_evicted_total", "") not in after
    assert rejected(after, before) == REJECTED
    assert live in redis_store


def test_redis_metrics_say_the_store_is_down_and_keep_the_counts() -> None:
    # Nothing listens on port 1; reads are empty and counted, the scrape says "down".
    store = RedisStore(
        "redis://127.0.0.1:1/0", on_unavailable="empty", connect_timeout=0.2, socket_timeout=0.2
    )
    try:
        registry = CollectorRegistry()
        LembroCollector(store, registry=registry, cookies=False)
        assert store.get("x" * 43) is None
        samples = scrape(registry)
    finally:
        store.close()
    assert samples[("lembro_up", "")] == 0
    assert samples[("lembro_unavailable_total", "")] == 2  # the get and the scrape's stats
    assert samples[("lembro_misses_total", "")] == 1
    assert ("lembro_sessions", "") not in samples
    assert ("lembro_cookies_rejected_total", "malformed") not in samples


def test_a_redis_stores_async_twin_counts_into_the_store(redis_store: RedisStore) -> None:
    # What an ASGI integration does with a RedisStore: it talks to store.as_async().
    async def requests() -> None:
        twin = redis_store.as_async()
        try:
            await twin.set("s" * 43, {"user": "ada"})
            assert await twin.get("s" * 43) == {"user": "ada"}
            assert await twin.get("m" * 43) is None
            assert await twin.destroy("s" * 43)
        finally:
            await twin.close()

    asyncio.run(requests())
    registry = CollectorRegistry()
    LembroCollector(redis_store, registry=registry)
    samples = scrape(registry)
    assert samples[("lembro_created_total", "")] == 1
    assert samples[("lembro_hits_total", "")] == 1
    assert samples[("lembro_misses_total", "")] == 1
    assert samples[("lembro_destroyed_total", "logout")] == 1


def test_starlette_counts_each_kind_of_refused_cookie() -> None:
    async def login(request: Request) -> PlainTextResponse:
        request.session["user"] = "ada"
        return PlainTextResponse("in")

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.session.get('user', 'stranger')}")

    async def logout(request: Request) -> PlainTextResponse:
        request.session.clear()
        return PlainTextResponse("out")

    routes = [Route("/login", login, methods=["POST"]), Route("/", home)]
    routes.append(Route("/logout", logout, methods=["POST"]))
    with MemoryStore("1M", None) as store:
        app = Starlette(routes=routes)
        app.add_middleware(SessionMiddleware, secret_key="metrics-secret", store=store)
        registry = CollectorRegistry()
        LembroCollector(store, registry=registry)
        before = scrape(registry)
        with TestClient(app) as client:
            client.post("/login")
            signed = client.cookies["session"]
            assert client.get("/").text == "hello ada"
            client.post("/logout")
            for value in ("x" * 10, tamper(signed), signed):
                client.cookies.set("session", value)
                assert client.get("/").text == "hello stranger"
        after = scrape(registry)
    assert rejected(after, before) == REJECTED
    assert after[("lembro_destroyed_total", "logout")] == 1


def test_the_collector_takes_a_memory_stores_async_face_and_refuses_an_async_redis_store(
    redis_store: RedisStore,
) -> None:
    with MemoryStore("1M", None) as store:
        collector = LembroCollector(as_async(store), registry=None)
        assert collector.store is store
    face = as_async(redis_store)
    try:
        with pytest.raises(InvalidOption, match="RedisStore whose as_async"):
            LembroCollector(face, registry=None)
    finally:
        asyncio.run(face.close())


def test_registering_reads_nothing_from_the_store() -> None:
    class Unreadable(MemoryStore):
        def stats(self) -> Any:
            raise AssertionError("stats() read at registration")

    with Unreadable("1M", None) as store:
        registry = CollectorRegistry(auto_describe=True)
        LembroCollector(store, registry=registry)
        with pytest.raises(ValueError, match="Duplicated"):  # one collector per registry
            LembroCollector(store, registry=registry)
