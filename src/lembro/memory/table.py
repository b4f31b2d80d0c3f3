"""SessionTable: a MemoryStore's sessions and their bookkeeping, with no lock and no I/O.

The table composes the parts, each in its own module: the sessions (``Entry``, oldest
first), the ``ExpiryIndex`` (who comes due when), the ``EvictionOrder`` (who goes first
when over the cap), the ``Budget`` (the size, and what each session costs) and, with
owners, the ``OwnerIndex`` (each signed-in user's sessions). Every change to them goes
through ``_add`` and ``_remove`` here, so size, counts and indexes move together.

The caller holds one lock around every call and passes the time in (clock seconds). Work
over many sessions (a purge, a prune, a compaction, ending an owner's sessions) is done in
steps of at most ``limit`` sessions, so the caller can release its lock in between.
"""

from __future__ import annotations

from collections.abc import Iterable

from .budget import RECORD_OVERHEAD, Budget
from .entry import Entry
from .eviction import EvictionOrder
from .expiry import ExpiryIndex
from .owners import OwnedEntry, Owner, OwnerIndex

__all__ = ["SMALL", "SessionTable"]

# A store of at most this many sessions is pruned in one step, exactly lowest score first;
# a larger one a batch at a time, against a cutoff score found from a sample.
SMALL = 4096

# Below this many sessions, the table is not worth rebuilding when sessions leave.
_SMALL_TABLE = 64


class _Rebuild:
    """The sessions dict being copied into a new one in steps (a dict never shrinks).

    ``pending`` is every session held when it began, oldest first, and each one added
    since, appended; ``copy_step`` copies the ones still held (the same ``Entry``: a
    session removed and made again is copied at its new place) into ``fresh``, in that
    order, so ``fresh`` ends oldest first too. A session removed after its copy leaves
    ``fresh`` as well.
    """

    __slots__ = ("at", "fresh", "pending")

    def __init__(self, entries: list[Entry]) -> None:
        self.pending = entries
        self.fresh: dict[str, Entry] = {}
        self.at = 0

    def copy_step(self, sessions: dict[str, Entry], limit: int) -> bool:
        """Copy up to ``limit`` pending sessions; return whether some are left."""
        pending, fresh = self.pending, self.fresh
        end = min(self.at + limit, len(pending))
        for entry in pending[self.at : end]:
            sid = entry.sid
            if sessions.get(sid) is entry:
                fresh[sid] = entry
        self.at = end
        return end < len(pending)

    def removed(self, entry: Entry) -> None:
        if self.fresh.get(entry.sid) is entry:
            del self.fresh[entry.sid]


# The counters a table keeps, carried over when ``clear()`` replaces it.
_COUNTERS = (
    "hits",
    "misses",
    "expired",
    "evicted",
    "created",
    "logouts",
    "regenerates",
    "logouts_everywhere",
)


