"""RedisStore and AsyncRedisStore against a real redis-server: keys, round trips, faults.

The shared semantics (get/set/touch/expiry/...) are pinned in test_contract.py; this file
holds what only a Redis store has. Fault tests run their own redis-server, so the
session's shared one keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

import lembro
from lembro import (
    AsyncRedisStore,
    InvalidOption,
    LembroError,
    RedisStore,
    SessionTooLarge,
    StoreUnavailable,
)
from lembro.ids import new_session_id, redact
from lembro.redis import RedisOptions

from ..conftest import start_redis_server
from ..redis_server import RedisServer, find_redis_server
from ..topologies import SERVICE, Cluster, SentinelSetup

T = TypeVar("T")


def unique_prefix() -> str:
    return f"lembro-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client on the shared server, to look behind the store's back."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    with RedisStore(redis_server.url, prefix=unique_prefix()) as s:
        yield s
        s.clear()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server for this test alone, free to be killed, paused and restarted."""
    server = start_redis_server()
    yield server
    server.close()


def command_calls(raw: redis.Redis) -> dict[str, int]:
    """Calls per command so far, from INFO commandstats (the INFO itself excluded)."""
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("info", None)
    return calls


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def finishes(call: Callable[[], T], limit: float = 30.0) -> T:
    """Run ``call`` in a thread and return its result; fail (not hang) if it never returns.

    A guard against a hang, not a timing assertion: the limit is far above any timeout.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"call still blocked after {limit}s: the store hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


# ---- the public namespace -----------------------------------------------------------


def test_import_lembro_does_not_import_redis() -> None:
    code = (
        "import sys, lembro\n"
        "assert 'redis' not in sys.modules, 'import lembro imported redis'\n"
        "assert 'lembro.redis' not in sys.modules\n"
        "lembro.RedisStore('redis://127.0.0.1:1/0')\n"
        "assert 'redis' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lembro_exports_the_redis_stores() -> None:
    import lembro.redis

    assert lembro.RedisStore is lembro.redis.RedisStore
    assert lembro.AsyncRedisStore is lembro.redis.AsyncRedisStore
    assert {"RedisStore", "AsyncRedisStore"} <= set(lembro.__all__)
    with pytest.raises(AttributeError):
        lembro.NoSuchStore  # noqa: B018


def test_protocols_are_met(store: RedisStore) -> None:
    assert isinstance(store, lembro.SessionStore)
    assert isinstance(store.as_async(), lembro.AsyncSessionStore)


# ---- keys, prefixes and sharing -------------------------------------------------------


def test_sessions_are_one_key_each_with_the_ttl_as_expiry(
    store: RedisStore, raw: redis.Redis
) -> None:
    sid = new_session_id()
    store.set(sid, {"a": 1}, ttl=100)
    key = store.prefix + sid
    assert raw.type(key) == b"string"
    assert 99_000 < raw.pttl(key) <= 100_000  # milliseconds
    assert store.touch(sid, ttl=1000) is True
    assert 100_000 < raw.pttl(key) <= 1_000_000
    store.set(sid, {"a": 2})  # the store's default ttl: a day
    assert 1_000_000 < raw.pttl(key) <= 86_400_000


def test_stores_on_one_prefix_share_sessions(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    with (
        RedisStore(redis_server.url, prefix=prefix) as worker1,
        RedisStore(redis_server.url, prefix=prefix) as worker2,
    ):
        sid = new_session_id()
        worker1.set(sid, {"cart": [1]})
        assert worker2.get(sid) == {"cart": [1]}
        worker2.destroy(sid)
        assert worker1.get(sid) is None


def test_clear_leaves_other_prefixes_and_foreign_keys(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    # "t[1]*:" read as a glob would also match every key under "t1:" - so it must be escaped.
    globby = RedisStore(redis_server.url, prefix=f"{tag}t[1]*:")
    plain = RedisStore(redis_server.url, prefix=f"{tag}t1:")
    foreign = f"{tag}t1x-not-a-session"
    raw.set(foreign, b"keep me")
    try:
        a, b = new_session_id(), new_session_id()
        globby.set(a, {"from": "globby"})
        plain.set(b, {"from": "plain"})
        assert globby.all() == {a: {"from": "globby"}}
        assert len(globby) == 1
        globby.clear()
        assert len(globby) == 0
        assert plain.get(b) == {"from": "plain"}
        assert raw.get(foreign) == b"keep me"
        plain.clear()
        assert plain.all() == {}
        assert raw.get(foreign) == b"keep me"
    finally:
        raw.delete(foreign)
        globby.clear()
        plain.clear()
        globby.close()
        plain.close()


def test_all_len_and_clear_use_scan_over_many_pages(store: RedisStore, raw: redis.Redis) -> None:
    sids = [new_session_id() for _ in range(1300)]  # several SCAN pages and MGET batches
    with raw.pipeline(transaction=False) as pipe:
        for i, sid in enumerate(sids):
            pipe.set(store.prefix + sid, store._serializer.dumps({"i": i}), px=60_000)
        pipe.execute()
    before = command_calls(raw)
    assert len(store) == 1300
    everything = store.all()
    assert len(everything) == 1300
    assert everything[sids[7]] == {"i": 7}
    store.clear()
    assert len(store) == 0
    used = delta(before, command_calls(raw))
    assert used.get("scan", 0) > 3
    assert used.get("mget", 0) >= 3
    assert not {"keys", "flushdb", "flushall", "dbsize"} & used.keys()


# ---- round trips ----------------------------------------------------------------------


def test_each_call_is_one_round_trip(store: RedisStore, raw: redis.Redis) -> None:
    sid = new_session_id()
    store.set(new_session_id(), {"warm": "up"})  # the connection's handshake is not counted
    calls = []
    for op, command in [
        (lambda: store.set(sid, {"a": 1}), "set"),
        (lambda: store.get(sid), "get"),
        (lambda: store.get(new_session_id()), "get"),
        (lambda: store.touch(sid), "pexpire"),
        (lambda: sid in store, "type"),
        (lambda: store.destroy(sid), "del"),
    ]:
        before = command_calls(raw)
        for _ in range(10):
            op()
        calls.append((command, delta(before, command_calls(raw))))
    # A write, touch or destroy is one script that checks the key's TYPE first, so that
    # another app's key under the prefix is left alone, reads the session's header (its
    # absolute end) and Redis's TIME; Redis counts the script's commands too.
    guarded = {"eval": 10, "type": 10}
    assert calls == [
        ("set", {**guarded, "time": 10, "get": 9, "set": 10}),
        ("get", {"get": 10}),
        ("get", {"get": 10}),
        ("pexpire", {**guarded, "time": 10, "get": 10, "pexpire": 10}),
        ("type", {**guarded, "getrange": 10, "pttl": 10}),
        ("del", {**guarded, "get": 1, "del": 10}),
    ]


def test_async_store_calls_are_one_round_trip(redis_server: RedisServer, raw: redis.Redis) -> None:
    async def main() -> list[dict[str, int]]:
        async with AsyncRedisStore(redis_server.url, prefix=unique_prefix()) as s:
            sid = new_session_id()
            await s.set(new_session_id(), {"warm": "up"})
            seen = []
            before = command_calls(raw)
            await s.set(sid, {"a": 1})
            seen.append(delta(before, before := command_calls(raw)))
            assert await s.get(sid) == {"a": 1}
            seen.append(delta(before, command_calls(raw)))
            await s.clear()
            return seen

    assert asyncio.run(main()) == [{"eval": 1, "type": 1, "time": 1, "set": 1}, {"get": 1}]


def test_as_async_gives_an_async_redis_store_on_the_same_options(store: RedisStore) -> None:
    twin = lembro.as_async(store)
    assert isinstance(twin, AsyncRedisStore)
    assert (twin.prefix, twin.ttl, twin.url) == (store.prefix, store.ttl, store.url)
    sid = new_session_id()

    async def main() -> dict[str, Any] | None:
        await twin.set(sid, {"from": "async"})
        result = await twin.get(sid)
        await twin.close()
        return result

    assert asyncio.run(main()) == {"from": "async"}
    assert store.get(sid) == {"from": "async"}


def test_given_client_is_used_and_left_open(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(client=client, prefix=unique_prefix())
    sid = new_session_id()
    store.set(sid, {"a": 1})
    store.close()
    assert client.exists(store.prefix + sid) == 1  # still usable after the store closed
    store.clear()
    twin = store.as_async()  # a sync client cannot serve an event loop: a thread does
    assert not isinstance(twin, AsyncRedisStore)
    assert asyncio.run(twin.get(sid)) is None
    client.close()


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": 3}, "prefix"),
        ({"ttl": 0}, "ttl"),
        ({"socket_timeout": -1}, "socket_timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"on_unavailable": "ignore"}, "on_unavailable"),
        ({"serializer": "yaml"}, "serializer"),
        ({"client": object()}, "client"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], name: str) -> None:
    for cls in (RedisStore, AsyncRedisStore):
        with pytest.raises(InvalidOption) as info:
            cls("redis://127.0.0.1:1/0", **options)
        assert info.value.name == name


def test_a_decoding_client_is_refused(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(InvalidOption):
        RedisStore(client=client)
    client.close()


def test_stats_report_sessions_size_and_maxmemory(own_server: RedisServer) -> None:
    with RedisStore(own_server.url) as store:
        for i in range(3):
            store.set(new_session_id(), {"i": i, "pad": "x" * 1000})
        stats = store.stats()
        assert stats.sessions == 3
        assert stats.size > 3000  # bytes: MEMORY USAGE counts each key and value
        assert stats.max_size is None  # no maxmemory set: Redis does not bound it
        store.client.config_set("maxmemory", 64 * 1024 * 1024)
        assert store.stats().max_size == 64 * 1024 * 1024
        assert store.purge() == 0


# ---- faults ---------------------------------------------------------------------------


def test_dead_server_raises_store_unavailable(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, socket_timeout=1.0, connect_timeout=1.0)
    sid = new_session_id()
    store.set(sid, {"a": 1})
    own_server.kill()
    for call in [
        lambda: store.get(sid),
        lambda: store.set(sid, {"a": 2}),
        lambda: store.touch(sid),
        lambda: store.destroy(sid),
        lambda: store.all(),
        lambda: len(store),
        lambda: sid in store,
        lambda: store.clear(),
        lambda: store.stats(),
    ]:
        with pytest.raises(StoreUnavailable) as info:
            finishes(call)
        assert isinstance(info.value, LembroError)
        assert isinstance(info.value, ConnectionError)
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert sid not in str(info.value)
    store.close()


def test_hung_server_times_out_instead_of_hanging(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, socket_timeout=0.3, connect_timeout=0.3)
    sid = new_session_id()
    store.set(sid, {"a": 1})
    own_server.pause()  # accepts connections, never answers
    try:
        with pytest.raises(StoreUnavailable) as info:
            finishes(lambda: store.get(sid))
        assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
    finally:
        own_server.resume()
    assert store.get(sid) == {"a": 1}  # a fresh connection once it answers again
    store.close()


def test_restarted_server_works_on_the_next_call(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url)
    sid = new_session_id()
    store.set(sid, {"a": 1})  # leaves a pooled connection to the old process
    own_server.kill()
    with pytest.raises(StoreUnavailable):
        finishes(lambda: store.get(sid))
    own_server.start()  # same port, empty: no persistence
    assert store.get(sid) is None
    store.set(sid, {"a": 2})
    assert store.get(sid) == {"a": 2}
    store.close()


@pytest.mark.parametrize("kind", [RedisStore, AsyncRedisStore])
def test_call_after_an_unseen_restart_works(own_server: RedisServer, kind: type[Any]) -> None:
    # The pooled connection still points at the dead process; no call saw it die.
    async def call(result: Any) -> Any:
        return await result if asyncio.iscoroutine(result) else result

    async def main() -> None:
        store = kind(own_server.url)
        sid = new_session_id()
        await call(store.set(sid, {"a": 1}))
        own_server.kill()
        own_server.start()
        assert await call(store.get(sid)) is None  # works; the data died with the process
        await call(store.set(sid, {"a": 2}))
        assert await call(store.get(sid)) == {"a": 2}
        await call(store.close())

    asyncio.run(main())


def test_empty_mode_reads_nothing_drops_writes_and_recovers(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(own_server.url, on_unavailable="empty")
    sid = new_session_id()
    store.set(sid, {"a": 1})
    own_server.kill()
    with caplog.at_level(logging.DEBUG, logger="lembro"):
        assert finishes(lambda: store.get(sid)) is None
        finishes(lambda: store.set(sid, {"a": 2}))
        assert store.touch(sid) is False
        assert sid not in store
        assert store.all() == {}
        assert len(store) == 0
        with pytest.raises(StoreUnavailable):  # a logout is never reported done
            store.destroy(sid)
        with pytest.raises(StoreUnavailable):
            store.clear()
        with pytest.raises(StoreUnavailable):  # monitoring sees the outage
            store.stats()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one per outage, not one per request
    assert redact(sid) in warnings[0].getMessage()
    assert sid not in caplog.text  # ids are never logged in full

    own_server.start()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lembro"):
        store.set(sid, {"a": 3})
    assert store.get(sid) == {"a": 3}
    assert "answers again" in caplog.text
    assert (store.stats().hits, store.stats().misses) == (1, 1)  # the outage's get: a miss
    store.close()


def test_async_store_faults(own_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    sid = new_session_id()

    async def main() -> None:
        strict = AsyncRedisStore(own_server.url, socket_timeout=1.0, connect_timeout=1.0)
        lenient = AsyncRedisStore(own_server.url, on_unavailable="empty")
        await strict.set(sid, {"a": 1})
        assert await lenient.get(sid) == {"a": 1}
        own_server.kill()
        with pytest.raises(StoreUnavailable) as info:
            await asyncio.wait_for(strict.get(sid), 30)
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        with caplog.at_level(logging.WARNING, logger="lembro"):
            assert await asyncio.wait_for(lenient.get(sid), 30) is None
            await lenient.set(sid, {"a": 2})
            assert await lenient.length() == 0
        own_server.start()
        await strict.set(sid, {"a": 3})
        assert await lenient.get(sid) == {"a": 3}
        await strict.close()
        await lenient.close()

    asyncio.run(main())
    assert redact(sid) in caplog.text
    assert sid not in caplog.text


@pytest.mark.parametrize("on_unavailable", ["raise", "empty"])
def test_logout_during_an_outage_fails_instead_of_leaving_the_session_valid(
    own_server: RedisServer, on_unavailable: str
) -> None:
    store = RedisStore(own_server.url, on_unavailable=on_unavailable)  # type: ignore[arg-type]
    sid = new_session_id()
    store.set(sid, {"user": "alice"})
    with redis.Redis.from_url(own_server.url) as raw:
        raw.save()  # the record outlives the outage, as on a Redis with persistence
    own_server.kill()
    with pytest.raises(StoreUnavailable):
        finishes(lambda: store.destroy(sid))
    own_server.start()
    assert store.get(sid) == {"user": "alice"}  # the logout did not happen, and said so
    assert store.destroy(sid) is True
    store.close()


def test_async_logout_during_an_outage_fails_in_empty_mode(own_server: RedisServer) -> None:
    async def main() -> None:
        store = AsyncRedisStore(own_server.url, on_unavailable="empty")
        sid = new_session_id()
        await store.set(sid, {"user": "alice"})
        own_server.kill()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.destroy(sid), 30)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.clear(), 30)
        await store.close()

    asyncio.run(main())


def test_a_write_to_a_former_primary_now_replica_is_store_unavailable(
    own_server: RedisServer, redis_server: RedisServer
) -> None:
    # After a failover the old primary is a read-only replica: its ReadOnlyError is an
    # outage to the store, not a raw redis-py error.
    store = RedisStore(own_server.url)
    with redis.Redis.from_url(own_server.url) as raw:
        raw.replicaof("127.0.0.1", redis_server.port)
        try:
            with pytest.raises(StoreUnavailable) as info:
                store.set(new_session_id(), {"a": 1})
            assert isinstance(info.value.__cause__, redis.exceptions.ReadOnlyError)
            with pytest.raises(StoreUnavailable):
                store.destroy(new_session_id())
        finally:
            raw.replicaof("NO", "ONE")
    store.set(new_session_id(), {"a": 1})  # a primary again: the store works on its own
    store.close()


def test_a_prefix_does_not_see_or_clear_a_longer_prefixs_sessions(
    redis_server: RedisServer,
) -> None:
    base = unique_prefix()
    app, admin = (
        RedisStore(redis_server.url, prefix=base),
        RedisStore(redis_server.url, prefix=base + "admin:"),
    )
    mine, theirs = new_session_id(), new_session_id()
    app.set(mine, {"who": "user"})
    admin.set(theirs, {"who": "admin"})
    assert app.all() == {mine: {"who": "user"}}
    assert len(app) == 1
    app.clear()
    assert admin.get(theirs) == {"who": "admin"}
    assert len(admin) == 1
    admin.clear()


def test_a_store_whose_prefix_names_another_stores_owner_set_leaves_it_alone(
    redis_server: RedisServer,
) -> None:
    base = unique_prefix()
    app = RedisStore(redis_server.url, prefix=base, owner_key="user")
    other = RedisStore(redis_server.url, prefix=base + "owner:42:")
    sid = new_session_id()
    app.set(sid, {"user": 42})
    assert len(other) == 0
    assert other.all() == {}
    other.clear()
    assert app.sessions_of(42) == [sid]
    assert app.destroy_sessions_of(42) == 1
    app.clear()


@pytest.mark.parametrize("prefix", ["app", "lembro", "app:admin", ""])
def test_a_prefix_without_the_separator_is_refused(prefix: str) -> None:
    for cls in (RedisStore, AsyncRedisStore):
        with pytest.raises(InvalidOption) as info:
            cls("redis://127.0.0.1:1/0", prefix=prefix)
        assert info.value.name == "prefix"


def test_a_session_id_with_the_separator_is_refused_before_anything_is_sent(
    store: RedisStore,
) -> None:
    with pytest.raises(InvalidOption):
        store.set("admin:" + new_session_id(), {"a": 1})
    assert store.get("admin:x") is None
    assert len(store) == 0


def test_many_sessions_on_a_cluster_span_every_primary_without_crossslot(
    redis_cluster: Cluster,
) -> None:
    with RedisStore(redis_cluster.url, prefix=unique_prefix()) as store:
        sids = [new_session_id() for _ in range(1300)]  # several batches, every slot range
        for i, sid in enumerate(sids):
            store.set(sid, {"i": i})
        nodes = {store.client.get_node_from_key(store.prefix + s).port for s in sids}
        assert len(nodes) == 3
        assert len(store) == 1300
        everything = store.all()
        assert len(everything) == 1300
        assert everything[sids[7]] == {"i": 7}
        assert store.stats().sessions == 1300
        store.clear()
        assert len(store) == 0


def test_ready_clients_of_every_kind_are_accepted(
    redis_cluster: Cluster, redis_sentinel: SentinelSetup, valkey_server: RedisServer
) -> None:
    import redis.asyncio
    import redis.cluster
    import redis.sentinel
    import valkey
    import valkey.asyncio

    port = redis_cluster.nodes[0].port
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", redis_sentinel.sentinel_port)])
    sync_clients = [
        redis.cluster.RedisCluster(host="127.0.0.1", port=port),
        sentinel.master_for(SERVICE),
        valkey.Valkey.from_url(valkey_server.url),
        valkey.ValkeyCluster(host="127.0.0.1", port=port),
    ]
    for client in sync_clients:
        with RedisStore(client=client, prefix=unique_prefix()) as store:
            sid = new_session_id()
            store.set(sid, {"via": type(client).__name__})
            assert store.get(sid) == {"via": type(client).__name__}
            store.clear()
        client.close()
    for sentinel_client in sentinel.sentinels:
        sentinel_client.close()

    async def main() -> None:
        import redis.asyncio.sentinel

        watcher = redis.asyncio.sentinel.Sentinel([("127.0.0.1", redis_sentinel.sentinel_port)])
        for client in [
            redis.asyncio.RedisCluster(host="127.0.0.1", port=port),
            watcher.master_for(SERVICE),
            valkey.asyncio.Valkey.from_url(valkey_server.url),
            valkey.asyncio.ValkeyCluster(host="127.0.0.1", port=port),
        ]:
            store = AsyncRedisStore(client=client, prefix=unique_prefix())
            sid = new_session_id()
            await store.set(sid, {"a": 1})
            assert await store.get(sid) == {"a": 1}
            await store.clear()
            await client.aclose()
        for watcher_client in watcher.sentinels:
            await watcher_client.aclose()

    asyncio.run(main())


def test_a_client_of_the_other_kind_is_refused(redis_server: RedisServer) -> None:
    sync_client = redis.Redis.from_url(redis_server.url)
    async_client = redis.asyncio.Redis.from_url(redis_server.url)
    with pytest.raises(InvalidOption):
        RedisStore(client=async_client)
    with pytest.raises(InvalidOption):
        AsyncRedisStore(client=sync_client)
    sync_client.close()
    asyncio.run(async_client.aclose())


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "redis+sentinel://127.0.0.1:26379", "redis+sentinel:///service"],
)
def test_a_url_the_store_cannot_use_is_refused(url: str) -> None:
    with pytest.raises(InvalidOption) as info:
        RedisStore(url)
    assert info.value.name == "url"


def test_a_unix_socket_url_works(tmp_path: Any) -> None:
    executable = find_redis_server()
    assert executable is not None
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(executable, args=["--unixsocket", str(socket_path)])
    server.start()
    try:
        with RedisStore(f"unix://{socket_path}") as store:
            sid = new_session_id()
            store.set(sid, {"over": "unix"})
            assert store.get(sid) == {"over": "unix"}
            assert repr(store).startswith(f"<RedisStore unix://{socket_path}")
    finally:
        server.close()


def test_urls_work_through_valkey_py_when_redis_py_is_missing(valkey_server: RedisServer) -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "from lembro import RedisStore\n"
        f"store = RedisStore({valkey_server.url!r}, prefix='lembro-test:valkey-only:')\n"
        "store.set('abc', {'via': 'valkey-py'})\n"
        "assert store.get('abc') == {'via': 'valkey-py'}\n"
        "assert type(store.client).__module__.startswith('valkey'), type(store.client)\n"
        "store.clear()\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_cluster_url_with_no_node_answering_is_store_unavailable() -> None:
    # A sync cluster client asks for the slot map when built: that is an outage too.
    with pytest.raises(StoreUnavailable):
        RedisStore("redis+cluster://127.0.0.1:1", connect_timeout=0.5)


def test_valkey_py_errors_are_store_unavailable_too(own_server: RedisServer) -> None:
    import valkey

    client = valkey.Valkey.from_url(own_server.url, socket_timeout=1.0)
    store = RedisStore(client=client, on_unavailable="empty")
    sid = new_session_id()
    store.set(sid, {"a": 1})
    own_server.kill()
    assert finishes(lambda: store.get(sid)) is None  # read as empty, not a raw valkey error
    with pytest.raises(StoreUnavailable) as info:
        finishes(lambda: store.destroy(sid))
    assert isinstance(info.value.__cause__, valkey.exceptions.ConnectionError)
    client.close()


def test_each_call_on_a_cluster_is_one_command_on_one_node(redis_cluster: Cluster) -> None:
    raws = [redis.Redis(port=node.port) for node in redis_cluster.nodes]

    def calls() -> dict[str, int]:
        total: dict[str, int] = {}
        for raw in raws:
            for name, n in command_calls(raw).items():
                total[name] = total.get(name, 0) + n
        total.pop("cluster|slots", None)
        total.pop("cluster|shards", None)
        return total

    with RedisStore(redis_cluster.url, prefix=unique_prefix()) as store:
        sid = new_session_id()
        assert len(store) == 0  # SCANs every primary: each node's connection is made now
        seen = []
        for op in (
            lambda: store.set(sid, {"a": 1}),
            lambda: store.get(sid),
            lambda: store.replace(sid, {"a": 2}),
            lambda: store.touch(sid),
            lambda: store.destroy(sid),
        ):
            before = calls()
            op()
            seen.append(delta(before, calls()))
        store.clear()
    guarded = {"eval": 1, "type": 1}
    assert seen == [
        {**guarded, "time": 1, "set": 1},
        {"get": 1},
        {**guarded, "time": 1, "get": 1, "set": 1},
        {**guarded, "time": 1, "get": 1, "pexpire": 1},
        {**guarded, "get": 1, "del": 1},
    ]
    for raw in raws:
        raw.close()


def test_a_full_redis_under_noeviction_is_store_unavailable(own_server: RedisServer) -> None:
    with redis.Redis.from_url(own_server.url) as raw, RedisStore(own_server.url) as store:
        sid = new_session_id()
        store.set(sid, {"a": 1})
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)  # below what Redis already uses: every write is refused
        try:
            with pytest.raises(StoreUnavailable) as info:
                store.set(new_session_id(), {"a": 2})
            assert isinstance(info.value.__cause__, redis.exceptions.OutOfMemoryError)
            assert store.get(sid) == {"a": 1}  # reads still work
        finally:
            raw.config_set("maxmemory", 0)
        store.set(new_session_id(), {"a": 3})


def test_a_sentinel_url_carries_the_servers_credentials(redis_sentinel: SentinelSetup) -> None:
    port = redis_sentinel.sentinel_port
    with redis.Redis(port=redis_sentinel.primary_port()) as raw:
        raw.acl_setuser(
            "lembro-user", enabled=True, passwords=["+s3cret"], commands=["+@all"], keys=["*"]
        )
    try:
        url = f"redis+sentinel://lembro-user:s3cret@127.0.0.1:{port}/{SERVICE}/0"
        with RedisStore(url, prefix=unique_prefix()) as store:
            sid = new_session_id()
            store.set(sid, {"a": 1})
            assert store.get(sid) == {"a": 1}
            assert store.client.acl_whoami() == "lembro-user"
            store.clear()
        wrong = f"redis+sentinel://lembro-user:wrong@127.0.0.1:{port}/{SERVICE}/0"
        with RedisStore(wrong) as store, pytest.raises(StoreUnavailable):
            store.get(new_session_id())
    finally:
        with redis.Redis(port=redis_sentinel.primary_port()) as raw:
            raw.acl_deluser("lembro-user")


def test_pickle_on_redis_needs_the_explicit_opt_in(redis_server: RedisServer) -> None:
    """Whoever can write a Redis key could run code through pickle: refused unless trusted."""
    with pytest.raises(InvalidOption, match="trust_pickle"):
        RedisStore(redis_server.url, serializer="pickle")
    with pytest.raises(InvalidOption, match="trust_pickle"):
        AsyncRedisStore(redis_server.url, serializer="pickle")
    with RedisStore(redis_server.url, serializer="pickle", trust_pickle=True) as store:
        store.set("pickled", {"n": 1})
        assert store.get("pickled") == {"n": 1}
        store.destroy("pickled")


# ---- the owner index: round trips ---------------------------------------------------------


class _Sends:
    """Writes to the socket by counting connections: one per round trip (a pipeline is
    one write)."""

    n = 0


class _CountingConnection(redis.connection.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Sends.n += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _AsyncCountingConnection(redis.asyncio.connection.Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Sends.n += 1
        await super().send_packed_command(command, check_health)


def round_trips(call: Callable[[], object]) -> int:
    before = _Sends.n
    call()
    return _Sends.n - before


def _each_op_round_trips(store: RedisStore) -> list[int]:
    """Round trips of a set, get, replace (a new owner), touch and destroy of one session."""
    sid = new_session_id()
    return [
        round_trips(lambda: store.set(sid, {"user": "ana"})),
        round_trips(lambda: store.get(sid)),
        round_trips(lambda: store.replace(sid, {"user": "bob"})),
        round_trips(lambda: store.touch(sid)),
        round_trips(lambda: store.destroy(sid)),
    ]


def test_owner_key_costs_no_extra_round_trip(redis_server: RedisServer, raw: redis.Redis) -> None:
    pool = redis.ConnectionPool.from_url(redis_server.url, connection_class=_CountingConnection)
    client = redis.Redis(connection_pool=pool)
    plain = RedisStore(client=client, prefix=unique_prefix())
    owned = RedisStore(client=client, prefix=unique_prefix(), owner_key="user")
    client.ping()  # the connection's handshake is not counted
    before = command_calls(raw)
    assert _each_op_round_trips(plain) == [1, 1, 1, 1, 1]
    after = command_calls(raw)
    guarded = {"eval": 4, "type": 4}  # set, replace, touch, destroy: see above
    scripts = {**guarded, "time": 3, "get": 4}  # the header read; TIME but on destroy
    assert delta(before, after) == {**scripts, "set": 2, "pexpire": 1, "del": 1}
    before = after
    assert _each_op_round_trips(owned) == [1, 1, 1, 1, 1]
    # The owner's set rides along: joined on each write and touch (a script: ZADD, and
    # PEXPIRE when its expiry must move later, which depends on the clock's millisecond),
    # its use counted on get, left on a change of owner and on destroy.
    used = delta(before, command_calls(raw))
    assert {k: n for k, n in used.items() if k not in ("pexpire", "pttl")} == {
        "set": 2,
        "get": 4,
        "time": 3,
        "eval": 3 + 4,  # three joins, and the four guarded commands
        "type": 4,
        "zadd": 4,
        "zrem": 2,
        "del": 1,
    }
    assert used["pttl"] == 3
    plain.clear()
    owned.clear()
    client.close()
    pool.disconnect()


def test_touch_of_a_session_this_store_has_not_seen_reads_its_owner(
    redis_server: RedisServer,
) -> None:
    # A second round trip, only then: the owner's set must outlive the touched session.
    pool = redis.ConnectionPool.from_url(redis_server.url, connection_class=_CountingConnection)
    client = redis.Redis(connection_pool=pool)
    prefix = unique_prefix()
    writer = RedisStore(redis_server.url, prefix=prefix, owner_key="user")
    toucher = RedisStore(client=client, prefix=prefix, owner_key="user")
    client.ping()
    owned, anonymous = new_session_id(), new_session_id()
    writer.set(owned, {"user": "ana"})
    writer.set(anonymous, {"cart": [1]})
    assert round_trips(lambda: toucher.touch(owned)) == 2
    assert round_trips(lambda: toucher.touch(owned)) == 1
    assert round_trips(lambda: toucher.touch(anonymous)) == 1
    assert round_trips(lambda: toucher.touch(anonymous)) == 1
    writer.clear()
    writer.close()
    client.close()
    pool.disconnect()


def test_async_owner_key_costs_no_extra_round_trip(redis_server: RedisServer) -> None:
    async def main() -> list[int]:
        pool = redis.asyncio.ConnectionPool.from_url(
            redis_server.url, connection_class=_AsyncCountingConnection
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        store = AsyncRedisStore(client=client, prefix=unique_prefix(), owner_key="user")
        await client.ping()
        sid = new_session_id()
        counts = []
        for call in (
            lambda: store.set(sid, {"user": "ana"}),
            lambda: store.get(sid),
            lambda: store.replace(sid, {"user": "bob"}),
            lambda: store.touch(sid),
            lambda: store.destroy(sid),
        ):
            before = _Sends.n
            await call()
            counts.append(_Sends.n - before)
        await store.clear()
        await client.aclose()
        await pool.disconnect()
        return counts

    assert asyncio.run(main()) == [1, 1, 1, 1, 1]


def test_an_owner_set_is_one_key_that_outlives_its_sessions(
    store: RedisStore, raw: redis.Redis
) -> None:
    owned = RedisStore(client=store.client, prefix=store.prefix, ttl=100.0, owner_key="user")
    short, long = new_session_id(), new_session_id()
    owned.set(short, {"user": "ana:{1}"}, ttl=50.0)
    owned.set(long, {"user": "ana:{1}"}, ttl=300.0)
    index = f"{store.prefix}owner:ana%3A%7B1%7D:"
    assert sorted(raw.scan_iter(match=store.prefix + "*")) == sorted(
        [index.encode(), (store.prefix + short).encode(), (store.prefix + long).encode()]
    )
    assert raw.zrange(index, 0, -1) == [short.encode(), long.encode()]
    # One ttl (100 s) past the longest-lived member, and a shorter write does not pull it in.
    assert 399_000 < raw.pttl(index) <= 400_000
    before = command_calls(raw)
    assert owned.sessions_of("ana:{1}") == [long, short]
    assert owned.destroy_sessions_of("ana:{1}", keep=long) == 1
    used = delta(before, command_calls(raw))
    assert not {"scan", "keys"} & used.keys()
    owned.clear()
    assert list(raw.scan_iter(match=store.prefix + "*")) == []


def test_a_logout_everywhere_between_a_writes_join_and_its_set_keeps_the_session_indexed(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """A write joins its owner's set before its SET lands; a logout everywhere that reads
    the set in between must not prune the member, or the session escapes the index."""
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, owner_key="user")
    sid = new_session_id()
    index = f"{prefix}owner:42:"
    raw.zadd(index, {sid: time.time()})  # the write's join, its SET still in flight
    assert store.destroy_sessions_of(42) == 0
    assert raw.zscore(index, sid) is not None  # not pruned: it joined moments ago
    raw.set(prefix + sid, store._serializer.dumps({"user": 42}))  # the SET lands
    assert store.sessions_of(42) == [sid]
    assert store.destroy_sessions_of(42) == 1
    assert store.get(sid) is None
    store.clear()


def test_a_member_whose_session_is_gone_is_pruned_when_read(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, owner_key="user")
    sid = new_session_id()
    index = f"{prefix}owner:42:"
    raw.zadd(index, {sid: time.time() - 60.0})  # joined a minute ago; its session is gone
    assert store.sessions_of(42) == []
    assert raw.zscore(index, sid) is None
    store.clear()


# ---- renew and time_left ----------------------------------------------------------------


def test_renew_reads_and_moves_the_expiry_in_one_script(
    store: RedisStore, raw: redis.Redis
) -> None:
    sid = new_session_id()
    store.set(sid, {"a": 1}, ttl=100)
    before = command_calls(raw)
    assert store.renew(sid, ttl=1000) == {"a": 1}
    # One script: the value read, its lifetime capped at its absolute end (Redis's TIME).
    used = delta(before, command_calls(raw))
    assert used == {"eval": 1, "type": 1, "time": 1, "get": 1, "pexpire": 1}
    assert 999_000 < raw.pttl(store.prefix + sid) <= 1_000_000
    assert 999 < (store.time_left(sid) or 0) <= 1000
    assert store.renew(new_session_id()) is None
    assert store.time_left(new_session_id()) is None
    assert (store.stats().hits, store.stats().misses) == (1, 1)
    with pytest.raises(InvalidOption):
        store.renew(sid, ttl=0)
    assert 999 < (store.time_left(sid) or 0) <= 1000  # unchanged by the refused call


def test_renew_keeps_the_owner_set_alive_past_the_session(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    with (
        RedisStore(redis_server.url, prefix=prefix, owner_key="user", ttl=100) as writer,
        RedisStore(redis_server.url, prefix=prefix, owner_key="user", ttl=100) as reader,
        redis.Redis.from_url(redis_server.url) as raw,
    ):
        sid = new_session_id()
        writer.set(sid, {"user": "ana"}, ttl=10)
        for store in (writer, reader):  # one knows the owner, the other learns it
            assert store.renew(sid, ttl=5000) == {"user": "ana"}
            assert raw.pttl(f"{prefix}owner:ana:") > 5_000_000
        assert reader.sessions_of("ana") == [sid]
        writer.clear()


# ---- the prefix is the store's alone ------------------------------------------------------


def test_a_store_on_app_owner_leaves_the_owner_set_of_user_owner_of_app(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """``app:owner:owner:`` is the owner set of user ``owner`` in the store on ``app:``; to
    the store on ``app:owner:`` it once looked like an owner set of its own."""
    base = unique_prefix()
    with (
        RedisStore(redis_server.url, prefix=base, owner_key="user") as app,
        RedisStore(redis_server.url, prefix=base + "owner:", owner_key="user") as other,
    ):
        sid = new_session_id()
        app.set(sid, {"user": "owner"})
        assert raw.exists(f"{base}owner:owner:") == 1
        other.clear()
        assert raw.exists(f"{base}owner:owner:") == 1
        assert app.sessions_of("owner") == [sid]
        assert app.destroy_sessions_of("owner") == 1
        app.clear()


@pytest.fixture
def foreign(store: RedisStore, raw: redis.Redis) -> Iterator[dict[str, str]]:
    """Another app's keys under the store's prefix, one of each kind; removed after."""
    keys = {kind: store.prefix + f"their-{kind}" for kind in ("string", "hash", "list", "zset")}
    raw.set(keys["string"], b"\xff\x00 not a session")
    raw.hset(keys["hash"], "field", "value")
    raw.rpush(keys["list"], "a", "b")
    raw.zadd(keys["zset"], {"member": 1})
    yield keys
    raw.delete(*keys.values())


def test_another_apps_keys_under_the_prefix_are_never_returned_or_counted(
    store: RedisStore, foreign: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    mine = new_session_id()
    store.set(mine, {"a": 1})
    with caplog.at_level(logging.WARNING, logger="lembro"):
        assert store.all() == {mine: {"a": 1}}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{store.prefix}their-…" in warnings[0]  # the id part shortened, as ids are
    assert len(store) == 1
    assert store.stats().sessions == 1
    for kind in ("string", "hash", "list", "zset"):
        name = f"their-{kind}"
        assert store.get(name) is None
        assert store.renew(name) is None
        assert name not in store
        assert store.time_left(name) is None
    assert (store.stats().hits, store.stats().misses) == (0, 8)


def test_another_apps_keys_under_the_prefix_are_never_overwritten_or_deleted(
    store: RedisStore, raw: redis.Redis, foreign: dict[str, str]
) -> None:
    raw.expire(foreign["list"], 3600)
    for kind in ("hash", "list", "zset"):
        name = f"their-{kind}"
        assert store.replace(name, {"a": 1}) is False
        assert store.touch(name, ttl=5) is False
        assert store.destroy(name) is False
        with pytest.raises(InvalidOption):
            store.set(name, {"a": 1})
    store.clear()
    assert raw.lrange(foreign["list"], 0, -1) == [b"a", b"b"]
    assert raw.ttl(foreign["list"]) > 3000  # touch did not move it
    assert raw.hgetall(foreign["hash"]) == {b"field": b"value"}
    assert raw.zrange(foreign["zset"], 0, -1) == [b"member"]
    assert raw.get(foreign["string"]) == b"\xff\x00 not a session"  # clear() left it


def test_the_async_store_skips_another_apps_keys_too(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    prefix = unique_prefix()
    raw.rpush(prefix + "their-list", "a")
    raw.set(prefix + "their-string", b"\xff not a session")

    async def main() -> None:
        async with AsyncRedisStore(redis_server.url, prefix=prefix) as store:
            assert await store.get("their-list") is None
            assert await store.replace("their-list", {"a": 1}) is False
            assert await store.all() == {}
            assert await store.length() == 0  # another app's string is no session
            assert not await store.contains("their-string")
            await store.clear()

    asyncio.run(main())
    assert raw.lrange(prefix + "their-list", 0, -1) == [b"a"]
    raw.delete(prefix + "their-list", prefix + "their-string")


# ---- any odd reply is a LembroError -----------------------------------------------------------


@pytest.fixture
def not_redis() -> Iterator[str]:
    """A URL of a loopback server that answers every request with an HTTP error."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_server_that_is_not_redis_is_store_unavailable(
    not_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisStore(not_redis, socket_timeout=2.0) as strict:
        with pytest.raises(StoreUnavailable) as info:
            finishes(lambda: strict.get(new_session_id()))
        assert isinstance(info.value.__cause__, redis.exceptions.InvalidResponse)
    with RedisStore(not_redis, on_unavailable="empty") as lenient:
        with caplog.at_level(logging.WARNING, logger="lembro"):
            assert finishes(lambda: lenient.get(new_session_id())) is None
        assert "unavailable" in caplog.text
        with pytest.raises(StoreUnavailable):  # a logout still fails closed
            finishes(lambda: lenient.destroy(new_session_id()))

    async def main() -> None:
        async with AsyncRedisStore(not_redis, on_unavailable="empty") as store:
            assert await asyncio.wait_for(store.get(new_session_id()), 30) is None
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.destroy(new_session_id()), 30)

    asyncio.run(main())


