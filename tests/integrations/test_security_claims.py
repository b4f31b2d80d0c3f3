"""docs/security.md, claim by claim, through each integration and the demo.

Each test here would fail if the sentence it is named after were false.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp_session
import httpx
import litestar
import pytest
import quart
from aiohttp import web
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from flask import Flask
from litestar import Litestar
from litestar.testing import TestClient as LitestarClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lembro.aiohttp
import lembro.flask
import lembro.litestar
import lembro.quart
import lembro.starlette
from lembro import MemoryStore, SerializationError
from lembro.ids import is_session_id, new_session_id, redact
from lembro.serializers import MsgpackSerializer
from lembro.starlette import SessionMiddleware
from tests.conftest import FakeClock
from tests.integrations.test_django import configure_django
from tests.live_servers import serve_aiohttp, serve_asgi
from tools.demo import create_app

configure_django()

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient


def signed_cookie(sid: str, secret: str) -> str:
    """docs/security.md: the id, a dot, and keyed BLAKE2b-256 of the id under a key derived
    once from the secret (HMAC-SHA256(secret, "lembro.session-id")); computed here without
    lembro."""
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


def _django_read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n", 0)))


def _django_nothing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("nothing")


def _django_login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    request.session["user"] = "ada"
    return HttpResponse("ok")


def _django_clear(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("ok")


def _django_poison(request: HttpRequest) -> HttpResponse:
    request.session["poison"] = 1
    return HttpResponse("ok")


urlpatterns = [
    path("inc", _django_inc),
    path("read", _django_read),
    path("nothing", _django_nothing),
    path("login", _django_login),
    path("clear", _django_clear),
    path("poison", _django_poison),
]


# ---- every framework, driven as a browser that sends exactly the cookie given -----------


@dataclass
class Reply:
    status: int
    text: str
    set_cookie: str | None  # the session cookie's Set-Cookie header, if the response sent one
    vary: str


@dataclass
class Site:
    """One framework's app on a lembro ``MemoryStore``, with the same routes everywhere:
    ``/inc`` counts, ``/read`` reads the count, ``/nothing`` never touches the session,
    ``/login`` regenerates (``cycle_key()`` under Django), ``/clear`` empties the session
    (``flush()`` under Django), ``/poison`` writes a field the store cannot read back."""

    framework: str
    cookie: str
    store: MemoryStore
    send: Callable[[str, str | None], Reply]

    def get(self, path: str, cookie: str | None = None) -> Reply:
        reply = self.send(path, None if cookie is None else f"{self.cookie}={cookie}")
        assert reply.status == 200, reply.text
        return reply

    def value(self, reply: Reply) -> str:
        """The session cookie's value a reply sets."""
        assert reply.set_cookie is not None
        return reply.set_cookie.split(";")[0].split("=", 1)[1].strip('"')

    def sid(self, value: str) -> str:
        """The session id a cookie value carries (all but Django's and Litestar's add a tag)."""
        return value.partition(".")[0] if self.framework in SIGNED else value

    def stored(self) -> set[str]:
        """The session ids the store holds (Litestar's ``LembroStore`` adds a namespace)."""
        return {key.rpartition("\x1e")[2] for key in self.store.all()}


class PoisonableSerializer:
    """msgpack, except that a record holding "poison" cannot be read back."""

    def __init__(self) -> None:
        self._msgpack = MsgpackSerializer()

    def dumps(self, obj: Any) -> bytes:
        return self._msgpack.dumps(obj)

    def loads(self, data: bytes) -> Any:
        if b"poison" in data:
            raise SerializationError("a poisoned record")
        return self._msgpack.loads(data)


def _flask_site(store: MemoryStore, secure: bool) -> Iterator[Site]:
    app = flask_app(store, SESSION_COOKIE_SECURE=secure)
    session = lembro.flask.session

    @app.get("/read")
    def read() -> str:
        return str(session.get("n", 0))

    @app.get("/nothing")
    def nothing() -> str:
        return "nothing"

    @app.get("/login")
    def login() -> str:
        session.regenerate()
        session["user"] = "ada"
        return "ok"

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.get("/poison")
    def poison() -> str:
        session["poison"] = 1
        return "ok"

    client = app.test_client(use_cookies=False)

    def send(path: str, cookie: str | None) -> Reply:
        response = client.get(path, headers={"Cookie": cookie} if cookie else {})
        headers = response.headers
        return Reply(
            response.status_code, response.text, headers.get("Set-Cookie"), headers.get("Vary", "")
        )

    yield Site("flask", "session", store, send)


