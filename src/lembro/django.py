"""Django sessions in a lembro store: ``SESSION_ENGINE = "lembro.django"``.

Options come from the ``LEMBRO`` settings dict (every key optional)::

    LEMBRO = {
        "STORE": "memory",      # "memory", "redis", or a store object you built
        "MAX_SIZE": "4M",       # bytes, or a size string; memory store only
        "INTERVAL": 360,        # seconds between background purges; memory store only
        "LOW_WATER": 0.75,      # prune to this fraction of MAX_SIZE when full
        "SERIALIZER": "msgpack",
        "TTL": None,            # default lifetime in seconds; None: SESSION_COOKIE_AGE
        "URL": None,            # the Redis URL, for "STORE": "redis"
        "PREFIX": "lembro:",    # Redis key prefix, for "STORE": "redis"
        "OWNER_KEY": "_auth_user_id",       # the session field naming the user; None: no index
        "LOGOUT_ON_PASSWORD_CHANGE": False,  # end the user's other sessions on a password change
        "ABSOLUTE_TTL": None,   # seconds from sign-in after which a session ends, used or not
        "RENEW_EVERY": None,    # seconds after which a session gets a new key on its next request
        "RENEW_GRACE": None,    # seconds the replaced key still answers; None: the store's (10)
        "MAX_SESSIONS_PER_USER": None,  # a user's sign-in beyond this ends their oldest session
        "TRUSTED_PROXIES": (),  # networks whose X-Forwarded-For is believed, e.g. ["10.0.0.0/8"]
        "TRUNCATE_IP": False,   # keep the /24 or /48 of the IP recorded with a session
    }

The four lifetime options configure a store built here ("memory" or "redis"); a store
object keeps its own. The cookie's age never outlives the session's absolute end, and a
renewed key is saved and sent as a new cookie by Django's ``SessionMiddleware``. To
record each session's device (IP, user agent: see :mod:`lembro.clients`), add
``"lembro.django.RecordDeviceMiddleware"`` to ``MIDDLEWARE`` right after
``SessionMiddleware``.

The store is built once per process, on first use, and rebuilt when ``LEMBRO`` changes
(``override_settings`` in tests). Each session record lives ``get_expiry_age()`` seconds
from its last save, as with Django's own engines. Add ``"lembro.django.LembroConfig"`` to
``INSTALLED_APPS`` and ``manage.py check`` validates ``LEMBRO``, and reports a
``SESSION_ENGINE`` that names lembro wrongly (``"lembro"``, say). ``manage.py
clearsessions`` purges expired records now, or says why there is nothing to purge.

As with Django's engines, ``save()`` and ``create()`` store the session even when it is
empty, so a key once saved stays the session's key; the middleware stores nothing for a
visitor whose session was never written. Where lembro differs, it is stricter: session keys
are 256-bit (:func:`lembro.ids.new_session_id`), a key the server did not issue is never
adopted, ``cycle_key()`` moves the record to its new key in one store operation
(``rename``), and ``cycle_key()`` on a session a logout removed meanwhile does not bring it
back: the session is left empty and keyless, as after the logout, and what the request
writes into it next (``login()`` writes the user) is refused at the save (``UpdateError``).

``save()`` of an existing session writes back only the top-level keys the request set,
deleted or changed in place (``update``: applied to the record as it is then), so
overlapping requests of one session keep each other's changes to different keys; of two
that change one key, the later save wins. It writes only over a live record: a logout in
another request wins, and the save raises ``UpdateError`` as Django's engines do. (Django
saves a session only when it is ``modified``, or with ``SESSION_SAVE_EVERY_REQUEST``; after
a change in place, ``modified`` is true without the app setting it: the containers the
request was handed are compared with what they held then.)

Sessions are indexed by the user Django's ``login()`` writes (``OWNER_KEY``, default
``"_auth_user_id"``; a store object passed as ``"STORE"`` keeps its own ``owner_key``):
:func:`logout_everywhere` ends a user's sessions. With ``"LOGOUT_ON_PASSWORD_CHANGE":
True``, a password change made through ``update_session_auth_hash(request, user)`` (as
Django's ``PasswordChangeView`` does) ends the user's other sessions when the session is
saved, and keeps the current one, as Django does. A password set outside the user's own
session (a reset link, the admin, the shell) is not seen: call :func:`logout_everywhere`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
    from django.apps import AppConfig
    from django.conf import settings
    from django.contrib.auth import HASH_SESSION_KEY
    from django.contrib.auth import SESSION_KEY as USER_SESSION_KEY
    from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import setting_changed
    from django.utils.module_loading import import_string
except ImportError as e:  # pragma: no cover - exercised only without Django
    raise ImportError("lembro.django needs Django: pip install lembro[django]") from e

from ._changes import PLAIN, changed_inside, changes_of, fingerprint_key
from ._cookies import REJECTED, _lifetime_options, create, store_absolute_ttl
from .checks import check_owner, check_owner_key
from .clients import client_device, trusted_networks
from .errors import InvalidOption, LembroError, SerializationError
from .ids import is_session_id, new_session_id, redact
from .memory import MemoryStore
from .protocol import SessionStore as StoreProtocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from django.http import HttpRequest, HttpResponse

    from .lifetimes import Device

__all__ = [
    "LembroConfig",
    "RecordDeviceMiddleware",
    "SessionMiddleware",
    "SessionStore",
    "build_store",
    "check_engine",
    "check_settings",
    "get_store",
    "logout_everywhere",
]

log = logging.getLogger("lembro.django")

_OPTIONS = frozenset(
    {
        "STORE",
        "MAX_SIZE",
        "INTERVAL",
        "LOW_WATER",
        "SERIALIZER",
        "TTL",
        "SNAPSHOT",
        "SNAPSHOT_INTERVAL",
        "TRUST_PICKLE",
        "URL",
        "PREFIX",
        "OWNER_KEY",
        "LOGOUT_ON_PASSWORD_CHANGE",
        "ABSOLUTE_TTL",
        "RENEW_EVERY",
        "RENEW_GRACE",
        "MAX_SESSIONS_PER_USER",
        "TRUSTED_PROXIES",
        "TRUNCATE_IP",
    }
)
_LIFETIMES = ("ABSOLUTE_TTL", "RENEW_EVERY", "RENEW_GRACE", "MAX_SESSIONS_PER_USER")

_lock = threading.Lock()
_NOT_GIVEN: Any = object()  # pop's default when none is given
_store: StoreProtocol | None = None
_owned = False  # whether _store was built here (and so is ours to close)


def build_store(options: Mapping[str, Any]) -> StoreProtocol:
    """Build the store a ``LEMBRO`` settings dict describes.

    ``"STORE"`` selects it: ``"memory"`` (the default) builds a :class:`lembro.MemoryStore`;
    ``"redis"`` a ``lembro.RedisStore`` on ``"URL"`` (keys under ``"PREFIX"``); a store
    object is returned as is.
    Raises ``ImproperlyConfigured`` for unknown keys and values the store rejects.
    """
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"LEMBRO must be a dict, not {type(options).__name__}")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown LEMBRO option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTIONS))}"
        )
    try:
        owner_key = check_owner_key(options.get("OWNER_KEY", USER_SESSION_KEY))
    except LembroError as e:
        raise ImproperlyConfigured(f"LEMBRO['OWNER_KEY']: {e}") from e
    try:
        trusted_networks(options.get("TRUSTED_PROXIES") or ())
    except LembroError as e:
        raise ImproperlyConfigured(f"LEMBRO['TRUSTED_PROXIES']: {e}") from e
    if not isinstance(options.get("TRUNCATE_IP", False), bool):
        raise ImproperlyConfigured(
            f"LEMBRO['TRUNCATE_IP'] is {options['TRUNCATE_IP']!r}: expected True or False"
        )
    lifetimes = {
        name.lower(): options[name] for name in _LIFETIMES if options.get(name) is not None
    }
    on_password = options.get("LOGOUT_ON_PASSWORD_CHANGE", False)
    if not isinstance(on_password, bool):
        raise ImproperlyConfigured(
            f"LEMBRO['LOGOUT_ON_PASSWORD_CHANGE'] is {on_password!r}: expected True or False"
        )
    kind = options.get("STORE", "memory")
    if isinstance(kind, StoreProtocol):
        _check_store_owner(kind, options, on_password)
        if lifetimes:
            raise ImproperlyConfigured(
                f"LEMBRO['{next(iter(lifetimes)).upper()}'] with a store object in "
                "LEMBRO['STORE']: set it on the store only"
            )
        return kind
    if on_password and owner_key != USER_SESSION_KEY:
        raise ImproperlyConfigured(
            "LEMBRO['LOGOUT_ON_PASSWORD_CHANGE'] needs the sessions indexed by the user "
            "login() writes: leave LEMBRO['OWNER_KEY'] at its default, '_auth_user_id'"
        )
    ttl = options.get("TTL")
    if ttl is None:
        ttl = settings.SESSION_COOKIE_AGE
    serializer = options.get("SERIALIZER", "msgpack")
    try:
        if kind == "memory":
            return MemoryStore(
                options.get("MAX_SIZE", "4M"),
                options.get("INTERVAL", 360),
                ttl=ttl,
                low_water=options.get("LOW_WATER", 0.75),
                serializer=serializer,
                snapshot=options.get("SNAPSHOT"),
                snapshot_interval=options.get("SNAPSHOT_INTERVAL"),
                trust_pickle=options.get("TRUST_PICKLE", False),
                owner_key=owner_key,
                **lifetimes,
            )
        if kind == "redis":
            return _redis_store(options, ttl, serializer, owner_key, lifetimes)
    except LembroError as e:
        raise ImproperlyConfigured(f"LEMBRO: {e}") from e
    raise ImproperlyConfigured(
        f"LEMBRO['STORE'] is {kind!r}: expected 'memory', 'redis' or a store object"
    )


def _check_store_owner(store: StoreProtocol, options: Mapping[str, Any], on_password: bool) -> None:
    """A store object keeps its own ``owner_key``: refuse settings that say otherwise."""
    owner_key = getattr(store, "owner_key", None)
    if "OWNER_KEY" in options and options["OWNER_KEY"] != owner_key:
        raise ImproperlyConfigured(
            f"LEMBRO['OWNER_KEY'] is {options['OWNER_KEY']!r} but the store in "
            f"LEMBRO['STORE'] has owner_key={owner_key!r}: set it on the store only"
        )
    if on_password and owner_key != USER_SESSION_KEY:
        raise ImproperlyConfigured(
            "LEMBRO['LOGOUT_ON_PASSWORD_CHANGE'] needs the sessions indexed by the user "
            "login() writes: build the store in LEMBRO['STORE'] with "
            "owner_key='_auth_user_id'"
        )


def _redis_store(
    options: Mapping[str, Any],
    ttl: float,
    serializer: Any,
    owner_key: str | None,
    lifetimes: Mapping[str, Any],
) -> StoreProtocol:
    """The hook for ``"STORE": "redis"``: imported only when asked for, so Redis stays optional."""
    url = options.get("URL")
    if not isinstance(url, str) or not url:
        raise ImproperlyConfigured("LEMBRO['STORE'] = 'redis' needs LEMBRO['URL'], a Redis URL")
    try:
        from . import RedisStore
    except ImportError as e:
        raise ImproperlyConfigured(
            "LEMBRO['STORE'] = 'redis' needs lembro.RedisStore, which this installation "
            f"does not provide ({e}); install it with: pip install lembro[redis]"
        ) from e
    return RedisStore(
        url,
        prefix=options.get("PREFIX", "lembro:"),
        ttl=ttl,
        serializer=serializer,
        trust_pickle=options.get("TRUST_PICKLE", False),
        owner_key=owner_key,
        **lifetimes,
    )


def _absolute_ttl() -> float | None:
    """The process-wide store's ``absolute_ttl``, looked up once per store."""
    global _absolute
    store = get_store()
    known = _absolute
    if known is None or known[0] is not store:
        known = _absolute = (store, store_absolute_ttl(store))
    return known[1]