def test_a_command_redis_refuses_is_store_unavailable_not_a_raw_error(
    own_server: RedisServer,
) -> None:
    with redis.Redis.from_url(own_server.url) as raw:
        raw.acl_setuser(
            "no-scripts", enabled=True, passwords=["+pw"], commands=["+@all", "-eval"], keys=["*"]
        )
    url = f"redis://no-scripts:pw@127.0.0.1:{own_server.port}/0"
    for on_unavailable in ("raise", "empty"):
        with RedisStore(url, on_unavailable=on_unavailable) as store:  # type: ignore[arg-type]
            with pytest.raises(StoreUnavailable) as info:
                store.set(new_session_id(), {"a": 1})
            assert isinstance(info.value.__cause__, redis.exceptions.NoPermissionError)
            assert store.get(new_session_id()) is None  # GET is allowed


def test_an_oversized_session_is_refused_before_anything_is_sent(
    store: RedisStore, raw: redis.Redis
) -> None:
    sid = new_session_id()
    store.set(sid, {"a": 1})
    assert store.max_session_bytes == lembro.redis.DEFAULT_MAX_SESSION_BYTES == 4 * 1024**2
    before = command_calls(raw)
    for write in (store.set, store.replace):
        with pytest.raises(SessionTooLarge) as info:
            write(sid, {"blob": "x" * (4 * 1024**2)})
        assert info.value.size > info.value.max_size == 4 * 1024**2
    assert delta(before, command_calls(raw)) == {}
    assert store.get(sid) == {"a": 1}
    with RedisStore(client=store.client, prefix=store.prefix, max_session_bytes="1K") as small:
        with pytest.raises(SessionTooLarge):
            small.set(sid, {"blob": "x" * 2000})
        small.set(sid, {"blob": "x" * 500})


