"""A logout that lembro reports done never comes back through a Sentinel failover or a
lagging replica. Each test starts its own primary, replica and Sentinel (short
down-after and failover timeouts) and kills them whatever happens."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from lembro import AsyncRedisStore, InvalidOption, RedisStore, StoreUnavailable
from lembro.ids import new_session_id

from ..conftest import require_binaries
from ..topologies import SentinelSetup, start_sentinel
from ..unit.test_redis import finishes

pytestmark = pytest.mark.e2e

THREADS = 3
VICTIMS = 1000  # sessions logged out one by one during the traffic
OWNERS = 500  # users logged out everywhere during the traffic, two sessions each
# Logouts wait for one replica; on a busy machine a replica's answer can take a while.
DURABLE: dict[str, Any] = {
    "wait_replicas": 1,
    "wait_timeout": 1.0,
    "socket_timeout": 2.0,
    "connect_timeout": 1.0,
}


def eventually(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll ``check`` until true; fail after ``limit`` seconds (a hang guard, not a timing
    assertion)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except StoreUnavailable:
            pass
        time.sleep(0.02)
    pytest.fail(f"{what}: not within {limit}s")


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    """A primary, a replica and a Sentinel of this test's own, free to be failed over."""
    require_binaries("redis-server", "redis-sentinel")
    setup = start_sentinel(down_after=500, failover_timeout=3000)
    try:
        yield setup
    finally:
        setup.close()


