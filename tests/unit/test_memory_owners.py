"""MemoryStore with ``owner_key``, through its public API: what the owner index costs,
how every path that removes a session keeps it exact, and its bound under churn and
threads. The behaviour every store shares is tests/contract/test_owners.py."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from lembro import InvalidOption, MemoryStore, SessionTooLarge, as_async
from lembro.ids import new_session_id
from lembro.memory import OWNED_SESSION_OVERHEAD, OWNER_OVERHEAD, RECORD_OVERHEAD
from lembro.memory.budget import session_cost
from lembro.serializers import MsgpackSerializer
from tests.conftest import FakeClock

KEY = "user"


def blob(data: dict[str, Any]) -> bytes:
    return MsgpackSerializer().dumps(data)


def owned(clock: FakeClock, max_size: int | str = "1M", **options: Any) -> MemoryStore:
    return MemoryStore(max_size, None, clock=clock, owner_key=KEY, **options)


# ---- what it costs ----------------------------------------------------------------------


def test_without_owner_key_a_session_costs_what_it_did(clock: FakeClock) -> None:
    with MemoryStore("1M", None, clock=clock) as store:
        sid = new_session_id()
        store.set(sid, {KEY: "ana"})
        assert store.size == session_cost(sid, blob({KEY: "ana"})) + RECORD_OVERHEAD
        with pytest.raises(InvalidOption, match="owner_key"):
            store.sessions_of("ana")


def test_the_index_counts_each_session_and_each_owner_once(clock: FakeClock) -> None:
    with owned(clock) as store:
        a, b, c = new_session_id(), new_session_id(), new_session_id()
        store.set(a, {KEY: "ana"})
        store.set(b, {KEY: "ana"})
        store.set(c, {})  # no owner: the entry's extra fields only
        sessions = sum(
            session_cost(s, blob(d)) + OWNED_SESSION_OVERHEAD + RECORD_OVERHEAD
            for s, d in ((a, {KEY: "ana"}), (b, {KEY: "ana"}), (c, {}))
        )
        assert store.size == sessions + sys.getsizeof("ana") + OWNER_OVERHEAD
        store.replace(b, {KEY: "bob"})  # a second owner
        assert store.size == sessions + 2 * (sys.getsizeof("ana") + OWNER_OVERHEAD)
        store.destroy(a)
        store.destroy(b)
        store.destroy(c)
        store.purge()
        clock.advance(store.ttl)
        store.purge()  # the records are dropped as they come due
        assert store.size == 0
        store.check()


def test_a_session_whose_owner_name_cannot_fit_is_refused_unchanged(clock: FakeClock) -> None:
    with owned(clock, max_size=4096) as store:
        sid = new_session_id()
        store.set(sid, {KEY: "ana"})
        with pytest.raises(SessionTooLarge):
            store.set(sid, {KEY: "x" * 4000})  # small data, but a name too big for the cap
        assert store.get(sid) == {KEY: "ana"}
        assert store.sessions_of("ana") == [sid]
        store.check()


# ---- every way a session goes ---------------------------------------------------------


def test_an_evicted_session_leaves_the_index_at_once(clock: FakeClock) -> None:
    with owned(clock, max_size=20_000) as store:
        written = []
        for i in range(200):
            sid = new_session_id()
            store.set(sid, {KEY: f"user{i % 3}", "pad": "p" * 50})
            written.append(sid)
        assert store.stats().evicted > 0
        listed = [s for i in range(3) for s in store.sessions_of(f"user{i}")]
        assert sorted(listed) == sorted(s for s in written if s in store)
        assert len(listed) == len(store)
        store.check()


def test_purged_and_lapsed_sessions_leave_the_index(clock: FakeClock) -> None:
    with owned(clock) as store:
        short, lapsing, long = new_session_id(), new_session_id(), new_session_id()
        store.set(short, {KEY: "ana"}, ttl=10)
        store.set(lapsing, {KEY: "ana"}, ttl=10)
        store.set(long, {KEY: "ana"}, ttl=100)
        clock.advance(10)
        assert store.purge() == 2  # both expired; the purge takes them out
        assert store.sessions_of("ana") == [long]
        clock.advance(100)
        assert store.sessions_of("ana") == []  # expired, not yet purged: not live
        assert store.stats().expired == 3
        store.check()


def test_clear_empties_the_index(clock: FakeClock) -> None:
    with owned(clock) as store:
        for i in range(10):
            store.set(new_session_id(), {KEY: f"user{i % 4}"})
        store.clear()
        assert all(store.sessions_of(f"user{i}") == [] for i in range(4))
        store.check()
        assert store.size == 0


def test_get_touch_and_writes_are_uses_contains_and_all_are_not(clock: FakeClock) -> None:
    with owned(clock) as store:
        a, b = new_session_id(), new_session_id()
        store.set(a, {KEY: "ana"})
        store.set(b, {KEY: "ana"})
        assert a in store
        store.all()
        assert store.sessions_of("ana") == [b, a]
        store.get(a)
        assert store.sessions_of("ana") == [a, b]
        store.touch(b)
        assert store.sessions_of("ana") == [b, a]


def test_the_snapshot_brings_the_index_back(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "sessions.snapshot"
    # Written by a store without owner_key: owner fields of any type were accepted.
    with MemoryStore("1M", None, clock=clock, snapshot=path) as before:
        ana1, ana2, bob, odd, anonymous = (new_session_id() for _ in range(5))
        before.set(ana1, {KEY: "ana"})
        before.set(bob, {KEY: 7})
        before.set(odd, {KEY: 4.5})  # no owner to an owner index: it stays, no one's
        before.set(anonymous, {"cart": [1]})
        before.set(ana2, {KEY: "ana"})
        before.get(ana1)
    with owned(clock, snapshot=path) as after:
        assert sorted(after.sessions_of("ana")) == sorted([ana1, ana2])
        assert after.sessions_of("7") == [bob]
        assert after.sessions_of("4.5") == []
        assert after.get(odd) == {KEY: 4.5}
        assert len(after) == 5
        after.check()
        assert after.destroy_sessions_of("ana") == 2


def test_owner_methods_through_the_async_faces(clock: FakeClock) -> None:
    class Blocking(MemoryStore):
        blocking = True  # as_async runs it in a worker thread

    class Old:  # a store written before owner indexes: get/set/... only
        blocking = False

    async def main() -> None:
        for store in (owned(clock), Blocking("1M", None, clock=clock, owner_key=KEY)):
            face = as_async(store)
            sid = new_session_id()
            await face.set(sid, {KEY: "ana"})
            assert await face.sessions_of("ana") == [sid]
            assert await face.destroy_sessions_of("ana", keep=None) == 1
            assert await face.get(sid) is None
        face = as_async(Old())  # type: ignore[arg-type]
        with pytest.raises(InvalidOption, match="sessions_of"):
            await face.sessions_of("ana")

    asyncio.run(main())


# ---- under churn, and under threads ----------------------------------------------------


def test_the_memory_bound_holds_with_many_owners_churned() -> None:
    """As an app with sign-ins uses it, far past the cap: first many users with a session
    or two each, then the same sessions taken over by a few users (the index shrinks
    while the store is full); along the way logins as someone else, logouts, touches and
    sign-outs everywhere. What tracemalloc counts stays between 60% and 100% of the cap."""
    rng = random.Random(19)
    data_pad = "x" * 120
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = MemoryStore("1M", None, owner_key=KEY)
        ratios = []
        for i in range(40_000):
            owners = 20_000 if i < 20_000 else 20  # many users, then a few
            sid = f"s{i:042d}"  # a new str each time, as a cookie parsed per request is
            store.set(sid, {KEY: f"user{rng.randrange(owners)}", "pad": data_pad})
            old = f"s{rng.randrange(max(0, i - 3000), i + 1):042d}"
            step = i % 10
            if step in (0, 1, 2):
                store.get("".join(old))
            elif step == 3:
                store.touch(old)
            elif step == 4:  # a login as someone else
                store.replace(old, {KEY: f"user{rng.randrange(owners)}", "pad": data_pad})
            elif step == 5:  # a logout: the owner field goes
                store.replace(old, {"pad": data_pad})
            elif step == 6:
                store.destroy(old)
            elif step == 7 and i % 50 == 7:
                store.destroy_sessions_of(f"user{rng.randrange(owners)}")
            del sid, old
            if store.stats().evicted and i % 97 == 0:
                ratios.append((tracemalloc.get_traced_memory()[0] - base) / store.max_size)
        store.check()
        store.close()
    finally:
        tracemalloc.stop()
    assert len(ratios) > 50  # far past the cap, many times over
    assert min(ratios) >= 0.6, f"held {min(ratios):.2f} of the cap"
    assert max(ratios) <= 1.0, f"held {max(ratios):.2f} of the cap"


def test_concurrent_writers_of_one_owner_leave_the_index_exact(clock: FakeClock) -> None:
    """Eight threads write sessions of one owner, log some in as others and out again,
    destroy and use them, all at once. Afterwards the owner lists exactly its live
    sessions, the store recounts clean, and one call ends them all."""
    store = owned(clock)
    threads, per_thread = 8, 300
    mine: list[set[str]] = [set() for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            start.wait()
            rng = random.Random(n)
            held = mine[n]  # this thread's sessions that are ana's now
            seen: list[str] = []
            for i in range(per_thread):
                sid = new_session_id()
                store.set(sid, {KEY: "ana", "i": i})
                held.add(sid)
                seen.append(sid)
                other = rng.choice(seen)
                move = rng.randrange(6)
                if move == 0:  # a login as someone else
                    store.replace(other, {KEY: f"user{n}"})
                    held.discard(other)
                elif move == 1:  # ana's again (or anew), through a login as her
                    store.set(other, {KEY: "ana"})
                    held.add(other)
                elif move == 2:  # a logout
                    store.replace(other, {"i": i})
                    held.discard(other)
                elif move == 3:
                    store.destroy(other)
                    held.discard(other)
                else:
                    store.get(other)
                    store.touch(other)
                if i % 100 == 0:
                    store.sessions_of("ana")
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    expected = set().union(*mine)
    assert len(expected) > per_thread
    assert sorted(store.sessions_of("ana")) == sorted(expected)
    store.check()
    assert store.destroy_sessions_of("ana") == len(expected)
    assert not any(store.get(s) for s in expected)
    assert store.sessions_of("ana") == []
    store.check()
    store.close()


def test_an_owner_with_more_sessions_than_a_batch_is_ended_everywhere(clock: FakeClock) -> None:
    with owned(clock) as store:
        store.batch_size = 3  # removed three per hold of the lock
        mine = [new_session_id() for _ in range(10)]
        for sid in mine:
            store.set(sid, {KEY: "ana"})
        clock.advance(1)
        store.set(mine[4], {KEY: "ana"}, ttl=1)  # expired by the time it is ended
        clock.advance(1)
        assert store.destroy_sessions_of("ana", keep=mine[0]) == 8
        assert store.sessions_of("ana") == [mine[0]]
        assert [s for s in mine if s in store] == [mine[0]]
        assert store.stats().expired == 1
        store.check()


def test_a_session_that_changed_hands_while_others_were_ended_is_spared() -> None:
    """After destroy_sessions_of has read ana's list and released the lock, before it
    removes them, another request logs one of her sessions in as bob, and ends another
    that a new login of ana's re-creates under the same id: neither is ended."""
    meanwhile: list[Any] = []

    class Clock(FakeClock):
        def __call__(self) -> float:  # read outside the lock, between the list and removal
            while meanwhile:
                meanwhile.pop()()
            return self.now

    clock = Clock()
    with owned(clock) as store:
        store.batch_size = 2
        mine = [new_session_id() for _ in range(6)]
        for sid in mine:
            store.set(sid, {KEY: "ana"})

        def other_requests() -> None:
            store.replace(mine[1], {KEY: "bob"})
            store.destroy(mine[0])
            store.set(mine[0], {KEY: "ana", "new": True})

        meanwhile.append(other_requests)
        assert store.destroy_sessions_of("ana") == 4
        assert store.get(mine[1]) == {KEY: "bob"}
        assert store.get(mine[0]) == {KEY: "ana", "new": True}
        assert store.sessions_of("ana") == [mine[0]]
        store.check()
