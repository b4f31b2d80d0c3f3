"""Session lifetimes, renewal and devices (issue 29) through real requests in Flask,
Starlette, Django and Litestar, and Quart (an ASGI app, driven the same way).

Each app counts visits in its session and has a sign-in (``regenerate``, a new absolute
lifetime) and a privilege step (``regenerate(reset_lifetime=False)``). The MemoryStore's
clock is a fake one, so the absolute end, the renewal and the grace are reached by moving
it, never by sleeping. Redis's scripts read the server's own time: on a real
redis-server and a real Redis Cluster the absolute end and renewal are reached by
waiting out lifetimes of a fraction of a second, every framework's site at once per
wait, retried with longer ones only when a stall of the machine made a check late
(``ShortLives.in_time``). A request is sent with the cookie the test chooses (never a
jar's), so an old cookie can be played again as a thief would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import flask
import httpx
import litestar
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import path
from litestar import Litestar
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lembro.flask
import lembro.litestar
import lembro.starlette
from lembro import MemoryStore, RedisStore
from lembro.flask import Lembro
from lembro.ids import new_session_id
from lembro.litestar import LembroSessionConfig, LembroStore
from tests.conftest import FakeClock
from tests.integrations.test_django import configure_django

from ..contract.lifetimes import ShortLives
from ..redis_server import RedisServer

configure_django()

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

import lembro.django  # noqa: E402 - after configure_django(), as Django needs

# "djangomw": Django behind lembro.django.SessionMiddleware, in place of Django's.
FRAMEWORKS = ["flask", "starlette", "django", "djangomw", "litestar", "quart"]
DJANGO_MIDDLEWARE = {
    "django": [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "lembro.django.RecordDeviceMiddleware",
    ],
    # lembro's drop-in hands the session its device itself
    "djangomw": ["lembro.django.SessionMiddleware"],
}
SECRET = "lembro-tests-only"
PROXY = "127.0.0.1"
TRUSTED = ["127.0.0.1/32"]
ABSOLUTE = 600.0
RENEW_EVERY = 100.0
GRACE = 10.0


# ---- one app per framework, the same views ------------------------------------------------


def flask_app(store: Any) -> Any:
    app = flask.Flask(__name__)
    app.secret_key = SECRET
    app.config["LEMBRO_TRUSTED_PROXIES"] = TRUSTED
    Lembro(app, store)

    @app.before_request
    def permanent() -> None:
        flask.session.permanent = True  # a cookie with an expiry, to see it capped

    @app.get("/count")
    def count() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    @app.post("/login")
    def login() -> str:
        lembro.flask.regenerate()
        flask.session["user"] = "ada"
        return "in"

    @app.post("/elevate")
    def elevate() -> str:
        lembro.flask.regenerate(reset_lifetime=False)
        flask.session["sudo"] = True
        return "sudo"

    return app


def quart_app(store: Any) -> Any:
    import quart

    import lembro.quart

    app = quart.Quart(__name__)
    app.secret_key = SECRET
    app.config["LEMBRO_TRUSTED_PROXIES"] = TRUSTED
    lembro.quart.Lembro(app, store)
    session = lembro.quart.session

    @app.before_request
    async def permanent() -> None:
        session.permanent = True

    @app.get("/count")
    async def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.post("/login")
    async def login() -> str:
        lembro.quart.regenerate()
        session["user"] = "ada"
        return "in"

    @app.post("/elevate")
    async def elevate() -> str:
        lembro.quart.regenerate(reset_lifetime=False)
        session["sudo"] = True
        return "sudo"

    return app


def starlette_app(store: Any) -> Any:
    async def count(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    async def login(request: Request) -> PlainTextResponse:
        lembro.starlette.regenerate(request)
        request.session["user"] = "ada"
        return PlainTextResponse("in")

    async def elevate(request: Request) -> PlainTextResponse:
        lembro.starlette.regenerate(request, reset_lifetime=False)
        request.session["sudo"] = True
        return PlainTextResponse("sudo")

    app = Starlette(
        routes=[
            Route("/count", count),
            Route("/login", login, methods=["POST"]),
            Route("/elevate", elevate, methods=["POST"]),
        ]
    )
    app.add_middleware(
        lembro.starlette.SessionMiddleware,
        secret_key=SECRET,
        store=store,
        trusted_proxies=TRUSTED,
    )
    return app


def django_count(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


def django_login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # what django.contrib.auth.login() does
    request.session["user"] = "ada"
    return HttpResponse("in")


def django_elevate(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key(reset_lifetime=False)  # type: ignore[call-arg]
    request.session["sudo"] = True
    return HttpResponse("sudo")


def django_broken(request: HttpRequest) -> HttpResponse:
    request.session.get("n")  # reads the session, then fails
    return HttpResponse("broken", status=500)


urlpatterns = [
    path("broken", django_broken),
    path("count", django_count),
    path("login", django_login),
    path("elevate", django_elevate),
]


def litestar_app(sessions: LembroStore) -> Any:
    @litestar.get("/count")
    async def count(request: litestar.Request[Any, Any, Any]) -> str:
        request.session["n"] = request.session.get("n", 0) + 1
        return str(request.session["n"])

    @litestar.post("/login")
    async def login(request: litestar.Request[Any, Any, Any]) -> str:
        lembro.litestar.regenerate(request)
        request.session["user"] = "ada"
        return "in"

    @litestar.post("/elevate")
    async def elevate(request: litestar.Request[Any, Any, Any]) -> str:
        lembro.litestar.regenerate(request, reset_lifetime=False)
        request.session["sudo"] = True
        return "sudo"

    return Litestar(
        route_handlers=[count, login, elevate],
        middleware=[LembroSessionConfig(trusted_proxies=TRUSTED).middleware],
        stores={"sessions": sessions},
    )


# ---- a browser with a cookie the test holds ------------------------------------------------


@dataclass
class Answer:
    text: str
    cookie: str | None  # the session cookie's new value, if the response set one
    lifetime: float | None  # how long that cookie lives, seconds (None: till the browser closes)


class Site:
    """One framework's app on ``store``, driven in process; ``send`` makes a request from
    ``peer`` with the session cookie ``cookie`` and returns what came back."""

    def __init__(self, framework: str, store: Any) -> None:
        self.framework = framework
        self.store = store
        self.cookie_name = "sessionid" if framework.startswith("django") else "session"
        self._clients: dict[str, httpx.Client] = {}
        if framework == "flask":
            self._app = flask_app(store)
        elif framework == "starlette":
            # A RedisStore's async twin, given so that it can be closed on its loop.
            self._face = store.as_async() if isinstance(store, RedisStore) else None
            self._app = starlette_app(self._face or store)
        elif framework == "litestar":
            # Litestar's sessions live under a namespace ("LITESTAR" by default), unless
            # the test gives a LembroStore of its own.
            self._sessions = store if isinstance(store, LembroStore) else LembroStore(store)
            self._app = litestar_app(self._sessions)
        elif framework == "quart":
            self._app = quart_app(store)
        else:
            self._app = None  # Django's handler is made per client, under the test's settings

    def _client(self, peer: str) -> httpx.Client:
        asgi = self.framework not in ("flask", "django", "djangomw")
        # One ASGI client, so one event loop, for the site: a Redis store's async twin
        # keeps its connections on the loop it first ran on. The peer goes in a header.
        key = "asgi" if asgi else peer
        client = self._clients.get(key)
        if client is None:
            if self.framework == "flask":
                transport = httpx.WSGITransport(app=self._app, remote_addr=peer)
                client = httpx.Client(transport=transport, base_url="http://testserver")
            elif self.framework.startswith("django"):
                # Django's handler builds its middleware chain as it is made.
                with override_settings(MIDDLEWARE=DJANGO_MIDDLEWARE[self.framework]):
                    handler = WSGIHandler()
                transport = httpx.WSGITransport(app=handler, remote_addr=peer)
                client = httpx.Client(transport=transport, base_url="http://testserver")
            else:
                client = TestClient(_with_peer(self._app))
                client.__enter__()  # one event loop from here to close()
            self._clients[key] = client
        return client

    def send(
        self,
        method: str,
        url: str,
        cookie: str | None = None,
        *,
        peer: str = "203.0.113.7",
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> Answer:
        client = self._client(peer)
        client.cookies.clear()  # only the cookie this call names goes out
        sent = {**(headers or {}), _PEER: peer}
        if cookie is not None:
            sent["Cookie"] = f"{self.cookie_name}={cookie}"
        response = client.request(method, url, headers=sent)
        if status is None:
            assert response.status_code < 400, response.text
        else:
            assert response.status_code == status, response.text
        new, lifetime = None, None
        for header in response.headers.get_list("set-cookie"):
            header = header.strip()  # Django's starts with a space
            if header.startswith(f"{self.cookie_name}="):
                new, lifetime = _parse_set_cookie(header)
        return Answer(response.text, new, lifetime)

    def run(self, function: Callable[[], Any]) -> Any:
        """Await ``function()`` on an ASGI site's event loop (where the connections of a
        Redis store's async twin live)."""
        return self._client("").portal.call(function)  # type: ignore[attr-defined]

    def sid(self, cookie: str) -> str:
        """The store's id of the session a cookie value names (Flask, Starlette and Quart
        sign it; Litestar keeps it under its LembroStore's namespace)."""
        signed = self.framework in ("flask", "starlette", "quart")
        if self.framework == "litestar":
            return self._sessions._key(cookie)
        return cookie.split(".")[0] if signed else cookie

    def close(self) -> None:
        for key, client in self._clients.items():
            if key == "asgi":
                face = getattr(self, "_face", None)
                if face is not None:
                    client.portal.call(face.close)  # type: ignore[attr-defined]
                client.__exit__(None, None, None)
            else:
                client.close()


