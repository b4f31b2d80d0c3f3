"""Argument checks every store shares: lifetimes in seconds, session ids, owners."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidOption, SerializationError

__all__ = [
    "apply_changes",
    "check_changes",
    "check_owner",
    "check_owner_key",
    "check_seconds",
    "check_session_id",
    "made_id",
    "owner_of",
]


def check_seconds(value: object, name: str = "ttl") -> float:
    """Return ``value`` as a positive, finite number of seconds, or raise ``InvalidOption``."""
    if (type(value) is float or type(value) is int) and 0 < value <= _MOST_SECONDS:
        return float(value)  # what the integrations pass on every write
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 < value <= _MOST_SECONDS)
    ):
        raise InvalidOption(name, value, "a positive finite number of seconds")
    return float(value)


# The largest float: an int above it has no float (float() would raise OverflowError).
_MOST_SECONDS = sys.float_info.max


def check_session_id(sid: object) -> str:
    """Return ``sid`` if it is a non-empty ``str``, or raise ``InvalidOption``."""
    if not isinstance(sid, str) or not sid:
        raise InvalidOption("session id", sid, "a non-empty str")
    return sid


def made_id(new_id: Callable[[], str], old: str) -> str:
    """The id ``new_id()`` makes for a renewal of session ``old`` (see the stores'
    ``load``); raises ``InvalidOption`` for one that is not a non-empty ``str`` other
    than ``old``."""
    made = new_id()
    if not isinstance(made, str) or not made or made == old:
        raise InvalidOption("new_id", made, "a callable returning a fresh non-empty str id")
    return made


def check_owner_key(value: object) -> str | None:
    """Return ``value`` (the session field that names the signed-in user) if it is
    ``None`` or a non-empty ``str``, or raise ``InvalidOption``."""
    if value is None or (isinstance(value, str) and value):
        return value
    raise InvalidOption("owner_key", value, "None or a non-empty str naming a session field")


def _owner_name(value: object) -> str | None:
    # Exact types only: True is not 1, and a str subclass may print as someone else.
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return None


def check_owner(owner: object) -> str:
    """Return the owner ``owner`` names, as the str that owner values compare by
    (``42`` and ``"42"`` are one owner), or raise ``InvalidOption``."""
    name = _owner_name(owner)
    if name is None:
        raise InvalidOption("owner", owner, "a str or an int (not a bool)")
    return name


def owner_of(data: dict[str, Any], owner_key: str) -> str | None:
    """The owner of session ``data``: its ``owner_key`` field as a str (an int in decimal),
    or ``None`` when the field is absent or ``None``.

    Raises ``SerializationError`` for any other type (a bool, a float, bytes, a subclass):
    owners compare as strings, and ``True`` must not be the user ``"True"``.
    """
    value = data.get(owner_key)
    if value is None:
        return None
    name = _owner_name(value)
    if name is None:
        raise SerializationError(
            f"session field {owner_key!r} names the owner and holds a "
            f"{type(value).__name__}; an owner must be a str or an int"
        )
    return name


def check_changes(changes: object, deleted: object) -> tuple[str, ...]:
    """Check an ``update``'s arguments (``changes`` a dict, ``deleted`` an iterable of
    keys, not a str) and return the keys to delete as a tuple; raise ``InvalidOption``
    before anything changes."""
    if type(changes) is dict and (type(deleted) is list or type(deleted) is tuple):
        return tuple(deleted)  # what the integrations pass
    if not isinstance(changes, dict):
        raise InvalidOption("changes", changes, "a dict of the top-level keys set")
    if isinstance(deleted, (list, tuple)):
        return tuple(deleted)
    if isinstance(deleted, (str, bytes)) or not isinstance(deleted, Iterable):
        raise InvalidOption("deleted", deleted, "an iterable of the top-level keys deleted")
    return tuple(deleted)


def apply_changes(data: dict[str, Any], changes: dict[str, Any], deleted: tuple[str, ...]) -> None:
    """Apply an ``update`` to ``data`` (the session as it is now), in place: ``changes``
    set, then ``deleted`` removed (a key in both ends up deleted)."""
    data.update(changes)
    for key in deleted:
        data.pop(key, None)
