"""Flask, Starlette, Django, Litestar, Quart and aiohttp write back only what a request
changed (issue 28), with two
requests of one session interleaved step by step: both load it, then finish in a chosen
order. The rules: changes of different keys are both kept; a key one request deleted is
not brought back by another that only read it; a destroyed session is not recreated; a
request that only read writes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session import get_session
from aiohttp_session import setup as setup_aiohttp_session
from flask import Flask, Response
from litestar import Litestar, get
from litestar import Request as LitestarRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lembro.quart
from lembro import MemoryStore
from lembro.aiohttp import LembroStorage
from lembro.flask import Lembro, LembroSession
from lembro.litestar import LembroSessionConfig, LembroStore
from lembro.starlette import SessionMiddleware

SECRET = "test-secret"

Change = Callable[[Any], None]


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore("1M", None) as store:
        yield store


def set_theme(session: Any) -> None:
    session["theme"] = "dark"


def append_to_cart(session: Any) -> None:
    session["cart"].append(7)  # in place: no assignment, no modified flag


def pop_append_and_put_back(session: Any) -> None:
    cart = session.pop("cart")
    cart.append(8)
    session["cart"] = cart  # the same list object the session was loaded with


def take_flash(session: Any) -> None:
    session.pop("flash")


def read_only(session: Any) -> None:
    assert session["cart"] is not None
    assert session.get("theme") is not None


def read_cart_and_set_theme(session: Any) -> None:
    assert session["cart"] == []
    assert session.get("flash") == "saved"
    session["theme"] = "blue"


# ---- Flask: two requests loaded, then saved in order -----------------------------------


class FlaskRequests:
    """Opens and saves sessions of one app as separate requests would, in any order."""

    def __init__(self, store: MemoryStore) -> None:
        self.app = Flask(__name__)
        self.app.config.update(SECRET_KEY=SECRET, TESTING=True)
        Lembro(self.app, store)
        self.interface = self.app.session_interface

    def new(self, data: dict[str, Any]) -> str:
        """A stored session holding ``data``; its cookie value."""
        with self.app.test_request_context("/") as ctx:
            session = self.interface.open_session(self.app, ctx.request)
            assert isinstance(session, LembroSession)
            session.update(data)
            response = Response()
            self.interface.save_session(self.app, session, response)
            assert session.sid is not None
            return session._cookie or ""

    def load(self, cookie: str) -> LembroSession:
        with self.app.test_request_context("/", headers={"Cookie": f"session={cookie}"}) as ctx:
            session = self.interface.open_session(self.app, ctx.request)
            assert isinstance(session, LembroSession)
            assert not session.new
            return session

    def save(self, session: LembroSession) -> None:
        with self.app.test_request_context("/"):
            self.interface.save_session(self.app, session, Response())


def flask_interleaved(
    store: MemoryStore, first: Change, second: Change
) -> tuple[str, dict[str, Any] | None]:
    requests = FlaskRequests(store)
    cookie = requests.new({"cart": [], "flash": "saved", "theme": "light"})
    sid = cookie.rsplit(".", 1)[0]
    one, two = requests.load(cookie), requests.load(cookie)
    first(one)
    second(two)
    requests.save(one)
    requests.save(two)
    return sid, store.get(sid)


# ---- Starlette: two requests in flight, released in order -------------------------------


def starlette_interleaved(
    store: MemoryStore, first: Change, second: Change, between: Callable[[str], None] | None = None
) -> tuple[str, dict[str, Any] | None]:
    gates = {"one": asyncio.Event(), "two": asyncio.Event()}
    changes = {"one": first, "two": second}
    arrived: list[str] = []
    both_loaded = asyncio.Event()

    async def start(request: Request) -> PlainTextResponse:
        request.session.update({"cart": [], "flash": "saved", "theme": "light"})
        return PlainTextResponse("ok")

    async def hold(request: Request) -> PlainTextResponse:
        name = request.path_params["name"]
        arrived.append(name)  # the middleware has loaded the session by now
        if len(arrived) == 2:
            both_loaded.set()
        await gates[name].wait()
        changes[name](request.session)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/start", start), Route("/hold/{name}", hold)])
    app.add_middleware(SessionMiddleware, secret_key=SECRET, store=store)

    async def main() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            cookie = (await client.get("/start")).cookies["session"]
            client.cookies.clear()
            headers = {"Cookie": f"session={cookie}"}
            one = asyncio.ensure_future(client.get("/hold/one", headers=headers))
            two = asyncio.ensure_future(client.get("/hold/two", headers=headers))
            await both_loaded.wait()
            if between is not None:
                between(cookie.rsplit(".", 1)[0])
            gates["one"].set()
            assert (await one).status_code == 200
            gates["two"].set()
            assert (await two).status_code == 200
            return str(cookie.rsplit(".", 1)[0])

    sid = asyncio.run(main())
    return sid, store.get(sid)


# ---- Django: two SessionStores of one key, saved in order as its middleware would ------


def django_interleaved(
    store: MemoryStore, first: Change, second: Change
) -> tuple[str, dict[str, Any] | None]:
    from lembro.django import SessionStore, get_store

    from .test_django import configure_django

    configure_django()
    created = SessionStore()
    created.update({"cart": [], "flash": "saved", "theme": "light"})
    created.create()
    key = created.session_key
    assert key is not None
    one, two = SessionStore(key), SessionStore(key)
    first(one)
    second(two)
    for session in (one, two):
        if session.modified:  # what Django's SessionMiddleware saves
            session.save()
    return key, get_store().get(key)


# ---- Litestar: two requests in flight, released in order -------------------------------


def litestar_interleaved(
    store: MemoryStore,
    first: Change,
    second: Change,
    between: Callable[[str], Awaitable[object]] | None = None,
) -> tuple[str, dict[str, Any] | None]:
    gates = {"one": asyncio.Event(), "two": asyncio.Event()}
    changes = {"one": first, "two": second}
    arrived: list[str] = []
    both_loaded = asyncio.Event()

    @get("/start")
    async def start(request: LitestarRequest[Any, Any, Any]) -> str:
        request.session.update({"cart": [], "flash": "saved", "theme": "light"})
        return "ok"

    @get("/hold/{name:str}")
    async def hold(request: LitestarRequest[Any, Any, Any]) -> str:
        name = request.path_params["name"]
        arrived.append(name)  # the middleware has loaded the session by now
        if len(arrived) == 2:
            both_loaded.set()
        await gates[name].wait()
        changes[name](request.session)
        return "ok"

    lembro_store = LembroStore(store)
    app = Litestar(
        route_handlers=[start, hold],
        middleware=[LembroSessionConfig().middleware],
        stores={"sessions": lembro_store},
    )

    async def main() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            sid = (await client.get("/start")).cookies["session"]
            client.cookies.clear()
            headers = {"Cookie": f"session={sid}"}
            one = asyncio.ensure_future(client.get("/hold/one", headers=headers))
            two = asyncio.ensure_future(client.get("/hold/two", headers=headers))
            await both_loaded.wait()
            if between is not None:
                await between(sid)
            gates["one"].set()
            assert (await one).status_code == 200
            gates["two"].set()
            assert (await two).status_code == 200
            return str(sid)

    sid = asyncio.run(main())
    value = asyncio.run(lembro_store.get(sid))
    return sid, None if value is None else json.loads(value)


async def release_in_order(
    send: Callable[[str], Awaitable[int]],
    cookie: str,
    gates: dict[str, asyncio.Event],
    both_loaded: asyncio.Event,
    between: Callable[[str], None] | None,
) -> str:
    """Send ``/hold/one`` and ``/hold/two`` at once (``send`` answers the status), run
    ``between`` once both have loaded the session, then let ``one`` finish before
    ``two``; both succeed. Return the session's id (the signed cookie's first part)."""
    one = asyncio.ensure_future(send("/hold/one"))
    two = asyncio.ensure_future(send("/hold/two"))
    await both_loaded.wait()
    sid = cookie.rsplit(".", 1)[0]
    if between is not None:
        between(sid)
    gates["one"].set()
    assert await one == 200
    gates["two"].set()
    assert await two == 200
    return sid


# ---- Quart: two requests in flight, released in order ----------------------------------


def quart_interleaved(
    store: MemoryStore, first: Change, second: Change, between: Callable[[str], None] | None = None
) -> tuple[str, dict[str, Any] | None]:
    from quart import Quart, session

    gates = {"one": asyncio.Event(), "two": asyncio.Event()}
    changes = {"one": first, "two": second}
    arrived: list[str] = []
    both_loaded = asyncio.Event()

    app = Quart(__name__)
    app.secret_key = SECRET
    lembro.quart.Lembro(app, store)

    @app.get("/start")
    async def start() -> str:
        session.update({"cart": [], "flash": "saved", "theme": "light"})
        return "ok"

    @app.get("/hold/<name>")
    async def hold(name: str) -> str:
        arrived.append(name)  # the session was opened with the request
        if len(arrived) == 2:
            both_loaded.set()
        await gates[name].wait()
        changes[name](session)
        return "ok"

    async def main() -> str:
        client = app.test_client(use_cookies=False)
        started = await client.get("/start")
        cookie = started.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
        headers = {"Cookie": f"session={cookie}"}

        async def send(path: str) -> int:
            return (await client.get(path, headers=headers)).status_code

        return await release_in_order(send, cookie, gates, both_loaded, between)

    sid = asyncio.run(main())
    return sid, store.get(sid)


# ---- aiohttp: two requests in flight under its test server, released in order ----------


def aiohttp_interleaved(
    store: MemoryStore, first: Change, second: Change, between: Callable[[str], None] | None = None
) -> tuple[str, dict[str, Any] | None]:
    async def main() -> str:
        gates = {"one": asyncio.Event(), "two": asyncio.Event()}
        changes = {"one": first, "two": second}
        arrived: list[str] = []
        both_loaded = asyncio.Event()

        async def start(request: web.Request) -> web.Response:
            (await get_session(request)).update({"cart": [], "flash": "saved", "theme": "light"})
            return web.Response(text="ok")

        async def hold(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            session = await get_session(request)
            arrived.append(name)
            if len(arrived) == 2:
                both_loaded.set()
            await gates[name].wait()
            changes[name](session)
            return web.Response(text="ok")

        app = web.Application()
        setup_aiohttp_session(app, LembroStorage(store, secret_key=SECRET, cookie_name="session"))
        app.router.add_get("/start", start)
        app.router.add_get("/hold/{name}", hold)
        async with TestClient(TestServer(app)) as client:
            started = await client.get("/start")
            cookie = started.cookies["session"].value
            client.session.cookie_jar.clear()
            headers = {"Cookie": f"session={cookie}"}

            async def send(path: str) -> int:
                return (await client.get(path, headers=headers)).status

            return await release_in_order(send, cookie, gates, both_loaded, between)

    sid = asyncio.run(main())
    return sid, store.get(sid)


FRAMEWORKS = ["flask", "starlette", "django", "litestar", "quart", "aiohttp"]
RUNS = {
    "flask": flask_interleaved,
    "starlette": starlette_interleaved,
    "django": django_interleaved,
    "litestar": litestar_interleaved,
    "quart": quart_interleaved,
    "aiohttp": aiohttp_interleaved,
}


def interleaved(
    framework: str, store: MemoryStore, first: Change, second: Change
) -> dict[str, Any] | None:
    return RUNS[framework](store, first, second)[1]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_requests_that_change_different_keys_both_keep_their_change(
    framework: str, store: MemoryStore
) -> None:
    assert interleaved(framework, store, set_theme, append_to_cart) == {
        "cart": [7],
        "flash": "saved",
        "theme": "dark",
    }
    assert interleaved(framework, store, append_to_cart, set_theme) == {
        "cart": [7],
        "flash": "saved",
        "theme": "dark",
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_deleted_key_is_not_brought_back_by_a_request_that_only_read_it(
    framework: str, store: MemoryStore
) -> None:
    assert interleaved(framework, store, take_flash, read_cart_and_set_theme) == {
        "cart": [],
        "theme": "blue",
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_request_that_only_read_does_not_undo_another_requests_change(
    framework: str, store: MemoryStore
) -> None:
    assert interleaved(framework, store, append_to_cart, read_only) == {
        "cart": [7],
        "flash": "saved",
        "theme": "light",
    }


def test_a_flask_session_destroyed_meanwhile_is_not_recreated(store: MemoryStore) -> None:
    requests = FlaskRequests(store)
    cookie = requests.new({"cart": []})
    sid = cookie.rsplit(".", 1)[0]
    late = requests.load(cookie)
    store.destroy(sid)  # a logout finished first
    append_to_cart(late)
    late["theme"] = "dark"
    requests.save(late)
    assert store.get(sid) is None
    assert len(store) == 0


def test_a_starlette_session_destroyed_meanwhile_is_not_recreated(store: MemoryStore) -> None:
    sid, data = starlette_interleaved(store, set_theme, append_to_cart, between=store.destroy)
    assert data is None
    assert sid not in store
    assert len(store) == 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_value_popped_changed_and_put_back_is_written(framework: str, store: MemoryStore) -> None:
    assert interleaved(framework, store, set_theme, pop_append_and_put_back) == {
        "cart": [8],
        "flash": "saved",
        "theme": "dark",
    }


def test_a_django_session_destroyed_meanwhile_is_not_recreated() -> None:
    from django.contrib.sessions.backends.base import UpdateError

    from lembro.django import SessionStore, get_store

    from .test_django import configure_django

    configure_django()
    created = SessionStore()
    created["cart"] = []
    created.create()
    key = created.session_key
    assert key is not None
    late = SessionStore(key)
    late["cart"].append(7)
    get_store().destroy(key)  # a logout finished first
    assert late.modified
    with pytest.raises(UpdateError):
        late.save()
    assert get_store().get(key) is None


def test_a_litestar_session_destroyed_meanwhile_is_not_recreated(store: MemoryStore) -> None:
    async def logout(sid: str) -> None:
        assert await LembroStore(store).remove(sid)

    _, data = litestar_interleaved(store, set_theme, append_to_cart, between=logout)
    assert data is None
    assert len(store) == 0


@pytest.mark.parametrize("framework", ["quart", "aiohttp"])
def test_an_async_session_destroyed_meanwhile_is_not_recreated(
    framework: str, store: MemoryStore
) -> None:
    run = quart_interleaved if framework == "quart" else aiohttp_interleaved
    sid, data = run(store, set_theme, append_to_cart, between=store.destroy)
    assert data is None
    assert sid not in store
    assert len(store) == 0


class CountingStore(MemoryStore):
    """A MemoryStore that notes each write it is asked for."""

    writes: list[str]

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self.writes.append("set")
        super().set(sid, data, ttl)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        self.writes.append("replace")
        return super().replace(sid, data, ttl)

    def update(
        self, sid: str, changes: dict[str, Any], deleted: Any = (), ttl: float | None = None
    ) -> bool:
        self.writes.append("update")
        return super().update(sid, changes, deleted, ttl)


@pytest.mark.parametrize("framework", ["quart", "aiohttp"])
def test_requests_that_only_read_write_nothing(framework: str) -> None:
    run = quart_interleaved if framework == "quart" else aiohttp_interleaved
    with CountingStore("1M", None) as store:
        store.writes = []
        _, data = run(store, read_only, read_only)
        assert store.writes == ["set"]  # the session /start made, and nothing after
        assert data == {"cart": [], "flash": "saved", "theme": "light"}
