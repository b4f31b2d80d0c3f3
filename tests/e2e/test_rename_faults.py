"""A regenerate (``rename``) through the faults of real servers: a redis-server killed while
devices regenerate, and a Redis Cluster with a node down at each of the rename's steps.
Whatever fails, the rename raises and the user keeps the old session or the new one,
never neither (issue 27)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lembro import RedisStore, StoreUnavailable
from lembro.ids import new_session_id

from ..conftest import require_binaries
from ..redis_server import RedisServer, find_redis_server
from ..topologies import Cluster, _command, _until, start_cluster

pytestmark = pytest.mark.e2e

OWNER_KEY = "user"


def test_a_redis_killed_while_devices_regenerate_leaves_each_its_old_or_new_session() -> None:
    require_binaries("redis-server")
    executable = find_redis_server()
    assert executable is not None
    # Every acknowledged write on disk before its reply, so a restart shows what was done.
    server = RedisServer(executable, args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        store = RedisStore(server.url, owner_key=OWNER_KEY, socket_timeout=1.0, connect_timeout=1.0)
        devices = 40
        current = [new_session_id() for _ in range(devices)]
        for i, sid in enumerate(current):
            store.set(sid, {OWNER_KEY: f"u{i}"})
        pending: list[str | None] = [None] * devices
        busy = threading.Event()  # enough renames done: time to kill the server
        failures: list[BaseException] = []

        def regenerate_until_it_fails() -> None:
            done = 0
            try:
                while True:
                    for i in range(devices):
                        pending[i] = new = new_session_id()
                        assert store.rename(current[i], new, {OWNER_KEY: f"u{i}", "n": done})
                        current[i], pending[i] = new, None
                        done += 1
                        if done == 200:
                            busy.set()
            except BaseException as e:  # the main thread looks at it
                failures.append(e)
                busy.set()

        device = threading.Thread(target=regenerate_until_it_fails)
        device.start()
        try:
            assert busy.wait(timeout=60)
            server.kill()
        finally:
            device.join(timeout=60)
        store.close()
        assert len(failures) == 1
        assert isinstance(failures[0], StoreUnavailable)
        server.start()
        with RedisStore(server.url, owner_key=OWNER_KEY) as after:
            for i in range(devices):
                held = [sid for sid in (current[i], pending[i]) if sid is not None and sid in after]
                assert len(held) == 1, f"device {i}: {held}"
                assert after.sessions_of(f"u{i}") == held
    finally:
        server.close()


# ---- a Redis Cluster, a node down ---------------------------------------------------------


@pytest.fixture(scope="module")
def rename_cluster() -> Iterator[Cluster]:
    """A Redis Cluster for this module, apart from the contract suite's, whose nodes keep
    serving their own slots while another is down (so each test chooses which step of a
    rename meets the dead node, whatever the time the cluster takes to notice)."""
    require_binaries("redis-server", "redis-cli")
    cluster = start_cluster()
    for node in cluster.nodes:
        _command(node.port, "CONFIG", "SET", "cluster-require-full-coverage", "no")
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(rename_cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster, whole again after each test."""
    yield rename_cluster
    for node in rename_cluster.nodes:
        if node.process is None or node.process.poll() is not None:
            node.start()
            _command(node.port, "CONFIG", "SET", "cluster-require-full-coverage", "no")
    rename_cluster.wait_ok()
    # With partial coverage allowed, the state is "ok" before the others see the node
    # back: wait until no node holds it failed.
    _until(
        lambda: all(
            b"fail" not in _command(n.port, "CLUSTER", "NODES") for n in rename_cluster.nodes
        ),
        "every node seen alive by every other",
    )


def node_of(store: RedisStore, key: str) -> int:
    port: int = store.client.get_node_from_key(key).port
    return port


def session_on(store: RedisStore, node: RedisServer) -> str:
    """A new session id whose key lives on ``node``."""
    while True:
        sid = new_session_id()
        if node_of(store, store.prefix + sid) == node.port:
            return sid


def owner_on(store: RedisStore, node: RedisServer) -> str:
    """An owner whose set of sessions lives on ``node``."""
    for n in range(100_000):
        if node_of(store, store._owner_index(f"user{n}")) == node.port:
            return f"user{n}"
    raise AssertionError("no owner hashes to that node")


def cluster_store(cluster: Cluster) -> RedisStore:
    """A store under a prefix of its own: no test sees another's sessions or owners."""
    return RedisStore(
        cluster.url,
        prefix=f"rename-{uuid.uuid4().hex[:12]}:",
        owner_key=OWNER_KEY,
        socket_timeout=1.0,
        connect_timeout=1.0,
    )


@pytest.mark.parametrize("down", ["new", "owner set", "old"])
def test_a_cluster_node_down_at_a_step_of_rename_raises_and_leaves_no_new_session(
    cluster: Cluster, down: str
) -> None:
    victim, *others = cluster.nodes
    store = cluster_store(cluster)
    try:
        placed: dict[str, Any] = {
            "new": session_on(store, victim if down == "new" else others[0]),
            "owner": owner_on(store, victim if down == "owner set" else others[1]),
            "old": session_on(store, victim if down == "old" else others[0]),
        }
        old, new, owner = placed["old"], placed["new"], placed["owner"]
        store.set(old, {OWNER_KEY: owner, "cart": [1]})
        victim.kill()
        with pytest.raises(StoreUnavailable):
            store.rename(old, new, {OWNER_KEY: owner, "fresh": True})
        if down != "new":
            assert new not in store  # written, then deleted again
        if down != "old":  # the old session is as it was
            assert store.get(old) == {OWNER_KEY: owner, "cart": [1]}
        if down == "new":
            assert store.sessions_of(owner) == [old]
        if down == "old":
            assert store.client.zscore(store._owner_index(owner), new) is None
    finally:
        store.close()


def test_a_cluster_rename_that_a_logout_beat_writes_nothing(cluster: Cluster) -> None:
    victim, other, third = cluster.nodes
    store = cluster_store(cluster)
    try:
        old, new = session_on(store, victim), session_on(store, other)
        owner = owner_on(store, third)
        store.set(old, {OWNER_KEY: owner})
        assert store.rename(old, new, {OWNER_KEY: owner}) is True
        assert store.sessions_of(owner) == [new]
        assert store.destroy(new) is True  # a logout
        newer = session_on(store, third)
        assert store.rename(new, newer, {OWNER_KEY: owner}) is False
        assert newer not in store
        assert store.sessions_of(owner) == []
        assert store.client.zscore(store._owner_index(owner), newer) is None
    finally:
        store.close()
