"""Devices that sign in again while their user is logged out everywhere (issue 27).

A regenerate used to be a ``destroy`` then a ``set``: a ``destroy_sessions_of`` that read
the user's sessions between the two missed the device's new session, which survived the
logout (and the call said it ended none). Here each device keeps re-logging in (a
regenerate of its signed-in session) while one call logs its user out everywhere: after
that call, no device is signed in, and the call counted every device it ended. In-process
on a MemoryStore and on RedisStore over a real redis-server, then through Flask (with
Flask-Login) and Django (with django.contrib.auth) test clients, on both stores. On Redis
(one server and a Cluster), a rename held between the round trips of a logout
everywhere, step by step, and a rename next to another app's keys.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import flask
import flask_login
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth import login as django_login
from django.contrib.auth.signals import user_logged_in
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

import lembro.flask
from lembro import InvalidOption, MemoryStore, RedisStore
from lembro._cookies import regenerate
from lembro.flask import Lembro
from lembro.ids import new_session_id
from tests.integrations.test_django import configure_django

from ..redis_server import RedisServer

configure_django()

import lembro.django  # noqa: E402 - after configure_django(), as Django needs

OWNER_KEY = "user"


@contextmanager
def threads_switch_often() -> Iterator[None]:
    """Let the interpreter switch threads far more often than it does by default, so
    that the steps of two racing calls interleave finely."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def one_round(devices: list[Any], relogin: Callable[[Any], bool], logout: Callable[[], int]) -> int:
    """Each device re-logs in (``relogin(device)``: whether it is still signed in) over
    and over while ``logout()`` logs their user out everywhere; return what it ended.
    A device stops once it is signed out, or once the logout is done."""
    started = threading.Barrier(len(devices) + 1)  # every device has re-logged in once
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(device: Any) -> None:
        try:
            relogin(device)
            started.wait()
            while not stop.is_set() and relogin(device):
                pass
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            started.abort()

    with threads_switch_often():
        threads = [threading.Thread(target=run, args=(device,)) for device in devices]
        for thread in threads:
            thread.start()
        try:
            started.wait()
            ended = logout()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert errors == []
    return ended


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Builds stores over one set of sessions: the memory store itself each time, or
    Redis stores on one prefix (each as another process would have, with its own
    client)."""
    made: list[Any] = []
    prefix = f"relogin-{uuid.uuid4().hex[:12]}:"
    memory: list[MemoryStore] = []

    def make(owner_key: str = OWNER_KEY) -> Any:
        store: Any
        if request.param == "memory":
            if not memory:
                memory.append(MemoryStore("8M", None, owner_key=owner_key))
            store = memory[0]
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore(server.url, prefix=prefix, owner_key=owner_key)
        made.append(store)
        return store

    yield make
    for store in made:
        if isinstance(store, MemoryStore):
            store.check()  # the owner index and the size, recounted from scratch
        else:
            store.clear()
        store.close()


# ---- in-process ---------------------------------------------------------------------------


def test_relogins_racing_a_logout_everywhere_never_survive_it(
    make_store: Callable[..., Any],
) -> None:
    device_store, admin_store = make_store(), make_store()
    users = [f"user{n}" for n in range(300)]
    signed_in = {}
    for user in users:
        signed_in[user] = new_session_id()
        device_store.set(signed_in[user], {OWNER_KEY: user})
    start = threading.Barrier(2)
    logged_out = {user: threading.Event() for user in users}
    ended: dict[str, int] = {}
    errors: list[BaseException] = []

    def device() -> None:
        """Per user, re-logs in until the logout everywhere is done or wins."""
        try:
            for user in users:
                start.wait()
                sid: str | None = signed_in[user]
                while sid is not None and not logged_out[user].is_set():
                    sid = regenerate(device_store, sid, {OWNER_KEY: user, "fresh": True})
                signed_in[user] = sid or ""
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            start.abort()

    def admin() -> None:
        try:
            for user in users:
                start.wait()
                ended[user] = admin_store.destroy_sessions_of(user)
                logged_out[user].set()
        except BaseException as e:
            errors.append(e)
            start.abort()

    with threads_switch_often():
        racers = [threading.Thread(target=device), threading.Thread(target=admin)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
    assert errors == []
    survivors = [user for user in users if signed_in[user] and device_store.get(signed_in[user])]
    assert survivors == []
    assert ended == {user: 1 for user in users}  # each device's one session, each time
    assert device_store.all() == {}


# ---- Flask, with Flask-Login --------------------------------------------------------------


class FlaskUser(flask_login.UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


def flask_app(store: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.secret_key = "lembro-tests-only"
    Lembro(app, store)
    manager = flask_login.LoginManager(app)
    manager.user_loader(FlaskUser)

    @app.post("/login/<name>")
    def login(name: str) -> str:
        lembro.flask.regenerate()
        flask_login.login_user(FlaskUser(name))
        return "in"

    @app.post("/relogin")
    def relogin() -> str:
        """A signed-in device signs in again (a regenerate); a signed-out one does not."""
        user = flask_login.current_user
        if not user.is_authenticated:
            return "out"
        lembro.flask.regenerate()
        flask_login.login_user(FlaskUser(user.get_id()))
        return "in"

    @app.get("/whoami")
    def whoami() -> str:
        user = flask_login.current_user
        return str(user.get_id()) if user.is_authenticated else "anonymous"

    return app


def test_flask_relogins_racing_a_logout_everywhere_never_survive_it(
    make_store: Callable[..., Any],
) -> None:
    store = make_store(owner_key=lembro.flask.FLASK_LOGIN_OWNER_KEY)
    app = flask_app(store)

    def logout() -> int:
        with app.test_request_context():
            return lembro.flask.logout_everywhere("alice")

    for _ in range(10):  # rounds: each gives the race another chance
        devices = [app.test_client() for _ in range(8)]
        for device in devices:
            device.post("/login/alice")
        ended = one_round(devices, lambda device: device.post("/relogin").text == "in", logout)
        assert [device.get("/whoami").text for device in devices] == ["anonymous"] * len(devices)
        assert ended == len(devices)
        assert store.sessions_of("alice") == []


# ---- Django, with django.contrib.auth -----------------------------------------------------


def django_login_view(request: HttpRequest, name: str) -> HttpResponse:
    user, _ = get_user_model().objects.get_or_create(username=name)
    django_login(request, user)
    return HttpResponse("in")


def django_relogin(request: HttpRequest) -> HttpResponse:
    """A signed-in device signs in again (``login()`` cycles the key); a signed-out one
    does not."""
    if not request.user.is_authenticated:
        return HttpResponse("out")
    django_login(request, request.user)
    return HttpResponse("in")


def django_whoami(request: HttpRequest) -> HttpResponse:
    user = request.user
    return HttpResponse(user.get_username() if user.is_authenticated else "anonymous")


urlpatterns = [
    path("login/<str:name>", django_login_view),
    path("relogin", django_relogin),
    path("whoami", django_whoami),
]


@pytest.fixture(scope="module")
def auth_db() -> Iterator[None]:
    """A test database with auth's tables, as Django's test runner makes one."""
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield
    connection.creation.destroy_test_db(old_name, verbosity=0)


@pytest.fixture
def no_last_login() -> Iterator[None]:
    """A login without its write of the user's ``last_login``: the test database is an
    in-memory SQLite, which refuses a write while another thread reads the table."""
    from django.contrib.auth.models import update_last_login

    user_logged_in.disconnect(dispatch_uid="update_last_login")
    try:
        yield
    finally:
        user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")


def test_django_relogins_racing_a_logout_everywhere_never_survive_it(
    make_store: Callable[..., Any], auth_db: None, no_last_login: None
) -> None:
    store = make_store(owner_key="_auth_user_id")
    settings = override_settings(
        LEMBRO={"STORE": store},
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
    )
    try:
        with settings:
            alice, _ = get_user_model().objects.get_or_create(username="alice")
            for _ in range(6):  # rounds: each gives the race another chance
                devices = [Client() for _ in range(6)]
                for device in devices:
                    device.post("/login/alice")
                # A device's 400: the save found its session ended (SessionInterrupted).
                ended = one_round(
                    devices,
                    lambda device: device.post("/relogin").content == b"in",
                    lambda: lembro.django.logout_everywhere(alice),
                )
                whoami = [device.get("/whoami").content for device in devices]
                assert whoami == [b"anonymous"] * len(devices)
                assert ended == len(devices)
                assert store.sessions_of(str(alice.pk)) == []
    finally:
        get_user_model().objects.all().delete()


# ---- Redis: a rename between the round trips of a logout everywhere -----------------------


def finish(store: RedisStore, steps: Any, reply: Any) -> Any:
    """Drive a store operation's steps to their end from ``reply``; what they return."""
    try:
        while True:
            reply = store._perform(steps.send(reply))
    except StopIteration as done:
        return done.value


