"""lembro.django through Django's real test client, SessionMiddleware and management commands."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from hypothesis import given
from hypothesis import strategies as st

import lembro
from lembro import MemoryStore
from lembro._cookies import REJECTED
from lembro.django import SessionStore, build_store, get_store
from lembro.ids import is_session_id, new_session_id
from tests.conftest import FakeClock
from tests.ports import free_port
from tests.redis_server import RedisServer
from tests.servers import ROOT

COOKIE = "sessionid"


def configure_django() -> None:
    """Configure Django once for this pytest process: settings only, nothing global else.

    Both Django test modules call this; the Flask and Starlette tests never read Django's
    settings, so configuring them here cannot change what those tests see.
    """
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="lembro-tests-only",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        ROOT_URLCONF=__name__,
        SESSION_ENGINE="lembro.django",
        USE_TZ=True,
        LEMBRO={"INTERVAL": None},  # tests purge explicitly: no background thread
    )
    django.setup()


configure_django()


# ---- a tiny app -------------------------------------------------------------------------


def count(request: HttpRequest) -> HttpResponse:
    n = request.session.get("n", 0) + 1
    request.session["n"] = n
    return HttpResponse(str(n))


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n")))


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # what django.contrib.auth.login does first
    request.session["user"] = "alice"
    return HttpResponse("in")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # what django.contrib.auth.logout does
    return HttpResponse("out")


def forget(request: HttpRequest) -> HttpResponse:
    request.session.pop("n", None)
    return HttpResponse("forgot")


def expire(request: HttpRequest, seconds: int) -> HttpResponse:
    request.session.set_expiry(seconds)
    request.session["n"] = 1
    return HttpResponse("set")


urlpatterns = [
    path("count", count),
    path("read", read),
    path("login", login),
    path("logout", logout),
    path("forget", forget),
    path("expire/<int:seconds>", expire),
]


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def engine_store(store: MemoryStore) -> Iterator[MemoryStore]:
    """The conftest's MemoryStore (fake clock, no purge thread), as the engine's store."""
    with override_settings(LEMBRO={"STORE": store}):
        yield store


@pytest.fixture
def client(engine_store: MemoryStore) -> Client:
    return Client()


def session_cookie(client: Client) -> str:
    return client.cookies[COOKIE].value


# ---- behaviour --------------------------------------------------------------------------


def test_counter_round_trips_through_the_store(client: Client, engine_store: MemoryStore) -> None:
    bodies = [client.get("/count").content for _ in range(3)]
    assert bodies == [b"1", b"2", b"3"]
    sid = session_cookie(client)
    assert is_session_id(sid)
    assert engine_store.get(sid) == {"n": 3}
    assert len(engine_store) == 1


def test_session_response_varies_on_cookie(client: Client) -> None:
    response = client.get("/count")
    assert response.headers["Vary"] == "Cookie"


def test_request_that_only_reads_creates_nothing(client: Client, engine_store: MemoryStore) -> None:
    response = client.get("/read")
    assert response.content == b"None"
    assert COOKIE not in response.cookies
    assert len(engine_store) == 0


_LATIN1_TEXT = st.text(st.characters(max_codepoint=255, exclude_characters=";"), max_size=80)
_WELL_FORMED_UNKNOWN = st.from_regex(r"\A[A-Za-z0-9_-]{43}\Z")


@given(planted=st.one_of(_LATIN1_TEXT, _WELL_FORMED_UNKNOWN))
def test_a_cookie_the_server_did_not_issue_is_never_adopted(planted: str) -> None:
    with MemoryStore("1M", None) as store, override_settings(LEMBRO={"STORE": store}):
        client = Client(HTTP_COOKIE=f"{COOKIE}={planted}")
        response = client.get("/count")
        assert response.status_code == 200
        assert response.content == b"1"  # a fresh, empty session
        issued = response.cookies[COOKIE].value
        assert issued != planted.strip()
        assert is_session_id(issued)
        assert list(store.all()) == [issued]


def test_a_bad_cookie_on_a_reading_request_is_deleted_and_stores_nothing(
    engine_store: MemoryStore,
) -> None:
    client = Client(HTTP_COOKIE=f"{COOKIE}={new_session_id()}")
    response = client.get("/read")
    assert response.status_code == 200
    assert response.cookies[COOKIE].value == ""  # Django's delete_cookie
    assert response.cookies[COOKIE]["max-age"] == 0
    assert len(engine_store) == 0


@override_settings(SESSION_SAVE_EVERY_REQUEST=True)
def test_save_every_request_with_a_bad_cookie_stores_nothing(engine_store: MemoryStore) -> None:
    planted = new_session_id()
    response = Client(HTTP_COOKIE=f"{COOKIE}={planted}").get("/read")
    assert response.status_code == 200
    assert response.cookies[COOKIE].value != planted
    assert len(engine_store) == 0


def test_refused_session_cookies_are_counted_for_the_metrics(engine_store: MemoryStore) -> None:
    malformed, unknown = REJECTED.malformed, REJECTED.unknown_id
    Client(HTTP_COOKIE=f"{COOKIE}=not-a-lembro-key").get("/read")
    Client(HTTP_COOKIE=f"{COOKIE}={new_session_id()}").get("/read")
    Client().get("/read")  # no cookie: nothing refused
    assert (REJECTED.malformed - malformed, REJECTED.unknown_id - unknown) == (1, 1)


def test_an_expired_session_is_not_revived(
    client: Client, engine_store: MemoryStore, clock: FakeClock
) -> None:
    client.get("/count")
    old = session_cookie(client)
    clock.advance(settings.SESSION_COOKIE_AGE + 1)
    assert client.get("/count").content == b"1"
    assert session_cookie(client) != old
    assert old not in engine_store


def test_login_cycles_the_key_and_destroys_the_old_record(
    client: Client, engine_store: MemoryStore
) -> None:
    client.get("/count")
    before = session_cookie(client)
    client.get("/login")
    after = session_cookie(client)
    assert after != before
    assert is_session_id(after)
    assert before not in engine_store
    assert engine_store.get(after) == {"n": 1, "user": "alice"}


def test_login_without_a_prior_session_stores_the_new_one(
    client: Client, engine_store: MemoryStore
) -> None:
    # django.contrib.auth.login cycles the key of a session that has no data yet: the
    # key it draws has no record, and the save that follows must create one.
    response = client.get("/login")
    assert response.status_code == 200
    assert engine_store.get(session_cookie(client)) == {"user": "alice"}


def test_a_session_emptied_and_refilled_keeps_its_key(
    engine_store: MemoryStore,
) -> None:
    session = SessionStore()
    session["n"] = 1
    session.save()
    key = session.session_key
    del session["n"]
    session.save()
    assert engine_store.get(key) == {}  # stored empty, as Django's own engines do
    session["m"] = 2
    session.save()
    assert session.session_key == key
    assert engine_store.get(key) == {"m": 2}


def test_an_explicit_save_of_an_empty_session_keeps_one_key(
    engine_store: MemoryStore,
) -> None:
    """The idiom ``if not request.session.session_key: request.session.save()`` gives one
    key for every request, as Django's cache engine does."""
    keys = []
    key = None
    for _ in range(3):
        session = SessionStore(key)
        if not session.session_key or not session.exists(session.session_key):
            session.save()
        key = session.session_key
        keys.append(key)
    assert len(set(keys)) == 1
    assert engine_store.get(keys[0]) == {}


