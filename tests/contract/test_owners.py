"""The owner index ("sessions per user", issue 19), one suite over every store that has it.

Bound to each store by the parametrized ``binding`` fixture, as test_contract.py binds
its backends: MemoryStore, and RedisStore and AsyncRedisStore on one redis-server, on a
3-primary Redis Cluster and on Valkey. A store joins the suite by one entry in ``KINDS``.
Redis lifetimes are short and real; the memory store runs on the fake clock.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from lembro import (
    AsyncRedisStore,
    InvalidOption,
    LembroError,
    MemoryStore,
    RedisStore,
    SerializationError,
    StoreUnavailable,
)
from lembro.ids import new_session_id

from ..conftest import FakeClock, start_redis_server
from ..redis_server import RedisServer
from .lifetimes import ShortLives

SHORT = 0.2  # seconds: a lifetime tests wait out
LONG = 60.0  # seconds: a lifetime no test outlives
OWNER_KEY = "user"

# Each kind of store, and the fixture that starts the server it runs against (None: none).
KINDS: dict[str, str | None] = {
    "memory": None,
    "redis": "redis_server",
    "async-redis": "redis_server",
    "cluster": "redis_cluster",
    "async-cluster": "redis_cluster",
    "valkey": "valkey_server",
    "async-valkey": "valkey_server",
}


class AsyncFace:
    """Drives an ``AsyncRedisStore`` from sync tests, on an event loop of its own."""

    def __init__(self, store: AsyncRedisStore) -> None:
        self.store = store
        self.prefix = store.prefix
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.store, name)
        if not inspect.iscoroutinefunction(found):
            return found
        return lambda *args, **kwargs: self.loop.run_until_complete(found(*args, **kwargs))

    def __len__(self) -> int:
        return int(self.loop.run_until_complete(self.store.length()))

    def __contains__(self, sid: object) -> bool:
        return bool(self.loop.run_until_complete(self.store.contains(sid)))  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


class Binding(ShortLives):
    """Makes stores of one kind, lets time pass for them, and cleans up after the test."""

    def __init__(self, kind: str, clock: FakeClock, url: str | None) -> None:
        self.kind = kind
        self.clock = clock
        self.url = url
        self.faces: list[Any] = []
        self._lock = threading.Lock()
        self.short = SHORT  # the lifetime of the sessions a test waits out
        self._first_wait: float | None = None

    def new(self, prefix: str | None = None, **options: Any) -> Any:
        """A fresh store (Redis: under a prefix of its own, or ``prefix``), usable from
        the calling thread."""
        if self.kind == "memory":
            face: Any = MemoryStore("1M", None, clock=self.clock, **options)
        else:
            assert self.url is not None
            options["prefix"] = prefix or f"lembro-test:{uuid.uuid4().hex[:12]}:"
            if self.kind.startswith("async-"):
                face = AsyncFace(AsyncRedisStore(self.url, **options))
            else:
                face = RedisStore(self.url, **options)
        with self._lock:
            self.faces.append(face)
        return face

    def twin(self, store: Any) -> Any:
        """Another store over the same sessions, as another process (or, for the memory
        store, another thread) has; it has seen none of them."""
        if self.kind == "memory":
            return store
        return self.new(prefix=store.prefix, owner_key=store.owner_key)

    def tick(self) -> None:
        """Let a little time pass between two uses of a session."""
        if self.kind == "memory":
            self.clock.advance(SHORT / 20)  # well within a short lifetime, as on Redis
        else:
            time.sleep(0.002)

    def wait_expired(self, store: Any, *sids: str) -> None:
        """Let ``self.short`` seconds pass, and for Redis poll until it has expired ``sids``."""
        self._note_first_wait()
        if self.kind == "memory":
            self.clock.advance(self.short)
            return
        time.sleep(self.short)
        deadline = time.monotonic() + 2.0
        while any(sid in store for sid in sids) and time.monotonic() < deadline:
            time.sleep(0.01)

    def raw_keys(self, store: Any) -> list[bytes] | None:
        """Every key under a Redis store's prefix, owner sets included (None: not Redis)."""
        if self.kind == "memory":
            return None
        assert self.url is not None
        if "cluster" in self.kind:
            client: Any = redis.RedisCluster.from_url(self.url.replace("redis+cluster", "redis"))
        else:
            client = redis.Redis.from_url(self.url)
        try:
            return sorted(client.scan_iter(match=store.prefix + "*"))
        finally:
            client.close()

    def close(self) -> None:
        for face in self.faces:
            if self.kind == "memory":
                face.check()  # the owner index and the size, recounted from scratch
            else:
                face.clear()
            face.close()


