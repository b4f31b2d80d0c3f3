"""Property tests: whatever data an app stores and whatever cookie a client sends.

Three parts: every value each serializer takes or refuses, over a real MemoryStore (a
refusal changes nothing); MemoryStore against a model dict, step by step, under a small
cap and a fake clock; and every cookie value a client can send, through the real test
client of each integration (Flask, Starlette, Django, Quart): it always gets a fresh,
empty session, and its id is never adopted. (aiohttp's own HTTP parser answers 400 to the
huge and control-character cookies before any storage sees them; its storage meets the
planted cookies of tests/integrations/test_aiohttp.py and the security claims instead.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client as DjangoClient
from django.test import override_settings
from django.urls import path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lembro.starlette
from lembro import InvalidOption, LembroError, MemoryStore, SerializationError
from lembro.ids import is_session_id, new_session_id
from lembro.memory import RECORD_OVERHEAD, SESSION_OVERHEAD
from lembro.memory.budget import session_cost
from lembro.serializers import MsgpackSerializer
from tests.conftest import FakeClock
from tests.integrations.test_django import configure_django
from tests.integrations.test_flask import make_app as make_flask_app
from tests.integrations.test_quart import make_app as make_quart_app
from tests.unit.test_memory import assert_accounting_exact

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the client is the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

configure_django()

SERIALIZERS = ["msgpack", "json", "pickle"]


# ---- 1. session data: what each serializer takes, gives back, or refuses -------------------


class Opaque:
    """An app's own object: picklable (module level, with __eq__), unknown to msgpack/JSON."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Opaque and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Opaque({self.value})"


class Refused(Exception):
    """Raised by the expectation below where the serializer must refuse the data."""


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_EDGE_INTS = [_INT64_MIN - 1, _INT64_MIN, _UINT64_MAX, _UINT64_MAX + 1, 10**400, -(10**400)]


def _encodable_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
        return False
    return True


_MSGPACK_KEY_TYPES = (str, int, float, bool, bytes, type(None))


def _exact_containers(value: Any, expect: Callable[[Any], Any]) -> Any:
    """Lists, tuples, sets and frozensets come back as themselves, item by item."""
    return type(value)(expect(item) for item in value)


def expected_msgpack(value: Any) -> Any:
    """What msgpack gives back for ``value``; :class:`Refused` where it must refuse.

    Rules: every value comes back as its own type or is refused. str must be UTF-8 (no
    lone surrogates); ints must fit in [-2**63, 2**64 - 1]; bytes, tuples, sets and
    frozensets come back as themselves; bytearray and memoryview (which would come back
    as bytes) are refused; keys must be str, int, float, bool, bytes or None; other
    objects are refused.
    """
    if value is None or type(value) in (bool, float, bytes):
        return value
    if type(value) is int:
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise Refused
        return value
    if type(value) is str:
        if not _encodable_text(value):
            raise Refused
        return value
    if type(value) in (list, tuple, set, frozenset):
        return _exact_containers(value, expected_msgpack)
    if type(value) is dict:
        if not all(type(k) in _MSGPACK_KEY_TYPES for k in value):
            raise Refused
        return {expected_msgpack(k): expected_msgpack(v) for k, v in value.items()}
    raise Refused


def expected_json(value: Any) -> Any:
    """What JSON gives back for ``value``; :class:`Refused` where it must refuse.

    Rules: every value comes back as its own type or is refused. str must be UTF-8; ints
    of any size; floats must be finite (JSON has no NaN); bytes, tuples, sets and
    frozensets come back as themselves (tagged); bytearray and memoryview are refused;
    keys must be str; other objects are refused.
    """
    if value is None or type(value) in (bool, int, bytes):
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise Refused
        return value
    if type(value) is str:
        if not _encodable_text(value):
            raise Refused
        return value
    if type(value) in (list, tuple, set, frozenset):
        return _exact_containers(value, expected_json)
    if type(value) is dict:
        if not all(type(k) is str and _encodable_text(k) for k in value):
            raise Refused
        return {k: expected_json(v) for k, v in value.items()}
    raise Refused  # bytearray, memoryview and objects


