"""lembro.quart through Quart's own test client, and through a real Hypercorn server, on
a MemoryStore and on a real Redis.

Quart's sdist ships no tests, so its session tests cannot be run here as Starlette's and
Django's are; the behaviours they check (a saved session opens again, the cookie's
attributes follow the settings, no cookie without a change, no ``Vary`` without an
access) are checked below, with the rest of what lembro.flask promises.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from quart import Quart, Response
from quart import request as quart_request
from quart.testing import QuartClient

from lembro import MemoryStore, RedisStore, StoreUnavailable
from lembro._cookies import REJECTED
from lembro.errors import InvalidOption
from lembro.ids import is_session_id, new_session_id
from lembro.quart import (
    Lembro,
    LembroSession,
    LembroSessionInterface,
    logout_everywhere,
    regenerate,
    session,
)
from tests.conftest import FakeClock
from tests.integrations.test_flask import planted_cookies, sign
from tests.live_servers import serve_asgi
from tests.redis_server import RedisServer

SECRET = "test-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


def make_app(store: Any = None, **config: Any) -> Quart:
    """An app whose routes exercise the session, on lembro with ``store``."""
    app = Quart(__name__)
    app.config.update({"SECRET_KEY": SECRET, "TESTING": True, **config})
    Lembro(app, store)

    @app.get("/inc")
    async def inc() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/read")
    async def read() -> str:
        return str(session.get("n"))

    @app.get("/none")
    async def none() -> str:
        return "no session here"

    @app.post("/login/<name>")
    async def login(name: str) -> str:
        regenerate()
        session["user"] = name
        return "signed in"

    @app.get("/whoami")
    async def whoami() -> str:
        return str(session.get("user"))

    @app.post("/logout")
    async def logout() -> str:
        session.clear()
        return "signed out"

    @app.post("/logout-others")
    async def logout_others() -> str:
        return str(await logout_everywhere(session["user"]))

    @app.post("/logout-all")
    async def logout_all() -> str:
        return str(await logout_everywhere(session["user"], keep_current=False))

    @app.get("/permanent/<int:flag>")
    async def permanent(flag: int) -> str:
        session.permanent = bool(flag)
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    return app


@pytest.fixture
def store(clock: FakeClock) -> Iterator[MemoryStore]:
    with MemoryStore("1M", None, clock=clock, owner_key="user") as s:
        yield s


@pytest.fixture
def app(store: MemoryStore) -> Quart:
    return make_app(store)


@pytest.fixture
def client(app: Quart) -> QuartClient:
    return app.test_client()


async def text(response: Response) -> str:
    return await response.get_data(as_text=True)


def set_cookie(response: Response, name: str = "session") -> str | None:
    """The Set-Cookie header for ``name`` in ``response``, or ``None``."""
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{name}="):
            return header
    return None


def cookie_value(client: QuartClient, name: str = "session") -> str | None:
    assert client.cookie_jar is not None
    for cookie in client.cookie_jar:
        if cookie.name == name:
            return cookie.value
    return None


def cookie_sid(client: QuartClient, name: str = "session") -> str:
    value = cookie_value(client, name)
    assert value is not None
    return value.partition(".")[0]


def reporting_errors(app: Quart) -> Quart:
    """``app``, answering a failed request with a 500 that names the original exception
    (Quart's test mode answers with a traceback page instead)."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.errorhandler(500)
    async def failed(error: Any) -> tuple[str, int]:
        original = getattr(error, "original_exception", None)
        return f"{type(original).__name__}: {original}", 500

    return app


def _rejected() -> tuple[int, int, int]:
    return REJECTED.malformed, REJECTED.bad_signature, REJECTED.unknown_id


def _refused() -> list[str]:
    """A malformed, a forged and a logged-out (signed, unknown) cookie: one of each."""
    planted = planted_cookies()
    return [planted["garbage"][0], planted["tampered"][0], sign(new_session_id())]


def plant(client: QuartClient, value: str) -> None:
    assert client.cookie_jar is not None
    client.cookie_jar.clear()
    client.set_cookie("localhost", "session", value)


# ---- round trip and the cookie ---------------------------------------------------------


async def test_counter_round_trips(client: QuartClient, store: MemoryStore) -> None:
    assert [await text(await client.get("/inc")) for _ in range(3)] == ["1", "2", "3"]
    assert list(store.all().values()) == [{"n": 3}]


async def test_cookie_holds_only_a_signed_id(client: QuartClient, store: MemoryStore) -> None:
    await client.get("/inc")
    value = cookie_value(client)
    assert value is not None
    sid = value.partition(".")[0]
    assert is_session_id(sid)
    assert value == sign(sid)
    assert sid in store


async def test_session_keeps_its_id_across_writes(client: QuartClient) -> None:
    await client.get("/inc")
    first = cookie_sid(client)
    await client.get("/inc")
    assert cookie_sid(client) == first


async def test_refused_cookies_are_counted_by_reason_for_the_metrics(client: QuartClient) -> None:
    before = _rejected()
    for value in _refused():
        plant(client, value)
        assert await text(await client.get("/read")) == "None"
    assert [now - then for now, then in zip(_rejected(), before, strict=True)] == [1, 1, 1]


@pytest.mark.parametrize("kind", list(planted_cookies()))
async def test_cookie_not_issued_gets_a_fresh_session(
    kind: str, client: QuartClient, store: MemoryStore
) -> None:
    value, planted_sid = planted_cookies()[kind]
    if kind == "unknown id, correctly signed":
        store.set(new_session_id(), {"n": 41})  # someone else's session, left alone
    plant(client, value)
    response = await client.get("/inc")
    assert response.status_code == 200
    assert await text(response) == "1"
    sid = cookie_sid(client)
    assert sid != planted_sid
    assert sid in store
    assert planted_sid not in store


# ---- storing only what someone wrote; Vary ----------------------------------------------


async def test_request_without_session_sets_no_cookie_nor_vary(
    client: QuartClient, store: MemoryStore
) -> None:
    response = await client.get("/none")
    assert set_cookie(response) is None
    assert "Vary" not in response.headers
    assert len(store) == 0


async def test_read_only_request_creates_nothing_but_varies(
    client: QuartClient, store: MemoryStore
) -> None:
    response = await client.get("/read")
    assert await text(response) == "None"
    assert set_cookie(response) is None
    assert "Cookie" in response.headers["Vary"]
    assert len(store) == 0


async def test_permanent_flag_alone_creates_nothing(store: MemoryStore) -> None:
    app = make_app(store)

    @app.before_request
    async def make_permanent() -> None:
        session.permanent = True

    response = await app.test_client().get("/read")
    assert set_cookie(response) is None
    assert len(store) == 0


async def test_signing_out_deletes_record_and_cookie(
    client: QuartClient, store: MemoryStore
) -> None:
    await client.get("/inc")
    sid = cookie_sid(client)
    response = await client.post("/logout")
    header = set_cookie(response)
    assert header is not None
    assert "Max-Age=0" in header
    assert "Cookie" in response.headers["Vary"]
    assert sid not in store
    assert cookie_value(client) is None


# ---- regenerate -------------------------------------------------------------------------


async def test_regenerate_moves_data_to_a_new_id_and_destroys_the_old(
    client: QuartClient, store: MemoryStore
) -> None:
    await client.get("/inc")
    old_cookie = cookie_value(client)
    old = cookie_sid(client)
    await client.post("/login/ada")
    new = cookie_sid(client)
    assert new != old
    assert store.all() == {new: {"n": 1, "user": "ada"}}
    assert await text(await client.get("/inc")) == "2"
    assert old_cookie is not None
    plant(client, old_cookie)
    assert await text(await client.get("/read")) == "None"  # the old id is worth nothing


async def test_regenerate_after_a_concurrent_logout_writes_nothing(store: MemoryStore) -> None:
    app = make_app(store)

    @app.post("/late-login")
    async def late_login() -> str:
        assert isinstance(session, LembroSession)
        assert session.sid is not None
        store.destroy(session.sid)  # another request of this session logged out meanwhile
        regenerate()
        session["user"] = "ada"
        return "ok"

    client = app.test_client()
    await client.get("/inc")
    response = await client.post("/late-login")
    assert "Max-Age=0" in (set_cookie(response) or "")
    assert len(store) == 0


async def test_a_session_destroyed_meanwhile_stays_destroyed(store: MemoryStore) -> None:
    app = make_app(store)

    @app.get("/late")
    async def late() -> str:
        assert session.sid is not None
        store.destroy(session.sid)
        session["late"] = True
        return "ok"

    client = app.test_client()
    await client.get("/inc")
    response = await client.get("/late")
    assert set_cookie(response) is None
    assert len(store) == 0


async def test_regenerate_outside_lembro_says_so() -> None:
    app = Quart(__name__)
    app.secret_key = SECRET
    async with app.test_request_context("/"):
        with pytest.raises(RuntimeError, match=r"lembro\.quart\.Lembro"):
            regenerate()


# ---- log out everywhere -----------------------------------------------------------------


async def test_logout_everywhere_ends_the_users_other_sessions(
    app: Quart, store: MemoryStore
) -> None:
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    await laptop.post("/login/ada")
    await phone.post("/login/ada")
    await other.post("/login/bob")
    assert await text(await laptop.post("/logout-others")) == "1"
    assert store.sessions_of("ada") == [cookie_sid(laptop)]
    assert await text(await phone.get("/whoami")) == "None"
    assert await text(await laptop.get("/whoami")) == "ada"
    assert await text(await other.get("/whoami")) == "bob"


async def test_logout_everywhere_without_keeping_the_current_one(
    app: Quart, store: MemoryStore
) -> None:
    laptop, phone = app.test_client(), app.test_client()
    await laptop.post("/login/ada")
    await phone.post("/login/ada")
    response = await laptop.post("/logout-all")
    assert await text(response) == "2"
    assert "Max-Age=0" in (set_cookie(response) or "")
    assert store.sessions_of("ada") == []
    assert len(store) == 0


async def test_logout_everywhere_outside_a_request_ends_every_session(
    app: Quart, store: MemoryStore
) -> None:
    await app.test_client().post("/login/ada")
    await app.test_client().post("/login/ada")
    async with app.app_context():
        assert await logout_everywhere("ada") == 2
    assert len(store) == 0


async def test_logout_everywhere_needs_an_owner_key(clock: FakeClock) -> None:
    with MemoryStore("1M", None, clock=clock) as plain:
        app = reporting_errors(make_app(plain))
        client = app.test_client()
        await client.post("/login/ada")
        response = await client.post("/logout-others")
        assert response.status_code == 500
        assert (await text(response)).startswith("InvalidOption")


# ---- lifetimes and settings -------------------------------------------------------------


async def test_non_permanent_session_gets_a_browser_session_cookie(client: QuartClient) -> None:
    header = set_cookie(await client.get("/permanent/0"))
    assert header is not None
    assert "Expires" not in header


async def test_permanent_session_cookie_expires_after_the_lifetime(store: MemoryStore) -> None:
    client = make_app(store, PERMANENT_SESSION_LIFETIME=timedelta(days=3)).test_client()
    before = datetime.now(timezone.utc)
    header = set_cookie(await client.get("/permanent/1"))
    assert header is not None
    expires = header.split("Expires=")[1].split(";")[0]
    when = datetime.strptime(expires, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
    assert before + timedelta(days=3) - timedelta(seconds=2) <= when
    assert when <= datetime.now(timezone.utc) + timedelta(days=3, seconds=1)


async def test_refresh_each_request_touches_the_record(
    store: MemoryStore, clock: FakeClock
) -> None:
    client = make_app(store, SESSION_REFRESH_EACH_REQUEST=True).test_client()
    await client.get("/permanent/1")
    for _ in range(3):  # each read is a use: 3 x 2/3 of the ttl outlives it
        clock.advance(store.ttl * 2 / 3)
        response = await client.get("/read")
        assert await text(response) == "1"
        assert set_cookie(response) is not None  # a permanent cookie, refreshed


async def test_without_refresh_a_read_neither_touches_nor_sets_a_cookie(
    store: MemoryStore, clock: FakeClock
) -> None:
    client = make_app(store, SESSION_REFRESH_EACH_REQUEST=False).test_client()
    await client.get("/permanent/1")
    clock.advance(store.ttl * 2 / 3)
    response = await client.get("/read")
    assert set_cookie(response) is None
    clock.advance(store.ttl * 2 / 3)
    assert await text(await client.get("/read")) == "None"


async def test_cookie_settings_are_honored(store: MemoryStore) -> None:
    app = make_app(
        store,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    header = set_cookie(await app.test_client().get("/inc"), "sid")
    assert header is not None
    attributes = header.split("; ")[1:]
    assert "Domain=example.test" in attributes
    assert "HttpOnly" not in attributes
    assert "Secure" in attributes
    assert "SameSite=Strict" in attributes
    assert "Partitioned" in attributes


async def test_default_cookie_is_httponly_and_lax_without_secure(client: QuartClient) -> None:
    header = set_cookie(await client.get("/inc"))
    assert header is not None
    attributes = header.split("; ")[1:]
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert "Path=/" in attributes
    assert "Secure" not in attributes


async def test_secret_key_fallback_keeps_sessions_and_re_signs(store: MemoryStore) -> None:
    app = make_app(store, SESSION_REFRESH_EACH_REQUEST=False)
    client = app.test_client()
    await client.get("/inc")
    sid = cookie_sid(client)
    app.config.update(SECRET_KEY="rotated", SECRET_KEY_FALLBACKS=[SECRET])
    response = await client.get("/read")
    assert await text(response) == "1"
    assert cookie_value(client) == sign(sid, "rotated")


async def test_no_secret_key_reads_empty_and_refuses_writes(store: MemoryStore) -> None:
    app = reporting_errors(make_app(store, SECRET_KEY=None))
    client = app.test_client()
    assert await text(await client.get("/read")) == "None"
    response = await client.get("/inc")
    assert response.status_code == 500
    assert "RuntimeError" in await text(response)
    assert "secret key" in await text(response)
    assert len(store) == 0


# ---- exact types, bad data, a store that is down ---------------------------------------


TYPES: dict[str, Any] = {
    "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    "raw": b"\x00\xff",
    "pair": (1, "two", (3.5, None)),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"list": [1, (2, 3)]},
}


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
async def test_values_come_back_with_their_exact_types(serializer: str, clock: FakeClock) -> None:
    with MemoryStore("1M", None, serializer=serializer, clock=clock) as store:
        app = make_app(store)
        seen: list[dict[str, Any]] = []

        @app.get("/put")
        async def put() -> str:
            session.update(TYPES)
            return "ok"

        @app.get("/get")
        async def get() -> str:
            seen.append(dict(session))
            return "ok"

        client = app.test_client()
        await client.get("/put")
        await client.get("/get")
        assert seen == [TYPES]
        assert type(seen[0]["pair"][2]) is tuple


async def test_a_key_that_is_not_a_str_is_refused_at_the_write(
    app: Quart, store: MemoryStore
) -> None:
    @app.get("/int-key")
    async def int_key() -> str:
        session[1] = "x"  # type: ignore[index]
        return "written"

    response = await reporting_errors(app).test_client().get("/int-key")
    assert response.status_code == 500
    assert await text(response) == (
        "SerializationError: session key 1: Quart session keys must be str"
    )
    assert len(store) == 0


async def test_a_stored_record_with_other_keys_gives_a_fresh_session(
    client: QuartClient, store: MemoryStore
) -> None:
    sid = new_session_id()
    store.set(sid, {1: "x"})  # type: ignore[dict-item]
    plant(client, sign(sid))
    assert await text(await client.get("/inc")) == "1"
    assert sid not in store


class DownStore(MemoryStore):
    def get(self, sid: str) -> dict[str, Any] | None:
        raise StoreUnavailable("redis at 127.0.0.1:1 refused the connection")

    def load(self, sid: str) -> Any:  # the read a request makes
        raise StoreUnavailable("redis at 127.0.0.1:1 refused the connection")


async def test_store_unavailable_raises_as_itself(clock: FakeClock) -> None:
    with DownStore("1M", None, clock=clock) as down:
        app = make_app(down, TESTING=False)  # not answered with a traceback page
        client = app.test_client()
        plant(client, sign(new_session_id()))
        with pytest.raises(StoreUnavailable):
            await client.get("/read")


# ---- websockets -------------------------------------------------------------------------


async def test_a_websocket_writes_a_stored_session_back_under_its_id(
    app: Quart, store: MemoryStore
) -> None:
    @app.websocket("/ws")
    async def ws() -> None:
        from quart import websocket

        session["n"] = session.get("n", 0) + 10
        await websocket.send(str(session["n"]))

    client = app.test_client()
    await client.get("/inc")
    sid = cookie_sid(client)
    async with client.websocket("/ws") as socket:
        assert await socket.receive() == "11"
    assert store.all() == {sid: {"n": 11}}


async def test_a_websocket_writes_back_only_what_it_changed_in_place(
    app: Quart, store: MemoryStore
) -> None:
    @app.post("/start")
    async def start() -> str:
        session["seen"] = []
        return "ok"

    @app.websocket("/ws")
    async def ws() -> None:
        from quart import websocket

        seen = session["seen"]
        await websocket.send("loaded")
        await websocket.receive()  # meanwhile a request of the session sets "n"
        seen.append("ws")  # in place, session.modified never set
        await websocket.send("done")

    client = app.test_client()
    await client.post("/start")
    sid = cookie_sid(client)
    async with client.websocket("/ws") as socket:
        assert await socket.receive() == "loaded"
        assert await text(await client.get("/inc")) == "1"
        await socket.send("go")
        assert await socket.receive() == "done"
    assert store.all() == {sid: {"seen": ["ws"], "n": 1}}


async def test_a_new_session_in_a_websocket_stores_nothing(app: Quart, store: MemoryStore) -> None:
    @app.websocket("/ws")
    async def ws() -> None:
        from quart import websocket

        session["n"] = 1
        await websocket.send("ok")

    async with app.test_client().websocket("/ws") as socket:
        assert await socket.receive() == "ok"
    assert len(store) == 0


# ---- the interface, called as Quart calls it (what Quart's own session tests check) -----


async def test_a_saved_session_opens_again_from_its_cookie(app: Quart) -> None:
    interface = app.session_interface
    saved = LembroSession(new=True)
    saved["something"] = "else"
    response = Response("")
    await interface.save_session(app, saved, response)
    cookie = response.headers["Set-Cookie"].split(";")[0]
    async with app.test_request_context("/", headers={"Cookie": cookie}):
        opened = await interface.open_session(app, quart_request)
    assert isinstance(opened, LembroSession)
    assert opened == saved == {"something": "else"}
    assert opened.sid == saved.sid
    assert response.headers["Vary"] == "Cookie"


async def test_an_unchanged_unaccessed_session_sets_neither_cookie_nor_vary(
    app: Quart, store: MemoryStore
) -> None:
    sid = new_session_id()
    store.set(sid, {"something": "else"})
    loaded = LembroSession({"something": "else"}, sid)
    loaded._cookie = sign(sid)
    response = Response("")
    await app.session_interface.save_session(app, loaded, response)
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers


# ---- the extension ----------------------------------------------------------------------


async def test_extension_registers_itself_and_its_store(store: MemoryStore) -> None:
    app = Quart(__name__)
    ext = Lembro()
    ext.init_app(app, store)
    assert app.extensions["lembro"] is ext
    assert ext.store is store
    assert isinstance(app.session_interface, LembroSessionInterface)
    assert app.session_interface.store is store


async def test_store_built_from_config_picks_lembro_settings() -> None:
    app = Quart(__name__)
    app.config.update(LEMBRO_MAX_SIZE="2M", LEMBRO_INTERVAL=0, LEMBRO_TTL=120)
    store = Lembro(app).store
    assert isinstance(store, MemoryStore)
    with store:
        assert store.max_size == 2 * 1024 * 1024
        assert store.interval is None
        assert store.ttl == 120
        assert store.owner_key == "_user_id"


async def test_not_a_store_is_refused() -> None:
    with pytest.raises(InvalidOption):
        Lembro(Quart(__name__), store=object())  # type: ignore[arg-type]


async def test_session_transaction_of_quarts_test_client_works(
    client: QuartClient, store: MemoryStore
) -> None:
    async with client.session_transaction() as sess:
        sess["n"] = 41
    assert await text(await client.get("/inc")) == "42"
    assert list(store.all().values()) == [{"n": 42}]


def test_import_lembro_does_not_import_quart_nor_aiohttp() -> None:
    code = (
        "import sys, lembro; "
        "sys.exit(any(m in sys.modules for m in ('quart', 'aiohttp', 'aiohttp_session')))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---- a real server: Hypercorn, on a MemoryStore and on a real Redis ---------------------


@pytest.fixture(params=["memory", "redis"])
def live_store(
    request: pytest.FixtureRequest, clock: FakeClock
) -> Iterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        with MemoryStore("1M", None, owner_key="user") as memory:
            yield memory
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"lembro-quart:{uuid.uuid4().hex[:12]}:"
    with RedisStore(server.url, prefix=prefix, owner_key="user") as redis:
        try:
            yield redis
        finally:
            redis.clear()


def test_a_real_server_signs_in_reads_regenerates_and_signs_out(
    live_store: MemoryStore | RedisStore,
) -> None:
    with (
        serve_asgi(make_app(live_store, TESTING=False)) as url,
        httpx.Client(base_url=url) as laptop,
        httpx.Client(base_url=url) as phone,
        httpx.Client(base_url=url) as stranger,
    ):
        assert laptop.get("/inc").text == "1"
        first = laptop.cookies["session"]
        assert laptop.get("/read").text == "1"

        assert laptop.post("/login/ada").text == "signed in"
        signed_in = laptop.cookies["session"]
        assert signed_in != first
        assert live_store.get(first.partition(".")[0]) is None  # the old record is gone
        assert laptop.get("/whoami").text == "ada"
        assert laptop.get("/read").text == "1"  # the data came along

        # The old cookie and a tampered one get a fresh session, never an error.
        for planted in (first, signed_in[:-1] + ("A" if signed_in[-1] != "A" else "B")):
            reply = stranger.get("/whoami", headers={"Cookie": f"session={planted}"})
            assert (reply.status_code, reply.text) == (200, "None")

        phone.post("/login/ada")
        assert sorted(live_store.sessions_of("ada")) == sorted(
            c.cookies["session"].partition(".")[0] for c in (laptop, phone)
        )
        assert laptop.post("/logout-others").text == "1"
        assert phone.get("/whoami").text == "None"
        assert laptop.get("/whoami").text == "ada"

        reply = laptop.post("/logout")
        assert reply.text == "signed out"
        assert "session" not in laptop.cookies
        assert live_store.sessions_of("ada") == []
        assert laptop.get("/whoami").text == "None"
