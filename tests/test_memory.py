"""MemoryStore's own behaviours: the cap, pruning order, expiry index, purge thread, fork."""

from __future__ import annotations

import gc
import logging
import os
import random
import threading
import time
import tracemalloc
import weakref
from typing import Any

import pytest

from lembro import (
    InvalidOption,
    InvalidSize,
    LembroError,
    MemoryStore,
    SerializationError,
    SessionTooLarge,
    Stats,
)
from lembro.ids import new_session_id
from lembro.memory import ENTRY_OVERHEAD, FILING_OVERHEAD, HEAP_OVERHEAD
from tests.conftest import FakeClock

SESSION = {"user": 42, "name": "Ada Lovelace", "roles": ["admin", "editor"], "csrf": "x" * 43}


def filings(store: MemoryStore) -> list[tuple[float, str, object]]:
    """Every filing in the expiry index, live or stale: (time, sid, identity)."""
    in_order = [(at, sid, at) for at, sid in zip(store._times, store._sids, strict=True)]
    return in_order + [(item[0], item[1], item) for item in store._heap]


def exact_size(store: MemoryStore) -> int:
    """What the store's size must be, recounted from what it holds."""
    held = sum(len(e[0]) + ENTRY_OVERHEAD for e in store._queue.values())
    filed = sum(len(sid) + FILING_OVERHEAD for _, sid, _ in filings(store))
    return held + filed + len(store._heap) * HEAP_OVERHEAD


def assert_accounting_exact(store: MemoryStore) -> None:
    """Size and the expiry index agree with what the store holds."""
    queue = store._queue
    assert store.size == exact_size(store)
    times = list(store._times)
    assert times == sorted(times)  # the walk from the front meets them in order
    assert all(at <= store._last for at in times)
    none = (None,) * 6
    live = [(at, sid) for at, sid, filing in filings(store) if queue.get(sid, none)[4] is filing]
    assert sorted(sid for _, sid in live) == sorted(queue)  # every session filed, once, live
    # One id str per session: its key, its entry's and its live filing's are one object.
    assert all(sid is e[5] for sid, e in queue.items())
    assert all(sid is queue[sid][5] for _, sid in live)
    assert all(at <= queue[sid][1] for at, sid in live)  # filed no later than it expires
    assert all(queue[sid][3] >= at for at, sid in live)  # renewed past its filing
    assert store._stale_locked() == len(filings(store)) - len(queue)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# ---- the basic contract (the cross-store suite is tests/test_contract.py) --------------


def test_get_returns_a_fresh_copy(store: MemoryStore) -> None:
    store.set("a", {"items": [1, 2]})
    first = store.get("a")
    assert first == {"items": [1, 2]}
    assert first is not None
    first["items"].append(3)
    assert store.get("a") == {"items": [1, 2]}


def test_set_replaces_and_accounts_the_difference(store: MemoryStore) -> None:
    store.set("a", {"v": "x" * 40})
    small = store.size
    store.set("a", {"v": "x" * 140})
    assert store.size == small + 100
    assert len(store) == 1
    assert_accounting_exact(store)


def test_empty_store_is_sized_zero(store: MemoryStore) -> None:
    assert store.size == 0
    assert len(store) == 0
    assert store.stats() == Stats(0, 0, 1024**2, 0, 0, 0, 0, 0)


def test_a_session_keeps_the_id_str_it_was_made_with(store: MemoryStore, clock: FakeClock) -> None:
    """Each request brings the id as a new str; the store keeps one, whatever it is asked
    with, so a returning visitor costs no second copy (and is not accounted as one)."""
    made = "".join(["s", "x" * 42])
    store.set(made, SESSION)
    size = store.size

    def again() -> str:
        return "".join(["s", "x" * 42])  # equal to ``made``, not the same object

    assert store.get(again()) == SESSION
    assert store.touch(again())
    clock.advance(store.ttl * 0.6)  # past the renew mark: the touch files it again
    assert store.touch(again())
    store.set(again(), SESSION)
    assert store.replace(again(), SESSION)
    (key,) = store._queue
    assert key is made
    assert store._queue[key][5] is made
    assert all(sid is made for _, sid, _ in filings(store))  # the refiling's too
    assert store.size == size + len(made) + FILING_OVERHEAD  # one filing more: its stale one
    assert_accounting_exact(store)


