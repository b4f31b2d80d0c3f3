"""What a session is beside its data (issue 29): the client that made it, its lifetimes.

``Device`` is what an integration saw of the client when a session was created or
regenerated; ``SessionInfo`` is one session at a glance (``session_info``,
``sessions_of(owner, info=True)``); ``Loaded`` is what a request's read (``load``)
returns. The option checks every store shares for absolute lifetimes, renewal and the
number of sessions per user live here too.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from .errors import InvalidOption

__all__ = [
    "MAX_IP",
    "MAX_USER_AGENT",
    "Device",
    "Loaded",
    "SessionInfo",
    "check_device",
    "check_grace",
    "check_max_sessions",
]

# The most characters of a user agent a store keeps: the rest is cut, never refused
# (the header is the client's to write).
MAX_USER_AGENT = 512

# The most characters of an IP address a store takes (an IPv6 address with a zone fits).
MAX_IP = 64


class Device(msgspec.Struct, frozen=True):
    """What the integration saw of the client: its IP address (``None``: unknown; already
    truncated to its /24 or /48 if the app asked) and its user agent (``None``: none
    sent; a store keeps at most ``MAX_USER_AGENT`` characters of it)."""

    ip: str | None = None
    user_agent: str | None = None


class SessionInfo(msgspec.Struct, frozen=True):
    """One session at a glance. Every time is an aware ``datetime`` in UTC.

    ``id``: the session's id; ``owner``: its ``owner_key`` field (``None``: no one, or a
    store without ``owner_key``); ``created``: when the sign-in began (kept across
    renewals and ``rename(reset_lifetime=False)``); ``renewed``: when this id was issued
    (``created`` until it is renewed); ``last_seen``: the last use the store saw (Redis:
    to within a minute); ``expires``: when it ends if not used again (never after
    ``absolute_expires``); ``absolute_expires``: ``created`` plus the store's
    ``absolute_ttl``, past which no use extends it (``None``: no absolute lifetime);
    ``ip`` and ``user_agent``: the device the integration recorded, if any.
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
    """What a request's read (``store.load(sid)``) returns.

    ``sid``: the id to use from now on, which differs from the id asked for after a
    renewal, or when the id asked for was replaced by a renewal and is still in its
    grace (the response then sets the cookie to it); ``data``: a fresh copy of the
    session; ``absolute_left``: seconds until the session's absolute end (``None``: the
    store has no ``absolute_ttl``), which a cookie's lifetime must not outlive.
    """

    sid: str
    data: dict[str, Any]
    absolute_left: float | None


def check_device(device: object) -> Device | None:
    """Return ``device`` as a store records it: ``None``, or a ``Device`` whose user agent
    is cut to ``MAX_USER_AGENT`` characters. Raises ``InvalidOption`` for anything else
    (not a ``Device``; an ip or user agent that is not a str or ``None``; an ip longer
    than ``MAX_IP`` characters)."""
    if device is None:
        return None
    if not isinstance(device, Device):
        raise InvalidOption("device", device, "None or a lembro.Device")
    ip, agent = device.ip, device.user_agent
    if ip is not None and (type(ip) is not str or len(ip) > MAX_IP):
        raise InvalidOption("device.ip", ip, f"None or a str of at most {MAX_IP} characters")
    if agent is not None and type(agent) is not str:
        raise InvalidOption("device.user_agent", agent, "None or a str")
    if agent is not None and len(agent) > MAX_USER_AGENT:
        return Device(ip, agent[:MAX_USER_AGENT])
    return device


def check_grace(value: object, name: str = "grace") -> float:
    """Return ``value`` as a finite number of seconds, 0 or more, or raise ``InvalidOption``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(name, value, "a finite number of seconds, 0 or more")
    if not 0 <= value < math.inf:
        raise InvalidOption(name, value, "a finite number of seconds, 0 or more")
    return float(value)


def check_max_sessions(value: object, owner_key: str | None) -> int | None:
    """Return ``max_sessions_per_user`` if it is ``None`` or a positive int on a store
    with ``owner_key``; raise ``InvalidOption`` otherwise."""
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidOption("max_sessions_per_user", value, "None or a positive int")
    if owner_key is None:
        raise InvalidOption(
            "max_sessions_per_user", value, "a store built with owner_key='...' as well"
        )
    return value