@pytest.fixture(params=list(KINDS))
def binding(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Binding]:
    fixture = KINDS[request.param]
    url = None
    if fixture is not None:
        server = request.getfixturevalue(fixture)
        url = server[1] if isinstance(server, tuple) else server.url
    b = Binding(request.param, clock, url)
    yield b
    b.close()


@pytest.fixture
def store(binding: Binding) -> Any:
    return binding.new(owner_key=OWNER_KEY)


def sid() -> str:
    return new_session_id()


def test_sessions_of_lists_most_recently_used_first(binding: Binding, store: Any) -> None:
    a, b, c, other = sid(), sid(), sid(), sid()
    for s in (a, b, c):
        store.set(s, {OWNER_KEY: "ana"})
        binding.tick()
    store.set(other, {OWNER_KEY: "bob"})
    assert store.sessions_of("ana") == [c, b, a]
    store.get(a)
    binding.tick()
    assert store.sessions_of("ana") == [a, c, b]
    assert store.touch(b) is True
    binding.tick()
    assert store.sessions_of("ana") == [b, a, c]
    assert store.replace(c, {OWNER_KEY: "ana", "cart": [1]}) is True
    assert store.sessions_of("ana") == [c, b, a]
    assert store.sessions_of("bob") == [other]
    assert store.sessions_of("nobody") == []


def test_an_int_owner_and_its_decimal_str_are_one_owner(store: Any) -> None:
    by_int, by_str = sid(), sid()
    store.set(by_int, {OWNER_KEY: 42})
    store.set(by_str, {OWNER_KEY: "42"})
    assert sorted(store.sessions_of(42)) == sorted([by_int, by_str])
    assert sorted(store.sessions_of("42")) == sorted([by_int, by_str])
    assert store.destroy_sessions_of(42) == 2
    assert store.get(by_int) is None
    assert store.get(by_str) is None


@pytest.mark.parametrize("owner", [True, False, 4.2, b"42", ["ana"], {"id": 1}])
def test_an_owner_that_is_not_a_str_or_an_int_is_refused_at_the_write(
    store: Any, owner: Any
) -> None:
    s = sid()
    store.set(s, {OWNER_KEY: "ana"})
    with pytest.raises(SerializationError) as info:
        store.set(s, {OWNER_KEY: owner})
    assert isinstance(info.value, (LembroError, TypeError))
    with pytest.raises(SerializationError):
        store.set(sid(), {OWNER_KEY: owner})
    assert store.get(s) == {OWNER_KEY: "ana"}  # nothing changed
    assert store.sessions_of("ana") == [s]
    assert store.sessions_of(str(owner)) == []  # True is not the user "True"
    assert len(store) == 1


@pytest.mark.parametrize("owner", [True, None, 4.2, b"ana"])
def test_a_bad_owner_argument_is_invalid(store: Any, owner: Any) -> None:
    with pytest.raises(InvalidOption):
        store.sessions_of(owner)
    with pytest.raises(InvalidOption):
        store.destroy_sessions_of(owner)


@pytest.mark.parametrize("keep", [5, b"sid", ["sid"]])
def test_a_bad_keep_is_invalid_and_ends_nothing(store: Any, keep: Any) -> None:
    s = sid()
    store.set(s, {OWNER_KEY: "ana"})
    with pytest.raises(InvalidOption):
        store.destroy_sessions_of("ana", keep=keep)
    assert store.get(s) == {OWNER_KEY: "ana"}


def test_an_owner_with_separators_and_glob_characters_is_its_own(store: Any) -> None:
    odd, plain = sid(), sid()
    store.set(odd, {OWNER_KEY: "ana:*{x}%3A é"})
    store.set(plain, {OWNER_KEY: "ana"})
    assert store.sessions_of("ana:*{x}%3A é") == [odd]
    assert store.sessions_of("ana:*{x}: é") == []
    assert store.sessions_of("ana") == [plain]
    assert store.all() == {odd: {OWNER_KEY: "ana:*{x}%3A é"}, plain: {OWNER_KEY: "ana"}}


@pytest.mark.parametrize("write", ["set", "replace"])
def test_a_login_as_someone_else_moves_the_session(
    binding: Binding, store: Any, write: str
) -> None:
    s = sid()
    store.set(s, {OWNER_KEY: "ana"})
    assert getattr(store, write)(s, {OWNER_KEY: "bob"}) in (None, True)
    assert store.sessions_of("ana") == []
    assert store.sessions_of("bob") == [s]
    # The same, written by a store that had never seen the session (another process).
    binding.twin(store).set(s, {OWNER_KEY: "carla"})
    assert store.sessions_of("bob") == []
    assert store.sessions_of("carla") == [s]
    assert store.destroy_sessions_of("bob") == 0
    assert store.get(s) == {OWNER_KEY: "carla"}


