"""The budget: what a session costs in memory, and the store's size, changed only here."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .entry import Entry

if TYPE_CHECKING:
    from ..lifetimes import Device

__all__ = [
    "DEVICE_OVERHEAD",
    "MARKER_OVERHEAD",
    "OWNED_SESSION_OVERHEAD",
    "OWNER_OVERHEAD",
    "RECORD_OVERHEAD",
    "RENEWED_OVERHEAD",
    "SESSION_OVERHEAD",
    "Budget",
    "device_cost",
    "markers_cost",
    "owner_cost",
    "session_cost",
]

# Bytes each session costs beyond its id and its data's length, as tracemalloc counts
# them: the bytes object's header, the Entry, its expiry and score floats, its cost (an
# int object and its slot), its lifetimes' five slots and two of its times (created and
# last seen, each its own float at worst), and its slot in the store's table with the
# table's slack at its fullest. The tracemalloc tests in tests/unit/test_memory.py hold
# the store to it.
SESSION_OVERHEAD = 350

# Bytes a session's third time costs once it is its own float: when it was renewed (a
# rename inside one sign-in issued its id after it was created).
RENEWED_OVERHEAD = 24

# Bytes a session's recorded device costs beyond its two strs: the frozen Device.
DEVICE_OVERHEAD = 48

# Bytes each id a session had before a rename with a grace costs beyond the id's str:
# the Marker, its grace's float, and its slot in the table of markers with the table's
# slack at its fullest (rebuilt once half the markers it was sized for have left).
MARKER_OVERHEAD = 208

# Bytes each record in the expiry index costs, live or flagged: the Record, its float,
# and its slot in the queue or the heap.
RECORD_OVERHEAD = 104

# With an owner index (``owner_key``), bytes each session costs on top of
# ``SESSION_OVERHEAD``: its entry's three more fields (its owner, and its neighbours in
# that owner's list of sessions).
OWNED_SESSION_OVERHEAD = 24

# Bytes each owner in the owner index costs beyond its name: the Owner, and its slot in
# the index's table with the table's slack at its fullest (the index rebuilds the table
# once half the owners it was sized for have left, so up to twice a full table's slot).
OWNER_OVERHEAD = 136


def session_cost(sid: str, data: bytes) -> int:
    """Bytes a session of id ``sid`` and serialized ``data`` costs, its record aside. The
    id counts at the bytes CPython holds for it, which depend on its widest character."""
    return sys.getsizeof(sid) + len(data) + SESSION_OVERHEAD


def device_cost(device: Device | None) -> int:
    """Bytes a session's recorded ``device`` costs (``None``: nothing)."""
    if device is None:
        return 0
    cost = DEVICE_OVERHEAD
    if device.ip is not None:
        cost += sys.getsizeof(device.ip)
    if device.user_agent is not None:
        cost += sys.getsizeof(device.user_agent)
    return cost


def markers_cost(entry: Entry) -> int:
    """Bytes the ids ``entry`` had before (its markers) cost. O(markers)."""
    cost = 0
    marker = entry.replaced
    while marker is not None:
        cost += sys.getsizeof(marker.sid) + MARKER_OVERHEAD
        marker = marker.older
    return cost


def owner_cost(name: str) -> int:
    """Bytes an owner named ``name`` costs in the owner index, its sessions aside."""
    return sys.getsizeof(name) + OWNER_OVERHEAD


