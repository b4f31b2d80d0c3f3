"""SessionTable: a MemoryStore's sessions and their bookkeeping, with no lock and no I/O.

The table composes the parts, each in its own module: the sessions (``Entry``, oldest
first), the ``ExpiryIndex`` (who comes due when), the ``EvictionOrder`` (who goes first
when over the cap), the ``Budget`` (the size, and what each session costs) and, with
owners, the ``OwnerIndex`` (each signed-in user's sessions). Every change to them goes
through ``add``, ``_rekey`` and ``_remove`` here, so size, counts and indexes move
together. Beside the sessions, the ids they had before a rename with a grace (their
``Marker``s): each lasts as long as its session, and goes with it.

The caller holds one lock around every call and passes the time in (clock seconds). Work
over many sessions (a purge, a prune, a compaction, ending an owner's sessions) is done in
steps of at most ``limit`` sessions, so the caller can release its lock in between.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import TYPE_CHECKING, Final, Literal

from .budget import RECORD_OVERHEAD, Budget
from .entry import Entry, Marker
from .eviction import EvictionOrder
from .expiry import ExpiryIndex
from .owners import OwnedEntry, Owner, OwnerIndex

if TYPE_CHECKING:
    from ..lifetimes import Device

__all__ = ["SAME_OWNER", "SMALL", "SessionTable", "WrittenOwner"]


class _Same(enum.Enum):
    OWNER = "the owner the session has"


# What a write passes as its data's owner when the data leaves the owner's field as it
# was: the table then reads nothing to find that the owner did not change.
SAME_OWNER: Final = _Same.OWNER
# The owner a write names for its data: a name, ``None`` (none), or ``SAME_OWNER``.
WrittenOwner = str | None | Literal[_Same.OWNER]

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
    ``fresh`` as well; one moved to another id (a rename) is copied under it.
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

    def moved(self, entry: Entry, old: str) -> None:
        """``entry`` now has another id (it had ``old``): copied under the new one."""
        if self.fresh.get(old) is entry:
            del self.fresh[old]
        self.pending.append(entry)


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
    sessions ended by ``destroy``, ``end_of``, a stolen cookie and ``max_per_owner``
    (``logouts``), ``rename`` (``regenerates``) and ``end_detached``
    (``logouts_everywhere``)) count what the table saw.

    ``absolute_ttl`` (seconds, ``None``: none): no session lives past its ``created``
    plus this, whatever sets its expiry. ``max_per_owner`` (``None``: no limit): a
    write that gives an owner more sessions ends its oldest (by ``created``). ``thefts``
    lists the owners (``None``: no owner) of the sessions ended because a replaced id
    was presented after its grace, for the caller to report (``take_thefts``).
    """

    __slots__ = (
        "_most",
        "_most_markers",
        "_new_entry",
        "_rebuild",
        "absolute_ttl",
        "budget",
        "created",
        "evicted",
        "eviction",
        "expired",
        "expiry",
        "hits",
        "logouts",
        "logouts_everywhere",
        "markers",
        "max_per_owner",
        "misses",
        "owners",
        "regenerates",
        "sessions",
        "thefts",
    )

    def __init__(
        self,
        max_size: int,
        low_water: float,
        owners: bool,
        absolute_ttl: float | None = None,
        max_per_owner: int | None = None,
    ) -> None:
        self.sessions: dict[str, Entry] = {}  # oldest first
        # The ids sessions had before a rename with a grace, never an id in ``sessions``.
        self.markers: dict[str, Marker] = {}
        self._most_markers = 0
        self.absolute_ttl = absolute_ttl
        self.max_per_owner = max_per_owner
        self.thefts: list[str | None] = []
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

    def find(self, sid: str, now: float) -> Entry | None:
        """The live session ``sid`` names: its own, or, for an id a session had before a
        rename, that session while the id is in its grace. A replaced id past its grace
        is a stolen cookie: the session it was replaced by is ended (a logout, noted in
        ``thefts``) and the answer is ``None``. Expired sessions are removed on the way."""
        entry = self.sessions.get(sid)
        if entry is None:
            markers = self.markers
            if not markers:
                return None
            marker = markers.get(sid)
            if marker is None:
                return None
            entry = marker.entry
            assert entry is not None  # a marker leaves with its session
            if entry.expires > now and now >= marker.grace_until:
                self.thefts.append(self.owner_name(entry))
                self._remove(entry)
                self.logouts += 1
                return None
        if entry.expires <= now:
            self._remove(entry)
            self.expired += 1
            return None
        return entry

    def peek(self, sid: str, now: float) -> Entry | None:
        """As ``find``, changing nothing: a replaced id past its grace, or an expired
        session, is ``None``."""
        entry = self.sessions.get(sid)
        if entry is None:
            marker = self.markers.get(sid) if self.markers else None
            if marker is None or now >= marker.grace_until:
                return None
            entry = marker.entry
            assert entry is not None
        return entry if entry.expires > now else None

    def take_thefts(self) -> list[str | None]:
        """The owners of the sessions ended as stolen since the last call (see ``find``)."""
        thefts, self.thefts = self.thefts, []
        return thefts

    def holds(self, sid: str, now: float) -> bool:
        """Whether ``sid`` names a live session (its own id, or one in its grace);
        changes nothing."""
        return self.peek(sid, now) is not None

    def read(self, sid: str, now: float) -> bytes | None:
        """The data of the live session ``sid`` names (see ``find``; a use of it, and a
        hit), or ``None`` (a miss)."""
        entry = self.find(sid, now)
        if entry is None:
            self.misses += 1
            return None
        self.use(entry, now)
        self.hits += 1
        return entry.data

    def load(
        self,
        sid: str,
        now: float,
        renew_every: float | None,
        grace: float,
        new_id: Callable[[], str],
    ) -> Entry | None:
        """The live session ``sid`` names, as ``read`` (a use, a hit or a miss); when
        ``renew_every`` is set and its id was issued more than that many seconds ago, it
        moves to the id ``new_id()`` gives, keeping its lifetimes, and its id so far
        answers as it for ``grace`` seconds. The caller reads the id from the entry."""
        entry = self.find(sid, now)
        if entry is None:
            self.misses += 1
            return None
        self.use(entry, now)
        self.hits += 1
        if renew_every is not None and now - entry.renewed > renew_every:
            self._rekey(entry, new_id(), now, reset_lifetime=False, grace=grace)
            self.budget.recount(entry)
            self.created += 1
            self.regenerates += 1
        return entry

    def use(self, entry: Entry, now: float) -> None:
        """``entry`` was used once more, at ``now``."""
        self.eviction.used(entry)
        entry.seen = now
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
        device: Device | None = None,
    ) -> bool:
        """Put ``data`` (of ``owner``, or none) under ``sid``, expiring at ``expires`` (at
        its absolute end if that comes first): a new session (recording ``device``), or
        in place of the live session ``sid`` names (see ``find``) as one more use of it.
        ``False`` (and nothing written) when ``only_over_live`` and there is none."""
        old = self.find(sid, now)
        if old is None:
            if only_over_live:
                return False
            entry = self.add(sid, data, expires, owner=owner, created=now, device=device)
            self.created += 1
            if owner is not None and self.max_per_owner is not None:
                self._cap_owner(entry, now)
            return True
        self.write_over(old, data, expires, owner, now)
        return True

    def write_over(
        self,
        entry: Entry,
        data: bytes,
        expires: float,
        owner: WrittenOwner,
        now: float,
    ) -> bool:
        """Put ``data`` (of ``owner``, or none; ``SAME_OWNER``: of the owner ``entry``
        has) in live ``entry``, expiring at ``expires`` (at its absolute end if that
        comes first), as one more use of it. Whether it may have made upkeep due
        (``upkeep_due``): it grew the table, filed a new expiry record, or gave the
        session another owner (whose cap may end other sessions). A write that did none
        of these adds nothing upkeep acts on."""
        size, record = self.budget.size, entry.record
        self.budget.replace_data(entry, data)
        self.eviction.used(entry)
        entry.seen = now
        owners = self.owners
        new_owner = (
            owners is not None and owner is not SAME_OWNER and owner != self.owner_name(entry)
        )
        if new_owner:
            assert owner is not SAME_OWNER
            self._own(entry, owner)
            if self.max_per_owner is not None and owner is not None:
                self._cap_owner(entry, now)
        elif owners is not None:
            owners.used(entry)  # the same owner: its most recent session, as any use
        self.extend(entry, expires)
        return new_owner or self.budget.size > size or entry.record is not record

    def write_if(
        self,
        sid: str,
        expected: bytes,
        data: bytes,
        expires: float,
        owner: WrittenOwner,
        now: float,
    ) -> bool | None:
        """Like ``write`` over a live session, only if the session ``sid`` names still
        holds ``expected`` (the very bytes object read, so an equal write meanwhile
        counts as a change): ``True`` when written, ``False`` when there is no live
        session, ``None`` (nothing written) when it holds other data now."""
        entry = self.find(sid, now)
        if entry is None:
            return False
        if entry.data is not expected:
            return None
        self.write_over(entry, data, expires, owner, now)
        return True

    def rename(
        self,
        old: str,
        new: str,
        data: bytes,
        expires: float,
        owner: str | None,
        now: float,
        *,
        reset_lifetime: bool = True,
        grace: float = 0.0,
        device: Device | None = None,
    ) -> bool:
        """Put ``data`` (of ``owner``, or none) under ``new``, expiring at ``expires``, in
        place of the live session ``old`` names (see ``find``), which leaves its id: one
        step, so no moment has the session under neither id (or under both), and the new
        id takes the old one's place in its owner's index. The session keeps its uses
        and its device (``device``: recorded in its place). ``reset_lifetime``: a new
        sign-in, created now (the ids it had before are forgotten); else it keeps its
        ``created``, so its absolute end stays. ``grace`` (seconds, 0: none): ``old``
        answers as the session for that long, then marks a stolen cookie while the
        session lives. ``False`` (and nothing changed) when ``old`` names no live
        session, or when its owner's sessions are being ended (``detach_owner``) and
        ``new`` names that same owner: the logout everywhere ends it, and its successor
        would have survived it."""
        entry = self.find(old, now)
        if entry is None:
            return False
        if owner is not None and self.owners is not None and self.owners.ending(entry) == owner:
            return False
        self.eviction.created(entry, 2 if self.eviction.count(entry) > 1.0 else 1)
        entry.seen = now
        entry.expires = expires  # capped below, once ``created`` is settled
        moves = new != entry.sid
        replaced = self._rekey(entry, new, now, reset_lifetime=reset_lifetime, grace=grace)
        entry.data = data
        if device is not None:
            entry.device = device
        self.budget.recount(entry)
        if self.owners is not None:
            before = getattr(entry, "owner", None)
            self._own(entry, owner)
            if self.max_per_owner is not None and getattr(entry, "owner", None) is not before:
                self._cap_owner(entry, now)
        if moves:  # its old id ended; the new one is a new session unless it was held
            self.regenerates += 1
            if not replaced:
                self.created += 1
        return True

    def touch(self, sid: str, expires: float, now: float) -> tuple[bool, bool]:
        """Make the live session ``sid`` names expire at ``expires`` (at its absolute end
        if that comes first), as a use. Whether there was one, and whether the touch
        filed it a new expiry record (which grows the table and flags the old record, so
        it may make upkeep due: see ``upkeep_due``)."""
        entry = self.find(sid, now)
        if entry is None:
            return False, False
        self.use(entry, now)
        record = entry.record
        self.extend(entry, expires)
        return True, entry.record is not record

    def renew(self, sid: str, expires: float, now: float) -> bytes | None:
        """The data of the live session ``sid`` names, which now expires at ``expires``
        (at its absolute end if that comes first; a use of it, and a hit), or ``None``
        (a miss)."""
        entry = self.find(sid, now)
        if entry is None:
            self.misses += 1
            return None
        self.use(entry, now)
        self.hits += 1
        self.extend(entry, expires)
        return entry.data

    def time_left(self, sid: str, now: float) -> float | None:
        """Seconds until the live session ``sid`` names expires, or ``None``; changes
        nothing."""
        entry = self.peek(sid, now)
        return None if entry is None else entry.expires - now

    def absolute_end(self, entry: Entry) -> float | None:
        """When ``entry`` ends whatever happens (clock seconds), or ``None``: never."""
        absolute_ttl = self.absolute_ttl
        return None if absolute_ttl is None else entry.created + absolute_ttl

    def destroy(self, sid: str, now: float) -> bool:
        """Remove the session ``sid`` names (an id in its grace ends the session it was
        replaced by: a logout from a tab that still held it); return whether a live
        session was removed. A replaced id past its grace is a stolen cookie, as in
        ``find``: the session is ended and the answer is ``False``."""
        entry = self.sessions.get(sid)
        if entry is None:
            marker = self.markers.get(sid) if self.markers else None
            if marker is None:
                return False
            entry = marker.entry
            assert entry is not None
            if entry.expires > now and now >= marker.grace_until:
                self.thefts.append(self.owner_name(entry))
                self._remove(entry)
                self.logouts += 1
                return False
        self._remove(entry)
        if entry.expires > now:
            self.logouts += 1
            return True
        self.expired += 1
        return False

    def end_of(self, name: str, sid: str, now: float) -> bool:
        """End the live session ``sid`` names (see ``peek``) only if its owner is
        ``name``; return whether it did (a logout)."""
        entry = self.peek(sid, now)
        if entry is None or self.owner_name(entry) != name:
            return False
        self._remove(entry)
        self.logouts += 1
        return True

    def owner_name(self, entry: Entry) -> str | None:
        """The name of ``entry``'s owner, or ``None`` (none, or a table without owners)."""
        owner: Owner | None = getattr(entry, "owner", None)
        return None if owner is None else owner.name

    def add(
        self,
        sid: str,
        data: bytes,
        expires: float,
        uses: float = 1.0,
        owner: str | None = None,
        *,
        created: float = 0.0,
        renewed: float | None = None,
        seen: float | None = None,
        device: Device | None = None,
    ) -> Entry:
        """Add a session not held now, with ``uses`` uses, ``owner`` (``None``: none), its
        lifetimes (``renewed`` and ``seen``: ``created`` when not given) and ``device``;
        it expires at ``expires`` or at its absolute end, whichever comes first. Give it
        an expiry record; count the bytes of all of it."""
        absolute_ttl = self.absolute_ttl
        if absolute_ttl is not None and created + absolute_ttl < expires:
            expires = created + absolute_ttl
        entry = self._new_entry(sid, data, expires, self.expiry.add(sid, expires))
        entry.created = created
        # The same float as ``created`` until renewed: the budget counts a third float
        # only for a session renewed inside its sign-in.
        entry.renewed = created if renewed is None or renewed == created else renewed
        entry.seen = created if seen is None else seen
        entry.device = device
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
        """Make ``entry`` expire at ``expires``, or at its absolute end if that comes
        first. Its record stays when it comes due no later (a purge then finds it
        extended and gives it a new one); an earlier expiry needs a new record, or the
        session would be purged late."""
        absolute_ttl = self.absolute_ttl
        if absolute_ttl is not None and entry.created + absolute_ttl < expires:
            expires = entry.created + absolute_ttl
        entry.expires = expires
        if expires < entry.record.expires:
            self._refile(entry)

    def _rekey(
        self, entry: Entry, new: str, now: float, *, reset_lifetime: bool, grace: float
    ) -> bool:
        """Move live ``entry`` to the id ``new`` (a session or marker held under it is
        ended first), issued ``now``: its id so far becomes a marker for ``grace``
        seconds (0: none); ``reset_lifetime`` starts a new sign-in (created now, the
        markers of its earlier ids dropped). Its expiry is capped at its absolute end
        and refiled; the caller recounts its cost. (``new`` may be the id it has, when
        the caller named it by an id in its grace: it then stays, with no marker.) Return
        whether ``new`` was the id of another session, which it replaced."""
        old = entry.sid
        moves = new != old
        taken = None
        if moves:
            del self.sessions[old]
            taken = self.sessions.get(new)
            if taken is not None:  # an id in use: written over, as ``write`` would
                self._remove(taken)
            elif new in self.markers:
                self._drop_marker(self.markers[new])
        if reset_lifetime:
            entry.created = now  # and renewed, the same float (see ``add``)
            if entry.replaced is not None:
                self._forget_markers(entry)
        if grace > 0 and moves:
            marker = Marker(old, entry, now + grace, entry.replaced)
            entry.replaced = self.markers[old] = marker
            if len(self.markers) > self._most_markers:
                self._most_markers = len(self.markers)
        entry.renewed = now
        if moves:
            entry.sid = new
            self.sessions[new] = entry
            if self._rebuild is not None:
                self._rebuild.moved(entry, old)
        absolute_ttl = self.absolute_ttl
        if absolute_ttl is not None and entry.created + absolute_ttl < entry.expires:
            entry.expires = entry.created + absolute_ttl
        self._refile(entry)
        return taken is not None

    def _remove(self, entry: Entry) -> None:
        """Remove a held session, and the markers of the ids it had; its record is flagged
        (and stays counted until the index drops it). A table that held twice as many
        sessions as it does now is due a rebuild (``rebuild_step``), since a dict never
        shrinks: so it holds at most twice their slots."""
        del self.sessions[entry.sid]
        if self._rebuild is not None:
            self._rebuild.removed(entry)
        self.expiry.remove(entry.record)
        self.budget.remove_session(entry)
        if entry.replaced is not None:
            self._forget_markers(entry)
        if self.owners is not None:
            dropped = self.owners.leave(entry)
            if dropped is not None:
                self.budget.remove_owner(dropped)

    def _forget_markers(self, entry: Entry) -> None:
        """Drop every marker of ``entry`` (whose cost the caller recounts), clearing their
        links: no cycle between a session and its markers outlives them."""
        markers = self.markers
        marker = entry.replaced
        entry.replaced = None
        while marker is not None:
            del markers[marker.sid]
            older = marker.older
            marker.entry = marker.older = None
            marker = older
        self._shrink_markers()

    def _drop_marker(self, dropped: Marker) -> None:
        """Drop one marker from its session's list (an id reused: never by lembro's ids)."""
        entry = dropped.entry
        assert entry is not None
        if entry.replaced is dropped:
            entry.replaced = dropped.older
        else:
            marker = entry.replaced
            while marker is not None and marker.older is not dropped:
                marker = marker.older
            if marker is not None:
                marker.older = dropped.older
        del self.markers[dropped.sid]
        dropped.entry = dropped.older = None
        self.budget.recount(entry)
        self._shrink_markers()

    def _shrink_markers(self) -> None:
        markers = self.markers
        if len(markers) * 2 < self._most_markers and self._most_markers > _SMALL_TABLE:
            self.markers = dict(markers)
            self._most_markers = len(markers)

    def _cap_owner(self, entry: Entry, now: float) -> None:
        """``entry`` just joined its owner: while that owner has more than
        ``max_per_owner`` sessions, end its expired ones, then its oldest by ``created``
        (never ``entry``); each a logout. O(k log k) in the owner's k sessions, done only
        when a session joins an owner already at the limit."""
        limit = self.max_per_owner
        owner: Owner | None = getattr(entry, "owner", None)
        if limit is None or owner is None or owner.count <= limit:
            return
        others: list[Entry] = []
        member = owner.newest
        while member is not None:
            if member is not entry:
                others.append(member)
            member = member.older
        for other in others:
            if other.expires <= now:
                self._remove(other)
                self.expired += 1
        # Least recently used first, so that of sign-ins made at the same instant (a
        # coarse clock) the one used least lately goes first.
        others.reverse()
        live = sorted((e for e in others if e.expires > now), key=_created)
        for other in live:
            if owner.count <= limit:
                break
            self._remove(other)
            self.logouts += 1

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
        return self.expiry.compaction_due(len(self.sessions))

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
            end = self.absolute_end(entry)
            if end is not None and entry.expires > end:
                raise AssertionError(f"session {sid[:8]!r} expires after its absolute end")
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
        listed = 0
        for entry in entries:
            marker = entry.replaced
            while marker is not None:
                listed += 1
                if self.markers.get(marker.sid) is not marker or marker.entry is not entry:
                    raise AssertionError(f"session {entry.sid[:8]!r} lists a marker not held")
                if marker.sid in self.sessions:
                    raise AssertionError(f"marker {marker.sid[:8]!r} is also a session")
                marker = marker.older
        if listed != len(self.markers):
            raise AssertionError(f"{len(self.markers)} markers, {listed} listed by sessions")
        owners: list[str] = []
        if self.owners is not None:
            self.owners.check(entries)
            owners = self.owners.names()
        self.budget.check(entries, len(self.expiry), owners)

    def take_apart(self, step: int) -> None:
        """Free a table no one else uses any more, ``step`` sessions and records at a
        time, so that no single call frees them all while other threads wait for the
        interpreter."""
        markers = self.markers
        while markers:
            for _ in range(min(step, len(markers))):
                _, marker = markers.popitem()
                if marker.entry is not None:
                    marker.entry.replaced = None  # no cycle left for the collector
                marker.entry = marker.older = None
        sessions = self.sessions
        while sessions:
            for _ in range(min(step, len(sessions))):
                sessions.popitem()
        self.expiry.take_apart(step)


_created = attrgetter("created")