def _starlette_site(store: MemoryStore, secure: bool) -> Iterator[Site]:
    async def inc(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("n", 0)))

    async def nothing(request: Request) -> PlainTextResponse:
        return PlainTextResponse("nothing")

    async def login(request: Request) -> PlainTextResponse:
        lembro.starlette.regenerate(request)
        request.session["user"] = "ada"
        return PlainTextResponse("ok")

    async def clear(request: Request) -> PlainTextResponse:
        request.session.clear()
        return PlainTextResponse("ok")

    async def poison(request: Request) -> PlainTextResponse:
        request.session["poison"] = 1
        return PlainTextResponse("ok")

    routes = [
        Route(f"/{view.__name__}", view) for view in (inc, read, nothing, login, clear, poison)
    ]
    middleware = Middleware(SessionMiddleware, secret_key="claims", store=store, https_only=secure)
    client = TestClient(Starlette(routes=routes, middleware=[middleware]))

    def send(path: str, cookie: str | None) -> Reply:
        client.cookies.clear()
        headers = {"cookie": cookie.encode("latin-1")} if cookie else {}
        response = client.get(path, headers=headers)
        return Reply(
            response.status_code,
            response.text,
            response.headers.get("set-cookie"),
            response.headers.get("vary", ""),
        )

    yield Site("starlette", "session", store, send)


def _django_site(store: MemoryStore, secure: bool) -> Iterator[Site]:
    def send(path: str, cookie: str | None) -> Reply:
        response = Client().get(path, **({"HTTP_COOKIE": cookie} if cookie else {}))
        morsel = response.cookies.get("sessionid")
        set_cookie = morsel.OutputString() if morsel is not None else None
        return Reply(
            response.status_code,
            response.content.decode(),
            set_cookie,
            response.headers.get("Vary", ""),
        )

    with override_settings(
        ROOT_URLCONF=__name__, LEMBRO={"STORE": store}, SESSION_COOKIE_SECURE=secure
    ):
        yield Site("django", "sessionid", store, send)


def _litestar_site(store: MemoryStore, secure: bool) -> Iterator[Site]:
    @litestar.get("/inc")
    async def inc(request: litestar.Request[Any, Any, Any]) -> str:
        request.session["n"] = request.session.get("n", 0) + 1
        return str(request.session["n"])

    @litestar.get("/read")
    async def read(request: litestar.Request[Any, Any, Any]) -> str:
        return str(request.session.get("n", 0))

    @litestar.get("/nothing")
    async def nothing() -> str:
        return "nothing"

    @litestar.get("/login")
    async def login(request: litestar.Request[Any, Any, Any]) -> str:
        lembro.litestar.regenerate(request)
        request.session["user"] = "ada"
        return "ok"

    @litestar.get("/clear")
    async def clear(request: litestar.Request[Any, Any, Any]) -> str:
        request.session.clear()
        return "ok"

    @litestar.get("/poison")
    async def poison(request: litestar.Request[Any, Any, Any]) -> str:
        request.session["poison"] = 1
        return "ok"

    app = Litestar(
        route_handlers=[inc, read, nothing, login, clear, poison],
        middleware=[lembro.litestar.LembroSessionConfig(secure=secure).middleware],
        stores={"sessions": lembro.litestar.LembroStore(store)},
    )
    with LitestarClient(app) as client:

        def send(path: str, cookie: str | None) -> Reply:
            client.cookies.clear()
            headers = {"cookie": cookie.encode("latin-1")} if cookie else {}
            response = client.get(path, headers=headers)
            return Reply(
                response.status_code,
                response.text,
                response.headers.get("set-cookie"),
                response.headers.get("vary", ""),
            )

        yield Site("litestar", "session", store, send)


def _http_sender(url: str, cookie_name: str) -> Callable[[str, str | None], Reply]:
    """``Site.send`` for a real server at ``url``: each request carries exactly the cookie
    given, none kept from before."""
    client = httpx.Client(base_url=url)

    def send(path: str, cookie: str | None) -> Reply:
        client.cookies.clear()
        headers = {"cookie": cookie.encode("latin-1")} if cookie else {}
        response = client.get(path, headers=headers)
        ours = [
            header
            for header in response.headers.get_list("set-cookie")
            if header.startswith(f"{cookie_name}=")
        ]
        return Reply(
            response.status_code,
            response.text,
            ours[0] if ours else None,
            response.headers.get("vary", ""),
        )

    send.close = client.close  # type: ignore[attr-defined]
    return send