@pytest.mark.parametrize("deployment", ["redis_server", "redis_cluster"])
def test_a_rename_between_the_round_trips_of_a_logout_everywhere_is_refused(
    request: pytest.FixtureRequest, deployment: str
) -> None:
    url = request.getfixturevalue(deployment).url
    prefix = f"relogin-{uuid.uuid4().hex[:12]}:"
    with (
        RedisStore(url, prefix=prefix, owner_key=OWNER_KEY) as admin,
        RedisStore(url, prefix=prefix, owner_key=OWNER_KEY) as device,
    ):
        old, other = new_session_id(), new_session_id()
        device.set(old, {OWNER_KEY: "ana"})
        device.set(other, {OWNER_KEY: "bob"})
        # The logout everywhere's first round trip (the owner's set read), then held.
        steps = admin._destroy_sessions_of_steps("ana", None)
        reply = admin._perform(next(steps))
        new = new_session_id()
        assert device.rename(old, new, {OWNER_KEY: "ana", "again": True}) is False
        assert device.get(old) == {OWNER_KEY: "ana"}  # left for the logout to end
        assert new not in device
        # Another owner's sessions are not held up.
        assert device.rename(other, new, {OWNER_KEY: "bob"}) is True
        assert finish(admin, steps, reply) == 1
        assert device.get(old) is None
        # Once the logout is done, the owner's sessions rename again.
        anew, renamed = new_session_id(), new_session_id()
        device.set(anew, {OWNER_KEY: "ana"})
        assert device.rename(anew, renamed, {OWNER_KEY: "ana"}) is True
        assert device.sessions_of("ana") == [renamed]
        admin.clear()


@pytest.mark.parametrize("deployment", ["redis_server", "redis_cluster"])
def test_a_rename_never_takes_or_overwrites_another_apps_key(
    request: pytest.FixtureRequest, deployment: str
) -> None:
    url = request.getfixturevalue(deployment).url
    with RedisStore(url, prefix=f"relogin-{uuid.uuid4().hex[:12]}:", owner_key=OWNER_KEY) as store:
        old, theirs, new = new_session_id(), new_session_id(), new_session_id()
        store.set(old, {OWNER_KEY: "ana"})
        store.client.hset(store.prefix + theirs, "field", "value")  # another app's hash
        with pytest.raises(InvalidOption):
            store.rename(old, theirs, {OWNER_KEY: "ana"})
        assert store.get(old) == {OWNER_KEY: "ana"}
        assert store.rename(theirs, new, {OWNER_KEY: "ana"}) is False
        assert new not in store
        assert store.client.hgetall(store.prefix + theirs) == {b"field": b"value"}
        assert store.sessions_of("ana") == [old]
        store.client.delete(store.prefix + theirs)
        store.clear()
