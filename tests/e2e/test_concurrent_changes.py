"""Overlapping requests of one session never lose each other's changes (issue 28), under
real servers: Flask and Django under gunicorn with threads, Starlette and Litestar under
uvicorn, Quart under hypercorn, aiohttp under its own runner (``python -m aiohttp.web``),
each on a MemoryStore and on a real redis-server.

Each round sends 8 requests of one session at once; each view waits a few ms after the
session was loaded, so they all hold the session before any writes it back. Each sets a
key of its own, or appends to a list of its own in place (never assigning it). After
every round, every request's change is there.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ..redis_server import RedisServer
from .procs import Server, free_port

pytestmark = pytest.mark.e2e

WRITERS = 8
ROUNDS = 20

STORE = """
import os
from lembro import MemoryStore, RedisStore

_url = os.environ.get("REDIS_URL")
store = RedisStore(_url, prefix=os.environ["PREFIX"]) if _url else MemoryStore("16M", None)
"""

FLASK_APP = (
    STORE
    + """
import time
from flask import Flask, jsonify, session
from lembro.flask import Lembro

app = Flask(__name__)
app.secret_key = "a test key"
Lembro(app, store)


@app.get("/")
def ready():
    return "ok"


@app.post("/start/<int:writers>")
def start(writers):
    for i in range(writers):
        session[f"cart{i}"] = []
    return "ok"


@app.post("/set/<int:i>/<int:value>")
def set_key(i, value):
    time.sleep(0.005)
    session[f"k{i}"] = value
    return "ok"


@app.post("/append/<int:i>/<int:value>")
def append(i, value):
    cart = session[f"cart{i}"]
    time.sleep(0.005)
    cart.append(value)
    return "ok"


@app.get("/read")
def read():
    return jsonify(dict(session))
"""
)

ASGI_APP = (
    STORE
    + """
import asyncio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from lembro.starlette import SessionMiddleware


async def ready(request):
    return PlainTextResponse("ok")


async def start(request):
    for i in range(request.path_params["writers"]):
        request.session[f"cart{i}"] = []
    return PlainTextResponse("ok")


async def set_key(request):
    await asyncio.sleep(0.005)
    request.session[f"k{request.path_params['i']}"] = request.path_params["value"]
    return PlainTextResponse("ok")


async def append(request):
    cart = request.session[f"cart{request.path_params['i']}"]
    await asyncio.sleep(0.005)
    cart.append(request.path_params["value"])
    return PlainTextResponse("ok")


async def read(request):
    return JSONResponse(dict(request.session))


app = Starlette(
    routes=[
        Route("/", ready),
        Route("/start/{writers:int}", start, methods=["POST"]),
        Route("/set/{i:int}/{value:int}", set_key, methods=["POST"]),
        Route("/append/{i:int}/{value:int}", append, methods=["POST"]),
        Route("/read", read),
    ]
)
app.add_middleware(SessionMiddleware, secret_key="a test key", store=store)
"""
)


DJANGO_APP = """
import os
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path

