"""The Redis stores through the faults an SRE sees: a killed cluster node, a hung one, a
Sentinel failover in the middle of traffic. Each against real servers the test starts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lembro import AsyncRedisStore, RedisStore, StoreUnavailable
from lembro.ids import new_session_id

from ..conftest import require_binaries
from ..redis_server import RedisServer
from ..topologies import Cluster, SentinelSetup, start_cluster
from ..unit.test_redis import finishes

pytestmark = pytest.mark.e2e


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
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {limit}s")


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[Cluster]:
    """A Redis Cluster for this module's fault tests, apart from the contract suite's."""
    require_binaries("redis-server", "redis-cli")
    c = start_cluster(node_timeout=1.0)  # a lost primary is CLUSTERDOWN within seconds
    yield c
    c.close()


@pytest.fixture
def cluster(fault_cluster: Cluster) -> Iterator[Cluster]:
    """The fault cluster, free to lose a node: whole again after each test."""
    yield fault_cluster
    for node in fault_cluster.nodes:
        if node.process is None or node.process.poll() is not None:
            node.start()
        else:
            node.resume()
    fault_cluster.wait_ok()


def session_on(store: RedisStore, node: RedisServer) -> str:
    """A new session id whose key lives on ``node``."""
    while True:
        sid = new_session_id()
        if store.client.get_node_from_key(store.prefix + sid).port == node.port:
            return sid


def test_a_killed_cluster_primary_is_store_unavailable_and_the_store_recovers(
    cluster: Cluster,
) -> None:
    store = RedisStore(cluster.url, socket_timeout=1.0, connect_timeout=1.0)
    victim, survivor = cluster.nodes[0], cluster.nodes[1]
    lost, kept = session_on(store, victim), session_on(store, survivor)
    store.set(lost, {"on": "victim"})
    store.set(kept, {"on": "survivor"})
    with RedisStore(cluster.url, on_unavailable="empty") as lenient:
        victim.kill()
        with pytest.raises(StoreUnavailable):
            finishes(lambda: store.get(lost))
        with pytest.raises(StoreUnavailable):
            finishes(lambda: store.destroy(lost))
        with pytest.raises(StoreUnavailable):  # a scan must reach every primary
            finishes(store.all)
        assert finishes(lambda: lenient.get(lost)) is None
        with pytest.raises(StoreUnavailable):  # a logout fails closed in "empty" mode too
            finishes(lambda: lenient.destroy(lost))
    victim.start()  # same port and cluster files: it rejoins
    cluster.wait_ok()
    eventually(lambda: store.get(kept) == {"on": "survivor"}, "the store recovers")
    store.set(lost, {"on": "victim", "again": True})
    assert store.get(lost) == {"on": "victim", "again": True}
    assert len(store) == 2
    store.clear()
    store.close()


def test_a_hung_cluster_primary_times_out_instead_of_hanging(cluster: Cluster) -> None:
    store = RedisStore(cluster.url, socket_timeout=0.5, connect_timeout=0.5)
    victim = cluster.nodes[2]
    sid = session_on(store, victim)
    store.set(sid, {"a": 1})
    victim.pause()
    try:
        with pytest.raises(StoreUnavailable):
            finishes(lambda: store.get(sid))
    finally:
        victim.resume()
    eventually(lambda: store.get(sid) == {"a": 1}, "the store recovers")
    store.clear()
    store.close()


def test_the_async_store_on_a_cluster_maps_a_killed_node_and_recovers(cluster: Cluster) -> None:
    victim = cluster.nodes[1]

    async def main() -> None:
        store = AsyncRedisStore(cluster.url, socket_timeout=1.0, connect_timeout=1.0)
        probe = RedisStore(cluster.url)
        sid = session_on(probe, victim)
        probe.close()
        await store.set(sid, {"a": 1})
        victim.kill()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.get(sid), 30)
        victim.start()
        cluster.wait_ok()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                await store.set(sid, {"a": 2})
                break
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        assert await store.get(sid) == {"a": 2}
        await store.clear()
        await store.close()

    asyncio.run(main())


def test_a_sentinel_failover_in_the_middle_of_traffic(redis_sentinel: SentinelSetup) -> None:
    store = RedisStore(redis_sentinel.url, socket_timeout=1.0, connect_timeout=1.0)
    before = new_session_id()
    store.set(before, {"user": "alice"})
    # WAIT on the store's own connection: the replica has its writes before the failover.
    eventually(lambda: store.client.execute_command("WAIT", 1, 500) >= 1, "replication")
    stop = threading.Event()
    seen: dict[str, int] = {"ok": 0, "unavailable": 0}
    other: list[BaseException] = []

    def traffic() -> None:
        while not stop.is_set():
            sid = new_session_id()
            try:
                store.set(sid, {"n": 1})
                store.get(sid)
                store.destroy(sid)
                seen["ok"] += 1
            except StoreUnavailable:
                seen["unavailable"] += 1
                time.sleep(0.01)
            except BaseException as e:  # anything else escaping is the bug
                other.append(e)
                return

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        eventually(lambda: seen["ok"] > 10, "traffic before the failover")
        old = redis_sentinel.primary_port()
        new = redis_sentinel.failover()
        assert new != old
        done = seen["ok"]
        eventually(lambda: seen["ok"] > done + 10, "traffic on the new primary")
    finally:
        stop.set()
        worker.join(30)
    assert other == []  # failover errors came out as StoreUnavailable, nothing raw
    assert store.get(before) == {"user": "alice"}
    sid = new_session_id()
    store.set(sid, {"after": "failover"})
    assert store.get(sid) == {"after": "failover"}
    store.destroy(sid)
    store.clear()
    store.close()


def test_the_async_store_follows_a_sentinel_failover(redis_sentinel: SentinelSetup) -> None:
    async def main() -> None:
        store = AsyncRedisStore(redis_sentinel.url, socket_timeout=1.0, connect_timeout=1.0)
        sid = new_session_id()
        await store.set(sid, {"user": "bob"})
        while await store.client.execute_command("WAIT", 1, 500) < 1:  # on the replica too
            pass
        old = redis_sentinel.primary_port()
        await asyncio.to_thread(redis_sentinel.failover)
        assert redis_sentinel.primary_port() != old
        deadline = time.monotonic() + 30
        while True:  # the first calls may meet the old primary, as StoreUnavailable only
            try:
                await store.set(sid, {"user": "bob", "after": "failover"})
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not recover"
                await asyncio.sleep(0.05)
        assert await store.get(sid) == {"user": "bob", "after": "failover"}
        assert await store.destroy(sid) is True
        await store.close()

    asyncio.run(main())
