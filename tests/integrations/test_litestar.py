"""lembro.litestar: Litestar's Store contract on lembro's stores, and sessions in a real
Litestar app (its own middleware, its TestClient) with lembro's hygiene.

The store contract below is written from Litestar's ``Store`` docstrings and the
behaviours its own store tests check (Litestar's sdist ships no tests to run as they are).
It runs on Litestar's own ``MemoryStore`` too, so it pins Litestar's contract, not ours.
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Request, get, post
from litestar.datastructures import Cookie
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.stores.base import NamespacedStore, Store
from litestar.stores.memory import MemoryStore as LitestarMemoryStore
from litestar.testing import TestClient
from litestar.utils.dataclass import extract_dataclass_items

from lembro import InvalidOption, MemoryStore, RedisStore
from lembro._cookies import REJECTED
from lembro.ids import is_session_id, new_session_id
from lembro.litestar import (
    LembroSessionBackend,
    LembroSessionConfig,
    LembroStore,
    regenerate,
)
from tests.conftest import FakeClock
from tests.redis_server import RedisServer

KINDS = ["lembro-memory", "lembro-redis", "litestar-memory"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=KINDS)
async def any_store(
    request: pytest.FixtureRequest, clock: FakeClock, redis_server: RedisServer
) -> AsyncIterator[Store]:
    kind = request.param
    if kind == "lembro-memory":
        store = LembroStore(MemoryStore("1M", None, clock=clock), clock=clock)
    elif kind == "lembro-redis":
        redis = RedisStore(redis_server.url, prefix=f"lembro-test:{new_session_id()[:8]}:")
        store = LembroStore(redis)
    else:
        store = LitestarMemoryStore()
    yield store
    await store.delete_all()
    await store.__aexit__(None, None, None)


@pytest.fixture
async def memory_store(clock: FakeClock) -> AsyncIterator[LembroStore]:
    store = LembroStore(MemoryStore("1M", None, clock=clock), clock=clock)
    yield store
    await store.__aexit__(None, None, None)


# ---- the Store contract, on every store --------------------------------------------------


@pytest.mark.anyio
async def test_get_returns_what_set_stored_and_none_for_a_missing_key(any_store: Store) -> None:
    assert await any_store.get("missing") is None
    await any_store.set("key", b"value", 60)
    assert await any_store.get("key") == b"value"


@pytest.mark.anyio
async def test_a_str_value_comes_back_as_its_utf8_bytes(any_store: Store) -> None:
    await any_store.set("key", "välue")
    assert await any_store.get("key") == "välue".encode()


@pytest.mark.anyio
async def test_bytes_that_are_not_utf8_come_back_exactly(any_store: Store) -> None:
    await any_store.set("key", b"\xff\x00\xfe msgpack or anything")
    assert await any_store.get("key") == b"\xff\x00\xfe msgpack or anything"


@pytest.mark.parametrize("key", [*string.punctuation, "foo\xc3\xbc", "..", "a:b", "\x1e"])
@pytest.mark.anyio
async def test_keys_may_hold_any_character(any_store: Store, key: str) -> None:
    await any_store.set(key, b"value")
    assert await any_store.get(key) == b"value"


@pytest.mark.anyio
async def test_delete_removes_and_is_a_no_op_when_missing(any_store: Store) -> None:
    await any_store.set("key", b"value", 60)
    await any_store.delete("key")
    assert await any_store.get("key") is None
    await any_store.delete("never set")


@pytest.mark.anyio
async def test_exists_says_whether_a_value_is_stored(any_store: Store) -> None:
    assert await any_store.exists("key") is False
    await any_store.set("key", b"value")
    assert await any_store.exists("key") is True


@pytest.mark.anyio
async def test_expires_in_is_none_when_absent_minus_one_without_expiry(any_store: Store) -> None:
    assert await any_store.expires_in("key") is None
    await any_store.set("key", b"value")
    assert await any_store.expires_in("key") == -1


@pytest.mark.anyio
async def test_expires_in_counts_whole_seconds_down_from_the_expiry(any_store: Store) -> None:
    for expires_in, seconds in ((10, 10), (timedelta(minutes=1), 60)):
        started = time.monotonic()
        await any_store.set("key", b"value", expires_in=expires_in)
        left = await any_store.expires_in("key")
        # Real time passes for Redis and Litestar's store: one second less at most, unless
        # the loaded machine stalled for longer in between.
        stalled = math.floor(time.monotonic() - started)
        assert left is not None
        assert seconds - 1 - stalled <= left <= seconds


@pytest.mark.anyio
async def test_delete_all_deletes_every_value(any_store: Store) -> None:
    for i in range(10):
        await any_store.set(f"key-{i}", b"value", expires_in=10 if i % 2 else None)
    await any_store.delete_all()
    for i in range(10):
        assert await any_store.get(f"key-{i}") is None


# ---- namespaces (lembro's stores; Litestar's MemoryStore has none) ------------------------


@pytest.fixture
async def namespaced(any_store: Store) -> NamespacedStore:
    if not isinstance(any_store, NamespacedStore):
        pytest.skip("Litestar's MemoryStore has no namespaces")
    return any_store


@pytest.mark.anyio
async def test_a_namespace_keeps_its_keys_apart(namespaced: NamespacedStore) -> None:
    child = namespaced.with_namespace("foo")
    await namespaced.set("bar", b"parent")
    await child.set("bar", b"child")
    assert await namespaced.get("bar") == b"parent"
    assert await child.get("bar") == b"child"


@pytest.mark.anyio
async def test_delete_all_on_a_child_leaves_its_parent(namespaced: NamespacedStore) -> None:
    child = namespaced.with_namespace("FOO")
    await child.set("foo", b"child")
    await namespaced.set("bar", b"parent")
    await child.delete_all()
    assert await child.get("foo") is None
    assert await namespaced.get("bar") == b"parent"


@pytest.mark.anyio
async def test_delete_all_on_a_parent_deletes_its_children(namespaced: NamespacedStore) -> None:
    child = namespaced.with_namespace("FOO").with_namespace("BAR")
    await child.set("foo", b"grandchild")
    await namespaced.set("bar", b"parent")
    await namespaced.delete_all()
    assert await child.get("foo") is None
    assert await namespaced.get("bar") is None


@pytest.mark.anyio
async def test_delete_all_leaves_a_namespace_whose_name_starts_alike(clock: FakeClock) -> None:
    memory = MemoryStore("1M", None, clock=clock)
    store = LembroStore(memory, clock=clock)
    alike = LembroStore(memory, namespace="LITESTARX", clock=clock)
    await store.set("bar", b"mine")
    await alike.set("baz", b"another namespace")
    await store.delete_all()
    assert await store.get("bar") is None
    assert await alike.get("baz") == b"another namespace"
    assert len(memory) == 1


# ---- time, on lembro's MemoryStore with a fake clock --------------------------------------


@pytest.mark.anyio
async def test_a_value_expires_after_its_expires_in(
    memory_store: LembroStore, clock: FakeClock
) -> None:
    await memory_store.set("key", b"value", expires_in=1)
    clock.advance(2)
    assert await memory_store.get("key") is None
    assert await memory_store.exists("key") is False


@pytest.mark.parametrize("renew_for", [10, timedelta(seconds=10)])
@pytest.mark.anyio
async def test_get_with_renew_for_extends_the_expiry(
    memory_store: LembroStore, clock: FakeClock, renew_for: int | timedelta
) -> None:
    await memory_store.set("key", b"value", expires_in=1)
    assert await memory_store.get("key", renew_for=renew_for) == b"value"
    clock.advance(2)
    assert await memory_store.get("key") == b"value"
    assert await memory_store.expires_in("key") == 8


@pytest.mark.anyio
async def test_renew_for_leaves_a_value_without_expiry_alone(
    memory_store: LembroStore, clock: FakeClock
) -> None:
    await memory_store.set("key", b"value")
    await memory_store.get("key", renew_for=10)
    assert await memory_store.expires_in("key") == -1


@pytest.mark.anyio
async def test_a_value_without_expiry_still_lives_only_the_lembro_stores_ttl(
    clock: FakeClock,
) -> None:
    store = LembroStore(MemoryStore("1M", None, ttl=100, clock=clock), clock=clock)
    await store.set("key", b"value")
    clock.advance(101)
    assert await store.get("key") is None


@pytest.mark.anyio
async def test_a_flood_through_the_store_stays_under_the_cap(clock: FakeClock) -> None:
    memory = MemoryStore("64K", None, clock=clock)
    store = LembroStore(memory, clock=clock)
    for _ in range(2000):
        await store.set(new_session_id(), b'{"bot":true,"ua":"crawler/1.0"}', expires_in=3600)
    assert memory.size <= 64 * 1024
    assert memory.stats().evicted > 0


@pytest.mark.anyio
async def test_bad_expiry_and_namespace_are_refused_before_anything_changes(
    memory_store: LembroStore,
) -> None:
    with pytest.raises(InvalidOption):
        await memory_store.set("key", b"value", expires_in=-1)
    assert await memory_store.exists("key") is False
    with pytest.raises(InvalidOption):
        LembroStore(MemoryStore("1M", None), namespace="a\x1fb")
    with pytest.raises(InvalidOption):
        memory_store.with_namespace("")


# ---- sessions in a real Litestar app --------------------------------------------------------


@get("/count")
async def count(request: Request[Any, Any, Any]) -> dict[str, int]:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return {"visits": request.session["visits"]}


@get("/peek")
async def peek(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"visits": request.session.get("visits", 0)}


@post("/login")
async def login(request: Request[Any, Any, Any]) -> None:
    regenerate(request)
    request.session["user"] = "ada"


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> None:
    request.clear_session()


@post("/ended-elsewhere")
async def ended_elsewhere(request: Request[Any, Any, Any]) -> None:
    # A logout in another request ends this session while this one still runs.
    store = request.app.stores.get("sessions")
    await store.delete(request.cookies["session"])
    request.session["late"] = "write"


@post("/login-after-logout")
async def login_after_logout(request: Request[Any, Any, Any]) -> None:
    store = request.app.stores.get("sessions")
    await store.delete(request.cookies["session"])
    regenerate(request)
    request.session["user"] = "mallory"


def make_app(store: Store, config: ServerSideSessionConfig) -> Litestar:
    return Litestar(
        route_handlers=[count, peek, login, logout, ended_elsewhere, login_after_logout],
        middleware=[config.middleware],
        stores={"sessions": store},
    )


@pytest.fixture
def memory() -> Iterator[MemoryStore]:
    with MemoryStore("1M", None) as store:
        yield store


@pytest.fixture
def client(memory: MemoryStore) -> Iterator[TestClient[Litestar]]:
    app = make_app(LembroStore(memory), LembroSessionConfig())
    with TestClient(app) as test_client:
        yield test_client


def test_refused_session_cookies_are_counted_for_the_metrics(
    client: TestClient[Litestar],
) -> None:
    malformed, unknown = REJECTED.malformed, REJECTED.unknown_id
    for value in ("not-a-lembro-id", new_session_id()):
        client.cookies.set("session", value)
        assert client.get("/peek").json() == {"visits": 0}
    assert (REJECTED.malformed - malformed, REJECTED.unknown_id - unknown) == (1, 1)


def stored_ids(memory: MemoryStore) -> set[str]:
    return {sid.split("\x1e", 1)[1] for sid in memory.all()}


def test_sessions_count_and_the_cookie_is_an_http_only_lax_lembro_id(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    assert client.get("/count").json() == {"visits": 1}
    response = client.get("/count")
    assert response.json() == {"visits": 2}
    sid = client.cookies["session"]
    assert is_session_id(sid)
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header
    assert "samesite=lax" in header
    assert stored_ids(memory) == {sid}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"secure": True, "samesite": "strict", "domain": "example.org", "path": "/"},
        {"httponly": False, "samesite": "none", "secure": True, "max_age": 60},
    ],
    ids=["defaults", "strict-domain", "none-60s"],
)
def test_the_cookie_is_rendered_as_litestars_cookie_renders_it(
    memory: MemoryStore, options: dict[str, Any]
) -> None:
    """Each session cookie is the header Litestar's ``Cookie`` renders for the config,
    with apps of other configs answering in between (the rendering is kept for one)."""
    configs = [LembroSessionConfig(key="s", **options), LembroSessionConfig(key="t")]
    assert_cookies_as_litestar_renders_them(memory, configs)


def test_configs_whose_attributes_are_equal_but_render_apart_get_their_own_cookie(
    memory: MemoryStore,
) -> None:
    """60 and 60.0 are equal, and Litestar renders them as "60" and "60.0"."""
    configs = [
        LembroSessionConfig(key="s", max_age=60),
        LembroSessionConfig(key="s", max_age=60.0),  # type: ignore[arg-type]
    ]
    assert_cookies_as_litestar_renders_them(memory, configs)


def assert_cookies_as_litestar_renders_them(
    memory: MemoryStore, configs: list[LembroSessionConfig]
) -> None:
    apps = [make_app(LembroStore(memory), config) for config in configs]
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        for _ in range(2):
            for test_client, config in ((first, configs[0]), (second, configs[1])):
                response = test_client.get("/count")
                header = response.headers["set-cookie"]
                name, _, rest = header.partition("=")
                sid = rest.split(";", 1)[0]
                assert (name, is_session_id(sid)) == (config.key, True)
                params = extract_dataclass_items(
                    config, exclude_none=True, include=Cookie.__dict__.keys()
                )
                expected = Cookie(value=sid, key=config.key, **dict(params))
                assert header == expected.to_header(header="")


@get("/cart")
async def cart(request: Request[Any, Any, Any]) -> dict[str, int]:
    session = request.session
    session.setdefault("name", "Ada")
    session.setdefault("items", [])
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"]}


def test_a_write_back_serializes_again_only_the_keys_that_may_have_changed(
    memory: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain value still the object loaded keeps its loaded text; a new value and a
    container (which may have changed in place) are serialized again."""
    serialized: list[str] = []
    serialize = LembroSessionBackend.serialize_data

    def counting(data: Any, scope: Any = None) -> bytes:
        serialized.extend(data)
        return serialize(data, scope)

    monkeypatch.setattr(LembroSessionBackend, "serialize_data", staticmethod(counting))
    app = Litestar(
        route_handlers=[cart],
        middleware=[LembroSessionConfig().middleware],
        stores={"sessions": LembroStore(memory)},
    )
    with TestClient(app) as test_client:
        assert test_client.get("/cart").json() == {"visits": 1}
        assert sorted(serialized) == ["items", "name", "visits"]  # a new session: all
        serialized.clear()
        assert test_client.get("/cart").json() == {"visits": 2}
        assert sorted(serialized) == ["items", "visits"]  # "name" kept its text
    assert next(iter(memory.all().values()))["=name"] == '{"name":"Ada"}'