@pytest.mark.parametrize("limit", [0, "huge", 512 * 1024**2 + 1, "1G"])
def test_a_session_limit_redis_could_not_take_is_refused(limit: Any) -> None:
    # Redis closes the connection on a value over 512 MiB (proto-max-bulk-len), which a
    # client cannot tell from an outage: the store never sends one.
    for cls in (RedisStore, AsyncRedisStore):
        with pytest.raises(LembroError):
            cls("redis://127.0.0.1:1/0", max_session_bytes=limit)


# ---- the options ---------------------------------------------------------------------------


def test_as_async_carries_every_option_whole(redis_server: RedisServer) -> None:
    with RedisStore(
        redis_server.url,
        prefix=unique_prefix(),
        serializer="pickle",
        trust_pickle=True,
        max_session_bytes="64K",
        owner_key="user",
        on_unavailable="empty",
    ) as store:
        twin = store.as_async()
        assert isinstance(twin, AsyncRedisStore)
        assert twin.options is store.options
        sid = new_session_id()

        async def main() -> None:
            await twin.set(sid, {"user": "ana", "when": {1, 2}})
            with pytest.raises(SessionTooLarge):
                await twin.set(sid, {"blob": "x" * 70_000})
            await twin.close()

        asyncio.run(main())
        assert store.get(sid) == {"user": "ana", "when": {1, 2}}
        assert store.sessions_of("ana") == [sid]
        store.clear()


