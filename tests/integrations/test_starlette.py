"""lembro.starlette through Starlette's real TestClient: server-side data, bad cookies,
what is (not) stored, regenerate, lifetimes, pass-through scopes, async and blocking stores."""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import hashlib
import hmac
import pickle
import re
import runpy
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import itsdangerous
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from lembro import MemoryStore, Stats
from lembro.errors import SerializationError
from lembro.ids import is_session_id, new_session_id
from lembro.protocol import AsyncSessionStore, SessionStore
from lembro.size import parse_size
from lembro.starlette import (
    COOKIE_HEADER_REMEMBERED_BYTES,
    COOKIE_HEADERS_REMEMBERED,
    SENT_COOKIES_REMEMBERED,
    Session,
    SessionMiddleware,
    regenerate,
)
from tests.conftest import FakeClock
from tests.servers import ROOT

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the client is the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

SECRET = "test-secret"
EXAMPLE = ROOT / "examples" / "fastapi_app.py"


# ---- the app under test --------------------------------------------------------------


def view(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


def nothing(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def read_user(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.session.get("user")})


async def update(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


async def rewrite(request: Request) -> JSONResponse:
    """Assign every key again, usually to the value it already has."""
    for key, value in (await request.json()).items():
        request.session[key] = value
    return JSONResponse(dict(request.session))


async def append(request: Request) -> JSONResponse:
    """Mutate a nested list in place: Session's own methods never see it."""
    request.session["items"].append(await request.json())
    return JSONResponse(dict(request.session))


def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse(dict(request.session))


def write_then_empty(request: Request) -> JSONResponse:
    request.session["draft"] = 1
    del request.session["draft"]
    return JSONResponse(dict(request.session))


def login(request: Request) -> JSONResponse:
    request.session["user"] = "alice"
    regenerate(request)
    return JSONResponse(dict(request.session))


def logout(request: Request) -> JSONResponse:
    request.session.clear()
    regenerate(request)
    return JSONResponse(dict(request.session))


async def ws_session(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(dict(websocket.session))
    await websocket.close()


ROUTES = [
    Route("/view", view),
    Route("/nothing", nothing),
    Route("/read_user", read_user),
    Route("/update", update, methods=["POST"]),
    Route("/rewrite", rewrite, methods=["POST"]),
    Route("/append", append, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/write_then_empty", write_then_empty, methods=["POST"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    WebSocketRoute("/ws", ws_session),
]


def make_app(
    store: SessionStore | AsyncSessionStore, routes: list[Any] = ROUTES, **options: Any
) -> Starlette:
    return Starlette(
        routes=routes,
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store, **options)],
    )


def cookie_sid(response: Any, secret: str = SECRET) -> str:
    """The session id in the response's Set-Cookie, checked against the signature."""
    match = re.search(r"(?:^|, )session=([^;]*);", response.headers["set-cookie"])
    assert match is not None
    if match[1] == "null":  # a cleared cookie
        return "null"
    sid = match[1].partition(".")[0]
    assert match[1] == signed_cookie(sid, secret)
    return sid


def signed(value: str, secret: str = SECRET) -> str:
    return signed_cookie(value, secret)


def signed_cookie(sid: str, secret: str) -> str:
    """The cookie value docs/security.md describes, computed here independently of lembro: the id,
    a dot, and keyed BLAKE2b-256 of the id under HMAC-SHA256(secret, "lembro.session-id")."""
    key = hmac.digest(secret.encode(), b"lembro.session-id", "sha256")
    digest = hashlib.blake2b(sid.encode(), key=key, digest_size=32).digest()
    tag = base64.urlsafe_b64encode(digest).rstrip(b"=")
    return f"{sid}.{tag.decode()}"


@pytest.fixture
def client(store: MemoryStore) -> TestClient:
    return TestClient(make_app(store))


# ---- the cookie and the store --------------------------------------------------------


def test_cookie_holds_only_a_signed_session_id(client: TestClient, store: MemoryStore) -> None:
    response = client.post("/update", json={"card": "4111-1111-1111-1111"})
    header = response.headers["set-cookie"]
    assert "4111" not in header
    sid = cookie_sid(response)
    assert is_session_id(sid)
    assert header.startswith(f"session={signed(sid).rsplit('.', 2)[0]}.")
    assert store.get(sid) == {"card": "4111-1111-1111-1111"}
    assert client.get("/view").json() == {"card": "4111-1111-1111-1111"}


def test_cookie_attributes_match_starlettes(store: MemoryStore) -> None:
    options: dict[str, Any] = {
        "max_age": 3600,
        "path": "/",
        "same_site": "strict",
        "https_only": True,
        "domain": "testserver.local",
        "partitioned": True,
    }
    theirs = Starlette(
        routes=ROUTES,
        middleware=[Middleware(StarletteSessionMiddleware, secret_key=SECRET, **options)],
    )
    for app in (theirs, make_app(store, **options)):
        client = TestClient(app, base_url="https://testserver.local")
        written = client.post("/update", json={"a": 1}).headers["set-cookie"]
        cleared = client.post("/clear").headers["set-cookie"]
        attributes = (written.split("; ", 1)[1], cleared)
        if app is theirs:
            expected = attributes
    assert attributes == expected


def test_default_store_is_a_4m_memory_store() -> None:
    middleware = SessionMiddleware(nothing, SECRET)  # type: ignore[arg-type]
    assert isinstance(middleware.store, MemoryStore)
    assert middleware.store.max_size == parse_size("4M")
    middleware.store.close()


def test_empty_session_is_not_stored(client: TestClient, store: MemoryStore) -> None:
    response = client.post("/write_then_empty")
    assert response.json() == {}
    assert "set-cookie" not in response.headers
    assert len(store) == 0


def test_read_only_request_creates_nothing(client: TestClient, store: MemoryStore) -> None:
    for path in ("/view", "/read_user", "/nothing"):
        response = client.get(path)
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    assert len(store) == 0


def test_reading_a_session_sends_no_cookie_and_writes_nothing(
    client: TestClient, store: MemoryStore
) -> None:
    sid = cookie_sid(client.post("/update", json={"user": "alice"}))
    response = client.get("/read_user")
    assert response.json() == {"user": "alice"}
    assert "set-cookie" not in response.headers
    assert list(store.all()) == [sid]


def test_emptied_session_deletes_record_and_cookie(client: TestClient, store: MemoryStore) -> None:
    sid = cookie_sid(client.post("/update", json={"user": "alice"}))
    response = client.post("/clear")
    header = response.headers["set-cookie"]
    assert header.startswith("session=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT;")
    assert sid not in store
    assert len(store) == 0
    assert "session" not in client.cookies
    assert client.get("/view").json() == {}


def test_nested_mutation_is_saved(client: TestClient, store: MemoryStore) -> None:
    sid = cookie_sid(client.post("/update", json={"items": []}))
    response = client.post("/append", json="x")
    assert "set-cookie" not in response.headers  # the same id, sent a moment ago
    assert store.get(sid) == {"items": ["x"]}


_IN_PLACE: dict[str, Callable[[Any], None]] = {
    "getitem": lambda session: session["items"].append("x"),
    "get": lambda session: session.get("items").append("x"),
    "setdefault": lambda session: session.setdefault("items", []).append("x"),
    "values": lambda session: next(iter(session.values())).append("x"),
    "items": lambda session: next(iter(session.items()))[1].append("x"),
    "copy": lambda session: session.copy()["items"].append("x"),
    "dict()": lambda session: dict(session)["items"].append("x"),
    "unpacked": lambda session: {**session}["items"].append("x"),
}


@pytest.mark.parametrize("how", list(_IN_PLACE))
def test_a_nested_change_is_saved_however_the_value_was_reached(
    store: MemoryStore, how: str
) -> None:
    async def change(request: Request) -> PlainTextResponse:
        _IN_PLACE[how](request.session)
        return PlainTextResponse("ok")

    client = TestClient(make_app(store, [*ROUTES, Route("/change", change)]))
    sid = cookie_sid(client.post("/update", json={"items": []}))
    client.get("/change")
    assert store.get(sid) == {"items": ["x"]}


def test_a_write_is_written_back_and_a_read_is_not(clock: FakeClock) -> None:
    class CountingStore(MemoryStore):
        sets = 0

        def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
            self.sets += 1  # every write of data, whether set or replace
            super().set(sid, data, ttl)

        def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
            self.sets += 1
            return super().replace(sid, data, ttl)

        def update(
            self,
            sid: str,
            changes: dict[str, Any],
            deleted: Iterable[str] = (),
            ttl: float | None = None,
        ) -> bool:
            self.sets += 1
            return super().update(sid, changes, deleted, ttl)

    store = CountingStore("1M", None, clock=clock)
    with store:
        client = TestClient(make_app(store, max_age=60))
        sid = cookie_sid(client.post("/update", json={"a": 1}))
        assert store.sets == 1
        clock.advance(50)
        client.get("/view")  # a read: nothing written
        assert store.sets == 1
        response = client.post("/rewrite", json={"a": 1})
        assert "set-cookie" not in response.headers  # sent under 1% of max_age ago
        assert store.sets == 2  # set through the session: written back, not compared
        clock.advance(50)  # 100 s after the first write, 50 s after the second
        assert store.get(sid) == {"a": 1}
        client.post("/rewrite", json={"a": 2})
        assert store.sets == 3
        assert store.get(sid) == {"a": 2}


def test_a_written_cookie_is_re_sent_once_its_expiry_would_move_by_one_percent(
    store: MemoryStore,
) -> None:
    """max_age=5: a write re-sends the cookie once this process sent it 50 ms ago or more
    (1% of max_age), with the same id and the full Max-Age. (Sooner, only the record
    slides: see the tests above, with max_age=3600.)"""
    client = TestClient(make_app(store, max_age=5))
    sid = cookie_sid(client.post("/update", json={"a": 1}))
    time.sleep(0.1)
    response = client.post("/update", json={"a": 3})
    assert cookie_sid(response) == sid
    assert "Max-Age=5;" in response.headers["set-cookie"]
    assert store.get(sid) == {"a": 3}


def test_a_process_that_did_not_send_the_cookie_sends_it(store: MemoryStore) -> None:
    """Two workers on one store: the one that never sent this id's cookie sends it on a
    write, so the cookie slides whichever worker serves."""
    first = TestClient(make_app(store, max_age=3600))
    second = TestClient(make_app(store, max_age=3600))
    sid = cookie_sid(first.post("/update", json={"a": 1}))
    second.cookies.set("session", signed(sid))
    assert cookie_sid(second.post("/update", json={"a": 2})) == sid
    assert "set-cookie" not in second.post("/update", json={"a": 3}).headers


def test_an_id_forgotten_among_many_gets_its_cookie_again(store: MemoryStore) -> None:
    """The middleware remembers the last SENT_COOKIES_REMEMBERED ids it sent; beyond,
    the first is forgotten and re-sent, never left to end early."""
    app = make_app(store, max_age=3600)
    first = TestClient(app)
    sid = cookie_sid(first.post("/update", json={"a": 1}))
    assert "set-cookie" not in first.post("/update", json={"a": 2}).headers
    for _ in range(SENT_COOKIES_REMEMBERED):
        cookie_sid(TestClient(app).post("/update", json={"b": 1}))
    assert cookie_sid(first.post("/update", json={"a": 3})) == sid


# ---- ids the server did not issue ----------------------------------------------------


def _planted_cookies(store: MemoryStore, clock: FakeClock) -> dict[str, str]:
    expired = new_session_id()
    store.set(expired, {"user": "mallory"}, ttl=1)
    clock.advance(2)
    live = new_session_id()
    store.set(live, {"user": "alice"})
    store.set("admin", {"user": "root"})  # a record under a key lembro never issues
    return {
        "unknown id, good signature": signed(new_session_id()),
        "expired record": signed(expired),
        "itsdangerous-signed id": itsdangerous.TimestampSigner(SECRET).sign(live).decode(),
        "other key": signed(live, secret="not-our-secret"),
        "tampered signature": signed(live)[:-2] + "AA",
        "unsigned id": live,
        "signed non-id": signed("admin"),
        "signed short id": signed(live[:-1]),
        "empty": "",
        "garbage": '%%%;;\\"null',
    }


@pytest.mark.parametrize(
    "kind",
    [
        "unknown id, good signature",
        "expired record",
        "itsdangerous-signed id",
        "other key",
        "tampered signature",
        "unsigned id",
        "signed non-id",
        "signed short id",
        "empty",
        "garbage",
    ],
)
def test_foreign_id_is_never_adopted(store: MemoryStore, clock: FakeClock, kind: str) -> None:
    cookie = _planted_cookies(store, clock)[kind]
    before = set(store.all())
    client = TestClient(make_app(store, max_age=600))
    response = client.get("/view", headers={"cookie": f"session={cookie}"})
    assert response.status_code == 200
    assert response.json() == {}
    assert "set-cookie" not in response.headers
    response = client.post("/update", json={"n": 1}, headers={"cookie": f"session={cookie}"})
    sid = cookie_sid(response)
    assert sid not in cookie
    assert set(store.all()) == before | {sid}
    assert store.get(sid) == {"n": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_bad_cookie_gets_a_fresh_session_and_never_raises(value: bytes) -> None:
    with MemoryStore("1M", None) as store:
        victim = new_session_id()
        store.set(victim, {"user": "alice"})
        client = TestClient(make_app(store))
        headers = {"cookie": b"session=" + value}
        response = client.get("/view", headers=headers)
        assert response.status_code == 200
        assert response.json() == {}
        response = client.post("/update", json={"n": 1}, headers=headers)
        assert response.status_code == 200
        sid = cookie_sid(response)
        assert sid != victim
        assert sid.encode() not in value
        assert set(store.all()) == {victim, sid}


def test_record_destroyed_meanwhile_is_not_revived(store: MemoryStore) -> None:
    async def update_after_logout_elsewhere(request: Request) -> JSONResponse:
        store.clear()  # another request of this session logged out meanwhile
        request.session.update(await request.json())
        return JSONResponse(dict(request.session))

    routes = [*ROUTES, Route("/late", update_after_logout_elsewhere, methods=["POST"])]
    client = TestClient(make_app(store, routes))
    old = cookie_sid(client.post("/update", json={"a": 1}))
    response = client.post("/late", json={"b": 2})
    assert response.json() == {"a": 1, "b": 2}
    assert "set-cookie" not in response.headers  # the logout's cookie stands
    assert old not in store
    assert len(store) == 0  # nor is the data written under another id


def test_unreadable_record_gives_a_fresh_session() -> None:
    class CorruptStore(DictAsyncStore):
        async def get(self, sid: str) -> dict[str, Any] | None:
            if sid in self.data:
                raise SerializationError("cannot decode")
            return None

    store = CorruptStore()
    client = TestClient(make_app(store))
    old = cookie_sid(client.post("/update", json={"a": 1}))
    response = client.get("/view")
    assert response.status_code == 200
    assert response.json() == {}
    assert cookie_sid(client.post("/update", json={"b": 2})) != old


# ---- Cookie headers remembered --------------------------------------------------------


async def async_view(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


def _heap_now() -> tracemalloc.Snapshot:
    """What is allocated now, once garbage left by earlier requests is collected, so a
    count compares what is held, not when the collector last ran."""
    gc.collect()
    return tracemalloc.take_snapshot()


def _asgi_get(
    loop: asyncio.AbstractEventLoop, app: Any, cookie_header: bytes
) -> tuple[bytes, list[bytes]]:
    """One GET of ``/`` straight through ``app`` on ``loop``, with this Cookie header:
    (the body, the Set-Cookie values)."""
    body: list[bytes] = []
    set_cookies: list[bytes] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            set_cookies.extend(v for k, v in message["headers"] if k == b"set-cookie")
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"cookie", cookie_header)],
        "state": {},
    }
    loop.run_until_complete(app(scope, receive, send))
    return b"".join(body), set_cookies


def test_cookie_headers_remembered_stay_bounded_and_forged_ones_never_count() -> None:
    """Each client sends its own Cookie header (the session cookie beside one of its
    own); many clients, and as many forged cookies, leave the middleware holding no more
    than ``COOKIE_HEADERS_REMEMBERED`` headers cost, and every answer stays right."""
    store = MemoryStore("16M", None)
    app = make_app(store, [Route("/", async_view)])
    loop = asyncio.new_event_loop()
    clients = 10 * COOKIE_HEADERS_REMEMBERED
    sids = [new_session_id() for _ in range(clients)]
    for index, sid in enumerate(sids):
        store.set(sid, {"n": index})
    headers = [f"session={signed(sid)}; theme=t{i}".encode() for i, sid in enumerate(sids)]
    forged = [f"session={signed(sid)[:-1]}A; theme=t{i}".encode() for i, sid in enumerate(sids)]
    _asgi_get(loop, app, headers[0])  # the app's own first-request allocations, out of the count
    tracemalloc.start()
    try:
        before = _heap_now()
        for index, (header, fake) in enumerate(zip(headers, forged, strict=True)):
            assert _asgi_get(loop, app, header)[0] == f'{{"n":{index}}}'.encode()
            if fake != header:  # a tag that already ends in "A" would not be forged
                assert _asgi_get(loop, app, fake)[0] == b"{}"
        after = _heap_now()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # A header remembered costs its bytes and what it carried; the signer remembers as
    # many values. Remembering every header would hold ten times as many.
    assert grown < COOKIE_HEADERS_REMEMBERED * 1200
    assert _asgi_get(loop, app, headers[-1])[0] == f'{{"n":{clients - 1}}}'.encode()
    loop.close()


def test_forged_cookie_headers_are_never_remembered() -> None:
    store = MemoryStore("1M", None)
    app = make_app(store, [Route("/", async_view)])
    loop = asyncio.new_event_loop()
    forged = [
        f"session={new_session_id()}.{'A' * 43}; theme=t{i}".encode()
        for i in range(COOKIE_HEADERS_REMEMBERED - 1)  # all would fit, were they kept
    ]
    _asgi_get(loop, app, forged[0])
    tracemalloc.start()
    try:
        before = _heap_now()
        for header in forged:
            assert _asgi_get(loop, app, header) == (b"{}", [])
        after = _heap_now()
    finally:
        tracemalloc.stop()
        loop.close()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < COOKIE_HEADERS_REMEMBERED * 25  # remembered, they would hold a table of them


def test_cookie_headers_longer_than_the_limit_are_never_remembered() -> None:
    store = MemoryStore("1M", None)
    app = make_app(store, [Route("/", async_view)])
    loop = asyncio.new_event_loop()
    sid = new_session_id()
    store.set(sid, {"user": "alice"})
    pad = "p" * COOKIE_HEADER_REMEMBERED_BYTES
    headers = [
        f"session={signed(sid)}; theme=t{i}; pad={pad}".encode()
        for i in range(COOKIE_HEADERS_REMEMBERED - 1)  # all would fit, were they kept
    ]
    _asgi_get(loop, app, headers[0])
    tracemalloc.start()
    try:
        before = _heap_now()
        for header in headers:
            assert _asgi_get(loop, app, header)[0] == b'{"user":"alice"}'
        after = _heap_now()
    finally:
        tracemalloc.stop()
    loop.close()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < COOKIE_HEADERS_REMEMBERED * 60  # remembered, they would hold a table of them


def test_a_remembered_header_signed_with_an_old_key_is_re_signed_each_time() -> None:
    store = MemoryStore("1M", None)
    app = Starlette(
        routes=[Route("/", async_view)],
        middleware=[
            Middleware(
                SessionMiddleware, secret_key="new-key", secret_key_fallbacks=[SECRET], store=store
            )
        ],
    )
    loop = asyncio.new_event_loop()
    sid = new_session_id()
    store.set(sid, {"user": "alice"})
    header = f"session={signed(sid)}".encode()
    for _ in range(2):  # the second answer is remembered, and still asks for re-signing
        body, set_cookies = _asgi_get(loop, app, header)
        assert body == b'{"user":"alice"}'
        assert len(set_cookies) == 1
        assert set_cookies[0].startswith(f"session={signed(sid, 'new-key')};".encode())
    loop.close()


# ---- regenerate ----------------------------------------------------------------------


def test_regenerate_destroys_the_old_record(client: TestClient, store: MemoryStore) -> None:
    old = cookie_sid(client.post("/update", json={"cart": [1]}))
    response = client.post("/login")
    new = cookie_sid(response)
    assert new != old
    assert old not in store
    assert store.get(new) == {"cart": [1], "user": "alice"}
    stale = TestClient(client.app, cookies={"session": signed(old)})
    assert stale.get("/view").json() == {}


def test_regenerate_without_a_cookie_issues_a_new_id(
    client: TestClient, store: MemoryStore
) -> None:
    sid = cookie_sid(client.post("/login"))
    assert list(store.all()) == [sid]


def test_regenerate_with_cleared_session_logs_out(client: TestClient, store: MemoryStore) -> None:
    old = cookie_sid(client.post("/login"))
    response = client.post("/logout")
    assert response.headers["set-cookie"].startswith("session=null;")
    assert old not in store
    assert len(store) == 0


def test_regenerate_needs_the_middleware() -> None:
    def only_regenerate(request: Request) -> PlainTextResponse:
        regenerate(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/login", only_regenerate, methods=["POST"])])
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        TestClient(app).post("/login")


# ---- lifetimes -----------------------------------------------------------------------


def test_max_age_is_the_records_lifetime(store: MemoryStore, clock: FakeClock) -> None:
    assert store.ttl != 60
    client = TestClient(make_app(store, max_age=60))
    sid = cookie_sid(client.post("/update", json={"a": 1}))
    clock.advance(50)
    assert client.get("/view").json() == {"a": 1}
    clock.advance(20)  # 70 s after the write: reading did not stretch it past the cookie's
    assert sid not in store
    assert client.get("/view").json() == {}


def test_without_max_age_the_record_slides_on_the_stores_ttl(clock: FakeClock) -> None:
    with MemoryStore("1M", None, ttl=100, clock=clock) as store:
        client = TestClient(make_app(store, max_age=None))
        response = client.post("/update", json={"a": 1})
        assert "max-age" not in response.headers["set-cookie"].lower()
        sid = cookie_sid(response)
        for _ in range(3):
            clock.advance(80)
            assert client.get("/nothing").status_code == 200
        assert store.get(sid) == {"a": 1}  # 240 s on a 100 s ttl: each request renewed it
        clock.advance(101)
        assert client.get("/view").json() == {}


def test_non_positive_max_age_stores_nothing(store: MemoryStore) -> None:
    client = TestClient(make_app(store, max_age=0))
    response = client.post("/update", json={"a": 1})
    assert "; Max-Age=0; " in response.headers["set-cookie"]
    assert len(store) == 0


# ---- Vary: Cookie --------------------------------------------------------------------


def test_vary_cookie_only_where_the_session_was_accessed(client: TestClient) -> None:
    def varies(response: Any) -> bool:
        return "cookie" in response.headers.get("vary", "").lower()

    assert varies(client.post("/update", json={"a": 1}))
    assert varies(client.get("/view"))
    assert varies(client.get("/read_user"))
    assert not varies(client.get("/nothing"))


def test_session_notes_reads_that_bypass_request_session() -> None:
    for read in (
        lambda s: s["a"],
        lambda s: s.get("a"),
        lambda s: "a" in s,
        lambda s: list(s),
        lambda s: len(s),
        lambda s: s.items(),
    ):
        session = Session({"a": 1})
        read(session)
        assert session.accessed
        assert not session.modified


@pytest.mark.parametrize(
    "copy_of",
    [copy.copy, copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))],  # noqa: S301 - its own bytes
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_copied_or_pickled_session_is_its_data_alone(copy_of: Callable[[Any], Any]) -> None:
    """Never the middleware (and app) it came from: a store or a background job that
    copies the session gets a plain dict; containers reached so are watched for changes."""
    middleware = SessionMiddleware(make_app(MemoryStore("1M", None)), secret_key=SECRET)
    session = Session({"a": 1, "items": [1]}, sid=new_session_id(), middleware=middleware)
    copied = copy_of(session)
    assert type(copied) is dict
    assert copied == {"a": 1, "items": [1]}
    assert session.accessed
    if copied["items"] is session["items"]:  # a shallow copy shares the list
        copied["items"].append(2)
        assert session.changed_inside()


# ---- scopes other than http ----------------------------------------------------------


def test_lifespan_scope_passes_through_untouched(store: MemoryStore) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    asyncio.run(SessionMiddleware(app, SECRET, store=store)(scope, receive, send))
    assert len(seen) == 1
    assert seen[0][0] is scope
    assert seen[0][1] is receive
    assert seen[0][2] is send
    assert scope == {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}


def test_lifespan_runs_through_the_middleware(store: MemoryStore) -> None:
    started: list[bool] = []
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
        lifespan=lambda app: _lifespan(started),
    )
    with TestClient(app) as client:
        assert started == [True]
        assert client.get("/view").json() == {}
    assert len(store) == 0


