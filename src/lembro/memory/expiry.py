"""ExpiryIndex: which sessions come due when, so a purge costs what has expired.

Each session has one live record: its id and a time no later than its expiry, the time to
look at it again. Records arrive mostly in time order (one ttl for every session), so
they go to the end of a queue; a record that would break the queue's order goes into a
min-heap instead. Removing a record only flags it (lazy deletion, as cachetools'
``TLRUCache`` does): it leaves the queue or heap when it comes due, or when the index is
compacted because flagged records have piled up.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

__all__ = ["ExpiryIndex", "Record"]

# Compaction waits until at least this many flagged records are held, so a small store
# touched over and over does not rebuild its index on every few calls.
_MIN_STALE_TO_COMPACT = 256


class Record:
    """One entry in the index: look at session ``sid`` again at ``expires`` (clock seconds).

    ``removed`` is set when the session is gone or has a newer record; the record then no
    longer refers to the session's id, so it keeps no id alive.
    """

    __slots__ = ("expires", "removed", "sid")

    def __init__(self, sid: str, expires: float) -> None:
        self.sid = sid
        self.expires = expires
        self.removed = False

    def __lt__(self, other: Record) -> bool:
        return self.expires < other.expires

    def __repr__(self) -> str:
        flag = " removed" if self.removed else ""
        return f"<Record {self.sid[:8]!r} at {self.expires}{flag}>"


class ExpiryIndex:
    """Records of sessions by the time to look at them again: a queue in time order for
    records that arrive in order, a heap for the rest; removals are flagged, not searched."""

    __slots__ = ("_heap", "_queue", "_stale")

    def __init__(self) -> None:
        self._queue: deque[Record] = deque()
        self._heap: list[Record] = []
        self._stale = 0

    def __len__(self) -> int:
        """Records held, live and flagged."""
        return len(self._queue) + len(self._heap)

    @property
    def stale(self) -> int:
        """Flagged records still held."""
        return self._stale

    def add(self, sid: str, expires: float) -> Record:
        """Hold a new record for ``sid`` at ``expires``; O(1) in order, O(log n) otherwise."""
        record = Record(sid, expires)
        queue = self._queue
        if not queue or expires >= queue[-1].expires:
            queue.append(record)
        else:
            heapq.heappush(self._heap, record)
        return record

    def remove(self, record: Record) -> None:
        """Flag ``record``: it no longer stands for a session. O(1)."""
        if record.removed:
            return
        record.removed = True
        record.sid = ""
        self._stale += 1

    def pop_due(self, now: float, limit: int) -> tuple[list[str], int]:
        """Take up to ``limit`` records due by ``now`` (``expires <= now``), earliest
        first; return the ids of the live ones among them, and how many were taken. The
        live ones taken are flagged: their sessions need a new record or removal."""
        sids: list[str] = []
        taken = 0
        queue, heap = self._queue, self._heap
        while taken < limit:
            if queue and queue[0].expires <= now and (not heap or queue[0] < heap[0]):
                record = queue.popleft()
            elif heap and heap[0].expires <= now:
                record = heapq.heappop(heap)
            else:
                break
            taken += 1
            if record.removed:
                self._stale -= 1
            else:
                sids.append(record.sid)
                record.removed = True  # no longer held: removing it again changes nothing
        return sids, taken

    def next_due(self) -> float | None:
        """The earliest time a record is held for, or ``None`` when empty."""
        times = [held[0].expires for held in (self._queue, self._heap) if held]
        return min(times) if times else None

    def should_compact(self, live: int) -> bool:
        """Whether flagged records outnumber the live ones (and enough of them to matter)."""
        return self._stale > live and self._stale > _MIN_STALE_TO_COMPACT

    def compact(self) -> int:
        """Drop every flagged record; return how many. O(records held)."""
        dropped = self._stale
        if dropped:
            self._queue = deque(record for record in self._queue if not record.removed)
            self._heap = [record for record in self._heap if not record.removed]
            heapq.heapify(self._heap)
            self._stale = 0
        return dropped

    def clear(self) -> int:
        """Drop every record; return how many were held."""
        held = len(self)
        self._queue.clear()
        self._heap.clear()
        self._stale = 0
        return held

    def live_records(self) -> list[Record]:
        """Every record not flagged, in no particular order: for checks."""
        return [r for held in (self._queue, self._heap) for r in held if not r.removed]

    def check(self) -> None:
        """Recount the index from scratch; raise ``AssertionError`` naming a mismatch."""
        queue = list(self._queue)
        for before, after in itertools.pairwise(queue):
            if after.expires < before.expires:
                raise AssertionError(f"expiry queue out of order: {before!r} before {after!r}")
        heap = self._heap
        for child in range(1, len(heap)):
            if heap[child] < heap[(child - 1) // 2]:
                raise AssertionError(f"expiry heap out of order at {child}")
        flagged = sum(record.removed for held in (queue, heap) for record in held)
        if flagged != self._stale:
            raise AssertionError(f"expiry index counts {self._stale} stale, holds {flagged}")
        for held in (queue, heap):
            for record in held:
                if record.removed and record.sid:
                    raise AssertionError(f"removed record still names its session: {record!r}")
