"""Entry: what the store holds for one session."""

from __future__ import annotations

from .expiry import Record

__all__ = ["Entry"]


class Entry:
    """One session: its id, its serialized data, when it expires (clock seconds), its
    record in the expiry index, and how often it was used (see ``eviction``).

    ``sid`` is the str the session was created with; the store's table is keyed by that
    same str, and its record names it too, so a session keeps one id alive however many
    requests bring the id as a new str.
    """

    __slots__ = ("aged", "data", "expires", "record", "sid", "uses")

    def __init__(self, sid: str, data: bytes, expires: float, record: Record) -> None:
        self.sid = sid
        self.data = data
        self.expires = expires
        self.record = record
        self.uses = 1
        self.aged = 0
