"""One store contract, run against every store so their semantics cannot drift apart.

After Django's ``SessionTestsMixin`` (tests/sessions_tests/tests.py): one behaviour
suite, bound to each backend by a parametrized fixture. MemoryStore runs on a fake clock;
RedisStore and AsyncRedisStore run against the session's real redis-server, with short
real lifetimes.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import pytest

from lembro import (
    AsyncRedisStore,
    InvalidOption,
    LembroError,
    MemoryStore,
    RedisStore,
    SerializationError,
    SessionTooLarge,
    Stats,
)
from lembro.ids import new_session_id

from ..conftest import FakeClock
from .lifetimes import ShortLives

T = TypeVar("T")

SHORT = 0.2  # seconds: a lifetime tests wait out
LONG = 60.0  # seconds: a lifetime no test outlives


class SyncFace:
    """Drives an ``AsyncRedisStore`` from sync tests, on one event loop of its own."""

    def __init__(self, store: AsyncRedisStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.prefix = store.prefix
        self._loop = loop

    @property
    def ttl(self) -> float:
        return self.store.ttl

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def get(self, sid: str) -> dict[str, Any] | None:
        return self._run(self.store.get(sid))

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self._run(self.store.set(sid, data, ttl))

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        return self._run(self.store.replace(sid, data, ttl))

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        return self._run(self.store.touch(sid, ttl))

    def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        return self._run(self.store.renew(sid, ttl))

    def time_left(self, sid: str) -> float | None:
        return self._run(self.store.time_left(sid))

    def rename(self, old: str, new: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        return self._run(self.store.rename(old, new, data, ttl))

    def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        return self._run(self.store.update(sid, changes, deleted, ttl))

    def sessions_of(self, owner: str | int) -> list[str]:
        return self._run(self.store.sessions_of(owner))

    def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        return self._run(self.store.destroy_sessions_of(owner, keep))

    def destroy(self, sid: str) -> bool:
        return self._run(self.store.destroy(sid))

    def all(self) -> dict[str, dict[str, Any]]:
        return self._run(self.store.all())

    def clear(self) -> None:
        self._run(self.store.clear())

    def purge(self) -> int:
        return self._run(self.store.purge())

    def stats(self) -> Stats:
        return self._run(self.store.stats())

    def close(self) -> None:
        self._run(self.store.close())

    def __len__(self) -> int:
        return self._run(self.store.length())

    def __contains__(self, sid: Any) -> bool:
        return self._run(self.store.contains(sid))


class Backend(ShortLives):
    """Makes stores of one kind for a test, lets time pass for them, and cleans up."""

    def __init__(self, kind: str, clock: FakeClock, url: str | None) -> None:
        self.kind = kind
        self.clock = clock
        self.url = url
        self.stores: list[Any] = []
        self.clients: list[Any] = []
        self.loop = asyncio.new_event_loop() if kind.startswith("async-") else None
        self.short = SHORT  # the lifetime of the sessions a test waits out
        self._first_wait: float | None = None

    def new(self, **options: Any) -> Any:
        """A fresh, empty store; each Redis one under a prefix of its own."""
        if self.kind == "memory":
            store: Any = MemoryStore("1M", None, clock=self.clock, **options)
            self.stores.append(store)
            return store
        assert self.url is not None
        options["prefix"] = f"lembro-test:{uuid.uuid4().hex[:12]}:"
        if self.kind.endswith("valkey"):  # valkey-py's own client, given to the store
            import valkey
            import valkey.asyncio

            module: Any = valkey.asyncio if self.loop is not None else valkey
            options["client"] = module.Valkey.from_url(self.url)
            self.clients.append(options["client"])
        if self.loop is None:
            store = RedisStore(self.url, **options)
        else:
            store = SyncFace(AsyncRedisStore(self.url, **options), self.loop)
        self.stores.append(store)
        return store

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass: on the fake clock, or really (kept under a second)."""
        self._note_first_wait()
        if self.kind == "memory":
            self.clock.advance(seconds)
        else:
            assert seconds <= self.short
            time.sleep(seconds)

    def wait_expired(self, store: Any, *sids: str) -> None:
        """Let ``self.short`` seconds pass, and for Redis poll until it has expired ``sids``."""
        self.wait(self.short)
        deadline = time.monotonic() + 1.0
        while any(sid in store for sid in sids) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        for store in self.stores:
            if self.kind != "memory":
                store.clear()
            store.close()
        for client in self.clients:
            if self.loop is not None:
                self.loop.run_until_complete(client.aclose())
            else:
                client.close()
        if self.loop is not None:
            self.loop.close()


