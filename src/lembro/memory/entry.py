"""Entry: what the store holds for one session, and Marker: an id a session had before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .expiry import Record

if TYPE_CHECKING:
    from ..lifetimes import Device

__all__ = ["Entry", "Marker"]


class Entry:
    """One session: its id, its serialized data, when it expires (clock seconds), its
    record in the expiry index, its score: how often and how recently it was used (see
    ``eviction``), and its cost in bytes, which only the ``Budget`` sets.

    Its lifetimes, in clock seconds: ``created`` (when its sign-in began; its absolute
    end is ``created`` plus the store's ``absolute_ttl``), ``renewed`` (when this id was
    issued) and ``seen`` (its last use); ``device``: the client the integration
    recorded (``None``: none); ``replaced``: the newest :class:`Marker` of the ids it
    had before a rename with a grace (``None``: none), each linked to the one before.

    ``sid`` is the str the session was created with; the store's table is keyed by that
    same str, and its record names it too, so a session keeps one id alive however many
    requests bring the id as a new str.
    """

    __slots__ = (
        "cost",
        "created",
        "data",
        "device",
        "expires",
        "record",
        "renewed",
        "replaced",
        "score",
        "seen",
        "sid",
    )

    def __init__(self, sid: str, data: bytes, expires: float, record: Record) -> None:
        self.sid = sid
        self.data = data
        self.expires = expires
        self.record = record
        self.score = 0.0
        self.cost = 0
        self.created = self.renewed = self.seen = 0.0
        self.device: Device | None = None
        self.replaced: Marker | None = None


class Marker:
    """An id (``sid``) that session ``entry`` had before a rename with a grace: until
    ``grace_until`` (clock seconds) it answers as the session; after that, whoever
    presents it holds a stolen cookie. It lasts as long as the session does (the table
    removes it with the session); ``older`` is the marker of the id before it."""

    __slots__ = ("entry", "grace_until", "older", "sid")

    def __init__(self, sid: str, entry: Entry, grace_until: float, older: Marker | None) -> None:
        self.sid = sid
        self.entry: Entry | None = entry
        self.grace_until = grace_until
        self.older = older