_absolute: tuple[StoreProtocol, float | None] | None = None


def get_store() -> StoreProtocol:
    """The process-wide store the engine uses, built from ``settings.LEMBRO`` on first call."""
    store = _store
    if store is not None:
        return store
    return _build_once()


def _build_once() -> StoreProtocol:
    global _store, _owned
    with _lock:
        if _store is None:  # another thread may have built it while this one waited
            options = getattr(settings, "LEMBRO", None) or {}
            store = build_store(options)
            _owned = store is not options.get("STORE")  # a store the user built stays theirs
            _store = store
        return _store


def _reset(**kwargs: Any) -> None:
    """Drop the store when ``LEMBRO`` changes, so the next request builds the new one."""
    global _store, _owned
    if kwargs.get("setting") != "LEMBRO":
        return
    with _lock:
        old, owned = _store, _owned
        _store, _owned = None, False
    if old is not None and owned:
        old.close()


setting_changed.connect(_reset, dispatch_uid="lembro.django.reset")


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """Django system check: ``LEMBRO`` builds a store (``lembro.E001`` when it does not).

    The store built to check it is closed again; the process's own store is untouched.
    """
    options = getattr(settings, "LEMBRO", None) or {}
    try:
        store = build_store(options)
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), hint="see lembro.django's docstring", id="lembro.E001")]
    if isinstance(options, Mapping) and store is not options.get("STORE"):
        store.close()
    return []


