"""MemoryStore: a bounded, self-purging in-memory session store for one process."""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
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

__all__ = ["ENTRY_OVERHEAD", "ODD_OVERHEAD", "MemoryStore"]

log = logging.getLogger("lembro")

# Bytes each session costs beyond its id's and payload's lengths, as tracemalloc counts
# them: the id str and bytes object headers, the entry tuple with its expiry floats,
# its slot in the recency table and in the expiry index (or, filed out of
# order, its heap item), with the tables' slack and holes at their fullest. Measured on
# CPython 3.10-3.13; the tracemalloc tests in tests/test_memory.py hold the store to it.
ENTRY_OVERHEAD = 380

# Bytes a session filed out of order costs on top of ENTRY_OVERHEAD while it is: its
# slot in ``_odd`` and its heap item (up to two, counting the stale ones the heap may
# hold). Counted in the store's size only then, so stores whose sessions all share one
# ttl do not pay for it.
ODD_OVERHEAD = 200

# The background purge handles at most this many sessions per hold of the lock, so a
# mass expiry never stalls requests for long.
_PURGE_BATCH = 1024


# One session: (serialized data, expiry in clock seconds, read again since it was
# created, the expiry past which an extension files it again). A tuple costs a sixth of
# a class instance to make, and every set() and touch() makes one. What a session is
# accounted at is not kept in it (one object fewer to make and free): ``_cost`` works
# it out from the lengths.
_Entry = tuple[bytes, float, bool, float]
_DATA: Final = 0
_EXPIRES: Final = 1
_PROTECTED: Final = 2
_RENEW: Final = 3


def _cost(sid: str, entry: _Entry) -> int:
    """The bytes session ``sid`` is accounted at (``ODD_OVERHEAD`` aside)."""
    return len(sid) + len(entry[_DATA]) + ENTRY_OVERHEAD


