"""Server-side sessions for Starlette and FastAPI: a drop-in for Starlette's SessionMiddleware.

Change ``from starlette.middleware.sessions import SessionMiddleware`` to
``from lembro.starlette import SessionMiddleware`` and the session data moves out of the
cookie into a store (a :class:`lembro.MemoryStore` unless ``store=`` names another); the
cookie keeps only the session id, signed with keyed BLAKE2b (see :mod:`lembro._cookies`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

try:
    from starlette.datastructures import Secret
    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError("lembro.starlette needs Starlette: pip install 'lembro[starlette]'") from e

from ._changes import PLAIN as _PLAIN
from ._changes import changed_inside, changes_of, fingerprint_key
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
from .protocol import AsyncSessionStore, SessionStore, _supports, as_async
from .serializers import SessionDict

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

    from .lifetimes import Device

__all__ = ["Session", "SessionMiddleware", "logout_everywhere", "regenerate"]

log = logging.getLogger("lembro")

_CLEARED = "expires=Thu, 01 Jan 1970 00:00:00 GMT; "

#: A write re-sends an unchanged cookie (to slide its ``Max-Age``) only when this process
#: last sent it more than this fraction of ``max_age`` ago: the cookie may then end up to
#: this fraction of ``max_age`` before the record (1% of 14 days: about 3.4 hours).
RESEND_FRACTION = 0.01
#: How many ids' last cookie times the middleware remembers (about 150 bytes each).
SENT_COOKIES_REMEMBERED = 256
#: How many ``Cookie`` headers that carried a verified session id the middleware
#: remembers, with what they carried, and the longest it remembers (bytes): a returning
#: client sends the same header on every request.
COOKIE_HEADERS_REMEMBERED = 256
COOKIE_HEADER_REMEMBERED_BYTES = 512


class Session(SessionDict):
    """The dict in ``scope["session"]``, as Starlette's ``Session``: ``accessed`` once read
    or written, ``modified`` once written through its own methods.

    A change made inside a nested value (``session["cart"].append(x)``) is seen too: the
    first time a list, dict or other container is handed out, that key's bytes are kept,
    and compared with what it holds when the response starts. A loaded session writes
    back only the keys it set, deleted or changed so (see :mod:`lembro._changes`).
    """

    __slots__ = (
        "_before",
        "_loaded",
        "_middleware",
        "_regenerate",
        "_reset_lifetime",
        "_sid",
        "accessed",
        "modified",
    )

    def __init__(
        self,
        data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        /,
        sid: str | None = None,
        middleware: SessionMiddleware | None = None,
    ) -> None:
        dict.__init__(self, data)
        self.accessed = False
        self.modified = False
        self._regenerate = False
        self._reset_lifetime = True
        # Each container handed out: its key's fingerprint, taken before it was.
        self._before: dict[str, object] | None = None
        # What the store gave, kept as loaded: the values are the session's own objects.
        self._loaded: dict[str, Any] = data if type(data) is dict else {}
        self._sid = sid  # the id the session was loaded under (None: a new session)
        self._middleware = middleware  # the middleware that loaded it

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        """Copied (``copy.copy``, ``copy.deepcopy``) or pickled, a session is its data
        alone, as a plain dict: never the middleware it came from."""
        self.accessed = True
        self._hand_out_all()
        return dict, (dict(dict.items(self)),)

    def mark_accessed(self) -> None:
        self.accessed = True

    def mark_modified(self) -> None:
        self.accessed = True
        self.modified = True

    def _hand_out(self, key: str, value: Any) -> Any:
        if type(value) not in _PLAIN:
            before = self._before
            if before is None:
                before = self._before = {}
            if key not in before:
                before[key] = fingerprint_key(key, value)
        return value

    def _hand_out_all(self) -> None:
        for key, value in dict.items(self):
            if type(value) not in _PLAIN:
                self._hand_out(key, value)

    def changed_inside(self) -> bool:
        """Whether a container handed out has changed since (always false if none was)."""
        return changed_inside(self, self._before)

    # Reads count as access even when the app bypasses ``request.session`` (which marks it
    # itself), so ``Vary: Cookie`` is sent wherever the response may depend on the session.
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        value = dict.__getitem__(self, key)
        if type(value) not in _PLAIN:
            self._hand_out(key, value)
        return value

    def get(self, key: str, default: Any = None, /) -> Any:
        self.accessed = True
        value = dict.get(self, key, default)
        if type(value) not in _PLAIN and dict.__contains__(self, key):
            self._hand_out(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return super().__iter__()

    def __len__(self) -> int:
        self.accessed = True
        return super().__len__()

    def keys(self) -> dict_keys[str, Any]:
        self.accessed = True
        return super().keys()

    def values(self) -> dict_values[str, Any]:
        self.accessed = True
        self._hand_out_all()
        return super().values()

    def items(self) -> dict_items[str, Any]:
        self.accessed = True
        self._hand_out_all()
        return super().items()

    def copy(self) -> dict[str, Any]:
        self.accessed = True
        self._hand_out_all()
        return dict(dict.items(self))

    def __setitem__(self, key: str, value: Any) -> None:
        self.accessed = self.modified = True
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self.mark_modified()
        super().__delitem__(key)

    def clear(self) -> None:
        self.mark_modified()
        super().clear()

    def pop(self, key: str, *args: Any) -> Any:
        if dict.__contains__(self, key):
            self.mark_modified()
            # Handed out too: set back after a change in place, it is seen as changed.
            self._hand_out(key, dict.__getitem__(self, key))
        return super().pop(key, *args)

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self.mark_modified()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        if not dict.__contains__(self, key):
            self.mark_modified()
        return self._hand_out(key, super().setdefault(key, default))

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.mark_modified()
        super().update(*args, **kwargs)

    def __ior__(self, other: Any, /) -> Session:  # type: ignore[override,misc]
        self.mark_modified()
        return super().__ior__(other)


def regenerate(connection: HTTPConnection, reset_lifetime: bool = True) -> None:
    """Give the session a new id when the response starts and destroy the old record.

    Call it on login and on any change of privilege, so an id known before (planted or
    leaked) is worth nothing after. The data is kept; clear the session too on logout.
    If the old record is gone by then (a logout in another request), the logout wins: no
    record is written and the cookie is cleared.

    ``reset_lifetime=True`` (the default) is a sign-in: the new id starts a new absolute
    lifetime (the store's ``absolute_ttl`` from now). ``False`` is a change of privilege
    inside one sign-in: the session keeps the absolute end it had. The client's device
    is recorded on the new id either way.
    """
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError("regenerate() needs lembro.starlette.SessionMiddleware installed")
    session._regenerate = True
    session._reset_lifetime = reset_lifetime
    session.mark_accessed()


async def logout_everywhere(
    connection: HTTPConnection, owner: str | int, keep_current: bool = True
) -> int:
    """End every session of ``owner`` in the middleware's store; return how many ended.

    ``owner`` is what the store's ``owner_key`` field holds for the signed-in user (build
    the store with ``owner_key="user_id"``, say); owners compare as strings. With
    ``keep_current`` (the default: "sign out my other devices") the session of
    ``connection`` is kept; with ``keep_current=False`` it ends too when it is
    ``owner``'s, and is cleared, so the response deletes its cookie. Their next
    request, each other device gets a new, empty session.

    A concurrent request of an ended session does not write it back. Raises
    ``InvalidOption`` for a bad owner or a store without ``owner_key``,
    ``StoreUnavailable`` when the store cannot be reached, and ``RuntimeError`` without
    :class:`SessionMiddleware`.
    """
    name = check_owner(owner)
    session = connection.scope.get("session")
    if not isinstance(session, Session) or session._middleware is None:
        raise RuntimeError("logout_everywhere() needs lembro.starlette.SessionMiddleware installed")
    middleware = session._middleware
    keep = session._sid if keep_current else None
    ended = await middleware._store.destroy_sessions_of(name, keep=keep)
    # Read as a plain dict, not through Session's methods: nothing is handed out.
    if not keep_current and is_current_owner(middleware.store, dict(dict.items(session)), name):
        session.clear()  # an emptied session deletes its cookie when the response starts
    return ended


class SessionMiddleware:
    """Starlette's ``SessionMiddleware`` with the data kept in ``store``, not the cookie.

    Same arguments as Starlette's, plus ``secret_key_fallbacks`` (older keys whose
    cookies are still accepted and signed anew with ``secret_key``); ``max_age``
    (seconds) is both the cookie's lifetime and the record's, and with ``max_age=None``
    (a browser-session cookie) the record lives the store's ``ttl`` seconds from the
    last request that carried the cookie. ``store`` is any :class:`~lembro.SessionStore`
    or :class:`~lembro.AsyncSessionStore`; a sync store that may block runs in a worker
    thread, so the event loop never waits on it. A store built with ``owner_key=``
    indexes sessions by user, for :func:`logout_everywhere`.

    Lifetimes (issue 29): ``absolute_ttl`` (seconds from sign-in after which a session
    ends whatever its use), ``renew_every`` (seconds after which a session gets a new id
    on its next request) and ``renew_grace`` (seconds the replaced id still answers)
    configure the ``MemoryStore`` the middleware builds; a store passed in keeps its own
    (giving both is an ``InvalidOption``). The cookie's ``Max-Age`` never outlives the
    session's absolute end. Devices: ``trusted_proxies`` (the networks of the app's
    reverse proxies, whose ``X-Forwarded-For`` is believed, e.g. ``["127.0.0.1/32"]``)
    and ``truncate_ip`` (keep the /24 or /48 of the IP recorded with a session).

    Concurrent requests of one session never lose each other's changes: each writes back
    only the top-level keys it set, deleted or changed in place, applied to the record
    as it is then (the store's ``update``). Two requests that change different keys
    both keep their change; of two that change one key, the later write wins; a key one
    deletes is not brought back by another that only read it. A store of the app's
    without ``update`` gets the whole session, and the last request to finish wins. A
    record destroyed meanwhile (logout, regenerate) is never written back, under its
    old id or another, and that response sets no cookie.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | Secret,
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 60 * 60,  # 14 days, in seconds
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        store: SessionStore | AsyncSessionStore | None = None,
        secret_key_fallbacks: Sequence[str | Secret] = (),
        absolute_ttl: float | None = None,
        renew_every: float | None = None,
        renew_grace: float | None = None,
        trusted_proxies: TrustedProxies = (),
        truncate_ip: bool = False,
    ) -> None:
        self.app = app
        self.signer = CookieSigner(str(secret_key), [str(key) for key in secret_key_fallbacks])
        self.session_cookie = session_cookie
        self.max_age = max_age
        self.path = path
        self.security_flags = "httponly; samesite=" + same_site
        if https_only:
            self.security_flags += "; secure"
        if domain is not None:
            self.security_flags += f"; domain={domain}"
        if partitioned:
            self.security_flags += "; partitioned"
        lifetimes: dict[str, Any] = {
            name: value
            for name, value in (
                ("absolute_ttl", absolute_ttl),
                ("renew_every", renew_every),
                ("renew_grace", renew_grace),
            )
            if value is not None
        }
        if store is not None and lifetimes:
            name = next(iter(lifetimes))
            raise InvalidOption(name, lifetimes[name], "None with store= (set it on the store)")
        self.store: SessionStore | AsyncSessionStore = (
            MemoryStore(**lifetimes) if store is None else store
        )
        self._trusted = trusted_networks(trusted_proxies)
        self._truncate_ip = bool(truncate_ip)
        self._absolute_ttl = store_absolute_ttl(self.store)
        # The read a request makes: load (which may renew the id) where the store has it.
        self._loads = _supports(self.store, "load")
        self._store = as_async(self.store)
        # A store that never blocks (MemoryStore) is called directly on the hot path
        # (load, write back), saving a coroutine per call.
        inline = not isinstance(self.store, AsyncSessionStore) and not getattr(
            self.store, "blocking", True
        )
        self._inline: SessionStore | None = self.store if inline else None  # type: ignore[assignment]
        self._serializes_now = type(self.store) is MemoryStore
        # A loaded session writes back only what it changed, applied to the record as it
        # is then, so concurrent requests keep each other's changes; a store without
        # update gets the whole session (replace), and the last request to finish wins.
        self._updates = _supports(self.store, "update")
        self._ttl: float | None = None if max_age is None else float(max_age)
        lifetime = "" if max_age is None else f"Max-Age={max_age}; "
        self._cookie_prefix = f"{session_cookie}=".encode("latin-1")
        self._cookie_suffix = f"; path={path}; {lifetime}{self.security_flags}".encode("latin-1")
        # A cookie with max_age <= 0 is dead on arrival (Starlette still sends it): no record.
        self._persist = max_age is None or max_age > 0
        # When this process last sent each id's cookie (time.monotonic() seconds), for the
        # last SENT_COOKIES_REMEMBERED ids: see _sent_lately.
        self._sent: dict[str, float] = {}
        self._resend_after = 0.0 if max_age is None else max_age * RESEND_FRACTION
        # Cookie headers that carried a verified id, and what _session_cookie found in them.
        self._verified_headers: dict[bytes, tuple[str | None, str | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        sid, cookie = self._session_cookie(scope)
        data: dict[str, Any] | None = None
        left: float | None = None
        if sid is not None:
            try:  # a store that never blocks is called directly: no coroutine
                inline = self._inline
                # A websocket never renews: no response of its can carry the new id.
                if not self._loads or scope["type"] == "websocket":
                    data = inline.get(sid) if inline is not None else await self._store.get(sid)
                else:
                    loaded = inline.load(sid) if inline is not None else await self._store.load(sid)
                    if loaded is not None:
                        renewed, data, left = loaded
                        if renewed != sid:  # a new id: its cookie is signed and sent
                            sid, cookie = renewed, None
            except SerializationError:
                log.warning("session %s cannot be read back; starting a new one", redact(sid))
            if not data:  # unknown or expired: never adopted, a new id is made on write
                if data is None:
                    REJECTED.unknown_id += 1
                sid = cookie = None
        scope["session"] = Session(data or {}, sid, self)  # positional: no keyword dict
        # When the session ends for good (time.monotonic() seconds), if it does.
        deadline = None if left is None else time.monotonic() + left
        if scope["type"] == "websocket":
            # No response headers to carry a cookie: a websocket's session is read-only.
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message["headers"] = list(message.get("headers", ()))
                await self._commit(scope["session"], sid, cookie, headers, scope, deadline)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _session_cookie(self, scope: Scope) -> tuple[str | None, str | None]:
        """The session id in the request's session cookie, and the value to send back for
        it (see ``_unsign``); the cookie is read from the first ``Cookie`` header, the last
        of several of that name, as Starlette's ``request.cookies`` finds it.

        A header whose cookie verified is remembered with what it carried (the last
        ``COOKIE_HEADERS_REMEMBERED``, of at most ``COOKIE_HEADER_REMEMBERED_BYTES``
        each), so a returning client's costs one lookup; the answer depends only on the
        header, this middleware's cookie name and its keys, which never change. One that
        did not verify is never remembered: a flood of forged cookies cannot fill it."""
        for key, raw in scope["headers"]:
            if key == b"cookie":
                known = self._verified_headers.get(raw)
                if known is not None:
                    return known
                value = cookie_value(raw.decode("latin-1"), self.session_cookie, last=True)
                found = self._unsign(value)
                if found[0] is not None and len(raw) <= COOKIE_HEADER_REMEMBERED_BYTES:
                    if len(self._verified_headers) >= COOKIE_HEADERS_REMEMBERED:
                        self._verified_headers.clear()  # forgotten headers are verified again
                    self._verified_headers[raw] = found
                return found
        return None, None

    def _unsign(self, value: str | None) -> tuple[str | None, str | None]:
        """The session id a cookie value carries, and the value to send back for it
        (``None`` when it must be signed anew, with the current key); ``(None, None)``
        for no cookie or one this server did not sign."""
        if value is None:
            return None, None
        sid, resign = self.signer.unsign(value)
        return sid, None if resign or sid is None else value

    async def _commit(
        self,
        session: Any,
        sid: str | None,
        cookie: str | None,
        headers: list[tuple[bytes, bytes]],
        scope: Scope,
        deadline: float | None,
    ) -> None:
        """Write what changed to the store and the cookie, as the response starts;
        ``deadline``: when the loaded session ends for good (``time.monotonic()``
        seconds), if it does."""
        whole = not isinstance(session, Session)
        if whole:  # the app replaced it: take it as written, whole
            session = Session(session)
            session.mark_modified()
        if session.accessed:
            _vary_on_cookie(headers)
        # A MemoryStore is given the session itself: it serializes a SessionDict through
        # dict's own methods, at once, on this thread, and keeps only the bytes. Any other
        # store (a subclass too) gets a copy, which it may keep, or read later or elsewhere.
        data: dict[str, Any] = session if self._serializes_now else dict(dict.items(session))
        if not dict.__len__(session):
            if sid is not None:  # a stored session is never empty: this one was emptied
                await self._store.destroy(sid)
                headers.append(self._cookie("null", _CLEARED))
            return
        # Written through the session's own methods: written back, no need to compare.
        # Otherwise a read may still have changed a nested value: compare the bytes.
        changed = session.modified or session.changed_inside()
        if not (changed or session._regenerate or cookie is None):
            # The cookie is not re-sent (as Starlette), so only a browser-session cookie's
            # record may slide; with max_age it ends when the cookie does.
            if sid is not None and self.max_age is None:
                await self._store.touch(sid)
            return
        if sid is not None and session._regenerate:
            reset = session._reset_lifetime
            sid = (
                await aregenerate(
                    self._store,
                    sid,
                    data,
                    self._ttl,
                    reset_lifetime=reset,
                    device=self._device(scope),
                )
                if self._persist
                else None
            )
            if sid is None:  # logged out meanwhile: the logout wins
                headers.append(self._cookie("null", _CLEARED))
                return
            cookie = None
            if reset:
                deadline = self._new_deadline()
        elif sid is None:
            sid = new_session_id()
            if self._persist:
                await acreate(self._store, sid, data, self._ttl, self._device(scope))
            deadline = self._new_deadline()
        elif self._persist:
            if not changed:
                written = await self._store.touch(sid, self._ttl)
            elif self._inline is not None:  # a store that never blocks: no coroutine
                written = self._write_back_inline(sid, session, data, whole)
            else:
                written = await self._write_back(sid, session, data, whole)
            if not written:
                # Destroyed since it was loaded (a logout or a regenerate in another
                # request): it stays destroyed, this request's changes go with it, and the
                # cookie is left as the other request set it.
                return
        if cookie is None:
            cookie = self.signer.sign(sid)
        elif self.max_age is None:
            return  # same id, a cookie that ends with the browser: nothing to re-send
        elif self._sent_lately(sid):
            return  # same id, and an expiry that would move by under RESEND_FRACTION
        suffix = self._cookie_suffix
        if deadline is not None and self.max_age is not None:
            # The cookie never outlives the session's absolute end.
            max_age = cookie_max_age(self.max_age, deadline, time.monotonic())
            if max_age != self.max_age:
                suffix = suffix.replace(
                    f"Max-Age={self.max_age}; ".encode(), f"Max-Age={max_age}; ".encode(), 1
                )
        headers.append((b"set-cookie", self._cookie_prefix + cookie.encode() + suffix))
        if len(self._sent) >= SENT_COOKIES_REMEMBERED:
            self._sent.clear()  # forgotten ids only get their cookie once more
        self._sent[sid] = time.monotonic()

    def _new_deadline(self) -> float | None:
        """When a session that starts now ends for good (``time.monotonic()`` seconds)."""
        absolute = self._absolute_ttl
        return None if absolute is None else time.monotonic() + absolute

    def _device(self, scope: Scope) -> Device:
        """The client of the request ``scope`` (see :mod:`lembro.clients`)."""
        client = scope.get("client")
        return client_device(
            client[0] if client else None,
            scope.get("headers", ()),
            trusted_proxies=self._trusted,
            truncate=self._truncate_ip,
        )

    async def _write_back(
        self, sid: str, session: Session, data: dict[str, Any], whole: bool
    ) -> bool:
        """Write a loaded session that changed back under ``sid``: only the keys it set,
        deleted or changed in place, through the store's ``update`` (or the whole of it,
        ``data``, by ``replace``, on a store without ``update`` or when the app replaced
        the session); whether the record was still there."""
        if whole or not self._updates:
            return await self._store.replace(sid, data, self._ttl)
        changes, deleted = changes_of(session, session._loaded, session._before)
        return await self._store.update(sid, changes, deleted, self._ttl)

    def _write_back_inline(
        self, sid: str, session: Session, data: dict[str, Any], whole: bool
    ) -> bool:
        """``_write_back`` on a store that never blocks, called directly: no coroutine."""
        inline = self._inline
        assert inline is not None
        if whole or not self._updates:
            return inline.replace(sid, data, self._ttl)
        changes, deleted = changes_of(session, session._loaded, session._before)
        return inline.update(sid, changes, deleted, self._ttl)

    def _sent_lately(self, sid: str) -> bool:
        """Whether this process sent ``sid``'s cookie less than ``RESEND_FRACTION`` of
        ``max_age`` ago: sent again, its expiry would move by less than that, so the
        write slides the record but not the cookie. An id it does not remember (another
        process sent it, or it was forgotten) gets its cookie again."""
        sent = self._sent.get(sid)
        return sent is not None and time.monotonic() - sent < self._resend_after

    def _cookie(self, value: str, lifetime: str) -> tuple[bytes, bytes]:
        """A ``Set-Cookie`` header, as Starlette's middleware writes it."""
        cookie = f"{self.session_cookie}={value}; path={self.path}; {lifetime}{self.security_flags}"
        return b"set-cookie", cookie.encode("latin-1")


def _vary_on_cookie(headers: list[tuple[bytes, bytes]]) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header, or add the header."""
    for index, (key, value) in enumerate(headers):
        if len(key) == 4 and key.lower() == b"vary":  # no lowered copy of every name
            if b"cookie" not in value.lower():
                headers[index] = (key, value + b", Cookie")
            return
    headers.append((b"vary", b"Cookie"))