class Budget:
    """The store's size in bytes against its cap: sessions, expiry records and, with
    ``owners``, the owner index's owners and each session's place among its owner's."""

    __slots__ = ("low_water", "max_size", "session_overhead", "size")

    def __init__(self, max_size: int, low_water: float, owners: bool = False) -> None:
        self.max_size = max_size
        self.low_water = low_water
        self.size = 0
        # Bytes each session costs beyond its id and data.
        self.session_overhead = SESSION_OVERHEAD + (OWNED_SESSION_OVERHEAD if owners else 0)

    @property
    def target(self) -> int:
        """Bytes a prune shrinks the store to."""
        return int(self.max_size * self.low_water)

    @property
    def over(self) -> bool:
        """Whether the store holds more than ``max_size``."""
        return self.size > self.max_size

    def capacity(self, sessions: int) -> int:
        """How many sessions fit in ``max_size`` at the average cost of the ``sessions``
        held now (at least one)."""
        if sessions == 0:
            return 1
        return self.max_size * sessions // self.size

    def cost(self, entry: Entry) -> int:
        """Bytes ``entry`` costs in this store, its record aside, recounted (``entry.cost``
        is what was counted): with its device and the ids it had before (its markers)."""
        cost = self._session_cost(entry.sid, entry.data) + device_cost(entry.device)
        if entry.renewed is not entry.created:  # the same float until a renewal
            cost += RENEWED_OVERHEAD
        return cost if entry.replaced is None else cost + markers_cost(entry)

    def recount(self, entry: Entry) -> None:
        """Count ``entry`` again after its id, device or markers changed."""
        cost = self.cost(entry)
        self.size += cost - entry.cost
        entry.cost = cost

    def _session_cost(self, sid: str, data: bytes) -> int:
        """Bytes a session of id ``sid`` and ``data`` costs in this store, its record aside."""
        return sys.getsizeof(sid) + len(data) + self.session_overhead

    def freed_by(self, entry: Entry) -> int:
        """Bytes removing ``entry`` frees once its record is dropped (its markers
        included; its owner aside, which it may or may not free)."""
        return entry.cost + RECORD_OVERHEAD

    def new_session_cost(
        self, sid: str, data: bytes, owner: str | None = None, device: Device | None = None
    ) -> int:
        """Bytes a new session costs, its record and ``device`` included, and its owner's
        when ``owner`` names one."""
        cost = self._session_cost(sid, data) + RECORD_OVERHEAD + device_cost(device)
        return cost if owner is None else cost + owner_cost(owner)

    def first_capacity(self) -> int:
        """A guess at how many sessions fit, before any are held: 1 KiB each."""
        return max(self.max_size // 1024, 1)

    def add_session(self, entry: Entry) -> None:
        """Count a new session and its expiry record; the session keeps its cost, so
        removing it needs no recount."""
        entry.cost = self.cost(entry)
        self.size += entry.cost + RECORD_OVERHEAD

    def remove_session(self, entry: Entry) -> None:
        """Uncount a session; its expiry record stays counted until the index drops it."""
        self.size -= entry.cost

    def add_owner(self, name: str) -> None:
        """Count a new owner in the owner index."""
        self.size += owner_cost(name)

    def remove_owner(self, name: str) -> None:
        """Uncount an owner the owner index dropped."""
        self.size -= owner_cost(name)

    def replace_data(self, entry: Entry, data: bytes) -> None:
        """Give ``entry`` new ``data``, and count the difference."""
        difference = len(data) - len(entry.data)
        entry.data = data
        entry.cost += difference
        self.size += difference

    def add_record(self) -> None:
        """Count a new expiry record for a session already counted."""
        self.size += RECORD_OVERHEAD

    def remove_records(self, count: int) -> None:
        """Uncount ``count`` expiry records the index dropped."""
        self.size -= count * RECORD_OVERHEAD

    def check(self, entries: list[Entry], records: int, owners: Iterable[str] = ()) -> None:
        """Recount the size from ``entries``, ``records`` and the names of the ``owners``
        held; raise ``AssertionError`` naming a mismatch."""
        for entry in entries:
            if entry.cost != self.cost(entry):
                raise AssertionError(
                    f"session {entry.sid[:8]!r} is counted at {entry.cost}, "
                    f"recounted {self.cost(entry)}"
                )
        counted = sum(map(self.cost, entries)) + records * RECORD_OVERHEAD
        counted += sum(map(owner_cost, owners))
        if counted != self.size:
            raise AssertionError(f"size is {self.size}, recounted {counted}")
