"""The cap is true on every path, as tracemalloc counts it: whatever the history of sizes,
whatever serializer the app gives, and while a snapshot loads."""

from __future__ import annotations

import gc
import random
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lembro import InvalidOption, MemoryStore

from .test_memory import CAP, held_between, sid_of


def test_the_cap_holds_when_many_small_sessions_give_way_to_fewer_large_ones() -> None:
    """A dict never shrinks when keys leave: a table sized for thousands of tiny sessions
    must not stay that size once a few large ones hold the store. With sessions this
    large, the store itself (a few KiB, whatever it holds) is what is left of the gap to
    the cap: ``max_size`` bounds what the sessions cost."""
    tiny, large = {"n": 1}, {"blob": "x" * 12_000}

    def step(store: MemoryStore, i: int, rng: random.Random) -> None:
        store.set(sid_of(i), tiny if i < 8_000 else large)

    held_between(0.6, 1.0, step, 9_000, every=7, not_counting_the_empty_store=True)


class EncodeAsIs:
    """An app's serializer whose ``dumps`` is msgspec's encode: its bytes come back with
    room to spare, which the store must not hold."""

    def dumps(self, obj: Any) -> bytes:
        return msgspec.msgpack.encode(obj)

    def loads(self, data: bytes) -> Any:
        return msgspec.msgpack.decode(data)


def test_the_cap_holds_with_a_serializer_whose_bytes_have_room_to_spare() -> None:
    def step(store: MemoryStore, i: int, rng: random.Random) -> None:
        data = {"user": "ana", "roles": ["admin", "ops"], "note": "x" * rng.randrange(900)}
        store.set(sid_of(i), data)
        if i % 3:
            store.get(sid_of(rng.randrange(max(0, i - 500), i + 1)))

    held_between(0.6, 1.0, step, 12_000, serializer=EncodeAsIs())


def peak_while_loading(path: Path, max_size: int) -> tuple[float, int]:
    """Build a store from the snapshot at ``path``; return the peak of what tracemalloc
    counted meanwhile, as a fraction of ``max_size``, and how many sessions it loaded."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        store = MemoryStore(max_size, None, snapshot=path)
        peak = tracemalloc.get_traced_memory()[1]
        loaded = len(store)
        store.check()
        store.close()
    finally:
        tracemalloc.stop()
    return (peak - base) / max_size, loaded


def write_full_snapshot(path: Path, max_size: int) -> int:
    """A store's own snapshot, written just under its cap; return how many it holds."""
    with MemoryStore(max_size, None, snapshot=path) as store:
        i = 0
        while store.size < store.max_size * 0.97:
            store.set(sid_of(i), {"user": i, "note": "x" * (i % 400)})
            i += 1
        return len(store)


def test_loading_a_snapshot_just_under_the_cap_peaks_near_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    held = write_full_snapshot(path, CAP)
    peak, loaded = peak_while_loading(path, CAP)
    assert loaded == held
    assert peak <= 1.1, f"peaked at {peak:.2f} of the cap"


def test_loading_a_snapshot_larger_than_the_cap_is_pruned_as_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    held = write_full_snapshot(path, 3 * CAP)  # another store's, three times as large
    peak, loaded = peak_while_loading(path, CAP)
    assert 0 < loaded < held
    assert peak <= 1.1, f"peaked at {peak:.2f} of the cap"


@pytest.mark.parametrize("max_size", [1, 100, "200"])
def test_a_cap_smaller_than_one_session_is_refused_at_construction(max_size: Any) -> None:
    with pytest.raises(InvalidOption, match="one empty session"):
        MemoryStore(max_size, None)


def test_a_cap_that_holds_one_session_is_accepted_and_holds_it() -> None:
    with MemoryStore(1024, None) as store:
        store.set(sid_of(1), {})
        assert store.get(sid_of(1)) == {}


def test_the_store_itself_costs_a_few_kib_beside_its_cap() -> None:
    """README: ``max_size`` bounds what the sessions cost; the store itself (its lock,
    table, indexes, purge thread) costs a few KiB beside, whatever it holds."""
    MemoryStore("1M", 60).close()  # what the first store imports, imported before counting
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = MemoryStore("1M", 60)
        cost = tracemalloc.get_traced_memory()[0] - base
        store.close()
    finally:
        tracemalloc.stop()
    assert 0 < cost < 16 * 1024, f"an empty store costs {cost} bytes"