_PEER = "X-Test-Peer"


def _with_peer(app: Any) -> Any:
    """``app`` with each request's peer address (``scope["client"]``) taken from the
    test's ``X-Test-Peer`` header, as a server would fill it from the connection."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == _PEER.lower().encode():
                    scope = {**scope, "client": (value.decode(), 50000)}
        await app(scope, receive, send)

    return wrapped


def _parse_set_cookie(header: str) -> tuple[str, float | None]:
    """A Set-Cookie header's value and its lifetime in seconds from now (Max-Age wins over
    Expires, as in a browser; None: a browser-session cookie)."""
    parts = [part.strip() for part in header.split(";")]
    value = parts[0].partition("=")[2].strip('"')
    max_age: float | None = None
    expires: float | None = None
    for part in parts[1:]:
        name, _, attribute = part.partition("=")
        if name.lower() == "max-age":
            max_age = float(attribute)
        elif name.lower() == "expires":
            when = parsedate_to_datetime(attribute)
            expires = (when - datetime.now(timezone.utc)).total_seconds()
    return value, max_age if max_age is not None else expires


@pytest.fixture
def site_factory(framework: str) -> Iterator[Callable[[Any], Site]]:
    made: list[Site] = []

    def make(store: Any) -> Site:
        site = Site(framework, store)
        made.append(site)
        return site

    if framework.startswith("django"):
        with override_settings(ROOT_URLCONF=__name__):
            yield make
    else:
        yield make
    for site in made:
        site.close()


@pytest.fixture
def django_store_setting(
    framework: str, site_factory: Callable[[Any], Site]
) -> Iterator[Callable[[Any], Any]]:
    """Hands the store to Django's engine (the other frameworks take it directly). Its
    overrides are undone in reverse at its teardown, which comes before site_factory's
    (it depends on it): undone out of order, site_factory's URLconf would outlive the
    test and serve this module's views to every later Django test in the process."""
    overrides: list[Any] = []

    def use(store: Any) -> Any:
        if framework.startswith("django"):
            override = override_settings(LEMBRO={"STORE": store, "TRUSTED_PROXIES": TRUSTED})
            override.enable()
            overrides.append(override)
        return store

    yield use
    while overrides:
        overrides.pop().disable()


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def memory(
    clock: FakeClock, django_store_setting: Callable[[Any], Any]
) -> Iterator[Callable[..., MemoryStore]]:
    """Builds MemoryStores on the fake clock, closed after."""
    made: list[MemoryStore] = []

    def make(**options: Any) -> MemoryStore:
        store = MemoryStore("1M", None, ttl=3600.0, clock=clock, owner_key="user", **options)
        made.append(store)
        return django_store_setting(store)  # type: ignore[no-any-return]

    yield make
    for store in made:
        store.close()


