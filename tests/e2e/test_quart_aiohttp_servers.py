"""Quart under the hypercorn command and aiohttp under ``python -m aiohttp.web``: two server
processes of each on one real redis-server, driven over HTTP on 127.0.0.1.

A session made by one process is read, regenerated and ended by the other; a user signed
in on devices served by both is signed out of the others by one call in either.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from lembro import RedisStore

from ..redis_server import RedisServer
from .procs import Server, free_port

pytestmark = pytest.mark.e2e

QUART_APP = """
import os

from quart import Quart

from lembro import RedisStore
from lembro.quart import Lembro, logout_everywhere, regenerate, session

app = Quart(__name__)
app.secret_key = "lembro-e2e"
Lembro(app, RedisStore(os.environ["REDIS_URL"], prefix=os.environ["PREFIX"], owner_key="user"))


@app.get("/")
async def ping() -> str:
    return "up"


@app.post("/login/<name>")
async def login(name: str) -> str:
    regenerate()
    session["user"] = name
    return "in"


@app.get("/whoami")
async def whoami() -> str:
    session["n"] = session.get("n", 0) + 1
    return f"{session.get('user') or 'anonymous'} {session['n']}"


@app.post("/logout-others")
async def logout_others() -> str:
    return str(await logout_everywhere(session["user"]))


@app.post("/logout")
async def logout() -> str:
    session.clear()
    return "out"
"""

AIOHTTP_APP = """
import os

from aiohttp import web
from aiohttp_session import get_session, setup

from lembro import RedisStore
from lembro.aiohttp import LembroStorage, logout_everywhere, regenerate


async def ping(request):
    return web.Response(text="up")


async def login(request):
    await regenerate(request)
    (await get_session(request))["user"] = request.match_info["name"]
    return web.Response(text="in")


async def whoami(request):
    session = await get_session(request)
    session["n"] = session.get("n", 0) + 1
    return web.Response(text=f"{session.get('user') or 'anonymous'} {session['n']}")


async def logout_others(request):
    session = await get_session(request)
    return web.Response(text=str(await logout_everywhere(request, session["user"])))


async def logout(request):
    (await get_session(request)).invalidate()
    return web.Response(text="out")


def init_app(argv):
    store = RedisStore(os.environ["REDIS_URL"], prefix=os.environ["PREFIX"], owner_key="user")
    storage = LembroStorage(store, secret_key="lembro-e2e")
    app = web.Application()
    setup(app, storage)

    async def close(app):
        await storage.close()
        store.close()

    app.on_cleanup.append(close)
    app.router.add_get("/", ping)
    app.router.add_post("/login/{name}", login)
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/logout-others", logout_others)
    app.router.add_post("/logout", logout)
    return app
"""


def _args(framework: str, port: int) -> list[str]:
    if framework == "quart":
        return ["-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "quart_app:app"]
    return ["-m", "aiohttp.web", "-H", "127.0.0.1", "-P", str(port), "aiohttp_app:init_app"]


@pytest.fixture(params=["quart", "aiohttp"])
def servers(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[tuple[str, Server, Server, str]]:
    framework = request.param
    (tmp_path / "quart_app.py").write_text(QUART_APP)
    (tmp_path / "aiohttp_app.py").write_text(AIOHTTP_APP)
    prefix = f"lembro-e2e:{uuid.uuid4().hex[:12]}:"
    env = {"REDIS_URL": redis_server.url, "PREFIX": prefix}
    started: list[Server] = []
    try:
        for _ in range(2):
            port = free_port()
            started.append(Server(_args(framework, port), tmp_path, port, env, name=framework))
        for server in started:
            server.wait_ready()
        yield framework, started[0], started[1], prefix
    finally:
        for server in started:
            server.stop()
        with RedisStore(redis_server.url, prefix=prefix, owner_key="user") as store:
            store.clear()


class Browser:
    """Sends its one session cookie to whichever server it is pointed at, and keeps what
    each response sets (a cleared cookie: none)."""

    def __init__(self, cookie_name: str) -> None:
        self.name = cookie_name
        self.value: str | None = None

    def send(self, method: str, url: str) -> httpx.Response:
        headers = {} if self.value is None else {"Cookie": f"{self.name}={self.value}"}
        response = httpx.request(method, url, headers=headers)
        for header in response.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            if self.name in parsed:
                morsel = parsed[self.name]
                self.value = None if morsel["max-age"] == "0" else morsel.value
        return response

    @property
    def sid(self) -> str:
        assert self.value is not None
        return self.value.partition(".")[0]


def test_two_processes_share_sessions_and_one_call_signs_out_the_users_other_devices(
    servers: tuple[str, Server, Server, str], redis_server: RedisServer
) -> None:
    framework, first, second, prefix = servers
    laptop = Browser("session" if framework == "quart" else "AIOHTTP_SESSION")
    phone = Browser(laptop.name)
    with RedisStore(redis_server.url, prefix=prefix, owner_key="user") as store:
        assert laptop.send("GET", f"{first.url}/whoami").text == "anonymous 1"
        before = laptop.sid
        # The other process reads the session this one made, and moves it to a new id.
        assert laptop.send("GET", f"{second.url}/whoami").text == "anonymous 2"
        assert laptop.send("POST", f"{second.url}/login/alice").text == "in"
        assert laptop.sid != before
        assert store.get(before) is None
        assert laptop.send("GET", f"{first.url}/whoami").text == "alice 3"

        phone.send("POST", f"{second.url}/login/alice")
        assert sorted(store.sessions_of("alice")) == sorted([laptop.sid, phone.sid])
        assert laptop.send("POST", f"{first.url}/logout-others").text == "1"
        assert store.sessions_of("alice") == [laptop.sid]
        assert phone.send("GET", f"{second.url}/whoami").text == "anonymous 1"

        # A tampered cookie is refused with a fresh session, never an error.
        assert laptop.value is not None
        tampered = Browser(laptop.name)
        tampered.value = laptop.value[:-1] + ("A" if laptop.value[-1] != "A" else "B")
        reply = tampered.send("GET", f"{second.url}/whoami")
        assert (reply.status_code, reply.text) == (200, "anonymous 1")
        assert tampered.sid != laptop.sid

        assert laptop.send("POST", f"{first.url}/logout").text == "out"
        assert laptop.value is None
        assert store.sessions_of("alice") == []