def test_logout_flush_destroys_the_record_and_the_cookie(
    client: Client, engine_store: MemoryStore
) -> None:
    client.get("/count")
    sid = session_cookie(client)
    response = client.get("/logout")
    assert response.cookies[COOKIE].value == ""
    assert response.cookies[COOKIE]["max-age"] == 0
    assert sid not in engine_store
    assert len(engine_store) == 0


def test_an_emptied_session_keeps_its_key_and_an_empty_record(
    client: Client, engine_store: MemoryStore
) -> None:
    client.get("/count")
    sid = session_cookie(client)
    client.get("/forget")
    assert engine_store.get(sid) == {}  # Django's middleware saves it, as with its engines
    client.get("/read")
    assert session_cookie(client) == sid
    assert engine_store.get(sid) == {}


def test_set_expiry_is_the_record_lifetime(
    client: Client, engine_store: MemoryStore, clock: FakeClock
) -> None:
    client.get("/expire/60")
    sid = session_cookie(client)
    clock.advance(59)
    assert sid in engine_store
    clock.advance(2)
    assert sid not in engine_store


@override_settings(SESSION_COOKIE_AGE=100)
def test_default_lifetime_is_session_cookie_age(
    client: Client, engine_store: MemoryStore, clock: FakeClock
) -> None:
    client.get("/count")
    sid = session_cookie(client)
    clock.advance(99)
    assert sid in engine_store
    clock.advance(2)
    assert sid not in engine_store


