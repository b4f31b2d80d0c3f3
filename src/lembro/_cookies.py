"""What the Flask and Starlette integrations share: the session id in and out of the cookie,
regenerate-if-still-there, and whether the current session is a given user's (the
integrations' ``logout_everywhere``, Litestar's too).

The cookie value is ``<id>.<tag>``: the 43-character id (256 random bits, see
:mod:`lembro.ids`) and a 43-character tag, the keyed BLAKE2b-256 hash of the id (URL-safe
base64, no padding) under a key derived once from the app's secret key with
HMAC-SHA256(secret, "lembro.session-id"). The id alone is already unguessable; the tag
lets a request with a cookie this server did not sign be refused without asking the
store, and ties ids to the secret key, so rotating the key ends every session. Older
keys, given as fallbacks, are still accepted, and a cookie signed with one is signed anew
with the current key.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from .checks import owner_of
from .errors import SerializationError
from .ids import new_session_id
from .protocol import _InlineAsync, _supports

if TYPE_CHECKING:
    from .lifetimes import Device
    from .protocol import AsyncSessionStore, SessionStore

__all__ = [
    "MAX_COOKIE_LENGTH",
    "REJECTED",
    "VERIFIED_CACHE_SIZE",
    "CookieSigner",
    "RejectedCookies",
    "store_absolute_ttl",
    "acreate",
    "aregenerate",
    "cookie_max_age",
    "cookie_value",
    "create",
    "is_current_owner",
    "regenerate",
]

#: Length of a signed cookie value: 43 (id) + 1 + 43 (tag).
_SIGNED_LENGTH = 87
#: Anything longer than this is not ours; checked before any hashing, so a flood of huge
#: cookies costs a length comparison each.
MAX_COOKIE_LENGTH = _SIGNED_LENGTH
#: How many verified cookie values a signer remembers (about 300 bytes each).
VERIFIED_CACHE_SIZE = 256


class RejectedCookies:
    """Session cookies refused in this process, by reason, for :mod:`lembro.metrics`:
    ``malformed`` (not the shape of a session cookie), ``bad_signature`` (the shape, but
    no key of ours signed it) and ``unknown_id`` (a valid id the store does not hold: it
    expired, was evicted or logged out). Plain int increments on the paths that refuse:
    a cookie that verifies costs nothing more."""

    __slots__ = ("bad_signature", "malformed", "unknown_id")

    def __init__(self) -> None:
        self.bad_signature = self.malformed = self.unknown_id = 0


#: The process's count of refused session cookies, kept by every integration.
REJECTED = RejectedCookies()


def _derive(secret: str | bytes, salt: bytes) -> bytes:
    """The signing key for ``secret``: HMAC-SHA256(secret, salt), so the app's secret key
    itself never signs anything and different salts give unrelated keys."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.digest(secret, salt, "sha256")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _tag(keyed: Any, message: bytes) -> bytes:
    """The keyed hash of ``message`` (``keyed``: a BLAKE2b object holding the key), as 43
    URL-safe base64 characters (no padding)."""
    hasher = keyed.copy()  # the key is absorbed once; a copy costs less than re-keying
    hasher.update(message)
    return binascii.b2a_base64(hasher.digest(), newline=False)[:-1].translate(_URLSAFE)