def _filed_at_expiry(entry: _Entry) -> _Entry:
    """``entry``, just filed again under its own expiry (the next extension files it
    again, in order)."""
    return (entry[_DATA], entry[_EXPIRES], entry[_PROTECTED], entry[_EXPIRES])


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

    # How the sessions are held (all under ``_lock``); every table is a plain dict, whose
    # operations cost the least Python has:
    #
    # ``_queue``: every session, sid -> entry, least recently used first. A use (get,
    #   set, touch) pops the session and puts it back at the end; the hole it leaves
    #   is reclaimed when the table next resizes (O(1) amortized). Probation is the
    #   queue's unread entries, in the same order; pruning walks the queue from the front.
    # The expiry index, filed lazily: each session is filed under an expiry no later
    #   than its own, either in ``_due`` (sid -> filed expiry, in insertion order, which
    #   is expiry order: a filing is appended only when not earlier than ``_last``) or,
    #   when its expiry would break that order, in ``_odd`` (sid -> filed expiry) with an
    #   (expiry, sid) item in the min-heap ``_heap`` (stale once ``_odd`` no longer holds
    #   that sid at that expiry). A touch or a write leaves a session where it is filed
    #   unless it shortens its life or extends it past the entry's renew mark: then it
    #   files it again (at the end of ``_due``, in the usual case) and sets the mark
    #   half a lifetime later. So a session in use is filed again once per half
    #   lifetime, not on every touch, and a new one that never comes back never is.
    #   A purge takes the sessions filed up to now, from the front of ``_due`` and the
    #   top of the heap: it removes the expired ones and files the others (extended
    #   since, and not used since) again at their expiry. So it costs O(log n) per
    #   session it removes or files again, and never scans.
    # ``_size``: the sum of the entries' costs, and ODD_OVERHEAD per ``_odd`` filing.
    __slots__ = (
        "__weakref__",
        "_clock",
        "_closed",
        "_due",
        "_dumps",
        "_evicted",
        "_expired",
        "_heap",
        "_hits",
        "_last",
        "_loads",
        "_lock",
        "_misses",
        "_next_purge",
        "_next_snapshot",
        "_odd",
        "_pid",
        "_purges",
        "_queue",
        "_serializer",
        "_size",
        "_stop",
        "_thread",
        "_trusted",
        "_warned_evicting",
        "interval",
        "low_water",
        "max_size",
        "on_error",
        "snapshot",
        "snapshot_interval",
        "ttl",
    )

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
        self._queue: dict[str, _Entry] = {}
        self._due: dict[str, float] = {}
        self._odd: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._last = -math.inf
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
    #
    # The hot paths call the callables they hold (clock, dumps, loads) through a local:
    # CPython 3.11 specializes a local's call, not a call through a slot.

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent or expired."""
        clock = self._clock
        now = clock()
        with self._lock:
            entry = self._queue.pop(sid, None)
            if entry is None:
                self._misses += 1
                return None
            if entry[_EXPIRES] <= now:
                self._forget_locked(sid, entry)
                self._expired += 1
                self._misses += 1
                return None
            if not entry[_PROTECTED]:  # read again: off probation
                entry = (entry[_DATA], entry[_EXPIRES], True, entry[_RENEW])
            self._queue[sid] = entry  # most recently used
            self._hits += 1
        if not self._trusted:
            return loads_session(self._serializer, entry[_DATA])
        loads = self._loads
        try:
            data: dict[str, Any] = loads(entry[_DATA])
        except Exception as e:
            raise SerializationError(f"stored session does not deserialize: {e}") from e
        return data

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        Raises ``SerializationError`` when ``data`` does not serialize and
        ``SessionTooLarge`` when it cannot fit in ``max_size``; either way the store is
        unchanged. Going over ``max_size`` prunes, never evicting ``sid`` itself.
        """
        blob, cost, lifetime = self._encode(sid, data, ttl)
        clock = self._clock
        now = clock()
        expires = now + lifetime
        with self._lock:
            old = self._queue.pop(sid, None)
            if old is None:  # _add_locked, in line
                self._queue[sid] = (blob, expires, False, expires)
                self._size += cost
                if expires >= self._last:
                    self._due[sid] = self._last = expires
                else:
                    self._file_odd_locked(sid, expires)
            else:  # _rewrite_locked, in line
                renew = old[_RENEW]
                if expires > renew or expires < old[_EXPIRES]:
                    renew = expires + lifetime * 0.5
                    self._refile_locked(sid, expires)
                self._queue[sid] = (blob, expires, old[_PROTECTED], renew)
                self._size += len(blob) - len(old[_DATA])
            if self._size > self.max_size:
                self._prune_locked(now, keep=sid)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, but only over a live session: ``False`` (and nothing written)
        when ``sid`` is absent or expired."""
        blob, _, lifetime = self._encode(sid, data, ttl)
        now = self._clock()
        expires = now + lifetime
        with self._lock:
            old = self._queue.pop(sid, None)
            if old is None:
                return False
            if old[_EXPIRES] <= now:  # expired: it goes now, as on a get
                self._forget_locked(sid, old)
                self._expired += 1
                return False
            self._rewrite_locked(sid, old, blob, expires, lifetime)
            if self._size > self.max_size:
                self._prune_locked(now, keep=sid)
            return True

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds without re-serializing.

        Returns ``False`` when the session is absent or expired. Counts as a return visit.
        """
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        clock = self._clock
        now = clock()
        with self._lock:
            entry = self._queue.pop(sid, None)
            if entry is None:
                return False
            if entry[_EXPIRES] <= now:
                self._forget_locked(sid, entry)
                self._expired += 1
                return False
            expires = now + lifetime
            renew = entry[_RENEW]
            if expires > renew or expires < entry[_EXPIRES]:  # as _rewrite_locked does
                renew = expires + lifetime * 0.5
                self._refile_locked(sid, expires)
            self._queue[sid] = (entry[_DATA], expires, True, renew)  # came back
            return True

    def destroy(self, sid: str) -> None:
        """Remove session ``sid``; nothing happens when there is none."""
        with self._lock:
            entry = self._queue.pop(sid, None)
            if entry is not None:  # _forget_locked, in line
                if self._due.pop(sid, None) is None:
                    self._unfile_odd_locked(sid)
                self._size -= len(sid) + len(entry[_DATA]) + ENTRY_OVERHEAD

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session, by id."""
        now = self._clock()
        with self._lock:
            blobs = [
                (sid, entry[_DATA]) for sid, entry in self._queue.items() if entry[_EXPIRES] > now
            ]
        return {sid: loads_session(self._serializer, blob) for sid, blob in blobs}

    def __len__(self) -> int:
        """The number of live sessions (expired ones are purged first: O(expired) amortized)."""
        now = self._clock()
        with self._lock:
            self._purge_locked(now, None)
            return len(self._queue)

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss nor a visit."""
        if not isinstance(sid, str):
            return False
        now = self._clock()
        with self._lock:
            entry = self._queue.get(sid)
            return entry is not None and entry[_EXPIRES] > now

    def clear(self) -> None:
        """Remove every session. Counters (hits, misses, ...) are kept."""
        with self._lock:
            self._queue.clear()
            self._due.clear()
            self._odd.clear()
            self._heap.clear()
            self._last = -math.inf
            self._size = 0

    def purge(self) -> int:
        """Remove expired sessions now; return how many. Costs O(log n) per session
        removed, plus per session extended since it was filed (see the class's notes)."""
        return self._purge(None)

    def prune(self) -> int:
        """Shrink to ``low_water * max_size`` now; return how many live sessions were evicted."""
        now = self._clock()
        with self._lock:
            return self._prune_locked(now, keep=None)

    @property
    def size(self) -> int:
        """Bytes held, as accounted: ids, payloads and ``ENTRY_OVERHEAD`` per session (and
        ``ODD_OVERHEAD`` per session whose expiry is filed out of order)."""
        return self._size

    def stats(self) -> Stats:
        """The store's counters now."""
        now = self._clock()
        with self._lock:
            self._purge_locked(now, None)
            return Stats(
                sessions=len(self._queue),
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
        with self._lock:  # least recently used first: loading them in order keeps recency
            records: list[SnapshotRecord] = [
                (sid, entry[_EXPIRES] - now, entry[_PROTECTED], entry[_DATA])
                for sid, entry in self._queue.items()
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
            f"<MemoryStore {len(self._queue)} sessions, "
            f"{format_size(self._size)} of {format_size(self.max_size)}>"
        )

    # ---- bookkeeping ----------------------------------------------------------------------

    def _encode(
        self, sid: str, data: dict[str, Any], ttl: float | None
    ) -> tuple[bytes, int, float]:
        """Check a write's arguments and serialize ``data``, outside the lock; return
        (bytes, their cost in bytes, lifetime in seconds). Raises before anything changes."""
        if type(sid) is not str or not sid:
            check_session_id(sid)
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if self._trusted and type(data) is dict:
            dumps = self._dumps
            try:
                blob = dumps(data)
            except Exception as e:
                raise SerializationError(f"session data does not serialize: {e}") from e
        else:
            blob = dumps_session(self._serializer, data)
        cost = len(sid) + len(blob) + ENTRY_OVERHEAD
        if cost > self.max_size:
            raise SessionTooLarge(cost, self.max_size)
        return blob, cost, lifetime

    def _add_locked(self, sid: str, entry: _Entry) -> None:
        """Add session ``sid``, not held now, most recently used: queue, size, filing.
        ``set`` does the same in line (its hot path); every removal is _forget_locked."""
        self._queue[sid] = entry
        self._size += _cost(sid, entry)
        self._file_locked(sid, entry[_EXPIRES])

    def _rewrite_locked(
        self, sid: str, old: _Entry, blob: bytes, expires: float, lifetime: float
    ) -> None:
        """Put new data for ``sid`` (just popped, ``old`` its entry) at the end of the
        queue, expiring at ``expires``; file it again only past its renew mark or when
        its life is shortened (``set`` and ``touch`` do the same in line: hot paths)."""
        renew = old[_RENEW]
        if expires > renew or expires < old[_EXPIRES]:
            renew = expires + lifetime * 0.5
            self._refile_locked(sid, expires)
        self._queue[sid] = (blob, expires, old[_PROTECTED], renew)
        self._size += len(blob) - len(old[_DATA])

    def _file_locked(self, sid: str, expires: float) -> None:
        """File ``sid``, filed nowhere now, under ``expires``."""
        if expires >= self._last:
            self._due[sid] = self._last = expires
        else:
            self._file_odd_locked(sid, expires)

    def _refile_locked(self, sid: str, expires: float) -> None:
        """File ``sid`` again, under ``expires``; the caller puts that in its entry."""
        if self._due.pop(sid, None) is None:
            self._unfile_odd_locked(sid)
        self._file_locked(sid, expires)

    def _file_odd_locked(self, sid: str, expires: float) -> None:
        """File ``sid``, filed nowhere now, under an expiry earlier than ``_last``, in the
        heap: O(log n)."""
        odd = self._odd
        heap = self._heap
        self._size += ODD_OVERHEAD
        odd[sid] = expires
        heapq.heappush(heap, (expires, sid))
        if len(heap) > 2 * len(odd) + 64:
            self._compact_heap_locked()

    def _unfile_odd_locked(self, sid: str) -> None:
        """``sid`` is no longer filed in ``_odd``: its heap item, if any, is stale."""
        odd = self._odd
        if odd.pop(sid, None) is not None:
            self._size -= ODD_OVERHEAD
            if len(self._heap) > 2 * len(odd) + 64:
                self._compact_heap_locked()

    def _compact_heap_locked(self) -> None:
        """Rebuild the heap from ``_odd``, dropping stale items: O(odd), once the stale
        items outnumber the live ones (and 64), so O(1) amortized."""
        heap = [(expires, sid) for sid, expires in self._odd.items()]
        heapq.heapify(heap)
        self._heap = heap

    def _forget_locked(self, sid: str, entry: _Entry) -> None:
        """Unfile session ``sid``, just popped from the queue, and unaccount ``entry``:
        the one removal (``destroy`` does the same in line, its hot path)."""
        if self._due.pop(sid, None) is None:
            self._unfile_odd_locked(sid)
        self._size -= _cost(sid, entry)

    def _purge_locked(self, now: float, limit: int | None) -> tuple[int, bool]:
        """Take up to ``limit`` sessions filed up to ``now``: remove the expired ones, file
        the others again. Return (removed, whether more are left)."""
        budget = math.inf if limit is None else limit
        more = False
        queue = self._queue
        due = self._due
        taken: list[str] = []
        for sid, filed in due.items():  # in filing order, until the first not yet due
            if filed > now:
                break
            if len(taken) >= budget:
                more = True
                break
            taken.append(sid)
        removed = 0
        for sid in taken:
            entry = queue[sid]
            if entry[_EXPIRES] <= now:
                del queue[sid]
                self._forget_locked(sid, entry)
                removed += 1
            else:  # extended since it was filed
                self._refile_locked(sid, entry[_EXPIRES])
                queue[sid] = _filed_at_expiry(entry)
        handled = len(taken)
        odd = self._odd
        heappop = heapq.heappop
        # Re-read self._heap each time: filing may compact it into a new list.
        while not more and self._heap and self._heap[0][0] <= now:
            if handled >= budget:
                more = True
                break
            filed, sid = heappop(self._heap)
            if odd.get(sid) != filed:
                continue  # stale
            handled += 1
            del odd[sid]  # its item is popped: unfiled, with no stale item left behind
            self._size -= ODD_OVERHEAD
            entry = queue[sid]
            if entry[_EXPIRES] <= now:
                del queue[sid]
                self._size -= _cost(sid, entry)
                removed += 1
            else:
                self._file_locked(sid, entry[_EXPIRES])
                queue[sid] = _filed_at_expiry(entry)
        if len(self._heap) > 2 * len(self._odd) + 64:
            self._compact_heap_locked()
        self._expired += removed
        return removed, more

    def _prune_locked(self, now: float, keep: str | None) -> int:
        """Shrink to ``low_water * max_size``; never evict ``keep``. Return live evictions.

        Walks the queue at most twice, once per ``(1 - low_water) * max_size`` bytes
        written: O(1) amortized per byte written.
        """
        target = int(self.max_size * self.low_water)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug(
                "prune start: %s in %d sessions, max %s, target %s",
                format_size(self._size),
                len(self._queue),
                format_size(self.max_size),
                format_size(target),
            )
        self._purge_locked(now, None)
        queue = self._queue
        odd = self._odd
        victims: list[str] = []
        size = self._size  # what it will be once the victims are gone
        # Probation first, then the rest; least recently used first in each.
        for protected in (False, True):
            if size <= target:
                break
            for sid, entry in queue.items():
                if entry[_PROTECTED] is protected and sid != keep:
                    victims.append(sid)
                    size -= _cost(sid, entry) + (ODD_OVERHEAD if odd and sid in odd else 0)
                    if size <= target:
                        break
        for sid in victims:
            self._forget_locked(sid, queue.pop(sid))
        evicted = len(victims)
        self._evicted += evicted
        if debug:
            log.debug(
                "prune end: %s in %d sessions (%d evicted)",
                format_size(self._size),
                len(self._queue),
                evicted,
            )
        if evicted and not self._warned_evicting:
            self._warned_evicting = True
            log.warning(
                "max_size %s is too small: evicted %d live sessions to fit; the store holds "
                "%d sessions in %s. Raise max_size to keep sessions until they expire.",
                format_size(self.max_size),
                evicted,
                len(self._queue),
                format_size(self._size),
            )
        return evicted

    # ---- snapshots and the background thread -------------------------------------------

    def _load_snapshot(self, path: str) -> None:
        records = read_snapshot(path, serializer_name(self._serializer))
        now = self._clock()
        with self._lock:
            for sid, left, read_again, data in records:  # least recently used first
                if sid not in self._queue:
                    self._add_locked(sid, (data, now + left, read_again, now + left))
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
        held = len(self._queue)
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
