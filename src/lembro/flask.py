"""Flask integration: server-side sessions behind Flask's own ``session``.

``Lembro(app)`` swaps the app's cookie sessions for sessions held in a lembro store. The
cookie carries only a 256-bit session id signed with ``app.secret_key`` (keyed BLAKE2b, see
:mod:`lembro._cookies`); the data stays on the server. Everything else is Flask's: the
``SESSION_COOKIE_*`` settings (``SESSION_COOKIE_SAMESITE`` defaults to ``"Lax"`` here),
``PERMANENT_SESSION_LIFETIME``, ``SESSION_REFRESH_EACH_REQUEST``, ``session.permanent``,
``session.modified``, ``SECRET_KEY_FALLBACKS``. Values come back as the store's serializer
gives them: exactly, or refused with ``SerializationError`` (see :mod:`lembro.serializers`).

Concurrency: each request loads its own copy of the session and writes back only the
top-level keys it set, deleted or changed in place (a list appended to, a nested dict
edited), applied to the stored session as it is then (the store's ``update``). So two
concurrent requests of one session that change different keys both keep their change;
of two that change one key, the later write wins; a key one deletes is not brought back
by another that only read it. A store of the app's without ``update`` gets the whole
session, and the last request to finish wins. A destroy wins over all: a session
destroyed meanwhile (a logout or a regenerate in another request) is not written back,
and that request sets no cookie.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

try:
    import flask
    from flask import Flask
    from flask.sessions import SessionInterface, SessionMixin
    from werkzeug.datastructures import CallbackDict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("lembro.flask needs Flask: pip install lembro[flask]") from e

from ._changes import PLAIN, changed_inside, changes_of, fingerprint_key
from ._cookies import (
    REJECTED,
    CookieSigner,
    cookie_value,
    create,
    is_current_owner,
    store_absolute_ttl,
)
from ._cookies import regenerate as _regenerate
from .checks import check_owner
from .clients import client_device, trusted_networks
from .errors import InvalidOption, SerializationError
from .ids import new_session_id, redact
from .memory import MemoryStore
from .protocol import SessionStore, _supports

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_values

    from flask import Request, Response

    from .lifetimes import Device

__all__ = [
    "FLASK_LOGIN_OWNER_KEY",
    "Lembro",
    "LembroSession",
    "LembroSessionInterface",
    "logout_everywhere",
    "regenerate",
    "session",
]

log = logging.getLogger("lembro")

# Flask keeps ``session.permanent`` as this key in the data. On its own it is not data
# someone wrote: a ``before_request`` that sets ``session.permanent = True`` for everyone
# must not create a record for every cookieless visitor.
_PERMANENT_KEY = "_permanent"

_NOT_HELD = object()

#: The session field Flask-Login writes the signed-in user's id to (``login_user``), and
#: so the default ``LEMBRO_OWNER_KEY``.
FLASK_LOGIN_OWNER_KEY = "_user_id"


class LembroSession(CallbackDict[str, Any], SessionMixin):
    """One request's session: a dict that tracks ``modified`` and ``accessed``.

    ``sid`` is the session id, ``None`` until the session is first saved. ``new`` is true
    when no stored session was found for the request. Changes inside nested mutable
    values are seen too, with or without ``modified = True``: the first time a list, dict
    or other container is handed out, that key's bytes are kept, and compared with what
    it holds when the response is saved.
    """

    modified = False

    def __init__(
        self,
        initial: Mapping[str, Any] | None = None,
        sid: str | None = None,
        *,
        new: bool = False,
    ) -> None:
        def on_update(session: LembroSession) -> None:
            session.modified = True
            session.accessed = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.new = new
        self.modified = False
        self.accessed = False
        self._regenerate = False
        self._reset_lifetime = True
        # When the session ends for good (time.monotonic() seconds), if it does: the
        # cookie never outlives it.
        self._deadline: float | None = None
        # What the store gave, kept as loaded (the values are the session's own objects),
        # and each container handed out: its key's fingerprint, taken before it was.
        self._loaded: dict[str, Any] = initial if type(initial) is dict else {}
        self._before: dict[str, object] | None = None
        # The cookie value this session came with, re-sent as is while the id stays; None
        # when it must be signed (a new id, or a cookie signed with a fallback key).
        self._cookie: str | None = None

    # Flask < 3.1.3 leaves ``accessed`` to the session; newer Flask sets it on every
    # access through the request context as well.
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        value = super().__getitem__(key)
        if type(value) not in PLAIN:
            self._hand_out(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        value = super().get(key, default)
        if type(value) not in PLAIN and dict.__contains__(self, key):
            self._hand_out(key, value)
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        value = super().setdefault(key, default)
        if type(value) not in PLAIN:
            self._hand_out(key, value)
        return value

    def pop(self, key: str, *args: Any) -> Any:
        value = dict.get(self, key, _NOT_HELD)
        if value is not _NOT_HELD and type(value) not in PLAIN:
            # Handed out too: set back after a change in place, it is seen as changed.
            self._hand_out(key, value)
        return super().pop(key, *args)

    # Overridden so that dict(session) and {**session} read through __getitem__, which
    # sees the containers they hand out; values, items and copy hand out every one.
    def __iter__(self) -> Iterator[str]:
        return super().__iter__()

    def values(self) -> dict_values[str, Any]:
        self._hand_out_all()
        return super().values()

    def items(self) -> dict_items[str, Any]:
        self._hand_out_all()
        return super().items()

    def copy(self) -> dict[str, Any]:
        self._hand_out_all()
        return dict(dict.items(self))

    def _hand_out(self, key: str, value: Any) -> None:
        before = self._before
        if before is None:
            before = self._before = {}
        if key not in before:
            before[key] = fingerprint_key(key, value)

    def _hand_out_all(self) -> None:
        self.accessed = True
        for key, value in dict.items(self):
            if type(value) not in PLAIN:
                self._hand_out(key, value)

    def changed_inside(self) -> bool:
        """Whether a container handed out has changed since (always false if none was)."""
        return changed_inside(self, self._before)

    def regenerate(self, reset_lifetime: bool = True) -> None:
        """Move this session to a fresh id when the response is saved.

        The data is kept; the old id's record is destroyed, so a planted or leaked id
        stops working. Call it on login and on any change of privilege. If the old record
        is gone by then (a logout in another request), the logout wins: nothing is written
        and the cookie is deleted.

        ``reset_lifetime=True`` (the default) is a sign-in: the new id starts a new
        absolute lifetime (the store's ``absolute_ttl`` from now). ``False`` is a change of
        privilege inside one sign-in (a sudo step, a role change): the session keeps the
        absolute end it had. The client's device is recorded on the new id either way.
        """
        self._regenerate = True
        self._reset_lifetime = reset_lifetime
        self.modified = True

    @property
    def is_empty(self) -> bool:
        """Whether the session holds nothing but, perhaps, its ``permanent`` flag."""
        return all(key == _PERMANENT_KEY for key in self.keys())


class LembroSessionInterface(SessionInterface):
    """A Flask ``SessionInterface`` that keeps sessions in a lembro ``store``.

    Only the store protocol (``get``/``set``/``touch``/``destroy``) is used, so any store
    works: ``MemoryStore`` or ``RedisStore``. The server-side record lives for the store's
    ``ttl`` seconds after its last write or touch; a session that is not permanent gets a
    cookie that ends with the browser session. With ``SESSION_REFRESH_EACH_REQUEST`` each
    request that loads an unchanged session touches its record (no rewrite), and a
    permanent one gets its cookie refreshed. A session holding nothing but its
    ``permanent`` flag counts as empty: no record, no cookie.

    Errors: a cookie that is missing, malformed, badly signed, unknown or expired, and a
    stored record that no longer deserializes, all give a fresh, empty session. A store
    that cannot be reached raises ``lembro.StoreUnavailable`` from ``open_session``; Flask
    turns it into a 500 (see ``e.original_exception`` in a 500 handler). Writing data the
    store cannot serialize raises ``lembro.SerializationError``.

    Concurrency: a request writes back only the keys it changed, so concurrent requests
    of one session keep each other's changes (see the module; on a store with
    ``update``).
    """

    session_class = LembroSession

    def __init__(self, store: SessionStore) -> None:
        if not isinstance(store, SessionStore):
            raise InvalidOption("store", store, "a lembro SessionStore (get/set/touch/destroy)")
        self.store = store
        # Whether a loaded session writes back only what it changed (see the module).
        self._updates = _supports(store, "update")
        # The read a request makes: load (which may renew the id) where the store has it.
        load = getattr(store, "load", None)
        self._load_loaded = load if callable(load) else None
        self._absolute_ttl = store_absolute_ttl(store)
        self._signer: tuple[tuple[str | bytes, ...], CookieSigner] | None = None

    # ---- signing ----------------------------------------------------------------------

    def get_signer(self, app: Flask) -> CookieSigner | None:
        """The signer of session ids, or ``None`` when the app has no ``secret_key``.

        It signs with ``secret_key`` and also accepts ``SECRET_KEY_FALLBACKS``; it is made
        once per set of keys, so a key rotated at run time takes effect at once.
        """
        if not app.secret_key:
            return None
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._signer
        if cached is None or cached[0] != keys:
            cached = self._signer = (keys, CookieSigner(keys[0], keys[1:]))
        return cached[1]

    # ---- settings Flask < 3.1 does not have -------------------------------------------

    def get_cookie_partitioned(self, app: Flask) -> bool:
        """Whether the cookie is ``Partitioned``: ``SESSION_COOKIE_PARTITIONED``."""
        return bool(app.config.get("SESSION_COOKIE_PARTITIONED", False))

    def _load(self, sid: str) -> tuple[str, dict[str, Any], float | None] | None:
        """The stored session ``sid``: the id to use from now on (another after a
        renewal), its data, and the seconds left until its absolute end (``None``: no
        such end); ``None`` when absent or corrupt."""
        load = self._load_loaded
        left: float | None = None
        try:
            if load is not None:
                loaded = load(sid)
                if loaded is None:
                    return None
                sid, data, left = loaded
            else:
                data = self.store.get(sid)
        except SerializationError as e:
            self._discard(sid, e)
            return None
        if data is None:
            return None
        if data and set(map(type, data)) != {str}:
            self._discard(sid, TypeError("stored session is not a dict of str keys"))
            return None
        return sid, data, left

    def _discard(self, sid: str, error: Exception) -> None:
        """Drop a record that cannot be loaded, so it costs one warning, not a 500 each time."""
        log.warning("discarding corrupt session %s: %s", redact(sid), error)
        self.store.destroy(sid)

    # ---- the SessionInterface contract ------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> LembroSession | None:
        """Load the session the request's cookie names, or a fresh, empty one."""
        signer = self.get_signer(app)
        if signer is None:
            return None  # Flask's null session: readable, and says why on write
        header = request.environ.get("HTTP_COOKIE")
        cookie = cookie_value(header, self.get_cookie_name(app)) if header else None
        if not cookie:
            return self.session_class(new=True)
        sid, resign = signer.unsign(cookie)
        if sid is None:
            return self.session_class(new=True)
        found = self._load(sid)
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

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        """Flask's expiry for a permanent session's cookie, brought forward to the
        session's absolute end when it comes first (so the cookie never outlives it)."""
        expires = super().get_expiration_time(app, session)
        deadline = getattr(session, "_deadline", None)
        if expires is None or deadline is None:
            return expires
        left = max(0, int(deadline - time.monotonic()))
        return min(expires, datetime.now(timezone.utc) + timedelta(seconds=left))

    def device(self, app: Flask) -> Device:
        """The current request's client, as the app's ``LEMBRO_TRUSTED_PROXIES`` and
        ``LEMBRO_TRUNCATE_IP`` say to read it (see :func:`lembro.clients.client_device`)."""
        environ = flask.request.environ
        return client_device(
            environ.get("REMOTE_ADDR"),
            environ,
            trusted_proxies=app.config.get("LEMBRO_TRUSTED_PROXIES") or (),
            truncate=bool(app.config.get("LEMBRO_TRUNCATE_IP")),
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Write back what changed, and set, refresh or delete the cookie to match."""
        # Flask calls this with no session at all when open_session raised.
        if not isinstance(session, LembroSession):
            return
        if session.accessed:
            _vary_on_cookie(response)

        old_sid = session.sid
        regenerate, session._regenerate = session._regenerate, False
        # Written through the session's methods, or a container handed out and changed.
        changed = session.modified or session.changed_inside()
        if (changed or old_sid is None) and set(map(type, session)) - {str}:
            # Flask's session keys are strs, and a record with others is discarded when
            # read: refuse it at the write, where the app can see why.
            key = next(k for k in session if type(k) is not str)
            raise SerializationError(f"session key {key!r}: Flask session keys must be str")
        if session.is_empty:
            if old_sid is not None and session.modified:
                self.store.destroy(old_sid)
                session.sid = None
                self._delete_cookie(app, response)
            return

        resend = session.permanent and (changed or app.config["SESSION_REFRESH_EACH_REQUEST"])
        if old_sid is None:
            sid = new_session_id()
            create(self.store, sid, dict(session), device=self.device(app))
            session.sid, session._cookie = sid, None
            session._deadline = self._new_deadline()
        elif regenerate:
            reset = session._reset_lifetime
            new_sid = _regenerate(
                self.store, old_sid, dict(session), reset_lifetime=reset, device=self.device(app)
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
            if not self._write_back(sid, session):
                # Destroyed since it was loaded (a logout or a regenerate in another
                # request): it stays destroyed, and this request's changes go with it.
                return
        elif app.config["SESSION_REFRESH_EACH_REQUEST"] or session._cookie is None:
            sid = old_sid
            if not self.store.touch(sid):
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

    def _new_deadline(self) -> float | None:
        """When a session that starts now ends for good (``time.monotonic()`` seconds)."""
        absolute = self._absolute_ttl
        return None if absolute is None else time.monotonic() + absolute

    def _write_back(self, sid: str, session: LembroSession) -> bool:
        """Write a loaded session that changed back under ``sid``: only the keys it set,
        deleted or changed in place, through the store's ``update`` (the whole session by
        ``replace`` on a store without it); whether the record was still there."""
        if not self._updates:
            return self.store.replace(sid, dict(dict.items(session)))
        changes, deleted = changes_of(session, session._loaded, session._before)
        return self.store.update(sid, changes, deleted)

    def _cookie_options(self, app: Flask) -> dict[str, Any]:
        """The cookie's attributes from the app's ``SESSION_COOKIE_*`` settings."""
        options: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
        }
        if self.get_cookie_partitioned(app):  # only then: Werkzeug < 3.0 has no such argument
            options["partitioned"] = True
        return options

    def _delete_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(self.get_cookie_name(app), **self._cookie_options(app))
        _vary_on_cookie(response)


def _vary_on_cookie(response: Response) -> None:
    """``response.vary.add("Cookie")`` without building werkzeug's header set each time."""
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Cookie"
    elif "cookie" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Cookie"


