"""``lembro.django.SessionMiddleware``: Django's ``SessionMiddleware`` with a short path
for lembro's engine.

It is Django's middleware (a subclass: same constructor, ``process_request``,
``process_response``, async mode, ``SessionInterrupted``), and ``request.session`` is the
engine's ``SessionStore`` with its whole API. What it changes is the work done around a
lembro session of each request: the ``SESSION_*`` settings are read once (again after
``override_settings`` changes one), the session's lifetime is read once and not twice,
the cookie's ``Expires`` date is formatted once a second, and the ``Set-Cookie`` line is
rendered from the attributes of the last one when only the session key differs. Every
other session (another engine's, an instance the view put in ``request.session``, a
subclass of lembro's that overrides how lifetimes are computed) goes through Django's own
``process_response`` unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from http.cookies import Morsel
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.cache import patch_vary_headers

__all__ = ["SessionMiddleware"]

# Django's message, word for word: apps and tests match on it.
_INTERRUPTED = (
    "The request's session was deleted before the request completed. "
    "The user may have logged out in a concurrent request, for example."
)


@dataclass(frozen=True, slots=True)
class _Conf:
    """The ``SESSION_*`` settings a response reads, taken once."""

    name: str
    age: int
    domain: str | None
    path: str
    secure: bool
    httponly: bool
    samesite: str | None
    save_every: bool
    at_browser_close: bool
    # The session cookie's attributes but expires and max-age, as Django's set_cookie
    # leaves them on a new Morsel; None when set_cookie must build it (a SameSite value
    # it refuses with a ValueError, which is Django's to raise).
    attributes: dict[str, Any] | None


_conf: _Conf | None = None
_AGES = (int, type(None))


def _read_conf() -> _Conf:
    global _conf
    samesite = settings.SESSION_COOKIE_SAMESITE
    attributes: dict[str, Any] | None = None
    if not samesite or str(samesite).lower() in ("lax", "none", "strict"):
        morsel: Morsel[str] = Morsel()
        morsel["path"] = settings.SESSION_COOKIE_PATH
        if settings.SESSION_COOKIE_DOMAIN is not None:
            morsel["domain"] = settings.SESSION_COOKIE_DOMAIN
        if settings.SESSION_COOKIE_SECURE:
            morsel["secure"] = True
        if settings.SESSION_COOKIE_HTTPONLY:
            morsel["httponly"] = True
        if samesite:
            morsel["samesite"] = samesite
        attributes = dict(morsel)
    conf = _Conf(
        name=settings.SESSION_COOKIE_NAME,
        age=settings.SESSION_COOKIE_AGE,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=settings.SESSION_COOKIE_HTTPONLY,
        samesite=samesite,
        save_every=settings.SESSION_SAVE_EVERY_REQUEST,
        at_browser_close=settings.SESSION_EXPIRE_AT_BROWSER_CLOSE,
        attributes=attributes,
    )
    _conf = conf
    return conf


def _forget_conf(**kwargs: Any) -> None:
    """A ``SESSION_*`` setting changed (``override_settings``): read them again."""
    global _conf
    if str(kwargs.get("setting", "")).startswith("SESSION_"):
        _conf = None


setting_changed.connect(_forget_conf, dispatch_uid="lembro.django.middleware.conf")

# The last Expires date formatted: (whole seconds since the epoch, the date). A new one
# replaces it whole, so threads never see half of it.
_date: tuple[int, str] = (-1, "")


def _http_date(when: float) -> str:
    """``django.utils.http.http_date(when)``, formatted once per second."""
    global _date
    second = int(when)
    cached = _date
    if cached[0] == second:
        return cached[1]
    text = formatdate(second, usegmt=True)
    _date = (second, text)
    return text


# The last cookie's attributes and what Morsel.OutputString renders after "name=value"
# for them: one rendering serves every session cookie of the same second.
_rendered: tuple[dict[str, Any], str] = ({}, "")


_UNBUILT = ("", "", None)


class _SessionCookie(Morsel[str]):
    """The session cookie as ``set_cookie`` would leave it on a new Morsel. Rendered as
    the last cookie with the same attributes was, while it is still as built: a change
    to it (``cookie["max-age"] = 0``, ``cookie.set(...)``) renders it afresh."""

    def __init__(self, name: str, key: str, attributes: dict[str, Any]) -> None:
        # Morsel.__init__ would only set every attribute to "", then each to its value.
        dict.update(self, attributes)
        self._key = name
        self._value = self._coded_value = key
        self._built = (name, key, attributes)

    def OutputString(self, attrs: Any = None) -> str:
        # A copy made by pickle or copy has no _built: rendered as any Morsel.
        name, key, attributes = self.__dict__.get("_built", _UNBUILT)
        if (
            attrs is not None
            or attributes is None
            or self._key != name
            or self._coded_value != key
            or not dict.__eq__(self, attributes)
        ):
            return super().OutputString(attrs)
        global _rendered
        last, rest = _rendered
        if last != attributes:
            text = super().OutputString()
            rest = text[len(name) + 1 + len(key) :]
            _rendered = (attributes, rest)
        return f"{name}={key}{rest}"


def _fast_methods(engine: type[Any], lembro: type[Any]) -> bool:
    """Whether ``engine`` computes lifetimes as lembro's engine does (Django's
    ``SessionBase``, capped at the absolute end), which the short path reproduces from the
    settings, and saves as lembro's engine does."""
    return (
        engine.save is lembro.save
        and engine.get_expiry_age is lembro.get_expiry_age
        and all(
            getattr(engine, name) is getattr(SessionBase, name)
            for name in ("get_expire_at_browser_close", "get_session_cookie_age")
        )
    )


