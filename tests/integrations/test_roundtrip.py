"""What an app puts in a session comes back equal and of the same type, or is refused.

One matrix: serializers (msgpack, json) x integrations (Flask, Starlette, Django). Each
value is written by one request and read by the next, through the framework.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

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
from lembro import MemoryStore, RedisStore, SerializationError
from lembro.ids import new_session_id
from lembro.starlette import SessionMiddleware
from tests.integrations.test_django import configure_django
from tests.redis_server import RedisServer

configure_django()

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Club(tzinfo):
    """A hand-written tzinfo: nothing to look it up by where the session is read."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "CLUB"


LISBON = ZoneInfo("Europe/Lisbon")

EXACT: dict[str, Any] = {
    "naive": datetime(2024, 5, 6, 7, 8, 9, 123456),
    "aware": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
    "named": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2), "CEST")),
    "zoned": datetime(2024, 3, 30, 12, tzinfo=LISBON),  # a day later is summer time
    "twice": datetime(2024, 10, 27, 1, 30, tzinfo=LISBON, fold=1),  # the second 01:30
    "folded": datetime(2024, 10, 27, 1, 30, fold=1),
    "day": date(2024, 2, 29),
    "clock": time(23, 59, 1, 5),
    "zoned_clock": time(9, 15, tzinfo=LISBON),
    "folded_clock": time(1, 30, tzinfo=timezone.utc, fold=1),
    "span": timedelta(days=-1, seconds=5, microseconds=7),
    "id": UUID("12345678-1234-5678-1234-567812345678"),
    "money": Decimal("19.90"),
    "raw": b"\x00\xff",
    "pair": (1, ("two", 3.5)),
    "tags": {"a", "b"},
    "frozen": frozenset({1, 2}),
    "json": {"list": [1, 2.5, True, None, "s"], "nested": {"k": "v"}},
    "marker": {"\ue000": "a user's own key that looks like a tag"},
}

REFUSED: list[tuple[Any, str]] = [
    ({"cart": [1, 2, Color.RED]}, r"session\['cart'\]\[2\]: Color"),
    ({"where": Point(1)}, r"session\['where'\]: Point"),
    ({"ordered": OrderedDict(a=1)}, r"session\['ordered'\]: OrderedDict"),
    ({"deep": {"x": [object()]}}, r"session\['deep'\]\['x'\]\[0\]: object"),
    (
        {"at": [datetime(2024, 1, 1, tzinfo=Club())]},
        r"session\['at'\]\[0\]: datetime with tzinfo Club",
    ),
]

SERIALIZERS = ["msgpack", "json"]


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (datetime, time)):
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and a.utcoffset() == b.utcoffset()
            and a.tzname() == b.tzname()
            and getattr(a.tzinfo, "key", None) == getattr(b.tzinfo, "key", None)
        )
    return bool(a == b)


# ---- three ways to write a value in one request and read it in the next -----------------
#
# Each runs ``write(session)`` in one request and returns what the next request reads.
# With ``seed``, a request before them stores ``seed`` first, so ``write`` changes a
# session loaded from the store rather than a new one.

Write = Callable[[MutableMapping[str, Any]], None]


def through_flask(
    store: MemoryStore, write: Write, seed: dict[str, Any] | None = None
) -> dict[str, Any]:
    app = Flask(__name__)
    app.secret_key = "roundtrip"
    app.testing = True  # the refusal reaches the test, not a 500 page
    lembro.flask.Lembro(app, store)
    seen: dict[str, Any] = {}

    @app.get("/seed")
    def put_seed() -> str:
        lembro.flask.session.update(seed or {})
        return "ok"

    @app.get("/put")
    def put() -> str:
        write(lembro.flask.session)
        lembro.flask.session.modified = True  # as Flask asks after a change inside a value
        return "ok"

    @app.get("/get")
    def get() -> str:
        seen.update(lembro.flask.session)
        return "ok"

    client = app.test_client()
    if seed:
        client.get("/seed")
    client.get("/put")
    client.get("/get")
    return seen


def through_starlette(
    store: MemoryStore, write: Write, seed: dict[str, Any] | None = None
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def put_seed(request: Request) -> PlainTextResponse:
        request.session.update(seed or {})
        return PlainTextResponse("ok")

    async def put(request: Request) -> PlainTextResponse:
        write(request.session)
        return PlainTextResponse("ok")

    async def get(request: Request) -> PlainTextResponse:
        seen.update(request.session)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/seed", put_seed), Route("/put", put), Route("/get", get)],
        middleware=[Middleware(SessionMiddleware, secret_key="roundtrip", store=store)],
    )
    client = TestClient(app, raise_server_exceptions=True)
    if seed:
        client.get("/seed")
    client.get("/put")
    client.get("/get")
    return seen


_django_write: list[Write] = []
_django_seed: dict[str, Any] = {}
_django_seen: dict[str, Any] = {}


