"""MemoryStore: a bounded, self-purging in-memory session store for one process."""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from . import background
from .checks import check_seconds, check_session_id
from .errors import InvalidOption, SerializationError, SessionTooLarge
from .protocol import Stats
from .serializers import (
    BUILTIN_SERIALIZERS,
    Serializer,
    dumps_session,
    get_serializer,
    loads_session,
    serializer_name,
)
from .size import format_size, parse_size
from .snapshot import SnapshotRecord, read_snapshot, write_snapshot

__all__ = ["ENTRY_OVERHEAD", "MemoryStore"]

log = logging.getLogger("lembro")

# Bytes each session costs beyond its id's and payload's lengths, as tracemalloc counts
# them: the id str and bytes object headers, the entry record and its expiry float, the
# dict and OrderedDict slots, the heap's tuple and slot, with the tables' slack at their
# fullest. Measured on CPython 3.10-3.13 (tests/test_memory_bound.py pins it).
ENTRY_OVERHEAD = 400

# The background purge removes at most this many sessions per hold of the lock, so a
# mass expiry never stalls requests for long.
_PURGE_BATCH = 1024


# One session: (serialized data, expiry, the expiry it is filed under in the heap, or
# None when it is filed in the in-order queue). A tuple costs a sixth of a class instance
# to make, and set() makes one per call.
_Entry = tuple[bytes, float, "float | None"]
_DATA: Final = 0
_EXPIRES: Final = 1
_IN_HEAP: Final = 2