@pytest.mark.parametrize("logged_out", [{}, {"cart": [1]}, {OWNER_KEY: None}])
def test_a_session_that_loses_its_owner_leaves_the_index(
    binding: Binding, store: Any, logged_out: dict[str, Any]
) -> None:
    mine, theirs = sid(), sid()
    store.set(mine, {OWNER_KEY: "ana"})
    store.set(theirs, {OWNER_KEY: "ana"})
    assert store.replace(mine, {**logged_out, "n": 1}) is True
    binding.twin(store).replace(theirs, {**logged_out, "n": 2})
    assert store.sessions_of("ana") == []
    assert store.destroy_sessions_of("ana") == 0
    assert store.get(mine) == {**logged_out, "n": 1}
    assert store.get(theirs) == {**logged_out, "n": 2}


def test_destroy_sessions_of_ends_all_but_the_kept_one(binding: Binding, store: Any) -> None:
    current, phone, laptop, bobs = sid(), sid(), sid(), sid()
    for s in (phone, laptop, current):
        store.set(s, {OWNER_KEY: "ana"})
        binding.tick()
    store.set(bobs, {OWNER_KEY: "bob"})
    assert store.destroy_sessions_of("ana", keep=current) == 2
    assert store.get(phone) is None
    assert store.get(laptop) is None
    assert store.get(current) == {OWNER_KEY: "ana"}
    assert store.sessions_of("ana") == [current]
    assert store.get(bobs) == {OWNER_KEY: "bob"}
    assert store.destroy_sessions_of("ana", keep=current) == 0
    assert store.destroy_sessions_of("ana") == 1
    assert store.sessions_of("ana") == []
    assert store.get(current) is None
    assert store.sessions_of("bob") == [bobs]


@pytest.mark.lifetimes
def test_destroy_sessions_of_counts_only_what_it_ended(binding: Binding, store: Any) -> None:
    live, expired, destroyed = sid(), sid(), sid()
    store.set(live, {OWNER_KEY: "ana"}, ttl=LONG)
    store.set(expired, {OWNER_KEY: "ana"}, ttl=SHORT)
    store.set(destroyed, {OWNER_KEY: "ana"}, ttl=LONG)
    binding.twin(store).destroy(destroyed)  # unseen by the index's upkeep: left to reads
    binding.wait_expired(store, expired)
    assert store.destroy_sessions_of("ana") == 1
    assert store.get(live) is None


@pytest.mark.lifetimes
def test_expired_sessions_leave_the_index(binding: Binding) -> None:
    def scenario() -> None:
        store, short, long = binding.new(owner_key=OWNER_KEY), sid(), sid()
        store.set(short, {OWNER_KEY: "ana"}, ttl=binding.short)
        store.set(long, {OWNER_KEY: "ana"}, ttl=LONG)
        assert sorted(store.sessions_of("ana")) == sorted([short, long])
        binding.wait_expired(store, short)
        assert store.sessions_of("ana") == [long]

    binding.in_time(scenario)


@pytest.mark.lifetimes
def test_a_session_kept_alive_by_touch_stays_in_the_index(binding: Binding) -> None:
    # The owner's set must outlive a member whose lifetime touch moved past the write's.
    def scenario() -> None:
        store = binding.new(owner_key=OWNER_KEY, ttl=binding.short)
        twin = binding.twin(store)  # built and connected first: a cluster client's start-up
        assert twin.get(sid()) is None  # can outlast the short lifetime
        s, seen_elsewhere = sid(), sid()
        store.set(s, {OWNER_KEY: "ana"})
        store.set(seen_elsewhere, {OWNER_KEY: "bob"})
        assert store.touch(s, ttl=LONG) is True
        assert twin.touch(seen_elsewhere, ttl=LONG) is True
        for _ in range(3):  # past the write's lifetime and the owner set's margin over it
            binding.wait_expired(store)
        assert store.sessions_of("ana") == [s]
        assert store.sessions_of("bob") == [seen_elsewhere]

    binding.in_time(scenario)


@pytest.mark.lifetimes
def test_a_session_kept_alive_by_renew_stays_in_the_index_as_most_recent(
    binding: Binding,
) -> None:
    # As touch: the owner's set must outlive a member whose lifetime renew moved.
    store = binding.new(owner_key=OWNER_KEY, ttl=SHORT)
    if not hasattr(store, "renew"):
        pytest.skip(f"{type(store).__name__} has no renew() yet")
    twin = binding.twin(store)
    assert twin.get(sid()) is None
    s, older, seen_elsewhere = sid(), sid(), sid()
    store.set(s, {OWNER_KEY: "ana"})
    binding.tick()
    store.set(older, {OWNER_KEY: "ana"}, ttl=LONG)
    binding.tick()
    store.set(seen_elsewhere, {OWNER_KEY: "bob"})
    assert store.renew(s, ttl=LONG) == {OWNER_KEY: "ana"}
    assert twin.renew(seen_elsewhere, ttl=LONG) == {OWNER_KEY: "bob"}
    for _ in range(3):  # past the write's lifetime and the owner set's margin over it
        binding.wait_expired(store)
    assert store.sessions_of("ana") == [s, older]
    assert store.sessions_of("bob") == [seen_elsewhere]