def regenerate(reset_lifetime: bool = True) -> None:
    """Move the current request's session to a fresh id when the response is saved: the
    typed form of ``session.regenerate()`` (see :meth:`LembroSession.regenerate`).

    ``reset_lifetime=True``: a sign-in, the new id starts a new absolute lifetime;
    ``False``: a change of privilege inside one sign-in, the absolute end is kept."""
    current = flask.session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, LembroSession):
        raise RuntimeError("regenerate() needs lembro.flask.Lembro(app) installed")
    current.regenerate(reset_lifetime)


def logout_everywhere(user_id: str | int, keep_current: bool = True) -> int:
    """End every session of the user ``user_id``; return how many were ended.

    With ``keep_current`` (the default: "sign out my other devices") the current
    request's session is kept; with ``keep_current=False`` it ends too, when it is that
    user's, and it is cleared, so the response deletes its cookie. Outside a request
    every session of the user ends. The app's store must have an owner key
    (``LEMBRO_OWNER_KEY``, default Flask-Login's ``"_user_id"``, which holds
    ``user.get_id()``); owners compare as strings, so ``42`` and ``"42"`` are one user.

    A session that is loaded by a concurrent request is not written back by it: it stays
    ended. Flask-Login's "remember me" cookie logs a user back in without any session;
    end those as Flask-Login advises, with an id that changes (``get_id``) on a password
    change. Raises ``InvalidOption`` for a bad ``user_id`` or a store without an owner
    key, ``StoreUnavailable`` when the store cannot be reached (never a partial success
    reported as done), and ``RuntimeError`` without ``Lembro`` installed.
    """
    owner = check_owner(user_id)
    interface = flask.current_app.session_interface
    if not isinstance(interface, LembroSessionInterface):
        raise RuntimeError("logout_everywhere() needs lembro.flask.Lembro(app) installed")
    store = interface.store
    current: LembroSession | None = None
    if flask.has_request_context():
        found = flask.session._get_current_object()  # type: ignore[attr-defined]
        if isinstance(found, LembroSession):
            current = found
    keep = current.sid if keep_current and current is not None else None
    ended = store.destroy_sessions_of(owner, keep=keep)
    if not keep_current and current is not None and is_current_owner(store, current, owner):
        current.clear()  # an emptied session deletes its cookie when the response is saved
        current.modified = True
    return ended


