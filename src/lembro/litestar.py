"""Litestar: a bounded, self-purging store for its server-side sessions, and a session config
that keeps lembro's hygiene.

``LembroStore`` implements Litestar's ``Store`` interface (``NamespacedStore``: get with
``renew_for``, set, delete, delete_all, exists, expires_in, with_namespace) on a lembro
store: a ``MemoryStore`` (capped, purged in the background, flood-resistant) or a
``RedisStore``. Litestar stores bytes and lembro's stores hold dicts, so each value is kept
as a one-key record: ``{"s": text}`` when the bytes are UTF-8 (Litestar's sessions are JSON,
so they always are), else ``{"b": bytes}`` (msgpack and pickle carry bytes; the json
serializer refuses them with ``SerializationError``). The record also holds the value's
expiry, which ``expires_in`` reports. The bytes come back exactly as they went in; the
store never parses them, so it serves Litestar's other uses of a store (response cache,
rate limits) as well as sessions.

``LembroSessionConfig`` is Litestar's ``ServerSideSessionConfig`` with a backend that never
adopts an id it did not issue, stores no empty session, writes a loaded session back only
over a live record (a logout in another request is never undone) and, on a lembro store
with ``update``, only the keys whose bytes changed (a session is kept a key at a time, see
``_PART``), so overlapping requests keep each other's changes; moves a session to a
new id on :func:`regenerate` (at login) only if its old record was still there, in one
store operation (``rename``), and sends ``Vary: Cookie`` wherever the session was read or
written.

On a lembro store built with ``owner_key=``, a session's record also carries its owner (the
session's field of that name), so :func:`logout_everywhere` can end a user's sessions.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

try:
    from litestar.datastructures import Cookie, MutableScopeHeaders
    from litestar.middleware.session.server_side import (
        ServerSideSessionBackend,
        ServerSideSessionConfig,
    )
    from litestar.stores.base import NamespacedStore
    from litestar.types import Empty
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("lembro.litestar needs Litestar: pip install 'lembro[litestar]'") from e

from ._changes import PLAIN
from ._cookies import (
    REJECTED,
    _lifetime_options,
    _takes,
    acreate,
    cookie_max_age,
    is_current_owner,
    store_absolute_ttl,
)
from .checks import check_owner, owner_of
from .clients import client_device, trusted_networks
from .errors import InvalidOption, SerializationError
from .ids import is_session_id, new_session_id, redact
from .memory import MemoryStore
from .protocol import AsyncSessionStore, SessionStore, _supports, as_async

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.stores.base import Store
    from litestar.types import Message, ScopeSession
    from typing_extensions import Self

    from .lifetimes import Device

__all__ = [
    "LembroSessionBackend",
    "LembroSessionConfig",
    "LembroStore",
    "logout_everywhere",
    "regenerate",
]

log = logging.getLogger("lembro")

# Separators no namespace may contain: a key is <namespace path><_KEY><key>, a namespace
# path is its names joined by _CHILD; so a namespace's own keys and its children's are
# told apart by prefix, and a key may hold any character.
_CHILD = "\x1f"


def _escape(text: str) -> str:
    """``text`` without ':' (Redis stores keep it out of ids: it ends their prefix), as a
    one-to-one map ('%' is escaped first), character by character, so a namespace's
    escaped name still begins its keys' and its children's escaped names."""
    return text.replace("%", "%25").replace(":", "%3A")


_KEY = "\x1e"
# The fields of a record; an owner field of the lembro store must be none of them.
_RECORD_FIELDS = frozenset({"s", "b", "x"})
# A session the backend writes is kept a key at a time, so that a request writes back only
# the keys it changed (the lembro store's update): the record field _PART + key holds that
# key alone as a JSON object, '{"key":value}' in Litestar's encoding; the value the record
# answers is those objects joined into one. An owner field must not begin with it.
_PART = "="


def _seconds(value: int | float | timedelta | None) -> float | None:
    """Litestar's ``expires_in`` / ``renew_for`` as seconds; None or 0: no expiry (as
    Litestar's own stores read a falsy value)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InvalidOption("expires_in", value, "a positive number of seconds or a timedelta")
    return float(value)


