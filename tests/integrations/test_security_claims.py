"""README's Security section, claim by claim, through each integration and the demo.

Each test here would fail if the sentence it is named after were false.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import warnings
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
from lembro import MemoryStore
from lembro.ids import is_session_id
from lembro.starlette import SessionMiddleware
from tests.integrations.test_django import configure_django
from tools.demo import create_app

configure_django()

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient


def signed_cookie(sid: str, secret: str) -> str:
    """README: the id, a dot, and keyed BLAKE2b-256 of the id under a key derived once from
    the secret (HMAC-SHA256(secret, "lembro.session-id")); computed here without lembro."""
    key = hmac.digest(secret.encode(), b"lembro.session-id", "sha256")
    tag = base64.urlsafe_b64encode(
        hashlib.blake2b(sid.encode(), key=key, digest_size=32).digest()
    ).rstrip(b"=")
    return f"{sid}.{tag.decode()}"


def _attributes(header: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


def _samesite(header: str) -> str:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "samesite":
            return value.lower()
    return ""


def flask_app(store: MemoryStore, **config: Any) -> Flask:
    app = Flask(__name__)
    app.secret_key = "claims"
    lembro.flask.Lembro(app, store)
    app.config.update(config)

    @app.get("/inc")
    def inc() -> str:
        lembro.flask.session["n"] = lembro.flask.session.get("n", 0) + 1
        return str(lembro.flask.session["n"])

    return app


def starlette_app(store: MemoryStore, **options: Any) -> Starlette:
    async def inc(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    return Starlette(
        routes=[Route("/inc", inc)],
        middleware=[Middleware(SessionMiddleware, secret_key="claims", store=store, **options)],
    )


def _django_inc(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


urlpatterns = [path("inc", _django_inc)]


# ---- "cookies are HttpOnly and SameSite=Lax" ---------------------------------------------


def test_flask_cookie_is_httponly_and_samesite_lax_by_default() -> None:
    with MemoryStore("1M", None) as store:
        header = flask_app(store).test_client().get("/inc").headers["Set-Cookie"]
    assert "httponly" in _attributes(header)
    assert _samesite(header) == "lax"


def test_flask_app_can_still_choose_its_samesite() -> None:
    with MemoryStore("1M", None) as store:
        app = flask_app(store, SESSION_COOKIE_SAMESITE="Strict")
        header = app.test_client().get("/inc").headers["Set-Cookie"]
    assert _samesite(header) == "strict"


def test_starlette_cookie_is_httponly_and_samesite_lax_by_default() -> None:
    with MemoryStore("1M", None) as store:
        header = TestClient(starlette_app(store)).get("/inc").headers["set-cookie"]
    assert "httponly" in _attributes(header)
    assert _samesite(header) == "lax"


@override_settings(ROOT_URLCONF=__name__)
def test_django_cookie_is_httponly_and_samesite_lax_by_default() -> None:
    with MemoryStore("1M", None) as store, override_settings(LEMBRO={"STORE": store}):
        response = Client().get("/inc")
    header = response.cookies["sessionid"].output()
    assert "httponly" in _attributes(header)
    assert _samesite(header) == "lax"


def test_demo_cookie_is_httponly_and_samesite_lax() -> None:
    with MemoryStore("1M", None) as store:
        header = create_app(store).test_client().get("/").headers["Set-Cookie"]
    assert "httponly" in _attributes(header)
    assert _samesite(header) == "lax"


# ---- "the cookie holds only the id, signed with keyed BLAKE2b" ----------------------------


def test_flask_cookie_is_the_id_and_its_keyed_blake2b() -> None:
    with MemoryStore("1M", None) as store:
        client = flask_app(store).test_client()
        client.get("/inc")
        value = client.get_cookie("session").value
        sid = value.partition(".")[0]
        assert is_session_id(sid)
        assert value == signed_cookie(sid, "claims")
        assert list(store.all()) == [sid]


def test_starlette_cookie_is_the_id_and_its_keyed_blake2b() -> None:
    with MemoryStore("1M", None) as store:
        client = TestClient(starlette_app(store))
        client.get("/inc")
        value = client.cookies["session"]
        sid = value.partition(".")[0]
        assert is_session_id(sid)
        assert value == signed_cookie(sid, "claims")
        assert list(store.all()) == [sid]


# ---- "rotating the key: older keys still accepted, cookies signed anew" ------------------


@pytest.mark.parametrize("framework", ["flask", "starlette"])
def test_a_cookie_signed_with_a_fallback_key_is_kept_and_signed_anew(framework: str) -> None:
    with MemoryStore("1M", None) as store:
        store.set("x" * 43, {"n": 41})
        old_cookie = signed_cookie("x" * 43, "old-key")
        if framework == "flask":
            flask_client = flask_app(store, SECRET_KEY_FALLBACKS=["old-key"]).test_client()
            flask_client.set_cookie("session", old_cookie)
            response = flask_client.get("/inc")
            body, header = response.text, response.headers["Set-Cookie"]
        else:
            client = TestClient(starlette_app(store, secret_key_fallbacks=["old-key"]))
            response = client.get("/inc", headers={"cookie": f"session={old_cookie}"})
            body, header = response.text, response.headers["set-cookie"]
        assert body == "42"
        assert header.startswith(f"session={signed_cookie('x' * 43, 'claims')};")


@pytest.mark.parametrize("framework", ["flask", "starlette"])
def test_a_cookie_signed_with_an_unknown_key_is_not_adopted(framework: str) -> None:
    with MemoryStore("1M", None) as store:
        store.set("x" * 43, {"n": 41})
        cookie = signed_cookie("x" * 43, "someone-elses-key")
        if framework == "flask":
            flask_client = flask_app(store).test_client()
            flask_client.set_cookie("session", cookie)
            response = flask_client.get("/inc")
        else:
            response = TestClient(starlette_app(store)).get(
                "/inc", headers={"cookie": f"session={cookie}"}
            )
        assert response.text == "1"
        assert store.get("x" * 43) == {"n": 41}


# ---- "the cookie is sent when it says something new" -------------------------------------


def test_flask_browser_session_cookie_is_not_resent_on_a_write_with_the_same_id() -> None:
    with MemoryStore("1M", None) as store:
        client = flask_app(store).test_client()
        assert "Set-Cookie" in client.get("/inc").headers  # a new id: sent
        response = client.get("/inc")
        assert response.text == "2"
        assert "Set-Cookie" not in response.headers  # same id, no expiry: nothing new


def test_flask_permanent_session_cookie_is_resent_with_its_later_expiry() -> None:
    with MemoryStore("1M", None) as store:
        app = flask_app(store)
        app.before_request(lambda: setattr(lembro.flask.session, "permanent", True))
        client = app.test_client()
        client.get("/inc")
        assert "Expires=" in client.get("/inc").headers["Set-Cookie"]


def test_starlette_browser_session_cookie_is_sent_only_when_the_id_changes() -> None:
    with MemoryStore("1M", None) as store:
        client = TestClient(starlette_app(store, max_age=None))
        assert "set-cookie" in client.get("/inc").headers
        response = client.get("/inc")
        assert response.text == "2"
        assert "set-cookie" not in response.headers
