"""MemoryStore: a bounded, self-purging in-memory session store for one process."""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from . import background, processes
from .checks import check_seconds, check_session_id
from .errors import InvalidOption, SerializationError, SessionTooLarge
from .protocol import Stats
from .serializers import (
    BUILTIN_SERIALIZERS,
    Serializer,
    dumps_session,
    get_serializer,
    loads_session,
    require_safe_serializer,
    serializer_name,
)
from .size import format_size, parse_size
from .snapshot import (
    SnapshotRecord,
    check_snapshot_path,
    read_snapshot,
    remove_leftovers,
    write_snapshot,
)

__all__ = ["ENTRY_OVERHEAD", "FILING_OVERHEAD", "HEAP_OVERHEAD", "MemoryStore"]

log = logging.getLogger("lembro")

# Bytes each session costs beyond its payload's length, as tracemalloc counts them: the
# bytes object's header, the entry tuple with its expiry floats, its slot in the recency
# table, with the table's slack and holes at their fullest. Its id is counted with its
# filing (FILING_OVERHEAD). Measured on CPython 3.10-3.13; the tracemalloc tests in
# tests/test_memory.py hold the store to it.
ENTRY_OVERHEAD = 250

# Bytes a filing in the expiry index costs beyond its id's length: the id str (a session
# keeps the str it was made with, for its key and every filing, however many requests
# bring the id as a new str; the str lives as long as any of them), its expiry float and
# its two slots in the index. Counted while the filing is held, live or stale: a
# destroyed, evicted or refiled session leaves its filing behind until it comes due or a
# sweep drops it, and the store's size says so. A session filed more than once has its
# id counted more than once: over, never under.
FILING_OVERHEAD = 100

# What a new session costs beyond its id's and payload's lengths: its entry and its filing.
_NEW_COST: Final = ENTRY_OVERHEAD + FILING_OVERHEAD

# Bytes a filing made out of expiry order costs on top of FILING_OVERHEAD: its
# (expiry, id) tuple and its slot in the heap. Counted only while it is held, so stores
# whose sessions all share one ttl do not pay for it.
HEAP_OVERHEAD = 80

# What a filing out of order costs beyond its id's length.
_ODD_FILING: Final = FILING_OVERHEAD + HEAP_OVERHEAD

# A snapshot file larger than this many times max_size is not read: a store's own snapshot
# is smaller than the store (each session costs ENTRY_OVERHEAD in memory, ~20 bytes on disk).
_SNAPSHOT_SLACK = 4

# The background purge handles at most this many filings per hold of the lock, so a mass
# expiry never stalls requests for long.
_PURGE_BATCH = 1024


# One session: (serialized data, expiry in clock seconds, read again since it was created,
# the expiry past which an extension files it again, its filing, its id). A tuple costs a
# sixth of a class instance to make, and every set() and touch() makes one. What a session
# is accounted at is not kept in it (one object fewer to make and free): ``_cost`` works
# it out from the lengths. The filing names the session's one live filing in the expiry
# index, by identity: the float held in ``_times`` for an in-order filing, the (expiry,
# id) item held in ``_heap`` for one out of order. The id is the str the session was made
# with: the queue's key and every filing's, so a session holds one id str, not one per
# request that brought it (a request's id is a new str, parsed from a cookie). The hot
# paths (get, set, replace, touch) unpack an entry whole, in this order; the rest index it.
_Entry = tuple[bytes, float, bool, float, object, str]
_DATA: Final = 0
_EXPIRES: Final = 1
_PROTECTED: Final = 2
_RENEW: Final = 3
_FILING: Final = 4
_SID: Final = 5


def _cost(entry: _Entry) -> int:
    """The bytes a session is accounted at, its filing (and id) aside."""
    return len(entry[_DATA]) + ENTRY_OVERHEAD