# Each Redis kind, and the fixture that starts what it runs against.
SERVERS = {
    "redis": "redis_server",
    "async-redis": "redis_server",
    "cluster": "redis_cluster",
    "async-cluster": "redis_cluster",
    "sentinel": "redis_sentinel",
    "async-sentinel": "redis_sentinel",
    "valkey": "valkey_server",
    "async-valkey": "valkey_server",
    "valkey-url": "valkey_server",  # a Valkey server through the store's own redis-py client
    "tls": "tls_server",
    "async-tls": "tls_server",
    "tls-cluster": "tls_cluster",
}


@pytest.fixture(params=["memory", *SERVERS])
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Backend]:
    url = None
    if request.param != "memory":
        server = request.getfixturevalue(SERVERS[request.param])
        url = server[1] if isinstance(server, tuple) else server.url
    b = Backend(request.param, clock, url)
    yield b
    b.close()


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.new()


def sid() -> str:
    return new_session_id()


def test_get_returns_a_fresh_copy(store: Any) -> None:
    s = sid()
    data = {"user": "ana", "cart": [1, 2], "prefs": {"lang": "pt"}}
    store.set(s, data)
    data["cart"].append(3)  # changing what was stored does not change the store
    first = store.get(s)
    assert first == {"user": "ana", "cart": [1, 2], "prefs": {"lang": "pt"}}
    first["prefs"]["lang"] = "en"
    first["cart"].clear()
    second = store.get(s)
    assert second == {"user": "ana", "cart": [1, 2], "prefs": {"lang": "pt"}}
    assert second is not first


def test_get_of_an_unknown_session_is_none(store: Any) -> None:
    assert store.get(sid()) is None
    assert store.get("") is None


def test_set_replaces_the_whole_session(store: Any) -> None:
    s = sid()
    store.set(s, {"a": 1, "b": 2})
    store.set(s, {"c": 3})
    assert store.get(s) == {"c": 3}
    assert len(store) == 1


@pytest.mark.lifetimes
def test_session_expires_after_its_ttl(backend: Backend) -> None:
    def scenario() -> None:
        store, short, long = backend.new(), sid(), sid()
        store.set(short, {"n": 1}, ttl=backend.short)
        store.set(long, {"n": 2}, ttl=LONG)
        assert store.get(short) == {"n": 1}
        backend.wait_expired(store, short)
        assert store.get(short) is None
        assert short not in store
        assert store.touch(short) is False
        assert store.get(long) == {"n": 2}
        assert store.all() == {long: {"n": 2}}
        assert len(store) == 1

    backend.in_time(scenario)


@pytest.mark.lifetimes
def test_store_ttl_is_the_default_lifetime(backend: Backend) -> None:
    store = backend.new(ttl=SHORT)
    s = sid()
    store.set(s, {"n": 1})
    assert store.ttl == SHORT
    backend.wait_expired(store, s)
    assert store.get(s) is None


@pytest.mark.lifetimes
def test_touch_extends_the_lifetime(backend: Backend) -> None:
    def scenario() -> None:
        store, touched, control = backend.new(), sid(), sid()
        store.set(touched, {"kept": True}, ttl=backend.short)
        store.set(control, {"kept": False}, ttl=backend.short)
        assert store.touch(touched, ttl=LONG) is True
        backend.wait_expired(store, control)
        assert store.get(control) is None
        assert store.get(touched) == {"kept": True}  # touch keeps the data as it was

    backend.in_time(scenario)


def test_touch_of_an_absent_session_is_false_and_creates_nothing(store: Any) -> None:
    s = sid()
    assert store.touch(s) is False
    assert store.touch(s, ttl=LONG) is False
    assert s not in store
    assert store.get(s) is None
    assert len(store) == 0