class _lifespan:
    def __init__(self, started: list[bool]) -> None:
        self.started = started

    async def __aenter__(self) -> None:
        self.started.append(True)

    async def __aexit__(self, *exc: object) -> None:
        pass


def test_websocket_messages_pass_through_and_session_is_read_only(store: MemoryStore) -> None:
    client = TestClient(make_app(store))
    sid = cookie_sid(client.post("/update", json={"user": "alice"}))
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_json() == {"user": "alice"}
    assert store.all() == {sid: {"user": "alice"}}

    seen: list[Send] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"]["user"] = "mallory"
        seen.append(send)

    async def send(message: Message) -> None:
        pass

    scope: Scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"cookie", f"session={signed(sid)}".encode())],
    }
    asyncio.run(SessionMiddleware(app, SECRET, store=store)(scope, _no_receive, send))
    assert seen == [send]
    assert store.all() == {sid: {"user": "alice"}}


async def _no_receive() -> Message:
    raise AssertionError("not called")


# ---- other stores --------------------------------------------------------------------


class DictAsyncStore:
    """An AsyncSessionStore over a dict, with coroutine methods only (as an async driver)."""

    ttl = 3600.0

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def get(self, sid: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.data.get(sid))

    async def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self.data[sid] = copy.deepcopy(data)

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        if sid not in self.data:
            return False
        self.data[sid] = copy.deepcopy(data)
        return True

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        return sid in self.data

    async def destroy(self, sid: str) -> bool:
        return self.data.pop(sid, None) is not None

    async def all(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.data)

    async def clear(self) -> None:
        self.data.clear()

    async def purge(self) -> int:
        return 0

    async def stats(self) -> Stats:
        return Stats(len(self.data), 0, None, 0, 0, 0, 0, 0)

    async def close(self) -> None:
        pass

    async def length(self) -> int:
        return len(self.data)

    async def contains(self, sid: str) -> bool:
        return sid in self.data


