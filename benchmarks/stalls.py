"""The longest wait another thread's ``get()`` sees while one call goes through a large
store: 300,000 sessions (3,000 in a quick run), half of them expired, with one lifetime
and with mixed ones. Every call works in steps and lets waiting threads in between, so
no wait should come near the time the whole call takes.

The reader's wait is the longest time between two of its ``get()``s returning, so a stop
between two calls counts as one inside a call. What a call returns is dropped after the
timing: freeing it is the caller's. The rows marked "for comparison" are not calls of
lembro's: what the interpreter itself costs another thread at this size (building the
dicts ``all()`` returns, dropping them, a full cyclic collection), each prepared on the
store before its timing.
"""

from __future__ import annotations

import gc
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from harness import Config, Row, Section, Table, Target, progress

from lembro import MemoryStore

LIMIT_MS = 10.0

# Each row's timed call, made from the store before the timing starts.
Prepare = Callable[[MemoryStore], Callable[[], object]]


def _decode_live(store: MemoryStore) -> Callable[[], object]:
    """The least ``all()`` can do: one plain comprehension decoding every live session's
    bytes, taken from the store before the timing."""
    now = store._clock()
    blobs = [(e.sid, e.data) for e in store._table.sessions.values() if e.expires > now]
    decode = msgspec.msgpack.decode
    return lambda: {sid: decode(blob) for sid, blob in blobs}


def _drop_all(store: MemoryStore) -> Callable[[], object]:
    """What the caller of ``all()`` pays when it lets the result go."""
    held = [store.all()]
    return held.clear


CALLS: dict[str, Prepare] = {
    "a write over the cap (prune)": lambda s: lambda: _write_over_cap(s),
    "purge()": lambda s: s.purge,
    "len()": lambda s: s.__len__,
    "stats()": lambda s: s.stats,
    "all()": lambda s: s.all,
    "clear()": lambda s: s.clear,
    "destroy_sessions_of()": lambda s: lambda: s.destroy_sessions_of("ana"),
    "save_snapshot()": lambda s: s.save_snapshot,
    # Not lembro's: the dicts all() returns, built in one comprehension (every thread
    # waits on the interpreter while a pure-Python loop runs), and then freed (one
    # deallocation after another, in C, no thread in between).
    "decoding the live sessions into a dict (for comparison)": _decode_live,
    "dropping all()'s result (for comparison)": _drop_all,
    # Not lembro's: CPython's full cyclic collection walks every object that can hold a
    # reference, two per session here, and stops every thread while it does.
    "gc.collect() (for comparison)": lambda s: gc.collect,
}


LEMBROS = [name for name in CALLS if not name.endswith("(for comparison)")]


def _write_over_cap(store: MemoryStore) -> None:
    store._table.budget.max_size = store.size  # the next write takes it over
    store.set("w" * 43, {"user": "bo"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(sessions: int, mixed: bool, snapshot: Path) -> tuple[MemoryStore, Clock]:
    clock = Clock()
    snapshot.unlink(missing_ok=True)  # each store starts empty
    store = MemoryStore("1G", None, clock=clock, owner_key="user", snapshot=snapshot)
    for i in range(sessions):
        short = i % 2 == 0
        ttl = (10.0 + i % 7 if mixed else 10.0) if short else 1000.0 - (i % 13 if mixed else 0)
        store.set(f"s{i:042d}", {"user": "ana" if i % 3 else f"u{i}", "n": i}, ttl=ttl)
    clock.now += 100
    return store, clock


def waits_during(store: MemoryStore, call: Callable[[], object]) -> tuple[float, float]:
    """Run ``call`` while another thread calls ``get()`` over and over; return (the
    longest time between two of its ``get()``s returning, the whole call), in
    milliseconds."""
    stop = threading.Event()
    longest = [0.0]
    started = threading.Event()

    def reader() -> None:
        sid = "s" + "0" * 42
        last = time.perf_counter()
        started.set()
        while not stop.is_set():
            store.get(sid)
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    thread = threading.Thread(target=reader)
    thread.start()
    started.wait()
    time.sleep(0.01)
    begin = time.perf_counter()
    result = call()
    took = time.perf_counter() - begin
    stop.set()
    thread.join()
    del result  # the caller's to free, after the timing
    return longest[0] * 1000, took * 1000


def run(config: Config) -> Section:
    logging.getLogger("lembro").setLevel(logging.ERROR)
    sessions = 3_000 if config.quick else 300_000
    runs = 1 if config.quick else 3
    modes = {"one lifetime": False, "mixed lifetimes": True}
    columns = [f"{mode}: longest get() wait" for mode in modes] + [
        f"{mode}: the call" for mode in modes
    ]
    table = Table(
        f"Milliseconds, {sessions:,} sessions, half expired (median of {runs} runs)",
        columns,
        columns[0],
    )
    worst = 0.0
    with tempfile.TemporaryDirectory() as directory:
        for name, prepare in CALLS.items():
            progress(f"stalls: {name}")
            values: dict[str, float | None] = {}
            for mode, mixed in modes.items():
                waits, calls = [], []
                for _ in range(runs):
                    store, _clock = build(sessions, mixed, Path(directory) / "s.snap")
                    wait, took = waits_during(store, prepare(store))
                    store.close()
                    waits.append(wait)
                    calls.append(took)
                values[f"{mode}: longest get() wait"] = statistics.median(waits)
                values[f"{mode}: the call"] = statistics.median(calls)
                if name in LEMBROS:
                    worst = max(worst, statistics.median(waits))
            table.rows.append(Row(name, "ms", values))
    return Section(
        "Stalls: another thread's wait while one call works through the store",
        [table],
        [
            Target(
                f"no get() waits {LIMIT_MS:.0f} ms or more during a call of lembro's",
                worst < LIMIT_MS,
                f"longest median wait {worst:.1f} ms",
            )
        ],
    )