def test_options_are_one_frozen_object() -> None:
    options = RedisOptions(prefix="app:", ttl=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.ttl = 20  # type: ignore[misc]
    store = RedisStore.from_options(options)
    assert (store.options, store.prefix, store.ttl) == (options, "app:", 10.0)
    assert AsyncRedisStore.from_options(options).options is options
    with pytest.raises(InvalidOption):
        RedisOptions(prefix="app")
    with pytest.raises(InvalidOption):
        RedisStore.from_options({"prefix": "app:"})  # type: ignore[arg-type]
    store.close()


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        ("redis+sentinel://127.0.0.1/service", [("127.0.0.1", 26379)]),
        ("redis+sentinel://[::1]/service/2", [("::1", 26379)]),
        ("redis+sentinel://a:26380,b/service", [("a", 26380), ("b", 26379)]),
        ("redis+sentinel://u:p@[::1]:26381/service", [("::1", 26381)]),
    ],
)
def test_a_sentinel_url_without_a_port_uses_sentinels_own(
    url: str, nodes: list[tuple[str, int]]
) -> None:
    store = RedisStore(url)  # no connection is opened until the first call
    seen = [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in store._helpers
    ]
    assert seen == nodes
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:port/service",
        "redis+sentinel://127.0.0.1:70000/service",
        "redis+sentinel://127.0.0.1/service/db",
        "redis://127.0.0.1:port/0",
    ],
)
def test_a_url_with_a_bad_port_or_db_is_invalid_option(url: str) -> None:
    with pytest.raises(InvalidOption) as info:
        RedisStore(url)
    assert info.value.name == "url"