class LembroStore(NamespacedStore):
    """Litestar's ``Store`` on a lembro store.

    ``store``: a ``MemoryStore`` (default: ``MemoryStore("4M")``), a ``RedisStore``, or any
    ``SessionStore`` / ``AsyncSessionStore`` (sync stores are reached through
    :func:`lembro.as_async`, so the event loop never waits on a blocking one).
    ``namespace``: keys live under it (Litestar's stores default to ``"LITESTAR"``);
    :meth:`with_namespace` makes a child, and :meth:`delete_all` deletes a namespace and its
    children, and with ``namespace=None`` everything in ``store``. ``clock``: wall-clock
    seconds, for the expiry ``expires_in`` reports (inject a fake one in tests, the same
    one the ``MemoryStore`` is given).

    A value set without an expiry is kept as long as the lembro store's ``ttl`` (lembro
    bounds every record) and ``expires_in`` reports ``-1`` for it, as Litestar's contract
    says of a value "set without an expiry". The cap and the purge are the lembro store's.

    A session the lembro store renews (``renew_every``) keeps its namespace: its new id is
    one this store makes under it (the store's ``load(new_id=)``). A store of the app's
    whose ``load`` renews without taking ``new_id`` can renew only with ``namespace=None``
    (``InvalidOption`` otherwise).
    """

    __slots__ = ("_bare_renewals", "_clock", "_loads", "_new_ids", "_owner_key", "_store")

    def __init__(
        self,
        store: SessionStore | AsyncSessionStore | None = None,
        *,
        namespace: str | None = "LITESTAR",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if namespace is not None and (
            not isinstance(namespace, str)
            or not namespace
            or _CHILD in namespace
            or _KEY in namespace
        ):
            raise InvalidOption("namespace", namespace, "a non-empty str without \\x1e, \\x1f")
        if not callable(clock):
            raise InvalidOption("clock", clock, "a callable returning seconds")
        store = store if store is not None else MemoryStore("4M")
        owner_key = getattr(store, "owner_key", None)
        if owner_key in _RECORD_FIELDS or (
            isinstance(owner_key, str) and owner_key.startswith(_PART)
        ):
            raise InvalidOption(
                "owner_key", owner_key, "a field name other than 's', 'b', 'x', not starting '='"
            )
        loads = _supports(store, "load")
        # A renewal moves a session to the id the store's load(new_id=) makes: this store
        # asks for one under its namespace (only of a store that renews: a load that
        # never renews is spared making the callable), so it finds the session there
        # again. A store of the app's whose load takes no new_id renews to bare ids.
        renews = loads and getattr(store, "renew_every", None) is not None
        new_ids = renews and _takes(cast(Any, store).load, "new_id")
        bare = renews and not new_ids
        if bare and namespace is not None:
            raise InvalidOption(
                "namespace",
                namespace,
                "None on a store whose load renews ids without taking new_id=",
            )
        self._store = as_async(store)
        self._loads = loads
        self._new_ids = new_ids
        self._bare_renewals = bare
        self._owner_key: str | None = owner_key if isinstance(owner_key, str) else None
        self._clock = clock
        self.namespace = namespace

    # ---- keys and records ---------------------------------------------------------------

    def _key(self, key: str) -> str:
        key = _escape(key)
        return key if self.namespace is None else f"{_escape(self.namespace)}{_KEY}{key}"

    def _new_key(self) -> str:
        """The lembro store's id for a renewed session: a fresh session id (which needs no
        escaping) under this namespace."""
        return self._key(new_session_id())

    @property
    def owner_key(self) -> str | None:
        """The lembro store's ``owner_key``: the session field that names the user."""
        return self._owner_key

    def _record(
        self, value: str | bytes, expires: float | None, owner: str | None = None
    ) -> dict[str, Any]:
        if isinstance(value, str):
            record: dict[str, Any] = {"s": value, "x": expires}
        else:
            try:
                record = {"s": value.decode("utf-8"), "x": expires}
            except UnicodeDecodeError:
                record = {"b": bytes(value), "x": expires}
        owner_key = self.owner_key
        if owner is not None and owner_key is not None:
            record[owner_key] = owner
        return record

    @classmethod
    def _value(cls, record: dict[str, Any]) -> bytes:
        text = record.get("s")
        if text is not None:
            return cast(str, text).encode("utf-8")
        if "b" in record:
            return bytes(record["b"])
        return _joined(cls._parts(record) or {})

    @classmethod
    def _value_and_parts(cls, record: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
        """The record's bytes, and its parts when it is a session kept a key at a time."""
        parts = cls._parts(record)
        return (cls._value(record) if parts is None else _joined(parts)), parts

    def _session_record(
        self, parts: dict[str, str], expires: float | None, owner: str | None
    ) -> dict[str, Any]:
        """The record of a session kept a key at a time (see ``_PART``)."""
        record: dict[str, Any] = {"x": expires}
        owner_key = self.owner_key
        if owner is not None and owner_key is not None:
            record[owner_key] = owner
        for name, part in parts.items():
            record[_PART + name] = part
        return record

    @staticmethod
    def _parts(record: dict[str, Any]) -> dict[str, str] | None:
        """The keys of a session kept a key at a time, each as its JSON object; None for a
        record of one value (written whole, by ``set`` or before sessions were kept so)."""
        if "s" in record or "b" in record:
            return None
        return {field[1:]: part for field, part in record.items() if field[:1] == _PART}

    # ---- Litestar's Store -----------------------------------------------------------------

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        """Store ``value`` under ``key`` for ``expires_in`` seconds (an int or a timedelta;
        None: the lembro store's ttl, reported by :meth:`expires_in` as ``-1``)."""
        seconds = _seconds(expires_in)
        expires = None if seconds is None else self._clock() + seconds
        await self._store.set(self._key(key), self._record(value, expires), seconds)

    async def replace(
        self,
        key: str,
        value: str | bytes,
        expires_in: int | timedelta | None = None,
        *,
        owner: str | None = None,
        parts: dict[str, str] | None = None,
    ) -> bool:
        """As :meth:`set`, but only over a live value; returns whether it was written
        (lembro's write-back: a value deleted meanwhile is not brought back). ``owner``:
        the user the value (a session) belongs to, kept for :meth:`end_sessions_of`;
        ``parts``: the session a key at a time (see :meth:`set_session`), kept in place
        of ``value``, which is then not read."""
        seconds = _seconds(expires_in)
        expires = None if seconds is None else self._clock() + seconds
        record = (
            self._record(value, expires, owner)
            if parts is None
            else self._session_record(parts, expires, owner)
        )
        return await self._store.replace(self._key(key), record, seconds)

    async def set_session(
        self,
        key: str,
        value: bytes,
        expires_in: int,
        owner: str | None = None,
        parts: dict[str, str] | None = None,
        device: Device | None = None,
    ) -> None:
        """As :meth:`set`, for a session that belongs to ``owner`` (None: no one); with
        ``parts`` (each key of the session as its own JSON object), kept a key at a time
        (``value`` is then not read), so that :meth:`update_session` can write back only
        what a request changed;
        ``device``: the client it was created from, recorded by the lembro store."""
        seconds = _seconds(expires_in)
        expires = None if seconds is None else self._clock() + seconds
        record = (
            self._record(value, expires, owner)
            if parts is None
            else self._session_record(parts, expires, owner)
        )
        await acreate(self._store, self._key(key), record, seconds, device)

    async def get_session(
        self, key: str, renew_for: int | timedelta | None = None
    ) -> tuple[bytes, dict[str, str] | None] | None:
        """As :meth:`get`, with the session's keys as their JSON objects when it is kept a
        key at a time (else None with the bytes): what :meth:`update_session` compares."""
        record = await self._get_record(key, renew_for)
        if record is None:
            return None
        return self._value_and_parts(record)

    async def load_session(
        self, key: str, renew_for: int | timedelta | None = None
    ) -> tuple[str, bytes, dict[str, str] | None, float | None] | None:
        """The read a request makes: as :meth:`get_session`, through the lembro store's
        ``load`` where it has one, and with two more answers first and last: the key the
        session lives under from now on (another after a renewal: see
        :meth:`lembro.MemoryStore.load`), and the seconds left until its absolute end
        (``None``: no such end)."""
        if not self._loads:
            found = await self.get_session(key, renew_for)
            return None if found is None else (key, found[0], found[1], None)
        full = self._key(key)
        store = cast(Any, self._store)
        if self.namespace is None or not self._new_ids:
            loaded = await store.load(full)
        else:
            loaded = await store.load(full, new_id=self._new_key)
        if loaded is None:
            return None
        current, record, left = loaded
        if current != full:  # renewed, to an id under this namespace (see _new_key)
            key, full = current[len(self._key("")) :], current
        seconds = _seconds(renew_for)
        if seconds is not None:  # renew_on_access: one more step, only when asked
            await self._store.touch(full, seconds if record.get("x") is not None else None)
        return key, *self._value_and_parts(record), left

    async def update_session(
        self,
        key: str,
        changes: dict[str, str],
        deleted: list[str],
        expires_in: int,
        owner: str | None = None,
    ) -> bool:
        """Write back only what a request changed in a session kept a key at a time:
        ``changes`` (keys set, each as its JSON object) and ``deleted`` keys, applied to
        the record as it is then, with a new expiry and owner, in one step of the lembro
        store (its ``update``); whether the record was still there (a logout wins)."""
        seconds = _seconds(expires_in)
        fields: dict[str, Any] = {"x": None if seconds is None else self._clock() + seconds}
        gone = [_PART + name for name in deleted]
        owner_key = self.owner_key
        if owner_key is not None:
            if owner is None:
                gone.append(owner_key)
            else:
                fields[owner_key] = owner
        for name, part in changes.items():
            fields[_PART + name] = part
        updated: bool = await cast(Any, self._store).update(self._key(key), fields, gone, seconds)
        return updated

    async def rename_session(
        self,
        key: str,
        new_key: str,
        value: bytes,
        expires_in: int,
        owner: str | None = None,
        parts: dict[str, str] | None = None,
        *,
        reset_lifetime: bool = True,
        device: Device | None = None,
    ) -> bool:
        """Move the session under ``key`` to ``new_key`` with ``value`` (or ``parts``,
        kept as :meth:`set_session` keeps them), a regenerate; whether ``key``'s value
        was there (if not, nothing is written: a logout won). One
        ``rename`` on a lembro store that has it, so a failed write leaves the old value
        and a logout everywhere never falls between the two; else a delete then a set.
        ``reset_lifetime`` and ``device``: as :func:`lembro.litestar.regenerate` says."""
        seconds = _seconds(expires_in)
        expires = None if seconds is None else self._clock() + seconds
        record = (
            self._record(value, expires, owner)
            if parts is None
            else self._session_record(parts, expires, owner)
        )
        full, new_full = self._key(key), self._key(new_key)
        if _supports(self._store, "rename"):
            rename = cast(Any, self._store).rename
            options = _lifetime_options(rename, reset_lifetime, device)
            renamed: bool = await rename(full, new_full, record, seconds, **options)
            return renamed
        if not await self._store.destroy(full):
            return False
        await acreate(self._store, new_full, record, seconds, device)
        return True

    async def end_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every session of ``owner`` in the lembro store (the ``keep`` key spared);
        return how many ended. Raises ``InvalidOption`` on a store without ``owner_key``."""
        full = None if keep is None else self._key(keep)
        return await self._store.destroy_sessions_of(check_owner(owner), keep=full)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        """The bytes stored under ``key``, or None when absent or expired. With
        ``renew_for`` (seconds or a timedelta), a value that was set with an expiry gets a
        new one, ``renew_for`` from now; one set without keeps the lembro store's ttl, as
        Litestar says. On a lembro store with ``renew`` and ``time_left`` (``RedisStore``:
        one GETEX) the read and the renewal are one step, so a ``set`` racing it is never
        undone; on another, the record is written back with its new expiry."""
        record = await self._get_record(key, renew_for)
        return None if record is None else self._value(record)

    async def _get_record(
        self, key: str, renew_for: int | timedelta | None
    ) -> dict[str, Any] | None:
        """``key``'s record, renewed as :meth:`get` says."""
        seconds = _seconds(renew_for)
        full = self._key(key)
        if seconds is not None and _supports(self._store, "renew", "time_left"):
            store = cast(Any, self._store)
            renewed: dict[str, Any] | None = await store.renew(full, seconds)
            if renewed is None:
                return None
            if renewed.get("x") is None:  # set without an expiry: not renew_for's to change
                await store.touch(full)
            return renewed
        record = await self._store.get(full)
        if record is None:
            return None
        if seconds is not None and record.get("x") is not None:
            record["x"] = self._clock() + seconds
            await self._store.replace(full, record, seconds)
        return record

    async def delete(self, key: str) -> None:
        """Delete ``key``'s value; nothing when there is none."""
        await self._store.destroy(self._key(key))

    async def remove(self, key: str) -> bool:
        """Delete ``key``'s value and say whether a live one was there (a logout or a
        regenerate can tell that it ended the session, and was not beaten to it)."""
        return await self._store.destroy(self._key(key))

    async def delete_all(self) -> None:
        """Delete every value in this namespace and in its children (with ``namespace=None``:
        everything in the lembro store). It walks the store's sessions: meant for tests and
        admin, not for a request."""
        if self.namespace is None:
            await self._store.clear()
            return
        namespace = _escape(self.namespace)
        own, children = namespace + _KEY, namespace + _CHILD
        for full in list(await self._store.all()):
            if full.startswith((own, children)):
                await self._store.destroy(full)

    async def exists(self, key: str) -> bool:
        """Whether a live value is stored under ``key``."""
        return await self._store.contains(self._key(key))

    async def expires_in(self, key: str) -> int | None:
        """Whole seconds until ``key``'s value expires; ``-1`` when it was set without an
        expiry; None when there is no value."""
        record = await self._store.get(self._key(key))
        if record is None:
            return None
        expires = record.get("x")
        if expires is None:
            return -1
        if _supports(self._store, "renew", "time_left"):
            # A renewal moves the store's expiry and leaves the record's as it was.
            left: float | None = await cast(Any, self._store).time_left(self._key(key))
            return None if left is None else max(0, int(left))
        # Never -1 ("no expiry") for a value whose expiry is only just past.
        return max(0, int(cast(float, expires) - self._clock()))

    def with_namespace(self, namespace: str) -> Self:
        """A store on the same lembro store, in the child ``namespace`` of this one: its
        keys are apart from this one's; this one's :meth:`delete_all` deletes them too."""
        if (
            not isinstance(namespace, str)
            or not namespace
            or _CHILD in namespace
            or _KEY in namespace
        ):
            raise InvalidOption("namespace", namespace, "a non-empty str without \\x1e, \\x1f")
        child = namespace if self.namespace is None else f"{self.namespace}{_CHILD}{namespace}"
        new = type(self).__new__(type(self))
        if self._bare_renewals:
            raise InvalidOption(
                "namespace", namespace, "none on a store whose load renews ids without new_id="
            )
        new._store = self._store
        new._loads = self._loads
        new._new_ids = self._new_ids
        new._bare_renewals = self._bare_renewals
        new._owner_key = self._owner_key
        new._clock = self._clock
        new.namespace = child
        return new

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the lembro store (stops a ``MemoryStore``'s purge thread, writes its
        snapshot); Litestar calls this at shutdown for the stores it was given."""
        await self._store.close()


# ---- the session config ------------------------------------------------------------------

# Per-connection state, in the ASGI scope: the id this request may write under (one the
# store already held, or one lembro issued), and whether it loaded a record.
_SID = "lembro.sid"
_LOADED = "lembro.loaded"
_PARTS = "lembro.parts"
_REGENERATE = "lembro.regenerate"
_RESET_LIFETIME = "lembro.reset_lifetime"
# When the loaded session ends for good (time.monotonic() seconds), if it does.
_DEADLINE = "lembro.deadline"
_BACKEND = "lembro.backend"
# The session's values as loaded (see LembroSessionBackend._parts_of).
_VALUES = "lembro.values"
_GONE = object()


@functools.cache
def _cookie_fields(config: type[LembroSessionConfig]) -> tuple[str, ...]:
    """The fields of a session config class that Litestar passes on to its ``Cookie``: as
    ``extract_dataclass_items(config, include=Cookie.__dict__.keys())`` picks them."""
    return tuple(f.name for f in dataclasses.fields(config) if f.name in Cookie.__dict__)


def _cookie_params(config: LembroSessionConfig) -> dict[str, Any]:
    """The ``Cookie`` arguments ``config`` gives, those not ``None`` (what Litestar's
    backends read from their config at each response)."""
    params = {}
    for name in _cookie_fields(type(config)):
        value = getattr(config, name)
        if value is not None:
            params[name] = value
    return params


# The last session cookie rendered: its name and attributes, and the header's text before
# and after its value. A new one replaces it whole, so threads never see half of it.
_rendered: tuple[tuple[Any, ...], str, str] = ((), "", "")
_PLACEHOLDER = "lembroSessionIdPlaceholder"


def _session_cookie(key: str, sid: str, params: dict[str, Any]) -> str:
    """``Cookie(value=sid, key=key, **params).to_header(header="")``, rendered once for a
    name and attributes: each session id (of lembro's URL-safe shape, which a cookie never
    quotes) goes in between."""
    global _rendered
    # The types too: 60 and 60.0 are equal, but render as "60" and "60.0".
    attributes = (key, *params.items(), *map(type, params.values()))
    rendered = _rendered
    if rendered[0] != attributes:
        text = Cookie(value=_PLACEHOLDER, key=key, **params).to_header(header="")
        before, _, after = text.partition(_PLACEHOLDER)
        rendered = _rendered = (attributes, before, after)
    return rendered[1] + sid + rendered[2]


class _Session(dict[str, Any]):
    """The dict in ``scope["session"]``: ``accessed`` once anything reads or writes it, so
    ``Vary: Cookie`` is sent wherever the response may depend on the session."""

    __slots__ = ("accessed",)

    def __init__(self, data: dict[str, Any]) -> None:
        dict.__init__(self, data)
        self.accessed = False


def _noting_access(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def noted(self: _Session, *args: Any, **kwargs: Any) -> Any:
        self.accessed = True
        return method(self, *args, **kwargs)

    return noted


# Every dict method that reads or writes; dict(), ** and json read a subclass through them.
for _name in (
    "__contains__", "__delitem__", "__eq__", "__getitem__", "__ior__", "__iter__", "__len__",
    "__or__", "__setitem__", "clear", "copy", "get", "items", "keys", "pop", "popitem",
    "setdefault", "update", "values",
):  # fmt: skip
    setattr(_Session, _name, _noting_access(getattr(dict, _name)))


def _vary_on_cookie(headers: MutableScopeHeaders) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header, or add the header."""
    vary = headers.get("Vary")
    if vary is None or "cookie" not in vary.lower():
        headers.extend_header_value("Vary", "Cookie")


def regenerate(connection: ASGIConnection[Any, Any, Any, Any], reset_lifetime: bool = True) -> None:
    """Move this request's session to a new id when its response is sent, destroying the
    old record (call it at login). If the old record is already gone (a logout in another
    request), nothing is written and the cookie is left as that logout set it.

    ``reset_lifetime=True`` (the default) is a sign-in: the new id starts a new absolute
    lifetime (the lembro store's ``absolute_ttl`` from now). ``False`` is a change of
    privilege inside one sign-in: the session keeps the absolute end it had. The client's
    device is recorded on the new id either way."""
    connection.scope[_REGENERATE] = True  # type: ignore[literal-required]
    connection.scope[_RESET_LIFETIME] = reset_lifetime  # type: ignore[literal-required]
    session = connection.scope.get("session")
    if isinstance(session, _Session):
        session.accessed = True


class LembroSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side session backend with lembro's hygiene (see the module)."""

    config: LembroSessionConfig

    def generate_session_id(self) -> str:
        """A lembro session id: 256 random bits."""
        return new_session_id()

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        """The id this request's session lives under: the cookie's only if the store held
        a record for it when the request began; otherwise a new one, never the client's."""
        scope = cast(dict[str, Any], connection.scope)
        sid = scope.get(_SID)
        if sid is None:
            sid = scope[_SID] = self.generate_session_id()
        return cast(str, sid)

    async def load_from_connection(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> dict[str, Any]:
        """The session the cookie names, if the store holds it; else an empty one."""
        scope = cast(dict[str, Any], connection.scope)
        scope[_BACKEND] = self
        sid = connection.cookies.get(self.config.key)
        if sid and not is_session_id(sid):
            REJECTED.malformed += 1
        elif sid:
            store = self.config.get_store_from_app(scope["app"])
            parts: dict[str, str] | None = None
            try:
                if isinstance(store, LembroStore):
                    max_age = self.config.max_age
                    renew = int(max_age) if self.config.renew_on_access and max_age else None
                    # A websocket never renews: no response of its can carry the new id.
                    loaded = (
                        await store.load_session(sid, renew_for=renew)
                        if scope["type"] != "websocket"
                        else _no_renewal(sid, await store.get_session(sid, renew_for=renew))
                    )
                    data = None
                    if loaded is not None:
                        sid, data, parts, left = loaded  # sid: another after a renewal
                        if left is not None:
                            scope[_DEADLINE] = time.monotonic() + left
                else:
                    data = await self.get(sid, store=store)
            except SerializationError:
                log.warning("session %s cannot be read back; starting a new one", redact(sid))
                data = None
            if data is not None:
                scope[_SID] = sid
                scope[_LOADED] = True
                scope[_PARTS] = parts  # what a write-back compares with
                values = self.deserialize_data(data)
                if parts is not None:  # the values as loaded, to tell the unchanged ones
                    scope[_VALUES] = values
                return _Session(values)  # a dict of its own, of the same values
            REJECTED.unknown_id += 1
        return _Session({})

    async def store_in_message(
        self,
        scope_session: ScopeSession,
        message: Message,
        connection: ASGIConnection[Any, Any, Any, Any],
    ) -> None:
        """Write the session back and set the cookie, as Litestar does, except: an empty
        session that was never stored stores nothing and sets no cookie; a loaded session
        is written back only over its live record; a regenerate moves it to a new id only
        if the old record was still there (one ``rename``). ``Vary: Cookie`` goes wherever
        the session was read or written (a session the app replaced counts as written)."""
        scope = cast(dict[str, Any], connection.scope)
        store = self.config.get_store_from_app(scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        if not isinstance(scope_session, _Session) or scope_session.accessed:
            _vary_on_cookie(headers)
        cookie_params = _cookie_params(self.config)
        loaded = bool(scope.get(_LOADED))
        sid = self.get_session_id(connection)

        if scope_session is Empty or not scope_session:
            if loaded:  # emptied or cleared: end the session, clear the cookie
                await self.delete(sid, store=store)
                # Max-Age wins over Expires in a browser: the config's would keep the cookie.
                cookie_params["max_age"] = 0
                null = Cookie(value="null", key=self.config.key, expires=0, **cookie_params)
                headers.add("Set-Cookie", null.to_header(header=""))
            return

        session = cast(dict[str, Any], scope_session)
        expires_in = int(self.config.max_age)
        owner = _owner(store, session)
        # On a lembro store with update, a session is kept a key at a time: each key is
        # serialized alone, and a loaded session writes back only the keys whose bytes
        # changed, so concurrent requests keep each other's changes. On another store, the
        # whole session, and the last request wins.
        parts: dict[str, str] | None = None
        if isinstance(store, LembroStore) and _supports(store._store, "update"):
            parts = self._parts_of(session, scope)
            data = b""  # not read: a LembroStore given parts keeps them, not the bytes
        else:
            data = self.serialize_data(scope_session, scope)  # type: ignore[arg-type]
        if scope.get(_REGENERATE):
            new_sid = self.generate_session_id()
            reset = scope.get(_RESET_LIFETIME, True)
            device = self._device(connection)
            if not loaded:
                await _set(store, new_sid, data, expires_in, owner, parts, device)
                reset = True
            elif not await _rename(
                store, sid, new_sid, data, expires_in, owner, parts, reset, device
            ):
                return  # a logout won: never bring its session back under a new id
            sid = scope[_SID] = new_sid
            if reset:
                scope[_DEADLINE] = self._new_deadline(store)
        elif loaded:
            before = scope.get(_PARTS)
            if parts is not None and before is not None:
                assert isinstance(store, LembroStore)
                changes = {key: part for key, part in parts.items() if before.get(key) != part}
                deleted = [key for key in before if key not in parts]
                if not await store.update_session(sid, changes, deleted, expires_in, owner):
                    return  # ended by another request meanwhile: not brought back
            elif not await _replace(store, sid, data, expires_in, owner, parts):
                return  # ended by another request meanwhile: not brought back
        else:
            await _set(store, sid, data, expires_in, owner, parts, self._device(connection))
            scope[_DEADLINE] = self._new_deadline(store)
        deadline = scope.get(_DEADLINE)
        if deadline is not None:  # the cookie never outlives the session's absolute end
            cookie_params["max_age"] = cookie_max_age(
                self.config.max_age, deadline, time.monotonic()
            )
        headers.add("Set-Cookie", _session_cookie(self.config.key, sid, cookie_params))

    def _parts_of(self, session: dict[str, Any], scope: dict[str, Any]) -> dict[str, str]:
        """Each key of ``session`` as its own JSON object. A key that still holds the very
        value it was loaded with, one that cannot change in place (a str, a number...),
        keeps the text it was loaded from; every other key is serialized again."""
        values: dict[str, Any] = scope.get(_VALUES) or {}
        before: dict[str, str] = scope.get(_PARTS) or {}
        parts = {}
        for key, value in dict.items(session):
            part = before.get(key)
            if part is None or type(value) not in PLAIN or value is not values.get(key, _GONE):
                part = self.serialize_data({key: value}, scope).decode("utf-8")  # type: ignore[arg-type]
            parts[key] = part
        return parts

    def _device(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Device:
        """The client of ``connection`` (see :mod:`lembro.clients`)."""
        scope = cast(dict[str, Any], connection.scope)
        client = scope.get("client")
        return client_device(
            client[0] if client else None,
            scope.get("headers", ()),
            trusted_proxies=self.config.trusted_proxies,
            truncate=self.config.truncate_ip,
        )

    @staticmethod
    def _new_deadline(store: Store) -> float | None:
        """When a session that starts now ends for good (``time.monotonic()`` seconds)."""
        inner = store._store if isinstance(store, LembroStore) else None
        absolute = store_absolute_ttl(inner)
        return None if absolute is None else time.monotonic() + absolute


def _joined(parts: dict[str, str]) -> bytes:
    """The bytes of a session kept a key at a time: each part is '{"key":value}'."""
    return ("{" + ",".join(part[1:-1] for part in parts.values()) + "}").encode("utf-8")


def _no_renewal(
    key: str, found: tuple[bytes, dict[str, str] | None] | None
) -> tuple[str, bytes, dict[str, str] | None, float | None] | None:
    """What :meth:`LembroStore.get_session` found, in :meth:`LembroStore.load_session`'s
    shape: the same key, no absolute end known."""
    return None if found is None else (key, found[0], found[1], None)


async def _remove(store: Store, key: str) -> bool:
    """Delete ``key``; whether a live value was there (on any Litestar store: a
    ``LembroStore`` answers in one call, another store with ``exists`` first)."""
    if isinstance(store, LembroStore):
        return await store.remove(key)
    existed = await store.exists(key)
    await store.delete(key)
    return existed


async def _rename(
    store: Store,
    key: str,
    new_key: str,
    data: bytes,
    expires_in: int,
    owner: str | None,
    parts: dict[str, str] | None = None,
    reset_lifetime: bool = True,
    device: Device | None = None,
) -> bool:
    """Move ``key``'s session to ``new_key``; whether ``key``'s value was there (a
    ``LembroStore`` does it in one store operation, another store removes then sets)."""
    if isinstance(store, LembroStore):
        return await store.rename_session(
            key,
            new_key,
            data,
            expires_in,
            owner,
            parts,
            reset_lifetime=reset_lifetime,
            device=device,
        )
    if not await _remove(store, key):
        return False
    await store.set(new_key, data, expires_in=expires_in)
    return True


def _owner(store: Store, session: dict[str, Any]) -> str | None:
    """The owner of ``session`` when ``store`` indexes sessions by owner, else None.
    Raises ``SerializationError`` for an owner field that is not a str or an int."""
    owner_key = store.owner_key if isinstance(store, LembroStore) else None
    return None if owner_key is None else owner_of(session, owner_key)


async def _set(
    store: Store,
    key: str,
    data: bytes,
    expires_in: int,
    owner: str | None,
    parts: dict[str, str] | None = None,
    device: Device | None = None,
) -> None:
    if isinstance(store, LembroStore):
        await store.set_session(key, data, expires_in, owner, parts, device)
    else:
        await store.set(key, data, expires_in=expires_in)


async def _replace(
    store: Store,
    key: str,
    data: bytes,
    expires_in: int,
    owner: str | None = None,
    parts: dict[str, str] | None = None,
) -> bool:
    """Write ``data`` over ``key``'s live value only; whether it was written."""
    if isinstance(store, LembroStore):
        return await store.replace(key, data, expires_in, owner=owner, parts=parts)
    if not await store.exists(key):
        return False
    await store.set(key, data, expires_in=expires_in)
    return True


async def logout_everywhere(
    connection: ASGIConnection[Any, Any, Any, Any], owner: str | int, keep_current: bool = True
) -> int:
    """End every session of ``owner``; return how many ended.

    The session store must be a :class:`LembroStore` on a lembro store built with
    ``owner_key=`` (the session field that names the user, e.g. ``"user_id"``); owners
    compare as strings. With ``keep_current`` (the default: "sign out my other devices")
    this request's session is kept; with ``keep_current=False`` it ends too when it is
    ``owner``'s, and is cleared, so the response clears its cookie. Raises
    ``InvalidOption`` for a bad owner or a store without ``owner_key``, ``RuntimeError``
    without :class:`LembroSessionConfig`'s middleware or a ``LembroStore``.
    """
    name = check_owner(owner)
    scope = cast(dict[str, Any], connection.scope)
    backend = scope.get(_BACKEND)
    if not isinstance(backend, LembroSessionBackend):
        raise RuntimeError("logout_everywhere() needs LembroSessionConfig's middleware")
    store = backend.config.get_store_from_app(scope["app"])
    if not isinstance(store, LembroStore):
        raise RuntimeError("logout_everywhere() needs a LembroStore as the session store")
    keep = scope.get(_SID) if keep_current and scope.get(_LOADED) else None
    ended = await store.end_sessions_of(name, keep=keep)
    session = scope.get("session")
    if not keep_current and isinstance(session, dict) and is_current_owner(store, session, name):
        connection.clear_session()  # an emptied session clears its cookie
    return ended


@dataclass
class LembroSessionConfig(ServerSideSessionConfig):
    """Litestar's ``ServerSideSessionConfig`` (same fields: ``key``, ``max_age``,
    ``secure``, ``samesite``, ``store`` naming the app's store...) with lembro's backend.
    Give the app a ``LembroStore`` under the name in ``store`` (default ``"sessions"``).

    Lifetimes (``absolute_ttl``, ``renew_every``, ``renew_grace``,
    ``max_sessions_per_user``) are the lembro store's: build it with them. The cookie's
    ``Max-Age`` never outlives a session's absolute end, and a renewed id is sent as a
    new cookie (the session stays in the ``LembroStore``'s namespace). Two more
    fields, for the device recorded with each session: ``trusted_proxies`` (the networks
    of the app's reverse proxies, whose ``X-Forwarded-For`` is believed) and
    ``truncate_ip`` (keep the /24 or /48 of the IP)."""

    _backend_class = LembroSessionBackend

    trusted_proxies: Sequence[str] = field(default=())
    """Networks of the app's reverse proxies, e.g. ``("127.0.0.1/32", "10.0.0.0/8")``."""
    truncate_ip: bool = field(default=False)
    """Keep only the /24 (IPv4) or /48 (IPv6) of the IP recorded with a session."""

    def __post_init__(self) -> None:
        super().__post_init__()
        trusted_networks(self.trusted_proxies)  # a bad network is an error at start