def _quart_site(store: MemoryStore, secure: bool) -> Iterator[Site]:
    app = quart.Quart(__name__)
    app.secret_key = "claims"
    app.config["SESSION_COOKIE_SECURE"] = secure
    lembro.quart.Lembro(app, store)
    session = lembro.quart.session

    @app.get("/inc")
    async def inc() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/read")
    async def read() -> str:
        return str(session.get("n", 0))

    @app.get("/nothing")
    async def nothing() -> str:
        return "nothing"

    @app.get("/login")
    async def login() -> str:
        lembro.quart.regenerate()
        session["user"] = "ada"
        return "ok"

    @app.get("/clear")
    async def clear() -> str:
        session.clear()
        return "ok"

    @app.get("/poison")
    async def poison() -> str:
        session["poison"] = 1
        return "ok"

    with serve_asgi(app) as url:
        send = _http_sender(url, "session")
        try:
            yield Site("quart", "session", store, send)
        finally:
            send.close()  # type: ignore[attr-defined]


def _aiohttp_site(store: MemoryStore, secure: bool) -> Iterator[Site]:
    async def inc(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.Response(text=str(session["n"]))

    async def read(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        return web.Response(text=str(session.get("n", 0)))

    async def nothing(request: web.Request) -> web.Response:
        return web.Response(text="nothing")

    async def login(request: web.Request) -> web.Response:
        await lembro.aiohttp.regenerate(request)
        (await aiohttp_session.get_session(request))["user"] = "ada"
        return web.Response(text="ok")

    async def clear(request: web.Request) -> web.Response:
        (await aiohttp_session.get_session(request)).invalidate()
        return web.Response(text="ok")

    async def poison(request: web.Request) -> web.Response:
        (await aiohttp_session.get_session(request))["poison"] = 1
        return web.Response(text="ok")

    app = web.Application()
    aiohttp_session.setup(
        app, lembro.aiohttp.LembroStorage(store, secret_key="claims", secure=secure)
    )
    for view in (inc, read, nothing, login, clear, poison):
        app.router.add_get(f"/{view.__name__}", view)
    with serve_aiohttp(app) as url:
        send = _http_sender(url, "AIOHTTP_SESSION")
        try:
            yield Site("aiohttp", "AIOHTTP_SESSION", store, send)
        finally:
            send.close()  # type: ignore[attr-defined]


SITES = {
    "flask": _flask_site,
    "starlette": _starlette_site,
    "django": _django_site,
    "litestar": _litestar_site,
    "quart": _quart_site,
    "aiohttp": _aiohttp_site,
}
#: The frameworks whose cookie carries the id signed: ``<id>.<tag>``.
SIGNED = ("flask", "starlette", "quart", "aiohttp")


@contextmanager
def open_site(framework: str, clock: FakeClock, secure: bool = False) -> Iterator[Site]:
    with MemoryStore("1M", None, clock=clock, serializer=PoisonableSerializer()) as store:
        yield from SITES[framework](store, secure)


@pytest.fixture(params=list(SITES))
def site(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Site]:
    with open_site(request.param, clock) as opened:
        yield opened


def _cleared(set_cookie: str) -> bool:
    """Whether a browser deletes the cookie a Set-Cookie header names: ``Max-Age=0``, or no
    Max-Age and an Expires in the past (Max-Age wins where both are given)."""
    attributes = {
        name.strip().lower(): value.strip().lower()
        for name, _, value in (part.partition("=") for part in set_cookie.split(";")[1:])
    }
    if "max-age" in attributes:
        return attributes["max-age"] == "0"
    return "1970" in attributes.get("expires", "")


# ---- "cookies are HttpOnly and SameSite=Lax"; "set Secure with your framework's setting" --


def test_cookie_is_httponly_and_samesite_lax_by_default(site: Site) -> None:
    header = site.get("/inc").set_cookie
    assert header is not None
    assert "httponly" in _attributes(header)
    assert "secure" not in _attributes(header)
    assert _samesite(header) == "lax"


@pytest.mark.parametrize("framework", list(SITES))
def test_the_frameworks_setting_makes_the_cookie_secure(framework: str, clock: FakeClock) -> None:
    with open_site(framework, clock, secure=True) as secure_site:
        header = secure_site.get("/inc").set_cookie
        assert header is not None
        assert "secure" in _attributes(header)


def test_flask_app_can_still_choose_its_samesite() -> None:
    with MemoryStore("1M", None) as store:
        app = flask_app(store, SESSION_COOKIE_SAMESITE="Strict")
        header = app.test_client().get("/inc").headers["Set-Cookie"]
    assert _samesite(header) == "strict"


def test_demo_cookie_is_httponly_and_samesite_lax() -> None:
    with MemoryStore("1M", None) as store:
        header = create_app(store).test_client().get("/").headers["Set-Cookie"]
    assert "httponly" in _attributes(header)
    assert _samesite(header) == "lax"


# ---- "the cookie holds only the session id" (signed under Flask and Starlette) -----------


def test_the_cookie_holds_only_the_session_id(site: Site) -> None:
    value = site.value(site.get("/inc"))
    sid = site.sid(value)
    assert is_session_id(sid)
    if site.framework in SIGNED:
        assert value == signed_cookie(sid, "claims")  # <id>.<keyed BLAKE2b of the id>
    else:
        assert value == sid  # as Django's own engines: the id alone
    assert site.stored() == {sid}  # the data stays on the server


# ---- "an id the server did not issue is never adopted" ----------------------------------


def _planted(site: Site, kind: str, clock: FakeClock) -> str:
    """A cookie value of ``kind`` that the server must not adopt."""
    if kind == "unknown":
        sid = new_session_id()
        return signed_cookie(sid, "claims") if site.framework in SIGNED else sid
    if kind == "expired":
        value = site.value(site.get("/inc"))
        clock.advance(400 * 86400)  # past every framework's default lifetime
        return value
    if kind == "badly signed":
        return f"{new_session_id()}.{'A' * 43}"
    return {"malformed": "../../etc/passwd", "huge": "a" * 5000, "non-ASCII": "é" * 43}[kind]


@pytest.mark.parametrize(
    "kind", ["unknown", "expired", "badly signed", "malformed", "huge", "non-ASCII"]
)
def test_a_cookie_the_server_did_not_issue_gets_a_fresh_empty_session(
    site: Site, clock: FakeClock, kind: str
) -> None:
    planted = _planted(site, kind, clock)
    reply = site.get("/inc", planted)  # nothing raises into the app: a 200
    assert reply.text == "1"  # a fresh, empty session
    issued = site.sid(site.value(reply))
    assert is_session_id(issued)
    assert issued != site.sid(planted)
    assert site.stored() == {issued}


# ---- "regenerate destroys the old record" ------------------------------------------------


def test_regenerate_moves_the_data_to_a_new_id_and_destroys_the_old_record(site: Site) -> None:
    before = site.value(site.get("/inc"))
    after = site.value(site.get("/login", before))
    assert site.sid(after) != site.sid(before)
    assert site.stored() == {site.sid(after)}
    assert site.get("/read", after).text == "1"  # the data came along
    assert site.get("/read", before).text == "0"  # the old id is worth nothing


# ---- "don't store what no one wrote"; "Vary: Cookie where the session was accessed" ------


def test_a_request_that_only_reads_stores_nothing_and_sets_no_cookie(site: Site) -> None:
    for route in ("/read", "/nothing"):
        assert site.get(route).set_cookie is None
    assert site.stored() == set()


def test_an_emptied_session_loses_its_record_and_its_cookie(site: Site) -> None:
    value = site.value(site.get("/inc"))
    reply = site.get("/clear", value)
    assert reply.set_cookie is not None
    assert _cleared(reply.set_cookie), reply.set_cookie
    assert site.stored() == set()


def test_vary_cookie_is_sent_where_the_session_was_accessed_and_only_there(site: Site) -> None:
    value = site.value(site.get("/inc"))
    for route, cookie in (("/read", None), ("/read", value), ("/inc", value), ("/clear", value)):
        assert "cookie" in site.get(route, cookie).vary.lower(), route
    assert "cookie" not in site.get("/nothing", value).vary.lower()


# ---- "logs never hold a whole session id" ------------------------------------------------


def test_logs_never_hold_a_whole_session_id(
    site: Site, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sids = []
    value = site.value(site.get("/inc"))
    sids.append(site.sid(value))
    value = site.value(site.get("/login", value))
    sids.append(site.sid(value))
    site.get("/poison", value)
    assert site.get("/inc", value).text == "1"  # the record could not be read back: logged
    for kind in ("unknown", "expired", "badly signed"):
        planted = _planted(site, kind, clock)
        sids.append(site.sid(planted))
        sids.append(site.sid(site.value(site.get("/inc", planted))))
    # The HTTP client that plays the browser (for Quart and aiohttp) logs its own wire.
    browser = ("httpx", "httpcore")
    messages = [r.getMessage() for r in caplog.records if not r.name.startswith(browser)]
    assert any(redact(sids[1]) in message for message in messages), messages
    assert not [message for message in messages if any(sid in message for sid in sids)]


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