def test_a_request_that_only_reads_stores_nothing_and_sets_no_cookie(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    response = client.get("/peek")
    assert response.json() == {"visits": 0}
    assert "set-cookie" not in response.headers
    assert len(memory) == 0


def test_an_id_the_server_did_not_issue_is_never_adopted(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    made_up = new_session_id()
    response = client.get("/count", headers={"Cookie": f"session={made_up}"})
    issued = response.cookies["session"]
    assert issued != made_up
    assert is_session_id(issued)
    assert stored_ids(memory) == {issued}


def test_litestars_own_config_adopts_the_clients_id_which_lembros_does_not(
    memory: MemoryStore,
) -> None:
    # What Litestar's middleware decides by itself, pinned so docs/litestar.md stays true.
    app = make_app(LembroStore(memory), ServerSideSessionConfig())
    with TestClient(app) as stock:
        stock.get("/count", headers={"Cookie": "session=chosen-by-the-client"})
        assert stored_ids(memory) == {"chosen-by-the-client"}
        memory.clear()
        stock.cookies.clear()
        stock.get("/peek")  # a cookieless request that only reads
        assert len(memory) == 1


def test_regenerate_moves_the_session_to_a_new_id_and_ends_the_old_record(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    client.get("/count")
    before = client.cookies["session"]
    client.post("/login")
    after = client.cookies["session"]
    assert after != before
    assert stored_ids(memory) == {after}
    assert client.get("/count").json() == {"visits": 2}


def test_logout_deletes_the_record_and_the_cookie(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    client.get("/count")
    response = client.post("/logout")
    assert (
        'session="null"' in response.headers["set-cookie"]
        or "session=null" in (response.headers["set-cookie"])
    )
    assert len(memory) == 0


def test_a_write_back_never_brings_back_a_session_ended_meanwhile(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    client.get("/count")
    response = client.post("/ended-elsewhere")
    assert "set-cookie" not in response.headers
    assert len(memory) == 0


def test_a_regenerate_after_a_logout_writes_no_new_session(
    client: TestClient[Litestar], memory: MemoryStore
) -> None:
    client.get("/count")
    response = client.post("/login-after-logout")
    assert "set-cookie" not in response.headers
    assert len(memory) == 0


def test_sessions_on_a_redis_store(redis_server: RedisServer) -> None:
    redis = RedisStore(redis_server.url, prefix=f"lembro-test:{new_session_id()[:8]}:")
    app = make_app(LembroStore(redis), LembroSessionConfig())
    with TestClient(app) as redis_client:
        assert redis_client.get("/count").json() == {"visits": 1}
        assert redis_client.get("/count").json() == {"visits": 2}
        before = redis_client.cookies["session"]
        redis_client.post("/login")
        assert redis_client.cookies["session"] != before
        assert len(redis) == 1
    redis.clear()
    redis.close()


def test_the_apps_shutdown_closes_the_lembro_store_which_writes_its_snapshot(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sessions.snapshot"
    memory = MemoryStore("1M", None, snapshot=path)
    with TestClient(make_app(LembroStore(memory), LembroSessionConfig())) as litestar_client:
        litestar_client.get("/count")
        assert not path.exists()
    assert path.exists()
    with MemoryStore("1M", None, snapshot=path) as restarted:
        assert len(restarted) == 1


def test_litestars_response_cache_works_on_a_lembro_store(memory: MemoryStore) -> None:
    calls = []

    @get("/slow", cache=60)
    async def slow() -> dict[str, int]:
        calls.append(1)
        return {"calls": len(calls)}

    app = Litestar(route_handlers=[slow], stores={"response_cache": LembroStore(memory)})
    with TestClient(app) as cache_client:
        assert cache_client.get("/slow").json() == {"calls": 1}
        assert cache_client.get("/slow").json() == {"calls": 1}  # served from the store
    assert len(calls) == 1
    assert len(memory) == 1


@pytest.mark.parametrize("kind", ["lembro-memory", "lembro-redis"])
@pytest.mark.anyio
async def test_a_namespace_may_hold_a_colon_on_every_lembro_store(
    kind: str, clock: FakeClock, redis_server: RedisServer
) -> None:
    if kind == "lembro-memory":
        base: Any = MemoryStore("1M", None, clock=clock)
    else:
        base = RedisStore(redis_server.url, prefix=f"lembro-test:{new_session_id()[:8]}:")
    parent = LembroStore(base, namespace="cache:v1", clock=clock)
    child = parent.with_namespace("users:%")
    await parent.set("k:1", b"parent")
    await child.set("k:1", b"child")
    assert await parent.get("k:1") == b"parent"
    assert await child.get("k:1") == b"child"
    await child.delete_all()
    assert await child.get("k:1") is None
    assert await parent.get("k:1") == b"parent"
    await parent.delete_all()
    assert await parent.get("k:1") is None
    await parent.__aexit__(None, None, None)