def test_saving_restarts_the_lifetime(
    client: Client, engine_store: MemoryStore, clock: FakeClock
) -> None:
    client.get("/expire/60")
    clock.advance(50)
    client.get("/count")  # modified: saved again with a fresh 60 seconds
    clock.advance(50)
    assert client.get("/read").content == b"2"


def test_expiry_in_the_past_stores_nothing(engine_store: MemoryStore) -> None:
    session = SessionStore()
    session["n"] = 1
    session.set_expiry(-10)
    session.save()
    assert len(engine_store) == 0


def test_clearsessions_purges_expired_records(
    client: Client, engine_store: MemoryStore, clock: FakeClock
) -> None:
    for _ in range(3):
        Client().get("/count")
    client.get("/expire/2000000")
    keep = session_cookie(client)
    clock.advance(settings.SESSION_COOKIE_AGE + 1)
    held = engine_store.size
    call_command("clearsessions")
    assert engine_store.stats().expired == 3
    assert 0 < engine_store.size < held
    assert list(engine_store.all()) == [keep]


@pytest.mark.parametrize(
    ("engine", "flagged"),
    [
        ("lembro.django", False),
        ("django.contrib.sessions.backends.cache", False),
        ("lembro_sessions.engine", False),  # a project's own module, not lembro
        ("lembro", True),
        ("Lembro.Django", True),
        ("lembro.flask", True),
    ],
)
def test_session_engine_check_flags_only_wrong_lembro_paths(engine: str, flagged: bool) -> None:
    with override_settings(SESSION_ENGINE=engine):
        assert [m.id for m in lembro.django.check_engine()] == (["lembro.E002"] if flagged else [])