# ---- the absolute end ------------------------------------------------------------------


def test_the_absolute_end_gives_a_fresh_session_and_the_cookie_never_outlives_it(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore], clock: FakeClock
) -> None:
    site = site_factory(memory(absolute_ttl=ABSOLUTE))
    first = site.send("GET", "/count")
    assert first.text == "1"
    assert first.cookie is not None
    assert first.lifetime is not None
    assert first.lifetime <= ABSOLUTE

    clock.advance(ABSOLUTE - 50)
    used = site.send("GET", "/count", first.cookie)
    assert used.text == "2"  # still the same session...
    if used.cookie is not None:  # ...whose cookie, when sent again, ends with it
        assert used.cookie == first.cookie
        assert used.lifetime is not None
        assert used.lifetime <= 50

    clock.advance(51)
    after = site.send("GET", "/count", first.cookie)
    assert after.text == "1"  # a fresh session: use never extends the absolute end
    assert after.cookie is not None
    assert site.sid(after.cookie) != site.sid(first.cookie)


def test_regenerate_without_reset_keeps_the_absolute_end(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore], clock: FakeClock
) -> None:
    site = site_factory(memory(absolute_ttl=ABSOLUTE))
    cookie = site.send("GET", "/count").cookie
    clock.advance(300)
    elevated = site.send("POST", "/elevate", cookie)
    assert elevated.cookie is not None
    assert site.sid(elevated.cookie) != site.sid(cookie or "")  # a new id...
    assert elevated.lifetime is not None
    assert elevated.lifetime <= ABSOLUTE - 300
    clock.advance(ABSOLUTE - 300 + 1)
    assert site.send("GET", "/count", elevated.cookie).text == "1"


def test_a_sign_in_starts_a_new_absolute_lifetime(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore], clock: FakeClock
) -> None:
    site = site_factory(memory(absolute_ttl=ABSOLUTE))
    cookie = site.send("GET", "/count").cookie
    clock.advance(300)
    signed_in = site.send("POST", "/login", cookie)
    assert signed_in.cookie is not None
    assert signed_in.lifetime is not None
    assert signed_in.lifetime > ABSOLUTE - 300
    clock.advance(ABSOLUTE - 300 + 1)  # past the first lifetime, inside the second
    assert site.send("GET", "/count", signed_in.cookie).text == "2"


# ---- renewal ---------------------------------------------------------------------------


