"""Quart integration: server-side sessions behind Quart's own ``session``.

``Lembro(app)`` swaps the app's cookie sessions for sessions held in a lembro store, as
:mod:`lembro.flask` does for Flask: the cookie carries only a 256-bit session id signed
with ``app.secret_key`` (keyed BLAKE2b, see :mod:`lembro._cookies`); the data stays on the
server. Everything else is Quart's: the ``SESSION_COOKIE_*`` settings
(``SESSION_COOKIE_SAMESITE`` defaults to ``"Lax"`` here), ``PERMANENT_SESSION_LIFETIME``,
``SESSION_REFRESH_EACH_REQUEST``, ``session.permanent``, ``session.modified``,
``SECRET_KEY_FALLBACKS``, and the ``LEMBRO_*`` settings of :class:`lembro.flask.Lembro`.

Every store call is awaited: a ``MemoryStore`` is called inline (it never blocks), a
``RedisStore`` through its async twin, any other sync store in a worker thread (see
:func:`lembro.as_async`), so the event loop never waits on the store.

Concurrency: each request loads its own copy of the session and writes back only the
top-level keys it set, deleted or changed in place (a list appended to, a nested dict
edited), applied to the stored session as it is then (the store's ``update``), as
:mod:`lembro.flask` does. So two concurrent requests of one session that change different
keys both keep their change; of two that change one key, the later write wins; a key one
deletes is not brought back by another that only read it. A store of the app's without
``update`` gets the whole session, and the last request to finish wins. A destroy wins
over all: a session destroyed meanwhile (a logout or a regenerate in another request) is
not written back, and that request sets no cookie.

Websockets: a websocket has no response to carry a cookie, so its session is written back
only under the id it came with (a change of a stored session is kept; an emptied one is
destroyed); a new session, or a regenerate, cannot be sent to the client and is dropped
with a warning.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

try:
    import quart
    from quart import Quart
    from quart.sessions import SessionInterface, SessionMixin
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("lembro.quart needs Quart: pip install 'lembro[quart]'") from e

from ._changes import changes_of
from ._cookies import (
    REJECTED,
    CookieSigner,
    acreate,
    aregenerate,
    cookie_value,
    is_current_owner,
    store_absolute_ttl,
)
from .checks import check_owner
from .clients import client_device, trusted_networks
from .errors import InvalidOption, SerializationError
from .flask import Lembro as _FlaskLembro
from .flask import LembroSession
from .ids import new_session_id, redact
from .protocol import AsyncSessionStore, SessionStore, _InlineAsync, _supports, as_async

if TYPE_CHECKING:
    from flask import Flask
    from quart.wrappers import BaseRequestWebsocket, Response
    from werkzeug.wrappers import Response as WerkzeugResponse

    from .lifetimes import Device

__all__ = [
    "Lembro",
    "LembroSession",
    "LembroSessionInterface",
    "logout_everywhere",
    "regenerate",
    "session",
]

log = logging.getLogger("lembro")


class LembroSessionInterface(SessionInterface):
    """A Quart ``SessionInterface`` that keeps sessions in a lembro ``store``.

    ``store`` is any :class:`~lembro.SessionStore` or :class:`~lembro.AsyncSessionStore`.
    The record lives for the store's ``ttl`` seconds after its last write or touch; a
    session that is not permanent gets a cookie that ends with the browser session. With
    ``SESSION_REFRESH_EACH_REQUEST`` each request that loads an unchanged session touches
    its record, and a permanent one gets its cookie refreshed. A session holding nothing
    but its ``permanent`` flag counts as empty: no record, no cookie.

    Errors: a cookie that is missing, malformed, badly signed, unknown or expired, and a
    stored record that no longer deserializes, all give a fresh, empty session. A store
    that cannot be reached raises ``lembro.StoreUnavailable`` from ``open_session``, before
    Quart's error handlers run: the server answers 500. Writing data the store cannot
    serialize raises ``lembro.SerializationError`` (a 500 too).

    Concurrency: a request writes back only the keys it changed, so concurrent requests
    of one session keep each other's changes (see the module; on a store with
    ``update``).
    """

    session_class = LembroSession

    def __init__(self, store: SessionStore | AsyncSessionStore) -> None:
        if not isinstance(store, (SessionStore, AsyncSessionStore)):
            raise InvalidOption("store", store, "a lembro SessionStore or AsyncSessionStore")
        self.store = store
        self._store = as_async(store)
        # Whether a loaded session writes back only what it changed (see the module):
        # asked of the store given, as the async face of a sync store has every method.
        self._updates = _supports(store, "update")
        self._signer: tuple[tuple[str | bytes, ...], CookieSigner] | None = None
        # The read a request makes: load (which may renew the id) where the store has it.
        self._loads = _supports(store, "load")
        self._absolute_ttl = store_absolute_ttl(store)

    def get_signer(self, app: Quart) -> CookieSigner | None:
        """The signer of session ids, or ``None`` when the app has no ``secret_key``; it
        also accepts ``SECRET_KEY_FALLBACKS``, and is made anew when the keys change."""
        if not app.secret_key:
            return None
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._signer
        if cached is None or cached[0] != keys:
            cached = self._signer = (keys, CookieSigner(keys[0], keys[1:]))
        return cached[1]

    async def close(self) -> None:
        """Close the connections the store's async face opened (a ``RedisStore``'s async
        twin); the store itself stays open, the app's to close. ``Lembro`` calls this
        when the app stops serving."""
        face = self._store
        if face is not self.store and not isinstance(face, _InlineAsync):
            await face.close()

    def get_cookie_partitioned(self, app: Quart) -> bool:
        """Whether the cookie is ``Partitioned``: ``SESSION_COOKIE_PARTITIONED``."""
        return bool(app.config.get("SESSION_COOKIE_PARTITIONED", False))

    async def _load(
        self, sid: str, renew: bool = True
    ) -> tuple[str, dict[str, Any], float | None] | None:
        """The stored session ``sid``: the id to use from now on (another after a
        renewal; never with ``renew=False``), its data, and the seconds left until its
        absolute end (``None``: no such end); ``None`` when absent or corrupt."""
        left: float | None = None
        try:
            if self._loads and renew:
                loaded = await cast(Any, self._store).load(sid)
                if loaded is None:
                    return None
                sid, data, left = loaded
            else:
                data = await self._store.get(sid)
        except SerializationError as e:
            await self._discard(sid, e)
            return None
        if data is None:
            return None
        if data and set(map(type, data)) != {str}:
            await self._discard(sid, TypeError("stored session is not a dict of str keys"))
            return None
        return sid, data, left

    async def _discard(self, sid: str, error: Exception) -> None:
        """Drop a record that cannot be loaded, so it costs one warning, not a 500 each time."""
        log.warning("discarding corrupt session %s: %s", redact(sid), error)
        await self._store.destroy(sid)

    # ---- the SessionInterface contract ------------------------------------------------

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> LembroSession | None:
        """Load the session the request's cookie names, or a fresh, empty one."""
        signer = self.get_signer(app)
        if signer is None:
            return None  # Quart's null session: readable, and says why on write
        # Several Cookie headers (HTTP/2 may split them; Quart's test client does) read
        # as one, as Werkzeug's ``request.cookies`` reads them.
        headers = request.headers.getlist("Cookie")
        header = headers[0] if len(headers) == 1 else "; ".join(headers)
        cookie = cookie_value(header, self.get_cookie_name(app)) if header else None
        if not cookie:
            return self.session_class(new=True)
        sid, resign = signer.unsign(cookie)
        if sid is None:
            return self.session_class(new=True)
        # A websocket never renews: no response of its can carry the new id.
        found = await self._load(sid, renew=request.scope.get("type") != "websocket")
        if found is None:
            REJECTED.unknown_id += 1
            return self.session_class(new=True)
        current, data, left = found
        session = self.session_class(data, current)
        if left is not None:
            session._deadline = time.monotonic() + left
        if not resign and current == sid:  # a renewed id gets its cookie signed
            session._cookie = cookie
        return session

    def get_expiration_time(self, app: Quart, session: SessionMixin) -> datetime | None:
        """Quart's expiry for a permanent session's cookie, brought forward to the
        session's absolute end when it comes first (so the cookie never outlives it)."""
        expires = super().get_expiration_time(app, session)
        deadline = getattr(session, "_deadline", None)
        if expires is None or deadline is None:
            return expires
        left = max(0, int(deadline - time.monotonic()))
        return min(expires, datetime.now(timezone.utc) + timedelta(seconds=left))

    def device(self, app: Quart) -> Device:
        """The current request's client, as the app's ``LEMBRO_TRUSTED_PROXIES`` and
        ``LEMBRO_TRUNCATE_IP`` say to read it (see :func:`lembro.clients.client_device`)."""
        scope: Any = quart.request.scope if quart.has_request_context() else {}
        client = scope.get("client")
        return client_device(
            client[0] if client else None,
            scope.get("headers", ()),
            trusted_proxies=app.config.get("LEMBRO_TRUSTED_PROXIES") or (),
            truncate=bool(app.config.get("LEMBRO_TRUNCATE_IP")),
        )

    def _new_deadline(self) -> float | None:
        """When a session that starts now ends for good (``time.monotonic()`` seconds)."""
        absolute = self._absolute_ttl
        return None if absolute is None else time.monotonic() + absolute

    async def save_session(
        self,
        app: Quart,
        session: SessionMixin,
        response: Response | WerkzeugResponse | None,
    ) -> None:
        """Write back what changed, and set, refresh or delete the cookie to match
        (``response`` is ``None`` after a websocket: see the module)."""
        if not isinstance(session, LembroSession):
            return
        if response is None:
            await self._save_websocket(session)
            return
        if session.accessed:
            _vary_on_cookie(response)

        old_sid = session.sid
        regenerate, session._regenerate = session._regenerate, False
        # Written through the session's methods, or a container handed out and changed.
        changed = session.modified or session.changed_inside()
        _refuse_non_str_keys(session, old_sid, changed)
        if session.is_empty:
            if old_sid is not None and session.modified:
                await self._store.destroy(old_sid)
                session.sid = None
                self._delete_cookie(app, response)
            return

        refresh = app.config["SESSION_REFRESH_EACH_REQUEST"]
        resend = session.permanent and (changed or refresh)
        if old_sid is None:
            sid = new_session_id()
            await acreate(self._store, sid, dict(session), device=self.device(app))
            session.sid, session._cookie = sid, None
            session._deadline = self._new_deadline()
        elif regenerate:
            reset = session._reset_lifetime
            new_sid = await aregenerate(
                self._store, old_sid, dict(session), reset_lifetime=reset, device=self.device(app)
            )
            if new_sid is None:  # logged out meanwhile: the logout wins
                session.sid = None
                self._delete_cookie(app, response)
                return
            sid = session.sid = new_sid
            session._cookie = None
            if reset:
                session._deadline = self._new_deadline()
        elif changed:
            sid = old_sid
            if not await self._write_back(sid, session):
                # Destroyed since it was loaded (a logout or a regenerate in another
                # request): it stays destroyed, and this request's changes go with it.
                return
        elif refresh or session._cookie is None:
            sid = old_sid
            if not await self._store.touch(sid):
                return  # gone since it was loaded: no cookie for a record that is not there
        else:
            return

        # The cookie goes out only when it says something new: a new id, a signature with
        # the current key, or a permanent session's later expiry.
        value = session._cookie
        if value is None:
            signer = self.get_signer(app)
            if signer is None:  # the secret key was removed during the request
                raise RuntimeError("the session cannot be saved: the app has no secret_key")
            value = session._cookie = signer.sign(sid)
        elif not resend:
            return
        response.set_cookie(
            self.get_cookie_name(app),
            value,
            expires=self.get_expiration_time(app, session),
            **self._cookie_options(app),
        )
        _vary_on_cookie(response)

    async def _save_websocket(self, session: LembroSession) -> None:
        """Write a websocket's session back under the id it came with, if it changed."""
        sid = session.sid
        regenerate, session._regenerate = session._regenerate, False
        changed = session.modified or session.changed_inside()
        if not changed:
            return
        if sid is None:
            if not session.is_empty:
                log.warning("a new session made in a websocket is dropped: no cookie can carry it")
            return
        if regenerate:
            log.warning("regenerate in a websocket is ignored: no cookie can carry a new id")
        _refuse_non_str_keys(session, sid, changed)
        if session.is_empty:
            await self._store.destroy(sid)
        else:
            await self._write_back(sid, session)

    async def _write_back(self, sid: str, session: LembroSession) -> bool:
        """Write a loaded session that changed back under ``sid``: only the keys it set,
        deleted or changed in place, through the store's ``update`` (the whole session by
        ``replace`` on a store without it); whether the record was still there."""
        if not self._updates:
            return await self._store.replace(sid, dict(dict.items(session)))
        changes, deleted = changes_of(session, session._loaded, session._before)
        return await self._store.update(sid, changes, deleted)

    def _cookie_options(self, app: Quart) -> dict[str, Any]:
        """The cookie's attributes from the app's ``SESSION_COOKIE_*`` settings."""
        options: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
        }
        if self.get_cookie_partitioned(app):
            options["partitioned"] = True
        return options

    def _delete_cookie(self, app: Quart, response: Response | WerkzeugResponse) -> None:
        response.delete_cookie(self.get_cookie_name(app), **self._cookie_options(app))
        _vary_on_cookie(response)