def test_a_paused_cluster_primary_costs_one_socket_timeout_per_call(
    redis_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP: the node takes the command and never answers. The call must send it once
    (one socket_timeout), not once more on a retry of the timeout."""
    store = RedisStore(redis_cluster.url, prefix=unique_prefix(), socket_timeout=0.3)
    victim = redis_cluster.nodes[1]
    while True:
        sid = new_session_id()
        if store.client.get_node_from_key(store.prefix + sid).port == victim.port:
            break
    store.set(sid, {"a": 1})
    sends: list[int] = []
    send = redis.connection.Connection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(self.port)
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    victim.pause()
    try:
        with pytest.raises(StoreUnavailable) as info:
            finishes(lambda: store.get(sid))
        assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
    finally:
        victim.resume()
    assert sends.count(victim.port) == 1
    monkeypatch.undo()
    redis_cluster.wait_ok()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the node comes back: so does the store
        with contextlib.suppress(StoreUnavailable):
            if store.get(sid) == {"a": 1}:
                break
    assert store.get(sid) == {"a": 1}
    store.clear()
    store.close()


def test_a_paused_cluster_primary_costs_the_async_store_one_socket_timeout_per_call(
    redis_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = RedisStore(redis_cluster.url, prefix=unique_prefix())
    victim = redis_cluster.nodes[2]
    while True:
        sid = new_session_id()
        if probe.client.get_node_from_key(probe.prefix + sid).port == victim.port:
            break
    probe.close()
    sends: list[int] = []
    send = redis.asyncio.connection.Connection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(self.port)
        await send(self, command, check_health)

    async def main() -> None:
        store = AsyncRedisStore(redis_cluster.url, prefix=probe.prefix, socket_timeout=0.3)
        await store.set(sid, {"a": 1})
        monkeypatch.setattr(redis.asyncio.connection.Connection, "send_packed_command", counted)
        victim.pause()
        try:
            with pytest.raises(StoreUnavailable) as info:
                await asyncio.wait_for(store.get(sid), 30)
            assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
        finally:
            victim.resume()
            monkeypatch.undo()
        await store.close()

    asyncio.run(main())
    assert sends.count(victim.port) == 1
    redis_cluster.wait_ok()
    with RedisStore(redis_cluster.url, prefix=probe.prefix) as store:
        store.clear()


def test_the_two_stores_offer_the_same_operations_with_the_same_arguments() -> None:
    """Both are thin drivers of one set of steps: an operation added to one and not the
    other, or with other arguments, is caught here."""
    renamed = {"__len__": "length", "__contains__": "contains"}
    shared = {"client", "options", "from_options"}
    sync_only = {"as_async", "blocking", "__enter__", "__exit__"}
    for name in sorted(set(vars(RedisStore)) - sync_only - {"__doc__", "__module__"}):
        if name.startswith("_") and name not in renamed:
            continue
        twin = getattr(AsyncRedisStore, renamed.get(name, name))
        if name in shared or isinstance(twin, property):
            continue
        assert inspect.iscoroutinefunction(twin), name
        ours = inspect.signature(getattr(RedisStore, name))
        theirs = inspect.signature(twin)
        if name == "__contains__":
            assert list(theirs.parameters) == ["self", "sid"]
            continue
        assert [(p.name, p.default) for p in ours.parameters.values()] == [
            (p.name, p.default) for p in theirs.parameters.values()
        ], name
