"""The owner index: for each owner (the signed-in user a session names), its sessions.

A store built with ``owner_key`` holds its sessions as :class:`OwnedEntry`, which adds
three fields to an ``Entry``: its :class:`Owner`, and its neighbours in that owner's list
of sessions, most recently used first. Every change is O(1) (amortized: the table of
owners is rebuilt once half of them left): a session joins at the front, moves to the
front when used, and is unlinked when it leaves; listing an owner's sessions walks that
owner's list only. A linked list rather than a dict per owner, so that an owner's memory
is a fixed cost plus one per session, with no table that stays large after its sessions
are gone.

The index holds entries the store holds, and nothing else: the store tells it of every
session that joins, is used, changes owner or leaves, and says how many bytes that cost
(see ``budget``).
"""

from __future__ import annotations

from .entry import Entry
from .expiry import Record

__all__ = ["OwnedEntry", "Owner", "OwnerIndex"]

# Below this many owners, the table is not worth rebuilding when owners leave.
_SMALL = 64
_NO_CHANGE: tuple[None, None] = (None, None)


class OwnedEntry(Entry):
    """An ``Entry`` of a store with ``owner_key``: its ``owner`` (``None``: no owner), and
    the sessions used just before (``older``) and after (``newer``) it in that owner's
    list. All three are ``None`` while the session has no owner."""

    __slots__ = ("newer", "older", "owner")

    def __init__(self, sid: str, data: bytes, expires: float, record: Record) -> None:
        super().__init__(sid, data, expires, record)
        self.owner: Owner | None = None
        self.newer: OwnedEntry | None = None
        self.older: OwnedEntry | None = None


class Owner:
    """One owner: its ``name`` (owners compare as this str), its most recently used
    session (``newest``), and how many sessions it has (``count``, never 0 while indexed)."""

    __slots__ = ("count", "name", "newest")

    def __init__(self, name: str) -> None:
        self.name = name
        self.newest: OwnedEntry | None = None
        self.count = 0