class MemoryStore:
    """A session store in this process's memory, capped at ``max_size`` bytes.

    ``max_size`` (bytes, or a size string such as ``"4M"``) bounds the memory the store
    holds, as tracemalloc counts it. When a ``set`` takes it over, the store prunes to
    ``low_water * max_size``: expired sessions first, then sessions never read since they
    were created (probation), least recently used first, then the rest, least recently
    used first. Expired sessions are also removed on access and by a background purge
    every ``interval`` seconds (``None`` or ``0``: none). ``ttl`` is the default lifetime
    in seconds. ``clock`` returns seconds; inject one for tests. ``on_error`` receives any
    exception the background purge raises (default: logged).

    ``snapshot`` names a file that keeps sessions across restarts: loaded at start
    (expired ones skipped; a damaged file is moved aside with a WARNING), written on
    ``close()``, at interpreter exit and on SIGTERM, and every ``snapshot_interval``
    seconds when that is set (so a crash loses at most that much). Without a periodic
    snapshot, a process killed with SIGKILL loses its sessions.

    Every method is thread-safe. Sessions are held serialized, so each ``get`` returns a
    fresh dict that no other request shares.
    """

    blocking = False  # calls take microseconds and do no I/O: async callers may call inline

    def __init__(
        self,
        max_size: int | str = "4M",
        interval: float | None = 360.0,
        *,
        ttl: float = 86400.0,
        low_water: float = 0.75,
        serializer: str | Serializer = "msgpack",
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[BaseException], object] | None = None,
        snapshot: str | os.PathLike[str] | None = None,
        snapshot_interval: float | None = None,
    ) -> None:
        self.max_size = parse_size(max_size)
        self.ttl = check_seconds(ttl)
        if (
            isinstance(low_water, bool)
            or not isinstance(low_water, (int, float))
            or not (0 < low_water < 1)
        ):
            raise InvalidOption("low_water", low_water, "a fraction between 0 and 1, exclusive")
        self.low_water = float(low_water)
        if interval is not None and interval != 0:
            interval = check_seconds(interval, "interval")
        self.interval: float | None = interval or None
        if not callable(clock):
            raise InvalidOption("clock", clock, "a callable returning seconds")
        if on_error is not None and not callable(on_error):
            raise InvalidOption("on_error", on_error, "a callable taking an exception")
        if snapshot_interval is not None and snapshot_interval != 0:
            snapshot_interval = check_seconds(snapshot_interval, "snapshot_interval")
            if snapshot is None:
                raise InvalidOption("snapshot_interval", snapshot_interval, "a snapshot file too")
        self.snapshot_interval: float | None = snapshot_interval or None
        if snapshot is not None and not isinstance(snapshot, (str, os.PathLike)):
            raise InvalidOption("snapshot", snapshot, "a file path")
        self.snapshot = os.fspath(snapshot) if snapshot is not None else None
        self._serializer = get_serializer(serializer)
        self._dumps = self._serializer.dumps
        self._loads = self._serializer.loads
        # The built-in serializers always return exact bytes and dicts back; others are checked.
        self._trusted = type(self._serializer) in BUILTIN_SERIALIZERS
        self._clock = clock
        self.on_error = on_error

        self._lock = threading.Lock()
        # Recency: sessions not read since they were created, and the rest; both in
        # least-recently-used-first order. Together they are the index of all sessions.
        self._probation: OrderedDict[str, _Entry] = OrderedDict()
        self._protected: OrderedDict[str, _Entry] = OrderedDict()
        # The expiry index. With one default ttl and a monotonic clock, expiries arrive in
        # order: those sessions sit in ``_fifo`` (sid -> expiry, earliest first), where
        # filing, moving and removing are O(1). A session whose expiry would break that
        # order goes in ``_heap`` as an (expiry, sid) item instead; a heap item is stale
        # once its session is gone or filed elsewhere, and is dropped when it surfaces.
        self._fifo: OrderedDict[str, float] = OrderedDict()
        self._fifo_last = -math.inf  # no expiry in _fifo is later than this
        self._heap: list[tuple[float, str]] = []
        self._stale = 0
        self._size = 0
        self._hits = 0
        self._misses = 0
        self._expired = 0
        self._evicted = 0
        self._purges = 0
        self._warned_evicting = False
        self._closed = False
        self._pid = os.getpid()

        self._next_purge = self._next_snapshot = 0.0  # monotonic seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.snapshot is not None:
            self._load_snapshot(self.snapshot)
            background.install_sigterm_exit()
        background.register(self)
        self._start_purger()

    # ---- public API -------------------------------------------------------------------

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent or expired."""
        now = self._clock()
        with self._lock:
            entry = self._protected.get(sid)
            if entry is not None:
                self._protected.move_to_end(sid)
            else:
                entry = self._probation.pop(sid, None)
                if entry is None:
                    self._misses += 1
                    return None
                self._protected[sid] = entry  # read again: no longer on probation
            if entry[_EXPIRES] <= now:
                self._expire_locked(self._protected, sid, entry)
                self._misses += 1
                return None
            self._hits += 1
            blob = entry[_DATA]
        if not self._trusted:
            return loads_session(self._serializer, blob)
        try:
            data: dict[str, Any] = self._loads(blob)
        except Exception as e:
            raise SerializationError(f"stored session does not deserialize: {e}") from e
        return data

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        Raises ``SerializationError`` when ``data`` does not serialize and
        ``SessionTooLarge`` when it cannot fit in ``max_size``; either way the store is
        unchanged. Going over ``max_size`` prunes, never evicting ``sid`` itself.
        """
        self._write(sid, data, ttl, create=True)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, but only over a live session: ``False`` (and nothing written)
        when ``sid`` is absent or expired."""
        return self._write(sid, data, ttl, create=False)

    def _write(self, sid: str, data: dict[str, Any], ttl: float | None, create: bool) -> bool:
        if type(sid) is not str or not sid:
            check_session_id(sid)
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if self._trusted and type(data) is dict:
            try:
                blob = self._dumps(data)
            except Exception as e:
                raise SerializationError(f"session data does not serialize: {e}") from e
        else:
            blob = dumps_session(self._serializer, data)
        cost = len(sid) + len(blob) + ENTRY_OVERHEAD
        if cost > self.max_size:
            raise SessionTooLarge(cost, self.max_size)
        now = self._clock()
        with self._lock:
            segment = self._probation
            entry = segment.get(sid)
            if entry is None:
                segment = self._protected
                entry = segment.get(sid)
            if entry is None or (not create and entry[_EXPIRES] <= now):
                if not create:
                    if entry is not None:  # expired: it goes now, as on a get
                        self._expire_locked(segment, sid, entry)
                    return False
                self._add_locked(sid, blob, now + lifetime, cost)
            else:
                segment.move_to_end(sid)
                self._size += len(blob) - len(entry[_DATA])
                self._refile_locked(segment, sid, blob, now + lifetime, entry[_IN_HEAP])
            if self._size > self.max_size:
                self._prune_locked(now, keep=sid)
            return True

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds without re-serializing.

        Returns ``False`` when the session is absent or expired. Counts as a return visit.
        """
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        now = self._clock()
        with self._lock:
            protected = self._protected
            entry = protected.get(sid)
            if entry is not None:
                protected.move_to_end(sid)
            else:
                entry = self._probation.pop(sid, None)
                if entry is None:
                    return False
                protected[sid] = entry  # came back: no longer on probation
            if entry[_EXPIRES] <= now:
                self._expire_locked(protected, sid, entry)
                return False
            expires = now + lifetime
            if entry[_IN_HEAP] is None and expires >= self._fifo_last:
                # _refile_locked's first case, in line for the hot path: still the latest
                # expiry, so it moves to the end of the queue.
                fifo = self._fifo
                fifo[sid] = self._fifo_last = expires
                fifo.move_to_end(sid)
                protected[sid] = (entry[_DATA], expires, None)
            else:
                self._refile_locked(protected, sid, entry[_DATA], expires, entry[_IN_HEAP])
            return True

    def destroy(self, sid: str) -> None:
        """Remove session ``sid``; nothing happens when there is none."""
        with self._lock:
            entry = self._probation.pop(sid, None)
            if entry is None:
                entry = self._protected.pop(sid, None)
                if entry is None:
                    return
            self._forget_locked(sid, entry)

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session, by id."""
        now = self._clock()
        with self._lock:
            blobs = [
                (sid, entry[_DATA])
                for segment in (self._probation, self._protected)
                for sid, entry in segment.items()
                if entry[_EXPIRES] > now
            ]
        return {sid: loads_session(self._serializer, blob) for sid, blob in blobs}

    def __len__(self) -> int:
        """The number of live sessions (expired ones are purged first: O(expired) amortized)."""
        now = self._clock()
        with self._lock:
            self._purge_locked(now, None)
            return len(self._probation) + len(self._protected)

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss nor a visit."""
        if not isinstance(sid, str):
            return False
        now = self._clock()
        with self._lock:
            found = self._find_locked(sid)
            return found is not None and found[1][_EXPIRES] > now

    def clear(self) -> None:
        """Remove every session. Counters (hits, misses, ...) are kept."""
        with self._lock:
            self._probation.clear()
            self._protected.clear()
            self._fifo.clear()
            self._fifo_last = -math.inf
            self._heap = []
            self._stale = 0
            self._size = 0

    def purge(self) -> int:
        """Remove expired sessions now; return how many. Costs O(expired * log n)."""
        return self._purge(None)

    def prune(self) -> int:
        """Shrink to ``low_water * max_size`` now; return how many live sessions were evicted."""
        now = self._clock()
        with self._lock:
            return self._prune_locked(now, keep=None)

    @property
    def size(self) -> int:
        """Bytes held, as accounted: ids, payloads and ``ENTRY_OVERHEAD`` per session."""
        return self._size

    def stats(self) -> Stats:
        """The store's counters now."""
        now = self._clock()
        with self._lock:
            self._purge_locked(now, None)
            return Stats(
                sessions=len(self._probation) + len(self._protected),
                size=self._size,
                max_size=self.max_size,
                hits=self._hits,
                misses=self._misses,
                expired=self._expired,
                evicted=self._evicted,
                purges=self._purges,
            )

    def close(self) -> None:
        """Stop the background purge and write the snapshot, if any. Idempotent.

        The sessions stay readable and writable; only the thread stops.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self._thread = None
        if self.snapshot is not None:
            self.save_snapshot()

    def save_snapshot(self) -> int:
        """Write the live sessions to the ``snapshot`` file now; return how many."""
        if self.snapshot is None:
            raise InvalidOption("snapshot", None, "a snapshot file given to MemoryStore")
        now = self._clock()
        with self._lock:
            records: list[SnapshotRecord] = [
                (sid, entry[_EXPIRES] - now, segment is self._protected, entry[_DATA])
                for segment in (self._probation, self._protected)
                for sid, entry in segment.items()
                if entry[_EXPIRES] > now
            ]
        write_snapshot(self.snapshot, serializer_name(self._serializer), records)
        log.debug("snapshot: %d sessions written to %s", len(records), self.snapshot)
        return len(records)

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<MemoryStore {len(self._probation) + len(self._protected)} sessions, "
            f"{format_size(self._size)} of {format_size(self.max_size)}>"
        )

    # ---- bookkeeping: the one place size, counts and the expiry index change ----------

    def _add_locked(
        self, sid: str, blob: bytes, expires: float, cost: int, read_again: bool = False
    ) -> None:
        """Insert a new session costing ``cost`` bytes, on probation unless ``read_again``.
        The lock is held; ``sid`` is not present."""
        entry = (blob, expires, self._file_locked(sid, expires))
        (self._protected if read_again else self._probation)[sid] = entry
        self._size += cost

    def _forget_locked(self, sid: str, entry: _Entry) -> None:
        """Account the removal of a session its caller has just popped from its segment:
        size, and the expiry index. The lock is held."""
        if entry[_IN_HEAP] is None:
            del self._fifo[sid]
        else:
            self._stale += 1
            if self._stale > 64 and self._stale * 2 > len(self._heap):
                self._compact_heap_locked()
        self._size -= len(sid) + len(entry[_DATA]) + ENTRY_OVERHEAD

    def _expire_locked(self, segment: OrderedDict[str, _Entry], sid: str, entry: _Entry) -> None:
        """Remove a session found expired in ``segment``, and count it. The lock is held."""
        del segment[sid]
        self._forget_locked(sid, entry)
        self._expired += 1

    def _file_locked(self, sid: str, expires: float) -> float | None:
        """File ``sid``, not filed now, in the expiry index under ``expires``: in the queue
        when that keeps it in order (return ``None``), else in the heap (return the key)."""
        if expires >= self._fifo_last or not self._fifo:
            self._fifo[sid] = self._fifo_last = expires
            return None
        heapq.heappush(self._heap, (expires, sid))
        return expires

    def _refile_locked(
        self,
        segment: OrderedDict[str, _Entry],
        sid: str,
        blob: bytes,
        expires: float,
        in_heap: float | None,
    ) -> None:
        """Give a session present in ``segment`` new data and expiry. The lock is held; the
        caller has accounted any change in the data's length."""
        fifo = self._fifo
        if in_heap is None:
            if expires >= self._fifo_last:  # still the latest: to the end of the queue
                fifo[sid] = self._fifo_last = expires
                fifo.move_to_end(sid)
                segment[sid] = (blob, expires, None)
                return
            del fifo[sid]
        elif expires >= in_heap and fifo and expires < self._fifo_last:
            # Filed no later than it expires, and the queue cannot take it: the purge
            # re-files it when its heap item surfaces.
            segment[sid] = (blob, expires, in_heap)
            return
        else:
            self._stale += 1  # its heap item is stale now
        segment[sid] = (blob, expires, self._file_locked(sid, expires))

    # ---- helpers that assume the lock is held -------------------------------------------

    def _find_locked(self, sid: str) -> tuple[OrderedDict[str, _Entry], _Entry] | None:
        for segment in (self._probation, self._protected):
            entry = segment.get(sid)
            if entry is not None:
                return segment, entry
        return None

    def _purge_locked(self, now: float, limit: int | None) -> tuple[int, bool]:
        """Remove up to ``limit`` expired sessions; return (removed, whether any remain)."""
        removed = 0
        fifo = self._fifo
        while fifo:
            sid, expires = next(iter(fifo.items()))
            if expires > now:
                break
            if limit is not None and removed >= limit:
                self._expired += removed
                return removed, True
            entry = self._probation.pop(sid, None) or self._protected.pop(sid)  # fifo is exact
            self._forget_locked(sid, entry)
            removed += 1
        # Re-read self._heap each time: a removal below may compact it into a new list.
        while self._heap and self._heap[0][0] <= now:
            if limit is not None and removed >= limit:
                self._expired += removed
                return removed, True
            key, sid = heapq.heappop(self._heap)
            found = self._find_locked(sid)
            if found is None or found[1][_IN_HEAP] != key:
                self._stale -= 1
                continue
            segment, entry = found
            expires = entry[_EXPIRES]
            if expires > now:  # touched since: file it under its new expiry, same recency
                segment[sid] = (entry[_DATA], expires, self._file_locked(sid, expires))
                continue
            self._stale -= 1  # the item is popped; _forget_locked counts it stale again
            del segment[sid]
            self._forget_locked(sid, entry)
            removed += 1
        self._expired += removed
        return removed, False

    def _prune_locked(self, now: float, keep: str | None) -> int:
        """Shrink to ``low_water * max_size``; never evict ``keep``. Return live evictions."""
        target = int(self.max_size * self.low_water)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug(
                "prune start: %s in %d sessions, max %s, target %s",
                format_size(self._size),
                len(self._probation) + len(self._protected),
                format_size(self.max_size),
                format_size(target),
            )
        self._purge_locked(now, None)
        evicted = 0
        for segment in (self._probation, self._protected):
            while self._size > target and segment:
                sid = next(iter(segment))
                if sid == keep:  # the most recent of its segment: nothing older is left
                    break
                self._forget_locked(sid, segment.popitem(last=False)[1])
                evicted += 1
        self._evicted += evicted
        if debug:
            log.debug(
                "prune end: %s in %d sessions (%d evicted)",
                format_size(self._size),
                len(self._probation) + len(self._protected),
                evicted,
            )
        if evicted and not self._warned_evicting:
            self._warned_evicting = True
            log.warning(
                "max_size %s is too small: evicted %d live sessions to fit; the store holds "
                "%d sessions in %s. Raise max_size to keep sessions until they expire.",
                format_size(self.max_size),
                evicted,
                len(self._probation) + len(self._protected),
                format_size(self._size),
            )
        return evicted

    def _compact_heap_locked(self) -> None:
        """Drop the heap's stale items: O(heap), once per heap/2 items turned stale."""
        live: dict[str, float] = {}
        for key, sid in self._heap:
            found = self._find_locked(sid)
            if found is not None and found[1][_IN_HEAP] == key:
                live[sid] = key
        heap = [(key, sid) for sid, key in live.items()]
        heapq.heapify(heap)
        self._heap = heap
        self._stale = 0

    # ---- snapshots and the background thread -------------------------------------------

    def _load_snapshot(self, path: str) -> None:
        records = read_snapshot(path, serializer_name(self._serializer))
        now = self._clock()
        with self._lock:
            for sid, left, read_again, data in records:
                if self._find_locked(sid) is None:
                    cost = len(sid) + len(data) + ENTRY_OVERHEAD
                    self._add_locked(sid, data, now + left, cost, read_again)
            if self._size > self.max_size:
                self._prune_locked(now, keep=None)
        if records:
            log.info("snapshot: %d sessions loaded from %s", len(records), path)

    def _background_tick(self, now: float) -> None:
        """One wake of the background thread at ``now`` (monotonic seconds)."""
        if self.interval is not None and now >= self._next_purge:
            self._next_purge = now + self.interval
            self._purge(_PURGE_BATCH)
        if self.snapshot_interval is not None and now >= self._next_snapshot:
            self._next_snapshot = now + self.snapshot_interval
            self.save_snapshot()

    def _purge(self, batch: int | None) -> int:
        total = 0
        while True:
            now = self._clock()
            with self._lock:
                removed, more = self._purge_locked(now, batch)
                if not more:
                    self._purges += 1
            total += removed
            if not more:
                return total

    def _start_purger(self) -> None:
        periods = [p for p in (self.interval, self.snapshot_interval) if p is not None]
        if not periods or self._closed:
            return
        start = time.monotonic()
        self._next_purge = start + (self.interval or 0)
        self._next_snapshot = start + (self.snapshot_interval or 0)
        self._stop = threading.Event()
        self._thread = background.start(self, self._stop, min(periods))

    def _after_fork_in_child(self) -> None:
        """Give the child a fresh lock and its own purge thread; say that sessions split."""
        self._lock = threading.Lock()
        self._thread = None
        held = len(self._probation) + len(self._protected)
        parent, self._pid = self._pid, os.getpid()
        if held:
            log.warning(
                "MemoryStore forked from process %d with %d sessions: process %d now has its "
                "own copy, and sessions written in one worker are not seen by another. Run "
                "one worker process (with threads), or use lembro.RedisStore for several.",
                parent,
                held,
                self._pid,
            )
        self._start_purger()