def _filing_cost(sid: str, filing: object) -> int:
    """The bytes a filing of ``sid`` is accounted at (``filing`` as held in an entry)."""
    if type(filing) is tuple:
        return len(sid) + _ODD_FILING
    return len(sid) + FILING_OVERHEAD


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

    ``trust_pickle=True`` is needed to combine ``serializer="pickle"`` with a snapshot:
    whoever can write the file could otherwise run code in the app.

    Every method is thread-safe. Sessions are held serialized, so each ``get`` returns a
    fresh dict that no other request shares.
    """

    # How the sessions are held (all under ``_lock``):
    #
    # ``_queue``: every session, sid -> entry, least recently used first (a plain dict,
    #   whose operations cost the least Python has). A use (get, set, touch) pops the
    #   session and puts it back at the end; the hole it leaves is reclaimed when the
    #   table next resizes (O(1) amortized). It is put back under the id str it was made
    #   with (``_SID``), not the request's copy, and so filed: one id str per session.
    #   Probation is the queue's unread entries, in the same order; pruning walks the
    #   queue from the front.
    # The expiry index: each session has one live filing, under a time no later than its
    #   expiry, either in order at the end of ``_times``/``_sids`` (two deques, times
    #   never decreasing: a filing is appended only when not earlier than ``_last``) or,
    #   when its time would break that order, as an (expiry, sid) item in the min-heap
    #   ``_heap``. The entry names its live filing by identity (``_FILING``). Any other
    #   filing is stale: a destroy, an eviction or an expiry on access removes the entry
    #   and leaves its filing where it is (so they cost one dict pop), and a refiling
    #   leaves the old one. Stale filings are counted in ``_size``; they go when they come
    #   due, or in a sweep (``_sweep_locked``) on a prune or when they outnumber the live.
    #   A touch or a write leaves a session where it is filed unless it shortens its life
    #   or extends it past the entry's renew mark: then it files it again (at the end of
    #   ``_times``, in the usual case) and sets the mark half a lifetime later. So a
    #   session in use is filed again once per half lifetime, not on every touch, and a
    #   new one that never comes back never is. A purge takes the filings due by now,
    #   from the front of ``_times`` and the top of the heap: it drops the stale ones,
    #   removes the expired sessions and files the others (extended since) again at
    #   their expiry. So it costs O(log n) per filing it takes, and never scans.
    # ``_size``: the sum of the entries' costs and of the filings' costs, stale or live;
    #   the id str is counted with each filing, as the last of them keeps it alive.
    __slots__ = (
        "__weakref__",
        "_changed",
        "_clock",
        "_closed",
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
        "_pid",
        "_purges",
        "_queue",
        "_serializer",
        "_sids",
        "_size",
        "_stop",
        "_thread",
        "_times",
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
        trust_pickle: bool = False,
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
        # lembro-processes: the path is checked now, not at exit when sessions would be lost.
        self.snapshot = check_snapshot_path(snapshot) if snapshot is not None else None
        self._serializer = get_serializer(serializer)
        if self.snapshot is not None:  # lembro-processes: no code from a file
            require_safe_serializer(self._serializer, "a snapshot file", trust_pickle)
        self._dumps = self._serializer.dumps
        self._loads = self._serializer.loads
        # The built-in serializers always return exact bytes and dicts back; others are checked.
        self._trusted = type(self._serializer) in BUILTIN_SERIALIZERS
        self._clock = clock
        self.on_error = on_error

        self._lock = threading.Lock()
        self._queue: dict[str, _Entry] = {}
        self._times: deque[float] = deque()
        self._sids: deque[str] = deque()
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
        # lembro-processes: whether this process changed the sessions since they were loaded
        # or it forked; only then are they its to write to the snapshot.
        self._changed = False

        self._next_purge = self._next_snapshot = 0.0  # monotonic seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        processes.check()  # lembro-processes: several processes serving one app
        if self.snapshot is not None:
            self._load_snapshot(self.snapshot)
            background.install_sigterm_exit()
        background.register(self)
        self._start_purger()

    # ---- public API -------------------------------------------------------------------
    #
    # The hot paths call the callables they hold (clock, dumps, loads) through a local:
    # CPython 3.11 specializes a local's call, not a call through a slot. They take the
    # lock with acquire() and release it in a finally: the same hold as ``with``, which
    # looks up and binds __enter__ and __exit__ on every entry (about 0.2 µs a call).

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent or expired."""
        clock = self._clock
        now = clock()
        lock = self._lock
        lock.acquire()
        try:
            entry = self._queue.pop(sid, None)
            if entry is None:
                self._misses += 1
                return None
            blob, expires, protected, renew, filing, sid = entry  # sid: the session's own str
            if expires <= now:
                self._forget_locked(entry)
                self._expired += 1
                self._misses += 1
                return None
            if not protected:  # read again: off probation
                entry = (blob, expires, True, renew, filing, sid)
            self._queue[sid] = entry  # most recently used
            self._hits += 1
        finally:
            lock.release()
        if not self._trusted:
            return loads_session(self._serializer, blob)
        loads = self._loads
        try:
            data: dict[str, Any] = loads(blob)
        except Exception as e:
            raise SerializationError(f"stored session does not deserialize: {e}") from e
        return data

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        Raises ``SerializationError`` when ``data`` does not serialize and
        ``SessionTooLarge`` when it cannot fit in ``max_size``; either way the store is
        unchanged. Going over ``max_size`` prunes, never evicting ``sid`` itself.
        """
        # _encode, in line (its hot path): the call measured 0.04x-0.07x of the floor's set.
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
        cost = len(sid) + len(blob) + _NEW_COST
        if cost > self.max_size:
            raise SessionTooLarge(cost, self.max_size)
        if not self._changed:  # lembro-processes
            self._first_change()
        clock = self._clock
        now = clock()
        expires = now + lifetime
        lock = self._lock
        lock.acquire()
        try:
            old = self._queue.pop(sid, None)
            if old is None:  # _add_locked, in line
                if expires >= self._last:
                    self._times.append(expires)
                    self._sids.append(sid)
                    self._last = expires
                    self._queue[sid] = (blob, expires, False, expires, expires, sid)
                    self._size += cost
                else:
                    self._add_locked(sid, blob, expires, False)
            else:  # _rewrite_locked, in line
                held, was, protected, renew, filing, sid = old
                if expires > renew or expires < was:
                    renew = expires + lifetime * 0.5
                    filing = self._file_locked(sid, expires)
                self._queue[sid] = (blob, expires, protected, renew, filing, sid)
                self._size += len(blob) - len(held)
            if self._size > self.max_size:
                self._prune_locked(now, keep=sid)
        finally:
            lock.release()

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, but only over a live session: ``False`` (and nothing written)
        when ``sid`` is absent or expired."""
        blob, lifetime = self._encode(sid, data, ttl)
        if not self._changed:  # lembro-processes
            self._first_change()
        now = self._clock()
        expires = now + lifetime
        lock = self._lock
        lock.acquire()
        try:
            old = self._queue.pop(sid, None)
            if old is None:
                return False
            if old[_EXPIRES] <= now:  # expired: it goes now, as on a get
                self._forget_locked(old)
                self._expired += 1
                return False
            self._rewrite_locked(old, blob, expires, lifetime)
            if self._size > self.max_size:
                self._prune_locked(now, keep=sid)
            return True
        finally:
            lock.release()

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds without re-serializing.

        Returns ``False`` when the session is absent or expired. Counts as a return visit.
        """
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if not self._changed:  # lembro-processes
            self._first_change()
        clock = self._clock
        now = clock()
        lock = self._lock
        lock.acquire()
        try:
            entry = self._queue.pop(sid, None)
            if entry is None:
                return False
            blob, was, _, renew, filing, sid = entry
            if was <= now:
                self._forget_locked(entry)
                self._expired += 1
                return False
            expires = now + lifetime
            if expires > renew or expires < was:  # as _rewrite_locked does
                renew = expires + lifetime * 0.5
                filing = self._file_locked(sid, expires)
            self._queue[sid] = (blob, expires, True, renew, filing, sid)  # came back
            return True
        finally:
            lock.release()

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether a live session was removed."""
        if not self._changed:  # lembro-processes
            self._first_change()
        now = self._clock()
        lock = self._lock
        lock.acquire()
        try:
            entry = self._queue.pop(sid, None)
            if entry is not None:  # _forget_locked, in line (the hot path)
                self._size -= len(entry[_DATA]) + ENTRY_OVERHEAD
                return bool(entry[_EXPIRES] > now)
            return False
        finally:
            lock.release()

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
        lock = self._lock
        lock.acquire()
        try:
            entry = self._queue.get(sid)
            return entry is not None and entry[_EXPIRES] > now
        finally:
            lock.release()

    def clear(self) -> None:
        """Remove every session. Counters (hits, misses, ...) are kept."""
        if not self._changed:  # lembro-processes
            self._first_change()
        with self._lock:
            self._queue.clear()
            self._times.clear()
            self._sids.clear()
            self._heap.clear()
            self._last = -math.inf
            self._size = 0

    def purge(self) -> int:
        """Remove expired sessions now; return how many. Costs O(log n) per filing due:
        sessions removed or extended since they were filed, and stale filings (see the
        class's notes). Sweeps the stale filings too once they outnumber the sessions."""
        return self._purge(None)

    def prune(self) -> int:
        """Shrink to ``low_water * max_size`` now; return how many live sessions were evicted."""
        now = self._clock()
        with self._lock:
            return self._prune_locked(now, keep=None)

    @property
    def size(self) -> int:
        """Bytes held, as accounted: per session, its payload and ``ENTRY_OVERHEAD``; per
        filing in the expiry index (one per session, and those destroyed, evicted or
        refiled sessions left, until swept), the session's id and ``FILING_OVERHEAD``
        (``HEAP_OVERHEAD`` more when filed out of order)."""
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
        background.forget(self)  # lembro-processes: no longer kept alive for the exit
        if self.snapshot is not None and self._changed:  # lembro-processes
            self.save_snapshot()

    def save_snapshot(self) -> int:
        """Write the live sessions to the ``snapshot`` file now; return how many.

        ``close()``, the exit and the periodic save write only once the sessions changed
        in this process since they were loaded or it forked: a process whose copy is not
        the current one never overwrites the file."""
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

    def _first_change(self) -> None:
        """The sessions change for the first time since they were loaded or forked
        (lembro-processes): from now on they are this process's to write, and a
        forked process that writes serves; check for siblings first (which may raise)."""
        processes.check()
        self._changed = True

    def _forked_in_parent(self) -> None:
        """This process forked (lembro-processes): its children carry these sessions on,
        so it writes the snapshot again only once it changes them again."""
        self._changed = False

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

    def _encode(self, sid: str, data: dict[str, Any], ttl: float | None) -> tuple[bytes, float]:
        """Check a write's arguments and serialize ``data``, outside the lock; return
        (bytes, lifetime in seconds). Raises before anything changes, and when a new
        session of them (its filing included) could not fit. (``set`` does the same in
        line: its hot path.)"""
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
        cost = len(sid) + len(blob) + _NEW_COST
        if cost > self.max_size:
            raise SessionTooLarge(cost, self.max_size)
        return blob, lifetime

    def _add_locked(self, sid: str, data: bytes, expires: float, protected: bool) -> None:
        """Add session ``sid``, not held now, most recently used: queue, filing, size.
        (``set`` does the same in line: its hot path.)"""
        filing = self._file_locked(sid, expires)
        self._queue[sid] = (data, expires, protected, expires, filing, sid)
        self._size += len(data) + ENTRY_OVERHEAD

    def _rewrite_locked(self, old: _Entry, blob: bytes, expires: float, lifetime: float) -> None:
        """Put new data for the session ``old`` was (just popped) at the end of the
        queue, expiring at ``expires``; file it again only past its renew mark or when
        its life is shortened (``set`` and ``touch`` do the same in line: hot paths)."""
        held, was, protected, renew, filing, sid = old
        if expires > renew or expires < was:
            renew = expires + lifetime * 0.5
            filing = self._file_locked(sid, expires)  # the old filing stays, stale
        self._queue[sid] = (blob, expires, protected, renew, filing, sid)
        self._size += len(blob) - len(held)

    def _forget_locked(self, entry: _Entry) -> None:
        """Unaccount the session ``entry`` was, just popped from the queue: the
        one removal (``destroy`` does the same in line, and a prune for its victims at
        once). Its filing stays in the index, stale and counted, until it comes due or a
        sweep drops it: so a removal is one dict pop."""
        self._size -= _cost(entry)

    def _file_locked(self, sid: str, expires: float) -> object:
        """File ``sid`` under ``expires`` and count the filing; return it, for the entry."""
        if expires >= self._last:
            self._times.append(expires)
            self._sids.append(sid)
            self._last = expires
            self._size += _filing_cost(sid, expires)
            return expires
        return self._file_odd_locked(sid, expires)

    def _file_odd_locked(self, sid: str, expires: float) -> object:
        """File ``sid`` under an expiry earlier than ``_last``, in the heap: O(log n)."""
        item = (expires, sid)
        heapq.heappush(self._heap, item)
        self._size += _filing_cost(sid, item)
        return item

    def _stale_locked(self) -> int:
        """How many stale filings the index holds: O(1), as each session has one live."""
        return len(self._times) + len(self._heap) - len(self._queue)

    def _sweep_locked(self) -> None:
        """Drop every stale filing from the index and from the size: O(filings), or
        O(stale) when they are all at the front (a prune evicting the oldest sessions)."""
        get = self._queue.get
        stale = self._stale_locked()
        times, sids = self._times, self._sids
        dropped = 0
        while stale and times:  # the front first: no new tables when it is all there
            entry = get(sids[0])
            if entry is not None and entry[_FILING] is times[0]:
                break
            times.popleft()
            dropped += len(sids.popleft()) + FILING_OVERHEAD  # _filing_cost of one in order
            stale -= 1
        self._size -= dropped
        if not times:
            self._last = -math.inf
        if stale:
            self._sweep_all_locked()

    def _sweep_all_locked(self) -> None:
        """Drop every stale filing, wherever it is: O(filings)."""
        get = self._queue.get
        times: deque[float] = deque()
        sids: deque[str] = deque()
        keep_time, keep_sid = times.append, sids.append
        dropped = 0
        for at, sid in zip(self._times, self._sids, strict=True):
            entry = get(sid)
            if entry is not None and entry[_FILING] is at:
                keep_time(at)
                keep_sid(sid)
            else:
                dropped += _filing_cost(sid, at)
        heap = []
        for item in self._heap:
            entry = get(item[1])
            if entry is not None and entry[_FILING] is item:
                heap.append(item)
            else:
                dropped += _filing_cost(item[1], item)
        heapq.heapify(heap)
        self._times, self._sids, self._heap = times, sids, heap
        self._last = times[-1] if times else -math.inf
        self._size -= dropped

    def _purge_locked(self, now: float, limit: int | None) -> tuple[int, bool]:
        """Take up to ``limit`` filings due by ``now``: drop the stale ones, remove the
        expired sessions, file the others again. Return (removed, whether more are left)."""
        budget = math.inf if limit is None else limit
        handled = removed = 0
        more = False
        times, sids = self._times, self._sids
        while times and times[0] <= now:  # in filing order, until the first not yet due
            if handled >= budget:
                more = True
                break
            handled += 1
            removed += self._take_filing_locked(sids.popleft(), times.popleft(), now)
        heap = self._heap
        heappop = heapq.heappop
        while not more and heap and heap[0][0] <= now:
            if handled >= budget:
                more = True
                break
            handled += 1
            item = heappop(heap)
            removed += self._take_filing_locked(item[1], item, now)
        self._expired += removed
        return removed, more

    def _take_filing_locked(self, sid: str, filing: object, now: float) -> bool:
        """``filing`` of ``sid``, due by ``now``, was just taken from the index: unaccount
        it; if it was the session's live one, remove the session when it has expired, or
        file it again when it was extended since. Return whether it was removed."""
        self._size -= _filing_cost(sid, filing)
        queue = self._queue
        entry = queue.get(sid)
        if entry is None or entry[_FILING] is not filing:
            return False  # stale
        if entry[_EXPIRES] <= now:
            del queue[sid]
            self._forget_locked(entry)
            return True
        queue[sid] = self._filed_at_expiry_locked(entry)
        return False

    def _filed_at_expiry_locked(self, entry: _Entry) -> _Entry:
        """``entry``, filed again under its own expiry (the next extension files it again)."""
        sid = entry[_SID]
        expires = entry[_EXPIRES]
        filing = self._file_locked(sid, expires)
        return (entry[_DATA], expires, entry[_PROTECTED], expires, filing, sid)

    def _prune_locked(self, now: float, keep: str | None) -> int:
        """Shrink to ``low_water * max_size``; never evict ``keep``. Return live evictions.

        Walks the queue at most twice and the expiry index at most twice, once per
        ``(1 - low_water) * max_size`` bytes written: O(1) amortized per byte written.
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
        if self._stale_locked():
            self._sweep_locked()
        queue = self._queue
        victims: list[str] = []
        size = self._size  # what it will be once the victims and their filings are gone
        freed = 0  # by the victims' entries; their filings go in the sweep
        # Probation first, then the rest; least recently used first in each.
        for protected in (False, True):
            if size <= target:
                break
            for sid, entry in queue.items():
                if entry[_PROTECTED] is protected and sid != keep:
                    victims.append(sid)
                    # _cost and _filing_cost, in line: a prune walks thousands.
                    cost = len(entry[_DATA]) + ENTRY_OVERHEAD
                    freed += cost
                    filed = _ODD_FILING if type(entry[_FILING]) is tuple else FILING_OVERHEAD
                    size -= cost + len(sid) + filed
                    if size <= target:
                        break
        for sid in victims:
            del queue[sid]
        self._size -= freed
        if victims:
            self._sweep_locked()  # their filings
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
        remove_leftovers(path)  # lembro-processes
        records = read_snapshot(  # lembro-processes: size and lifetimes bounded
            path,
            serializer_name(self._serializer),
            max_bytes=self.max_size * _SNAPSHOT_SLACK + 65536,
            max_lifetime=self.ttl,
        )
        now = self._clock()
        with self._lock:
            for sid, left, read_again, data in records:  # least recently used first
                if sid not in self._queue:
                    self._add_locked(sid, data, now + left, read_again)
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
            if self._changed:  # lembro-processes
                self.save_snapshot()

    def _purge(self, batch: int | None) -> int:
        total = 0
        while True:
            now = self._clock()
            with self._lock:
                removed, more = self._purge_locked(now, batch)
                if not more:
                    self._purges += 1
                    if self._stale_locked() > len(self._queue) + _PURGE_BATCH:
                        self._sweep_locked()  # O(n), once per n stale filings
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
        self._changed = False  # lembro-processes: the parent's sessions until this one writes
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
