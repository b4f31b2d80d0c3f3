"""aiohttp: a storage for aiohttp-session that keeps sessions in a lembro store.

``aiohttp_session.setup(app, LembroStorage(secret_key=...))`` and ``get_session(request)``
work as with aiohttp-session's own storages; the data stays on the server, in a
``MemoryStore`` (capped, purged in the background) unless ``store=`` names another (a
``RedisStore`` when the app runs as several processes). The cookie carries only a 256-bit
session id signed with ``secret_key`` (keyed BLAKE2b, see :mod:`lembro._cookies`), so an id
this server did not issue is refused without asking the store, and never adopted.

Beyond aiohttp-session's storages: :func:`regenerate` moves a session to a new id at login
(and ``aiohttp_session.new_session(request)`` destroys the record it replaces), and
:func:`logout_everywhere` ends every session of a user. ``Vary: Cookie`` goes out wherever
the session was read. Values come back as the store's serializer gives them: exactly, or
refused with ``SerializationError`` (see :mod:`lembro.serializers`).

Concurrency: each request loads its own copy of the session and writes back only the
top-level keys it set, deleted or changed in place (a list appended to, a nested dict
edited, with or without ``session.changed()``), applied to the stored session as it is
then (the store's ``update``). So two concurrent requests of one session that change
different keys both keep their change; of two that change one key, the later write wins;
a key one deletes is not brought back by another that only read it. A store without
``update`` gets the whole session, and the last request to finish wins. A destroy wins
over all: a session destroyed meanwhile (a logout or a regenerate in another request) is
not written back, and that request sets no cookie.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

try:
    from aiohttp import web
    from aiohttp_session import STORAGE_KEY, AbstractStorage, Session, get_session
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("lembro.aiohttp needs aiohttp-session: pip install 'lembro[aiohttp]'") from e

from ._changes import PLAIN, changed_inside, changes_of, fingerprint_key
from ._cookies import (
    REJECTED,
    CookieSigner,
    acreate,
    aregenerate,
    cookie_max_age,
    cookie_value,
    is_current_owner,
    store_absolute_ttl,
)
from .checks import check_owner
from .clients import TrustedProxies, client_device, trusted_networks
from .errors import InvalidOption, SerializationError
from .ids import new_session_id, redact
from .memory import MemoryStore
from .protocol import AsyncSessionStore, SessionStore, _InlineAsync, _supports, as_async

if TYPE_CHECKING:
    from .lifetimes import Device

__all__ = [
    "AIOHTTP_SECURITY_OWNER_KEY",
    "LembroSession",
    "LembroStorage",
    "logout_everywhere",
    "regenerate",
]

log = logging.getLogger("lembro")

#: The session field aiohttp-security's ``SessionIdentityPolicy`` keeps the signed-in
#: user's identity in: the ``owner_key`` of the ``MemoryStore`` built when no store is given.
AIOHTTP_SECURITY_OWNER_KEY = "AIOHTTP_SECURITY"


def _request_key(name: str, kind: type) -> Any:
    """A key of the request's mapping: a ``web.RequestKey`` where aiohttp has them (it
    warns about str keys), else the str."""
    make = getattr(web, "RequestKey", None)
    return name if make is None else make(name, kind)


# Per-request state, in the request's mapping.
_SID = _request_key("lembro.sid", str)  # the id the cookie named and the store held
_COOKIE = _request_key("lembro.cookie", str)  # that cookie, re-sent as is (None: sign anew)
_LOADED = _request_key("lembro.session", Session)  # the session load_session returned
_REGENERATE = _request_key("lembro.regenerate", bool)
_RESET_LIFETIME = _request_key("lembro.reset_lifetime", bool)
# When the loaded session ends for good (time.monotonic() seconds), if it does.
_DEADLINE = _request_key("lembro.deadline", float)


class LembroSession(Session):
    """aiohttp-session's ``Session``, as this storage hands it out.

    aiohttp-session saves a session only when it reports a change; this one always does,
    so that the storage sees every response of a request that used the session (for
    ``Vary: Cookie``), and writes to the store only what really changed: the keys set,
    deleted, or changed in place. The first time a list, dict or other container is
    handed out, that key's bytes are kept, and compared with what it holds when the
    response is saved, so ``session["cart"].append(x)`` is written without ``changed()``.
    """

    _modified = False
    # What the store gave, kept as loaded (the values are the session's own objects), and
    # each container handed out: its key's fingerprint, taken before it was.
    _loaded: dict[str, Any] = {}  # noqa: RUF012 - only read: a loaded session gets its own
    _before: dict[str, object] | None = None

    def __getitem__(self, key: str) -> Any:
        # get, pop, setdefault, items and values all read through here.
        value = self._mapping[key]
        if type(value) not in PLAIN:
            before = self._before
            if before is None:
                before = self._before = {}
            if key not in before:
                before[key] = fingerprint_key(key, value)
        return value

    @property
    def _changed(self) -> bool:
        return True

    @_changed.setter
    def _changed(self, value: bool) -> None:
        self._modified = value

    @property
    def modified(self) -> bool:
        """Whether the session was written (``session[k] = v``, ``del``, ``changed()``,
        ``invalidate()``) since it was loaded."""
        return self._modified

    def changed_inside(self) -> bool:
        """Whether a container handed out has changed since (always false if none was)."""
        return changed_inside(self._mapping, self._before)


class LembroStorage(AbstractStorage):
    """An aiohttp-session storage on a lembro ``store``.

    ``store``: a ``MemoryStore``, a ``RedisStore``, or any ``SessionStore`` /
    ``AsyncSessionStore`` (sync stores are reached through :func:`lembro.as_async`, so the
    event loop never waits on a blocking one); default: a ``MemoryStore("4M")`` whose
    records live ``max_age`` seconds (a day without it), with ``owner_key``
    :data:`AIOHTTP_SECURITY_OWNER_KEY`. ``secret_key`` signs the session ids in cookies;
    ``secret_key_fallbacks`` (older keys) still verify, and a cookie signed with one is
    signed anew with ``secret_key``.

    The cookie: ``cookie_name``, ``domain``, ``path``, ``httponly`` and ``samesite``
    (``"Lax"`` by default here), ``secure`` (set it when served over HTTPS) and
    ``max_age`` (seconds; ``None``, the default, ends the cookie with the browser
    session). A record lives ``max_age`` seconds (``session.max_age`` if the app set it;
    the store's ``ttl`` without either) after its last use: each request that loads a
    session renews it, and with ``max_age`` each write sends the cookie again (a cookie
    that ends with the browser is sent only when its id is new or signed anew).

    Lifetimes (issue 29): ``absolute_ttl``, ``renew_every``, ``renew_grace`` and
    ``max_sessions_per_user`` configure the ``MemoryStore`` built when no store is given
    (a store given keeps its own; giving both is an ``InvalidOption``). The cookie's
    ``Max-Age`` never outlives a session's absolute end, and a renewed id is sent as a
    new cookie. Devices: ``trusted_proxies`` (the networks of the app's reverse proxies,
    whose ``X-Forwarded-For`` is believed) and ``truncate_ip`` (keep the /24 or /48 of the
    IP recorded with a session).

    Errors: a cookie that is missing, malformed, badly signed, unknown or expired, and a
    stored record that no longer deserializes, all give a fresh, empty session. A store
    that cannot be reached raises ``lembro.StoreUnavailable`` from ``get_session``; data
    the store cannot serialize raises ``lembro.SerializationError`` when the response is
    saved. Either is a 500 unless the app handles it.
    """

    def __init__(
        self,
        store: SessionStore | AsyncSessionStore | None = None,
        *,
        secret_key: str | bytes,
        secret_key_fallbacks: Sequence[str | bytes] = (),
        cookie_name: str = "AIOHTTP_SESSION",
        domain: str | None = None,
        max_age: int | None = None,
        path: str = "/",
        secure: bool = False,
        httponly: bool = True,
        samesite: str | None = "Lax",
        absolute_ttl: float | None = None,
        renew_every: float | None = None,
        renew_grace: float | None = None,
        max_sessions_per_user: int | None = None,
        trusted_proxies: TrustedProxies = (),
        truncate_ip: bool = False,
    ) -> None:
        if not secret_key or not isinstance(secret_key, (str, bytes)):
            raise InvalidOption("secret_key", secret_key, "a non-empty str or bytes")
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0
        ):
            raise InvalidOption("max_age", max_age, "None or a positive int of seconds")
        super().__init__(
            cookie_name=cookie_name,
            domain=domain,
            max_age=max_age,
            path=path,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )
        lifetimes: dict[str, Any] = {
            name: value
            for name, value in (
                ("absolute_ttl", absolute_ttl),
                ("renew_every", renew_every),
                ("renew_grace", renew_grace),
                ("max_sessions_per_user", max_sessions_per_user),
            )
            if value is not None
        }
        if store is not None and lifetimes:
            name = next(iter(lifetimes))
            raise InvalidOption(name, lifetimes[name], "None with store= (set it on the store)")
        self._trusted = trusted_networks(trusted_proxies)
        self._truncate_ip = bool(truncate_ip)
        self._owns_store = store is None
        if store is None:
            store = MemoryStore(
                "4M",
                ttl=float(max_age or 86400),
                owner_key=AIOHTTP_SECURITY_OWNER_KEY,
                **lifetimes,
            )
        elif not isinstance(store, (SessionStore, AsyncSessionStore)):
            raise InvalidOption("store", store, "a lembro SessionStore or AsyncSessionStore")
        self.store: SessionStore | AsyncSessionStore = store
        self._store = as_async(store)
        self._renews = _supports(self._store, "renew")
        # The read a request makes: load (which may renew the id) where the store has it.
        self._loads = _supports(store, "load")
        self._absolute_ttl = store_absolute_ttl(store)
        # Whether a loaded session writes back only what it changed (see the module):
        # asked of the store given, as the async face of a sync store has every method.
        self._updates = _supports(store, "update")
        self.signer = CookieSigner(secret_key, secret_key_fallbacks)

    async def close(self) -> None:
        """Close what this storage opened: the ``MemoryStore`` it built when given no
        store (its purge thread stops), the connections of a store's async face (a
        ``RedisStore``'s async twin). A store given stays open, the app's to close. Call
        it when the app stops: ``app.on_cleanup.append(lambda app: storage.close())``."""
        face = self._store
        if self._owns_store or (face is not self.store and not isinstance(face, _InlineAsync)):
            await face.close()

    def _cookie(self, request: web.Request) -> str | None:
        """The session cookie's value, read from the ``Cookie`` header without parsing
        every cookie the request carries."""
        header = request.headers.get("Cookie")
        return cookie_value(header, self.cookie_name) if header else None

    async def new_session(self) -> LembroSession:
        return LembroSession(None, data=None, new=True, max_age=self.max_age)

    async def load_session(self, request: web.Request) -> LembroSession:
        """The session the request's cookie names, if the store holds it; else a new one."""
        session = await self._load(request)
        request[_LOADED] = session
        return session

    async def _load(self, request: web.Request) -> LembroSession:
        cookie = self._cookie(request)
        if not cookie:
            return await self.new_session()
        sid, resign = self.signer.unsign(cookie)
        if sid is None:
            return await self.new_session()
        current, left = sid, None
        try:
            if self._loads:
                loaded = await cast(Any, self._store).load(sid)
                data: dict[str, Any] | None = None
                if loaded is not None:
                    current, data, left = loaded  # current: another id after a renewal
                    if self._renews:  # each use slides the record's life, as renew does
                        await self._store.touch(current, self.max_age)
            elif self._renews:
                data = await self._store.renew(sid, self.max_age)
            else:
                data = await self._store.get(sid)
        except SerializationError as e:
            await self._discard(sid, e)
            return await self.new_session()
        if not data:
            if data is None:
                REJECTED.unknown_id += 1
            return await self.new_session()
        if set(map(type, data)) != {str}:
            await self._discard(sid, TypeError("stored session is not a dict of str keys"))
            return await self.new_session()
        request[_SID] = current
        request[_COOKIE] = None if resign or current != sid else cookie
        if left is not None:
            request[_DEADLINE] = time.monotonic() + left
        state = {"session": data, "created": int(time.time())}
        session = LembroSession(current, data=state, new=False, max_age=self.max_age)  # type: ignore[arg-type]
        session._loaded = data
        return session

    async def _discard(self, sid: str, error: Exception) -> None:
        """Drop a record that cannot be loaded, so it costs one warning, not a 500 each time."""
        log.warning("discarding corrupt session %s: %s", redact(sid), error)
        await self._store.destroy(sid)

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        """Write back what changed, and set or delete the cookie to match."""
        _vary_on_cookie(response)
        loaded = request.get(_LOADED)
        regenerate = request.pop(_REGENERATE, False)
        if isinstance(session, LembroSession):
            # Written through the session's methods, or a container handed out and changed.
            changed = session.modified or session.changed_inside()
            # Read as a plain dict: nothing is handed out.
            data = dict(session._mapping)
        else:
            changed, data = True, dict(session)
        if session is loaded and not (changed or regenerate):
            # Only read: nothing to write, and no cookie to send unless an older key
            # signed it (signed anew, so it outlives that key).
            sid = request.get(_SID)
            if sid is not None and request.get(_COOKIE) is None:
                self._send(request, response, session, self.signer.sign(sid))
            return
        if changed and set(map(type, data)) - {str}:
            key = next(k for k in data if type(k) is not str)
            raise SerializationError(f"session key {key!r}: session keys must be str")
        ttl = None if session.max_age is None else float(session.max_age)

        if session is not loaded:
            # aiohttp_session.new_session() replaced the request's session: the record it
            # replaces is destroyed, whether or not the new one is ever written.
            old = request.get(_SID) if loaded is not None else self._cookie_sid(request)
            if old is not None:
                request.pop(_SID, None)
                await self._store.destroy(old)
            if not data:
                if old is not None:
                    self.save_cookie(response, "", max_age=session.max_age)
                return
            await self._create(request, response, session, data, ttl)
            return

        sid = request.get(_SID)
        if sid is None:  # a new session
            if data:
                await self._create(request, response, session, data, ttl)
            return
        if not data:  # emptied: end it
            await self._store.destroy(sid)
            self.save_cookie(response, "", max_age=session.max_age)
            return
        if regenerate:
            reset = request.pop(_RESET_LIFETIME, True)
            new_sid = await aregenerate(
                self._store, sid, data, ttl, reset_lifetime=reset, device=self.device(request)
            )
            if new_sid is None:  # logged out meanwhile: the logout wins
                self.save_cookie(response, "", max_age=session.max_age)
                return
            if reset:
                self._new_lifetime(request)
            self._send(request, response, session, self.signer.sign(new_sid))
            return
        if not await self._write_back(sid, session, data, ttl):
            return  # destroyed since it was loaded: it stays destroyed, no cookie
        cookie = request.get(_COOKIE)
        if cookie is not None and session.max_age is None:
            return  # the same id in a cookie that ends with the browser: nothing new to say
        self._send(request, response, session, cookie or self.signer.sign(sid))

    def device(self, request: web.Request) -> Device:
        """The client of ``request`` (see :func:`lembro.clients.client_device`)."""
        return client_device(
            request.remote,
            request.raw_headers,
            trusted_proxies=self._trusted,
            truncate=self._truncate_ip,
        )

    def _new_lifetime(self, request: web.Request) -> None:
        """The request's session starts now: it ends for good ``absolute_ttl`` from now."""
        absolute = self._absolute_ttl
        if absolute is None:
            request.pop(_DEADLINE, None)
        else:
            request[_DEADLINE] = time.monotonic() + absolute

    def _send(
        self, request: web.Request, response: web.StreamResponse, session: Session, value: str
    ) -> None:
        """Set the session cookie to ``value``: its ``Max-Age`` never past the session's
        absolute end."""
        deadline = request.get(_DEADLINE)
        max_age = session.max_age
        if deadline is not None:
            max_age = cookie_max_age(max_age, deadline, time.monotonic())
        self.save_cookie(response, value, max_age=max_age)

    async def _write_back(
        self, sid: str, session: Session, data: dict[str, Any], ttl: float | None
    ) -> bool:
        """Write a loaded session that changed back under ``sid``: only the keys it set,
        deleted or changed in place, through the store's ``update`` (the whole session,
        ``data``, by ``replace`` on a store without it); whether the record was still
        there."""
        if not self._updates or not isinstance(session, LembroSession):
            return await self._store.replace(sid, data, ttl)
        changes, deleted = changes_of(session._mapping, session._loaded, session._before)
        return await self._store.update(sid, changes, deleted, ttl)

    async def _create(
        self,
        request: web.Request,
        response: web.StreamResponse,
        session: Session,
        data: dict[str, Any],
        ttl: float | None,
    ) -> None:
        sid = new_session_id()
        await acreate(self._store, sid, data, ttl, self.device(request))
        if session.new:
            session.set_new_identity(sid)
        self._new_lifetime(request)
        self._send(request, response, session, self.signer.sign(sid))

    def _cookie_sid(self, request: web.Request) -> str | None:
        """The session id the request's cookie carries, if this server signed it."""
        cookie = self._cookie(request)
        return self.signer.unsign(cookie)[0] if cookie else None


def _vary_on_cookie(response: web.StreamResponse) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header, or add the header."""
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Cookie"
    elif "cookie" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Cookie"


def _storage(request: web.Request, caller: str) -> LembroStorage:
    storage = request.get(STORAGE_KEY)
    if not isinstance(storage, LembroStorage):
        raise RuntimeError(f"{caller}() needs aiohttp_session.setup(app, LembroStorage(...))")
    return storage


async def regenerate(request: web.Request, reset_lifetime: bool = True) -> None:
    """Move the request's session to a new id when the response is saved, destroying the
    old record (call it at login): the data is kept, an id known before (planted or
    leaked) is worth nothing after. If the old record is gone by then (a logout in
    another request), the logout wins: nothing is written and the cookie is deleted.
    Raises ``RuntimeError`` without a :class:`LembroStorage` set up.

    ``reset_lifetime=True`` (the default) is a sign-in: the new id starts a new absolute
    lifetime (the store's ``absolute_ttl`` from now). ``False`` is a change of privilege
    inside one sign-in: the session keeps the absolute end it had. The client's device
    is recorded on the new id either way."""
    _storage(request, "regenerate")
    session = await get_session(request)
    request[_REGENERATE] = True
    request[_RESET_LIFETIME] = reset_lifetime
    session.changed()


async def logout_everywhere(
    request: web.Request, owner: str | int, keep_current: bool = True
) -> int:
    """End every session of ``owner`` in the storage's store; return how many ended.

    ``owner`` is what the store's ``owner_key`` field holds for the signed-in user
    (aiohttp-security's identity with the default store; build your own store with
    ``owner_key=``); owners compare as strings. With ``keep_current`` (the default: "sign
    out my other devices") the request's session is kept; with ``keep_current=False`` it
    ends too when it is ``owner``'s, and is emptied, so the response deletes its cookie.
    A concurrent request of an ended session does not write it back. Raises
    ``InvalidOption`` for a bad owner or a store without ``owner_key``,
    ``StoreUnavailable`` when the store cannot be reached, and ``RuntimeError`` without
    a :class:`LembroStorage` set up.
    """
    name = check_owner(owner)
    storage = _storage(request, "logout_everywhere")
    session = await get_session(request)
    keep = request.get(_SID) if keep_current and session is request.get(_LOADED) else None
    ended = await storage._store.destroy_sessions_of(name, keep=keep)
    if not keep_current and is_current_owner(storage.store, session, name):
        session.invalidate()  # an emptied session deletes its cookie when saved
    return ended