def check_engine(**kwargs: Any) -> list[checks.CheckMessage]:
    """Django system check: a ``SESSION_ENGINE`` naming lembro names ``"lembro.django"``
    (``lembro.E002`` when it names another lembro path, which would fail only at the first
    request: ``"lembro"`` finds the ``SessionStore`` protocol, not an engine)."""
    engine = getattr(settings, "SESSION_ENGINE", None)
    if not isinstance(engine, str) or engine == "lembro.django":
        return []
    if engine.lower().partition(".")[0] != "lembro":
        return []
    return [
        checks.Error(
            f"SESSION_ENGINE = {engine!r} is not lembro's session engine",
            hint="SESSION_ENGINE = 'lembro.django'",
            id="lembro.E002",
        )
    ]


def _user_owner(user: Any) -> str:
    """The owner a user object or primary key names, as ``login()`` writes it to the
    session: ``user._meta.pk.value_to_string(user)``."""
    if isinstance(user, (str, int, uuid.UUID)) and not isinstance(user, bool):
        return check_owner(str(user) if isinstance(user, uuid.UUID) else user)
    meta = getattr(user, "_meta", None)
    if meta is None or getattr(meta, "pk", None) is None or getattr(user, "pk", None) is None:
        raise InvalidOption("user", user, "a saved user object, or its primary key")
    return check_owner(str(meta.pk.value_to_string(user)))