def renewing(store: Any) -> Any:
    """``store``, when it has the optional ``renew`` and ``time_left`` (see
    lembro.protocol); the test is skipped on a store without them."""
    if not (hasattr(store, "renew") and hasattr(store, "time_left")):
        pytest.skip(f"{type(store).__name__} has no renew() and time_left() yet")
    return store


@pytest.mark.lifetimes
def test_renew_returns_the_session_and_gives_it_a_new_lifetime(
    backend: Backend, store: Any
) -> None:
    renewed, control = sid(), sid()
    renewing(store).set(renewed, {"kept": [1]}, ttl=SHORT)
    store.set(control, {"kept": False}, ttl=SHORT)
    assert store.renew(renewed, ttl=LONG) == {"kept": [1]}
    backend.wait_expired(store, control)
    assert store.get(control) is None
    assert store.get(renewed) == {"kept": [1]}
    assert LONG - 5 < store.time_left(renewed) <= LONG
    store.set(control, {"v": 1})
    assert store.renew(control) == {"v": 1}  # the store's ttl by default
    assert store.ttl - 5 < store.time_left(control) <= store.ttl


@pytest.mark.lifetimes
def test_renew_and_time_left_of_an_absent_session_are_none_and_create_nothing(
    backend: Backend, store: Any
) -> None:
    expired = sid()
    renewing(store).set(expired, {"v": 1}, ttl=SHORT)
    backend.wait_expired(store, expired)
    for s in (sid(), expired, "", "a:b"):
        assert store.renew(s, ttl=LONG) is None
        assert store.time_left(s) is None
    assert len(store) == 0


def test_renew_counts_as_a_get_and_time_left_as_neither(store: Any) -> None:
    s = sid()
    renewing(store).set(s, {"v": 1})
    assert store.renew(s) == {"v": 1}
    assert store.renew(sid()) is None
    assert store.time_left(s) is not None
    stats = store.stats()
    assert (stats.hits, stats.misses) == (1, 1)


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, "60", True])
def test_renew_with_a_bad_ttl_raises_and_changes_nothing(store: Any, ttl: Any) -> None:
    s = sid()
    renewing(store).set(s, {"v": 1}, ttl=LONG)
    with pytest.raises(InvalidOption):
        store.renew(s, ttl=ttl)
    assert LONG - 5 < store.time_left(s) <= LONG
    assert store.get(s) == {"v": 1}


@pytest.mark.lifetimes
def test_replace_writes_only_over_a_live_session(backend: Backend, store: Any) -> None:
    live, gone, expired = sid(), sid(), sid()
    store.set(live, {"v": 1})
    assert store.replace(live, {"v": 2}) is True
    assert store.get(live) == {"v": 2}
    assert store.replace(gone, {"v": 1}) is False  # never there: nothing written
    store.set(expired, {"v": 1}, ttl=SHORT)
    backend.wait_expired(store, expired)
    assert store.replace(expired, {"v": 2}) is False  # a logout or expiry is not undone
    assert store.get(gone) is None
    assert store.get(expired) is None
    assert len(store) == 1


@pytest.mark.lifetimes
def test_replace_sets_a_new_lifetime(backend: Backend) -> None:
    def scenario() -> None:
        store, s, control = backend.new(), sid(), sid()
        store.set(s, {"v": 1}, ttl=backend.short)
        assert store.replace(s, {"v": 2}, ttl=LONG) is True
        store.set(control, {"v": 0}, ttl=backend.short)
        backend.wait_expired(store, control)
        assert store.get(s) == {"v": 2}

    backend.in_time(scenario)


def test_destroy_removes_and_is_idempotent(store: Any) -> None:
    gone, kept = sid(), sid()
    store.set(gone, {"a": 1})
    store.set(kept, {"b": 2})
    store.destroy(gone)
    store.destroy(gone)
    store.destroy(sid())  # never existed
    assert store.get(gone) is None
    assert gone not in store
    assert store.all() == {kept: {"b": 2}}


