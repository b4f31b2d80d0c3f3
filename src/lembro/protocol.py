"""The store contract the framework integrations rely on, sync and async.

Every store (``MemoryStore``, ``RedisStore``, ``AsyncRedisStore``) keeps sessions as
``dict`` values under string ids, with a lifetime in seconds. Integrations talk only to
these methods, never to a store's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
    runtime_checkable,
)

from .errors import InvalidOption
from .lifetimes import Device, Loaded, SessionInfo

__all__ = ["AsyncSessionStore", "SessionStore", "Stats", "as_async"]


@dataclass(frozen=True)
class Stats:
    """A store's counters at one moment.

    ``sessions`` live sessions; ``size`` and ``max_size`` in bytes (``max_size`` is
    ``None`` where the backend bounds memory itself, as Redis's ``maxmemory`` does);
    ``hits`` and ``misses`` of ``get``; ``expired`` sessions removed because their
    lifetime ended; ``evicted`` live sessions removed to stay under ``max_size``;
    ``purges`` runs of the expiry purge.

    Counters since the store was made (on Redis, of what this process did through it and
    its ``as_async()`` twin): ``created`` sessions (a ``set`` of an id not held, on Redis
    any ``set``, and each ``rename``'s new id not held, a renewal's included); live sessions
    ended by ``destroy``, ``destroy_session_of``, ``max_sessions_per_user`` or as a
    stolen cookie (``logouts``), by ``rename`` (``regenerates``: the old id) and by
    ``destroy_sessions_of`` (``logouts_everywhere``); ``unavailable`` operations that
    failed because Redis did not answer. ``signed_in_users``: the owners with sessions
    (``None`` without ``owner_key``; on Redis, the owner sets, which outlive their last
    session by one ``ttl``). The defaults keep stores written before these fields
    working; ``lembro.metrics`` exports them all.
    """

    sessions: int
    size: int
    max_size: int | None
    hits: int
    misses: int
    expired: int
    evicted: int
    purges: int
    created: int = 0
    logouts: int = 0
    regenerates: int = 0
    logouts_everywhere: int = 0
    unavailable: int = 0
    signed_in_users: int | None = None


@runtime_checkable
class SessionStore(Protocol):
    """A synchronous session store.

    ``set`` writes whether or not the session exists; ``replace`` writes only over a live
    session and says whether it did (one round trip where a backend can, so a session
    destroyed meanwhile by a logout is never written back); ``touch`` moves only the expiry;
    ``destroy`` says whether it removed a live session.

    ``sessions_of(owner)`` lists the ids of the live sessions whose ``owner_key`` field
    names ``owner``, most recently used first, and ``destroy_sessions_of(owner, keep)``
    ends them all but ``keep`` and says how many it ended; a store built without
    ``owner_key`` raises ``InvalidOption`` from both. Every lembro store has them; type
    checkers require them of any store. ``isinstance`` checks only the methods that serve
    a request, so a store written before these two still serves sessions (and the two
    raise ``InvalidOption`` through :func:`as_async`).

    Two more operations every lembro store has, and a store of the app's may lack (it is
    then used without them):

    - ``renew(sid, ttl=None) -> dict | None``: a fresh copy of session ``sid`` whose
      lifetime is set to ``ttl`` seconds from now (default: the store's ``ttl``), or
      ``None`` when absent; one step that no write can come between (a ``get`` then a
      ``touch`` in one, so a ``set`` racing it is never undone), a hit or a miss as
      ``get``, and a use of the session for its owner's index as ``touch``. Raises
      ``InvalidOption`` for a bad ``ttl`` before anything changes.
    - ``time_left(sid) -> float | None``: the seconds until session ``sid`` ends, or
      ``None`` when absent; neither a hit nor a miss.
    - ``rename(old, new, data, ttl=None) -> bool``: a regenerate as one operation. When
      ``old`` is a live session, it is removed and ``data`` stored under ``new`` (a fresh
      id) for ``ttl`` seconds, with ``new`` joining its owner's index in the same step,
      and the answer is ``True``; when ``old`` is absent (a logout won the race), or a
      ``destroy_sessions_of`` is ending its owner's sessions and ``data`` names that
      owner, nothing is written and the answer is ``False``. Whatever fails
      (``SerializationError``, ``SessionTooLarge``, ``StoreUnavailable``) leaves ``old``
      as it was and raises: the user keeps the old session or gets the new one, never
      neither.

    - ``update(sid, changes, deleted=(), ttl=None) -> bool``: what a request that
      changed some keys writes back. The top-level keys of ``changes`` are set and
      those of ``deleted`` removed (after ``changes``) in the session as it is when the
      write lands, in one step, and the session gets a new lifetime of ``ttl`` seconds;
      keys neither names keep what other requests wrote meanwhile. ``False``, and
      nothing written, when ``sid`` is absent: a destroyed session is never recreated.
      With no change, only the lifetime moves. Checks as ``set`` does
      (``InvalidOption``, ``SerializationError``, ``SessionTooLarge`` raise before
      anything changes); with ``owner_key`` the owner field may change, and the owner's
      index follows. A request should send only the keys it set, deleted or changed in
      place (compare each key's serialized value with what it loaded), never the whole
      session: a key it only read would undo another request's write of it.

    Lifetimes and devices (issue 29), on every lembro store; a store of the app's may
    lack them, and the integrations then use ``get`` and record no device:

    - ``load(sid) -> Loaded | None``: the read a request makes, in one store step, a hit
      or a miss as ``get``. It follows an id replaced by a renewal to its session during
      its grace; treats an id replaced longer ago than its grace as a stolen cookie (the
      session it was replaced by is ended, one WARNING is logged with its owner and never
      an id, and the answer is ``None``); with the store's ``renew_every``, moves a
      session whose id was issued longer ago than that to a fresh id, keeping its
      lifetimes (its old id answers as it for ``renew_grace`` seconds); and notes the use
      as its last seen (Redis: when the one stored is a minute old or more).
      ``Loaded.sid`` is the id to use from now on (set the cookie when it differs from
      ``sid``), ``Loaded.absolute_left`` the seconds to its absolute end (``None``: the
      store has no ``absolute_ttl``). ``get`` follows an alias in its grace and treats a
      replaced id after it as stolen too, without renewing. lembro's stores also take
      ``load(sid, new_id=...)``: a callable that makes the renewed id (default
      ``lembro.ids.new_session_id``), for a caller that keeps its ids under a prefix
      (Litestar's namespaces) and must find a renewed session under it again.
    - ``rename(old, new, data, ttl=None, *, reset_lifetime=True, grace=0.0,
      device=None)``: ``reset_lifetime=True`` is a sign-in (the new id starts a new
      absolute lifetime); ``False`` a privilege change or renewal inside one sign-in (the
      session keeps its creation time, so its absolute end stays). ``grace`` seconds
      (0: none): ``old`` answers as the session for that long, then marks a stolen cookie
      until the session ends; ``destroy(old)`` during the grace ends the session.
      ``device``: recorded for the session (else the one it had is kept).
    - ``set(sid, data, ttl=None, *, device=None)``: ``device`` is recorded when the set
      creates the session. ``update`` follows an alias in its grace.
    - ``session_info(sid) -> SessionInfo | None``: one store read, neither a hit nor a
      miss; ``sessions_of(owner, info=True)``: each of the owner's sessions as a
      ``SessionInfo``, most recently used first.
    - ``destroy_session_of(owner, sid) -> bool``: ends ``sid`` only if its owner is
      ``owner`` (one device's "sign out"), counted as a logout.

    No use, touch or write moves a session's expiry past its absolute end (its creation
    plus the store's ``absolute_ttl``), and ``time_left`` reports the earlier of the two.

    Litestar's ``get(renew_for=...)`` uses ``renew`` and ``time_left`` (and a ``get``
    then a ``replace`` on a store without them); every integration's regenerate uses
    ``rename`` (a ``destroy`` then a ``set`` on a store without it, which a failed write
    or a logout everywhere can come between); Flask's, Starlette's, Django's and
    Litestar's write-back of a loaded session uses ``update`` (a ``replace`` of the whole
    session on a store without it: then the last request to finish wins).
    """

    @property
    def ttl(self) -> float:
        """The default lifetime of a session, in seconds."""

    def get(self, sid: str) -> dict[str, Any] | None: ...
    def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None: ...
    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool: ...
    def touch(self, sid: str, ttl: float | None = None) -> bool: ...
    def destroy(self, sid: str) -> bool: ...
    def all(self) -> dict[str, dict[str, Any]]: ...
    def clear(self) -> None: ...
    def purge(self) -> int: ...
    def stats(self) -> Stats: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, sid: object) -> bool: ...

    if TYPE_CHECKING:  # members for type checkers only: see the class docstring

        @overload
        def sessions_of(self, owner: str | int, *, info: Literal[False] = False) -> list[str]: ...
        @overload
        def sessions_of(self, owner: str | int, *, info: Literal[True]) -> list[SessionInfo]: ...
        @overload
        def sessions_of(self, owner: str | int, *, info: bool) -> list[str] | list[SessionInfo]: ...
        def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int: ...
        def destroy_session_of(self, owner: str | int, sid: str) -> bool: ...
        def load(self, sid: str) -> Loaded | None: ...
        def session_info(self, sid: str) -> SessionInfo | None: ...
        def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None: ...
        def time_left(self, sid: str) -> float | None: ...
        def rename(
            self,
            old: str,
            new: str,
            data: dict[str, Any],
            ttl: float | None = None,
            *,
            reset_lifetime: bool = True,
            grace: float = 0.0,
            device: Device | None = None,
        ) -> bool: ...
        def update(
            self,
            sid: str,
            changes: dict[str, Any],
            deleted: Iterable[str] = (),
            ttl: float | None = None,
        ) -> bool: ...


@runtime_checkable
class AsyncSessionStore(Protocol):
    """The same contract with coroutine methods, for ASGI apps."""

    @property
    def ttl(self) -> float:
        """The default lifetime of a session, in seconds."""

    async def get(self, sid: str) -> dict[str, Any] | None: ...
    async def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None: ...
    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool: ...
    async def touch(self, sid: str, ttl: float | None = None) -> bool: ...
    async def destroy(self, sid: str) -> bool: ...
    async def all(self) -> dict[str, dict[str, Any]]: ...
    async def clear(self) -> None: ...
    async def purge(self) -> int: ...
    async def stats(self) -> Stats: ...
    async def close(self) -> None: ...
    async def length(self) -> int: ...
    async def contains(self, sid: str) -> bool: ...

    if TYPE_CHECKING:  # members for type checkers only, as in SessionStore

        @overload
        async def sessions_of(
            self, owner: str | int, *, info: Literal[False] = False
        ) -> list[str]: ...
        @overload
        async def sessions_of(
            self, owner: str | int, *, info: Literal[True]
        ) -> list[SessionInfo]: ...
        @overload
        async def sessions_of(
            self, owner: str | int, *, info: bool
        ) -> list[str] | list[SessionInfo]: ...
        async def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int: ...
        async def destroy_session_of(self, owner: str | int, sid: str) -> bool: ...
        async def load(self, sid: str) -> Loaded | None: ...
        async def session_info(self, sid: str) -> SessionInfo | None: ...
        async def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None: ...
        async def time_left(self, sid: str) -> float | None: ...
        async def rename(
            self,
            old: str,
            new: str,
            data: dict[str, Any],
            ttl: float | None = None,
            *,
            reset_lifetime: bool = True,
            grace: float = 0.0,
            device: Device | None = None,
        ) -> bool: ...
        async def update(
            self,
            sid: str,
            changes: dict[str, Any],
            deleted: Iterable[str] = (),
            ttl: float | None = None,
        ) -> bool: ...


class _InlineAsync:
    """An async face for a store whose calls never block (``MemoryStore``: microseconds, no I/O)."""

    def __init__(self, store: SessionStore) -> None:
        self.sync = store

    @property
    def ttl(self) -> float:
        return self.sync.ttl

    async def get(self, sid: str) -> dict[str, Any] | None:
        return self.sync.get(sid)

    async def load(self, sid: str, *, new_id: Callable[[], str] | None = None) -> Loaded | None:
        method = _optional_method(self.sync, "load")
        # new_id only when given: a store of the app's may not take it
        loaded: Loaded | None = method(sid) if new_id is None else method(sid, new_id=new_id)
        return loaded

    async def session_info(self, sid: str) -> SessionInfo | None:
        found: SessionInfo | None = _optional_method(self.sync, "session_info")(sid)
        return found

    async def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None:
        if device is None:  # a store of the app's may not take one
            self.sync.set(sid, data, ttl)
        else:
            self.sync.set(sid, data, ttl, device=device)

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        return self.sync.replace(sid, data, ttl)

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        return self.sync.touch(sid, ttl)

    async def destroy(self, sid: str) -> bool:
        return self.sync.destroy(sid)

    @overload
    async def sessions_of(self, owner: str | int, *, info: Literal[False] = False) -> list[str]: ...
    @overload
    async def sessions_of(self, owner: str | int, *, info: Literal[True]) -> list[SessionInfo]: ...
    @overload
    async def sessions_of(
        self, owner: str | int, *, info: bool
    ) -> list[str] | list[SessionInfo]: ...

    async def sessions_of(
        self, owner: str | int, *, info: bool = False
    ) -> list[str] | list[SessionInfo]:
        method = _owner_method(self.sync, "sessions_of")
        found: list[str] | list[SessionInfo] = method(owner, info=True) if info else method(owner)
        return found

    async def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        ended: int = _owner_method(self.sync, "destroy_sessions_of")(owner, keep)
        return ended

    async def destroy_session_of(self, owner: str | int, sid: str) -> bool:
        ended: bool = _owner_method(self.sync, "destroy_session_of")(owner, sid)
        return ended

    async def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        data: dict[str, Any] | None = _optional_method(self.sync, "renew")(sid, ttl)
        return data

    async def time_left(self, sid: str) -> float | None:
        left: float | None = _optional_method(self.sync, "time_left")(sid)
        return left

    async def rename(
        self,
        old: str,
        new: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        reset_lifetime: bool = True,
        grace: float = 0.0,
        device: Device | None = None,
    ) -> bool:
        method = _optional_method(self.sync, "rename")
        options = _rename_options(reset_lifetime, grace, device)
        renamed: bool = method(old, new, data, ttl, **options)
        return renamed

    async def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        updated: bool = _optional_method(self.sync, "update")(sid, changes, deleted, ttl)
        return updated

    async def all(self) -> dict[str, dict[str, Any]]:
        return self.sync.all()

    async def clear(self) -> None:
        self.sync.clear()

    async def purge(self) -> int:
        return self.sync.purge()

    async def stats(self) -> Stats:
        return self.sync.stats()

    async def close(self) -> None:
        self.sync.close()

    async def length(self) -> int:
        return len(self.sync)

    async def contains(self, sid: str) -> bool:
        return sid in self.sync


class _ThreadAsync(_InlineAsync):
    """An async face for a blocking store: each call runs in a worker thread."""

    async def get(self, sid: str) -> dict[str, Any] | None:
        return await _in_thread(self.sync.get, sid)

    async def load(self, sid: str, *, new_id: Callable[[], str] | None = None) -> Loaded | None:
        method = _optional_method(self.sync, "load")
        if new_id is None:
            loaded: Loaded | None = await _in_thread(method, sid)
        else:
            loaded = await _in_thread(method, sid, new_id=new_id)
        return loaded

    async def session_info(self, sid: str) -> SessionInfo | None:
        method = _optional_method(self.sync, "session_info")
        found: SessionInfo | None = await _in_thread(method, sid)
        return found

    async def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None:
        if device is None:  # a store of the app's may not take one
            await _in_thread(self.sync.set, sid, data, ttl)
        else:
            await _in_thread(self.sync.set, sid, data, ttl, device=device)

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        return await _in_thread(self.sync.replace, sid, data, ttl)

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        return await _in_thread(self.sync.touch, sid, ttl)

    async def destroy(self, sid: str) -> bool:
        return await _in_thread(self.sync.destroy, sid)

    @overload
    async def sessions_of(self, owner: str | int, *, info: Literal[False] = False) -> list[str]: ...
    @overload
    async def sessions_of(self, owner: str | int, *, info: Literal[True]) -> list[SessionInfo]: ...
    @overload
    async def sessions_of(
        self, owner: str | int, *, info: bool
    ) -> list[str] | list[SessionInfo]: ...

    async def sessions_of(
        self, owner: str | int, *, info: bool = False
    ) -> list[str] | list[SessionInfo]:
        method = _owner_method(self.sync, "sessions_of")
        found: list[str] | list[SessionInfo]
        if info:
            found = await _in_thread(method, owner, info=True)
        else:
            found = await _in_thread(method, owner)
        return found

    async def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        method = _owner_method(self.sync, "destroy_sessions_of")
        ended: int = await _in_thread(method, owner, keep)
        return ended

    async def destroy_session_of(self, owner: str | int, sid: str) -> bool:
        method = _owner_method(self.sync, "destroy_session_of")
        ended: bool = await _in_thread(method, owner, sid)
        return ended

    async def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        method = _optional_method(self.sync, "renew")
        data: dict[str, Any] | None = await _in_thread(method, sid, ttl)
        return data

    async def time_left(self, sid: str) -> float | None:
        method = _optional_method(self.sync, "time_left")
        left: float | None = await _in_thread(method, sid)
        return left

    async def rename(
        self,
        old: str,
        new: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        reset_lifetime: bool = True,
        grace: float = 0.0,
        device: Device | None = None,
    ) -> bool:
        method = _optional_method(self.sync, "rename")
        options = _rename_options(reset_lifetime, grace, device)
        renamed: bool = await _in_thread(method, old, new, data, ttl, **options)
        return renamed

    async def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        method = _optional_method(self.sync, "update")
        updated: bool = await _in_thread(method, sid, changes, deleted, ttl)
        return updated

    async def all(self) -> dict[str, dict[str, Any]]:
        return await _in_thread(self.sync.all)

    async def clear(self) -> None:
        await _in_thread(self.sync.clear)

    async def purge(self) -> int:
        return await _in_thread(self.sync.purge)

    async def stats(self) -> Stats:
        return await _in_thread(self.sync.stats)

    async def close(self) -> None:
        await _in_thread(self.sync.close)

    async def length(self) -> int:
        return await _in_thread(len, self.sync)

    async def contains(self, sid: str) -> bool:
        return await _in_thread(self.sync.__contains__, sid)


def _rename_options(reset_lifetime: bool, grace: float, device: Device | None) -> dict[str, Any]:
    """The keywords of a ``rename`` that differ from its defaults: a store of the app's
    written before them still takes a plain ``rename``."""
    options: dict[str, Any] = {}
    if reset_lifetime is not True:
        options["reset_lifetime"] = reset_lifetime
    if grace != 0.0:
        options["grace"] = grace
    if device is not None:
        options["device"] = device
    return options


def _owner_method(store: object, name: str) -> Any:
    """``store``'s method ``name`` (``sessions_of``, ``destroy_sessions_of`` or
    ``destroy_session_of``), or ``InvalidOption`` for a store that predates them."""
    method = getattr(store, name, None)
    if not callable(method):
        raise InvalidOption(
            "store", store, f"a store with {name}() (MemoryStore or RedisStore with owner_key)"
        )
    return method


def _optional_method(store: object, name: str) -> Any:
    """``store``'s optional operation ``name`` (``renew``, ``time_left``, ``rename``,
    ``update``, ``load`` or ``session_info``), or ``InvalidOption`` for a store without
    it (ask :func:`_supports` first)."""
    method = getattr(store, name, None)
    if not callable(method):
        raise InvalidOption("store", store, f"a store with {name}()")
    return method


def _supports(store: object, *names: str) -> bool:
    """Whether ``store`` (or the store behind an async face) has every optional
    operation in ``names``."""
    inner = store.sync if isinstance(store, _InlineAsync) else store
    return all(callable(getattr(inner, name, None)) for name in names)


def as_async(store: SessionStore | AsyncSessionStore) -> AsyncSessionStore:
    """Return an async face for ``store`` that never blocks the event loop.

    An async store is returned as is; a store with an ``as_async()`` method (``RedisStore``)
    gives its async twin; a store that declares ``blocking = False`` (``MemoryStore``) is
    called inline; any other sync store runs in a worker thread.
    """
    if isinstance(store, AsyncSessionStore):
        return store
    twin = getattr(store, "as_async", None)
    if callable(twin):
        result: AsyncSessionStore = twin()
        return result
    if getattr(store, "blocking", True) is False:
        return _InlineAsync(store)
    return _ThreadAsync(store)


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def _in_thread(func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread``, with asyncio imported when first awaited: an app that awaits
    has it already, and ``import lembro`` must not pull it in (it imports logging, which
    registers an exit hook)."""
    import asyncio

    return await asyncio.to_thread(func, *args, **kwargs)