class SessionTable:
    """Sessions by id, with their expiry index, eviction order, budget and owner index.

    Counters (``hits``, ``misses``, ``expired``, ``evicted``, ``created``, and the
    sessions ended by ``destroy`` (``logouts``), ``rename`` (``regenerates``) and
    ``end_detached`` (``logouts_everywhere``)) count what the table saw.
    """

    __slots__ = (
        "_most",
        "_new_entry",
        "_rebuild",
        "budget",
        "created",
        "evicted",
        "eviction",
        "expired",
        "expiry",
        "hits",
        "logouts",
        "logouts_everywhere",
        "misses",
        "owners",
        "regenerates",
        "sessions",
    )

    def __init__(self, max_size: int, low_water: float, owners: bool) -> None:
        self.sessions: dict[str, Entry] = {}  # oldest first
        self.expiry = ExpiryIndex()
        self.budget = Budget(max_size, low_water, owners=owners)
        self.eviction = EvictionOrder(self.budget.first_capacity())
        # With owners, sessions are OwnedEntry: an Entry with its place in the index.
        self.owners = OwnerIndex() if owners else None
        self._new_entry: type[Entry] = OwnedEntry if owners else Entry
        self.hits = self.misses = self.expired = self.evicted = 0
        self.created = self.logouts = self.regenerates = self.logouts_everywhere = 0
        self._most = 0  # the most sessions held since the table was last rebuilt
        self._rebuild: _Rebuild | None = None

    def __len__(self) -> int:
        return len(self.sessions)

    # ---- one session ---------------------------------------------------------------------

    def live(self, sid: str, now: float) -> Entry | None:
        """Session ``sid`` if live; an expired one is removed (and counted) on the way."""
        entry = self.sessions.get(sid)
        if entry is not None and entry.expires <= now:
            self._remove(entry)
            self.expired += 1
            return None
        return entry

    def holds(self, sid: str, now: float) -> bool:
        """Whether ``sid`` is a live session; changes nothing."""
        entry = self.sessions.get(sid)
        return entry is not None and entry.expires > now

    def read(self, sid: str, now: float) -> bytes | None:
        """The data of live session ``sid`` (a use of it, and a hit), or ``None`` (a miss)."""
        entry = self.live(sid, now)
        if entry is None:
            self.misses += 1
            return None
        self.use(entry)
        self.hits += 1
        return entry.data

    def use(self, entry: Entry) -> None:
        """``entry`` was used once more."""
        self.eviction.used(entry)
        if self.owners is not None:
            self.owners.used(entry)

    def write(
        self,
        sid: str,
        data: bytes,
        expires: float,
        owner: str | None,
        now: float,
        *,
        only_over_live: bool,
    ) -> bool:
        """Put ``data`` (of ``owner``, or none) under ``sid``, expiring at ``expires``: a
        new session, or in place of the live one as one more use of it. ``False`` (and
        nothing written) when ``only_over_live`` and ``sid`` is not a live session."""
        old = self.live(sid, now)
        if old is None:
            if only_over_live:
                return False
            self.add(sid, data, expires, owner=owner)
            self.created += 1
            return True
        self.budget.replace_data(old, data)
        self.eviction.used(old)
        if self.owners is not None:
            self._own(old, owner)
        self.extend(old, expires)
        return True

    def write_if(
        self,
        sid: str,
        expected: bytes,
        data: bytes,
        expires: float,
        owner: str | None,
        now: float,
    ) -> bool | None:
        """Like ``write`` over a live session, only if ``sid`` still holds ``expected``
        (the very bytes object read, so an equal write meanwhile counts as a change):
        ``True`` when written, ``False`` when ``sid`` is not a live session, ``None``
        (nothing written) when it holds other data now."""
        entry = self.live(sid, now)
        if entry is None:
            return False
        if entry.data is not expected:
            return None
        return self.write(sid, data, expires, owner, now, only_over_live=True)

    def rename(
        self, old: str, new: str, data: bytes, expires: float, owner: str | None, now: float
    ) -> bool:
        """Put ``data`` (of ``owner``, or none) under ``new``, expiring at ``expires``, in
        place of live session ``old``, which is removed: one step, so no moment has the
        session under neither id (or under both), and the new id joins its owner's index
        as the old one leaves it. The new session keeps the old one's uses. ``False``
        (and nothing changed) when ``old`` is not a live session, or when its owner's
        sessions are being ended (``detach_owner``) and ``new`` names that same owner:
        the logout everywhere ends ``old``, and its successor would have survived it."""
        entry = self.live(old, now)
        if entry is None:
            return False
        if owner is not None and self.owners is not None and self.owners.ending(entry) == owner:
            return False
        uses = 2 if self.eviction.count(entry) > 1.0 else 1
        self._remove(entry)
        taken = self.sessions.get(new)
        if taken is not None:  # an id in use: written over, as ``write`` would
            self._remove(taken)
        self.add(new, data, expires, uses, owner)
        self.created += 1
        self.regenerates += 1
        return True

    def touch(self, sid: str, expires: float, now: float) -> bool:
        """Make live session ``sid`` expire at ``expires``, as a use; ``False`` when absent."""
        entry = self.live(sid, now)
        if entry is None:
            return False
        self.use(entry)
        self.extend(entry, expires)
        return True

    def renew(self, sid: str, expires: float, now: float) -> bytes | None:
        """The data of live session ``sid``, which now expires at ``expires`` (a use of
        it, and a hit), or ``None`` (a miss)."""
        data = self.read(sid, now)
        if data is not None:
            self.extend(self.sessions[sid], expires)
        return data

    def time_left(self, sid: str, now: float) -> float | None:
        """Seconds until live session ``sid`` expires, or ``None``; changes nothing."""
        entry = self.sessions.get(sid)
        if entry is None or entry.expires <= now:
            return None
        return entry.expires - now

    def destroy(self, sid: str, now: float) -> bool:
        """Remove session ``sid``; return whether a live session was removed."""
        entry = self.sessions.get(sid)
        if entry is None:
            return False
        self._remove(entry)
        if entry.expires > now:
            self.logouts += 1
            return True
        self.expired += 1
        return False

    def add(
        self, sid: str, data: bytes, expires: float, uses: float = 1.0, owner: str | None = None
    ) -> Entry:
        """Add a session not held now, with ``uses`` uses and ``owner`` (``None``: none);
        give it an expiry record; count the bytes of all three."""
        entry = self._new_entry(sid, data, expires, self.expiry.add(sid, expires))
        self.eviction.created(entry, uses)
        self.sessions[sid] = entry
        if len(self.sessions) > self._most:
            self._most = len(self.sessions)
        if self._rebuild is not None:
            self._rebuild.pending.append(entry)
        self.budget.add_session(entry)
        if owner is not None:
            self._own(entry, owner)
        return entry

    def extend(self, entry: Entry, expires: float) -> None:
        """Make ``entry`` expire at ``expires``. Its record stays when it comes due no
        later (a purge then finds it extended and gives it a new one); an earlier expiry
        needs a new record, or the session would be purged late."""
        entry.expires = expires
        if expires < entry.record.expires:
            self._refile(entry)

    def _remove(self, entry: Entry) -> None:
        """Remove a held session; its record is flagged (and stays counted until the
        index drops it). A table that held twice as many sessions as it does now is due
        a rebuild (``rebuild_step``), since a dict never shrinks: so it holds at most
        twice their slots."""
        del self.sessions[entry.sid]
        if self._rebuild is not None:
            self._rebuild.removed(entry)
        self.expiry.remove(entry.record)
        self.budget.remove_session(entry)
        if self.owners is not None:
            dropped = self.owners.leave(entry)
            if dropped is not None:
                self.budget.remove_owner(dropped)

    def _own(self, entry: Entry, owner: str | None) -> None:
        """Make ``owner`` (``None``: no one) the owner of ``entry``; count an owner added or
        dropped."""
        assert self.owners is not None
        self._count_owners(*self.owners.own(entry, owner))

    def _count_owners(self, dropped: str | None, added: str | None) -> None:
        if dropped is not None:
            self.budget.remove_owner(dropped)
        if added is not None:
            self.budget.add_owner(added)

    def _refile(self, entry: Entry) -> None:
        """Give ``entry`` a new record at its expiry, in place of the one it has."""
        self.expiry.remove(entry.record)
        entry.record = self.expiry.add(entry.sid, entry.expires)
        self.budget.add_record()

    # ---- upkeep, in steps ------------------------------------------------------------------

    @property
    def upkeep_due(self) -> bool:
        """Whether the table is over its cap or its index needs compacting: the caller
        then runs ``purge``, ``prune`` and ``compact_step`` until they are done."""
        return self.budget.over or self.compaction_due or self.rebuild_due

    @property
    def compaction_due(self) -> bool:
        """Whether the expiry index is being compacted, or should be (``compact_step``)."""
        expiry = self.expiry
        return expiry.compacting or expiry.should_compact(len(self.sessions))

    @property
    def rebuild_due(self) -> bool:
        """Whether the sessions dict is being rebuilt, or should be: it held twice as many
        sessions as now. ``rebuild_step`` does the work."""
        most = self._most
        return self._rebuild is not None or (len(self.sessions) * 2 < most and most > _SMALL_TABLE)

    def rebuild_step(self, limit: int) -> bool:
        """Copy up to ``limit`` sessions into the new sessions dict, starting a rebuild
        when one is due, and put the new dict in place once every session is in it.
        Return whether more is left to do."""
        rebuild = self._rebuild
        if rebuild is None:
            if not self.rebuild_due:
                return False
            rebuild = self._rebuild = _Rebuild(list(self.sessions.values()))
        if rebuild.copy_step(self.sessions, limit):
            return True
        self.sessions = rebuild.fresh
        self._most = len(rebuild.fresh)
        self._rebuild = None
        return False

    def purge(self, now: float, limit: int) -> tuple[int, bool]:
        """Take up to ``limit`` records due by ``now``: remove the sessions that have
        expired, give the ones extended since a new record. Return (removed, whether more
        are due)."""
        sids, taken = self.expiry.pop_due(now, limit)
        self.budget.remove_records(taken)
        removed = 0
        for sid in sids:
            entry = self.sessions[sid]
            if entry.expires <= now:
                self._remove(entry)
                removed += 1
            else:
                self._refile(entry)
        self.expired += removed
        return removed, taken == limit

    def start_compaction(self) -> None:
        """Start dropping every flagged record, however few (a prune ends with this, so
        the size reaches its target); ``compact_step`` does the work."""
        if self.expiry.stale:
            self.expiry.start_compaction()

    def compact_step(self, limit: int) -> bool:
        """Drop flagged records, up to ``limit`` records looked at; start a compaction
        when they outnumber the live. Return whether more is left to do."""
        expiry = self.expiry
        if not expiry.compacting:
            if not expiry.should_compact(len(self.sessions)):
                return False
            expiry.start_compaction()
        dropped, more = expiry.compact_step(limit)
        self.budget.remove_records(dropped)
        return more

    @property
    def need(self) -> int:
        """Bytes a prune must free to reach its target (0 or less: none), counting the
        flagged records as freed: every prune ends by dropping them."""
        return self.budget.size - self.budget.target - self.expiry.stale * RECORD_OVERHEAD

    def entries(self) -> list[Entry]:
        """Every session held, oldest first: a copy, for work done in steps."""
        return list(self.sessions.values())

    def tiers(self, entries: list[Entry]) -> list[list[Entry]]:
        """``entries`` in the order their tiers are evicted: with owners, every session
        without one (an anonymous visitor) before any signed-in user's, whatever their
        scores, so a flood must sign in to compete with users; without, one tier."""
        if self.owners is None:
            return [entries]
        anonymous: list[Entry] = []
        signed_in: list[Entry] = []
        for entry in entries:
            (anonymous if entry.owner is None else signed_in).append(entry)  # type: ignore[attr-defined]
        return [anonymous, signed_in]

    def prune_small(self, keep: str | None) -> int:
        """Evict, lowest score first (by tier, see ``tiers``), until at the prune's target;
        never ``keep``.
        O(n log n) in one step: for a table of at most ``SMALL`` sessions. Return how
        many were evicted."""
        need = self.need
        if need <= 0:
            return 0
        self.resize_eviction()
        evicted = 0
        for tier in self.tiers(list(self.sessions.values())):
            victims = self.eviction.victims(tier, need, self.budget.freed_by, keep)
            for entry in victims:
                self._remove(entry)
                need -= self.budget.freed_by(entry)
            evicted += len(victims)
            if need <= 0:
                break
        self.evicted += evicted
        return evicted

    def evict(
        self, candidates: Iterable[Entry], keep: str | None, cutoff: float
    ) -> tuple[int, bool]:
        """Evict ``candidates`` still held and still scored at most ``cutoff`` (a use since
        they were chosen saves them), in order, until at the prune's target; never
        ``keep``. Return (how many were evicted, whether the target is reached)."""
        evicted = 0
        sessions = self.sessions
        for entry in candidates:
            if self.need <= 0:
                break
            if sessions.get(entry.sid) is entry and entry.sid != keep and entry.score <= cutoff:
                self._remove(entry)
                evicted += 1
        self.evicted += evicted
        return evicted, self.need <= 0

    def resize_eviction(self) -> None:
        """Tell the eviction order how many sessions fit when full, at today's average."""
        self.eviction.resize(self.budget.capacity(len(self.sessions)))

    def cutoff(self, entries: list[Entry]) -> float:
        """A score at or below which the sessions of ``entries`` to evict lie, estimated
        from a sample (see ``EvictionOrder``) with a quarter to spare, so that the sessions
        below it, taken lowest first, are very likely to free enough."""
        return self.eviction.cutoff(entries, self.need * 5 // 4, self.budget.freed_by)

    # ---- owners ----------------------------------------------------------------------------

    def sessions_of(self, name: str, now: float) -> list[str]:
        """The ids of owner ``name``'s live sessions, most recently used first; expired
        ones are removed on the way."""
        assert self.owners is not None
        live: list[str] = []
        for entry in self.owners.sessions(name):
            if entry.expires > now:
                live.append(entry.sid)
            else:
                self._remove(entry)
                self.expired += 1
        return live

    def detach_owner(self, name: str, keep: str | None) -> Owner | None:
        """Set owner ``name``'s sessions apart to be ended by ``end_detached`` (``None``:
        no such owner); ``keep``, if one of them, stays with the owner of that name.
        Sessions that join the owner from now on are not set apart."""
        assert self.owners is not None
        owner = self.owners.detach(name)
        if owner is None:
            return None
        kept = self.sessions.get(keep) if keep is not None else None
        if kept is not None and getattr(kept, "owner", None) is owner:
            self._count_owners(*self.owners.rejoin(kept))
        return owner

    def end_detached(self, owner: Owner, now: float, limit: int) -> tuple[int, bool]:
        """End up to ``limit`` sessions of a detached ``owner``; return (how many of them
        were live, whether more are left)."""
        ended = 0
        for _ in range(limit):
            entry = owner.newest
            if entry is None:
                break
            if entry.expires > now:
                ended += 1
            else:
                self.expired += 1
            self._remove(entry)
        self.logouts_everywhere += ended
        return ended, owner.newest is not None

    # ---- the whole table -------------------------------------------------------------------

    def keep_counters(self, old: SessionTable) -> None:
        """Carry ``old``'s counters over to this table (which replaces it)."""
        for name in _COUNTERS:
            setattr(self, name, getattr(old, name))

    def check(self) -> None:
        """Recount the size and every structure from scratch and compare them with what
        the table keeps; raise ``AssertionError`` naming the first mismatch. O(n)."""
        self.expiry.check()
        entries = list(self.sessions.values())
        for sid, entry in self.sessions.items():
            if sid is not entry.sid:
                raise AssertionError(f"session {sid[:8]!r} is held under another id")
            record = entry.record
            if record.removed or record.sid is not sid:
                raise AssertionError(f"session {sid[:8]!r} has no live record")
            if record.expires > entry.expires:
                raise AssertionError(f"session {sid[:8]!r} is due after it expires")
            self.eviction.check(entry)
        if self._rebuild is not None:
            for sid, entry in self._rebuild.fresh.items():
                if self.sessions.get(sid) is not entry:
                    raise AssertionError(f"session {sid[:8]!r} is rebuilt but not held")
        live = self.expiry.live_records()
        if len(live) != len(entries) or {id(r) for r in live} != {id(e.record) for e in entries}:
            raise AssertionError(
                f"{len(entries)} sessions but {len(live)} live records in the expiry index"
            )
        owners: list[str] = []
        if self.owners is not None:
            self.owners.check(entries)
            owners = self.owners.names()
        self.budget.check(entries, len(self.expiry), owners)

    def take_apart(self, step: int) -> None:
        """Free a table no one else uses any more, ``step`` sessions and records at a
        time, so that no single call frees them all while other threads wait for the
        interpreter."""
        sessions = self.sessions
        while sessions:
            for _ in range(min(step, len(sessions))):
                sessions.popitem()
        self.expiry.take_apart(step)