class CookieSigner:
    """Signs session ids into cookie values and verifies them back, with key rotation.

    ``secret`` signs; each of ``fallbacks`` (older secrets) still verifies. ``salt`` keeps
    these signatures apart from anything else signed with the same secret. Keys are
    derived once, here; signing and verifying an id cost one BLAKE2b hash per key tried.

    The last ``VERIFIED_CACHE_SIZE`` values that verified are remembered, so a client's
    next request with the same cookie costs a dict lookup, not a hash: a value is only
    ever remembered after its tag verified, under these same keys (a signer's keys never
    change), so the answer is the one the hash would give. Values that fail are not
    remembered: a flood of forged cookies cannot fill it.
    """

    __slots__ = ("_keys", "_verified")

    def __init__(
        self,
        secret: str | bytes,
        fallbacks: Iterable[str | bytes] = (),
        *,
        salt: bytes = b"lembro.session-id",
    ) -> None:
        if not secret:
            raise ValueError("a secret key is needed to sign session ids")
        self._keys = tuple(
            hashlib.blake2b(key=_derive(key, salt), digest_size=32)
            for key in (secret, *fallbacks)
            if key
        )
        self._verified: dict[str, tuple[str, bool]] = {}

    def sign(self, sid: str) -> str:
        """The cookie value for session id ``sid``."""
        return f"{sid}.{_tag(self._keys[0], sid.encode('ascii')).decode('ascii')}"

    def unsign(self, value: str) -> tuple[str | None, bool]:
        """``(id, resign)`` from a cookie value: the id, or ``None`` when the value is not
        one this signer made; ``resign`` is true when an older key made it.

        Any string a client sends is safe here: nothing raises.
        """
        # Only the shape is checked before the hash: an id whose tag verifies is one this
        # server made, and so a well-formed one. The length first, before anything hashes
        # the value (the cache's lookup does).
        if len(value) != _SIGNED_LENGTH or value[43] != "." or not value.isascii():
            REJECTED.malformed += 1
            return None, False
        known = self._verified.get(value)
        if known is not None:
            return known
        raw = value.encode("ascii")
        message, tag = raw[:43], raw[44:]
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(_tag(key, message), tag):
                verified = value[:43], index > 0
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.clear()  # simple, and safe while other threads read it
                self._verified[value] = verified
                return verified
        REJECTED.bad_signature += 1
        return None, False


def cookie_value(header: str, name: str, *, last: bool = False) -> str | None:
    """The value of the cookie ``name`` in a ``Cookie`` header, or ``None``: the first of
    several (as werkzeug's ``request.cookies.get``) or, with ``last``, the last (as
    Starlette's ``request.cookies``). Values are not unquoted: a signed id never is quoted.

    Cheaper than parsing every cookie the request carries, which is all a session needs.
    """
    if ";" not in header:  # one cookie: the header is that cookie
        key, _, value = header.partition("=")
        return value.strip() if key.strip() == name else None
    found = None
    for chunk in header.split(";"):
        key, _, value = chunk.partition("=")
        if key.strip() == name:
            found = value.strip()
            if not last:
                return found
    return found


def _takes(method: Any, name: str) -> bool:
    """Whether ``method`` accepts the keyword argument ``name`` (lembro's stores do; a
    store of the app's written before it may not), looked up once per class. The async
    face of a sync store passes it on: the sync store's own method is asked."""
    face = getattr(method, "__self__", None)
    if isinstance(face, _InlineAsync):
        method = getattr(face.sync, method.__name__, method)
    owner = type(getattr(method, "__self__", method))
    key = (owner, getattr(method, "__name__", ""), name)
    known = _TAKES.get(key)
    if known is None:
        try:
            parameters = inspect.signature(method).parameters
        except (TypeError, ValueError):  # no signature to read: call it as before
            known = False
        else:
            known = name in parameters or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
            )
        _TAKES[key] = known
    return known


_TAKES: dict[tuple[type, str, str], bool] = {}


def _lifetime_options(method: Any, reset_lifetime: bool, device: Device | None) -> dict[str, Any]:
    """The keyword arguments of a ``rename`` call that ``method`` takes."""
    options: dict[str, Any] = {}
    if not reset_lifetime or _takes(method, "reset_lifetime"):
        # reset_lifetime=False is never dropped silently: a store without it raises.
        options["reset_lifetime"] = reset_lifetime
    if device is not None and _takes(method, "device"):
        options["device"] = device
    return options