@contextlib.contextmanager
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    """The WARNINGs and worse lembro logs meanwhile, caught on its own logger (a framework
    may reconfigure the root logger's handlers, as Litestar does at start-up)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("lembro")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_renewal_sends_a_new_cookie_the_old_one_answers_in_its_grace_then_is_refused(
    site_factory: Callable[[Any], Site],
    memory: Callable[..., MemoryStore],
    clock: FakeClock,
) -> None:
    store = memory(renew_every=RENEW_EVERY, renew_grace=GRACE)
    site = site_factory(store)
    old = site.send("GET", "/count").cookie
    assert old is not None

    clock.advance(RENEW_EVERY + 1)
    renewed = site.send("GET", "/count", old)
    assert renewed.text == "2"
    assert renewed.cookie is not None
    new_sid = site.sid(renewed.cookie)
    assert new_sid != site.sid(old)
    assert store.get(new_sid) is not None  # the session lives under the new id

    # A request in flight with the old cookie still works, and learns the new id.
    late = site.send("GET", "/count", old)
    assert late.text == "3"
    assert late.cookie is not None
    assert site.sid(late.cookie) == new_sid
    assert site.send("GET", "/count", renewed.cookie).text == "4"

    clock.advance(GRACE + 1)
    with warnings_logged() as records:
        stolen = site.send("GET", "/count", old)
    assert stolen.text == "1"  # refused: a fresh session
    assert store.get(new_sid) is None  # and the session it was replaced by is ended
    assert site.send("GET", "/count", renewed.cookie).text == "1"
    assert [record.levelname for record in records] == ["WARNING"]
    assert not any(new_sid in record.getMessage() for record in records)


def test_a_session_used_within_renew_every_keeps_its_id(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore], clock: FakeClock
) -> None:
    site = site_factory(memory(renew_every=RENEW_EVERY, renew_grace=GRACE))
    cookie = site.send("GET", "/count").cookie
    clock.advance(RENEW_EVERY - 1)
    again = site.send("GET", "/count", cookie)
    assert again.text == "2"
    assert again.cookie is None or site.sid(again.cookie) == site.sid(cookie or "")


# ---- devices -----------------------------------------------------------------------------


def test_the_device_is_recorded_when_the_session_is_created(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore]
) -> None:
    store = memory()
    site = site_factory(store)
    spoofed = {"User-Agent": "Firefox/140", "X-Forwarded-For": "198.51.100.1"}
    direct = site.send("GET", "/count", peer="203.0.113.7", headers=spoofed).cookie
    info = store.session_info(site.sid(direct or ""))
    assert info is not None
    # The peer is no trusted proxy: its X-Forwarded-For is the client's own claim.
    assert (info.ip, info.user_agent) == ("203.0.113.7", "Firefox/140")

    proxied = {"User-Agent": "Safari/18", "X-Forwarded-For": "10.9.9.9, 198.51.100.9"}
    behind = site.send("GET", "/count", peer=PROXY, headers=proxied).cookie
    info = store.session_info(site.sid(behind or ""))
    assert info is not None
    assert (info.ip, info.user_agent) == ("198.51.100.9", "Safari/18")


def test_the_device_is_recorded_again_when_the_session_is_regenerated(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore]
) -> None:
    store = memory()
    site = site_factory(store)
    cookie = site.send("GET", "/count", headers={"User-Agent": "old-browser"}).cookie
    moved = site.send(
        "POST", "/login", cookie, peer="192.0.2.44", headers={"User-Agent": "new-browser"}
    ).cookie
    info = store.session_info(site.sid(moved or ""))
    assert info is not None
    assert (info.ip, info.user_agent) == ("192.0.2.44", "new-browser")


# ---- sessions per user, through real sign-ins -----------------------------------------------


def sign_in_on_three_devices(site: Site) -> list[str]:
    """Three devices (peers 203.0.113.1 to .3) each open a session and sign in as the
    app's one user, one after the other: the cookies of their signed-in sessions."""
    cookies = []
    for device in (1, 2, 3):
        peer = f"203.0.113.{device}"
        anonymous = site.send("GET", "/count", peer=peer).cookie
        signed = site.send("POST", "/login", anonymous, peer=peer).cookie
        assert signed is not None, site.framework
        cookies.append(signed)
    return cookies


def check_the_first_sign_in_was_ended(site: Site, store: Any, cookies: list[str]) -> None:
    """With ``max_sessions_per_user=2``: the devices view lists the two later sign-ins,
    newest first, each with its device; the first device's cookie opens a fresh session."""
    first, second, third = cookies
    devices = store.sessions_of("ada", info=True)
    assert [d.id for d in devices] == [site.sid(third), site.sid(second)], site.framework
    assert [d.ip for d in devices] == ["203.0.113.3", "203.0.113.2"], site.framework
    assert site.send("GET", "/count", first).text == "1", site.framework  # ended
    assert int(site.send("GET", "/count", second).text) > 1, site.framework  # kept


def test_a_third_sign_in_ends_the_oldest_with_max_sessions_per_user_two(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore]
) -> None:
    store = memory(max_sessions_per_user=2)
    site = site_factory(store)
    check_the_first_sign_in_was_ended(site, store, sign_in_on_three_devices(site))


# ---- on a real redis-server: what needs no passing of time ----------------------------------


@pytest.fixture
def redis_store(
    redis_server: RedisServer, django_store_setting: Callable[[Any], Any]
) -> Iterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
        store = RedisStore(redis_server.url, prefix=prefix, owner_key="user", **options)
        made.append(store)
        return django_store_setting(store)  # type: ignore[no-any-return]

    yield make
    for store in made:
        store.clear()
        store.close()


def test_on_redis_the_device_is_recorded_behind_a_trusted_proxy(
    site_factory: Callable[[Any], Site], redis_store: Callable[..., RedisStore]
) -> None:
    store = redis_store()
    site = site_factory(store)
    headers = {"User-Agent": "Safari/18", "X-Forwarded-For": "198.51.100.9"}
    cookie = site.send("GET", "/count", peer=PROXY, headers=headers).cookie
    info = store.session_info(site.sid(cookie or ""))
    assert info is not None
    assert (info.ip, info.user_agent) == ("198.51.100.9", "Safari/18")
    direct = site.send("GET", "/count", peer="203.0.113.7", headers=headers).cookie
    info = store.session_info(site.sid(direct or ""))
    assert info is not None
    assert info.ip == "203.0.113.7"