def _put_seed(request: HttpRequest) -> HttpResponse:
    request.session.update(_django_seed)
    return HttpResponse("ok")


def _put(request: HttpRequest) -> HttpResponse:
    _django_write[0](request.session)
    request.session.modified = True  # as Django asks after a change inside a value
    return HttpResponse("ok")


def _get(request: HttpRequest) -> HttpResponse:
    _django_seen.update(request.session.items())
    return HttpResponse("ok")


urlpatterns = [path("seed", _put_seed), path("put", _put), path("get", _get)]


def through_django(
    store: MemoryStore, write: Write, seed: dict[str, Any] | None = None
) -> dict[str, Any]:
    _django_write[:] = [write]
    _django_seed.clear()
    _django_seed.update(seed or {})
    _django_seen.clear()
    with override_settings(ROOT_URLCONF=__name__, LEMBRO={"STORE": store}):
        client = Client(raise_request_exception=True)
        if seed:
            client.get("/seed")
        client.get("/put")
        client.get("/get")
    return dict(_django_seen)


INTEGRATIONS = {"flask": through_flask, "starlette": through_starlette, "django": through_django}


def update_with(data: dict[str, Any]) -> Write:
    """A write of ``data`` in one call (``session.update``)."""
    return lambda session: session.update(data)


def set_each_of(data: dict[str, Any]) -> Write:
    """A write of ``data`` a key at a time (``session[key] = value``)."""

    def write(session: MutableMapping[str, Any]) -> None:
        for key, value in data.items():
            session[key] = value

    return write


SEED = {"seed": 1, "cart": [1, 2]}

# Two ways to write: into a new session in one call; into a session loaded from the store
# (which may be checked only where it was written), a key at a time.
WAYS = {
    "new": (update_with, None),
    "loaded": (set_each_of, SEED),
}


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("integration", list(INTEGRATIONS))
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_every_exact_type_comes_back_equal_and_of_the_same_type(
    serializer: str, integration: str, way: str
) -> None:
    writes, seed = WAYS[way]
    with MemoryStore("1M", None, serializer=serializer) as store:
        seen = INTEGRATIONS[integration](store, writes(EXACT), seed=seed)
    assert _same(seen, {**(seed or {}), **EXACT})


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize(("data", "message"), REFUSED)
@pytest.mark.parametrize("integration", list(INTEGRATIONS))
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_type_that_would_change_is_refused_naming_where_it_is(
    serializer: str, integration: str, data: dict[str, Any], message: str, way: str
) -> None:
    """Refused, and nothing written: the store holds what it held before."""
    writes, seed = WAYS[way]
    with MemoryStore("1M", None, serializer=serializer) as store:
        with pytest.raises(SerializationError, match=message):
            INTEGRATIONS[integration](store, writes(data), seed=seed)
        assert list(store.all().values()) == ([seed] if seed else [])


@pytest.mark.parametrize("integration", list(INTEGRATIONS))
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_exact_values_held_survive_a_write_of_another_key(
    serializer: str, integration: str
) -> None:
    """What a session loaded from the store holds is written back as exactly as it was
    first written, whichever key a request changes (a login's datetime, then a visit
    counter)."""
    with MemoryStore("1M", None, serializer=serializer) as store:
        seen = INTEGRATIONS[integration](store, set_each_of({"visits": 2}), seed=EXACT)
    assert _same(seen, {**EXACT, "visits": 2})


@pytest.mark.parametrize("integration", list(INTEGRATIONS))
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_type_put_inside_a_loaded_value_is_refused_and_the_session_kept(
    serializer: str, integration: str
) -> None:
    """Changed in place, a value loaded from the store is checked like a new one (Flask
    and Django see such a change once told, with ``session.modified = True``; Starlette
    sees it by itself)."""

    def append_to_cart(session: MutableMapping[str, Any]) -> None:
        session["cart"].append(Color.RED)

    with MemoryStore("1M", None, serializer=serializer) as store:
        with pytest.raises(SerializationError, match=r"session\['cart'\]\[2\]: Color"):
            INTEGRATIONS[integration](store, append_to_cart, seed=SEED)
        assert list(store.all().values()) == [SEED]


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_redis_store_reads_back_every_exact_type_it_wrote(
    serializer: str, redis_server: RedisServer
) -> None:
    """RedisStore shares the serializers: what it writes to a real server, it reads back."""
    prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
    with RedisStore(redis_server.url, prefix=prefix, serializer=serializer) as store:
        try:
            sid = new_session_id()
            store.set(sid, EXACT)
            assert _same(store.get(sid), EXACT)
            with pytest.raises(SerializationError, match=REFUSED[-1][1]):
                store.set(sid, REFUSED[-1][0])
            assert _same(store.get(sid), EXACT)
        finally:
            store.clear()
