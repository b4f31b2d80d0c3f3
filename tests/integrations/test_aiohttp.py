"""lembro.aiohttp: aiohttp-session's API (``setup``, ``get_session``, ``new_session``) on a
LembroStorage, through aiohttp's own test client, and through aiohttp's own runner
(``web.AppRunner`` and ``TCPSite``) driven over HTTP, on a MemoryStore and a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session import get_session, new_session, setup

from lembro import InvalidOption, MemoryStore, RedisStore, StoreUnavailable
from lembro._cookies import REJECTED
from lembro.aiohttp import (
    AIOHTTP_SECURITY_OWNER_KEY,
    LembroSession,
    LembroStorage,
    logout_everywhere,
    regenerate,
)
from lembro.ids import is_session_id, new_session_id
from tests.conftest import FakeClock
from tests.integrations.test_flask import planted_cookies, sign
from tests.live_servers import serve_aiohttp
from tests.redis_server import RedisServer

SECRET = "test-secret"
COOKIE = "AIOHTTP_SESSION"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app(storage: LembroStorage) -> web.Application:
    """An app whose routes exercise the session through aiohttp-session's API."""

    async def inc(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.Response(text=str(session["n"]))

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(session.get("n")))

    async def none(request: web.Request) -> web.Response:
        return web.Response(text="no session here")

    async def login(request: web.Request) -> web.Response:
        await regenerate(request)
        session = await get_session(request)
        session["user"] = request.match_info["name"]
        return web.Response(text="signed in")

    async def fresh_login(request: web.Request) -> web.Response:
        session = await new_session(request)  # aiohttp-session's way: a new, empty session
        session["user"] = request.match_info["name"]
        return web.Response(text="signed in")

    async def whoami(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(session.get("user")))

    async def logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        return web.Response(text="signed out")

    async def logout_others(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(await logout_everywhere(request, session["user"])))

    async def logout_all(request: web.Request) -> web.Response:
        session = await get_session(request)
        ended = await logout_everywhere(request, session["user"], keep_current=False)
        return web.Response(text=str(ended))

    async def redirect(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = 7
        raise web.HTTPFound("/read")

    app = web.Application()
    setup(app, storage)

    async def close_storage(app: web.Application) -> None:
        await storage.close()

    app.on_cleanup.append(close_storage)
    app.router.add_get("/inc", inc)
    app.router.add_get("/read", read)
    app.router.add_get("/none", none)
    app.router.add_post("/login/{name}", login)
    app.router.add_post("/fresh-login/{name}", fresh_login)
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/logout", logout)
    app.router.add_post("/logout-others", logout_others)
    app.router.add_post("/logout-all", logout_all)
    app.router.add_get("/redirect", redirect)
    return app


@pytest.fixture
def store(clock: FakeClock) -> Iterator[MemoryStore]:
    with MemoryStore("1M", None, clock=clock, owner_key="user") as s:
        yield s


@pytest.fixture
async def client(store: MemoryStore) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(LembroStorage(store, secret_key=SECRET)))) as c:
        yield c


def cookie_of(client: TestClient[Any, Any]) -> str | None:
    for cookie in client.session.cookie_jar:
        if cookie.key == COOKIE:
            return cookie.value
    return None


def sid_of(client: TestClient[Any, Any]) -> str:
    value = cookie_of(client)
    assert value is not None
    return value.partition(".")[0]


def _rejected() -> tuple[int, int, int]:
    return REJECTED.malformed, REJECTED.bad_signature, REJECTED.unknown_id


def _refused() -> list[str]:
    """A malformed, a forged and a logged-out (signed, unknown) cookie: one of each."""
    planted = planted_cookies()
    return [planted["garbage"][0], planted["tampered"][0], sign(new_session_id())]


def plant(client: TestClient[Any, Any], value: str) -> None:
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: value}, client.make_url("/"))


def set_cookie(response: Any) -> str | None:
    for header in response.headers.getall("Set-Cookie", ()):
        if header.startswith(f"{COOKIE}="):
            return str(header)
    return None


# ---- round trip and the cookie ---------------------------------------------------------


async def test_counter_round_trips(client: TestClient[Any, Any], store: MemoryStore) -> None:
    assert [await (await client.get("/inc")).text() for _ in range(3)] == ["1", "2", "3"]
    assert list(store.all().values()) == [{"n": 3}]


