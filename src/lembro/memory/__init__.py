"""MemoryStore: a bounded, self-purging in-memory session store for one process.

The store is one lock around four parts, each in its own module: the table of sessions
(``Entry``, oldest first), the ``ExpiryIndex`` (who comes due when), the
``EvictionOrder`` (who goes first when over the cap) and the ``Budget`` (the size, and
what each session costs); with ``owner_key``, a fifth: the ``OwnerIndex`` (each signed-in
user's sessions). docs/architecture.md maps them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .. import background, processes
from ..checks import check_owner, check_owner_key, check_seconds, check_session_id, owner_of
from ..errors import InvalidOption, SerializationError, SessionTooLarge
from ..protocol import Stats
from ..serializers import (
    BUILTIN_SERIALIZERS,
    Serializer,
    dumps_session,
    get_serializer,
    loads_session,
    require_safe_serializer,
    serializer_name,
)
from ..size import format_size, parse_size
from ..snapshot import (
    FileIdentity,
    SnapshotRecord,
    check_snapshot_path,
    file_identity,
    read_snapshot,
    remove_leftovers,
    write_snapshot,
)
from .budget import (
    OWNED_SESSION_OVERHEAD,
    OWNER_OVERHEAD,
    RECORD_OVERHEAD,
    SESSION_OVERHEAD,
    Budget,
)
from .entry import Entry
from .eviction import EvictionOrder
from .expiry import ExpiryIndex
from .owners import OwnedEntry, OwnerIndex

__all__ = [
    "OWNED_SESSION_OVERHEAD",
    "OWNER_OVERHEAD",
    "RECORD_OVERHEAD",
    "SESSION_OVERHEAD",
    "MemoryStore",
]

log = logging.getLogger("lembro")


# A snapshot file larger than this many times max_size is not read: a store's own snapshot
# is smaller than the store (a session's overhead in memory is far above its bytes on disk).
_SNAPSHOT_SLACK = 4


class MemoryStore:
    """A session store in this process's memory, capped at ``max_size`` bytes.

    ``max_size`` (bytes, or a size string such as ``"4M"``) bounds the memory the store
    holds, as tracemalloc counts it. When a call takes it over, the store prunes to
    ``low_water * max_size``: expired sessions first, then the sessions used least often
    and least recently (uses that fade with time, see ``lembro.memory.eviction``).
    Expired sessions are also removed on access and by a background purge every
    ``interval`` seconds (``None`` or ``0``: none). ``ttl`` is the default lifetime in
    seconds. ``clock`` returns seconds; inject one for tests. ``on_error`` receives any
    exception the background purge raises (default: logged).

    ``snapshot`` names a file that keeps sessions across restarts: loaded at start
    (expired ones skipped; a damaged file is moved aside with a WARNING), written on
    ``close()``, at interpreter exit and on SIGTERM, and every ``snapshot_interval``
    seconds when that is set (so a crash loses at most that much). Without a periodic
    snapshot, a process killed with SIGKILL loses its sessions. Only a process that changed
    the sessions since they were loaded writes the file, and a process that forked and
    changed nothing since leaves it to a child that replaced it: so a ``--preload`` master
    or an idle pool worker never overwrites a worker's sessions with its stale copy, and a
    process that forks a helper still writes its own.
    ``trust_pickle=True`` is needed to combine ``serializer="pickle"`` with a snapshot:
    whoever can write the file could otherwise run code in the app.

    ``owner_key`` names the session field that holds the signed-in user (``None``: no
    owner index, and no cost). With it, the store keeps each owner's sessions, most
    recently used first, for :meth:`sessions_of` and :meth:`destroy_sessions_of`; an
    owner is a str or an int, compared as a str (``42`` and ``"42"`` are one owner), and a
    write whose owner field holds anything else raises ``SerializationError``. The index
    counts against ``max_size``.

    Every method is thread-safe, and a fork never copies a change half done. Sessions are
    held serialized, so each ``get`` returns a fresh dict that no other request shares.
    ``purge``, ``len``, ``stats`` and ``all`` work through at most ``batch_size``
    sessions per hold of the lock, so other threads' calls run in between.
    """

    __slots__ = (
        "__weakref__",
        "_budget",
        "_changed",
        "_clock",
        "_closed",
        "_evicted",
        "_eviction",
        "_expired",
        "_expiry",
        "_file_at_fork",
        "_hits",
        "_lock",
        "_misses",
        "_new_entry",
        "_next_purge",
        "_next_snapshot",
        "_owners",
        "_pid",
        "_purges",
        "_serializer",
        "_sessions",
        "_stop",
        "_thread",
        "_trusted",
        "_unsaved_at_fork",
        "_warned_evicting",
        "batch_size",
        "interval",
        "on_error",
        "owner_key",
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
        owner_key: str | None = None,
    ) -> None:
        size = parse_size(max_size)
        self.owner_key = check_owner_key(owner_key)
        self.ttl = check_seconds(ttl)
        if (
            isinstance(low_water, bool)
            or not isinstance(low_water, (int, float))
            or not (0 < low_water < 1)
        ):
            raise InvalidOption("low_water", low_water, "a fraction between 0 and 1, exclusive")
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
        # The path is checked now, not at exit, when the sessions would be lost.
        self.snapshot = check_snapshot_path(snapshot) if snapshot is not None else None
        self._serializer = get_serializer(serializer)
        if self.snapshot is not None:  # no code from a file
            require_safe_serializer(self._serializer, "a snapshot file", trust_pickle)
        # The built-in serializers always return exact bytes and dicts back; others are checked.
        self._trusted = type(self._serializer) in BUILTIN_SERIALIZERS
        self._clock = clock
        self.on_error = on_error
        self.batch_size = 1024

        self._lock = threading.Lock()
        self._sessions: dict[str, Entry] = {}  # oldest first
        self._expiry = ExpiryIndex()
        self._budget = Budget(size, float(low_water), owners=owner_key is not None)
        # With owner_key, sessions are OwnedEntry: an Entry with its place in the index.
        self._owners = OwnerIndex() if owner_key is not None else None
        self._new_entry: type[Entry] = OwnedEntry if owner_key is not None else Entry
        self._eviction = EvictionOrder(self._budget.first_capacity())
        self._hits = self._misses = self._expired = self._evicted = self._purges = 0
        self._warned_evicting = False
        self._closed = False
        self._pid = os.getpid()
        # Whether this process changed the sessions since they were loaded or it forked
        # (the first change after either checks for other processes serving).
        self._changed = False
        # Whether changes made before this process's last fork are not saved yet: they are
        # still its to write, unless a child carried them on and replaced the file, which
        # the file at the fork tells.
        self._unsaved_at_fork = False
        self._file_at_fork: FileIdentity | None = None
        _STORES.add(self)

        self._next_purge = self._next_snapshot = 0.0  # monotonic seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        processes.check()  # several processes serving one app: said, or refused
        if self.snapshot is not None:
            self._load_snapshot(self.snapshot)
            background.install_sigterm_exit()
        background.register(self)
        self._start_purger()

    @property
    def max_size(self) -> int:
        """The cap, in bytes."""
        return self._budget.max_size

    @property
    def low_water(self) -> float:
        """The fraction of ``max_size`` a prune shrinks the store to."""
        return self._budget.low_water

    @property
    def size(self) -> int:
        """Bytes held, as accounted: per session, its id as CPython holds it, its data and
        ``SESSION_OVERHEAD`` (with ``owner_key``, ``OWNED_SESSION_OVERHEAD`` more); per
        record in the expiry index (one per session, and those left by removed sessions
        until they are dropped), ``RECORD_OVERHEAD``; with ``owner_key``, per owner, its
        name as CPython holds it and ``OWNER_OVERHEAD``."""
        return self._budget.size

    # ---- reading and writing one session ------------------------------------------------
    #
    # These hold the lock in a with block, never acquire() then try: a signal handler
    # that raises (lembro's SIGTERM exit does) may run between acquire() and the try,
    # and the lock would then never be released, hanging the snapshot written at exit.

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent or expired."""
        now = self._clock()
        with self._lock:
            entry = self._live_locked(sid, now)
            if entry is None:
                self._misses += 1
                return None
            self._eviction.used(entry)
            if self._owners is not None:
                self._owners.used(entry)
            self._hits += 1
            blob = entry.data
        return self._decode(blob)

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        Raises ``SerializationError`` when ``data`` does not serialize and
        ``SessionTooLarge`` when it cannot fit in ``max_size``; either way the store is
        unchanged. Going over ``max_size`` prunes, never evicting ``sid`` itself.
        """
        self._put(sid, data, ttl, only_over_live=False)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, but only over a live session: ``False`` (and nothing written)
        when ``sid`` is absent or expired."""
        return self._put(sid, data, ttl, only_over_live=True)

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds without re-serializing.

        Returns ``False`` when the session is absent or expired. Counts as a use.
        """
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            entry = self._live_locked(sid, now)
            if entry is None:
                return False
            self._eviction.used(entry)
            if self._owners is not None:
                self._owners.used(entry)
            if self._renew_locked(entry, now + lifetime):  # a new record: the size grew
                self._fit_locked(now, keep=sid)
            return True

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether a live session was removed."""
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            entry = self._sessions.get(sid)
            if entry is None:
                return False
            self._remove_locked(entry)
            return entry.expires > now

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss nor a use."""
        if not isinstance(sid, str):
            return False
        now = self._clock()
        with self._lock:
            entry = self._sessions.get(sid)
            return entry is not None and entry.expires > now

    # ---- sessions per owner (owner_key) ----------------------------------------------------

    def sessions_of(self, owner: str | int) -> list[str]:
        """The ids of ``owner``'s live sessions, most recently used first (a ``get``,
        ``set``, ``replace`` or ``touch`` is a use). O(sessions of that owner).

        Raises ``InvalidOption`` on a store without ``owner_key``, or for an owner that
        is not a str or an int."""
        name = self._owner_name(owner)
        now = self._clock()
        with self._lock:
            assert self._owners is not None
            live: list[str] = []
            for entry in self._owners.sessions(name):
                if entry.expires > now:
                    live.append(entry.sid)
                else:  # expired, not yet purged: removed now, as a get would
                    self._remove_locked(entry)
                    self._expired += 1
            return live

    def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every live session of ``owner`` but ``keep`` (the current session's id,
        for "sign out my other devices"); return how many this call ended.
        O(sessions of that owner): their list is read in one hold of the lock, and they
        are removed ``batch_size`` per hold, so an owner with very many sessions does not
        stall other requests. A session that joins the owner meanwhile (a new login) is
        not ended; one that left it meanwhile (a login as someone else) is not either.

        Raises ``InvalidOption``, before anything changes, on a store without
        ``owner_key``, for an owner that is not a str or an int, or a ``keep`` that is not
        ``None`` or a str."""
        name = self._owner_name(owner)
        if keep is not None and not isinstance(keep, str):
            raise InvalidOption("keep", keep, "None or a session id (str)")
        if not self._changed:
            self._first_change()
        index = self._owners
        assert index is not None
        with self._lock:
            found = index.sessions(name)
        ended = 0
        for start in range(0, len(found), self.batch_size):
            now = self._clock()
            with self._lock:
                for entry in found[start : start + self.batch_size]:
                    if (
                        entry.sid == keep
                        or self._sessions.get(entry.sid) is not entry
                        or index.owner_of(entry) != name
                    ):
                        continue  # kept, or gone or someone else's since the list was read
                    if entry.expires > now:
                        ended += 1
                    else:
                        self._expired += 1
                    self._remove_locked(entry)
        return ended

    def _owner_name(self, owner: object) -> str:
        """``owner`` as the str owners compare by; raises ``InvalidOption`` for a bad
        owner, or when the store has no ``owner_key``."""
        if self._owners is None:
            raise InvalidOption(
                "owner_key",
                None,
                "a session field name: sessions_of and destroy_sessions_of need a store "
                "built with owner_key='...'",
            )
        return check_owner(owner)

    # ---- the whole store -----------------------------------------------------------------

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session, by id."""
        with self._lock:
            sids = list(self._sessions)
        blobs: list[tuple[str, bytes]] = []
        for start in range(0, len(sids), self.batch_size):
            now = self._clock()
            with self._lock:
                for sid in sids[start : start + self.batch_size]:
                    entry = self._sessions.get(sid)
                    if entry is not None and entry.expires > now:
                        blobs.append((sid, entry.data))
        return {sid: loads_session(self._serializer, blob) for sid, blob in blobs}

    def __len__(self) -> int:
        """The number of live sessions (expired ones are purged first, in batches)."""
        self._purge_in_batches()
        with self._lock:
            return len(self._sessions)

    def stats(self) -> Stats:
        """The store's counters now (expired sessions are purged first, in batches)."""
        self._purge_in_batches()
        with self._lock:
            return Stats(
                sessions=len(self._sessions),
                size=self._budget.size,
                max_size=self._budget.max_size,
                hits=self._hits,
                misses=self._misses,
                expired=self._expired,
                evicted=self._evicted,
                purges=self._purges,
            )

    def clear(self) -> None:
        """Remove every session. Counters (hits, misses, ...) are kept."""
        if not self._changed:
            self._first_change()
        with self._lock:
            for entry in list(self._sessions.values()):
                self._remove_locked(entry)
            self._budget.remove_records(self._expiry.clear())

    def purge(self) -> int:
        """Remove expired sessions now, ``batch_size`` records per hold of the lock;
        return how many. Costs O(log n) per record due."""
        removed = self._purge_in_batches()
        with self._lock:
            self._purges += 1
        return removed

    def prune(self) -> int:
        """Shrink to ``low_water * max_size`` now; return how many live sessions were evicted."""
        now = self._clock()
        with self._lock:
            return self._prune_locked(now, keep=None)

    def check(self) -> None:
        """Recount the size and every structure from scratch and compare them with what
        the store keeps; raise ``AssertionError`` naming the first mismatch. O(n), in one
        hold of the lock: for tests and debugging."""
        with self._lock:
            self._expiry.check()
            entries = list(self._sessions.values())
            for sid, entry in self._sessions.items():
                if sid is not entry.sid:
                    raise AssertionError(f"session {sid[:8]!r} is held under another id")
                record = entry.record
                if record.removed or record.sid is not sid:
                    raise AssertionError(f"session {sid[:8]!r} has no live record")
                if record.expires > entry.expires:
                    raise AssertionError(f"session {sid[:8]!r} is due after it expires")
                self._eviction.check(entry)
            live = self._expiry.live_records()
            if len(live) != len(entries) or {id(r) for r in live} != {
                id(e.record) for e in entries
            }:
                raise AssertionError(
                    f"{len(entries)} sessions but {len(live)} live records in the expiry index"
                )
            owners: list[str] = []
            if self._owners is not None:
                self._owners.check(entries)
                owners = self._owners.names()
            self._budget.check(entries, len(self._expiry), owners)

    # ---- the store's lifetime --------------------------------------------------------------

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
        background.forget(self)  # no longer kept alive for the exit
        if self.snapshot is not None:
            self._save_if_current()

    def save_snapshot(self) -> int:
        """Write the live sessions to the ``snapshot`` file now; return how many.

        ``close()``, the exit and the periodic save write only a copy that is the current
        one: sessions changed in this process since they were loaded, unless it forked
        since and a child replaced the file while this process changed nothing more."""
        if self.snapshot is None:
            raise InvalidOption("snapshot", None, "a snapshot file given to MemoryStore")
        count = self._write_snapshot(self.snapshot, None)
        assert count is not None
        return count

    def _save_if_current(self) -> None:
        """What ``close()``, the exit and the periodic save write: see ``save_snapshot``."""
        path = self.snapshot
        if path is None:
            return
        if self._changed:
            self._write_snapshot(path, None)
        elif self._unsaved_at_fork:
            at_fork = self._file_at_fork
            self._write_snapshot(path, lambda: file_identity(path) == at_fork)

    def _write_snapshot(self, path: str, only_if: Callable[[], bool] | None) -> int | None:
        """Write the live sessions to ``path`` (when ``only_if``, if given, still says so
        just before the file is replaced); return how many, or ``None`` when not written."""
        if only_if is not None and not only_if():
            return None
        now = self._clock()
        with self._lock:  # lowest score first: loading them in order keeps their ranks
            records: list[SnapshotRecord] = [
                (entry.sid, entry.expires - now, self._eviction.count(entry) > 1.0, entry.data)
                for entry in self._eviction.ranked(self._sessions.values())
                if entry.expires > now
            ]
        if not write_snapshot(path, serializer_name(self._serializer), records, only_if):
            return None
        self._unsaved_at_fork = False  # the changes from before a fork are in the file now
        log.debug("snapshot: %d sessions written to %s", len(records), path)
        return len(records)

    def _first_change(self) -> None:
        """The sessions change for the first time since they were loaded or forked: from
        now on they are this process's to write, and a forked process that writes serves,
        so check for siblings first (which may raise ``SeveralProcesses``)."""
        processes.check()
        self._changed = True
        if self.snapshot is not None:  # a forked child's sessions are now its to write
            background.install_sigterm_exit()

    def _forked_in_parent(self) -> None:
        """This process forked: a child may carry these sessions on and write them. Its
        unsaved changes stay its to write, as long as no child replaces the file; a later
        fork with no change in between keeps the file of the first."""
        if self._changed and self.snapshot is not None:
            self._unsaved_at_fork = True  # _file_at_fork, noted just before, tells if a child wrote
        self._changed = False  # its next change checks again for other processes

    def _note_file_before_fork(self) -> None:
        """Just before a fork, note the snapshot file as it is: a child that replaces it,
        however soon after the fork, is then seen as having replaced it."""
        if self._changed and self.snapshot is not None:
            self._file_at_fork = file_identity(self.snapshot)

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
            f"<MemoryStore {len(self._sessions)} sessions, "
            f"{format_size(self._budget.size)} of {format_size(self._budget.max_size)}>"
        )

    def _put(self, sid: str, data: dict[str, Any], ttl: float | None, only_over_live: bool) -> bool:
        """What ``set`` and ``replace`` do: serialize outside the lock, then write under
        it; ``False`` (and nothing written) when ``only_over_live`` and ``sid`` is not a
        live session."""
        blob, lifetime, owner = self._encode(sid, data, ttl)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            old = self._live_locked(sid, now)
            if old is None and only_over_live:
                return False
            if self._write_locked(sid, blob, now + lifetime, old, owner):
                self._fit_locked(now, keep=sid)
            return True

    # ---- outside the lock: arguments and serialization ----------------------------------

    def _encode(
        self, sid: str, data: dict[str, Any], ttl: float | None
    ) -> tuple[bytes, float, str | None]:
        """Check a write's arguments, serialize ``data`` and, with ``owner_key``, read
        its owner from it (while it is still a dict); return (bytes, lifetime in seconds,
        owner or ``None``). Raises before anything changes, and when a new session of
        them could not fit in ``max_size``."""
        if type(sid) is not str or not sid:
            check_session_id(sid)
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if self._trusted and isinstance(data, dict):
            try:
                blob = self._serializer.dumps(data)
            except Exception as e:
                raise SerializationError(f"session data does not serialize: {e}") from e
        else:
            blob = dumps_session(self._serializer, data)
        owner = None if self.owner_key is None else owner_of(data, self.owner_key)
        cost = self._budget.new_session_cost(sid, blob, owner)
        if cost > self._budget.max_size:
            raise SessionTooLarge(cost, self._budget.max_size)
        return blob, lifetime, owner

    def _decode(self, blob: bytes) -> dict[str, Any]:
        if not self._trusted:
            return loads_session(self._serializer, blob)
        try:
            data: dict[str, Any] = self._serializer.loads(blob)
        except Exception as e:
            raise SerializationError(f"stored session does not deserialize: {e}") from e
        return data

    # ---- under the lock: every change to the parts goes through these -------------------

    def _live_locked(self, sid: str, now: float) -> Entry | None:
        """Session ``sid`` if live; an expired one is removed (and counted) on the way."""
        entry = self._sessions.get(sid)
        if entry is not None and entry.expires <= now:
            self._remove_locked(entry)
            self._expired += 1
            return None
        return entry

    def _add_locked(
        self, sid: str, data: bytes, expires: float, uses: int = 1, owner: str | None = None
    ) -> Entry:
        """Add a session not held now, with ``uses`` uses and ``owner`` (``None``: none);
        give it an expiry record; count the bytes of all three."""
        entry = self._new_entry(sid, data, expires, self._expiry.add(sid, expires))
        self._eviction.created(entry, uses)
        self._sessions[sid] = entry
        self._budget.add_session(entry)
        if owner is not None:
            self._own_locked(entry, owner)
        return entry

    def _remove_locked(self, entry: Entry) -> None:
        """Remove a held session; its record is flagged (and stays counted until the
        index drops it)."""
        del self._sessions[entry.sid]
        self._expiry.remove(entry.record)
        self._budget.remove_session(entry)
        if self._owners is not None:
            dropped = self._owners.leave(entry)
            if dropped is not None:
                self._budget.remove_owner(dropped)

    def _write_locked(
        self, sid: str, data: bytes, expires: float, old: Entry | None, owner: str | None
    ) -> bool:
        """Put ``data`` (of ``owner``, or none) under ``sid``, expiring at ``expires``: a
        new session, or in place of the live session ``old``, as one more use of it.
        Return whether the size grew: only then may the store have to fit again."""
        size = self._budget.size
        if old is None:
            self._add_locked(sid, data, expires, owner=owner)
        else:
            self._budget.replace_data(old, data)
            self._eviction.used(old)
            if self._owners is not None:
                self._own_locked(old, owner)
            self._renew_locked(old, expires)
        return self._budget.size > size

    def _own_locked(self, entry: Entry, owner: str | None) -> None:
        """Make ``owner`` (``None``: no one) the owner of ``entry``, as its most recent
        session; count an owner added or dropped."""
        assert self._owners is not None
        dropped, added = self._owners.own(entry, owner)
        if dropped is not None:
            self._budget.remove_owner(dropped)
        if added is not None:
            self._budget.add_owner(added)

    def _renew_locked(self, entry: Entry, expires: float) -> bool:
        """Make ``entry`` expire at ``expires``; return whether it took a new record.
        Its record stays when it comes due no later (a purge then finds it extended and
        gives it a new one); an earlier expiry needs a new record, or the session would
        be purged late."""
        entry.expires = expires
        if expires < entry.record.expires:
            self._refile_locked(entry)
            return True
        return False

    def _refile_locked(self, entry: Entry) -> None:
        """Give ``entry`` a new record at its expiry, in place of the one it has."""
        self._expiry.remove(entry.record)
        entry.record = self._expiry.add(entry.sid, entry.expires)
        self._budget.add_record()

    def _fit_locked(self, now: float, keep: str | None) -> None:
        """What every call that grows the size ends with: drop flagged records once they
        outnumber the live, and prune when over ``max_size``, never evicting ``keep``."""
        if self._expiry.should_compact(len(self._sessions)):
            self._budget.remove_records(self._expiry.compact())
        if self._budget.over:
            self._prune_locked(now, keep)

    def _purge_in_batches(self) -> int:
        """Remove expired sessions, ``batch_size`` records per hold of the lock, releasing
        it in between; return how many."""
        removed = 0
        while True:
            now = self._clock()
            with self._lock:
                count, more = self._purge_locked(now, self.batch_size)
            removed += count
            if not more:
                return removed

    def _purge_locked(self, now: float, limit: int) -> tuple[int, bool]:
        """Take up to ``limit`` records due by ``now``: remove the sessions that have
        expired, give the ones extended since a new record. Return (removed, whether more are
        due)."""
        sids, taken = self._expiry.pop_due(now, limit)
        self._budget.remove_records(taken)
        removed = 0
        for sid in sids:
            entry = self._sessions[sid]
            if entry.expires <= now:
                self._remove_locked(entry)
                removed += 1
            else:
                self._refile_locked(entry)
        self._expired += removed
        return removed, taken == limit

    def _prune_locked(self, now: float, keep: str | None) -> int:
        """Shrink to ``low_water * max_size``; never evict ``keep``. Return live evictions.

        One sort of the sessions per prune, and a prune frees ``(1 - low_water) *
        max_size`` bytes: O(log n) amortized per session written.
        """
        budget = self._budget
        log.debug("prune start: %s in %d sessions", format_size(budget.size), len(self._sessions))
        self._purge_locked(now, sys.maxsize)
        self._budget.remove_records(self._expiry.compact())
        victims: list[Entry] = []
        if budget.size > budget.target:
            self._eviction.resize(budget.capacity(len(self._sessions)))
            victims = self._eviction.victims(
                self._sessions.values(), budget.size - budget.target, budget.freed_by, keep
            )
            for entry in victims:
                self._remove_locked(entry)
            self._budget.remove_records(self._expiry.compact())
        self._evicted += len(victims)
        log.debug("prune end: %s, %d evicted", format_size(budget.size), len(victims))
        if victims and not self._warned_evicting:
            self._warned_evicting = True
            log.warning(
                "max_size %s is too small: evicted %d live sessions to fit; the store holds "
                "%d sessions in %s. Raise max_size to keep sessions until they expire.",
                format_size(budget.max_size),
                len(victims),
                len(self._sessions),
                format_size(budget.size),
            )
        return len(victims)

    # ---- snapshots, the background thread, forks -------------------------------------------

    def _load_snapshot(self, path: str) -> None:
        remove_leftovers(path)
        records = read_snapshot(  # size and lifetimes bounded: the file may be anyone's
            path,
            serializer_name(self._serializer),
            max_bytes=self._budget.max_size * _SNAPSHOT_SLACK + 65536,
            max_lifetime=self.ttl,
        )
        owners = [self._stored_owner(data) for _, _, _, data in records]
        now = self._clock()
        with self._lock:
            for (sid, left, used_again, data), owner in zip(records, owners, strict=True):
                if sid not in self._sessions:  # lowest score first
                    self._add_locked(sid, data, now + left, 2 if used_again else 1, owner)
                    self._fit_locked(now, keep=None)
        if records:
            log.info("snapshot: %d sessions loaded from %s", len(records), path)

    def _stored_owner(self, blob: bytes) -> str | None:
        """The owner of a stored session (decoded once, outside the lock): ``None``
        without ``owner_key``, and for a session that does not decode or whose owner field
        is of another type than str or int (a store without ``owner_key`` wrote it): no
        one's, as the Redis stores read such a session."""
        if self.owner_key is None:
            return None
        try:
            return owner_of(loads_session(self._serializer, blob), self.owner_key)
        except SerializationError:
            return None

    def _background_tick(self, now: float) -> None:
        """One wake of the background thread at ``now`` (monotonic seconds)."""
        if self.interval is not None and now >= self._next_purge:
            self._next_purge = background.next_due(self._next_purge, self.interval, now)
            self.purge()
        if self.snapshot_interval is not None and now >= self._next_snapshot:
            self._next_snapshot = background.next_due(
                self._next_snapshot, self.snapshot_interval, now
            )
            self._save_if_current()

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
        self._changed = False  # the parent's sessions until this process changes them
        self._unsaved_at_fork = False
        held = len(self._sessions)
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


# ---- forks ----------------------------------------------------------------------------------
#
# A fork copies memory while other threads may be halfway through a change. Every store's
# lock is taken before the fork and released after it on both sides, so the child's copy
# is always whole.

_STORES: weakref.WeakSet[MemoryStore] = weakref.WeakSet()
_HELD_FOR_FORK: list[threading.Lock] = []


def _hold_locks_for_fork() -> None:
    for store in list(_STORES):
        store._note_file_before_fork()
        lock = store._lock
        lock.acquire()
        _HELD_FOR_FORK.append(lock)


def _release_locks_after_fork() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop().release()


os.register_at_fork(
    before=_hold_locks_for_fork,
    after_in_parent=_release_locks_after_fork,
    after_in_child=_release_locks_after_fork,
)