def _refuse_non_str_keys(session: LembroSession, sid: str | None, changed: bool) -> None:
    """Raise ``SerializationError`` for a session about to be written with a key that is
    not a str: such a record would be discarded, whole, when read."""
    if (changed or sid is None) and set(map(type, session)) - {str}:
        key = next(k for k in session if type(k) is not str)
        raise SerializationError(f"session key {key!r}: Quart session keys must be str")


def _vary_on_cookie(response: Response | WerkzeugResponse) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header, or add the header."""
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Cookie"
    elif "cookie" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Cookie"


def _current_session() -> LembroSession | None:
    """The current request's or websocket's session, if it is a lembro one."""
    if not (quart.has_request_context() or quart.has_websocket_context()):
        return None
    found = quart.session._get_current_object()  # type: ignore[attr-defined]
    return found if isinstance(found, LembroSession) else None


def regenerate(reset_lifetime: bool = True) -> None:
    """Move the current request's session to a fresh id when the response is saved,
    destroying the old record (call it at login): the typed form of
    ``session.regenerate()``. If the old record is gone by then (a logout in another
    request), the logout wins: nothing is written and the cookie is deleted.

    ``reset_lifetime=True``: a sign-in, the new id starts a new absolute lifetime;
    ``False``: a change of privilege inside one sign-in, the absolute end is kept."""
    current = _current_session()
    if current is None:
        raise RuntimeError("regenerate() needs lembro.quart.Lembro(app) installed")
    current.regenerate(reset_lifetime)


async def logout_everywhere(user_id: str | int, keep_current: bool = True) -> int:
    """End every session of the user ``user_id``; return how many were ended.

    With ``keep_current`` (the default: "sign out my other devices") the current
    request's session is kept; with ``keep_current=False`` it ends too, when it is that
    user's, and it is cleared, so the response deletes its cookie. Outside a request every
    session of the user ends. The app's store must have an owner key
    (``LEMBRO_OWNER_KEY``, default ``"_user_id"``); owners compare as strings, so ``42``
    and ``"42"`` are one user. Raises ``InvalidOption`` for a bad ``user_id`` or a store
    without an owner key, ``StoreUnavailable`` when the store cannot be reached, and
    ``RuntimeError`` without ``Lembro`` installed.
    """
    owner = check_owner(user_id)
    interface = quart.current_app.session_interface
    if not isinstance(interface, LembroSessionInterface):
        raise RuntimeError("logout_everywhere() needs lembro.quart.Lembro(app) installed")
    current = _current_session()
    keep = current.sid if keep_current and current is not None else None
    ended = await interface._store.destroy_sessions_of(owner, keep=keep)
    if (
        not keep_current
        and current is not None
        and is_current_owner(interface.store, current, owner)
    ):
        current.clear()  # an emptied session deletes its cookie when the response is saved
        current.modified = True
    return ended


#: Quart's ``session`` proxy, typed as a :class:`LembroSession`, so that
#: ``session.regenerate()`` type-checks: ``from lembro.quart import session``.
session = cast(LembroSession, quart.session)


class Lembro:
    """The Quart extension: ``Lembro(app)`` or ``Lembro().init_app(app)``.

    With no ``store``, each app gets a ``MemoryStore`` built from its config, with the
    settings and defaults of :class:`lembro.flask.Lembro` (``LEMBRO_MAX_SIZE`` ``"4M"``,
    ``LEMBRO_TTL`` ``PERMANENT_SESSION_LIFETIME``, ``LEMBRO_OWNER_KEY`` ``"_user_id"``,
    the lifetimes ``LEMBRO_ABSOLUTE_TTL``, ``LEMBRO_RENEW_EVERY``... and the devices'
    ``LEMBRO_TRUSTED_PROXIES``, ``LEMBRO_TRUNCATE_IP``).
    ``SESSION_COOKIE_SAMESITE`` is set to ``"Lax"`` when the app left it unset;
    ``app.extensions["lembro"]`` is this extension and ``app.session_interface.store``
    each app's own store. When the app stops serving, the connections of the store's
    async face are closed (:meth:`LembroSessionInterface.close`).
    """

    def __init__(
        self,
        app: Quart | None = None,
        store: SessionStore | AsyncSessionStore | None = None,
    ) -> None:
        self.store: SessionStore | AsyncSessionStore | None = store
        self._given_store = store
        if app is not None:
            self.init_app(app, store)

    def init_app(self, app: Quart, store: SessionStore | AsyncSessionStore | None = None) -> None:
        """Make ``app`` keep its sessions in ``store`` (default: one built from config)."""
        if store is None:
            store = self._given_store
        if store is None:  # not ``or``: an empty store is falsy
            store = _FlaskLembro._store_from_config(cast("Flask", app))
        trusted = app.config.setdefault("LEMBRO_TRUSTED_PROXIES", ())
        trusted_networks(trusted or ())  # a bad network is an error at start, not at login
        app.config.setdefault("LEMBRO_TRUNCATE_IP", False)
        interface = LembroSessionInterface(store)
        app.session_interface = interface  # type: ignore[assignment]
        app.after_serving(interface.close)
        app.extensions["lembro"] = self
        # Quart leaves SameSite off unless asked; a session cookie should not ride along
        # on cross-site POSTs. An app that wants otherwise sets it after init_app.
        if app.config.get("SESSION_COOKIE_SAMESITE") is None:
            app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
        self.store = store