def expected_pickle(value: Any) -> Any:
    """What pickle gives back: the value itself, unless something in it does not pickle
    (here: a memoryview or a lock)."""
    if isinstance(value, (memoryview, type(threading.Lock()))):
        raise Refused
    if isinstance(value, dict):
        for k, v in value.items():
            expected_pickle(k)
            expected_pickle(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            expected_pickle(item)
    return value


EXPECTED: dict[str, Callable[[Any], Any]] = {
    "msgpack": expected_msgpack,
    "json": expected_json,
    "pickle": expected_pickle,
}


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down: True is not 1, 1.0 is not 1, NaN is
    NaN, -0.0 is not 0.0, and dicts keep their order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


texts = st.one_of(st.text(max_size=20), st.sampled_from(["\ud800", "a\udfffb", "é€😀", ""]))
ints = st.one_of(st.integers(), st.sampled_from(_EDGE_INTS))
hashable_scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts, st.binary(max_size=8)
)
hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple), st.frozensets(hashable_scalars, max_size=3)
    ),
    max_leaves=4,
)
scalars = st.one_of(
    hashable_scalars,
    st.floats(),  # NaN and infinities too
    st.binary(max_size=16).map(bytearray),
    st.binary(max_size=16).map(lambda b: memoryview(b)),
    st.builds(Opaque, st.integers(0, 9)),
    st.builds(threading.Lock),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.sets(hashable_scalars, max_size=4),
        st.frozensets(hashable_scalars, max_size=4),
        st.dictionaries(texts, inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
    ),
    max_leaves=12,
)
sessions = st.one_of(
    st.dictionaries(texts, values, max_size=5),
    st.dictionaries(hashables, values, max_size=3),
)


def snapshot(store: MemoryStore) -> tuple[Any, ...]:
    """Everything a refused write must leave as it was, seen through the public API."""
    return (store.size, store.stats(), store.all())


@pytest.mark.parametrize("serializer", SERIALIZERS)
@settings(max_examples=200, deadline=None)
@given(data=sessions)
def test_set_round_trips_or_refuses_and_changes_nothing(serializer: str, data: Any) -> None:
    with MemoryStore("1M", None, serializer=serializer, clock=FakeClock()) as store:
        store.set("other", {"keep": 1})
        store.set("sid", {"old": [1, 2]})
        before = snapshot(store)
        try:
            expected = EXPECTED[serializer](data)
        except Refused:
            with pytest.raises(SerializationError) as info:
                store.set("sid", data)
            assert isinstance(info.value, TypeError)
            assert isinstance(info.value, LembroError)
            assert snapshot(store) == before
            assert store.get("sid") == {"old": [1, 2]}
        else:
            store.set("sid", data)
            got = store.get("sid")
            assert same(got, expected), (got, expected)
            assert len(store) == 2
        assert store.get("other") == {"keep": 1}
        assert_accounting_exact(store)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize(
    "data", [[1, 2], "text", None, ({"a": 1},)], ids=["list", "str", "None", "tuple"]
)
def test_session_data_that_is_not_a_dict_is_refused(serializer: str, data: Any) -> None:
    with MemoryStore("1M", None, serializer=serializer) as store:
        store.set("sid", {"old": 1})
        before = snapshot(store)
        with pytest.raises(SerializationError):
            store.set("sid", data)
        assert snapshot(store) == before


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_self_referencing_data_is_refused_or_kept_whole(serializer: str) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with MemoryStore("1M", None, serializer=serializer) as store:
        store.set("sid", {"old": 1})
        before = snapshot(store)
        if serializer == "pickle":  # pickle keeps shared and cyclic references
            store.set("sid", {"loop": loop})
            got = store.get("sid")
            assert got is not None
            assert got["loop"][1] is got["loop"]
        else:
            with pytest.raises(SerializationError):
                store.set("sid", {"loop": loop})
            assert snapshot(store) == before
        assert_accounting_exact(store)


# ---- 2. MemoryStore against a model, step by step ---------------------------------------

SIDS = ["a", "bb", "c" * 43, "d", new_session_id(), "f", "é€😀"]
# A few sessions: the cap is hit often.
MAX_SIZE = 4 * (SESSION_OVERHEAD + RECORD_OVERHEAD + 92 + 60)
LOW_WATER = 0.75
TTL = 10.0