class SessionMiddleware(DjangoSessionMiddleware):  # type: ignore[misc]
    """A drop-in for ``django.contrib.sessions.middleware.SessionMiddleware`` with
    ``SESSION_ENGINE = "lembro.django"``: put it in ``MIDDLEWARE`` where Django's was.

    Sessions, cookies (``SESSION_COOKIE_*``), ``SESSION_SAVE_EVERY_REQUEST``,
    ``SESSION_EXPIRE_AT_BROWSER_CLOSE``, ``Vary: Cookie``, the 5xx rule (no save) and
    ``SessionInterrupted`` behave as with Django's; each request's save writes back only
    the keys it changed, as the engine does. Raises ``ImproperlyConfigured`` when
    ``SESSION_ENGINE`` is not lembro's engine (or a subclass of its ``SessionStore``).
    """

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        from .django import SessionStore

        if not (
            isinstance(self.SessionStore, type) and issubclass(self.SessionStore, SessionStore)
        ):
            raise ImproperlyConfigured(
                f"lembro.django.SessionMiddleware needs lembro's session engine, not "
                f"SESSION_ENGINE = {settings.SESSION_ENGINE!r}: set "
                "SESSION_ENGINE = 'lembro.django' (or keep Django's SessionMiddleware)"
            )
        # The sessions the short path serves: the engine's own class, when it computes
        # lifetimes as Django does.
        fast = _fast_methods(self.SessionStore, SessionStore)
        self._fast: type[Any] | None = self.SessionStore if fast else None

    def __call__(self, request: Any) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        self.process_request(request)
        return self.process_response(request, self.get_response(request))

    def process_request(self, request: Any) -> None:
        conf = _conf or _read_conf()
        session = request.session = self.SessionStore(request.COOKIES.get(conf.name))
        session.client = request.META  # the device, recorded if the session is created

    def process_response(self, request: Any, response: Any) -> Any:
        """Save the session if it changed (or with ``SESSION_SAVE_EVERY_REQUEST``) and set
        its cookie, delete the cookie of a session emptied, add ``Vary: Cookie`` when the
        session was used: what Django's ``process_response`` does."""
        session = getattr(request, "session", None)
        if session is None or type(session) is not self._fast:
            return super().process_response(request, response)
        conf = _conf or _read_conf()
        accessed = session.accessed
        modified = session.modified
        empty = session.is_empty()
        if empty and conf.name in request.COOKIES:
            response.delete_cookie(
                conf.name, path=conf.path, domain=conf.domain, samesite=conf.samesite
            )
            _vary_on_cookie(response)
            return response
        vary = accessed
        if (modified or conf.save_every) and not empty:
            expiry = session._session.get("_session_expiry")
            if expiry is None:
                at_close, age = conf.at_browser_close, conf.age
            else:
                at_close, age = expiry == 0, None
            max_age: int | None = None
            expires: str | None = None
            if not at_close:
                max_age = session.get_expiry_age() if age is None else session.capped(age)
                expires = _http_date(time.time() + max_age)
            if response.status_code < 500:
                try:
                    session._save_with(age)
                except UpdateError:
                    raise SessionInterrupted(_INTERRUPTED) from None
                self._set_cookie(conf, response, session.session_key, max_age, expires)
                vary = True
            elif session.renewed:
                # Not saved (a 5xx), but the store moved the session as it loaded it: the
                # browser needs the new key, or its next request looks like a stolen one.
                self._set_cookie(conf, response, session.session_key, max_age, expires)
                vary = True
        if vary:
            _vary_on_cookie(response)
        return response

    @staticmethod
    def _set_cookie(
        conf: _Conf, response: Any, key: str, max_age: int | None, expires: str | None
    ) -> None:
        """``response.set_cookie`` with the session cookie settings, building the Morsel
        directly when nothing in the response or the settings needs set_cookie's work."""
        cookies = response.cookies
        # The key needs no quoting in the cookie: a save leaves the session under a key
        # of lembro's shape (an id it did not issue is replaced by a new one).
        if conf.attributes is None or conf.name in cookies or type(max_age) not in _AGES:
            response.set_cookie(
                conf.name,
                key,
                max_age=max_age,
                expires=expires,
                domain=conf.domain,
                path=conf.path,
                secure=conf.secure or None,
                httponly=conf.httponly or None,
                samesite=conf.samesite,
            )
            return
        attributes = dict(conf.attributes)
        if expires is not None:
            attributes["expires"] = expires
        if max_age is not None:
            attributes["max-age"] = max_age
        cookies[conf.name] = _SessionCookie(conf.name, key, attributes)


def _vary_on_cookie(response: Any) -> None:
    """``patch_vary_headers(response, ("Cookie",))``, which is a plain header set when the
    response has no ``Vary`` yet."""
    if response.has_header("Vary"):
        patch_vary_headers(response, ("Cookie",))
    else:
        response.headers["Vary"] = "Cookie"