class BlockingStore:
    """A sync store whose calls may block (it does not say ``blocking = False``), over a
    dict and a lock; it records the thread each call ran on."""

    ttl = 3600.0

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.threads: set[int] = set()

    def _enter(self) -> threading.Lock:
        self.threads.add(threading.get_ident())
        return self.lock

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._enter():
            return copy.deepcopy(self.data.get(sid))

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        with self._enter():
            self.data[sid] = copy.deepcopy(data)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        with self._enter():
            if sid not in self.data:
                return False
            self.data[sid] = copy.deepcopy(data)
            return True

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        with self._enter():
            return sid in self.data

    def destroy(self, sid: str) -> bool:
        with self._enter():
            return self.data.pop(sid, None) is not None

    def all(self) -> dict[str, dict[str, Any]]:
        with self._enter():
            return copy.deepcopy(self.data)

    def clear(self) -> None:
        with self._enter():
            self.data.clear()

    def purge(self) -> int:
        return 0

    def stats(self) -> Stats:
        return Stats(len(self.data), 0, None, 0, 0, 0, 0, 0)

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, sid: object) -> bool:
        return sid in self.data


def _exercise(client: TestClient, ids: Callable[[], set[str]]) -> None:
    """Write, read, log in, log out: the store holds exactly what each step leaves."""
    assert client.get("/view").json() == {}
    assert ids() == set()
    first = cookie_sid(client.post("/update", json={"a": 1}))
    assert ids() == {first}
    assert client.get("/view").json() == {"a": 1}
    second = cookie_sid(client.post("/login"))
    assert ids() == {second} != {first}
    assert client.get("/view").json() == {"a": 1, "user": "alice"}
    client.post("/logout")
    assert ids() == set()


