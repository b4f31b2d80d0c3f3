"""A login that regenerates the id while a logout ends the session: the logout wins.

Request A loads a session and regenerates its id (Flask ``session.regenerate()``,
Starlette ``regenerate(request)``, Django ``cycle_key()``); request B logs out in between,
here by destroying the record through the same store while A's view runs. Whatever A does
next, the logged-out data never comes back, under the old id or a new one, on MemoryStore
and on RedisStore over a real redis-server.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lembro.flask
from lembro import MemoryStore, RedisStore
from lembro.protocol import SessionStore, as_async
from lembro.starlette import SessionMiddleware, regenerate
from tests.integrations.test_django import configure_django
from tests.redis_server import RedisServer

configure_django()

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the client is the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

SECRET = "races-secret"


@pytest.fixture(params=["memory", "redis"])
def any_store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    if request.param == "memory":
        with MemoryStore("1M", None) as store:
            yield store
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        with RedisStore(server.url, prefix=f"race-{uuid.uuid4().hex}:") as redis_store:
            yield redis_store
            redis_store.clear()


def _live_data(store: SessionStore) -> list[dict[str, Any]]:
    return list(store.all().values())


# ---- Flask ------------------------------------------------------------------------------


def test_flask_regenerate_after_a_logout_writes_nothing_and_clears_the_cookie(
    any_store: SessionStore,
) -> None:
    app = Flask(__name__)
    app.secret_key = SECRET
    lembro.flask.Lembro(app, any_store)

    @app.get("/start")
    def start() -> str:
        lembro.flask.session["cart"] = ["book"]
        return "ok"

    @app.get("/login")
    def login() -> str:
        sid = lembro.flask.session.sid
        assert sid is not None
        lembro.flask.session.regenerate()  # typed: no ignore needed
        lembro.flask.session["user"] = "alice"
        any_store.destroy(sid)  # request B's logout, while A runs
        return "ok"

    client = app.test_client()
    client.get("/start")
    response = client.get("/login")
    assert _live_data(any_store) == []
    cookies = response.headers.getlist("Set-Cookie")
    assert len(cookies) == 1
    assert cookies[0].startswith("session=;")  # deleted, not a new id


def test_flask_regenerate_of_a_live_session_moves_it(any_store: SessionStore) -> None:
    app = Flask(__name__)
    app.secret_key = SECRET
    lembro.flask.Lembro(app, any_store)

    @app.get("/start")
    def start() -> str:
        lembro.flask.session["cart"] = ["book"]
        return "ok"

    @app.get("/login")
    def login() -> str:
        lembro.flask.regenerate()
        lembro.flask.session["user"] = "alice"
        return "ok"

    client = app.test_client()
    client.get("/start")
    old = client.get_cookie("session").value
    client.get("/login")
    assert client.get_cookie("session").value != old
    assert _live_data(any_store) == [{"cart": ["book"], "user": "alice"}]


# ---- Starlette --------------------------------------------------------------------------


def test_starlette_regenerate_after_a_logout_writes_nothing_and_clears_the_cookie(
    any_store: SessionStore,
) -> None:
    store = as_async(any_store)  # the middleware's own face of the store, closed below

    async def start(request: Request) -> PlainTextResponse:
        request.session["cart"] = ["book"]
        return PlainTextResponse("ok")

    async def login(request: Request) -> PlainTextResponse:
        old = request.cookies["session"].partition(".")[0]
        regenerate(request)
        request.session["user"] = "alice"
        assert await store.destroy(old)  # request B's logout, while A runs
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/start", start), Route("/login", login)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    with TestClient(app) as client:  # one event loop, as a server has
        client.get("/start")
        response = client.get("/login")
        client.portal.call(store.close)
    assert _live_data(any_store) == []
    assert response.headers["set-cookie"].startswith("session=null;")
    assert "expires=Thu, 01 Jan 1970" in response.headers["set-cookie"]


# ---- Django -----------------------------------------------------------------------------


def _start(request: HttpRequest) -> HttpResponse:
    request.session["cart"] = ["book"]
    return HttpResponse("ok")


def _login(request: HttpRequest) -> HttpResponse:
    key = request.session.session_key
    assert request.session["cart"] == ["book"]  # A has loaded the session
    assert key is not None
    lembro.django.get_store().destroy(key)  # request B's logout, while A runs
    request.session.cycle_key()
    return HttpResponse("ok")


urlpatterns = [path("start", _start), path("login", _login)]


@override_settings(ROOT_URLCONF=__name__)
def test_django_cycle_key_after_a_logout_brings_nothing_back(any_store: SessionStore) -> None:
    with override_settings(LEMBRO={"STORE": any_store}):
        client = Client()
        client.get("/start")
        response = client.get("/login")
        assert response.status_code == 200
        assert _live_data(any_store) == []


import lembro.django  # noqa: E402 - after configure_django(), as Django needs
