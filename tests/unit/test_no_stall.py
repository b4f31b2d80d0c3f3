"""No call holds the store's lock for work that grows with what the store holds.

Each hold of the lock is measured in lines of Python run while it is held (a count the
machine's load does not move, where a time would): with ``batch_size`` sessions per
step, the most lines in one hold must stay a small multiple of ``batch_size``, however
many sessions the call goes through. Calls that went through them all in one hold ran
tens of lines per session held. ``make bench`` times the same calls at 300,000 sessions
against another thread's ``get()``.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import pytest

from lembro import MemoryStore
from lembro.memory import store as memory_store

from ..conftest import FakeClock

SESSIONS = 5_000
BATCH = 64
# Lines of lembro's code one session's step may run (a purge, an eviction, a copy).
LINES_PER_SESSION = 80
MOST_LINES_PER_HOLD = LINES_PER_SESSION * BATCH


class CountingLock:
    """The store's lock, counting the lines run (in this thread) while it is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = False
        self.lines = 0
        self.most = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        if taken:
            self.held, self.lines = True, 0
        return taken

    def release(self) -> None:
        self.most = max(self.most, self.lines)
        self.held = False
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def tracer(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and self.held:
            self.lines += 1
        return self.tracer


def most_lines_in_one_hold(store: MemoryStore, call: Callable[[], object]) -> int:
    lock = CountingLock()
    store._lock = lock  # type: ignore[assignment]
    sys.settrace(lock.tracer)
    try:
        call()
    finally:
        sys.settrace(None)
        store._lock = threading.Lock()
    return lock.most


@pytest.fixture(params=["one lifetime", "mixed lifetimes"])
def half_expired(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore]:
    """A store of ``SESSIONS`` sessions of one owner, half of them expired."""
    clock = FakeClock()
    mixed = request.param == "mixed lifetimes"
    store = MemoryStore("64M", None, clock=clock, owner_key="user", snapshot=tmp_path / "s.snap")
    store.batch_size = BATCH
    for i in range(SESSIONS):
        short = i % 2 == 0
        ttl = (10.0 + i % 7 if mixed else 10.0) if short else 1000.0 - (i % 13 if mixed else 0)
        store.set(f"s{i:042d}", {"user": "ana", "n": i}, ttl=ttl)
    clock.advance(100)
    yield store
    store.close()


CALLS: dict[str, Callable[[MemoryStore], object]] = {
    "purge": lambda store: store.purge(),
    "len": len,
    "stats": lambda store: store.stats(),
    "all": lambda store: store.all(),
    "clear": lambda store: store.clear(),
    "destroy_sessions_of": lambda store: store.destroy_sessions_of("ana"),
    "save_snapshot": lambda store: store.save_snapshot(),
    "prune": lambda store: store.prune(),
}


@pytest.mark.parametrize("name", CALLS)
def test_no_call_holds_the_lock_for_work_over_every_session(
    half_expired: MemoryStore, name: str
) -> None:
    store = half_expired
    most = most_lines_in_one_hold(store, lambda: CALLS[name](store))
    store.check()
    assert most <= MOST_LINES_PER_HOLD, f"{name}: {most} lines in one hold of the lock"


def test_a_write_that_takes_the_store_over_its_cap_prunes_in_steps(
    half_expired: MemoryStore,
) -> None:
    store = half_expired
    store._table.budget.max_size = store.size  # the next write takes it over
    most = most_lines_in_one_hold(store, lambda: store.set("t" * 43, {"user": "bo"}))
    store.check()
    assert store.size <= store.max_size
    assert most <= MOST_LINES_PER_HOLD, f"{most} lines in one hold of the lock"


def test_a_compaction_of_many_flagged_records_runs_in_steps(half_expired: MemoryStore) -> None:
    """Destroyed sessions leave flagged records; once they outnumber the live, the next
    write compacts the index, a batch at a time."""
    store = half_expired
    store.purge()
    for i in range(1, SESSIONS, 2):
        store.destroy(f"s{i:042d}")
    store.set("u" * 43, {"user": "bo"})
    most = most_lines_in_one_hold(store, lambda: store.set("v" * 43, {"user": "bo"}))
    store.check()
    assert most <= MOST_LINES_PER_HOLD, f"{most} lines in one hold of the lock"


def young_containers_of_most_sessions() -> list[int]:
    """The sizes of the lists, dicts and tuples that CPython's next young collections
    will walk and that hold more than half the sessions."""
    return [
        len(found)
        for generation in (0, 1)
        for found in gc.get_objects(generation)
        if isinstance(found, (list, dict, tuple)) and len(found) > SESSIONS // 2
    ]


@pytest.mark.parametrize("name", ["all", "save_snapshot"])
def test_a_call_through_every_session_makes_no_young_container_of_them(
    half_expired: MemoryStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each young collection walks every reference a new container holds, stopping every
    thread meanwhile: a fresh list of every session would stop them twice for a time
    that grows with the store."""
    store = half_expired
    gc.collect()  # what the store holds is old now, as in a store long in use
    seen: list[list[int]] = []

    def pause() -> None:  # between two batches, the lock released
        seen.append(young_containers_of_most_sessions())

    monkeypatch.setattr(memory_store, "_pause", pause)
    CALLS[name](store)
    assert len(seen) > SESSIONS // BATCH // 2  # it went through the store in batches
    assert seen[0] == []
    assert not any(seen)


def test_two_calls_through_every_session_at_once_each_see_every_live_one(
    half_expired: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = half_expired
    live = {f"s{i:042d}" for i in range(1, SESSIONS, 2)}
    saved: list[int] = []
    pauses = 0

    def pause() -> None:  # a save made between two of all()'s batches
        nonlocal pauses
        pauses += 1
        if pauses == 1:
            saved.append(store.save_snapshot())

    monkeypatch.setattr(memory_store, "_pause", pause)
    everything = store.all()
    assert set(everything) == live
    assert everything[f"s{1:042d}"] == {"user": "ana", "n": 1}
    assert saved == [len(live)]
    store.check()
    again = MemoryStore("64M", None, clock=store._clock, snapshot=store.snapshot)
    try:
        assert set(again.all()) == live
    finally:
        again.close()