def test_destroy_removes_the_session_from_the_index(binding: Binding, store: Any) -> None:
    a, b, c = sid(), sid(), sid()
    for s in (a, b, c):
        store.set(s, {OWNER_KEY: "ana"})
        binding.tick()
    assert store.destroy(a) is True
    binding.twin(store).destroy(b)
    assert store.sessions_of("ana") == [c]
    assert store.destroy(a) is False


def test_a_store_without_owner_key_refuses_the_owner_methods(binding: Binding) -> None:
    plain = binding.new()
    plain.set(sid(), {OWNER_KEY: "ana"})
    for call in (lambda: plain.sessions_of("ana"), lambda: plain.destroy_sessions_of("ana")):
        with pytest.raises(InvalidOption, match="owner_key") as info:
            call()
        assert isinstance(info.value, (LembroError, ValueError))


@pytest.mark.parametrize("owner_key", ["", 5, b"user", True])
def test_a_bad_owner_key_option_is_refused(binding: Binding, owner_key: Any) -> None:
    with pytest.raises(InvalidOption):
        binding.new(owner_key=owner_key)


def test_stores_on_other_prefixes_do_not_share_owners(binding: Binding, store: Any) -> None:
    other = binding.new(owner_key=OWNER_KEY)
    mine, theirs = sid(), sid()
    store.set(mine, {OWNER_KEY: "ana"})
    other.set(theirs, {OWNER_KEY: "ana"})
    assert store.sessions_of("ana") == [mine]
    assert other.sessions_of("ana") == [theirs]
    assert store.destroy_sessions_of("ana") == 1
    assert other.get(theirs) == {OWNER_KEY: "ana"}


def test_owner_sets_are_not_sessions_and_clear_removes_them(binding: Binding, store: Any) -> None:
    sessions = {sid(): {OWNER_KEY: f"user{i % 2}"} for i in range(4)}
    for s, data in sessions.items():
        store.set(s, data)
    assert store.all() == sessions
    assert len(store) == 4
    assert store.stats().sessions == 4
    keys = binding.raw_keys(store)
    if keys is not None:
        assert len(keys) == 6  # four sessions and two owners' sets
    store.clear()
    assert store.sessions_of("user0") == []
    assert len(store) == 0
    assert binding.raw_keys(store) in ([], None)


def test_no_session_escapes_the_index_under_concurrent_writes(binding: Binding, store: Any) -> None:
    threads, per_thread = 8, 25
    written: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def write() -> None:
        mine = binding.twin(store) if binding.kind.startswith("async-") else store
        try:
            start.wait()
            for i in range(per_thread):
                s = sid()
                mine.set(s, {OWNER_KEY: "ana", "i": i})
                with lock:
                    written.append(s)
                mine.replace(s, {OWNER_KEY: "ana", "i": i + 1})
                mine.touch(s)
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    workers = [threading.Thread(target=write) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert sorted(store.sessions_of("ana")) == sorted(written)
    assert store.destroy_sessions_of("ana") == threads * per_thread
    assert not any(store.get(s) for s in written)
    assert store.sessions_of("ana") == []


# ---- outages (Redis only: a server of the test's own, stopped mid-test) ------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    server.close()


def test_logout_everywhere_during_an_outage_fails_in_empty_mode(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, owner_key=OWNER_KEY, on_unavailable="empty")
    s = sid()
    store.set(s, {OWNER_KEY: "ana"})
    with redis.Redis.from_url(own_server.url) as raw:
        raw.save()  # the session outlives the outage, as on a Redis with persistence
    own_server.kill()
    assert store.sessions_of("ana") == []  # a read: empty, as on_unavailable says
    with pytest.raises(StoreUnavailable):
        store.destroy_sessions_of("ana")
    own_server.start()
    assert store.get(s) == {OWNER_KEY: "ana"}  # not ended, and it said so
    assert store.destroy_sessions_of("ana") == 1
    store.close()


def test_async_logout_everywhere_during_an_outage_fails_in_empty_mode(
    own_server: RedisServer,
) -> None:
    async def main() -> None:
        store = AsyncRedisStore(own_server.url, owner_key=OWNER_KEY, on_unavailable="empty")
        await store.set(sid(), {OWNER_KEY: "ana"})
        own_server.kill()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.destroy_sessions_of("ana", keep=sid()), 30)
        await store.close()

    asyncio.run(main())