#: Flask's ``session`` proxy, typed as a :class:`LembroSession`, so that
#: ``session.regenerate()`` type-checks: ``from lembro.flask import session``.
session = cast(LembroSession, flask.session)


class Lembro:
    """The Flask extension: ``Lembro(app)`` or ``Lembro().init_app(app)``.

    With no ``store``, each app gets a ``MemoryStore`` built from its config:
    ``LEMBRO_MAX_SIZE`` (bytes or a size string, default ``"4M"``), ``LEMBRO_INTERVAL``
    (seconds between expiry purges, default 360; 0 for none), ``LEMBRO_TTL`` (seconds a
    session lives after its last use, default ``PERMANENT_SESSION_LIFETIME``),
    ``LEMBRO_LOW_WATER`` (fraction of ``max_size`` to prune back to, default 0.75) and
    ``LEMBRO_SERIALIZER`` (``"msgpack"``, ``"json"``, ``"pickle"`` or an object,
    default ``"msgpack"``), ``LEMBRO_SNAPSHOT`` (a file that keeps sessions across
    restarts, default none; set it in development and the reloader keeps sessions),
    ``LEMBRO_SNAPSHOT_INTERVAL`` (seconds), ``LEMBRO_TRUST_PICKLE`` (``True`` to
    allow pickle with a snapshot file) and ``LEMBRO_OWNER_KEY`` (the session field that
    names the signed-in user, for :func:`logout_everywhere`; default Flask-Login's
    ``"_user_id"``; ``None`` for no owner index). Lifetimes (issue 29):
    ``LEMBRO_ABSOLUTE_TTL`` (seconds from sign-in after which a session ends whatever
    its use; default none), ``LEMBRO_RENEW_EVERY`` (seconds after which a session gets a
    new id on its next request; default none) and ``LEMBRO_RENEW_GRACE`` (seconds the
    replaced id still answers; default the store's, 10), ``LEMBRO_MAX_SESSIONS_PER_USER``
    (a user's sign-in beyond this many ends their oldest session; default none). A store
    passed in keeps its own ``owner_key`` and lifetimes. Devices, on any store:
    ``LEMBRO_TRUSTED_PROXIES`` (the networks of the app's reverse proxies, whose
    ``X-Forwarded-For`` is believed, e.g. ``["127.0.0.1/32"]``; default none) and
    ``LEMBRO_TRUNCATE_IP`` (``True`` keeps the /24 or /48 of the IP recorded with a
    session). ``store`` is the store of the app last initialized.
    ``SESSION_COOKIE_SAMESITE`` is set to ``"Lax"`` when the app left it unset;
    ``app.extensions["lembro"]`` is this extension and ``app.session_interface.store``
    each app's own store.
    """

    def __init__(self, app: Flask | None = None, store: SessionStore | None = None) -> None:
        self.store: SessionStore | None = store
        self._given_store = store
        if app is not None:
            self.init_app(app, store)

    def init_app(self, app: Flask, store: SessionStore | None = None) -> None:
        """Make ``app`` keep its sessions in ``store`` (default: one built from config)."""
        if store is None:
            store = self._given_store
        if store is None:  # not ``or``: an empty store is falsy
            store = self._store_from_config(app)
        trusted = app.config.setdefault("LEMBRO_TRUSTED_PROXIES", ())
        trusted_networks(trusted or ())  # a bad network is an error at start, not at login
        app.config.setdefault("LEMBRO_TRUNCATE_IP", False)
        app.session_interface = LembroSessionInterface(store)
        app.extensions["lembro"] = self
        # Flask leaves SameSite off unless asked; a session cookie should not ride along
        # on cross-site POSTs. An app that wants otherwise sets it after init_app.
        if app.config.get("SESSION_COOKIE_SAMESITE") is None:
            app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
        self.store = store

    @staticmethod
    def _store_from_config(app: Flask) -> MemoryStore:
        config = app.config
        config.setdefault("LEMBRO_MAX_SIZE", "4M")
        config.setdefault("LEMBRO_INTERVAL", 360)
        config.setdefault("LEMBRO_TTL", app.permanent_session_lifetime.total_seconds())
        config.setdefault("LEMBRO_LOW_WATER", 0.75)
        config.setdefault("LEMBRO_SERIALIZER", "msgpack")
        config.setdefault("LEMBRO_SNAPSHOT", None)
        config.setdefault("LEMBRO_SNAPSHOT_INTERVAL", None)
        config.setdefault("LEMBRO_TRUST_PICKLE", False)
        config.setdefault("LEMBRO_OWNER_KEY", FLASK_LOGIN_OWNER_KEY)
        lifetimes: dict[str, Any] = {}
        for option in ("absolute_ttl", "renew_every", "renew_grace", "max_sessions_per_user"):
            value = config.setdefault(f"LEMBRO_{option.upper()}", None)
            if value is not None:  # unset: the store's own default
                lifetimes[option] = value
        return MemoryStore(
            config["LEMBRO_MAX_SIZE"],
            config["LEMBRO_INTERVAL"],
            ttl=config["LEMBRO_TTL"],
            low_water=config["LEMBRO_LOW_WATER"],
            serializer=config["LEMBRO_SERIALIZER"],
            snapshot=config["LEMBRO_SNAPSHOT"],
            snapshot_interval=config["LEMBRO_SNAPSHOT_INTERVAL"],
            trust_pickle=config["LEMBRO_TRUST_PICKLE"],
            owner_key=config["LEMBRO_OWNER_KEY"],
            **lifetimes,
        )