def test_works_with_an_async_only_store() -> None:
    store = DictAsyncStore()
    assert isinstance(store, AsyncSessionStore)
    assert not isinstance(store, SessionStore)
    _exercise(TestClient(make_app(store)), lambda: set(store.data))


def test_blocking_store_runs_off_the_event_loop() -> None:
    store = BlockingStore()
    assert isinstance(store, SessionStore)
    loops: set[int] = set()

    async def loop_thread(request: Request) -> PlainTextResponse:
        loops.add(threading.get_ident())  # an async endpoint runs on the event loop's thread
        request.session["seen"] = True
        return PlainTextResponse("ok")

    routes = [*ROUTES, Route("/loop", loop_thread)]
    with TestClient(make_app(store, routes)) as client:  # one event loop for every request
        _exercise(client, lambda: set(store.data))
        client.get("/loop")
        client.get("/loop")
    assert len(loops) == 1
    assert store.threads
    assert not store.threads & loops


class KeepingStore(DictAsyncStore):
    """A store that keeps the very dict it is given, as a naive one may."""

    async def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self.data[sid] = data

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        if sid not in self.data:
            return False
        self.data[sid] = data
        return True


def test_a_store_other_than_memorystore_is_given_a_plain_copy() -> None:
    """Only a MemoryStore, which serializes at once and keeps bytes, is handed the
    request's session itself; another store may keep what it is given."""
    store = KeepingStore()
    client = TestClient(make_app(store))
    client.post("/update", json={"a": 1})
    client.post("/update", json={"a": 2})
    (kept,) = store.data.values()
    assert type(kept) is dict
    assert kept == {"a": 2}


