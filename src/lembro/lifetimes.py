"""What a session is beyond its data: the device it was seen from, its lifetimes, and what
a request's read returns (issue 29)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import msgspec

__all__ = ["Device", "Loaded", "SessionInfo"]


class Device(msgspec.Struct, frozen=True):
    """What the integration saw of the client: its IP (already truncated if the app asked)
    and its user agent (at most 512 characters kept)."""

    ip: str | None = None
    user_agent: str | None = None


class SessionInfo(msgspec.Struct, frozen=True):
    """What a session is, at a glance; every time is an aware UTC ``datetime``.

    ``created``: when the sign-in began (kept across renewals); ``renewed``: when this id
    was issued; ``last_seen``: the last use the store saw (Redis: to within a minute);
    ``expires``: when it ends if not used again (capped by the absolute end);
    ``absolute_expires``: ``created + absolute_ttl``, or ``None``.
    """

    id: str
    owner: str | int | None
    created: datetime
    renewed: datetime
    last_seen: datetime
    expires: datetime
    absolute_expires: datetime | None
    ip: str | None
    user_agent: str | None


class Loaded(NamedTuple):
    """What a request's read returns: ``sid``, the id to use from now on (another than the
    one asked after a renewal, or when the one asked was replaced and is in its grace);
    ``data``; ``absolute_left``, seconds until the absolute end (``None``: none)."""

    sid: str
    data: dict[str, Any]
    absolute_left: float | None