@pytest.mark.lifetimes
def test_all_len_and_contains_see_live_sessions_only(backend: Backend) -> None:
    def scenario() -> None:
        store = backend.new()
        live = {sid(): {"i": i} for i in range(5)}
        dead = [sid() for _ in range(3)]
        for s, data in live.items():
            store.set(s, data, ttl=LONG)
        for s in dead:
            store.set(s, {"dead": True}, ttl=backend.short)
        assert len(store) == 8
        backend.wait_expired(store, *dead)
        assert store.all() == live
        assert len(store) == 5
        assert all(s in store for s in live)
        assert not any(s in store for s in dead)
        assert 42 not in store

    backend.in_time(scenario)


def test_clear_removes_only_this_stores_sessions(backend: Backend) -> None:
    mine, theirs = backend.new(), backend.new()
    a, b = sid(), sid()
    mine.set(a, {"x": 1})
    theirs.set(b, {"y": 2})
    assert mine.get(a) == {"x": 1}
    mine.clear()
    assert mine.get(a) is None
    assert len(mine) == 0
    assert mine.all() == {}
    assert theirs.get(b) == {"y": 2}
    assert mine.stats().hits == 1  # counters survive clear


@pytest.mark.parametrize(
    "ttl", [0, -1, math.inf, math.nan, pytest.param(10**400, id="10**400"), True, "60", None]
)
def test_bad_ttl_raises_and_keeps_the_old_value(store: Any, ttl: Any) -> None:
    s = sid()
    store.set(s, {"v": "old"})
    if ttl is None:  # None means "the default": it is valid for set, so test touch only
        assert store.touch(s, ttl) is True
    else:
        with pytest.raises(InvalidOption):
            store.set(s, {"v": "new"}, ttl=ttl)
        with pytest.raises(InvalidOption):
            store.touch(s, ttl=ttl)
    assert store.get(s) == {"v": "old"}
    assert len(store) == 1


@pytest.mark.parametrize("bad", ["", None, 7, b"bytes"])
def test_bad_session_id_raises_and_stores_nothing(store: Any, bad: Any) -> None:
    with pytest.raises(InvalidOption) as info:
        store.set(bad, {"v": 1})
    assert isinstance(info.value, (LembroError, ValueError))
    assert len(store) == 0
    assert store.all() == {}


@pytest.mark.parametrize("data", [{"f": object()}, {"big": 2**70}, ["not", "a", "dict"], None])
def test_unserializable_data_raises_and_keeps_the_old_value(store: Any, data: Any) -> None:
    s = sid()
    store.set(s, {"v": "old"})
    with pytest.raises(SerializationError) as info:
        store.set(s, data)
    assert isinstance(info.value, (LembroError, TypeError))
    assert store.get(s) == {"v": "old"}


def test_stats_count_hits_and_misses(store: Any) -> None:
    a, b = sid(), sid()
    store.set(a, {"payload": "x" * 100})
    store.set(b, {"payload": "y"})
    assert store.get(a) is not None
    assert store.get(b) is not None
    assert store.get(sid()) is None
    assert a in store  # neither a hit nor a miss
    stats = store.stats()
    assert isinstance(stats, Stats)
    assert (stats.hits, stats.misses) == (2, 1)
    assert stats.sessions == 2
    assert stats.size > 100  # bytes: at least the larger payload


@pytest.mark.lifetimes
def test_purge_leaves_live_sessions(backend: Backend, store: Any) -> None:
    live, dead = sid(), sid()
    store.set(live, {"a": 1}, ttl=LONG)
    store.set(dead, {"b": 2}, ttl=SHORT)
    backend.wait_expired(store, dead)
    assert store.purge() >= 0
    assert store.all() == {live: {"a": 1}}
    assert store.stats().sessions == 1


# ---- rename: a regenerate as one operation ------------------------------------------------


def test_rename_moves_the_session_to_the_new_id(store: Any) -> None:
    old, new = sid(), sid()
    store.set(old, {"cart": [1]})
    assert store.rename(old, new, {"cart": [1], "user": "ana"}) is True
    assert store.get(old) is None
    assert old not in store
    assert store.get(new) == {"cart": [1], "user": "ana"}
    assert store.all() == {new: {"cart": [1], "user": "ana"}}


def test_rename_of_an_absent_session_is_false_and_writes_nothing(store: Any) -> None:
    old, new = sid(), sid()
    assert store.rename(old, new, {"user": "ana"}) is False
    assert new not in store
    assert len(store) == 0