class OwnerIndex:
    """Owners by name, each with its sessions most recently used first.

    ``join`` and ``leave`` return the name of an owner they added or dropped (``None``
    when the owner was already there or still has sessions), for the budget to count."""

    __slots__ = ("_detached", "_most", "_owners")

    def __init__(self) -> None:
        self._owners: dict[str, Owner] = {}
        self._most = 0  # the most owners held since the table was last rebuilt
        # Owners taken out of the table by ``detach`` whose sessions are still being ended.
        self._detached: set[Owner] = set()

    def __len__(self) -> int:
        """Owners held (each has at least one session)."""
        return len(self._owners)

    def names(self) -> list[str]:
        """Every owner's name, as held, detached ones included (for the budget's recount)."""
        return [owner.name for owner in (*self._owners.values(), *self._detached)]

    def join(self, entry: Entry, name: str) -> str | None:
        """Make ``entry`` (which has no owner) the most recent session of owner ``name``;
        return ``name`` if that owner is new. O(1)."""
        member: OwnedEntry = entry  # type: ignore[assignment]  # all are, with owner_key
        owner = self._owners.get(name)
        added = None
        if owner is None:
            owner = self._owners[name] = Owner(name)
            added = name
            self._most = max(self._most, len(self._owners))
        member.owner = owner
        _link_newest(owner, member)
        return added

    def leave(self, entry: Entry) -> str | None:
        """Take ``entry`` out of its owner's sessions, if it has an owner; return the
        owner's name if that was its last session (the owner is then dropped). O(1)
        amortized: the table is rebuilt (one C-level copy) once half its owners left."""
        member: OwnedEntry = entry  # type: ignore[assignment]  # all are, with owner_key
        owner = member.owner
        if owner is None:
            return None
        _unlink(owner, member)
        member.owner = None
        if owner.count:
            return None
        if self._owners.get(owner.name) is not owner:  # detached
            self._detached.discard(owner)
            return owner.name
        del self._owners[owner.name]
        if len(self._owners) * 2 < self._most and self._most > _SMALL:
            # A dict never shrinks when keys leave: rebuilt, its table fits the owners
            # held, so it never holds more than twice their slots (as the budget counts).
            self._owners = dict(self._owners)
            self._most = len(self._owners)
        return owner.name

    def own(self, entry: Entry, name: str | None) -> tuple[str | None, str | None]:
        """Make ``name`` (``None``: no one) the owner of ``entry``, as its most recent
        session: a write. Return the names of the owner dropped and the owner added, for
        the budget (``(None, None)``: none). O(1). A session of a detached owner written
        under the same name stays with it: it is being ended."""
        member: OwnedEntry = entry  # type: ignore[assignment]
        owner = member.owner
        if owner is not None and owner.name == name:
            if owner.newest is not member:
                _unlink(owner, member)
                _link_newest(owner, member)
            return _NO_CHANGE
        dropped = self.leave(member)
        added = None if name is None else self.join(member, name)
        return dropped, added

    def used(self, entry: Entry) -> None:
        """``entry`` was used: it becomes its owner's most recent session. O(1)."""
        member: OwnedEntry = entry  # type: ignore[assignment]  # all are, with owner_key
        owner = member.owner
        if owner is not None and owner.newest is not member:
            _unlink(owner, member)
            _link_newest(owner, member)

    def ending(self, entry: Entry) -> str | None:
        """The name of ``entry``'s owner when that owner is detached (its sessions are
        being ended), else ``None``."""
        member: OwnedEntry = entry  # type: ignore[assignment]
        owner = member.owner
        if owner is None or self._owners.get(owner.name) is owner:
            return None
        return owner.name

    def owner_of(self, entry: Entry) -> str | None:
        """The name of ``entry``'s owner, or ``None``."""
        member: OwnedEntry = entry  # type: ignore[assignment]
        owner = member.owner
        return None if owner is None else owner.name

    def detach(self, name: str) -> Owner | None:
        """Take owner ``name`` out of the table (``None``: no such owner), so its sessions
        can be ended a few at a time from its ``newest`` while new sessions of that name
        join a new owner. The detached owner is dropped when its last session leaves."""
        owner = self._owners.pop(name, None)
        if owner is not None:
            self._detached.add(owner)
        return owner

    def rejoin(self, entry: Entry) -> tuple[str | None, str | None]:
        """Move ``entry`` from a detached owner to the owner of that name in the table (a
        new one if needed), as ``own`` would a session written by another owner."""
        member: OwnedEntry = entry  # type: ignore[assignment]
        owner = member.owner
        if owner is None:
            return _NO_CHANGE
        dropped = self.leave(member)
        return dropped, self.join(member, owner.name)

    def sessions(self, name: str) -> list[Entry]:
        """Owner ``name``'s sessions, most recently used first (live or not: the store
        judges). O(sessions of that owner)."""
        owner = self._owners.get(name)
        found: list[Entry] = []
        member = None if owner is None else owner.newest
        while member is not None:
            found.append(member)
            member = member.older
        return found

    def check(self, entries: list[Entry]) -> None:
        """Recount the index from ``entries`` (every session the store holds); raise
        ``AssertionError`` naming the first mismatch. O(n)."""
        owned: dict[int, Owner] = {}
        for entry in entries:
            member: OwnedEntry = entry  # type: ignore[assignment]
            owner = member.owner
            if owner is not None:
                if self._owners.get(owner.name) is not owner and owner not in self._detached:
                    raise AssertionError(
                        f"session {entry.sid[:8]!r} names owner {owner.name!r}, not indexed"
                    )
                owned[id(entry)] = owner
        listed = 0
        held = [(name, owner) for name, owner in self._owners.items()]
        held += [(owner.name, owner) for owner in self._detached]
        for name, owner in held:
            if owner.name != name:
                raise AssertionError(f"owner {owner.name!r} is held under {name!r}")
            walked = 0
            newer: OwnedEntry | None = None
            listed_member = owner.newest
            while listed_member is not None:
                walked += 1
                if walked > owner.count or owned.get(id(listed_member)) is not owner:
                    raise AssertionError(f"owner {name!r} lists a session not its own")
                if listed_member.newer is not newer:
                    raise AssertionError(
                        f"owner {name!r}'s list is broken at {listed_member.sid[:8]!r}"
                    )
                newer, listed_member = listed_member, listed_member.older
            if walked != owner.count or walked == 0:
                raise AssertionError(f"owner {name!r} counts {owner.count}, lists {walked}")
            listed += walked
        if listed != len(owned):
            raise AssertionError(f"{len(owned)} sessions have an owner, {listed} are listed")


def _link_newest(owner: Owner, member: OwnedEntry) -> None:
    newest = owner.newest
    member.older = newest
    member.newer = None
    if newest is not None:
        newest.newer = member
    owner.newest = member
    owner.count += 1


def _unlink(owner: Owner, member: OwnedEntry) -> None:
    # Both links are cleared, so a session that left holds no other alive: a removed
    # entry is freed at once, with no cycle for the garbage collector to find.
    newer, older = member.newer, member.older
    if newer is None:
        owner.newest = older
    else:
        newer.older = older
    if older is not None:
        older.newer = newer
    member.newer = member.older = None
    owner.count -= 1
