"""Issue 29 on Redis: what only a Redis store has of lifetimes, renewal and devices.

The header in each session's own value, values written before it, the PX cap at the
absolute end (read back with PTTL from a real server), aliases as the old id's own key,
and the claims that one operation is one step (a logout racing a renewal never leaves a
session behind). The shared semantics are the contract's (tests/contract). Each test
runs on one redis-server, on a 3-primary Cluster, where a rename's two keys live in
different slots, and through Sentinel. Times in the past are written into headers, not
waited for.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lembro import AsyncRedisStore, InvalidOption, RedisStore
from lembro.ids import new_session_id
from lembro.lifetimes import Device, Loaded
from lembro.redis import record

from ..redis_server import RedisServer
from ..topologies import Cluster, SentinelSetup

MINUTE_MS = 60_000


SERVERS = {"redis": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}


@pytest.fixture(params=list(SERVERS))
def url(request: pytest.FixtureRequest) -> str:
    server: RedisServer | Cluster | SentinelSetup = request.getfixturevalue(SERVERS[request.param])
    return server.url


@pytest.fixture
def make(url: str) -> Iterator[Callable[..., RedisStore]]:
    """Stores on the deployment, each under a prefix of its own; cleared and closed."""
    made: list[RedisStore] = []

    def build(**options: Any) -> RedisStore:
        store = RedisStore(url, prefix=f"lembro-test:{uuid.uuid4().hex[:12]}:", **options)
        made.append(store)
        return store

    yield build
    for store in made:
        store.clear()
        store.close()


def redis_now_ms(store: RedisStore) -> int:
    seconds, micros = store.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def raw_value(store: RedisStore, sid: str) -> bytes | None:
    value: bytes | None = store.client.get(store.prefix + sid)
    return value


def header_of(store: RedisStore, sid: str) -> record.Header:
    value = raw_value(store, sid)
    assert value is not None
    parsed = record.split(value)
    assert isinstance(parsed, tuple)
    assert parsed[0] is not None
    return parsed[0]


def write_raw(
    store: RedisStore,
    sid: str,
    data: dict[str, Any],
    *,
    created: int,
    renewed: int,
    seen: int,
    absolute_end: int = 0,
    px: int = 600_000,
) -> None:
    """A session as the store writes it, with times chosen by the test."""
    head = f"\xc1L1 {created} {renewed} {seen} {absolute_end} -1 -1\n".encode("latin-1")
    store.client.set(store.prefix + sid, head + store._serializer.dumps(data), px=px)


def eventually(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll ``check`` until true; fail after ``limit`` seconds (a hang guard only)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    pytest.fail(f"{what}: not within {limit}s")


# ---- the header ---------------------------------------------------------------------


def test_the_header_holds_times_and_device_before_the_serialized_session(
    make: Callable[..., RedisStore],
) -> None:
    store = make(absolute_ttl=3600)
    sid = new_session_id()
    before = redis_now_ms(store)
    store.set(sid, {"a": 1}, device=Device(ip="203.0.113.7", user_agent="Firefox é|\n"))
    after = redis_now_ms(store)
    value = raw_value(store, sid)
    assert value is not None
    assert value.startswith(b"\xc1L1 ")
    header, blob = record.split(value)  # type: ignore[misc]
    assert header is not None
    assert before <= header.created <= after
    assert header.created == header.renewed == header.last_seen
    assert header.absolute_end == header.created + 3_600_000
    assert (header.ip, header.user_agent) == ("203.0.113.7", "Firefox é|\n")
    assert store._serializer.loads(blob) == {"a": 1}
    # A write over the session keeps its header: the device is the creation's.
    store.set(sid, {"a": 2}, device=Device(ip="198.51.100.1"))
    again = header_of(store, sid)
    assert (again.created, again.ip, again.absolute_end) == (
        header.created,
        "203.0.113.7",
        header.absolute_end,
    )
    assert store.get(sid) == {"a": 2}


def test_a_session_without_device_has_none_in_its_header(make: Callable[..., RedisStore]) -> None:
    store = make()
    sid = new_session_id()
    store.set(sid, {"a": 1})
    header = header_of(store, sid)
    assert (header.ip, header.user_agent, header.absolute_end) == (None, None, 0)
    info = store.session_info(sid)
    assert info is not None
    assert (info.ip, info.user_agent, info.absolute_expires) == (
        None,
        None,
        None,
    )


def test_a_long_user_agent_is_cut_to_512_characters(make: Callable[..., RedisStore]) -> None:
    store = make()
    sid = new_session_id()
    store.set(sid, {}, device=Device(user_agent="x" * 2000))
    assert header_of(store, sid).user_agent == "x" * 512


def test_a_value_written_before_the_header_still_reads_and_gets_one_on_load(
    make: Callable[..., RedisStore],
) -> None:
    store = make(absolute_ttl=3600)
    sid = new_session_id()
    # The bytes the previous version wrote: the serialized session alone.
    store.client.set(store.prefix + sid, store._serializer.dumps({"old": True}), px=600_000)
    assert store.get(sid) == {"old": True}
    assert store.all() == {sid: {"old": True}}
    assert len(store) == 1  # read whole to tell it from another app's string
    assert store.stats().sessions == 1
    assert sid in store
    left = store.time_left(sid)
    assert left is not None
    assert 0 < left <= 600
    first_seen = redis_now_ms(store)
    info = store.session_info(sid)
    assert info is not None
    assert info.absolute_expires is None
    loaded = store.load(sid)
    assert loaded is not None
    assert (loaded.sid, loaded.data) == (sid, {"old": True})
    header = header_of(store, sid)
    assert header.created >= first_seen - 1000
    assert header.absolute_end == header.created + 3_600_000
    assert loaded.absolute_left is not None
    assert 3590 < loaded.absolute_left <= 3600
    assert store.client.pttl(store.prefix + sid) <= 600_000  # never lengthened by it
    again = store.load(sid)
    assert again is not None
    assert again.sid == sid
    assert header_of(store, sid) == header
    assert store.get(sid) == {"old": True}


def test_an_old_value_is_renamed_updated_and_touched_as_a_session_first_seen_now(
    make: Callable[..., RedisStore],
) -> None:
    store = make(absolute_ttl=100)
    old, new = new_session_id(), new_session_id()
    store.client.set(store.prefix + old, store._serializer.dumps({"n": 1}), px=600_000)
    assert store.touch(old, ttl=1000)
    assert store.client.pttl(store.prefix + old) > 900_000  # no header: no absolute end yet
    assert store.update(old, {"n": 2})
    assert store.get(old) == {"n": 2}
    assert header_of(store, old).absolute_end > 0  # the update gave it a header
    assert store.rename(old, new, {"n": 3}, reset_lifetime=False)
    assert store.get(new) == {"n": 3}
    assert store.client.pttl(store.prefix + new) <= 100_000


# ---- the PX cap -----------------------------------------------------------------------


def test_no_operation_moves_the_expiry_past_the_absolute_end(
    make: Callable[..., RedisStore],
) -> None:
    store = make(absolute_ttl=50, ttl=1000, owner_key="user")
    sid = new_session_id()
    key = store.prefix + sid

    def capped() -> bool:
        left = store.client.pttl(key)
        return 0 < left <= 50_000

    store.set(sid, {"user": "ana"})
    assert capped()
    end = header_of(store, sid).absolute_end
    for op in (
        lambda: store.touch(sid, ttl=5000),
        lambda: store.renew(sid, ttl=5000),
        lambda: store.set(sid, {"user": "ana", "n": 1}, ttl=5000),
        lambda: store.replace(sid, {"user": "ana", "n": 2}, ttl=5000),
        lambda: store.update(sid, {"n": 3}, ttl=5000),
        lambda: store.update(sid, {}, ttl=5000),
        lambda: store.load(sid),
    ):
        op()
        assert capped()
        assert header_of(store, sid).absolute_end == end
    left = store.time_left(sid)
    assert left is not None
    assert left <= 50
    info = store.session_info(sid)
    assert info is not None
    assert info.expires <= info.absolute_expires
    # A renewal inside one sign-in keeps the end; a sign-in starts a new one.
    kept, fresh = new_session_id(), new_session_id()
    assert store.rename(sid, kept, {"user": "ana"}, ttl=5000, reset_lifetime=False)
    assert header_of(store, kept).absolute_end == end
    assert 0 < store.client.pttl(store.prefix + kept) <= 50_000
    assert store.rename(kept, fresh, {"user": "ana"}, ttl=5000)
    assert header_of(store, fresh).absolute_end > end - 1  # created again, now
    assert header_of(store, fresh).created >= header_of(store, fresh).absolute_end - 50_000


def test_a_session_ends_at_its_absolute_end_however_often_it_is_used(
    make: Callable[..., RedisStore],
) -> None:
    store = make(absolute_ttl=0.3, ttl=60)
    sid = new_session_id()
    store.set(sid, {"a": 1})
    assert store.get(sid) == {"a": 1}

    def gone() -> bool:
        store.touch(sid)
        store.renew(sid)
        store.update(sid, {"b": 2})
        return store.get(sid) is None

    eventually(gone, "the session's absolute end")
    assert store.load(sid) is None
    assert not store.replace(sid, {"a": 2})
    assert sid not in store


# ---- load: last_seen, renewal, aliases --------------------------------------------------


def test_load_writes_last_seen_only_when_the_stored_one_is_a_minute_old(
    make: Callable[..., RedisStore],
) -> None:
    store = make()
    sid = new_session_id()
    now = redis_now_ms(store)
    write_raw(store, sid, {"a": 1}, created=now - 5000, renewed=now - 5000, seen=now - 5000)
    before = raw_value(store, sid)
    assert store.load(sid) == Loaded(sid, {"a": 1}, None)
    assert raw_value(store, sid) == before  # nothing written
    write_raw(store, sid, {"a": 1}, created=now, renewed=now, seen=now - MINUTE_MS - 1, px=500_000)
    loaded = store.load(sid)
    assert loaded is not None
    assert loaded.sid == sid
    assert header_of(store, sid).last_seen >= now
    assert header_of(store, sid).created == now
    assert store.client.pttl(store.prefix + sid) <= 500_000  # KEEPTTL: not extended


def test_load_renews_an_old_id_and_the_old_one_answers_during_its_grace(
    make: Callable[..., RedisStore],
) -> None:
    store = make(renew_every=300, renew_grace=30, absolute_ttl=7200, owner_key="user")
    old = new_session_id()
    now = redis_now_ms(store)
    write_raw(
        store,
        old,
        {"user": "ana"},
        created=now - 600_000,
        renewed=now - 301_000,
        seen=now - 1000,
        absolute_end=now - 600_000 + 7_200_000,
    )
    loaded = store.load(old)
    assert loaded is not None
    assert loaded.sid != old
    assert loaded.data == {"user": "ana"}
    new = loaded.sid
    assert loaded.absolute_left is not None
    assert 6590 < loaded.absolute_left <= 6600
    header = header_of(store, new)
    assert header.created == now - 600_000  # one sign-in: created kept
    # The new id keeps the session's expiry (written with 600 s): a renewal is no use.
    assert 590_000 < store.client.pttl(store.prefix + new) <= 600_000
    assert header.renewed >= now
    # The old id's own key is an alias, for as long as the new session can live.
    alias = record.split(raw_value(store, old) or b"")
    assert isinstance(alias, record.Alias)
    assert alias.target == new
    assert 6_500_000 < store.client.pttl(store.prefix + old) <= 6_600_000
    assert old not in store
    assert new in store
    assert store.sessions_of("ana") == [new]
    # In its grace, the old id answers as the new one, and is not renewed again.
    again = store.load(old)
    assert again is not None
    assert (again.sid, again.data) == (new, {"user": "ana"})
    assert store.get(old) == {"user": "ana"}
    assert store.update(old, {"n": 1})
    assert store.get(new) == {"user": "ana", "n": 1}
    latest = store.load(new)
    assert latest is not None
    assert latest.sid == new
    info = store.session_info(old)  # in its grace, the old id answers as its session
    assert info is not None
    assert info.id == new


def test_an_id_presented_after_its_grace_is_a_stolen_cookie(
    make: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = make(owner_key="user")
    old, new = new_session_id(), new_session_id()
    store.set(old, {"user": "ana"})
    assert store.rename(old, new, {"user": "ana"}, grace=30)
    # The grace ended: written as it would be then.
    past = redis_now_ms(store) - 1
    store.client.set(store.prefix + old, record.alias_value(past, new), px=60_000)
    with caplog.at_level(logging.WARNING, logger="lembro"):
        assert store.load(old) is None
    assert store.get(new) is None  # the session it was replaced by is ended
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "stolen" in warnings[0]
    assert "'ana'" in warnings[0]
    assert old not in warnings[0]
    assert new not in warnings[0]
    assert store.stats().misses >= 1


def test_get_treats_a_replaced_id_after_its_grace_as_stolen_too(
    make: Callable[..., RedisStore],
) -> None:
    store = make()
    old, new = new_session_id(), new_session_id()
    store.set(old, {"a": 1})
    assert store.rename(old, new, {"a": 1}, grace=30)
    assert store.get(old) == {"a": 1}
    past = redis_now_ms(store) - 1
    store.client.set(store.prefix + old, record.alias_value(past, new), px=60_000)
    assert store.get(old) is None
    assert store.get(new) is None


def test_a_logout_with_an_id_past_its_grace_ends_the_session_as_a_stolen_cookie(
    make: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = make(owner_key="user")
    old, new = new_session_id(), new_session_id()
    store.set(old, {"user": "ana"})
    assert store.rename(old, new, {"user": "ana"}, grace=30)
    past = redis_now_ms(store) - 1
    store.client.set(store.prefix + old, record.alias_value(past, new), px=60_000)
    with caplog.at_level(logging.WARNING, logger="lembro"):
        assert store.destroy(old)
    assert store.get(new) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "stolen" in warnings[0]
    assert "'ana'" in warnings[0]


def test_an_old_id_presented_after_a_logout_warns_of_nothing(
    make: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = make()
    old, new = new_session_id(), new_session_id()
    store.set(old, {"a": 1})
    assert store.rename(old, new, {"a": 1}, grace=30)
    assert store.destroy(new)  # the user logged out
    past = redis_now_ms(store) - 1
    store.client.set(store.prefix + old, record.alias_value(past, new), px=60_000)
    with caplog.at_level(logging.WARNING, logger="lembro"):
        assert store.load(old) is None
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert raw_value(store, old) is None  # the alias is gone with it


def test_destroying_the_old_id_during_its_grace_ends_the_new_session(
    make: Callable[..., RedisStore],
) -> None:
    store = make(owner_key="user")
    old, new = new_session_id(), new_session_id()
    store.set(old, {"user": "ana"})
    assert store.rename(old, new, {"user": "ana"}, grace=30, reset_lifetime=False)
    assert store.destroy(old)
    assert store.get(new) is None
    assert store.get(old) is None
    assert raw_value(store, old) is None
    assert raw_value(store, new) is None
    assert store.sessions_of("ana") == []


def test_a_write_through_an_id_in_its_grace_never_brings_back_a_logged_out_session(
    make: Callable[..., RedisStore],
) -> None:
    store = make()
    old, new = new_session_id(), new_session_id()
    store.set(old, {"a": 1})
    assert store.rename(old, new, {"a": 1}, grace=30)
    store.set(old, {"a": 2})  # a request in flight with the old cookie
    assert store.get(new) == {"a": 2}
    assert store.destroy(new)  # the logout, from the new cookie
    store.set(old, {"a": 3})
    assert not store.replace(old, {"a": 4})
    assert not store.update(old, {"a": 5})
    assert not store.touch(old)
    assert store.get(new) is None
    assert store.get(old) is None


def test_a_regenerate_from_an_id_in_its_grace_moves_the_session_it_names(
    make: Callable[..., RedisStore],
) -> None:
    store = make(owner_key="user")
    old, new, signed_in = new_session_id(), new_session_id(), new_session_id()
    store.set(old, {"user": "ana"})
    assert store.rename(old, new, {"user": "ana"}, grace=30, reset_lifetime=False)
    created = store.stats().created
    # A request in flight with the old cookie names the id the session has: in place.
    assert store.rename(old, new, {"user": "ana", "n": 1})
    assert store.get(new) == {"user": "ana", "n": 1}
    assert store.stats().created == created
    # It signs in: the session moves on from the id it has.
    assert store.rename(old, signed_in, {"user": "ana", "n": 2})
    assert store.get(new) is None
    assert store.get(signed_in) == {"user": "ana", "n": 2}
    assert store.sessions_of("ana") == [signed_in]
    assert store.all() == {signed_in: {"user": "ana", "n": 2}}


def test_a_sign_in_forgets_the_ids_its_session_had_before(
    make: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    # A planted id renewed into the victim's session must not reach it once signed in,
    # even through a sign-in that leaves a grace of its own.
    store = make(owner_key="user")
    planted, renewed, signed_in = new_session_id(), new_session_id(), new_session_id()
    store.set(planted, {"theme": "dark"})
    assert store.rename(planted, renewed, {"theme": "dark"}, grace=30, reset_lifetime=False)
    assert store.get(planted) == {"theme": "dark"}  # in its grace
    assert store.rename(renewed, signed_in, {"user": "ana"}, grace=30)
    assert store.get(renewed) == {"user": "ana"}  # the signing-in browser's request in flight
    with caplog.at_level(logging.WARNING, logger="lembro"):
        assert store.get(planted) is None
        assert store.load(planted) is None
        assert not store.update(planted, {"n": 1})
        assert not store.touch(planted)
        assert store.session_info(planted) is None
        assert not store.destroy(planted)
    assert store.get(signed_in) == {"user": "ana"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_short_grace_ends_by_itself(make: Callable[..., RedisStore]) -> None:
    store = make()
    old, new = new_session_id(), new_session_id()
    store.set(old, {"a": 1})
    assert store.rename(old, new, {"a": 1}, grace=0.2)
    assert store.get(old) == {"a": 1}

    def ended() -> bool:
        alias = record.split(raw_value(store, old) or b"")
        return isinstance(alias, record.Alias) and redis_now_ms(store) >= alias.grace_end

    eventually(ended, "the grace's end")
    assert store.load(old) is None
    assert store.get(new) is None


def test_a_rename_without_grace_leaves_no_alias(make: Callable[..., RedisStore]) -> None:
    store = make()
    old, new = new_session_id(), new_session_id()
    store.set(old, {"a": 1}, device=Device(ip="192.0.2.1"))
    assert store.rename(old, new, {"a": 2}, device=Device(ip="192.0.2.9", user_agent="UA"))
    assert raw_value(store, old) is None
    assert (header_of(store, new).ip, header_of(store, new).user_agent) == ("192.0.2.9", "UA")
    third = new_session_id()
    assert store.rename(new, third, {"a": 3})  # no device: the old one's is kept
    assert header_of(store, third).ip == "192.0.2.9"


# ---- one step each ----------------------------------------------------------------------


def test_a_logout_racing_a_renewal_never_leaves_a_session_behind(
    make: Callable[..., RedisStore],
) -> None:
    store = make(renew_every=60, renew_grace=30)
    for _ in range(40):
        old = new_session_id()
        now = redis_now_ms(store)
        write_raw(store, old, {"a": 1}, created=now, renewed=now - 61_000, seen=now)
        start = threading.Barrier(2)
        loaded: list[Loaded | None] = []

        def load(
            old: str = old, start: threading.Barrier = start, loaded: list[Any] = loaded
        ) -> None:
            start.wait()
            loaded.append(store.load(old))

        reader = threading.Thread(target=load)
        reader.start()
        start.wait()
        assert store.destroy(old)
        reader.join()
        # Whatever came first, no session is left: the logout ended the renewed one too.
        (got,) = loaded
        if got is not None:
            assert store.get(got.sid) is None
        assert store.get(old) is None
        assert len(store.all()) == 0


def test_a_logout_racing_a_rename_with_grace_never_leaves_a_session_behind(
    make: Callable[..., RedisStore],
) -> None:
    store = make(owner_key="user")
    for _ in range(40):
        old, new = new_session_id(), new_session_id()
        store.set(old, {"user": "ana"})
        start = threading.Barrier(2)
        renamed: list[bool] = []

        def rename(
            old: str = old,
            new: str = new,
            start: threading.Barrier = start,
            renamed: list[bool] = renamed,
        ) -> None:
            start.wait()
            renamed.append(store.rename(old, new, {"user": "ana"}, grace=30))

        thread = threading.Thread(target=rename)
        thread.start()
        start.wait()
        assert store.destroy(old)
        thread.join()
        assert store.get(new) is None
        assert store.get(old) is None
        assert store.all() == {}
        assert store.sessions_of("ana") == []


def test_two_requests_renewing_one_session_at_once_end_on_one_new_id(
    make: Callable[..., RedisStore],
) -> None:
    store = make(renew_every=60, renew_grace=30)
    for _ in range(20):
        old = new_session_id()
        now = redis_now_ms(store)
        write_raw(store, old, {"a": 1}, created=now, renewed=now - 61_000, seen=now)
        start = threading.Barrier(2)
        seen: list[Loaded | None] = []

        def load(old: str = old, start: threading.Barrier = start, seen: list[Any] = seen) -> None:
            start.wait()
            seen.append(store.load(old))

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sids = {got.sid for got in seen if got is not None}
        assert len(sids) == 1
        assert old not in sids
        assert list(store.all()) == list(sids)
        store.clear()


# ---- devices, owners, limits ------------------------------------------------------------


def test_sessions_of_with_info_and_destroy_session_of(make: Callable[..., RedisStore]) -> None:
    store = make(owner_key="user", absolute_ttl=3600)
    now = redis_now_ms(store)
    laptop, phone, theirs = new_session_id(), new_session_id(), new_session_id()
    write_raw(store, laptop, {"user": "ana"}, created=now - 9000, renewed=now, seen=now - 5000)
    write_raw(store, phone, {"user": "ana"}, created=now - 8000, renewed=now, seen=now - 1000)
    store.set(theirs, {"user": "bob"})
    for sid in (laptop, phone):
        store.client.zadd(store._owner_index("ana"), {sid: time.time()})
    infos = store.sessions_of("ana", info=True)
    assert [info.id for info in infos] == [phone, laptop]  # most recently seen first
    assert all(info.owner == "ana" for info in infos)
    assert infos[0].created < infos[0].last_seen
    assert not store.destroy_session_of("ana", theirs)  # bob's: refused
    assert store.get(theirs) == {"user": "bob"}
    assert store.destroy_session_of("ana", laptop)
    assert store.sessions_of("ana") == [phone]
    assert not store.destroy_session_of("ana", laptop)
    assert store.stats().logouts == 1


def test_max_sessions_per_user_ends_the_oldest_sign_in(make: Callable[..., RedisStore]) -> None:
    store = make(owner_key="user", max_sessions_per_user=2)
    now = redis_now_ms(store)
    first, second, third = new_session_id(), new_session_id(), new_session_id()
    write_raw(store, first, {"user": "ana"}, created=now - 3000, renewed=now, seen=now)
    write_raw(store, second, {"user": "ana"}, created=now - 9000, renewed=now, seen=now)
    for sid in (first, second):
        store.client.zadd(store._owner_index("ana"), {sid: time.time()})
    store.set(third, {"user": "ana"})
    assert sorted(store.sessions_of("ana")) == sorted([first, third])  # second was oldest
    # A sign-in by rename counts too; the one renamed is never ended.
    fourth = new_session_id()
    assert store.rename(first, fourth, {"user": "ana"})
    assert sorted(store.sessions_of("ana")) == sorted([third, fourth])
    # An update that gives bob's session to ana makes it one more of hers.
    bobs = new_session_id()
    store.set(bobs, {"user": "bob"})
    assert store.update(bobs, {"user": "ana"})
    assert len(store.sessions_of("ana")) == 2
    assert bobs in store.sessions_of("ana")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"absolute_ttl": 0}, "absolute_ttl"),
        ({"absolute_ttl": "1h"}, "absolute_ttl"),
        ({"renew_every": -1}, "renew_every"),
        ({"renew_grace": -1}, "renew_grace"),
        ({"renew_grace": float("inf")}, "renew_grace"),
        ({"max_sessions_per_user": 0, "owner_key": "user"}, "max_sessions_per_user"),
        ({"max_sessions_per_user": True, "owner_key": "user"}, "max_sessions_per_user"),
        ({"max_sessions_per_user": 3}, "max_sessions_per_user"),  # no owner_key
    ],
)
def test_bad_lifetime_options_are_refused(
    redis_server: RedisServer, options: dict[str, Any], name: str
) -> None:
    with pytest.raises(InvalidOption) as info:
        RedisStore(redis_server.url, **options)
    assert name in str(info.value)


def test_bad_rename_and_set_arguments_change_nothing(make: Callable[..., RedisStore]) -> None:
    store = make()
    old = new_session_id()
    store.set(old, {"a": 1})
    for kwargs in ({"grace": -1}, {"reset_lifetime": "yes"}, {"device": "1.2.3.4"}):
        with pytest.raises(InvalidOption):
            store.rename(old, new_session_id(), {"a": 2}, **kwargs)
    with pytest.raises(InvalidOption):
        store.set(new_session_id(), {}, device=("1.2.3.4", "UA"))  # type: ignore[arg-type]
    assert store.all() == {old: {"a": 1}}


# ---- the asyncio twin -------------------------------------------------------------------


def test_the_async_store_has_every_lifetime_operation(url: str) -> None:
    async def main() -> None:
        prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
        options: dict[str, Any] = {"owner_key": "user", "absolute_ttl": 60, "renew_every": 30}
        async with AsyncRedisStore(url, prefix=prefix, **options) as store:
            sid, new = new_session_id(), new_session_id()
            await store.set(sid, {"user": "ana"}, device=Device(ip="192.0.2.1"))
            loaded = await store.load(sid)
            assert loaded is not None
            assert (loaded.sid, loaded.data) == (sid, {"user": "ana"})
            assert loaded.absolute_left is not None
            assert 0 < loaded.absolute_left <= 60
            info = await store.session_info(sid)
            assert info is not None
            assert (info.owner, info.ip) == ("ana", "192.0.2.1")
            assert await store.rename(sid, new, {"user": "ana"}, reset_lifetime=False, grace=5)
            renamed = await store.load(sid)
            assert renamed is not None
            assert renamed.sid == new
            infos = await store.sessions_of("ana", info=True)
            assert [i.id for i in infos] == [new]
            assert infos[0].created == info.created
            assert not await store.destroy_session_of("bob", new)
            assert await store.destroy_session_of("ana", new)
            assert await store.load(sid) is None
            await store.clear()

    asyncio.run(main())


# ---- round trips ------------------------------------------------------------------------


def test_load_is_one_round_trip_and_most_loads_write_nothing(redis_server: RedisServer) -> None:
    import redis

    from .test_redis import _CountingConnection, round_trips

    pool = redis.ConnectionPool.from_url(redis_server.url, connection_class=_CountingConnection)
    client = redis.Redis(connection_pool=pool)
    prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
    store = RedisStore(client=client, prefix=prefix, owner_key="user", renew_every=600)
    try:
        sid = new_session_id()
        store.set(sid, {"user": "ana"})
        before = raw_value(store, sid)
        assert [round_trips(lambda: store.load(sid)) for _ in range(5)] == [1] * 5
        assert round_trips(lambda: store.session_info(sid)) == 1
        assert round_trips(lambda: store.sessions_of("ana", info=True)) == 2
        assert raw_value(store, sid) == before  # last_seen is a minute old at most: unwritten
        # A renewal due: the LOAD, then the rename, one script each on one server.
        now = redis_now_ms(store)
        write_raw(store, sid, {"user": "ana"}, created=now, renewed=now - 601_000, seen=now)
        assert round_trips(lambda: store.load(sid)) == 2
    finally:
        store.clear()
        store.close()
        client.close()
        pool.disconnect()