# ---- FastAPI -------------------------------------------------------------------------


@pytest.fixture
def example_app() -> Any:
    return runpy.run_path(str(EXAMPLE))["app"]


def test_fastapi_example_counts_visits_server_side(example_app: Any) -> None:
    client = TestClient(example_app)
    first = client.get("/")
    assert first.json() == {"visits": 1}
    sid = cookie_sid(first, "dev-only-change-me")
    assert is_session_id(sid)
    for expected in (2, 3):
        response = client.get("/")
        assert response.json() == {"visits": expected}
        assert "set-cookie" not in response.headers  # the same id, sent a moment ago
    assert TestClient(example_app).get("/").json() == {"visits": 1}


# ---- saying no -----------------------------------------------------------------------


def test_unserializable_data_fails_the_request_and_stores_nothing(store: MemoryStore) -> None:
    def keep_object(request: Request) -> PlainTextResponse:
        request.session["obj"] = object()
        return PlainTextResponse("ok")

    client = TestClient(make_app(store, [Route("/keep", keep_object)]))
    with pytest.raises(SerializationError):
        client.get("/keep")
    assert len(store) == 0
    client = TestClient(
        make_app(store, [Route("/keep", keep_object)]), raise_server_exceptions=False
    )
    response = client.get("/keep")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers


def test_missing_starlette_names_the_extra() -> None:
    blocked = "import sys; sys.modules['starlette'] = None; import lembro.starlette"
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "ImportError: lembro.starlette needs Starlette" in result.stderr
    assert "pip install 'lembro[starlette]'" in result.stderr
