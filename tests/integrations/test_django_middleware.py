"""lembro.django.SessionMiddleware: a drop-in for Django's SessionMiddleware.

Every behaviour test of tests/integrations/test_django.py runs again here with lembro's
middleware in ``MIDDLEWARE`` (they are imported into this module, whose autouse fixture
swaps the middleware); then what is the middleware's own: the cookie and headers it sets
are the ones Django's sets, setting by setting, and the short path leaves to Django's
every session it does not know how to serve.
"""

from __future__ import annotations

import copy
import pickle
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

import lembro.django
from lembro import MemoryStore
from lembro.django import SessionMiddleware, SessionStore, logout_everywhere
from tests.conftest import FakeClock
from tests.integrations import test_django
from tests.integrations.test_django import COOKIE, configure_django

configure_django()

OURS = "lembro.django.SessionMiddleware"

# test_django's behaviour tests and their fixtures, collected again from this module (see
# the autouse fixture).
globals().update(
    {
        name: value
        for name, value in vars(test_django).items()
        if name.startswith("test_") or hasattr(value, "_fixture_function_marker")
    }
)


@pytest.fixture(scope="module")
def auth_db() -> Iterator[None]:
    """test_django's, leaving no users behind: its tests create the same ones, and an
    in-memory test database can outlive one module's fixture."""
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    get_user_model().objects.all().delete()
    yield
    get_user_model().objects.all().delete()
    connection.creation.destroy_test_db(old_name, verbosity=0)


@pytest.fixture(autouse=True)
def lembros_middleware() -> Iterator[None]:
    with override_settings(MIDDLEWARE=[OURS]):
        yield


# ---- the same cookie and headers as Django's middleware -----------------------------------

factory = RequestFactory()
NOW = 1_800_000_000.25


def _respond(middleware: type[Any], view: Callable[[HttpRequest], HttpResponse]) -> Any:
    request = factory.get("/")
    return middleware(view)(request)


def _writes(request: HttpRequest) -> HttpResponse:
    request.session["cart"] = [1]
    return HttpResponse("ok")