def logout_everywhere(user: Any, keep: SessionBase | str | None = None) -> int:
    """End every session of ``user`` (a user object or its primary key; with another
    ``OWNER_KEY``, the str or int the app writes there) but ``keep``; return how many
    were ended.

    ``keep``: the session to spare, usually ``request.session`` ("sign out my other
    devices"), or its key; ``None`` ends them all (to end the current request's session
    too, call ``django.contrib.auth.logout(request)`` as well). Each other device gets a
    new, anonymous session on its next request, and a request of an ended session that
    is running meanwhile does not bring it back (its save raises ``UpdateError``, as
    after any logout). Raises ``InvalidOption`` for a bad ``user`` or ``keep``, or when
    the store has no owner index (``LEMBRO['OWNER_KEY']`` is ``None``), and
    ``StoreUnavailable`` when the store cannot be reached.
    """
    owner = _user_owner(user)
    if isinstance(keep, SessionBase):
        keep = keep.session_key
    elif keep is not None and not isinstance(keep, str):
        raise InvalidOption("keep", keep, "request.session, a session key, or None")
    return get_store().destroy_sessions_of(owner, keep=keep)


class LembroConfig(AppConfig):  # type: ignore[misc]
    """Put ``"lembro.django.LembroConfig"`` in ``INSTALLED_APPS`` to have ``manage.py
    check`` (and ``runserver``, ``migrate``...) validate ``LEMBRO`` and ``SESSION_ENGINE``
    before serving. With a ``SNAPSHOT`` and ``SESSION_ENGINE = "lembro.django"``, it
    also builds the store at start-up, in the main thread, where the store can catch
    SIGTERM to write its snapshot (built lazily at the first request, in a request
    thread, it cannot)."""

    name = "lembro"
    label = "lembro"
    verbose_name = "lembro sessions"

    def ready(self) -> None:
        checks.register(check_settings, checks.Tags.security)
        checks.register(check_engine)
        options = getattr(settings, "LEMBRO", None) or {}
        if options.get("SNAPSHOT") and settings.SESSION_ENGINE == "lembro.django":
            get_store()


