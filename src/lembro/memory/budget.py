"""The budget: what a session costs in memory, and the store's size, changed only here."""

from __future__ import annotations

import sys

from .entry import Entry

__all__ = ["RECORD_OVERHEAD", "SESSION_OVERHEAD", "Budget", "entry_cost", "session_cost"]

# Bytes each session costs beyond its id and its data's length, as tracemalloc counts
# them: the bytes object's header, the Entry, its expiry and score floats, its cost (an
# int object and its slot), and its slot in the store's table with the table's slack at
# its fullest. The tracemalloc tests in tests/unit/test_memory.py hold the store to it.
SESSION_OVERHEAD = 262

# Bytes each record in the expiry index costs, live or flagged: the Record, its float,
# and its slot in the queue or the heap.
RECORD_OVERHEAD = 104


def session_cost(sid: str, data: bytes) -> int:
    """Bytes a session of id ``sid`` and serialized ``data`` costs, its record aside. The
    id counts at the bytes CPython holds for it, which depend on its widest character."""
    return sys.getsizeof(sid) + len(data) + SESSION_OVERHEAD


def entry_cost(entry: Entry) -> int:
    """Bytes ``entry`` costs, its record aside."""
    return session_cost(entry.sid, entry.data)


class Budget:
    """The store's size in bytes against its cap: sessions plus expiry records."""

    __slots__ = ("low_water", "max_size", "size")

    def __init__(self, max_size: int, low_water: float) -> None:
        self.max_size = max_size
        self.low_water = low_water
        self.size = 0

    @property
    def target(self) -> int:
        """Bytes a prune shrinks the store to."""
        return int(self.max_size * self.low_water)

    @property
    def over(self) -> bool:
        """Whether the store holds more than ``max_size``."""
        return self.size > self.max_size

    def capacity(self, sessions: int) -> int:
        """How many sessions fit in ``max_size`` at the average cost of the ``sessions``
        held now (at least one)."""
        if sessions == 0:
            return 1
        return self.max_size * sessions // self.size

    def new_session_cost(self, sid: str, data: bytes) -> int:
        """Bytes a new session costs, its record included."""
        return session_cost(sid, data) + RECORD_OVERHEAD

    def first_capacity(self) -> int:
        """A guess at how many sessions fit, before any are held: 1 KiB each."""
        return max(self.max_size // 1024, 1)

    def add_session(self, entry: Entry) -> None:
        """Count a new session and its expiry record; the session keeps its cost, so
        removing it needs no recount."""
        entry.cost = session_cost(entry.sid, entry.data)
        self.size += entry.cost + RECORD_OVERHEAD

    def remove_session(self, entry: Entry) -> None:
        """Uncount a session; its expiry record stays counted until the index drops it."""
        self.size -= entry.cost

    def replace_data(self, entry: Entry, data: bytes) -> None:
        """Give ``entry`` new ``data``, and count the difference."""
        difference = len(data) - len(entry.data)
        entry.data = data
        entry.cost += difference
        self.size += difference

    def add_record(self) -> None:
        """Count a new expiry record for a session already counted."""
        self.size += RECORD_OVERHEAD

    def remove_records(self, count: int) -> None:
        """Uncount ``count`` expiry records the index dropped."""
        self.size -= count * RECORD_OVERHEAD

    def clear(self) -> None:
        self.size = 0

    def check(self, entries: list[Entry], records: int) -> None:
        """Recount the size from ``entries`` and ``records`` held; raise
        ``AssertionError`` naming a mismatch."""
        for entry in entries:
            if entry.cost != entry_cost(entry):
                raise AssertionError(
                    f"session {entry.sid[:8]!r} is counted at {entry.cost}, "
                    f"recounted {entry_cost(entry)}"
                )
        counted = sum(map(entry_cost, entries)) + records * RECORD_OVERHEAD
        if counted != self.size:
            raise AssertionError(f"size is {self.size}, recounted {counted}")