class MemoryStoreMachine(RuleBasedStateMachine):
    """MemoryStore against a dict of what was last set, with a fake clock and a small cap,
    through the public API only, calling ``check()`` after every step.

    The model holds, per id, the data last set and its expiry. Every rule but ``advance``
    ends with ``stats()``, which purges the expired: so between rules the store holds
    exactly the model's live sessions, less those evicted, and only a rule that raised
    the ``evicted`` count may have lost a live one (never the session it wrote).
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore(MAX_SIZE, None, ttl=TTL, low_water=LOW_WATER, clock=self.clock)
        self.model: dict[str, tuple[dict[str, Any], float]] = {}
        self.evicted = 0

    def teardown(self) -> None:
        self.store.close()

    # -- helpers --

    def _live(self, sid: str) -> bool:
        return sid in self.model and self.model[sid][1] > self.clock.now

    def _settle(self, keep: str | None = None) -> None:
        """Purge (through stats), and drop from the model what the store evicted."""
        evicted = self.store.stats().evicted
        for sid in list(self.model):
            if not self._live(sid):
                del self.model[sid]  # purged by stats(), if not before
            elif sid not in self.store:
                assert evicted > self.evicted, f"live session {sid!r} vanished, none evicted"
                assert sid != keep, "the session just written was evicted"
                del self.model[sid]
        self.evicted = evicted

    # -- rules --

    @rule(
        sid=st.sampled_from(SIDS),
        text=st.one_of(st.text(max_size=40), st.integers(0, 900).map(lambda n: "x" * n)),
        n=st.integers(),
        ttl=st.sampled_from([None, 1.0, 5.0, 30.0]),
        only_if_live=st.booleans(),
    )
    def write(self, sid: str, text: str, n: int, ttl: float | None, only_if_live: bool) -> None:
        data = {"text": text, "n": n % 1000}
        live = self._live(sid)
        # The most a write can add: a new session, and a new expiry record for a shorter life.
        grown = session_cost(sid, MsgpackSerializer().dumps(data)) + 2 * RECORD_OVERHEAD
        may_prune = self.store.size + grown > MAX_SIZE
        evicted = self.store.stats().evicted
        if only_if_live:
            assert self.store.replace(sid, data, ttl) is live
        else:
            self.store.set(sid, data, ttl)
        assert self.store.size <= MAX_SIZE
        if live or not only_if_live:
            self.model[sid] = (data, self.clock.now + (TTL if ttl is None else ttl))
            assert sid in self.store
        assert may_prune or self.store.stats().evicted == evicted
        self._settle(keep=sid)

    @rule(
        old=st.sampled_from(SIDS),
        new=st.sampled_from(SIDS),
        text=st.one_of(st.text(max_size=40), st.integers(0, 900).map(lambda n: "x" * n)),
        ttl=st.sampled_from([None, 1.0, 30.0]),
    )
    def rename(self, old: str, new: str, text: str, ttl: float | None) -> None:
        if old == new:
            with pytest.raises(InvalidOption):
                self.store.rename(old, new, {"text": text})
            self._settle()
            return
        data = {"text": text, "n": 0}
        live = self._live(old)
        assert self.store.rename(old, new, data, ttl) is live
        assert self.store.size <= MAX_SIZE
        assert old not in self.store
        if live:
            del self.model[old]
            self.model[new] = (data, self.clock.now + (TTL if ttl is None else ttl))
            assert new in self.store
        self._settle(keep=new if live else None)

    @rule(sid=st.sampled_from(SIDS))
    def get(self, sid: str) -> None:
        got = self.store.get(sid)
        if self._live(sid):
            assert got == self.model[sid][0]
        else:
            assert got is None  # never an expired session
        self._settle()

    @rule(sid=st.sampled_from(SIDS), ttl=st.sampled_from([None, 1.0, 30.0]))
    def touch(self, sid: str, ttl: float | None) -> None:
        live = self._live(sid)
        assert self.store.touch(sid, ttl) is live
        assert self.store.size <= MAX_SIZE
        if live:
            data = self.model[sid][0]
            self.model[sid] = (data, self.clock.now + (TTL if ttl is None else ttl))
        self._settle(keep=sid if live else None)

    @rule(sid=st.sampled_from(SIDS))
    def destroy(self, sid: str) -> None:
        assert self.store.destroy(sid) is self._live(sid)
        self.model.pop(sid, None)
        assert sid not in self.store
        self._settle()

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 9.999, 10.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(batch=st.sampled_from([1, 2, 1024]))
    def purge(self, batch: int) -> None:
        expired = [sid for sid in self.model if not self._live(sid)]
        self.store.batch_size = batch
        assert self.store.purge() == len(expired)
        self._settle()

    @rule()
    def prune(self) -> None:
        self.store.prune()
        assert self.store.size <= int(MAX_SIZE * LOW_WATER)
        self._settle()

    @precondition(lambda self: len(self.model) > 2)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()
        assert self.store.size == 0
        self._settle()

    @rule()
    def length(self) -> None:
        assert len(self.store) == sum(self._live(sid) for sid in self.model)
        self._settle()

    @rule()
    def everything(self) -> None:
        live = {sid: data for sid, (data, _) in self.model.items() if self._live(sid)}
        assert self.store.all() == live
        self._settle()

    # -- invariants, checked without touching recency, stats or expiry --

    @invariant()
    def accounting_is_exact(self) -> None:
        self.store.check()

    @invariant()
    def store_holds_what_the_model_says(self) -> None:
        for sid in SIDS:
            assert (sid in self.store) is self._live(sid)


MemoryStoreMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_memory_store_matches_its_model = MemoryStoreMachine.TestCase


# ---- 3. every cookie a client can send, through each integration --------------------------

SECRET = "property-secret"
OTHER_SECRET = "another-apps-secret"


# Raw cookie header values, as bytes on the wire. CR and LF cannot reach an app (they end
# the header line), so they are left out; everything else a client can put there is in.
def _one_line(raw: bytes) -> bytes:
    return raw.replace(b"\r", b"").replace(b"\n", b"")


_raw_bytes = st.binary(min_size=1, max_size=300).map(_one_line).filter(bool)
raw_cookies = st.one_of(
    _raw_bytes,
    st.text(min_size=1, max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(8 * 1024, 20 * 1024).map(lambda n: b"A" * n),  # huge
    st.tuples(st.integers(8 * 1024, 12 * 1024), _raw_bytes).map(
        lambda t: (t[1] * (t[0] // len(t[1]) + 1))[: t[0]]  # huge, of random bytes
    ),
    st.just(b""),
).map(lambda raw: ("raw", _one_line(raw)))
# A cookie the app's own key signs, or another app's key does, for ids of every standing.
crafted_cookies = st.tuples(
    st.sampled_from(["unknown", "expired", "other_key", "other_app", "not_an_id"]),
    st.text(max_size=50),
)
cookie_cases = st.one_of(raw_cookies, crafted_cookies)


def _hmac_cookie(sid: str, secret: str) -> str:
    """The signed cookie docs/security.md describes (the id, a dot, keyed BLAKE2b-256 of the id
    under HMAC-SHA256(secret, "lembro.session-id")), computed here independently of lembro."""
    key = hmac.digest(secret.encode(), b"lembro.session-id", "sha256")
    digest = hashlib.blake2b(sid.encode(), key=key, digest_size=32).digest()
    tag = base64.urlsafe_b64encode(digest).rstrip(b"=")
    return f"{sid}.{tag.decode()}"


def _hmac_unsign(value: str, secret: str) -> str:
    sid = value.partition(".")[0]
    if value != _hmac_cookie(sid, secret):
        raise ValueError(f"bad signature on {value!r}")
    return sid


class Integration:
    """One framework's app on a MemoryStore, driven through its real test client.

    ``/inc`` adds one to ``n`` and returns it; ``/read`` returns ``n`` and writes nothing.
    """

    cookie_name = "session"

    def __init__(self, store: MemoryStore, secret: str = SECRET) -> None:
        self.store = store
        self.secret = secret

    def sign(self, sid: str, secret: str | None = None) -> bytes:
        raise NotImplementedError

    def unsign(self, value: str) -> str:
        raise NotImplementedError

    def request(self, route: str, cookie: bytes | None) -> tuple[int, str, list[str]]:
        """GET ``route`` with the raw ``cookie`` value; (status, body, Set-Cookie values)."""
        raise NotImplementedError

    @contextmanager
    def running(self) -> Iterator[Integration]:
        yield self


class FlaskIntegration(Integration):
    def __init__(self, store: MemoryStore, secret: str = SECRET) -> None:
        super().__init__(store, secret)
        app = make_flask_app(store, SECRET_KEY=secret)  # /inc counts, /read only reads
        self.client = app.test_client(use_cookies=False)

    def sign(self, sid: str, secret: str | None = None) -> bytes:
        return _hmac_cookie(sid, secret or self.secret).encode()

    def unsign(self, value: str) -> str:
        return _hmac_unsign(value, self.secret)

    def request(self, route: str, cookie: bytes | None) -> tuple[int, str, list[str]]:
        # WSGI carries header bytes as latin-1 text.
        headers = {} if cookie is None else {"Cookie": f"session={cookie.decode('latin-1')}"}
        response = self.client.get(route, headers=headers)
        return response.status_code, response.get_data(as_text=True), _set_cookies(response)


class StarletteIntegration(Integration):
    def __init__(self, store: MemoryStore, secret: str = SECRET) -> None:
        super().__init__(store, secret)

        def inc(request: Request) -> PlainTextResponse:
            request.session["n"] = request.session.get("n", 0) + 1
            return PlainTextResponse(str(request.session["n"]))

        def read(request: Request) -> PlainTextResponse:
            return PlainTextResponse(str(request.session.get("n")))

        self.app = Starlette(
            routes=[Route("/inc", inc), Route("/read", read)],
            middleware=[
                Middleware(lembro.starlette.SessionMiddleware, secret_key=secret, store=store)
            ],
        )

    @contextmanager
    def running(self) -> Iterator[Integration]:
        with TestClient(self.app, base_url="http://testserver") as client:
            self.client = client
            yield self

    def sign(self, sid: str, secret: str | None = None) -> bytes:
        return _hmac_cookie(sid, secret or self.secret).encode()

    def unsign(self, value: str) -> str:
        return _hmac_unsign(value, self.secret)

    def request(self, route: str, cookie: bytes | None) -> tuple[int, str, list[str]]:
        headers = {} if cookie is None else {"cookie": b"session=" + cookie}
        response = self.client.get(route, headers=headers)
        return response.status_code, response.text, response.headers.get_list("set-cookie")


class QuartIntegration(Integration):
    def __init__(self, store: MemoryStore, secret: str = SECRET) -> None:
        super().__init__(store, secret)
        app = make_quart_app(store, SECRET_KEY=secret)  # /inc counts, /read only reads
        self.client = app.test_client(use_cookies=False)

    @contextmanager
    def running(self) -> Iterator[Integration]:
        self.loop = asyncio.new_event_loop()
        try:
            yield self
        finally:
            self.loop.close()

    def sign(self, sid: str, secret: str | None = None) -> bytes:
        return _hmac_cookie(sid, secret or self.secret).encode()

    def unsign(self, value: str) -> str:
        return _hmac_unsign(value, self.secret)

    def request(self, route: str, cookie: bytes | None) -> tuple[int, str, list[str]]:
        async def get() -> tuple[int, str, list[str]]:
            headers = {} if cookie is None else {"Cookie": f"session={cookie.decode('latin-1')}"}
            response = await self.client.get(route, headers=headers)
            body = await response.get_data(as_text=True)
            return response.status_code, body, _set_cookies(response)

        return self.loop.run_until_complete(get())


def django_inc(request: HttpRequest) -> HttpResponse:
    n = request.session.get("n", 0) + 1
    request.session["n"] = n
    return HttpResponse(str(n))


def django_read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n")))


urlpatterns = [path("inc", django_inc), path("read", django_read)]


class DjangoIntegration(Integration):
    """Django's session cookie carries the bare key, unsigned: "signed" here means a key
    in the shape lembro issues, and "another app's" one held by another app's store."""

    cookie_name = "sessionid"

    @contextmanager
    def running(self) -> Iterator[Integration]:
        with override_settings(LEMBRO={"STORE": self.store}, ROOT_URLCONF=__name__):
            self.client = DjangoClient()
            yield self

    def sign(self, sid: str, secret: str | None = None) -> bytes:
        return sid.encode()

    def unsign(self, value: str) -> str:
        return value

    def request(self, route: str, cookie: bytes | None) -> tuple[int, str, list[str]]:
        extra = {} if cookie is None else {"HTTP_COOKIE": f"sessionid={cookie.decode('latin-1')}"}
        self.client.cookies.clear()
        response = self.client.get("/" + route.lstrip("/"), **extra)
        return (
            response.status_code,
            response.content.decode(),
            [morsel.OutputString() for morsel in response.cookies.values()],
        )