class SessionStore(SessionBase):  # type: ignore[misc]
    """A Django session engine over the lembro store from :func:`get_store`.

    The record under a key is the session dict itself (the store serializes it), alive
    ``get_expiry_age()`` seconds from its last save.
    """

    _session_key: str | None  # a property of SessionBase: None for a key it rejects
    # A key this instance left without a record (its data was empty or already expired),
    # so a later save of it creates the record instead of taking its absence for a logout.
    _unwritten: str | None = None
    # The user and password hash the session was loaded with (or last saved with), to see
    # a password change made through update_session_auth_hash on this session.
    _loaded_auth: tuple[object, object] = (None, None)
    # A cycle_key found the record ended by a logout in another request: whatever this
    # request writes into the session after it is not saved (the logout wins).
    _ended_meanwhile = False
    # What the store gave, as loaded (a copy of the dict Django changes; the values are
    # the session's own objects), and each container handed out: its key's fingerprint,
    # taken before it was. A save writes back what changed from these (see _changes).
    _loaded: dict[str, Any] | None = None
    _before: dict[str, object] | None = None
    _modified = False
    # The request's META, for the device recorded when the session is created or its key
    # cycled (RecordDeviceMiddleware sets it), and when the session ends for good
    # (time.monotonic() seconds), if it does: the cookie never outlives it.
    client: Mapping[str, Any] | None = None
    _deadline: float | None = None
    # Whether the store moved the session to a new key as it loaded it (renew_every): the
    # new key must reach the browser, whatever the response.
    renewed = False

    def __init__(self, session_key: str | None = None) -> None:
        # SessionBase's, but for the serializer: lembro's store serializes, so Django's
        # SESSION_SERIALIZER is imported only if asked for (see serializer).
        self._session_key = session_key
        self.accessed = False
        self._modified = False

    @property
    def serializer(self) -> Any:
        """Django's ``SESSION_SERIALIZER`` class, as ``SessionBase`` sets it (used by
        ``encode``/``decode`` only: the store serializes the session itself)."""
        found = self.__dict__.get("_serializer")
        if found is None:
            found = self.__dict__["_serializer"] = import_string(settings.SESSION_SERIALIZER)
        return found

    @serializer.setter
    def serializer(self, value: Any) -> None:
        self.__dict__["_serializer"] = value

    def _get_session(self, no_load: bool = False) -> dict[str, Any]:
        # SessionBase's, without raising and catching AttributeError at each request's
        # first access.
        self.accessed = True
        cache: dict[str, Any] | None = self.__dict__.get("_session_cache")
        if cache is None:
            cache = {} if no_load or self.session_key is None else self.load()
            self._session_cache = cache
        return cache

    _session = property(_get_session)

    @property
    def modified(self) -> bool:
        """Whether the session changed: written through its methods (or set so), or a
        container handed out changed in place since, so Django's middleware saves it
        without the app setting ``modified`` after ``session["cart"].append(x)``."""
        if self._modified:
            return True
        before = self._before
        data: dict[str, Any] | None = getattr(self, "_session_cache", None)
        return bool(before) and data is not None and changed_inside(data, before)

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value

    def load(self) -> dict[str, Any]:
        """Return the session's data; a missing, expired or malformed key gets a new session."""
        key = self.session_key
        data: dict[str, Any] | None = None
        if is_session_id(key):
            store = get_store()
            load = getattr(store, "load", None)
            try:
                if callable(load):
                    loaded = load(key)
                    if loaded is not None:
                        current, data, left = loaded
                        if left is not None:
                            self._deadline = time.monotonic() + left
                        if current != key:
                            # Renewed: saved under its new key, which the middleware then
                            # sends as the cookie.
                            self._session_key = current
                            self._modified = True
                            self.renewed = True
                else:
                    data = store.get(key)
            except SerializationError:
                log.warning("session %s does not deserialize: starting a new one", redact(key))
        if data is None:
            if key is not None:
                if is_session_id(key):
                    REJECTED.unknown_id += 1
                else:
                    REJECTED.malformed += 1
            # Never adopt a key the store does not hold: the next save makes a new one.
            self._session_key = None
            return {}
        self._loaded_auth = (data.get(USER_SESSION_KEY), data.get(HASH_SESSION_KEY))
        self._loaded, self._before = dict(data), None
        return data

    # Each read that hands out a container fingerprints its key first, so a change made
    # in it is written back (see lembro._changes).
    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if type(value) not in PLAIN:
            self._hand_out(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        if type(value) not in PLAIN and key in self._session:
            self._hand_out(key, value)
        return value

    def setdefault(self, key: str, value: Any) -> Any:
        found = super().setdefault(key, value)
        if type(found) not in PLAIN:
            self._hand_out(key, found)
        return found

    def pop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        session = self._session
        if key in session and type(session[key]) not in PLAIN:
            self._hand_out(key, session[key])
        return super().pop(key) if default is _NOT_GIVEN else super().pop(key, default)

    def items(self) -> Any:
        self._hand_out_all(self._session)
        return super().items()

    def values(self) -> Any:
        self._hand_out_all(self._session)
        return super().values()

    async def aget(self, key: str, default: Any = None) -> Any:
        value = await super().aget(key, default)
        if type(value) not in PLAIN and key in self._session_cache:
            self._hand_out(key, value)
        return value

    async def asetdefault(self, key: str, value: Any) -> Any:
        found = await super().asetdefault(key, value)
        if type(found) not in PLAIN:
            self._hand_out(key, found)
        return found

    async def apop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        session = await self._aget_session()
        if key in session and type(session[key]) not in PLAIN:
            self._hand_out(key, session[key])
        if default is _NOT_GIVEN:
            return await super().apop(key)
        return await super().apop(key, default)

    async def aitems(self) -> Any:
        self._hand_out_all(await self._aget_session())
        return await super().aitems()

    async def avalues(self) -> Any:
        self._hand_out_all(await self._aget_session())
        return await super().avalues()

    def _hand_out(self, key: str, value: Any) -> None:
        before = self._before
        if before is None:
            before = self._before = {}
        if key not in before:
            before[key] = fingerprint_key(key, value)

    def _hand_out_all(self, session: dict[str, Any]) -> None:
        for key, value in session.items():
            if type(value) not in PLAIN:
                self._hand_out(key, value)

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Django's age for the session (seconds), no later than its absolute end: so the
        cookie's ``Max-Age`` never outlives it."""
        age: int = super().get_expiry_age(**kwargs)
        if kwargs:
            return age
        return self.capped(age)

    def capped(self, age: int) -> int:
        """``age`` seconds, or fewer: no later than the session's absolute end."""
        deadline = self._deadline
        if deadline is None:
            # Not loaded with an absolute end: a new session, which gets the whole
            # lifetime (Django's middleware asks before it saves the session).
            absolute = _absolute_ttl()
            return age if absolute is None else min(age, int(absolute))
        return max(0, min(age, int(deadline - time.monotonic())))

    def _device(self) -> Device | None:
        """The client of the request this session belongs to, when the middleware said."""
        meta = self.client
        if meta is None:
            return None
        options = getattr(settings, "LEMBRO", None) or {}
        return client_device(
            meta.get("REMOTE_ADDR"),
            meta,
            trusted_proxies=options.get("TRUSTED_PROXIES") or (),
            truncate=bool(options.get("TRUNCATE_IP")),
        )

    def _new_lifetime(self, store: StoreProtocol) -> None:
        """A session that starts now: it ends for good ``absolute_ttl`` seconds from now."""
        absolute = store_absolute_ttl(store)
        self._deadline = None if absolute is None else time.monotonic() + absolute

    def exists(self, session_key: str | None) -> bool:
        """Whether the store holds a live session under ``session_key``."""
        return is_session_id(session_key) and session_key in get_store()

    def create(self) -> None:
        """Give the session a new key and store it, empty or not, as Django's engines do."""
        while True:
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:  # another session took the key meanwhile: draw again
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        """Store the session for ``get_expiry_age()`` seconds, even when it is empty.

        ``must_create``: raise ``CreateError`` if the key is taken; otherwise raise
        ``UpdateError`` if the record is gone (a logout elsewhere), never resurrecting it.
        An expiry in the past removes the record. After a ``cycle_key()`` that found the
        record ended meanwhile, raises ``UpdateError`` (until the session is flushed).
        """
        self._save(must_create, None)

    def _save_with(self, age: int | None) -> None:
        """:meth:`save`, for ``age`` seconds when given (what ``get_expiry_age()`` gives,
        which lembro's middleware has just computed)."""
        self._save(False, age)

    def _save(self, must_create: bool, age: int | None) -> None:
        if self._ended_meanwhile:
            raise UpdateError  # Django's middleware answers 400 (SessionInterrupted)
        data = self._get_session(no_load=must_create)
        key = self.session_key
        if not is_session_id(key):  # no key yet, or one this server did not issue
            self._session_key = None
            self.create()
            return
        store = get_store()
        if age is None:
            age = self.get_expiry_age()
        if age <= 0:  # an expiry in the past: no record
            store.destroy(key)
            self._unwritten = key
            return
        if must_create or key == self._unwritten:
            if must_create and key in store:
                raise CreateError
            create(store, key, data, age, self._device())
            self._new_lifetime(store)
        elif not self._write_back(store, key, data, age):
            raise UpdateError  # removed meanwhile, by a logout in another request
        self._unwritten = None
        if self._loaded is not None:  # what a later save in this request compares with
            self._loaded = dict(data)
            before = self._before
            if before:
                self._before = {k: fingerprint_key(k, data[k]) for k in before if k in data}
        self._after_save(store, key, data)

    def _write_back(self, store: StoreProtocol, key: str, data: dict[str, Any], age: int) -> bool:
        """Write the loaded session back under ``key`` for ``age`` seconds: only the keys
        this request set, deleted or changed in place, through the store's ``update`` (the
        whole of ``data`` by ``replace`` on a store without it, or for a session this
        instance did not load); whether the record was still there."""
        update = getattr(store, "update", None)
        if self._loaded is None or not callable(update):
            return store.replace(key, data, ttl=age)
        changes, deleted = changes_of(data, self._loaded, self._before)
        updated: bool = update(key, changes, deleted, ttl=age)
        return updated

    def _after_save(self, store: StoreProtocol, key: str, data: dict[str, Any]) -> None:
        """With ``LOGOUT_ON_PASSWORD_CHANGE``: when the session keeps its user but holds a
        new password hash (``update_session_auth_hash``), end the user's other sessions."""
        user, digest = data.get(USER_SESSION_KEY), data.get(HASH_SESSION_KEY)
        loaded_user, loaded_digest = self._loaded_auth
        self._loaded_auth = (user, digest)
        if (
            user is None
            or user != loaded_user
            or loaded_digest is None
            or digest == loaded_digest
            or not (getattr(settings, "LEMBRO", None) or {}).get("LOGOUT_ON_PASSWORD_CHANGE")
        ):
            return
        store.destroy_sessions_of(user, keep=key)

    def clear(self) -> None:
        """Empty the session. A flush (a login as someone else, or with a stale password
        hash) starts from here too: what it writes next is not a password change."""
        super().clear()
        self._loaded_auth = (None, None)
        self._ended_meanwhile = False

    def cycle_key(self, reset_lifetime: bool = True) -> None:
        """Move the data to a new key and remove the old record (``login()`` runs this).

        ``reset_lifetime=True`` (the default, and what ``login()`` does) is a sign-in: the
        new key starts a new absolute lifetime (``ABSOLUTE_TTL`` from now). ``False`` is a
        change of privilege inside one sign-in: the session keeps the absolute end it had.
        The device is recorded on the new key either way (with
        :class:`RecordDeviceMiddleware`).

        One ``rename`` in the store (a ``destroy`` then a ``create`` on a store without
        it): a failed write leaves the old record, and a logout everywhere never falls
        between the two. If the old record was already gone (a logout in another
        request), or its user's sessions are being ended, the logout wins: the session
        is left empty and keyless instead, and what the request writes into it next
        (``login()`` writes the user) is not saved: the save raises ``UpdateError``, as
        for any session a logout ended while the request ran.
        """
        data = self._session
        key = self.session_key
        if not is_session_id(key) or key == self._unwritten:
            self.create()
            self._session_cache = data
            return
        store = get_store()
        rename = getattr(store, "rename", None)
        age = self.get_expiry_age()
        if not callable(rename) or age <= 0:
            if not store.destroy(key):
                self._logged_out()
                return
            self.create()
            self._session_cache = data
            return
        new = self._get_new_session_key()
        options = _lifetime_options(rename, reset_lifetime, self._device())
        if not rename(key, new, data, ttl=age, **options):
            self._logged_out()
            return
        if reset_lifetime:
            self._new_lifetime(store)
        self._session_key = new
        self._session_cache = data
        self.modified = True
        self._after_save(store, new, data)

    def _logged_out(self) -> None:
        """The record was gone when a ``cycle_key`` came for it: leave the session empty
        and keyless, as the logout did."""
        self._session_key = None
        self._session_cache = {}
        self.modified = True
        self._ended_meanwhile = True

    async def acycle_key(self, reset_lifetime: bool = True) -> None:
        """:meth:`cycle_key`, from async code."""
        await sync_to_async(self.cycle_key)(reset_lifetime)

    def delete(self, session_key: str | None = None) -> None:
        """Remove the record under ``session_key`` (default: this session's key)."""
        if session_key is None:
            session_key = self.session_key
        if session_key:
            get_store().destroy(session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Remove expired records now (``manage.py clearsessions``).

        A memory store this process built on this call holds nothing to purge: the
        sessions live in the server's process, which purges them itself every
        ``INTERVAL`` seconds. That is said on stderr, rather than pretending to purge.
        """
        built_here = _store is None
        store = get_store()
        if built_here and _owned and isinstance(store, MemoryStore):
            sys.stderr.write(
                "lembro: the memory session store lives inside the server process; this "
                "process has its own, empty one, so there is nothing to purge here. The "
                "server purges expired sessions itself every LEMBRO['INTERVAL'] seconds.\n"
            )
            return
        store.purge()
        if type(store).__module__.startswith("lembro.redis"):
            sys.stderr.write(
                "lembro: Redis removes expired sessions itself; nothing was left to purge.\n"
            )

    def _get_new_session_key(self) -> str:
        """A new 256-bit random key. Not looked up first (Django's engines ask the store,
        one more round trip on Redis): two draws never meet, and ``save(must_create=True)``
        still refuses a key that is taken."""
        return new_session_id()

    async def _aget_new_session_key(self) -> str:
        return new_session_id()


class RecordDeviceMiddleware:
    """Records each session's device (IP and user agent, see :mod:`lembro.clients`) when
    the session is created or its key cycled: put ``"lembro.django.RecordDeviceMiddleware"``
    right after ``SessionMiddleware`` in ``MIDDLEWARE``. ``LEMBRO['TRUSTED_PROXIES']``
    and ``LEMBRO['TRUNCATE_IP']`` say how the IP is read. It hands the request's
    ``META`` to the session, nothing more, so it costs next to nothing per request."""

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
    ) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        session = getattr(request, "session", None)
        if isinstance(session, SessionStore):
            session.client = request.META
        return self.get_response(request)


# The middleware subclasses Django's and serves SessionStore above: imported last.
from ._django_middleware import SessionMiddleware  # noqa: E402
