"""Argument checks every store shares: lifetimes in seconds, and session ids."""

from __future__ import annotations

import math

from .errors import InvalidOption

__all__ = ["check_seconds", "check_session_id"]


def check_seconds(value: object, name: str = "ttl") -> float:
    """Return ``value`` as a positive, finite number of seconds, or raise ``InvalidOption``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise InvalidOption(name, value, "a positive finite number of seconds")
    return float(value)


def check_session_id(sid: object) -> str:
    """Return ``sid`` if it is a non-empty ``str``, or raise ``InvalidOption``."""
    if not isinstance(sid, str) or not sid:
        raise InvalidOption("session id", sid, "a non-empty str")
    return sid
