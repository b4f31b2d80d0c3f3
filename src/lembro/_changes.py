"""What one request changed in its session: the top-level keys it set, deleted, or changed
in place, for the store's ``update`` (issue 28).

A session an integration loads holds the very value objects of the dict the store
returned (which no one else shares), and that dict is kept as it was loaded. A key whose
value is another object now was assigned; a key gone was deleted. A container (a list, a
dict...) can change without any assignment, so the first time the app is handed one, that
key's value is fingerprinted (:func:`lembro.serializers.fingerprint`), and compared again
at the end. Nothing depends on ``session.modified``; a request that only read plain values
does no work here, and one that read containers fingerprints only those.
"""

from __future__ import annotations

from typing import Any

from .serializers import fingerprint

__all__ = ["PLAIN", "changed_inside", "changes_of", "fingerprint_key"]

# Values that cannot change in place: a session never needs to fingerprint them.
PLAIN = frozenset({str, int, float, bool, type(None), bytes})

_MISSING = object()


def fingerprint_key(key: str, value: Any) -> object:
    """The fingerprint of one top-level key's value, as a session of that key alone."""
    return fingerprint({key: value})


def changed_inside(data: dict[str, Any], before: dict[str, object] | None) -> bool:
    """Whether a value handed out (fingerprinted in ``before``) has changed since."""
    if not before:
        return False
    return any(
        fingerprint_key(key, dict.__getitem__(data, key)) != then
        for key, then in before.items()
        if dict.__contains__(data, key)
    )


def changes_of(
    data: dict[str, Any], loaded: dict[str, Any], before: dict[str, object] | None
) -> tuple[dict[str, Any], list[str]]:
    """What ``data`` (the session at the end of the request) changed from ``loaded`` (what
    the store gave it): the keys set (new, assigned another object, or a container handed
    out and changed since ``before`` fingerprinted it) with their values, and the keys
    deleted. Read through ``dict``'s own methods, so a session class's bookkeeping is not
    touched."""
    # Another object was assigned (or the key is new): an identity test per key, which
    # is all most requests need; only the containers handed out are encoded again.
    was = loaded.get
    changes = {key: value for key, value in dict.items(data) if value is not was(key, _MISSING)}
    if before:
        for key, then in before.items():
            if key not in changes and dict.__contains__(data, key):
                value = dict.__getitem__(data, key)
                if fingerprint_key(key, value) != then:
                    changes[key] = value
    kept = dict.keys(data)
    if kept >= loaded.keys():  # nothing deleted: one comparison, without a list
        return changes, []
    return changes, [key for key in loaded if key not in kept]
