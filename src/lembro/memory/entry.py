"""Entry: what the store holds for one session."""

from __future__ import annotations

from .expiry import Record

__all__ = ["Entry"]


class Entry:
    """One session: its id, its serialized data, when it expires (clock seconds), its
    record in the expiry index, its score: how often and how recently it was used (see
    ``eviction``), and its cost in bytes, which only the ``Budget`` sets.

    ``sid`` is the str the session was created with; the store's table is keyed by that
    same str, and its record names it too, so a session keeps one id alive however many
    requests bring the id as a new str.
    """

    __slots__ = ("cost", "data", "expires", "record", "score", "sid")

    def __init__(self, sid: str, data: bytes, expires: float, record: Record) -> None:
        self.sid = sid
        self.data = data
        self.expires = expires
        self.record = record
        self.score = 0.0
        self.cost = 0