def test_on_redis_the_cookie_ends_no_later_than_the_absolute_end_a_privilege_step_keeps(
    site_factory: Callable[[Any], Site], redis_store: Callable[..., RedisStore]
) -> None:
    store = redis_store(absolute_ttl=ABSOLUTE)
    site = site_factory(store)
    first = site.send("GET", "/count")
    assert first.cookie is not None
    assert first.lifetime is not None
    assert first.lifetime <= ABSOLUTE
    before = store.session_info(site.sid(first.cookie))
    assert before is not None
    elevated = site.send("POST", "/elevate", first.cookie)
    assert elevated.cookie is not None
    assert elevated.lifetime is not None
    assert elevated.lifetime <= ABSOLUTE
    after = store.session_info(site.sid(elevated.cookie))
    assert after is not None
    # reset_lifetime=False: the sign-in's creation, and so its absolute end, are kept.
    assert after.created == before.created
    assert after.absolute_expires == before.absolute_expires
    assert site.send("GET", "/count", elevated.cookie).text == "2"


# ---- on a real Redis, one node and Cluster, as real time passes ----------------------------
#
# Redis's scripts read the server's own TIME, so no fake clock reaches them: here the
# lifetimes are fractions of a second and the test waits them out, for every framework's
# site at once (one wait serves them all). A stall of the loaded machine between a step and
# the check that had to follow it within a lifetime runs the scenario again with longer
# lifetimes (ShortLives.in_time); a failure in time still fails.

SHORT = 0.25  # seconds: the lifetimes these tests wait out (five times longer on a retry)
SLACK = 0.05  # seconds waited past an end, for Redis's millisecond expiries


class RealTime(ShortLives):
    """Lifetimes of ``short`` seconds on a real Redis; ``wait`` sleeps."""

    kind = "redis"

    def __init__(self) -> None:
        self.short = SHORT
        self._first_wait: float | None = None

    def wait(self, seconds: float) -> None:
        self._note_first_wait()
        time.sleep(seconds)