def _expires_at_close(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(0)
    request.session["cart"] = [1]
    return HttpResponse("ok")


def _expires_in_300(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(300)
    request.session["cart"] = [1]
    return HttpResponse("ok")


def _vary_set_by_view(request: HttpRequest) -> HttpResponse:
    request.session["cart"] = [1]
    response = HttpResponse("ok")
    response.headers["Vary"] = "Accept-Encoding"
    return response


def _sets_its_own_cookie_of_that_name(request: HttpRequest) -> HttpResponse:
    request.session["cart"] = [1]
    response = HttpResponse("ok")
    response.set_cookie(COOKIE, "the view's", max_age=5, samesite="Strict")
    return response


SETTINGS: list[dict[str, Any]] = [
    {},
    {"SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_SAMESITE": "Strict"},
    {"SESSION_COOKIE_DOMAIN": ".example.org", "SESSION_COOKIE_PATH": "/app/"},
    {"SESSION_COOKIE_HTTPONLY": False, "SESSION_COOKIE_SAMESITE": None},
    {"SESSION_COOKIE_SAMESITE": "None", "SESSION_COOKIE_SECURE": True},
    {"SESSION_COOKIE_AGE": 60},
    {"SESSION_EXPIRE_AT_BROWSER_CLOSE": True},
    {"SESSION_COOKIE_NAME": "sid"},
]
VIEWS = [
    _writes,
    _expires_at_close,
    _expires_in_300,
    _vary_set_by_view,
    _sets_its_own_cookie_of_that_name,
]


@pytest.mark.parametrize("options", SETTINGS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__.strip("_"))
def test_the_cookie_and_vary_are_those_djangos_middleware_sets(
    engine_store: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    view: Callable[[HttpRequest], HttpResponse],
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    with override_settings(**options):
        seen = []
        for middleware in (DjangoSessionMiddleware, SessionMiddleware, SessionMiddleware):
            response = _respond(middleware, view)
            # The WSGI handler's rendering, with the key (a new one each time) left out.
            lines = sorted(
                cookie.output(header="").replace(cookie.value, "<key>")
                for cookie in response.cookies.values()
            )
            seen.append((lines, response.headers["Vary"]))
        assert seen[1] == seen[0]
        assert seen[2] == seen[0]  # and again, from the rendering the first one left


def test_a_cookie_changed_after_the_middleware_is_rendered_afresh(
    engine_store: MemoryStore,
) -> None:
    response = _respond(SessionMiddleware, _writes)
    cookie = response.cookies[COOKIE]
    assert "Max-Age=1209600" in cookie.output()
    cookie["max-age"] = 7
    cookie["samesite"] = "Strict"
    assert "Max-Age=7" in cookie.output()
    assert "SameSite=Strict" in cookie.output()
    cookie.set(COOKIE, "another", "another")
    assert cookie.output().startswith(f"Set-Cookie: {COOKIE}=another;")


# ---- through Django's test client ----------------------------------------------------------


def test_sign_in_moves_the_record_and_sign_out_removes_it(
    client: Client, engine_store: MemoryStore
) -> None:
    client.get("/count")
    anonymous = client.cookies[COOKIE].value
    response = client.get("/login")
    signed_in = response.cookies[COOKIE].value
    assert signed_in != anonymous
    assert engine_store.get(anonymous) is None  # regenerate: one rename, the old id gone
    assert engine_store.get(signed_in) == {"n": 1, "user": "alice"}
    response = client.get("/logout")
    assert response.cookies[COOKIE]["max-age"] == 0
    assert engine_store.get(signed_in) is None


def test_log_out_everywhere_ends_the_other_sessions() -> None:
    with (
        MemoryStore("1M", None, owner_key="_auth_user_id") as store,
        override_settings(LEMBRO={"STORE": store}),
    ):
        laptop, phone = Client(), Client()
        for device in (laptop, phone):
            session = SessionStore()
            session["_auth_user_id"] = "7"
            session.save()
            device.cookies[COOKIE] = session.session_key
        assert logout_everywhere("7", keep=laptop.cookies[COOKIE].value) == 1
        assert laptop.get("/count").content == b"1"
        assert store.get(laptop.cookies[COOKIE].value) == {"_auth_user_id": "7", "n": 1}
        assert phone.get("/count").content == b"1"  # a new, anonymous session
        assert store.get(phone.cookies[COOKIE].value) == {"n": 1}


def test_overlapping_requests_that_change_different_keys_keep_both(
    engine_store: MemoryStore,
) -> None:
    first = SessionStore()
    first["visits"] = 0
    first.save()
    key = first.session_key

    def request() -> HttpRequest:
        req = factory.get("/")
        req.COOKIES[COOKIE] = key
        return req

    def theme(req: HttpRequest) -> HttpResponse:
        req.session["theme"] = "dark"
        return HttpResponse("ok")

    def cart(req: HttpRequest) -> HttpResponse:
        cart = req.session.setdefault("cart", [])
        # Another request of the session runs whole while this one holds it loaded.
        SessionMiddleware(theme)(request())
        cart.append("tea")
        return HttpResponse("ok")

    SessionMiddleware(cart)(request())
    assert engine_store.get(key) == {"visits": 0, "theme": "dark", "cart": ["tea"]}


def test_a_session_logged_out_meanwhile_is_not_saved(engine_store: MemoryStore) -> None:
    session = SessionStore()
    session["user"] = "ada"
    session.save()
    key = session.session_key
    request = factory.get("/")
    request.COOKIES[COOKIE] = key

    def view(req: HttpRequest) -> HttpResponse:
        req.session.get("user")
        SessionStore(key).flush()  # a logout in another request
        req.session["cart"] = ["tea"]
        return HttpResponse("ok")

    with pytest.raises(SessionInterrupted):
        SessionMiddleware(view)(request)
    assert engine_store.get(key) is None


def test_the_async_path_keeps_the_session(engine_store: MemoryStore) -> None:
    async_client = AsyncClient()

    async def three() -> list[bytes]:
        return [(await async_client.get("/count")).content for _ in range(3)]

    assert async_to_sync(three)() == [b"1", b"2", b"3"]
    assert engine_store.get(async_client.cookies[COOKIE].value) == {"n": 3}


# ---- what goes through Django's process_response -------------------------------------------


def test_another_engine_is_refused_when_the_middleware_is_built() -> None:
    engine = "django.contrib.sessions.backends.signed_cookies"
    with override_settings(SESSION_ENGINE=engine), pytest.raises(ImproperlyConfigured) as e:
        SessionMiddleware(_writes)
    assert "SESSION_ENGINE = 'lembro.django'" in str(e.value)


class TenMinuteSessions(SessionStore):
    """An engine whose sessions last ten minutes, whatever the settings say."""

    def get_expiry_age(self, **kwargs: Any) -> int:
        return 600


def test_an_engine_computing_lifetimes_its_own_way_is_honoured(
    engine_store: MemoryStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = types.ModuleType("ten_minute_sessions")
    engine.SessionStore = TenMinuteSessions  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ten_minute_sessions", engine)
    with override_settings(SESSION_ENGINE="ten_minute_sessions"):
        response = _respond(SessionMiddleware, _writes)
    key = response.cookies[COOKIE].value
    assert response.cookies[COOKIE]["max-age"] == 600
    clock.advance(599)
    assert engine_store.get(key) == {"cart": [1]}
    clock.advance(2)
    assert engine_store.get(key) is None


def test_a_session_the_view_put_in_place_is_left_to_djangos_path(
    engine_store: MemoryStore,
) -> None:
    class Other(SessionBase):  # not lembro's: saved through Django's process_response
        saved = False

        def save(self, must_create: bool = False) -> None:
            Other.saved = True
            self._session_key = "x" * 32

    def view(request: HttpRequest) -> HttpResponse:
        request.session = Other()
        request.session["a"] = 1
        return HttpResponse("ok")

    response = _respond(SessionMiddleware, view)
    assert Other.saved
    assert response.cookies[COOKIE].value == "x" * 32


def test_the_middleware_is_djangos(engine_store: MemoryStore) -> None:
    assert issubclass(SessionMiddleware, DjangoSessionMiddleware)
    assert lembro.django.SessionMiddleware is SessionMiddleware


def test_a_response_pickled_and_back_renders_the_same_cookie(engine_store: MemoryStore) -> None:
    response = _respond(SessionMiddleware, _writes)  # Django's cache middleware pickles
    again = pickle.loads(pickle.dumps(response))  # noqa: S301 - its own bytes
    assert str(again.cookies) == str(response.cookies)
    assert copy.copy(response.cookies[COOKIE]).output() == response.cookies[COOKIE].output()