INTEGRATIONS: dict[str, type[Integration]] = {
    "flask": FlaskIntegration,
    "starlette": StarletteIntegration,
    "django": DjangoIntegration,
    "quart": QuartIntegration,
}


def _set_cookies(response: Any) -> list[str]:
    return list(response.headers.getlist("Set-Cookie"))


def cookie_id(integration: Integration, set_cookies: list[str]) -> str | None:
    """The session id a response's Set-Cookie gives, checked against its signature."""
    name = integration.cookie_name
    for header in set_cookies:
        match = re.match(rf'{name}="?([^;"]*)"?;', header)
        if match is not None and match[1]:
            return integration.unsign(match[1])
    return None


def plant(
    integration: Integration, clock: FakeClock, case: tuple[str, Any]
) -> tuple[bytes, str | None]:
    """The raw cookie value for ``case``, and the session id it names if it names one."""
    kind, arg = case
    store = integration.store
    if kind == "raw":
        return arg, None
    sid = new_session_id()
    if kind == "unknown":
        return integration.sign(sid), sid
    if kind == "expired":
        store.set(sid, {"n": 41}, ttl=5)
        clock.advance(5)
        return integration.sign(sid), sid
    if kind == "other_key":  # an id this store holds, signed with someone else's key
        store.set(sid, {"n": 41})
        if isinstance(integration, DjangoIntegration):
            store.destroy(sid)  # no key in Django's cookie: an id another store holds
        return integration.sign(sid, OTHER_SECRET), sid
    if kind == "other_app":  # a live session of another app, its cookie as that app set it
        with MemoryStore("1M", None) as other_store:
            other = type(integration)(other_store, OTHER_SECRET)
            with other.running():
                status, body, set_cookies = other.request("/inc", None)
            assert (status, body) == (200, "1")
            value = re.match(rf'{other.cookie_name}="?([^;"]*)', set_cookies[0])
            assert value is not None
            return value[1].encode(), other.unsign(value[1])
    assert kind == "not_an_id"  # well signed, but not an id lembro issues
    arg = arg.replace("\r", "").replace("\n", "")
    if is_session_id(arg):
        arg += "!"
    store.set(arg or "x", {"n": 41})
    return integration.sign(arg or "x"), arg or "x"


@pytest.mark.parametrize("framework", list(INTEGRATIONS))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cookie_cases)
def test_any_cookie_gets_a_fresh_empty_session(framework: str, case: tuple[str, Any]) -> None:
    clock = FakeClock()
    with MemoryStore("1M", None, clock=clock) as store:
        integration = INTEGRATIONS[framework](store)
        with integration.running():
            cookie, planted = plant(integration, clock, case)
            held = store.all()

            status, body, set_cookies = integration.request("/read", cookie)
            assert (status, body) == (200, "None")
            assert cookie_id(integration, set_cookies) is None  # a read sets no cookie
            assert set(store.all()) <= set(held)  # stores nothing

            status, body, set_cookies = integration.request("/inc", cookie)
            assert (status, body) == (200, "1")  # a fresh session: the counter restarts
            sid = cookie_id(integration, set_cookies)
            assert sid is not None
            assert is_session_id(sid)
            assert sid != planted  # never adopted
            assert store.get(sid) == {"n": 1}
            now = store.all()
            for old, data in held.items():  # what was there is untouched
                if old in now:
                    assert now[old] == data
            assert_accounting_exact(store)