@pytest.fixture(params=["redis", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """A real redis-server's URL, or a real 3-primary Redis Cluster's (shared per session)."""
    name = "redis_server" if request.param == "redis" else "redis_cluster"
    server = request.getfixturevalue(name)
    return str(server.url)


@pytest.fixture
def every_site(redis_url: str) -> Iterator[Callable[..., list[Site]]]:
    """Builds a RedisStore with the options given (a prefix of its own) and a site of every
    framework on it, each site warmed by one request first, so the first requests a test
    times pay no framework's start-up; all closed, and the store cleared, after."""
    stores: list[RedisStore] = []
    sites: list[Site] = []
    overrides: list[Any] = []

    def make(**options: Any) -> list[Site]:
        prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
        store = RedisStore(redis_url, prefix=prefix, owner_key="user", **options)
        stores.append(store)
        override = override_settings(
            ROOT_URLCONF=__name__, LEMBRO={"STORE": store, "TRUSTED_PROXIES": TRUSTED}
        )
        override.enable()
        overrides.append(override)
        made = [Site(framework, store) for framework in FRAMEWORKS]
        sites.extend(made)
        for site in made:
            site.send("GET", "/count")
        return made

    yield make
    while overrides:
        overrides.pop().disable()
    for site in sites:
        site.close()
    for store in stores:
        store.clear()
        store.close()


def test_on_redis_a_session_used_all_along_ends_at_its_absolute_end_in_every_framework(
    every_site: Callable[..., list[Site]],
) -> None:
    lives = RealTime()

    def scenario() -> None:
        # Over a second: Django's engine keeps a session whole seconds (its cookie's
        # Max-Age), so one with less than a second left is written as ended.
        absolute = 1 + 2 * lives.short
        sites = every_site(absolute_ttl=absolute)
        lives.begin()
        began, cookies = {}, {}
        for site in sites:
            began[site.framework] = time.monotonic()
            first = site.send("GET", "/count")
            assert first.text == "1", site.framework
            assert first.cookie is not None, site.framework
            assert first.lifetime is not None, site.framework
            assert first.lifetime <= absolute, site.framework
            cookies[site.framework] = first.cookie

        lives.wait(lives.short)
        for site in sites:
            cookie = cookies[site.framework]
            used = site.send("GET", "/count", cookie)
            # Late, it could find the session past Django's first whole second.
            lives.within(began[site.framework], 2 * lives.short)
            assert used.text == "2", site.framework  # the same session, still alive...
            if used.cookie is not None:  # ...whose cookie, sent again, ends with it
                assert site.sid(used.cookie) == site.sid(cookie), site.framework
                assert used.lifetime is not None, site.framework
                assert used.lifetime <= absolute - lives.short, site.framework

        lives.wait(absolute - lives.short + SLACK)  # past every session's absolute end
        for site in sites:
            cookie = cookies[site.framework]
            after = site.send("GET", "/count", cookie)
            assert after.text == "1", site.framework  # a fresh session: use never extends it
            assert after.cookie is not None, site.framework
            assert site.sid(after.cookie) != site.sid(cookie), site.framework

    lives.in_time(scenario)


def test_on_redis_renewal_sends_a_new_cookie_the_old_one_answers_in_its_grace_then_is_refused(
    every_site: Callable[..., list[Site]],
) -> None:
    lives = RealTime()

    def scenario() -> None:
        every = grace = lives.short
        sites = every_site(renew_every=every, renew_grace=grace)
        lives.begin()
        old = {}
        for site in sites:
            cookie = site.send("GET", "/count").cookie
            assert cookie is not None, site.framework
            old[site.framework] = cookie

        lives.wait(every + SLACK)  # every session is due a renewal
        renewed = {}
        for site in sites:
            cookie = old[site.framework]
            sent = time.monotonic()
            answer = site.send("GET", "/count", cookie)
            assert answer.text == "2", site.framework
            assert answer.cookie is not None, site.framework
            new_sid = site.sid(answer.cookie)
            assert new_sid != site.sid(cookie), site.framework
            # A request in flight with the old cookie still works, and learns the new id.
            late = site.send("GET", "/count", cookie)
            lives.within(sent, grace)
            assert late.text == "3", site.framework
            assert late.cookie is not None, site.framework
            assert site.sid(late.cookie) == new_sid, site.framework
            renewed[site.framework] = answer.cookie

        lives.wait(grace + SLACK)  # every old id's grace is over
        for site in sites:
            with warnings_logged() as records:
                stolen = site.send("GET", "/count", old[site.framework])
            assert stolen.text == "1", site.framework  # refused: a fresh session
            cookie = renewed[site.framework]
            # ...and the session the old id was replaced by is ended.
            assert site.store.get(site.sid(cookie)) is None, site.framework
            assert site.send("GET", "/count", cookie).text == "1", site.framework
            levels = [record.levelname for record in records]
            assert levels == ["WARNING"], site.framework

    lives.in_time(scenario)


# ---- the settings reach the store each integration builds ----------------------------------

LIFETIMES = {"absolute_ttl": 3600.0, "renew_every": 300.0, "renew_grace": 5.0}


def lifetimes_of(store: Any) -> dict[str, Any]:
    return {name: getattr(store, name) for name in LIFETIMES}


def test_flask_settings_build_a_store_with_the_lifetimes() -> None:
    app = flask.Flask(__name__)
    app.secret_key = SECRET
    for name, value in LIFETIMES.items():
        app.config[f"LEMBRO_{name.upper()}"] = value
    app.config["LEMBRO_MAX_SESSIONS_PER_USER"] = 3
    Lembro(app)
    store = app.session_interface.store  # type: ignore[attr-defined]
    try:
        assert lifetimes_of(store) == LIFETIMES
        assert store.max_sessions_per_user == 3
    finally:
        store.close()


def test_quart_reads_the_same_settings() -> None:
    import quart

    import lembro.quart

    app = quart.Quart(__name__)
    app.secret_key = SECRET
    for name, value in LIFETIMES.items():
        app.config[f"LEMBRO_{name.upper()}"] = value
    lembro.quart.Lembro(app)
    store = app.session_interface.store  # type: ignore[attr-defined]
    try:
        assert lifetimes_of(store) == LIFETIMES
    finally:
        store.close()


def test_starlette_arguments_build_a_store_with_the_lifetimes() -> None:
    middleware = lembro.starlette.SessionMiddleware(Starlette(), SECRET, **LIFETIMES)
    try:
        assert lifetimes_of(middleware.store) == LIFETIMES
    finally:
        middleware.store.close()  # type: ignore[unused-coroutine]


def test_django_settings_build_a_store_with_the_lifetimes() -> None:
    options = {name.upper(): value for name, value in LIFETIMES.items()}
    store = lembro.django.build_store({**options, "MAX_SESSIONS_PER_USER": 2, "INTERVAL": None})
    try:
        assert lifetimes_of(store) == LIFETIMES
        assert store.max_sessions_per_user == 2  # type: ignore[attr-defined]
    finally:
        store.close()


def test_aiohttp_arguments_build_a_store_with_the_lifetimes() -> None:
    import lembro.aiohttp

    storage = lembro.aiohttp.LembroStorage(secret_key=SECRET, max_sessions_per_user=4, **LIFETIMES)
    try:
        assert lifetimes_of(storage.store) == LIFETIMES
        assert storage.store.max_sessions_per_user == 4  # type: ignore[union-attr]
    finally:
        asyncio.run(storage.close())


def test_lifetimes_beside_a_store_given_are_refused_not_ignored() -> None:
    from django.core.exceptions import ImproperlyConfigured

    import lembro.aiohttp
    from lembro import InvalidOption

    store = MemoryStore("1M", None, owner_key="user")
    try:
        with pytest.raises(InvalidOption, match="absolute_ttl"):
            lembro.starlette.SessionMiddleware(Starlette(), SECRET, store=store, absolute_ttl=60)
        with pytest.raises(InvalidOption, match="renew_every"):
            lembro.aiohttp.LembroStorage(store, secret_key=SECRET, renew_every=60)
        with pytest.raises(ImproperlyConfigured, match="ABSOLUTE_TTL"):
            lembro.django.build_store({"STORE": store, "ABSOLUTE_TTL": 60})
    finally:
        store.close()


def test_bad_trusted_proxies_are_refused_at_start_in_every_integration() -> None:
    from django.core.exceptions import ImproperlyConfigured

    import lembro.aiohttp
    from lembro import InvalidOption

    bad = ["proxy.internal"]
    app = flask.Flask(__name__)
    app.config["LEMBRO_TRUSTED_PROXIES"] = bad
    with pytest.raises(InvalidOption, match="trusted_proxies"):
        Lembro(app, MemoryStore("1M", None))
    with pytest.raises(InvalidOption, match="trusted_proxies"):
        lembro.starlette.SessionMiddleware(Starlette(), SECRET, trusted_proxies=bad)
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        lembro.django.build_store({"TRUSTED_PROXIES": bad, "INTERVAL": None})
    with pytest.raises(InvalidOption, match="trusted_proxies"):
        LembroSessionConfig(trusted_proxies=bad)
    with pytest.raises(InvalidOption, match="trusted_proxies"):
        lembro.aiohttp.LembroStorage(secret_key=SECRET, trusted_proxies=bad)


def test_litestar_renews_in_a_namespace_and_the_parents_delete_all_ends_the_renewed_session(
    clock: FakeClock,
) -> None:
    store = MemoryStore("1M", None, clock=clock, renew_every=RENEW_EVERY, renew_grace=GRACE)
    parent = LembroStore(store, clock=clock)  # "LITESTAR", as Litestar's stores
    sessions = parent.with_namespace("sessions")
    site = Site("litestar", sessions)
    try:
        old = site.send("GET", "/count").cookie
        assert old is not None
        clock.advance(RENEW_EVERY + 1)
        renewed = site.send("GET", "/count", old)
        assert renewed.text == "2"
        assert renewed.cookie is not None
        assert renewed.cookie != old
        # The renewed session stays in the namespace: found there, and nowhere else.
        assert list(store.all()) == [site.sid(renewed.cookie)]
        assert site.sid(renewed.cookie).startswith(sessions._key(""))
        late = site.send("GET", "/count", old)  # in flight with the old cookie
        assert late.text == "3"
        assert late.cookie == renewed.cookie

        asyncio.run(parent.delete_all())
        assert site.send("GET", "/count", renewed.cookie).text == "1"
        assert site.send("GET", "/count", old).text == "1"
    finally:
        site.close()
        store.close()


def test_on_redis_litestar_renews_in_a_namespace_and_the_parents_delete_all_ends_it(
    redis_server: RedisServer,
) -> None:
    lives = RealTime()

    def scenario() -> None:
        prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
        store = RedisStore(
            redis_server.url, prefix=prefix, renew_every=lives.short, renew_grace=GRACE
        )
        parent = LembroStore(store)
        site = Site("litestar", parent.with_namespace("sessions"))
        try:
            old = site.send("GET", "/count").cookie
            assert old is not None
            lives.wait(lives.short + SLACK)
            sent = time.monotonic()
            renewed = site.send("GET", "/count", old)
            assert renewed.text == "2"
            assert renewed.cookie is not None
            assert renewed.cookie != old
            assert list(store.all()) == [site.sid(renewed.cookie)]  # in the namespace
            late = site.send("GET", "/count", old)
            lives.within(sent, lives.short)  # before the new id is due a renewal itself
            assert late.text == "3"
            assert late.cookie == renewed.cookie

            site.run(parent.delete_all)
            assert site.send("GET", "/count", renewed.cookie).text == "1"
            assert site.send("GET", "/count", old).text == "1"
        finally:
            site.close()
            store.clear()
            store.close()

    lives.in_time(scenario)


def test_litestar_refuses_a_namespace_on_a_store_that_renews_to_ids_of_its_own() -> None:
    from lembro import InvalidOption, Loaded

    class OwnIds(MemoryStore):
        """A store of the app's whose load renews to ids it makes itself."""

        def load(self, sid: str) -> Loaded | None:  # type: ignore[override]
            return super().load(sid)

    store, lembros = OwnIds("1M", None, renew_every=60), MemoryStore("1M", None, renew_every=60)
    try:
        with pytest.raises(InvalidOption, match="namespace"):
            LembroStore(store)  # "LITESTAR": renewed ids would be lost to it
        with pytest.raises(InvalidOption, match="namespace"):
            LembroStore(store, namespace=None).with_namespace("cache")
        LembroStore(store, namespace=None)
        LembroStore(lembros).with_namespace("cache")  # lembro's own stores take new_id
    finally:
        store.close()
        lembros.close()


# ---- aiohttp, through its own test server ------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_aiohttp_renews_caps_the_cookie_and_records_the_device(clock: FakeClock) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient as AiohttpClient
    from aiohttp.test_utils import TestServer
    from aiohttp_session import get_session, setup

    import lembro.aiohttp

    async def count(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.Response(text=str(session["n"]))

    store = MemoryStore(
        "1M",
        None,
        clock=clock,
        absolute_ttl=ABSOLUTE,
        renew_every=RENEW_EVERY,
        renew_grace=GRACE,
    )
    storage = lembro.aiohttp.LembroStorage(
        store, secret_key=SECRET, max_age=14 * 86400, trusted_proxies=TRUSTED
    )
    app = web.Application()
    setup(app, storage)
    app.router.add_get("/count", count)

    async def send(client: Any, cookie: str | None, **headers: str) -> Answer:
        client.session.cookie_jar.clear()
        if cookie is not None:
            headers["Cookie"] = f"AIOHTTP_SESSION={cookie}"
        response = await client.get("/count", headers=headers)
        found = [h for h in response.headers.getall("Set-Cookie", []) if "AIOHTTP_SESSION=" in h]
        value, lifetime = _parse_set_cookie(found[-1]) if found else (None, None)
        return Answer(await response.text(), value, lifetime)

    try:
        async with AiohttpClient(TestServer(app)) as client:
            agent = {"User-Agent": "Aiohttp/3", "X-Forwarded-For": "198.51.100.9"}
            first = await send(client, None, **agent)
            assert first.cookie is not None
            assert first.lifetime is not None
            assert first.lifetime <= ABSOLUTE
            info = store.session_info(first.cookie.split(".")[0])
            assert info is not None
            assert (info.ip, info.user_agent) == ("198.51.100.9", "Aiohttp/3")

            clock.advance(RENEW_EVERY + 1)
            renewed = await send(client, first.cookie)
            assert renewed.text == "2"
            assert renewed.cookie is not None
            assert renewed.cookie.split(".")[0] != first.cookie.split(".")[0]
            assert renewed.lifetime is not None
            assert renewed.lifetime <= ABSOLUTE - RENEW_EVERY
            late = await send(client, first.cookie)  # in flight with the old cookie
            assert late.text == "3"
            assert late.cookie == renewed.cookie

            clock.advance(GRACE + 1)
            assert (await send(client, first.cookie)).text == "1"  # stolen: refused
            assert (await send(client, renewed.cookie)).text == "1"  # and its session ended
    finally:
        store.close()


def test_on_redis_an_id_in_its_grace_answers_and_the_response_sends_the_new_one(
    site_factory: Callable[[Any], Site], redis_store: Callable[..., RedisStore]
) -> None:
    # A renewal as the store makes it (Redis keeps time itself: no clock to move here).
    store = redis_store()
    site = site_factory(store)
    old = site.send("GET", "/count").cookie
    assert old is not None
    old_sid, new_sid = site.sid(old), site.sid(new_session_id())
    data = store.get(old_sid)
    assert data is not None
    assert store.rename(old_sid, new_sid, data, reset_lifetime=False, grace=60.0)
    late = site.send("GET", "/count", old)
    assert late.text == "2"
    assert late.cookie is not None
    assert site.sid(late.cookie) == new_sid
    assert site.send("GET", "/count", late.cookie).text == "3"


@pytest.mark.anyio
async def test_django_records_the_device_under_asgi_too() -> None:
    from django.test import AsyncClient

    store = MemoryStore("1M", None, owner_key="user")
    try:
        with override_settings(
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "lembro.django.RecordDeviceMiddleware",
            ],
            LEMBRO={"STORE": store, "TRUSTED_PROXIES": TRUSTED},
        ):
            client = AsyncClient()  # its requests come from 127.0.0.1, a trusted proxy here
            headers = {"User-Agent": "Async/1", "X-Forwarded-For": "203.0.113.8"}
            response = await client.get("/count", headers=headers)
            assert response.status_code == 200
            info = store.session_info(response.cookies["sessionid"].value)
            assert info is not None
            assert (info.ip, info.user_agent) == ("203.0.113.8", "Async/1")
    finally:
        store.close()


def test_a_websocket_never_renews_the_id_it_cannot_send(clock: FakeClock) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def count(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(str(websocket.session.get("n")))
        await websocket.close()

    store = MemoryStore("1M", None, clock=clock, renew_every=RENEW_EVERY, renew_grace=GRACE)
    app = Starlette(routes=[Route("/count", count), WebSocketRoute("/ws", socket)])
    app.add_middleware(lembro.starlette.SessionMiddleware, secret_key=SECRET, store=store)
    try:
        with TestClient(app) as client:
            client.get("/count")
            sid = client.cookies["session"].split(".")[0]
            clock.advance(RENEW_EVERY + 1)
            with client.websocket_connect("/ws") as websocket:
                assert websocket.receive_text() == "1"
            info = store.session_info(sid)
            assert info is not None
            assert info.id == sid  # still the session's own id, not one in its grace
            client.get("/count")  # the next response can carry a new id: renewed there
            assert client.cookies["session"].split(".")[0] != sid
    finally:
        store.close()


@pytest.mark.parametrize("framework", ["djangomw"])
def test_a_renewal_reaches_the_browser_even_on_a_server_error(
    site_factory: Callable[[Any], Site], memory: Callable[..., MemoryStore], clock: FakeClock
) -> None:
    # lembro's middleware saves nothing on a 5xx, as Django's does, but the store already
    # moved the session as the request read it: the new id must reach the browser, or its
    # next request after the grace looks like a stolen cookie.
    store = memory(renew_every=RENEW_EVERY, renew_grace=GRACE)
    site = site_factory(store)
    old = site.send("GET", "/count").cookie
    assert old is not None
    clock.advance(RENEW_EVERY + 1)
    failed = site.send("GET", "/broken", old, status=500)
    assert failed.cookie is not None
    new_sid = site.sid(failed.cookie)
    assert new_sid != site.sid(old)
    clock.advance(GRACE + 1)
    assert site.send("GET", "/count", failed.cookie).text == "2"  # still signed in


def test_on_redis_a_third_sign_in_ends_the_oldest_in_every_framework(
    every_site: Callable[..., list[Site]],
) -> None:
    for site in every_site(max_sessions_per_user=2):  # one store: each site in turn
        check_the_first_sign_in_was_ended(site, site.store, sign_in_on_three_devices(site))