def test_destroy_is_idempotent(store: MemoryStore, clock: FakeClock) -> None:
    store.set("a", SESSION)
    store.destroy("a")
    store.destroy("a")
    store.destroy("never")
    assert store.get("a") is None
    # Its filing stays behind, counted, until it comes due or a sweep drops it.
    assert store.size == len("a") + FILING_OVERHEAD
    assert_accounting_exact(store)
    clock.advance(store.ttl)
    assert store.purge() == 0
    assert store.size == 0
    assert_accounting_exact(store)


def test_contains_and_len_see_live_sessions_only(store: MemoryStore, clock: FakeClock) -> None:
    store.set("short", SESSION, ttl=10)
    store.set("long", SESSION, ttl=100)
    assert "short" in store
    assert 42 not in store
    assert len(store) == 2
    clock.advance(10)
    assert "short" not in store
    assert len(store) == 1
    assert set(store.all()) == {"long"}


def test_clear_removes_everything_and_keeps_counters(store: MemoryStore) -> None:
    for i in range(10):
        store.set(f"s{i}", SESSION)
    store.get("s1")
    store.clear()
    assert len(store) == 0
    assert store.size == 0
    assert store.stats().hits == 1
    store.set("again", SESSION)
    assert_accounting_exact(store)


def test_stats_count_hits_misses_and_expiry(store: MemoryStore, clock: FakeClock) -> None:
    store.set("a", SESSION, ttl=5)
    store.get("a")
    store.get("nope")
    clock.advance(5)
    assert store.get("a") is None
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.expired, stats.sessions) == (1, 2, 1, 0)


def test_store_is_a_context_manager_and_close_is_idempotent() -> None:
    with MemoryStore("1M", 0.05) as s:
        thread = s._thread
        assert thread is not None
        assert thread.is_alive()
    assert not thread.is_alive()
    s.close()
    s.set("a", SESSION)  # a closed store still serves; only the purge thread stops
    assert s.get("a") == SESSION


# ---- bad input: a clear error, and nothing changes --------------------------------------


@pytest.mark.parametrize("bad", [object(), 2**100, b"\xff" * 3])
def test_unserializable_data_raises_and_keeps_the_old_value(store: MemoryStore, bad: Any) -> None:
    store.set("a", SESSION)
    before = (store.size, len(store), store.stats())
    with pytest.raises(SerializationError) as info:
        store.set("a", {"bad": bad} if not isinstance(bad, bytes) else bad)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    assert store.get("a") == SESSION
    assert (store.size, len(store)) == before[:2]
    assert_accounting_exact(store)


@pytest.mark.parametrize("bad", [None, "text", [1], 3])
def test_data_that_is_not_a_dict_is_refused(store: MemoryStore, bad: Any) -> None:
    with pytest.raises(SerializationError):
        store.set("a", bad)
    assert len(store) == 0


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "10"])
def test_bad_ttl_is_refused_and_changes_nothing(store: MemoryStore, ttl: Any) -> None:
    store.set("a", SESSION, ttl=10)
    with pytest.raises(InvalidOption) as info:
        store.set("a", {"other": 1}, ttl=ttl)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidOption):
        store.touch("a", ttl=ttl)
    assert store.get("a") == SESSION


@pytest.mark.parametrize("sid", ["", None, 5, b"abc"])
def test_bad_session_id_is_refused(store: MemoryStore, sid: Any) -> None:
    with pytest.raises(InvalidOption):
        store.set(sid, SESSION)
    assert len(store) == 0