async def test_cookie_holds_only_a_signed_id(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    response = await client.get("/inc")
    header = set_cookie(response)
    assert header is not None
    value = cookie_of(client)
    assert value is not None
    sid = value.partition(".")[0]
    assert is_session_id(sid)
    assert value == sign(sid)
    assert sid in store
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "secure" not in attributes
    assert "SameSite=Lax" in header
    assert "expires" not in attributes  # no max_age: the cookie ends with the browser


async def test_refused_cookies_are_counted_by_reason_for_the_metrics(
    client: TestClient[Any, Any],
) -> None:
    before = _rejected()
    for value in _refused():
        plant(client, value)
        assert await (await client.get("/read")).text() == "None"
    assert [now - then for now, then in zip(_rejected(), before, strict=True)] == [1, 1, 1]


@pytest.mark.parametrize("kind", list(planted_cookies()))
async def test_cookie_not_issued_gets_a_fresh_session(
    kind: str, client: TestClient[Any, Any], store: MemoryStore
) -> None:
    value, planted_sid = planted_cookies()[kind]
    plant(client, value)
    response = await client.get("/inc")
    assert response.status == 200
    assert await response.text() == "1"
    sid = sid_of(client)
    assert sid != planted_sid
    assert list(store.all()) == [sid]


async def test_a_request_that_only_reads_stores_nothing(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    response = await client.get("/read")
    assert await response.text() == "None"
    assert set_cookie(response) is None
    assert response.headers["Vary"] == "Cookie"
    assert len(store) == 0
    response = await client.get("/none")
    assert "Vary" not in response.headers


async def test_an_unchanged_session_is_not_written_and_its_cookie_not_resent(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    await client.get("/inc")
    response = await client.get("/read")
    assert await response.text() == "1"
    assert set_cookie(response) is None
    assert "Cookie" in response.headers["Vary"]


async def test_a_write_resends_a_browser_session_cookie_only_when_it_changes(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    assert set_cookie(await client.get("/inc")) is not None  # a new id
    response = await client.get("/inc")
    assert await response.text() == "2"
    assert set_cookie(response) is None  # the same id, no expiry to move
    assert list(store.all().values()) == [{"n": 2}]


async def test_with_max_age_each_write_resends_the_cookie(store: MemoryStore) -> None:
    app = make_app(LembroStorage(store, secret_key=SECRET, max_age=600))
    async with TestClient(TestServer(app)) as client:
        first = set_cookie(await client.get("/inc"))
        again = set_cookie(await client.get("/inc"))
        assert first is not None
        assert again is not None
        assert "Max-Age=600" in again
        assert first.split(";")[0] == again.split(";")[0]


async def test_a_redirect_raised_still_saves_the_session(client: TestClient[Any, Any]) -> None:
    response = await client.get("/redirect")
    assert response.status == 200
    assert await response.text() == "7"


# ---- sign out; regenerate; new_session --------------------------------------------------


async def test_invalidating_deletes_record_and_cookie(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    await client.get("/inc")
    sid = sid_of(client)
    response = await client.post("/logout")
    header = set_cookie(response)
    assert header is not None
    assert "Max-Age=0" in header
    assert sid not in store
    assert cookie_of(client) is None


async def test_regenerate_moves_data_to_a_new_id_and_destroys_the_old(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    await client.get("/inc")
    old_cookie = cookie_of(client)
    old = sid_of(client)
    await client.post("/login/ada")
    new = sid_of(client)
    assert new != old
    assert store.all() == {new: {"n": 1, "user": "ada"}}
    assert old_cookie is not None
    plant(client, old_cookie)
    assert await (await client.get("/read")).text() == "None"


async def test_new_session_destroys_the_record_it_replaces(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    await client.get("/inc")
    old = sid_of(client)
    assert await (await client.post("/fresh-login/ada")).text() == "signed in"
    new = sid_of(client)
    assert new != old
    assert store.all() == {new: {"user": "ada"}}


async def test_regenerate_after_a_concurrent_logout_writes_nothing(
    store: MemoryStore,
) -> None:
    storage = LembroStorage(store, secret_key=SECRET)
    app = make_app(storage)

    async def late_login(request: web.Request) -> web.Response:
        session = await get_session(request)
        assert session.identity is not None
        store.destroy(session.identity)  # another request of this session logged out
        await regenerate(request)
        session["user"] = "ada"
        return web.Response(text="ok")

    app.router.add_post("/late-login", late_login)
    async with TestClient(TestServer(app)) as client:
        await client.get("/inc")
        response = await client.post("/late-login")
        assert "Max-Age=0" in (set_cookie(response) or "")
        assert len(store) == 0


async def test_a_session_destroyed_meanwhile_stays_destroyed(store: MemoryStore) -> None:
    app = make_app(LembroStorage(store, secret_key=SECRET))

    async def late(request: web.Request) -> web.Response:
        session = await get_session(request)
        store.destroy(session.identity)
        session["late"] = True
        return web.Response(text="ok")

    app.router.add_get("/late", late)
    async with TestClient(TestServer(app)) as client:
        await client.get("/inc")
        response = await client.get("/late")
        assert set_cookie(response) is None
        assert len(store) == 0


# ---- log out everywhere -----------------------------------------------------------------


async def test_logout_everywhere_ends_the_users_other_sessions(store: MemoryStore) -> None:
    app = make_app(LembroStorage(store, secret_key=SECRET))
    async with (
        TestServer(app) as server,
        TestClient(server) as laptop,
        TestClient(server) as phone,
        TestClient(server) as other,
    ):
        await laptop.post("/login/ada")
        await phone.post("/login/ada")
        await other.post("/login/bob")
        assert await (await laptop.post("/logout-others")).text() == "1"
        assert store.sessions_of("ada") == [sid_of(laptop)]
        assert await (await phone.get("/whoami")).text() == "None"
        assert await (await laptop.get("/whoami")).text() == "ada"
        assert await (await other.get("/whoami")).text() == "bob"
        response = await laptop.post("/logout-all")
        assert await response.text() == "1"
        assert "Max-Age=0" in (set_cookie(response) or "")
        assert store.sessions_of("ada") == []


# ---- lifetimes, types, errors -----------------------------------------------------------


async def test_max_age_sets_the_cookie_and_the_record_lifetime(
    store: MemoryStore, clock: FakeClock
) -> None:
    app = make_app(LembroStorage(store, secret_key=SECRET, max_age=600))
    async with TestClient(TestServer(app)) as client:
        header = set_cookie(await client.get("/inc"))
        assert header is not None
        assert "Max-Age=600" in header
        clock.advance(500)
        assert await (await client.get("/read")).text() == "1"  # a use: renewed
        clock.advance(500)
        assert await (await client.get("/read")).text() == "1"
        clock.advance(601)
        assert await (await client.get("/read")).text() == "None"


async def test_values_come_back_with_their_exact_types(clock: FakeClock) -> None:
    value = {
        "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
        "raw": b"\x00\xff",
        "pair": (1, "two", (3.5, None)),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }
    seen: list[dict[str, Any]] = []

    async def put(request: web.Request) -> web.Response:
        (await get_session(request)).update(value)
        return web.Response(text="ok")

    async def look(request: web.Request) -> web.Response:
        seen.append(dict(await get_session(request)))
        return web.Response(text="ok")

    with MemoryStore("1M", None, clock=clock) as store:
        app = make_app(LembroStorage(store, secret_key=SECRET))
        app.router.add_get("/put", put)
        app.router.add_get("/look", look)
        async with TestClient(TestServer(app)) as client:
            await client.get("/put")
            await client.get("/look")
    assert seen == [value]
    assert type(seen[0]["pair"][2]) is tuple


async def test_a_key_that_is_not_a_str_is_refused_at_the_write(store: MemoryStore) -> None:
    async def int_key(request: web.Request) -> web.Response:
        (await get_session(request))[1] = "x"  # type: ignore[index]
        return web.Response(text="written")

    app = make_app(LembroStorage(store, secret_key=SECRET))
    app.router.add_get("/int-key", int_key)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/int-key")).status == 500
    assert len(store) == 0


async def test_a_stored_record_that_cannot_be_loaded_gives_a_fresh_session(
    client: TestClient[Any, Any], store: MemoryStore
) -> None:
    sid = new_session_id()
    store.set(sid, {1: "x"})  # type: ignore[dict-item]
    plant(client, sign(sid))
    assert await (await client.get("/inc")).text() == "1"
    assert sid not in store


async def test_a_store_that_is_down_is_a_500(clock: FakeClock) -> None:
    class DownStore(MemoryStore):
        def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
            raise StoreUnavailable("redis at 127.0.0.1:1 refused the connection")

        def load(self, sid: str) -> Any:  # the read a request makes
            raise StoreUnavailable("redis at 127.0.0.1:1 refused the connection")

    with DownStore("1M", None, clock=clock) as down:
        app = make_app(LembroStorage(down, secret_key=SECRET))
        async with TestClient(TestServer(app)) as client:
            plant(client, sign(new_session_id()))
            assert (await client.get("/read")).status == 500


async def test_a_fallback_key_keeps_the_session_and_the_cookie_is_signed_anew(
    store: MemoryStore,
) -> None:
    sid = new_session_id()
    store.set(sid, {"n": 41})
    storage = LembroStorage(store, secret_key="rotated", secret_key_fallbacks=[SECRET])
    async with TestClient(TestServer(make_app(storage))) as client:
        plant(client, sign(sid))
        response = await client.get("/read")  # a read only: signed anew all the same
        assert await response.text() == "41"
        assert cookie_of(client) == sign(sid, "rotated")
        response = await client.get("/inc")
        assert await response.text() == "42"
        assert set_cookie(response) is None  # it came signed with the current key
        assert cookie_of(client) == sign(sid, "rotated")
        assert store.get(sid) == {"n": 42}


def test_options_are_checked() -> None:
    with pytest.raises(InvalidOption):
        LembroStorage(secret_key="")
    with pytest.raises(InvalidOption):
        LembroStorage(object(), secret_key=SECRET)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        LembroStorage(secret_key=SECRET, max_age=0)


async def test_without_a_store_a_memory_store_keyed_by_aiohttp_securitys_identity() -> None:
    storage = LembroStorage(secret_key=SECRET, max_age=120)
    try:
        assert isinstance(storage.store, MemoryStore)
        assert storage.store.ttl == 120
        assert storage.store.owner_key == AIOHTTP_SECURITY_OWNER_KEY
    finally:
        await storage.close()
    assert isinstance(await storage.new_session(), LembroSession)


async def test_helpers_need_a_lembro_storage() -> None:
    async def view(request: web.Request) -> web.Response:
        with pytest.raises(RuntimeError, match="LembroStorage"):
            await regenerate(request)
        with pytest.raises(RuntimeError, match="LembroStorage"):
            await logout_everywhere(request, "ada")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", view)
    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/")).text() == "ok"


# ---- a real server: aiohttp's own runner, on a MemoryStore and a real Redis -------------


@pytest.fixture(params=["memory", "redis"])
def live_store(request: pytest.FixtureRequest) -> Iterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        with MemoryStore("1M", None, owner_key="user") as memory:
            yield memory
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"lembro-aiohttp:{uuid.uuid4().hex[:12]}:"
    with RedisStore(server.url, prefix=prefix, owner_key="user") as redis:
        try:
            yield redis
        finally:
            redis.clear()


def cookie_in(response: httpx.Response) -> str | None:
    """The session cookie's value a response sets ("" when it deletes it)."""
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        if COOKIE in parsed:
            return parsed[COOKIE].value
    return None


def test_a_real_server_signs_in_reads_regenerates_and_signs_out(
    live_store: MemoryStore | RedisStore,
) -> None:
    app = make_app(LembroStorage(live_store, secret_key=SECRET))
    with (
        serve_aiohttp(app) as url,
        httpx.Client(base_url=url) as laptop,
        httpx.Client(base_url=url) as phone,
        httpx.Client(base_url=url) as stranger,
    ):
        assert laptop.get("/inc").text == "1"
        first = laptop.cookies[COOKIE]
        assert laptop.get("/read").text == "1"

        assert laptop.post("/login/ada").text == "signed in"
        signed_in = laptop.cookies[COOKIE]
        assert signed_in != first
        assert live_store.get(first.partition(".")[0]) is None
        assert laptop.get("/whoami").text == "ada"
        assert laptop.get("/read").text == "1"

        for planted in (first, signed_in[:-1] + ("A" if signed_in[-1] != "A" else "B")):
            reply = stranger.get("/whoami", headers={"Cookie": f"{COOKIE}={planted}"})
            assert (reply.status_code, reply.text) == (200, "None")

        phone.post("/login/ada")
        assert sorted(live_store.sessions_of("ada")) == sorted(
            c.cookies[COOKIE].partition(".")[0] for c in (laptop, phone)
        )
        assert laptop.post("/logout-others").text == "1"
        assert phone.get("/whoami").text == "None"
        assert laptop.get("/whoami").text == "ada"

        reply = laptop.post("/logout")
        assert reply.text == "signed out"
        assert cookie_in(reply) == ""
        assert live_store.sessions_of("ada") == []
        assert laptop.get("/whoami").text == "None"