class Heard(logging.Handler):
    """The moments (``time.time()``) the store logged that its primary moved."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.moments: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "the primary moved" in record.getMessage():
            self.moments.append(record.created)


@pytest.fixture
def heard() -> Iterator[Heard]:
    handler = Heard()
    logger = logging.getLogger("lembro")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@dataclass
class Traffic:
    """Logouts and writes made while a failover happens, and what each reported.

    ``logouts``: when each logout lembro reported done was asked (``time.time()``) and
    the sessions it ended; ``writes``: when each acknowledged write was asked, and its id.
    """

    victims: list[str]
    owners: list[tuple[str, list[str]]]
    logouts: list[tuple[float, list[str]]] = field(default_factory=list)
    writes: list[tuple[float, str]] = field(default_factory=list)
    refused: int = 0
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_step(self, turn: int) -> tuple[str, Any]:
        """What a worker does next: a logout (of a session, or of a user everywhere)
        while there are some left, and a write in between."""
        with self.lock:
            if turn % 3 == 0 and self.victims:
                return "destroy", self.victims.pop()
            if turn % 3 == 1 and self.owners:
                return "destroy_sessions_of", self.owners.pop()
        return "set", new_session_id()

    def note(self, kind: str, started: float, target: Any, reply: Any) -> None:
        with self.lock:
            if kind == "destroy" and reply is True:
                self.logouts.append((started, [target]))
            elif kind == "destroy_sessions_of" and reply > 0:
                self.logouts.append((started, target[1]))
            elif kind == "set":
                self.writes.append((started, target))

    def done_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for started, _ in self.logouts if started > moment)


def prepare(store: RedisStore, setup: SentinelSetup) -> Traffic:
    """Sessions to log out, on the primary and its replica alike."""
    victims = [new_session_id() for _ in range(VICTIMS)]
    for sid in victims:
        store.set(sid, {"user": "victim"})
    owners = []
    for n in range(OWNERS):
        owner, sids = f"user{n}", [new_session_id(), new_session_id()]
        for sid in sids:
            store.set(sid, {"user": owner})
        owners.append((owner, sids))
    setup.wait_in_sync()
    return Traffic(victims, owners)


def run_traffic(store: RedisStore, traffic: Traffic, stop: threading.Event) -> None:
    turn = 0
    while not stop.is_set():
        turn += 1
        kind, target = traffic.next_step(turn)
        started = time.time()
        try:
            if kind == "destroy":
                reply: Any = store.destroy(target)
            elif kind == "destroy_sessions_of":
                reply = store.destroy_sessions_of(target[0])
            else:
                reply = store.set(target, {"user": "writer"})
        except StoreUnavailable:
            with traffic.lock:
                traffic.refused += 1
            continue
        except BaseException as error:  # anything else escaping is the bug
            traffic.errors.append(error)
            return
        traffic.note(kind, started, target, reply)
        stop.wait(0.01)


def come_back(store: RedisStore, logouts: list[tuple[float, list[str]]]) -> list[str]:
    """The sessions of ``logouts`` that a read finds again."""
    return [sid for _, sids in logouts for sid in sids if store.get(sid) is not None]


def traffic_through(store: RedisStore, traffic: Traffic, during: Callable[[], None]) -> None:
    """Run ``THREADS`` workers of traffic on ``store`` while ``during`` runs."""
    stop = threading.Event()
    workers = [
        threading.Thread(target=run_traffic, args=(store, traffic, stop)) for _ in range(THREADS)
    ]
    for worker in workers:
        worker.start()
    try:
        eventually(lambda: len(traffic.logouts) > 20, "logouts before the failover")
        during()
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert traffic.errors == []  # failover errors came out as StoreUnavailable, nothing raw


def test_after_a_planned_failover_is_announced_no_logout_comes_back(
    sentinel: SentinelSetup, heard: Heard
) -> None:
    store = RedisStore(sentinel.url, owner_key="user", socket_timeout=1.0, connect_timeout=1.0)
    try:
        traffic = prepare(store, sentinel)
        ports: list[int] = []

        def failover() -> None:
            ports.extend(sentinel.switch())
            eventually(lambda: bool(heard.moments), "the store to hear of the switch")
            cutoff = heard.moments[0]
            eventually(lambda: traffic.done_since(cutoff) >= 50, "logouts after the switch")

        traffic_through(store, traffic, failover)
        old, new = ports
        cutoff = heard.moments[0]
        after = [(t, sids) for t, sids in traffic.logouts if t > cutoff]
        written = [sid for t, sid in traffic.writes if t > cutoff]
        assert after
        assert written
        # Every write asked for once the switch was heard is on the new primary...
        with redis.Redis(port=new) as primary:
            assert all(primary.exists(store.prefix + sid) for sid in written)
        # ...and the former primary, demoted, throws away what it took since the switch.
        sentinel.demote(old, new)
        assert come_back(store, after) == []
        assert all(store.get(sid) == {"user": "writer"} for sid in written)
    finally:
        store.clear()
        store.close()


def test_the_async_store_hears_a_planned_failover_too(
    sentinel: SentinelSetup, heard: Heard
) -> None:
    # A sync store prepares and checks, closed in between: its own listener would log the
    # switch too, and the moment that counts is the async store's.
    with RedisStore(sentinel.url, owner_key="user") as check:
        traffic = prepare(check, sentinel)
    check = RedisStore(sentinel.url, owner_key="user")
    ports: list[int] = []

    async def worker(store: AsyncRedisStore, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            kind, target = traffic.next_step(turn)
            started = time.time()
            try:
                if kind == "destroy":
                    reply: Any = await store.destroy(target)
                elif kind == "destroy_sessions_of":
                    reply = await store.destroy_sessions_of(target[0])
                else:
                    reply = await store.set(target, {"user": "writer"})
            except StoreUnavailable:
                traffic.refused += 1
                await asyncio.sleep(0.01)
                continue
            traffic.note(kind, started, target, reply)
            await asyncio.sleep(0.01)

    async def until(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not check():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    async def main() -> None:
        store = AsyncRedisStore(
            sentinel.url, owner_key="user", socket_timeout=1.0, connect_timeout=1.0
        )
        stop = asyncio.Event()
        workers = [asyncio.create_task(worker(store, stop)) for _ in range(THREADS)]
        try:
            await until(lambda: len(traffic.logouts) > 20)
            ports.extend(await asyncio.to_thread(sentinel.switch))
            await until(lambda: bool(heard.moments))
            await until(lambda: traffic.done_since(heard.moments[0]) >= 50)
        finally:
            stop.set()
            await asyncio.gather(*workers)
            await store.close()

    try:
        asyncio.run(main())
        old, new = ports
        cutoff = heard.moments[0]
        after = [(t, sids) for t, sids in traffic.logouts if t > cutoff]
        written = [sid for t, sid in traffic.writes if t > cutoff]
        assert after
        assert written
        with redis.Redis(port=new) as primary:
            assert all(primary.exists(check.prefix + sid) for sid in written)
        sentinel.demote(old, new)
        assert come_back(check, after) == []
    finally:
        check.clear()
        check.close()


def test_a_connection_that_reached_the_former_primary_across_the_switch_is_not_used_again(
    sentinel: SentinelSetup, heard: Heard
) -> None:
    # A connection the pool hands out while the switch is heard is not connected yet when
    # the listener drops the pool's connections; it then reaches the address it looked up
    # before the switch. Back in the pool, it must not carry the next write there.
    sid = new_session_id()
    ports: list[int] = []

    async def main() -> None:
        store = AsyncRedisStore(sentinel.url, socket_timeout=1.0, connect_timeout=1.0)
        try:
            await store.set(new_session_id(), {"user": "first"})  # starts the listener
            pool = store.client.connection_pool
            former = pool.master_address
            stray = pool.get_available_connection()
            ports.extend(await asyncio.to_thread(sentinel.switch))
            deadline = time.monotonic() + 30
            while not heard.moments:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await stray.connect_to(former)
            await pool.release(stray)
            await store.set(sid, {"user": "after"})
        finally:
            await store.close()

    asyncio.run(main())
    old, new = ports
    with RedisStore(sentinel.url) as check, redis.Redis(port=new) as primary:
        assert primary.exists(check.prefix + sid)
        sentinel.demote(old, new)
        assert check.get(sid) == {"user": "after"}
        check.clear()


def test_durable_logouts_under_a_planned_failover_never_come_back(
    sentinel: SentinelSetup,
) -> None:
    store = RedisStore(sentinel.url, owner_key="user", **DURABLE)
    try:
        traffic = prepare(store, sentinel)

        def failover() -> None:
            old, new = sentinel.switch()
            # The new primary has no replica yet, the former one has lost it: no logout
            # can be confirmed, so none is reported done.
            refused = traffic.refused
            eventually(lambda: traffic.refused > refused, "a logout refused")
            sentinel.demote(old, new)
            done = len(traffic.logouts)
            eventually(lambda: len(traffic.logouts) >= done + 30, "logouts after the failover")

        traffic_through(store, traffic, failover)
        # Every logout reported done, before, during and after the failover, stays done.
        assert come_back(store, traffic.logouts) == []
    finally:
        store.clear()
        store.close()


def test_a_durable_logout_unconfirmed_by_a_lagging_replica_raises(
    sentinel: SentinelSetup,
) -> None:
    store = RedisStore(sentinel.url, **DURABLE)
    primary, replica = sentinel.servers
    try:
        victim = new_session_id()
        store.set(victim, {"user": "alice"})
        sentinel.wait_in_sync()
        replica.pause()
        try:
            with pytest.raises(StoreUnavailable):
                finishes(lambda: store.destroy(victim))
            primary.kill()
        finally:
            replica.resume()
        sentinel.promoted(primary.port)
        # Whether the deletion reached the replica before the primary died is not known
        # (it may have been in the paused replica's socket): destroy did not say True.
        found: list[object] = []
        eventually(lambda: found.append(store.get(victim)) is None, "the promoted replica")
        assert found[-1] in (None, {"user": "alice"})
        with pytest.raises(StoreUnavailable):  # no replica is left to confirm a logout
            store.destroy(victim)
    finally:
        store.close()


def test_a_confirmed_logout_stays_done_after_the_primary_dies(sentinel: SentinelSetup) -> None:
    store = RedisStore(sentinel.url, **DURABLE)
    primary = sentinel.servers[0]
    try:
        victim, survivor = new_session_id(), new_session_id()
        store.set(victim, {"user": "alice"})
        store.set(survivor, {"user": "bob"})
        assert store.destroy(victim) is True
        primary.kill()
        sentinel.promoted(primary.port)
        eventually(lambda: store.get(survivor) == {"user": "bob"}, "the promoted replica")
        assert store.get(victim) is None
    finally:
        store.close()


def listeners() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lembro-sentinel-")]


def test_the_listener_starts_with_the_first_use_and_ends_with_close(
    redis_sentinel: SentinelSetup,
) -> None:
    before = len(listeners())
    store = RedisStore(redis_sentinel.url)
    assert len(listeners()) == before  # nothing runs until the store is used
    assert store.get(new_session_id()) is None
    assert len(listeners()) == before + 1
    store.close()
    assert len(listeners()) == before

    async def main() -> None:
        store = AsyncRedisStore(redis_sentinel.url)
        named = "lembro-sentinel-"
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(named)]
        assert await store.get(new_session_id()) is None
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith(named)]
        await store.close()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(named)]

    asyncio.run(main())


def test_a_replica_given_as_the_primary_is_unavailable(redis_sentinel: SentinelSetup) -> None:
    replica = next(s for s in redis_sentinel.servers if s.port != redis_sentinel.primary_port())
    # READONLY, and after a reconnection ROLE says replica: an outage, not a raw error.
    with RedisStore(replica.url) as store, pytest.raises(StoreUnavailable):
        store.set(new_session_id(), {"a": 1})


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"wait_replicas": -1}, "wait_replicas"),
        ({"wait_replicas": True}, "wait_replicas"),
        ({"wait_replicas": "1"}, "wait_replicas"),
        ({"wait_timeout": 0}, "wait_timeout"),
        ({"wait_timeout": 2.0, "socket_timeout": 2.0}, "wait_timeout"),
    ],
)
def test_bad_durability_options_are_refused(options: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidOption, match=name):
        RedisStore("redis://127.0.0.1:1/0", **options)


def test_durable_logouts_are_refused_on_a_cluster() -> None:
    with pytest.raises(InvalidOption, match="wait_replicas"):
        RedisStore("redis+cluster://127.0.0.1:1", wait_replicas=1)


def test_the_async_twin_carries_the_durability_options() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", wait_replicas=2, wait_timeout=0.25)
    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    assert (twin.wait_replicas, twin.wait_timeout) == (2, 0.25)
    store.close()
    asyncio.run(twin.close())


@pytest.mark.parametrize(
    ("message", "found"),
    [
        (
            {
                "type": "message",
                "channel": b"+switch-master",
                "data": b"app 10.0.0.1 6379 10.0.0.2 6380",
            },
            ("10.0.0.2", 6380),
        ),
        ({"type": "message", "data": b"other 10.0.0.1 6379 10.0.0.2 6380"}, None),
        ({"type": "message", "data": b"app 10.0.0.1 6379 10.0.0.2 port"}, None),
        ({"type": "message", "data": b"garbage"}, None),
        ({"type": "subscribe", "data": 1}, None),
        (None, None),
    ],
)
def test_only_a_switch_of_the_stores_own_service_is_acted_on(
    message: object, found: object
) -> None:
    from lembro.redis.core import _announced_switch

    assert _announced_switch(message, "app") == found