def test_rename_after_a_logout_is_false_and_writes_nothing(store: Any) -> None:
    old, new = sid(), sid()
    store.set(old, {"cart": [1]})
    assert store.destroy(old) is True  # another request's logout won the race
    assert store.rename(old, new, {"user": "ana"}) is False
    assert new not in store
    assert store.all() == {}


@pytest.mark.lifetimes
def test_rename_of_an_expired_session_is_false(backend: Backend, store: Any) -> None:
    old, new = sid(), sid()
    store.set(old, {"cart": [1]}, ttl=SHORT)
    backend.wait_expired(store, old)
    assert store.rename(old, new, {"user": "ana"}) is False
    assert new not in store


@pytest.mark.lifetimes
def test_rename_gives_the_new_session_its_lifetime(backend: Backend, store: Any) -> None:
    old, new = sid(), sid()
    store.set(old, {"n": 1}, ttl=LONG)
    assert store.rename(old, new, {"n": 2}, ttl=SHORT) is True
    left = store.time_left(new)
    assert left is not None
    assert left < LONG / 2
    backend.wait_expired(store, new)
    assert store.get(new) is None


@pytest.mark.parametrize("data", [{"f": object()}, {"big": 2**70}, ["not", "a", "dict"], None])
def test_rename_with_unserializable_data_raises_and_keeps_the_old_session(
    store: Any, data: Any
) -> None:
    old, new = sid(), sid()
    store.set(old, {"v": "old"})
    with pytest.raises(SerializationError):
        store.rename(old, new, data)
    assert store.get(old) == {"v": "old"}
    assert new not in store


def test_rename_of_a_session_too_large_raises_and_keeps_the_old_session(
    backend: Backend,
) -> None:
    store = backend.new(max_session_bytes=1024)
    old, new = sid(), sid()
    store.set(old, {"v": "old"})
    with pytest.raises(SessionTooLarge):
        store.rename(old, new, {"v": "x" * 4096})
    assert store.get(old) == {"v": "old"}
    assert new not in store


@pytest.mark.parametrize("bad", ["", None, 7, "same"])
def test_rename_with_a_bad_id_raises_and_changes_nothing(store: Any, bad: Any) -> None:
    old = sid()
    store.set(old, {"v": "old"})
    with pytest.raises(InvalidOption):
        store.rename(old if bad == "same" else bad, old, {"v": "new"})
    with pytest.raises(InvalidOption):
        store.rename(old, bad if bad != "same" else old, {"v": "new"})
    assert store.all() == {old: {"v": "old"}}


def test_rename_with_a_bad_ttl_raises_and_changes_nothing(store: Any) -> None:
    old, new = sid(), sid()
    store.set(old, {"v": "old"})
    with pytest.raises(InvalidOption):
        store.rename(old, new, {"v": "new"}, ttl=0)
    assert store.all() == {old: {"v": "old"}}


def test_rename_moves_the_session_in_its_owners_index(backend: Backend) -> None:
    store = backend.new(owner_key="user")
    old, other, new = sid(), sid(), sid()
    store.set(old, {"user": "ana"})
    store.set(other, {"user": "ana"})
    assert store.rename(old, new, {"user": "ana", "fresh": True}) is True
    assert sorted(store.sessions_of("ana")) == sorted([new, other])
    assert store.destroy_sessions_of("ana") == 2
    assert store.all() == {}


def test_rename_to_another_owner_moves_the_session_between_owners(backend: Backend) -> None:
    store = backend.new(owner_key="user")
    anonymous, old, new, newer = sid(), sid(), sid(), sid()
    store.set(anonymous, {"cart": [1]})
    assert store.rename(anonymous, old, {"cart": [1], "user": "ana"}) is True  # a login
    assert store.sessions_of("ana") == [old]
    assert store.rename(old, new, {"user": "bob"}) is True  # a login as someone else
    assert store.sessions_of("ana") == []
    assert store.sessions_of("bob") == [new]
    assert store.rename(new, newer, {"cart": []}) is True  # a logout that keeps the session
    assert store.sessions_of("bob") == []
    assert store.destroy_sessions_of("bob") == 0
    assert store.all() == {newer: {"cart": []}}
