"""MemoryStore: a bounded, self-purging in-memory session store for one process.

The store is a thin keeper: one lock around a ``SessionTable`` (the sessions and their
bookkeeping, no lock and no I/O), serialization outside the lock, and the policies it
opts into, each an object of its own: a ``SnapshotFile``, the background thread, the
process-wide hooks (``lembro.hooks``) and the several-processes check
(``lembro.processes``). docs/architecture.md maps them.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from itertools import islice
from types import TracebackType
from typing import Any, Literal, overload

from .. import background, hooks, processes
from .._log import log
from ..checks import (
    apply_changes,
    check_changes,
    check_owner,
    check_owner_key,
    check_seconds,
    check_session_id,
    made_id,
    owner_of,
)
from ..errors import InvalidOption, SerializationError, SessionTooLarge
from ..ids import new_session_id
from ..lifetimes import (
    Device,
    Loaded,
    SessionInfo,
    check_device,
    check_grace,
    check_max_sessions,
)
from ..protocol import Stats
from ..serializers import (
    BUILTIN_SERIALIZERS,
    MsgpackSerializer,
    Serializer,
    dumps_session,
    get_serializer,
    loads_session,
    require_safe_serializer,
    serializer_name,
)
from ..size import format_size, parse_size
from ..snapshot import Lifetimes, SnapshotRecord, check_snapshot_path
from .entry import Entry
from .eviction import EvictionOrder
from .persistence import SnapshotFile
from .table import SAME_OWNER, SMALL, SessionTable, WrittenOwner

__all__ = ["MemoryStore"]


# A snapshot file larger than this many times max_size is not read: a store's own snapshot
# is smaller than the store (a session's overhead in memory is far above its bytes on disk).
_SNAPSHOT_SLACK = 4

# Seconds each step of work done in steps pauses for, after it releases the lock: long
# enough for the operating system to run a thread woken by the release.
_PAUSE = 0.00005

# The largest serialized session a store takes by default, in bytes: as on Redis.
DEFAULT_MAX_SESSION_BYTES = 4 * 1024 * 1024

# How many times an update reads, changes and writes outside the lock before it does the
# next try in one hold of it: each failed try means another write landed in between.
_UPDATE_TRIES = 3
# Bytes of stored session up to which an update reads, changes and writes it in one hold
# of the lock: decoding and encoding a session this small takes less time than a second
# hold and a second look-up, and holds the others up for no more than a set does.
_CHANGED_IN_ONE_HOLD = 4096

# The id a store's smallest session is measured with: as long as the ids lembro draws.
_TYPICAL_ID = "x" * 43

# How many emptied lists a store keeps for copies of its entries: one per call that may
# go through every session at the same time as another (a save beside an all()).
_COPIES = 2


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
    ``close()``, at interpreter exit and on SIGTERM (see ``lembro.hooks``), and every
    ``snapshot_interval`` seconds when that is set (so a crash loses at most that much).
    Without a periodic snapshot, a process killed with SIGKILL loses its sessions. Which
    process writes the file after a fork, and when a forked child reloads it, is
    ``lembro.memory.persistence``'s to say. ``trust_pickle=True`` is needed to combine
    ``serializer="pickle"`` with a snapshot: whoever can write the file could otherwise
    run code in the app.

    ``max_session_bytes`` (bytes, or a size string; default 4 MiB) bounds one serialized
    session: a larger one raises ``SessionTooLarge`` before anything changes, as on Redis.

    ``owner_key`` names the session field that holds the signed-in user (``None``: no
    owner index, and no cost). With it, the store keeps each owner's sessions, most
    recently used first, for :meth:`sessions_of` and :meth:`destroy_sessions_of`; an
    owner is a str or an int, compared as a str (``42`` and ``"42"`` are one owner), and a
    write whose owner field holds anything else raises ``SerializationError``. The index
    counts against ``max_size``.

    Lifetimes (issue 29, see README's "Lifetimes"): ``absolute_ttl`` (seconds, ``None``:
    none) ends every session at its creation plus that, whatever uses, touches or
    writes come meanwhile (``rename(reset_lifetime=True)``, a sign-in, starts a new
    one). ``renew_every`` (seconds, ``None``: never): :meth:`load` moves a session whose
    id was issued longer ago than that to a fresh id, and the old id answers as it for
    ``renew_grace`` seconds (default 10), then marks a stolen cookie until the session
    ends. ``max_sessions_per_user`` (needs ``owner_key``): a write that gives an owner
    more sessions than that ends its oldest (by creation). The ids sessions had before a
    rename with a grace count against ``max_size`` and leave with their session.

    Every method is thread-safe, and a fork never copies a change half done. Sessions are
    held serialized, so each ``get`` returns a fresh dict that no other request shares.
    No call holds the lock for work over more than ``batch_size`` sessions: a purge, a
    prune, ``len``, ``stats``, ``all``, ``clear``, a snapshot and ``destroy_sessions_of``
    work in steps, and other threads' calls run in between.
    """

    __slots__ = (
        "__weakref__",
        "_changed",
        "_clock",
        "_closed",
        "_copies",
        "_forked_from",
        "_lock",
        "_merge",
        "_next_purge",
        "_next_snapshot",
        "_purges",
        "_serializer",
        "_snapshot",
        "_stop",
        "_table",
        "_thread",
        "_trusted",
        "_upkeep_lock",
        "_warned_evicting",
        "batch_size",
        "interval",
        "max_session_bytes",
        "max_sessions_per_user",
        "on_error",
        "owner_key",
        "renew_every",
        "renew_grace",
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
        max_session_bytes: int | str = DEFAULT_MAX_SESSION_BYTES,
        absolute_ttl: float | None = None,
        renew_every: float | None = None,
        renew_grace: float = 10.0,
        max_sessions_per_user: int | None = None,
    ) -> None:
        size = parse_size(max_size)
        self.max_session_bytes = parse_size(max_session_bytes)
        self.owner_key = check_owner_key(owner_key)
        self.ttl = check_seconds(ttl)
        absolute = None if absolute_ttl is None else check_seconds(absolute_ttl, "absolute_ttl")
        self.renew_every: float | None = (
            None if renew_every is None else check_seconds(renew_every, "renew_every")
        )
        self.renew_grace = check_grace(renew_grace, "renew_grace")
        self.max_sessions_per_user = check_max_sessions(max_sessions_per_user, self.owner_key)
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
        # The built-in serializers return exact bytes and dicts back; others are checked.
        self._trusted = type(self._serializer) in BUILTIN_SERIALIZERS
        # How an update applies its changes to a session's bytes, when the serializer
        # can without decoding what it keeps (see MsgpackSerializer.updated).
        self._merge = (
            self._serializer.updated if type(self._serializer) is MsgpackSerializer else None
        )
        self._clock = clock
        self.on_error = on_error
        self.batch_size = 256

        self._table = SessionTable(
            size,
            float(low_water),
            owners=owner_key is not None,
            absolute_ttl=absolute,
            max_per_owner=self.max_sessions_per_user,
        )
        smallest = self._table.budget.new_session_cost(_TYPICAL_ID, b"\x80")
        if size < smallest:
            raise InvalidOption(
                "max_size", max_size, f"at least {smallest} bytes: the cost of one empty session"
            )
        self._lock = threading.Lock()
        # One thread at a time purges, prunes and compacts in steps; the others go on.
        self._upkeep_lock = threading.Lock()
        self._purges = 0
        self._warned_evicting = False
        self._closed = False
        # Lists that copies of every entry are made in, kept empty between calls (see
        # _every_entry): one to begin with, so it is old by the time the store is large.
        self._copies: list[list[Entry]] = [[]]
        # Whether this process changed the sessions since they were loaded or it forked
        # (the first change after either checks for other processes serving).
        self._changed = False
        # (the parent's pid, the sessions held) when a fork gave this process a copy of
        # them: said once this process changes one (see _first_change).
        self._forked_from: tuple[int, int] | None = None
        self._snapshot = (
            SnapshotFile(self.snapshot, serializer_name(self._serializer))
            if self.snapshot is not None
            else None
        )
        self._next_purge = self._next_snapshot = 0.0  # monotonic seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        processes.check()  # several processes serving one app: said, or refused
        if self._snapshot is not None:
            self._load_snapshot(self._snapshot)
        hooks.attach(self)
        self._start_thread()

    @property
    def max_size(self) -> int:
        """The cap, in bytes."""
        return self._table.budget.max_size

    @property
    def absolute_ttl(self) -> float | None:
        """Seconds from a session's creation to its absolute end (``None``: none)."""
        return self._table.absolute_ttl

    @property
    def low_water(self) -> float:
        """The fraction of ``max_size`` a prune shrinks the store to."""
        return self._table.budget.low_water

    @property
    def size(self) -> int:
        """Bytes held, as accounted: per session, its id as CPython holds it, its data and
        ``SESSION_OVERHEAD`` (with ``owner_key``, ``OWNED_SESSION_OVERHEAD`` more); per
        record in the expiry index (one per session, and those left by removed sessions
        until they are dropped), ``RECORD_OVERHEAD``; with ``owner_key``, per owner, its
        name as CPython holds it and ``OWNER_OVERHEAD``; per recorded device, its strs
        and ``DEVICE_OVERHEAD``; per id a session had before a rename with a grace, the
        id and ``MARKER_OVERHEAD``."""
        return self._table.budget.size

    # ---- one session -----------------------------------------------------------------------
    #
    # The lock is held in with blocks, never acquire() then try: a signal handler that
    # raises (lembro's SIGTERM exit does) may run between acquire() and the try, and the
    # lock would then never be released, hanging the snapshot written at exit.

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent or expired.

        An id a session had before a rename with a grace answers as the session during
        the grace; presented after it, it is a stolen cookie: the session is ended, one
        WARNING is logged, and the answer is ``None`` (see :meth:`load`)."""
        now = self._clock()
        with self._lock:
            table = self._table
            blob = table.read(sid, now)
            thefts = table.take_thefts() if blob is None and table.thefts else None
        if thefts:
            _report_thefts(thefts)
        return None if blob is None else self._decode(blob)

    def load(self, sid: str, *, new_id: Callable[[], str] | None = None) -> Loaded | None:
        """What a request reads: session ``sid`` as :class:`~lembro.Loaded` (the id to use
        from now on, a fresh copy of the data, the seconds left until its absolute end),
        or ``None`` when absent or expired; a hit or a miss, and a use, as ``get``. In one
        hold of the lock, it

        1. follows an id replaced by a renewal to its session during its grace;
        2. treats an id replaced longer ago than its grace as a stolen cookie: the
           session is ended (a logout), one WARNING is logged (with its owner, never an
           id) and the answer is ``None``;
        3. renews: with ``renew_every``, a session whose id was issued longer ago than
           that moves to a fresh id (``new_id()``, by default
           ``lembro.ids.new_session_id()``), keeping its lifetimes, its expiry and its
           data, and its old id answers as it for ``renew_grace`` seconds;
           ``Loaded.sid`` is then the new id;
        4. notes the use as the session's last seen.

        ``new_id`` is for a caller that keeps its ids under a prefix of its own (Litestar's
        namespaces): it must return a fresh, unguessable id each call, e.g. the prefix
        and a ``new_session_id()``; one that is no non-empty str other than ``sid``
        raises ``InvalidOption`` (the session is then not renewed).
        """
        now = self._clock()
        renew_every = self.renew_every
        if renew_every is not None and not self._changed:
            self._first_change()
        make = new_session_id
        if new_id is not None and renew_every is not None:
            make = functools.partial(made_id, new_id, sid)
        with self._lock:
            table = self._table
            entry = table.load(sid, now, renew_every, self.renew_grace, make)
            if entry is None:
                thefts = table.take_thefts() if table.thefts else None
            else:
                thefts = None
                current, blob = entry.sid, entry.data
                end = None if table.absolute_ttl is None else table.absolute_end(entry)
                upkeep = current != sid and table.upkeep_due  # a renewal added a marker
        if entry is None:
            if thefts:
                _report_thefts(thefts)
            return None
        if upkeep:
            self._upkeep(keep=current)
        return Loaded(current, self._decode(blob), None if end is None else end - now)

    def session_info(self, sid: str) -> SessionInfo | None:
        """Session ``sid`` at a glance (:class:`~lembro.SessionInfo`: its owner, its
        times in UTC, its device), or ``None`` when absent or expired (an id in its grace
        answers as its session). Neither a hit nor a miss nor a use; changes nothing."""
        now = self._clock()
        with self._lock:
            table = self._table
            entry = table.peek(sid, now)
            if entry is None:
                return None
            fields = self._info_fields(table, entry)
        return self._info(fields, now, time.time())

    def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``;
        never past the session's absolute end). ``device``: the client, recorded when
        this creates the session (an id not held).

        Raises ``SerializationError`` when ``data`` does not serialize,
        ``SessionTooLarge`` when it cannot fit in ``max_size`` and ``InvalidOption`` for
        a bad argument; either way the store is unchanged. Going over ``max_size``
        prunes, never evicting ``sid`` itself. With ``max_sessions_per_user``, a new
        session of an owner who has that many already ends their oldest.
        """
        self._put(sid, data, ttl, only_over_live=False, device=check_device(device))

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, but only over a live session: ``False`` (and nothing written)
        when ``sid`` is absent or expired."""
        return self._put(sid, data, ttl, only_over_live=True)

    def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        """Apply ``changes`` (top-level keys set) and ``deleted`` (top-level keys removed)
        to session ``sid`` as it is now, in one step, and give it a new lifetime of
        ``ttl`` seconds (default: the store's ``ttl``): what a request that changed some
        keys writes back, so that requests of one session that change different keys
        never undo each other's changes. ``False``, and nothing written, when ``sid`` is
        absent or expired: a destroyed session is never recreated. With no change, only
        the lifetime moves (a :meth:`touch`). A use of the session.

        Raises ``InvalidOption`` (bad arguments), ``SerializationError`` or
        ``SessionTooLarge`` before anything changes, as :meth:`set`; with ``owner_key``
        an update may change the owner field, and the owner's index follows.

        A small session (a few KiB) is read, changed and written in one hold of the
        lock. A larger one is changed outside it, then written only if no other write
        landed meanwhile; after a few such tries, one hold does all of it (see
        docs/architecture.md).
        """
        if type(sid) is not str or not sid:
            check_session_id(sid)
        gone = check_changes(changes, deleted)
        if not changes and not gone:
            return self.touch(sid, ttl)
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if not self._changed:
            self._first_change()
        current: bytes | None = None  # a large session's bytes, changed outside the lock
        now = self._clock()
        with self._lock:
            table = self._table
            entry = table.find(sid, now)
            if entry is None:
                thefts = table.take_thefts() if table.thefts else None
            elif self._trusted and len(entry.data) <= _CHANGED_IN_ONE_HOLD:
                # Small, and decoded by lembro's own code (never an app's, which could call
                # back into the store): all in this hold.
                keep = self._write_changes(table, sid, entry, changes, gone, lifetime, now)
                if keep is None:
                    return True
            else:
                current = entry.data
        if entry is None:
            if thefts:
                _report_thefts(thefts)
            return False
        if current is not None:
            return self._update_outside(sid, current, changes, gone, lifetime)
        self._upkeep(keep=keep)
        return True

    def _write_changes(
        self,
        table: SessionTable,
        sid: str,
        entry: Entry,
        changes: dict[str, Any],
        gone: tuple[str, ...],
        lifetime: float,
        now: float,
    ) -> str | None:
        """An update's changes applied to live ``entry`` (the session ``sid`` names) and
        written, in the hold of the lock the caller is in; the id the upkeep that follows
        must spare, or ``None`` when the write made no upkeep due."""
        blob, owner = self._changed_blob(sid, entry.data, changes, gone)
        changed = table.write_over(entry, blob, now + lifetime, owner, now)
        return entry.sid if changed and table.upkeep_due else None

    def _update_outside(
        self,
        sid: str,
        current: bytes,
        changes: dict[str, Any],
        gone: tuple[str, ...],
        lifetime: float,
    ) -> bool:
        """:meth:`update` of a large session (or one an app's serializer decodes): changed
        outside the lock from ``current`` (the bytes read), and written only if no other
        write landed meanwhile, else read again; after ``_UPDATE_TRIES`` such tries, one
        hold does all of it."""
        for _ in range(_UPDATE_TRIES):
            blob, owner = self._changed_blob(sid, current, changes, gone)
            now = self._clock()
            with self._lock:
                table = self._table
                written = table.write_if(sid, current, blob, now + lifetime, owner, now)
                if written is None:  # another write landed: read it, in this hold
                    entry = table.find(sid, now)
                    assert entry is not None  # write_if has just found it live
                    current = entry.data
                    continue
                keep = _kept(table, sid, now) if written and table.upkeep_due else None
                thefts = table.take_thefts() if table.thefts else None
            break
        else:
            # Collided too often: all in one hold.
            now = self._clock()
            with self._lock:
                table = self._table
                entry = table.find(sid, now)
                if entry is None:
                    written, keep = False, None
                else:
                    written = True
                    keep = self._write_changes(table, sid, entry, changes, gone, lifetime, now)
                thefts = table.take_thefts() if table.thefts else None
        if thefts:
            _report_thefts(thefts)
        if keep is not None:
            self._upkeep(keep=keep)
        return written

    def _changed_blob(
        self, sid: str, current: bytes, changes: dict[str, Any], deleted: tuple[str, ...]
    ) -> tuple[bytes, WrittenOwner]:
        """Session bytes ``current`` with an update's changes applied, encoded, and their
        owner: ``SAME_OWNER`` when the changes leave the owner's field as it was. Raises
        as :meth:`set` does when the result does not serialize or fit."""
        merge = self._merge
        if merge is not None:  # msgpack: the values kept are never decoded nor walked
            blob, merged = merge(current, changes, deleted)
            key = self.owner_key
            # No larger than the bytes it replaces (so it fits), nor its owner changed.
            if (
                len(blob) <= len(current)
                and len(blob) <= self.max_session_bytes
                and (key is None or (key not in changes and key not in deleted))
            ):
                return blob, SAME_OWNER
            return blob, self._owner_if_fits(sid, blob, merged)
        data = self._decode(current)
        apply_changes(data, changes, deleted)
        blob, _, owner = self._encode(sid, data, None)
        return blob, owner

    def rename(
        self,
        old: str,
        new: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        reset_lifetime: bool = True,
        grace: float = 0.0,
        device: Device | None = None,
    ) -> bool:
        """Move live session ``old`` to the id ``new`` (a fresh one), holding ``data`` for
        ``ttl`` seconds (default: the store's ``ttl``): a regenerate, in one hold of the
        lock. ``False``, and nothing changed, when ``old`` is absent or expired (a logout
        won the race), or when a :meth:`destroy_sessions_of` is ending its owner's
        sessions and ``data`` names that owner.

        ``reset_lifetime=True``: a sign-in; the session starts a new absolute lifetime
        (created now), and the ids it had before no longer answer. ``False``: a
        privilege change or a renewal inside one sign-in; it keeps its creation time, so
        its absolute end stays. ``grace`` (seconds, 0: none): ``old`` answers as the
        session for that long (a request in flight with the old cookie), then marks a
        stolen cookie until the session ends (see :meth:`load`); a ``destroy(old)``
        during the grace ends the session. ``device``: recorded for the session (else it
        keeps the one it had).

        Raises ``InvalidOption`` (a bad id or argument, or ``new`` equal to ``old``),
        ``SerializationError`` or ``SessionTooLarge`` before anything changes: the user
        keeps the old session or gets the new one, never neither. A use of the session.
        """
        recorded = check_device(device)
        blob, lifetime, owner = self._encode(new, data, ttl, recorded)
        if not isinstance(old, str) or not old or old == new:
            raise InvalidOption("old", old, "a non-empty str other than new")
        if type(reset_lifetime) is not bool:
            raise InvalidOption("reset_lifetime", reset_lifetime, "True or False")
        seconds = check_grace(grace)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            table = self._table
            renamed = table.rename(
                old,
                new,
                blob,
                now + lifetime,
                owner,
                now,
                reset_lifetime=reset_lifetime,
                grace=seconds,
                device=recorded,
            )
            upkeep = renamed and table.upkeep_due
            thefts = table.take_thefts() if not renamed and table.thefts else None
        if thefts:
            _report_thefts(thefts)
        if upkeep:
            self._upkeep(keep=new)
        return renamed

    def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid`` and give it a new lifetime of ``ttl``
        seconds (default: the store's ``ttl``), in one step no write comes between; or
        ``None`` when absent or expired. A hit or a miss, and a use, as ``get`` is."""
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            table = self._table
            blob = table.renew(sid, now + lifetime, now)
            keep = _kept(table, sid, now) if blob is not None and table.upkeep_due else None
            thefts = table.take_thefts() if blob is None and table.thefts else None
        if thefts:
            _report_thefts(thefts)
        if keep is not None:
            self._upkeep(keep=keep)
        return None if blob is None else self._decode(blob)

    def time_left(self, sid: str) -> float | None:
        """Seconds until session ``sid`` ends, or ``None`` when absent or expired; neither
        a hit nor a miss nor a use."""
        now = self._clock()
        with self._lock:
            return self._table.time_left(sid, now)

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds without re-serializing.

        Returns ``False`` when the session is absent or expired. Counts as a use.
        """
        lifetime = self.ttl if ttl is None else check_seconds(ttl)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            table = self._table
            touched, refiled = table.touch(sid, now + lifetime, now)
            # A touch that filed a new expiry record, or whose look-up removed an expired
            # or stolen session, may have made upkeep due; one that only moved the expiry
            # of a live session later did not.
            due = (refiled or not touched) and table.upkeep_due
            keep = _kept(table, sid, now) if due else None
            thefts = table.take_thefts() if not touched and table.thefts else None
        if thefts:
            _report_thefts(thefts)
        if keep is not None:
            self._upkeep(keep=keep)
        return touched

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether a live session was removed. An id in
        its grace after a rename ends the session it was replaced by (a logout from a tab
        that still held the old cookie is a logout); one past its grace is a stolen
        cookie (see :meth:`load`), and the answer is ``False``."""
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            table = self._table
            destroyed = table.destroy(sid, now)
            thefts = table.take_thefts() if not destroyed and table.thefts else None
        if thefts:
            _report_thefts(thefts)
        return destroyed

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session (or an id in its grace after a rename);
        neither a hit nor a miss nor a use."""
        if not isinstance(sid, str):
            return False
        now = self._clock()
        with self._lock:
            return self._table.holds(sid, now)

    def _put(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None,
        only_over_live: bool,
        device: Device | None = None,
    ) -> bool:
        """What ``set`` and ``replace`` do: serialize outside the lock, then write under
        it, then prune if that took the store over its cap."""
        blob, lifetime, owner = self._encode(sid, data, ttl, device)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            table = self._table
            written = table.write(
                sid,
                blob,
                now + lifetime,
                owner,
                now,
                only_over_live=only_over_live,
                device=device,
            )
            keep = _kept(table, sid, now) if table.upkeep_due else None
            thefts = table.take_thefts() if table.thefts else None
        if thefts:
            _report_thefts(thefts)
        if keep is not None:
            self._upkeep(keep=keep)
        return written

    # ---- sessions per owner (owner_key) ----------------------------------------------------

    @overload
    def sessions_of(self, owner: str | int, *, info: Literal[False] = False) -> list[str]: ...
    @overload
    def sessions_of(self, owner: str | int, *, info: Literal[True]) -> list[SessionInfo]: ...
    @overload
    def sessions_of(self, owner: str | int, *, info: bool) -> list[str] | list[SessionInfo]: ...

    def sessions_of(self, owner: str | int, *, info: bool = False) -> list[str] | list[SessionInfo]:
        """The ids of ``owner``'s live sessions, most recently used first (a ``get``,
        ``load``, ``set``, ``replace`` or ``touch`` is a use); with ``info=True``, each
        as a :class:`~lembro.SessionInfo` (for a devices page), in the same order.
        O(sessions of that owner).

        Raises ``InvalidOption`` on a store without ``owner_key``, or for an owner that
        is not a str or an int."""
        name = self._owner_name(owner)
        if type(info) is not bool:
            raise InvalidOption("info", info, "True or False")
        now = self._clock()
        with self._lock:
            table = self._table
            if not info:
                return table.sessions_of(name, now)
            entries = [table.sessions[sid] for sid in table.sessions_of(name, now)]
            fields = [self._info_fields(table, entry) for entry in entries]
        wall = time.time()
        return [self._info(f, now, wall) for f in fields]

    def destroy_session_of(self, owner: str | int, sid: str) -> bool:
        """End session ``sid`` only if its owner is ``owner`` (a devices page's "sign out
        that device": a user cannot end another user's session by guessing its id);
        return whether it ended a live session. Counted as a logout.

        Raises ``InvalidOption``, before anything changes, on a store without
        ``owner_key``, for an owner that is not a str or an int, or a ``sid`` that is
        not a non-empty str."""
        name = self._owner_name(owner)
        check_session_id(sid)
        if not self._changed:
            self._first_change()
        now = self._clock()
        with self._lock:
            return self._table.end_of(name, sid, now)

    def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every live session of ``owner`` but ``keep`` (the current session's id,
        for "sign out my other devices"); return how many this call ended.

        The owner's sessions are set apart in one step, then ended ``batch_size`` per hold
        of the lock, so an owner with very many sessions does not stall other requests. A
        session that joins the owner meanwhile (a new login) is not ended; one that
        leaves it meanwhile (a login as someone else) is not either; a :meth:`rename` of
        one of them under the same owner is refused meanwhile (it would outlive the call).

        Raises ``InvalidOption``, before anything changes, on a store without
        ``owner_key``, for an owner that is not a str or an int, or a ``keep`` that is not
        ``None`` or a str."""
        name = self._owner_name(owner)
        if keep is not None and not isinstance(keep, str):
            raise InvalidOption("keep", keep, "None or a session id (str)")
        if not self._changed:
            self._first_change()
        with self._lock:
            detached = self._table.detach_owner(name, keep)
        if detached is None:
            return 0
        ended = 0

        def step(now: float) -> bool:
            nonlocal ended
            count, more = self._table.end_detached(detached, now, self.batch_size)
            ended += count
            return more

        self._until_done(step)
        self._compact_in_steps()
        return ended

    def _owner_name(self, owner: object) -> str:
        """``owner`` as the str owners compare by; raises ``InvalidOption`` for a bad
        owner, or when the store has no ``owner_key``."""
        if self.owner_key is None:
            raise InvalidOption(
                "owner_key",
                None,
                "a session field name: sessions_of, destroy_sessions_of and "
                "destroy_session_of need a store built with owner_key='...'",
            )
        return check_owner(owner)

    @staticmethod
    def _info_fields(table: SessionTable, entry: Entry) -> _InfoFields:
        """What a ``SessionInfo`` is made of, read under the lock (scalars only)."""
        return (
            entry.sid,
            entry.data,
            table.owner_name(entry),
            entry.created,
            entry.renewed,
            entry.seen,
            entry.expires,
            table.absolute_end(entry),
            entry.device,
        )

    def _info(self, fields: _InfoFields, now: float, wall: float) -> SessionInfo:
        """A ``SessionInfo`` from ``fields`` read at ``now`` (the store's clock), with
        clock times turned into UTC datetimes through ``wall`` (``time.time()`` then):
        outside the lock, since the owner's exact value (a str or an int) is read from
        the session's data."""
        sid, blob, name, created, renewed, seen, expires, end, device = fields
        owner: str | int | None = None
        if name is not None and self.owner_key is not None:
            value = self._decode(blob).get(self.owner_key)
            owner = value if type(value) in (str, int) else name

        def utc(t: float) -> datetime:
            return datetime.fromtimestamp(wall - (now - t), timezone.utc)

        return SessionInfo(
            id=sid,
            owner=owner,
            created=utc(created),
            renewed=utc(renewed),
            last_seen=utc(seen),
            expires=utc(expires),
            absolute_expires=None if end is None else utc(end),
            ip=None if device is None else device.ip,
            user_agent=None if device is None else device.user_agent,
        )

    # ---- the whole store -----------------------------------------------------------------

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session, by id: read ``batch_size`` per
        hold of the lock, each batch decoded outside it before the next is read."""
        found: dict[str, dict[str, Any]] = {}
        serializer = self._serializer
        for batch in self._every_entry():
            now = self._clock()
            with self._lock:
                sessions = self._table.sessions
                blobs = [
                    (entry.sid, entry.data)
                    for entry in batch
                    if sessions.get(entry.sid) is entry and entry.expires > now
                ]
            for sid, blob in blobs:
                found[sid] = loads_session(serializer, blob)
        return found

    def __len__(self) -> int:
        """The number of live sessions (expired ones are purged first, in batches)."""
        self._purge_in_batches()
        with self._lock:
            return len(self._table)

    def stats(self) -> Stats:
        """The store's counters now (expired sessions are purged first, in batches); see
        :class:`~lembro.protocol.Stats`. A session loaded from the snapshot file is not
        counted as created, and ``clear()`` counts what it removes nowhere."""
        self._purge_in_batches()
        with self._lock:
            table = self._table
            return Stats(
                sessions=len(table),
                size=table.budget.size,
                max_size=table.budget.max_size,
                hits=table.hits,
                misses=table.misses,
                expired=table.expired,
                evicted=table.evicted,
                purges=self._purges,
                created=table.created,
                logouts=table.logouts,
                regenerates=table.regenerates,
                logouts_everywhere=table.logouts_everywhere,
                signed_in_users=None if table.owners is None else len(table.owners),
            )

    def clear(self) -> None:
        """Remove every session. Counters (hits, misses, ...) are kept.

        The sessions are swapped for an empty table in one step; the old one is taken
        apart ``batch_size`` sessions at a time, outside the lock."""
        if not self._changed:
            self._first_change()
        self._clear()

    def _clear(self) -> None:
        with self._lock:
            old = self._table
            budget = old.budget
            table = SessionTable(
                budget.max_size,
                budget.low_water,
                owners=old.owners is not None,
                absolute_ttl=old.absolute_ttl,
                max_per_owner=old.max_per_owner,
            )
            table.keep_counters(old)
            self._table = table
        old.take_apart(self.batch_size)

    def purge(self) -> int:
        """Remove expired sessions now, ``batch_size`` records per hold of the lock;
        return how many. Costs O(log n) per record due."""
        removed = self._purge_in_batches()
        self._compact_in_steps()
        with self._lock:
            self._purges += 1
        return removed

    def prune(self) -> int:
        """Shrink to ``low_water * max_size`` now; return how many live sessions were evicted."""
        return self._upkeep(keep=None, prune=True)

    def check(self) -> None:
        """Recount the size and every structure from scratch and compare them with what
        the store keeps; raise ``AssertionError`` naming the first mismatch. O(n), in one
        hold of the lock: for tests and debugging."""
        with self._lock:
            self._table.check()

    # ---- upkeep: purge, prune and compact, in steps ------------------------------------------

    def _purge_in_batches(self) -> int:
        """Remove expired sessions, ``batch_size`` records per hold of the lock; return
        how many."""
        removed = 0

        def step(now: float) -> bool:
            nonlocal removed
            count, more = self._table.purge(now, self.batch_size)
            removed += count
            return more

        self._until_done(step)
        return removed

    def _upkeep(self, keep: str | None, prune: bool = False) -> int:
        """Bring the store back under its cap (``prune``: to its target even when under
        the cap), then drop flagged records: every step in a hold of the lock of its own.
        Never evicts ``keep``. Return how many live sessions were evicted."""
        with self._upkeep_lock:
            self._compact_in_steps()
            with self._lock:
                prune = prune or self._table.budget.over
            if not prune:
                return 0
            evicted = self._prune_in_steps(keep)
            self._compact_in_steps()
        return evicted

    def _compact_in_steps(self) -> None:
        """Drop flagged records, then rebuild the sessions dict, in steps, if either is due."""
        with self._lock:
            compact, rebuild = self._table.compaction_due, self._table.rebuild_due
        if compact:
            self._until_done(lambda now: self._table.compact_step(self.batch_size))
        if rebuild:
            self._until_done(lambda now: self._table.rebuild_step(self.batch_size))

    def _prune_in_steps(self, keep: str | None) -> int:
        """Shrink to ``low_water * max_size``: expired sessions first, then the least
        likely to be missed. A store of at most ``SMALL`` sessions is pruned in one step,
        in exact order; a larger one a batch at a time: the sessions scored at or below a
        cutoff found from a sample, lowest first (a session used meanwhile is spared)."""
        self._purge_in_batches()
        with self._lock:
            table = self._table
            log.debug("prune start: %s in %d sessions", format_size(self.size), len(table))
            if len(table) <= SMALL:
                evicted = table.prune_small(keep)
                table.start_compaction()
                self._log_prune(evicted)
                return evicted
            table.resize_eviction()
        evicted = 0
        done = False
        for attempt in range(3):
            with self._lock:
                entries = self._table.entries() if self._table.need > 0 else []
            if not entries:
                break
            for tier in table.tiers(entries):
                # A third pass ranks every session: a cutoff too low twice means the
                # sample was far off, and the store must still come under its cap.
                cutoff = table.cutoff(tier) if attempt < 2 else math.inf
                count, done = self._evict_lowest(tier, keep, cutoff)
                evicted += count
                if done:
                    break
            if done:
                break
        with self._lock:
            self._table.start_compaction()
        self._log_prune(evicted)
        return evicted

    def _evict_lowest(
        self, entries: list[Entry], keep: str | None, cutoff: float
    ) -> tuple[int, bool]:
        """Evict ``entries`` scored at most ``cutoff``, lowest first, a batch per hold of
        the lock, until at the prune's target; return (how many, whether it is reached)."""
        evicted = 0
        below = EvictionOrder.scored_at_most(entries, cutoff)
        for batch in self._in_batches(EvictionOrder.lowest_first(below, self.batch_size)):
            with self._lock:
                count, done = self._table.evict(batch, keep, cutoff)
            evicted += count
            if done:
                return evicted, True
        return evicted, False

    def _log_prune(self, evicted: int) -> None:
        log.debug("prune end: %s, %d evicted", format_size(self.size), evicted)
        if evicted and not self._warned_evicting:
            self._warned_evicting = True
            log.warning(
                "max_size %s is too small: evicted %d live sessions to fit; the store holds "
                "%d sessions in %s. Raise max_size to keep sessions until they expire.",
                format_size(self.max_size),
                evicted,
                len(self._table),
                format_size(self.size),
            )

    def _until_done(self, step: Callable[[float], bool]) -> None:
        """Call ``step(now)`` under the lock until it says no more is left, pausing between
        calls (see ``_pause``)."""
        while True:
            now = self._clock()
            with self._lock:
                more = step(now)
            if not more:
                return
            _pause()

    def _every_entry(self) -> Iterator[list[Entry]]:
        """Every session held when this begins, in lists of at most ``batch_size``, with a
        pause between two (see ``_pause``); the caller checks each is still held.

        The entries are copied in one hold of the lock (one C-level copy) into a list kept
        from an earlier call, and each batch's part of it is let go as the batch is handed
        on. Why a kept list: CPython's next two young collections walk every reference of
        a new container, which stops every thread for a time that grows with the
        sessions, while a list that has outlived them is walked only by a full one."""
        copies = self._copies
        try:
            entries = copies.pop()
        except IndexError:  # another call has it
            entries = []
        try:
            with self._lock:
                entries.extend(self._table.sessions.values())
            size = self.batch_size
            for start in range(0, len(entries), size):
                if start:
                    _pause()
                batch = entries[start : start + size]
                # Let go of the batch's part now rather than of every entry in one step
                # at the end: only its length is kept.
                entries[start : start + size] = [None] * len(batch)  # type: ignore[list-item]
                yield batch
        finally:
            entries.clear()
            if len(copies) < _COPIES:
                copies.append(entries)

    def _in_batches(self, entries: Iterable[Entry]) -> Iterator[list[Entry]]:
        """``entries`` in lists of at most ``batch_size``, for one hold of the lock each,
        with a pause between two (see ``_pause``)."""
        it = iter(entries)
        batch = list(islice(it, self.batch_size))
        while batch:
            yield batch
            batch = list(islice(it, self.batch_size))
            if batch:
                _pause()

    # ---- outside the lock: arguments and serialization ----------------------------------

    def _encode(
        self, sid: str, data: dict[str, Any], ttl: float | None, device: Device | None = None
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
            # A serializer of the app's may return bytes with room to spare (msgspec's
            # encode does): a copy holds exactly what the budget counts.
            blob = bytes(memoryview(dumps_session(self._serializer, data)))
        return blob, lifetime, self._owner_if_fits(sid, blob, data, device)

    def _owner_if_fits(
        self, sid: str, blob: bytes, data: dict[str, Any], device: Device | None = None
    ) -> str | None:
        """The owner of session ``data`` (``None`` without ``owner_key``), once its bytes
        ``blob`` are known to fit: raises ``SessionTooLarge`` when a new session of them
        would not fit in ``max_size``."""
        if len(blob) > self.max_session_bytes:
            raise SessionTooLarge(len(blob), self.max_session_bytes)
        owner = None if self.owner_key is None else owner_of(data, self.owner_key)
        budget = self._table.budget
        cost = budget.new_session_cost(sid, blob, owner, device)
        if cost > budget.max_size:
            raise SessionTooLarge(cost, budget.max_size)
        return owner

    def _decode(self, blob: bytes) -> dict[str, Any]:
        if not self._trusted:
            return loads_session(self._serializer, blob)
        try:
            data: dict[str, Any] = self._serializer.loads(blob)
        except Exception as e:
            raise SerializationError(f"stored session does not deserialize: {e}") from e
        return data

    # ---- snapshots -----------------------------------------------------------------------

    def save_snapshot(self) -> int:
        """Write the live sessions to the ``snapshot`` file now; return how many.

        ``close()``, the exit and the periodic save write only a copy that is the current
        one: see ``lembro.memory.persistence``."""
        if self._snapshot is None:
            raise InvalidOption("snapshot", None, "a snapshot file given to MemoryStore")
        counted = _Counted(self._records())
        self._snapshot.write(counted)
        log.debug("snapshot: %d sessions written to %s", counted.count, self.snapshot)
        return counted.count

    def _save_if_current(self) -> None:
        """What ``close()``, the exit and the periodic save write: see ``save_snapshot``."""
        if self._snapshot is not None:
            self._snapshot.write_if_current(self._changed, self._records)

    def _records(self) -> Iterator[SnapshotRecord]:
        """The live sessions as snapshot records, each with its faded count of uses (a
        load gives back the ranks from them) and its lifetimes, read ``batch_size`` per
        hold of the lock and handed on as they are read, so a save holds one batch at a
        time. The ids sessions had before a rename are not saved: a restart ends their
        grace, and with it the stolen-cookie check of those ids."""
        for batch in self._every_entry():
            now = self._clock()
            with self._lock:
                table = self._table
                sessions, count, end = table.sessions, table.eviction.count, table.absolute_end
                records = [
                    (e.sid, e.expires - now, count(e), e.data, _lifetimes(e, end(e), now))
                    for e in batch
                    if sessions.get(e.sid) is e and e.expires > now
                ]
            yield from records

    def _load_snapshot(self, snapshot: SnapshotFile) -> None:
        """Load the file one session at a time, held to the cap as it goes: a file larger
        than the store is pruned while it loads. A file found bad part way leaves the
        store empty."""
        now = self._clock()
        loaded = 0

        def take(record: SnapshotRecord) -> None:
            nonlocal loaded
            sid, left, uses, data, lifetimes = record
            owner = self._stored_owner(data)
            if lifetimes is None:  # a file of version 2: as created now
                created = renewed = seen = now
                device = None
            else:
                created, renewed, seen = (
                    now - lifetimes[0],
                    now - lifetimes[1],
                    now - lifetimes[2],
                )
                device = _stored_device(lifetimes[4], lifetimes[5])
            absolute_ttl = self.absolute_ttl
            if absolute_ttl is not None and created + absolute_ttl <= now:
                return  # past this store's absolute end: as if it had expired
            with self._lock:
                table = self._table
                if sid in table.sessions:
                    return
                table.add(
                    sid,
                    data,
                    now + left,
                    uses,
                    owner,
                    created=created,
                    renewed=renewed,
                    seen=seen,
                    device=device,
                )
                upkeep = table.upkeep_due
            loaded += 1
            if upkeep:
                self._upkeep(keep=None)

        whole = snapshot.load(
            take, max_bytes=self.max_size * _SNAPSHOT_SLACK + 65536, max_lifetime=self.ttl
        )
        if not whole:
            self._clear()
        elif loaded:
            log.info("snapshot: %d sessions loaded from %s", loaded, self.snapshot)

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

    def _first_change(self) -> None:
        """The sessions change for the first time since they were loaded or forked: from
        now on they are this process's to write, and a forked process that writes serves,
        so check for siblings first (which may raise ``SeveralProcesses``)."""
        processes.check()
        self._changed = True
        forked, self._forked_from = self._forked_from, None
        if forked is not None:
            log.warning(
                "MemoryStore forked from process %d with %d sessions: process %d now has its "
                "own copy, and sessions written in one worker are not seen by another. Run "
                "one worker process (with threads), or use lembro.RedisStore for several.",
                *forked,
                os.getpid(),
            )
        if self._snapshot is not None:  # a forked child's sessions are now its to write
            hooks.install_sigterm()

    # ---- the background thread -------------------------------------------------------------

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

    def _start_thread(self) -> None:
        periods = [p for p in (self.interval, self.snapshot_interval) if p is not None]
        if not periods or self._closed:
            return
        start = time.monotonic()
        self._next_purge = start + (self.interval or 0)
        self._next_snapshot = start + (self.snapshot_interval or 0)
        self._stop = threading.Event()
        self._thread = background.start(self, self._stop, min(periods))

    # ---- forks (called by lembro.hooks) --------------------------------------------------------
    #
    # A fork copies memory while other threads may be halfway through a change: the lock
    # is held across it, so the child's copy is always whole.

    def _before_fork(self) -> None:
        if self._snapshot is not None:
            self._snapshot.before_fork(self._changed)
        self._lock.acquire()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()
        if self._snapshot is not None:
            self._snapshot.forked_in_parent(self._changed)
        self._changed = False  # its next change checks again for other processes

    def _after_fork_in_child(self) -> None:
        """Give the child fresh locks and its own thread; reload a snapshot replaced since
        its parent loaded it; note that sessions split, said at the child's first change."""
        self._lock = threading.Lock()
        self._upkeep_lock = threading.Lock()
        self._thread = None
        changed, self._changed = self._changed, False
        if self._snapshot is not None and self._snapshot.stale_in_child(changed):
            self._clear()
            self._load_snapshot(self._snapshot)
        # A worker that serves sessions changes them: said then, not here, so a fork
        # that never touches them (a multiprocessing pool's worker) says nothing.
        held = len(self._table)
        self._forked_from = (os.getppid(), held) if held else None
        self._start_thread()

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
        try:
            self._save_if_current()
        finally:
            hooks.detach(self)  # no longer kept alive for the exit

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
            f"<MemoryStore {len(self._table)} sessions, "
            f"{format_size(self.size)} of {format_size(self.max_size)}>"
        )


# A session as ``session_info`` reads it under the lock: id, data, owner's name, created,
# renewed, last seen, expires, absolute end (clock seconds) and device.
_InfoFields = tuple[
    str, bytes, "str | None", float, float, float, float, "float | None", "Device | None"
]


def _lifetimes(entry: Entry, end: float | None, now: float) -> Lifetimes:
    """``entry``'s lifetimes as a snapshot keeps them: seconds since it was created,
    renewed and last seen, seconds to its absolute end ``end`` (``None``: none), and its
    device's ip and user agent."""
    device = entry.device
    return (
        now - entry.created,
        now - entry.renewed,
        now - entry.seen,
        None if end is None else end - now,
        None if device is None else device.ip,
        None if device is None else device.user_agent,
    )


def _stored_device(ip: str | None, user_agent: str | None) -> Device | None:
    """The device a snapshot recorded for a session (``None``: none, or one no store
    would have recorded: a file never makes a load raise)."""
    if ip is None and user_agent is None:
        return None
    try:
        return check_device(Device(ip, user_agent))
    except InvalidOption:
        return None


def _kept(table: SessionTable, sid: str, now: float) -> str:
    """The id of the session a write to ``sid`` wrote (``sid``, or the id it was replaced
    by while in its grace), for the prune that follows to spare it."""
    entry = table.peek(sid, now)
    return sid if entry is None else entry.sid


def _report_thefts(owners: list[str | None]) -> None:
    """One WARNING per session ended because an id it had before a renewal was presented
    after its grace: its owner, never an id (a log must not hold a usable one)."""
    for owner in owners:
        log.warning(
            "a session id replaced by a renewal was presented after its grace: treated as "
            "a stolen cookie, the session it was replaced by is ended (owner: %s)",
            "none" if owner is None else repr(owner),
        )


def _pause() -> None:
    """Between two steps of work done in steps, with the lock released: a short sleep, the
    interpreter free, so that a thread waiting for the lock gets it before the next step
    takes it back. Python's locks are not fair: without the pause, a waiting thread could
    wait out every step of a long call."""
    time.sleep(_PAUSE)


class _Counted:
    """An iterable that counts what was taken from it."""

    def __init__(self, items: Iterable[SnapshotRecord]) -> None:
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[SnapshotRecord]:
        for item in self._items:
            self.count += 1
            yield item