_url = os.environ.get("REDIS_URL")
settings.configure(
    DEBUG=False,
    SECRET_KEY="a test key",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["lembro.django.LembroConfig"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE="lembro.django",
    SESSION_COOKIE_NAME="session",
    LEMBRO=(
        {"STORE": "redis", "URL": _url, "PREFIX": os.environ["PREFIX"]}
        if _url
        else {"STORE": "memory", "INTERVAL": 0}
    ),
)


def ready(request):
    return HttpResponse("ok")


def start(request, writers):
    for i in range(writers):
        request.session[f"cart{i}"] = []
    return HttpResponse("ok")


def set_key(request, i, value):
    request.session.get("cart0")  # the session is loaded before the wait
    time.sleep(0.005)
    request.session[f"k{i}"] = value
    return HttpResponse("ok")


def append(request, i, value):
    cart = request.session[f"cart{i}"]
    time.sleep(0.005)
    cart.append(value)  # in place, and modified is never set
    return HttpResponse("ok")


def read(request):
    return JsonResponse(dict(request.session.items()))


urlpatterns = [
    path("", ready),
    path("start/<int:writers>", start),
    path("set/<int:i>/<int:value>", set_key),
    path("append/<int:i>/<int:value>", append),
    path("read", read),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

app = get_wsgi_application()
"""

LITESTAR_APP = (
    STORE
    + """
import asyncio
from typing import Any

from litestar import Litestar, Request, get, post
from lembro.litestar import LembroSessionConfig, LembroStore


@get("/")
async def ready() -> str:
    return "ok"


@post("/start/{writers:int}", status_code=200)
async def start(request: Request[Any, Any, Any]) -> str:
    for i in range(request.path_params["writers"]):
        request.session[f"cart{i}"] = []
    return "ok"


@post("/set/{i:int}/{value:int}", status_code=200)
async def set_key(request: Request[Any, Any, Any]) -> str:
    await asyncio.sleep(0.005)
    request.session[f"k{request.path_params['i']}"] = request.path_params["value"]
    return "ok"


@post("/append/{i:int}/{value:int}", status_code=200)
async def append(request: Request[Any, Any, Any]) -> str:
    cart = request.session[f"cart{request.path_params['i']}"]
    await asyncio.sleep(0.005)
    cart.append(request.path_params["value"])
    return "ok"


@get("/read")
async def read(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return dict(request.session)


app = Litestar(
    route_handlers=[ready, start, set_key, append, read],
    middleware=[LembroSessionConfig().middleware],
    stores={"sessions": LembroStore(store)},
)
"""
)

QUART_APP = (
    STORE
    + """
import asyncio
from quart import Quart, jsonify
from lembro.quart import Lembro, session

app = Quart(__name__)
app.secret_key = "a test key"
Lembro(app, store)


@app.get("/")
async def ready():
    return "ok"


@app.post("/start/<int:writers>")
async def start(writers):
    for i in range(writers):
        session[f"cart{i}"] = []
    return "ok"


@app.post("/set/<int:i>/<int:value>")
async def set_key(i, value):
    await asyncio.sleep(0.005)
    session[f"k{i}"] = value
    return "ok"


@app.post("/append/<int:i>/<int:value>")
async def append(i, value):
    cart = session[f"cart{i}"]
    await asyncio.sleep(0.005)
    cart.append(value)
    return "ok"


@app.get("/read")
async def read():
    return jsonify(dict(session))
"""
)

AIOHTTP_APP = (
    STORE
    + """
import asyncio
from aiohttp import web
from aiohttp_session import get_session, setup
from lembro.aiohttp import LembroStorage


async def ready(request):
    return web.Response(text="ok")


async def start(request):
    session = await get_session(request)
    for i in range(int(request.match_info["writers"])):
        session[f"cart{i}"] = []
    return web.Response(text="ok")


async def set_key(request):
    session = await get_session(request)
    await asyncio.sleep(0.005)
    session[f"k{request.match_info['i']}"] = int(request.match_info["value"])
    return web.Response(text="ok")


async def append(request):
    session = await get_session(request)
    cart = session[f"cart{request.match_info['i']}"]
    await asyncio.sleep(0.005)
    cart.append(int(request.match_info["value"]))  # in place: changed() is never called
    return web.Response(text="ok")


async def read(request):
    return web.json_response(dict(await get_session(request)))


def init_app(argv):
    app = web.Application()
    setup(app, LembroStorage(store, secret_key="a test key", cookie_name="session"))
    app.router.add_get("/", ready)
    app.router.add_post("/start/{writers}", start)
    app.router.add_post("/set/{i}/{value}", set_key)
    app.router.add_post("/append/{i}/{value}", append)
    app.router.add_get("/read", read)
    return app
"""
)

# The same Django app behind lembro's own middleware instead of Django's.
DJANGO_MIDDLEWARE_APP = DJANGO_APP.replace(
    "django.contrib.sessions.middleware.SessionMiddleware", "lembro.django.SessionMiddleware"
)

APPS = {
    "flask": FLASK_APP,
    "starlette": ASGI_APP,
    "django": DJANGO_APP,
    "djangomw": DJANGO_MIDDLEWARE_APP,
    "litestar": LITESTAR_APP,
    "quart": QUART_APP,
    "aiohttp": AIOHTTP_APP,
}


@pytest.fixture(
    scope="module",
    params=[
        "flask-memory",
        "flask-redis",
        "starlette-memory",
        "starlette-redis",
        "django-memory",
        "django-redis",
        "djangomw-memory",
        "djangomw-redis",
        "litestar-memory",
        "litestar-redis",
        "quart-memory",
        "quart-redis",
        "aiohttp-memory",
        "aiohttp-redis",
    ],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The app served by gunicorn (8 threads, one worker; Flask, Django), uvicorn
    (Starlette, Litestar), hypercorn (Quart) or aiohttp's runner, on a MemoryStore or the
    test session's redis-server (under a prefix of its own)."""
    framework, kind = request.param.split("-")
    directory = tmp_path_factory.mktemp(request.param)
    (directory / "app.py").write_text(APPS[framework])
    env = {"PREFIX": f"lembro-e2e:{uuid.uuid4().hex[:12]}:"}
    if kind == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        env["REDIS_URL"] = redis.url
    port = free_port()
    if framework in ("flask", "django", "djangomw"):
        args = ["-m", "gunicorn", "-w", "1", "--threads", str(WRITERS), "app:app"]
        args += ["-b", f"127.0.0.1:{port}"]
    elif framework == "quart":
        args = ["-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "app:app"]
    elif framework == "aiohttp":
        args = ["-m", "aiohttp.web", "-H", "127.0.0.1", "-P", str(port), "app:init_app"]
    else:
        args = ["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
    process = Server(args, directory, port, env, name=framework)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def new_session(server: Server) -> dict[str, str]:
    """A new session with an empty cart per writer; the cookie that names it."""
    response = httpx.post(f"{server.url}/start/{WRITERS}", timeout=10)
    assert response.status_code == 200
    cookie = response.cookies.get("session")
    assert cookie
    return {"Cookie": f"session={cookie}"}


class Writers:
    """One thread per writer, each keeping its own connection to the server from round to
    round (``send`` has them all send a request at once), and a reader's connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.paths: list[str] = []
        self.cookie: dict[str, str] = {}
        self.statuses: list[int] = []
        self.errors: list[OSError] = []
        self.reader = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.start = threading.Barrier(WRITERS + 1)
        self.done = threading.Barrier(WRITERS + 1)
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WRITERS)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            while True:
                self.start.wait()
                if not self.paths:
                    return
                try:
                    connection.request("POST", self.paths[index], headers=self.cookie)
                    response = connection.getresponse()
                    response.read()
                    self.statuses.append(response.status)
                except OSError as error:  # the round fails on it, and no thread hangs
                    self.statuses.append(-1)
                    self.errors.append(error)
                    connection.close()
                self.done.wait()
        finally:
            connection.close()

    def send(self, cookie: dict[str, str], paths: list[str]) -> None:
        """Send one request per path at once, each on a connection of its own; all
        succeed."""
        self.paths, self.cookie, self.statuses = paths, cookie, []
        self.start.wait(60)
        self.done.wait(60)
        assert self.statuses == [200] * len(paths), self.errors

    def read(self, cookie: dict[str, str]) -> dict[str, object]:
        """The session as the server reads it now, on a connection of the reader's own."""
        self.reader.request("GET", "/read", headers=cookie)
        response = self.reader.getresponse()
        body = response.read()
        assert response.status == 200
        data: dict[str, object] = json.loads(body)
        return data

    def close(self) -> None:
        self.reader.close()
        self.paths = []
        self.start.wait(60)
        for thread in self.threads:
            thread.join(60)


@pytest.fixture
def writers(server: Server) -> Iterator[Writers]:
    made = Writers(server)
    try:
        yield made
    finally:
        made.close()


def test_overlapping_requests_that_set_their_own_keys_lose_none(
    server: Server, writers: Writers
) -> None:
    cookie = new_session(server)
    for round_ in range(ROUNDS):
        writers.send(cookie, [f"/set/{i}/{round_}" for i in range(WRITERS)])
        keys = {key: value for key, value in writers.read(cookie).items() if key[0] == "k"}
        assert keys == {f"k{i}": round_ for i in range(WRITERS)}, f"round {round_}"


def test_overlapping_in_place_appends_lose_none(server: Server, writers: Writers) -> None:
    cookie = new_session(server)
    for round_ in range(ROUNDS):
        writers.send(cookie, [f"/append/{i}/{round_}" for i in range(WRITERS)])
        carts = writers.read(cookie)
        assert carts == {f"cart{i}": list(range(round_ + 1)) for i in range(WRITERS)}, (
            f"round {round_}"
        )
