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
    records that arrive in order, a heap for the rest; removals are flagged, not searched.

    Flagged records are dropped by a compaction done in steps (``compact_step``), so no
    call works through the whole index at once: a compaction sets the queue and the heap
    aside, and each step moves up to a given number of their records, live ones only,
    into the new heap. Until it ends, records are taken from all four in time order."""

    __slots__ = ("_heap", "_old_heap", "_old_queue", "_queue", "_stale")

    def __init__(self) -> None:
        self._queue: deque[Record] = deque()
        self._heap: list[Record] = []
        # What a compaction under way still has to go through: the queue and the heap
        # as they were when it began.
        self._old_queue: deque[Record] = deque()
        self._old_heap: list[Record] = []
        self._stale = 0

    def __len__(self) -> int:
        """Records held, live and flagged."""
        return len(self._queue) + len(self._heap) + len(self._old_queue) + len(self._old_heap)

    @property
    def stale(self) -> int:
        """Flagged records still held."""
        return self._stale

    @property
    def compacting(self) -> bool:
        """Whether a compaction is under way (``compact_step`` has more to do)."""
        return bool(self._old_queue or self._old_heap)

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
        while taken < limit:
            record = self._pop_earliest(now)
            if record is None:
                break
            taken += 1
            if record.removed:
                self._stale -= 1
            else:
                sids.append(record.sid)
                record.removed = True  # no longer held: removing it again changes nothing
        return sids, taken

    def _pop_earliest(self, now: float) -> Record | None:
        """Take the earliest record due by ``now`` from wherever it is held."""
        queue, heap = self._queue, self._heap
        if not (self._old_queue or self._old_heap):  # no compaction: the usual case
            if queue and queue[0].expires <= now and (not heap or queue[0] < heap[0]):
                return queue.popleft()
            if heap and heap[0].expires <= now:
                return heapq.heappop(heap)
            return None
        earliest: Record | None = None
        source: deque[Record] | list[Record] | None = None
        for held in (queue, heap, self._old_queue, self._old_heap):
            if held and held[0].expires <= now and (earliest is None or held[0] < earliest):
                earliest, source = held[0], held
        if source is None:
            return None
        if isinstance(source, deque):
            return source.popleft()
        return heapq.heappop(source)

    def next_due(self) -> float | None:
        """The earliest time a record is held for, or ``None`` when empty."""
        held = (self._queue, self._heap, self._old_queue, self._old_heap)
        times = [records[0].expires for records in held if records]
        return min(times) if times else None

    def compaction_due(self, live: int) -> bool:
        """Whether ``compact_step`` has work, with ``live`` sessions held: a compaction
        under way, or one that should start (flagged records outnumber the live ones,
        and enough of them to matter)."""
        if self._old_queue or self._old_heap:
            return True
        stale = self._stale
        return stale > live and stale > _MIN_STALE_TO_COMPACT

    def should_compact(self, live: int) -> bool:
        """Whether flagged records outnumber the live ones (and enough of them to matter),
        and no compaction is under way."""
        return (
            self._stale > live
            and self._stale > _MIN_STALE_TO_COMPACT
            and not (self._old_queue or self._old_heap)
        )

    def start_compaction(self) -> None:
        """Set the records held aside for ``compact_step`` to go through. O(1)."""
        if self._old_queue or self._old_heap:
            return
        self._old_queue, self._queue = self._queue, deque()
        self._old_heap, self._heap = self._heap, []

    def compact_step(self, limit: int) -> tuple[int, bool]:
        """Go through up to ``limit`` of the records set aside: keep the live ones (in the
        heap), drop the flagged. Return (how many were dropped, whether more are left).
        Records that come in order onto the heap cost O(1) each."""
        dropped = 0
        heap = self._heap
        old_queue, old_heap = self._old_queue, self._old_heap
        for _ in range(limit):
            if old_queue:
                record = old_queue.popleft()
            elif old_heap:
                record = heapq.heappop(old_heap)
            else:
                break
            if record.removed:
                dropped += 1
            else:
                heapq.heappush(heap, record)
        self._stale -= dropped
        return dropped, bool(old_queue or old_heap)

    def compact(self) -> int:
        """Drop every flagged record at once; return how many. O(records held): for tests
        and small indexes."""
        self.start_compaction()
        dropped = 0
        more = True
        while more:
            count, more = self.compact_step(1 << 20)
            dropped += count
        return dropped

    def clear(self) -> int:
        """Drop every record; return how many were held."""
        held = len(self)
        for records in (self._queue, self._heap, self._old_queue, self._old_heap):
            records.clear()
        self._stale = 0
        return held

    def take_apart(self, step: int) -> None:
        """Drop every record, ``step`` at a time (see ``SessionTable.take_apart``)."""
        for records in self._all():
            while records:
                for _ in range(min(step, len(records))):
                    records.pop()
        self._stale = 0

    def live_records(self) -> list[Record]:
        """Every record not flagged, in no particular order: for checks."""
        return [r for held in self._all() for r in held if not r.removed]

    def _all(self) -> tuple[deque[Record], list[Record], deque[Record], list[Record]]:
        return (self._queue, self._heap, self._old_queue, self._old_heap)

    def check(self) -> None:
        """Recount the index from scratch; raise ``AssertionError`` naming a mismatch."""
        for queue in (self._queue, self._old_queue):
            for before, after in itertools.pairwise(queue):
                if after.expires < before.expires:
                    raise AssertionError(f"expiry queue out of order: {before!r} before {after!r}")
        for heap in (self._heap, self._old_heap):
            for child in range(1, len(heap)):
                if heap[child] < heap[(child - 1) // 2]:
                    raise AssertionError(f"expiry heap out of order at {child}")
        flagged = sum(record.removed for held in self._all() for record in held)
        if flagged != self._stale:
            raise AssertionError(f"expiry index counts {self._stale} stale, holds {flagged}")
        for held in self._all():
            for record in held:
                if record.removed and record.sid:
                    raise AssertionError(f"removed record still names its session: {record!r}")