def test_session_larger_than_the_cap_is_refused_and_keeps_the_old_value() -> None:
    with MemoryStore(2048, None) as s:
        s.set("a", {"v": "small"})
        size = s.size
        with pytest.raises(SessionTooLarge) as info:
            s.set("a", {"v": "x" * 4096})
        assert isinstance(info.value, ValueError)
        assert info.value.max_size == 2048
        assert info.value.size > 2048
        assert s.get("a") == {"v": "small"}
        assert s.size == size


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_size": "4X"}, InvalidSize),
        ({"max_size": 0}, InvalidSize),
        ({"interval": -1}, InvalidOption),
        ({"ttl": 0}, InvalidOption),
        ({"low_water": 1.0}, InvalidOption),
        ({"low_water": 0}, InvalidOption),
        ({"serializer": "yaml"}, InvalidOption),
        ({"serializer": object()}, InvalidOption),
        ({"clock": 3}, InvalidOption),
        ({"on_error": "log"}, InvalidOption),
    ],
)
def test_bad_options_raise_a_lembro_error(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        MemoryStore(**kwargs)
    assert isinstance(info.value, LembroError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("serializer", ["msgpack", "json", "pickle"])
def test_each_serializer_round_trips_a_session(serializer: str) -> None:
    with MemoryStore("1M", None, serializer=serializer) as s:
        s.set("a", SESSION)
        assert s.get("a") == SESSION
        assert_accounting_exact(s)


def test_custom_serializer_object_is_used() -> None:
    class Reversed:
        def dumps(self, obj: Any) -> bytes:
            return repr(obj).encode()[::-1]

        def loads(self, data: bytes) -> Any:
            import ast

            return ast.literal_eval(data[::-1].decode())

    with MemoryStore("1M", None, serializer=Reversed()) as s:
        s.set("a", {"k": (1, 2)})
        assert s.get("a") == {"k": (1, 2)}


# ---- expiry: lazy on access, and the expiry-ordered index -------------------------------


def test_expired_session_is_removed_on_get(store: MemoryStore, clock: FakeClock) -> None:
    store.set("a", SESSION, ttl=60)
    clock.advance(59.9)
    assert store.get("a") == SESSION
    clock.advance(0.1)
    assert store.get("a") is None
    assert store.size == len("a") + FILING_OVERHEAD  # its filing, due: the purge drops it
    assert_accounting_exact(store)
    assert store.purge() == 0  # it was counted expired on the get
    assert store.size == 0
    assert store.stats().expired == 1
    assert_accounting_exact(store)


def test_touch_extends_life_without_rewriting(store: MemoryStore, clock: FakeClock) -> None:
    store.set("a", SESSION, ttl=60)
    data = store._queue["a"][0]
    clock.advance(50)
    assert store.touch("a", ttl=60) is True
    assert store._queue["a"][0] is data
    clock.advance(50)
    assert store.get("a") == SESSION
    clock.advance(60)
    assert store.touch("a") is False
    assert store.touch("never") is False
    assert_accounting_exact(store)


def test_touch_to_a_shorter_life_is_purged_on_time(store: MemoryStore, clock: FakeClock) -> None:
    store.set("a", SESSION, ttl=1000)
    store.touch("a", ttl=10)
    clock.advance(10)
    assert store.purge() == 1
    assert len(store) == 0
    assert_accounting_exact(store)


def test_set_with_a_shorter_ttl_is_purged_on_time(store: MemoryStore, clock: FakeClock) -> None:
    store.set("a", SESSION, ttl=1000)
    store.set("a", SESSION, ttl=5)
    clock.advance(5)
    assert store.purge() == 1
    assert_accounting_exact(store)


def test_purge_keeps_sessions_touched_since_they_were_filed(
    store: MemoryStore, clock: FakeClock
) -> None:
    for i in range(100):
        store.set(f"s{i}", {"i": i}, ttl=10)
    clock.advance(9)
    for i in range(0, 100, 2):
        store.touch(f"s{i}", ttl=10)
    clock.advance(1)
    assert store.purge() == 50
    assert sorted(store.all()) == sorted(f"s{i}" for i in range(0, 100, 2))
    clock.advance(9)
    assert store.purge() == 50
    assert len(store) == 0
    assert_accounting_exact(store)


class CountingDict(dict[str, Any]):
    """A store table that counts the entries the store looks up or walks in it."""

    lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingDict.lookups += 1
        return super().get(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        CountingDict.lookups += 1
        return super().pop(key, *default)

    def __getitem__(self, key: str) -> Any:
        CountingDict.lookups += 1
        return super().__getitem__(key)

    def items(self) -> Any:  # type: ignore[override]
        for item in super().items():
            CountingDict.lookups += 1
            yield item


@pytest.mark.parametrize("short_first", [True, False], ids=["in-order", "out-of-order"])
def test_purge_costs_what_expired_not_what_is_held(clock: FakeClock, short_first: bool) -> None:
    with MemoryStore("1G", None, clock=clock) as s:
        shorts = [(f"short{i}", 10) for i in range(100)]
        longs = [(f"long{i}", 3600) for i in range(20_000)]
        for sid, ttl in shorts + longs if short_first else longs + shorts:
            s.set(sid, {"i": sid}, ttl=ttl)
        clock.advance(10)
        s._queue = CountingDict(s._queue)
        CountingDict.lookups = 0
        assert s.purge() == 100
        # Looked at the 100 that expired (a few times each), never the 20,000 others.
        assert 100 <= CountingDict.lookups <= 500
        assert len(s) == 20_000
        assert_accounting_exact(s)


def test_purge_files_again_the_sessions_extended_since_they_were_filed(
    clock: FakeClock,
) -> None:
    with MemoryStore("1G", None, clock=clock) as s:
        for i in range(1000):
            s.set(f"s{i}", {"i": i}, ttl=10)
        clock.advance(5)
        for i in range(0, 1000, 10):
            s.touch(f"s{i}", ttl=10)  # now due at 15, still filed at 10
        clock.advance(5)
        s._queue = CountingDict(s._queue)
        CountingDict.lookups = 0
        assert s.purge() == 900
        assert len(s) == 100
        assert_accounting_exact(s)
        work = CountingDict.lookups
        CountingDict.lookups = 0
        clock.advance(4.9)
        assert s.purge() == 0  # refiled at 15: nothing is due yet, nothing is walked
        assert CountingDict.lookups <= 2
        clock.advance(0.1)
        assert s.purge() == 100
        assert work <= 5 * 1000


def test_sessions_in_use_stay_filed_in_order(clock: FakeClock) -> None:
    """Sliding sessions, touched for ten lifetimes while new sessions keep arriving, are
    filed again at the end of the in-order index once per half lifetime: none ends up
    in the heap (which a filing left until the purge would: by then newer sessions are
    filed after its expiry)."""
    with MemoryStore("1G", None, clock=clock) as s:
        users = [f"u{i}" for i in range(50)]
        for sid in users:
            s.set(sid, {"u": sid}, ttl=60)
        for step in range(600):
            clock.advance(1)
            s.set(f"bot{step}", {"bot": step}, ttl=60)  # cookieless traffic, never back
            assert s.touch(users[step % len(users)], ttl=60)
            s.purge()
        assert all(sid in s for sid in users)
        assert s._heap == []
        assert all(type(entry[4]) is float for entry in s._queue.values())  # in order
        assert_accounting_exact(s)


def test_stale_filings_are_counted_and_swept_once_they_outnumber_the_live(
    clock: FakeClock,
) -> None:
    """Destroys and shortened lives leave filings behind; they are in the size, so the
    cap bounds them, and the purge drops them all once they outnumber the sessions."""
    store = MemoryStore("1G", None, clock=clock)
    for round_ in range(20):
        ids = [f"r{round_}-{i}" for i in range(500)]
        for sid in ids:
            store.set(sid, {"x": 1}, ttl=100)
        for sid in ids[:450]:
            store.destroy(sid)
        for sid in ids[450:]:
            store.touch(sid, ttl=50)  # shortened: filed again, out of order
        clock.advance(1)
    assert len(store._queue) == 1000
    assert store._stale_locked() == 20 * 500
    assert len(store._heap) == 1000
    assert_accounting_exact(store)
    before = store.size
    assert store.purge() == 0  # nothing has expired, but the index is mostly stale
    assert store._stale_locked() == 0
    assert len(store._times) + len(store._heap) == len(store) == 1000
    assert store.size < before / 3
    assert_accounting_exact(store)


# ---- pruning: expired first, then probation, then the rest; the writer is never evicted --


def fill(store: MemoryStore, prefix: str, count: int, **kwargs: Any) -> list[str]:
    ids = [f"{prefix}{i:06d}" for i in range(count)]
    for sid in ids:
        store.set(sid, SESSION, **kwargs)
    return ids


def per_session(sid: str = "x" * 7) -> int:
    with MemoryStore("1M", None) as probe:
        probe.set(sid, SESSION)
        return probe.size


def test_prune_shrinks_to_low_water(clock: FakeClock) -> None:
    unit = per_session()
    with MemoryStore(unit * 100, None, clock=clock) as s:
        fill(s, "a", 100)
        assert s.size == unit * 100
        s.set("b000000", SESSION)
        assert s.size <= int(unit * 100 * 0.75)
        assert len(s) == 75
        assert "b000000" in s
        assert s.stats().evicted == 26
        assert s._stale_locked() == 0  # the victims' filings went with them
        assert_accounting_exact(s)


def test_prune_evicts_expired_before_live(clock: FakeClock) -> None:
    unit = per_session()
    # The short ones come after longer ones: their expiries are filed out of order.
    with MemoryStore(unit * 100 + 40 * HEAP_OVERHEAD, None, clock=clock) as s:
        live = fill(s, "l", 60, ttl=1000)
        fill(s, "d", 40, ttl=10)
        clock.advance(10)
        s.set("new0000", SESSION)
        assert all(sid in s for sid in live)
        assert s.stats().evicted == 0
        assert s.stats().expired == 40


def test_flood_does_not_evict_returning_users(clock: FakeClock) -> None:
    unit = per_session("u" * 43)
    with MemoryStore(unit * 1000, None, clock=clock) as s:
        users = [new_session_id() for _ in range(300)]
        for sid in users:
            s.set(sid, SESSION)
        for sid in users:
            assert s.get(sid) is not None  # they came back: off probation
        for _ in range(20_000):  # bots: each makes a session and never returns
            s.set(new_session_id(), {"bot": True})
            if _ % 1000 == 0:
                for sid in users:
                    s.touch(sid)
        assert all(s.get(sid) == SESSION for sid in users)
        assert s.stats().evicted > 15_000
        assert s.size <= s.max_size
        assert_accounting_exact(s)


def test_probation_is_evicted_least_recently_used_first(clock: FakeClock) -> None:
    unit = per_session()
    with MemoryStore(unit * 8, None, clock=clock, low_water=0.5) as s:
        ids = fill(s, "p", 8)
        s.set("p000000", SESSION)  # rewritten, still never read: most recent on probation
        s.set("n000000", SESSION)
        assert sorted(s.all()) == ["n000000", "p000000", "p000006", "p000007"]
        assert not any(sid in s for sid in ids[1:6])


def test_protected_sessions_go_least_recently_used_first_once_probation_is_empty(
    clock: FakeClock,
) -> None:
    unit = per_session()
    with MemoryStore(unit * 4, None, clock=clock, low_water=0.5) as s:
        ids = fill(s, "r", 4)
        for sid in reversed(ids):  # read in reverse: r000003 is least recently used
            s.get(sid)
        s.get("r000000")
        s.set("r000001", {"n": 1})  # a write to a read session keeps it protected, most recent
        s.set("new0000", SESSION)
        assert sorted(s.all()) == ["new0000", "r000001"]


def test_the_session_being_written_is_never_evicted(clock: FakeClock) -> None:
    unit = per_session()
    with MemoryStore(unit * 3, None, clock=clock, low_water=0.1) as s:
        fill(s, "a", 3)
        s.set("z000000", SESSION)
        assert s.all() == {"z000000": SESSION}
        s.get("z000000")  # now protected
        s.set("b000000", SESSION)
        s.set("z000000", {"grown": "x" * 800})  # over the cap: b goes, z stays
        assert s.all() == {"z000000": {"grown": "x" * 800}}
        assert_accounting_exact(s)


def test_prune_now_returns_the_number_evicted(clock: FakeClock) -> None:
    unit = per_session()
    with MemoryStore(unit * 100, None, clock=clock) as s:
        fill(s, "a", 90)
        assert s.prune() == 15
        assert s.prune() == 0


def test_eviction_logs_debug_lines_and_one_warning(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    unit = per_session()
    caplog.set_level(logging.DEBUG, logger="lembro")
    with MemoryStore(unit * 10, None, clock=clock) as s:
        fill(s, "a", 50)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "too small" in warnings[0].getMessage()
    assert "max_size" in warnings[0].getMessage()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith("prune start") for m in debug)
    assert any(m.startswith("prune end") for m in debug)


def test_pruning_only_expired_sessions_does_not_warn(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    unit = per_session()
    with MemoryStore(unit * 10, None, clock=clock) as s:
        fill(s, "a", 10, ttl=1)
        clock.advance(1)
        fill(s, "b", 5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- the memory bound, as tracemalloc counts it -----------------------------------------


@pytest.mark.parametrize("payload", [0, 250, 1000])
@pytest.mark.parametrize("mode", ["plain", "mixed-ttls", "logouts", "flood"])
def test_memory_held_stays_between_60_and_100_percent_of_the_cap(payload: int, mode: str) -> None:
    """As a web app uses it: each request brings its id as a new str (parsed from a
    cookie), equal to the one the session was made with, not the same object. Two
    thirds of the sessions come back, and old ones are touched and rewritten at random
    (the recency table's holes); with mixed ttls, half the lives are shortened (filed out
    of order); with logouts, every fourth step destroys a recent session (stale
    filings). A flood is sessions made and never seen again: one str each."""
    data = {"d": "x" * payload}
    rng = random.Random(payload)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = MemoryStore("1M", None)
        ratios = []
        for i in range(40_000):
            sid = f"s{i:042d}"  # 43 characters, made again from i: the test holds none
            ttl = 3600.0 if mode != "mixed-ttls" or i % 2 else 60.0 + i % 600
            store.set(sid, data, ttl=ttl)
            old = f"s{rng.randrange(max(0, i - 3000), i + 1):042d}"
            if mode == "flood":
                pass
            elif i % 3 != 2:
                store.get("".join(sid))  # the same id, in a new str
            if mode == "flood":
                pass
            elif i % 5 == 0:
                store.touch(old, ttl=ttl)
            elif i % 7 == 0 and old in store:
                store.set(old, data, ttl=ttl)
            elif mode == "logouts" and i % 4 == 1:
                store.destroy(old)
            del sid, old
            if store.stats().evicted and i % 97 == 0:
                ratios.append((tracemalloc.get_traced_memory()[0] - base) / store.max_size)
        store.close()
    finally:
        tracemalloc.stop()
    assert len(ratios) > 50  # far past the cap, many times over
    print(f"{mode} {payload}: held {min(ratios):.2f} to {max(ratios):.2f} of max_size")
    assert min(ratios) >= 0.6
    assert max(ratios) <= 1.0


# ---- thread safety ------------------------------------------------------------------


def test_concurrent_threads_keep_accounting_exact() -> None:
    unit = per_session("t" * 10)
    with MemoryStore(unit * 300, None) as s:
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def work(n: int) -> None:
            try:
                start.wait()
                for i in range(3000):
                    mine = f"t{n}-{i % 400:06d}"
                    shared = f"shared{i % 7}"
                    s.set(mine, {"n": n, "i": i, "pad": "p" * (i % 50)})
                    s.set(shared, {"n": n, "i": i})
                    got = s.get(shared)
                    assert got is None or set(got) == {"n", "i"}
                    s.touch(mine)
                    if i % 5 == 0:
                        s.destroy(f"t{n}-{(i - 3) % 400:06d}")
                    if i % 500 == 0:
                        len(s)
                        s.all()
                        s.purge()
            except BaseException as e:  # surface anything to the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert_accounting_exact(s)
        assert s.size <= s.max_size
        assert len(s) == len(s._queue)


# ---- the background purge ---------------------------------------------------------------


def test_background_purge_removes_expired_sessions(clock: FakeClock) -> None:
    with MemoryStore("1M", 0.02, clock=clock) as s:
        s.set("a", SESSION, ttl=5)
        s.set("b", SESSION, ttl=50)
        clock.advance(5)
        assert wait_for(lambda: s.stats().purges >= 1 and len(s._queue) == 1)
        assert s.stats().expired == 1
        assert "b" in s


def test_background_purge_holds_only_a_weak_reference() -> None:
    s = MemoryStore("1M", 0.01)
    thread = s._thread
    ref = weakref.ref(s)
    assert thread is not None
    del s
    gc.collect()
    assert ref() is None
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert thread.daemon


def test_errors_in_the_background_purge_go_to_on_error_and_do_not_kill_it() -> None:
    seen: list[BaseException] = []
    calls = 0

    def flaky_clock() -> float:
        nonlocal calls
        calls += 1
        if threading.current_thread().name == "lembro-purge" and calls % 2:
            raise RuntimeError("clock broke")
        return time.monotonic()

    with MemoryStore("1M", 0.01, clock=flaky_clock, on_error=seen.append) as s:
        assert wait_for(lambda: len(seen) >= 2 and s.stats().purges >= 2)
        assert all(isinstance(e, RuntimeError) for e in seen)
        assert s._thread is not None
        assert s._thread.is_alive()


def test_errors_in_the_background_purge_are_logged_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_clock() -> float:
        if threading.current_thread().name == "lembro-purge":
            raise RuntimeError("clock broke")
        return time.monotonic()

    with MemoryStore("1M", 0.01, clock=broken_clock) as s:
        assert wait_for(lambda: any("purge failed" in r.getMessage() for r in caplog.records))
        assert s._thread is not None
        assert s._thread.is_alive()


def test_no_interval_means_no_thread() -> None:
    for interval in (None, 0):
        with MemoryStore("1M", interval) as s:
            assert s._thread is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads
def test_purge_thread_restarts_in_a_forked_child_with_a_warning(clock: FakeClock) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logging.getLogger("lembro").addHandler(handler)
    try:
        with MemoryStore("1M", 0.01) as s:
            s.set("a", SESSION, ttl=1000)
            s.set("gone", SESSION, ttl=0.05)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report and leave without running pytest's teardown
                try:
                    ok = (
                        s._thread is not None
                        and s._thread.is_alive()
                        and wait_for(lambda: "gone" not in s._queue, 3)
                        and s.get("a") == SESSION
                        and any("forked" in r.getMessage() for r in records)
                    )
                    os.write(write, b"ok" if ok else b"no")
                finally:
                    os._exit(0)
            os.close(write)
            answer = os.read(read, 2)
            os.close(read)
            os.waitpid(pid, 0)
            assert answer == b"ok"
            assert not any("forked" in r.getMessage() for r in records)  # not in the parent
    finally:
        logging.getLogger("lembro").removeHandler(handler)