def test_session_keys_are_256_bit_ids(engine_store: MemoryStore) -> None:
    keys = {SessionStore()._get_new_session_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(is_session_id(key) for key in keys)


def test_async_key_generation_makes_256_bit_ids_too(engine_store: MemoryStore) -> None:
    assert is_session_id(async_to_sync(SessionStore()._aget_new_session_key)())


def test_exists_only_for_live_sessions(engine_store: MemoryStore, clock: FakeClock) -> None:
    session = SessionStore()
    session["n"] = 1
    session.set_expiry(10)
    session.save()
    key = session.session_key
    assert SessionStore().exists(key) is True
    assert SessionStore().exists(new_session_id()) is False
    assert SessionStore().exists("12345678") is False
    clock.advance(11)
    assert SessionStore().exists(key) is False


def test_a_key_the_store_lacks_is_replaced_on_save(engine_store: MemoryStore) -> None:
    planted = new_session_id()
    session = SessionStore(planted)
    session["n"] = 1
    session.save()
    assert session.session_key != planted
    assert planted not in engine_store
    assert engine_store.get(session.session_key) == {"n": 1}


# ---- django.contrib.auth ----------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_db() -> Iterator[None]:
    """A test database with auth's tables, as Django's test runner makes one."""
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield
    connection.creation.destroy_test_db(old_name, verbosity=0)


def test_auth_login_cycles_the_key_and_logout_destroys_it(
    auth_db: None, client: Client, engine_store: MemoryStore
) -> None:
    user = get_user_model().objects.create_user("alice")
    client.get("/count")
    anonymous = session_cookie(client)
    client.force_login(user)  # django.contrib.auth.login, through this engine
    signed_in = session_cookie(client)
    assert signed_in != anonymous
    assert anonymous not in engine_store
    data = engine_store.get(signed_in)
    assert data is not None
    assert (data["n"], data["_auth_user_id"]) == (1, str(user.pk))
    client.logout()  # django.contrib.auth.logout: flush()
    assert len(engine_store) == 0


def test_auth_login_without_a_prior_session(
    auth_db: None, client: Client, engine_store: MemoryStore
) -> None:
    user = get_user_model().objects.create_user("bob")
    client.force_login(user)
    data = engine_store.get(session_cookie(client))
    assert data is not None
    assert data["_auth_user_id"] == str(user.pk)


# ---- settings -----------------------------------------------------------------------------


def test_lembro_settings_build_the_store() -> None:
    options = {
        "MAX_SIZE": "64K",
        "INTERVAL": None,
        "LOW_WATER": 0.5,
        "SERIALIZER": "json",
        "TTL": 77,
    }
    with override_settings(LEMBRO=options):
        store = get_store()
        assert isinstance(store, MemoryStore)
        assert (store.max_size, store.interval, store.low_water, store.ttl) == (
            64 * 1024,
            None,
            0.5,
            77.0,
        )
        assert get_store() is store  # built once


@override_settings(SESSION_COOKIE_AGE=1234)
def test_ttl_defaults_to_session_cookie_age() -> None:
    with override_settings(LEMBRO={"INTERVAL": None}):
        assert get_store().ttl == 1234.0


def test_concurrent_first_use_builds_one_store() -> None:
    with override_settings(LEMBRO={"INTERVAL": None}):
        barrier = threading.Barrier(8)
        seen: list[object] = []

        def first_request() -> None:
            barrier.wait()
            seen.append(get_store())

        threads = [threading.Thread(target=first_request) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 8
        assert len({id(store) for store in seen}) == 1


def test_changing_lembro_rebuilds_and_closes_the_store_it_built() -> None:
    with override_settings(LEMBRO={"INTERVAL": 3600}):
        first = get_store()
        assert isinstance(first, MemoryStore)
        assert first._thread is not None
        with override_settings(LEMBRO={"INTERVAL": None}):
            assert get_store() is not first
        assert first._thread is None  # closed: its purge thread stopped


def test_a_store_given_in_settings_is_used_and_left_open() -> None:
    with MemoryStore("1M", 3600) as mine:
        with override_settings(LEMBRO={"STORE": mine}):
            assert get_store() is mine
        assert mine._thread is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"MAX_SIZ": "4M"}, "unknown LEMBRO option(s) MAX_SIZ"),
        ({"MAX_SIZE": "lots"}, "invalid size 'lots'"),
        ({"LOW_WATER": 2}, "invalid low_water 2"),
        ({"SERIALIZER": "yaml"}, "invalid serializer 'yaml'"),
        ({"STORE": "sqlite"}, "LEMBRO['STORE'] is 'sqlite'"),
        ({"STORE": "redis"}, "needs LEMBRO['URL']"),
    ],
)
def test_bad_settings_are_improperly_configured(options: dict[str, object], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        build_store(options)


def test_redis_store_is_built_only_when_asked_for() -> None:
    options = {"STORE": "redis", "URL": "redis://127.0.0.1:6379/0"}
    if hasattr(lembro, "RedisStore"):
        store = build_store(options)
        assert isinstance(store, lembro.RedisStore)
        store.close()
    else:
        with pytest.raises(ImproperlyConfigured, match=r"needs lembro\.RedisStore"):
            build_store(options)


# ---- the example app, as a real server ---------------------------------------------------

EXAMPLE = ROOT / "examples" / "django_app.py"


@pytest.fixture
def example_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "runserver", f"127.0.0.1:{port}", "--noreload"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"example exited: {process.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(base + "/logout", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("example server did not start")
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_example_app_counts_and_logs_out(example_server: str) -> None:
    with httpx.Client(base_url=example_server) as client:
        assert [client.get("/").text for _ in range(3)] == ["1\n", "2\n", "3\n"]
        assert is_session_id(client.cookies["sessionid"])
        logout = client.get("/logout")
        assert 'sessionid=""' in logout.headers["set-cookie"]
        assert client.get("/").text == "1\n"


def test_a_new_session_on_redis_costs_one_lookup_and_one_write(redis_server: RedisServer) -> None:
    """``create()`` draws a 256-bit key and asks the store once (``save(must_create=True)``
    refuses a taken key), then writes: no second lookup before it, as Django's engines do."""
    import redis

    raw = redis.Redis.from_url(redis_server.url)
    with override_settings(LEMBRO={"STORE": "redis", "URL": redis_server.url}):
        session = SessionStore()
        session["cart"] = [1]
        session.save()  # warms the connection up: its handshake is not counted
        before = _command_calls(raw)
        fresh = SessionStore()
        fresh.create()
        calls = {
            name: n - before.get(name, 0)
            for name, n in _command_calls(raw).items()
            if n != before.get(name, 0)
        }
        # The lookup is one script (EVAL) that runs a TYPE (an alias is no session); the
        # write one script that runs a TYPE, Redis's TIME (the header) and the SET.
        assert calls == {"type": 2, "eval": 2, "time": 1, "set": 1}
        assert get_store().get(fresh.session_key) == {}
    raw.close()


def _command_calls(raw: Any) -> dict[str, int]:
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("info", None)
    return calls