def create(
    store: SessionStore,
    sid: str,
    data: dict[str, Any],
    ttl: float | None = None,
    device: Device | None = None,
) -> None:
    """Store a new session ``sid``, with the ``device`` it was created from where the
    store records one."""
    if device is not None and _takes(store.set, "device"):
        cast(Any, store).set(sid, data, ttl, device=device)
    else:
        store.set(sid, data, ttl)


async def acreate(
    store: AsyncSessionStore,
    sid: str,
    data: dict[str, Any],
    ttl: float | None = None,
    device: Device | None = None,
) -> None:
    """:func:`create` for an async store."""
    if device is not None and _takes(store.set, "device"):
        await cast(Any, store).set(sid, data, ttl, device=device)
    else:
        await store.set(sid, data, ttl)


def regenerate(
    store: SessionStore,
    old_sid: str,
    data: dict[str, Any],
    ttl: float | None = None,
    *,
    reset_lifetime: bool = True,
    device: Device | None = None,
) -> str | None:
    """Move ``data`` from ``old_sid`` to a new id; return the new id, or ``None`` when the
    old record was already gone (a logout in another request won: nothing is written).

    One ``rename`` where the store has it (every lembro store): the old record goes and
    the new one comes in one step, so a failed write leaves the old session, and a logout
    everywhere never falls between the two. On a store without it, the old record is
    destroyed first, so that no moment has the session under both ids, and ``destroy``'s
    answer says whether it was still there. ``reset_lifetime`` and ``device`` go to the
    store's ``rename`` (see :meth:`lembro.MemoryStore.rename`).
    """
    sid = new_session_id()
    rename = getattr(store, "rename", None)
    if callable(rename):
        options = _lifetime_options(rename, reset_lifetime, device)
        return sid if rename(old_sid, sid, data, ttl, **options) else None
    if not store.destroy(old_sid):
        return None
    create(store, sid, data, ttl, device)
    return sid


async def aregenerate(
    store: AsyncSessionStore,
    old_sid: str,
    data: dict[str, Any],
    ttl: float | None = None,
    *,
    reset_lifetime: bool = True,
    device: Device | None = None,
) -> str | None:
    """:func:`regenerate` for an async store."""
    sid = new_session_id()
    if _supports(store, "rename"):
        rename = cast(Any, store).rename
        options = _lifetime_options(rename, reset_lifetime, device)
        renamed: bool = await rename(old_sid, sid, data, ttl, **options)
        return sid if renamed else None
    if not await store.destroy(old_sid):
        return None
    await acreate(store, sid, data, ttl, device)
    return sid


def store_absolute_ttl(store: object) -> float | None:
    """The store's ``absolute_ttl`` (seconds a session lives from its sign-in at most), or
    ``None`` for none or a store without one."""
    if isinstance(store, _InlineAsync):  # an async face of a sync store
        store = store.sync
    value = getattr(store, "absolute_ttl", None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def cookie_max_age(max_age: float | None, deadline: float | None, now: float) -> int | None:
    """The ``Max-Age`` (whole seconds) of a session cookie whose session ends for good at
    ``deadline`` (``time.monotonic()`` seconds; ``None`` for no absolute end): ``max_age``
    or less, rounded down, so the cookie never outlives the session. ``None`` keeps a
    browser-session cookie (no ``max_age``) one: it ends when the browser closes, and the
    server refuses it after the deadline."""
    if max_age is None:
        return None
    if deadline is None:
        return int(max_age)
    return max(0, min(int(max_age), int(deadline - now)))


def is_current_owner(store: object, data: Mapping[str, Any], owner: str) -> bool:
    """Whether the session ``data`` (the current request's) belongs to ``owner``, as the
    owner field of ``store`` (its ``owner_key``) names it; false for a store without one."""
    owner_key = getattr(store, "owner_key", None)
    if not isinstance(owner_key, str):
        return False
    try:
        return owner_of(dict(data), owner_key) == owner
    except SerializationError:  # an owner field of the wrong type names no one
        return False
