"""Drive a documented quick-start app through its framework's test client, and check it.

A quick start in README.md or docs/ (a block marked ``<!-- run: flask -->`` and so on, see
tests/unit/test_docs_examples.py) defines three routes: ``POST /login`` signs a user in
(and regenerates the session id), ``GET /`` answers ``hello <user>`` or ``hello stranger``,
``POST /logout`` signs out. The test runs the block in its own interpreter, then one of the
functions here, which asserts what the docs promise of those routes; any failed assertion
ends that interpreter with a traceback the test shows.

Cookies are carried by hand (each request sends exactly the ``Cookie`` header given), so a
test can also replay an old cookie, as an attacker who kept it would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http.cookies import SimpleCookie
from typing import Any

# (method, path, cookie header or None) -> (body text, Set-Cookie header values)
Send = Callable[[str, str, "str | None"], "tuple[str, list[str]]"]


def _session_cookie(set_cookies: list[str], name: str) -> str | None:
    """The session cookie a response set: its value, "" when deleted, None when not set."""
    for header in set_cookies:
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name not in jar:
            continue
        morsel = jar[name]
        expires = morsel["expires"].lower()
        deleted = (
            morsel.value in ("", "null", '""')
            or morsel["max-age"] in ("0", "-1")
            or "1970" in expires
        )
        return "" if deleted else morsel.value
    return None


def check_sign_in_read_sign_out(send: Send, cookie_name: str) -> None:
    """Sign in, read, sign in again (a new id), sign out: assert each step as documented."""

    def header(value: str) -> str:
        return f"{cookie_name}={value}"

    body, _ = send("GET", "/", None)
    assert "hello stranger" in body, body

    _, set_cookies = send("POST", "/login", None)
    first = _session_cookie(set_cookies, cookie_name)
    assert first, f"sign-in set no session cookie: {set_cookies}"
    body, _ = send("GET", "/", header(first))
    assert "hello ada" in body, body

    # Signing in again regenerates: a new id, and the old one is worth nothing.
    _, set_cookies = send("POST", "/login", header(first))
    second = _session_cookie(set_cookies, cookie_name)
    assert second, f"a second sign-in set no session cookie: {set_cookies}"
    assert second != first, "sign-in kept the session id: not regenerated"
    body, _ = send("GET", "/", header(first))
    assert "hello stranger" in body, f"the id from before sign-in still works: {body}"
    body, _ = send("GET", "/", header(second))
    assert "hello ada" in body, body

    # Sign-out deletes the cookie and the record: the old cookie, replayed, is a stranger.
    _, set_cookies = send("POST", "/logout", header(second))
    assert _session_cookie(set_cookies, cookie_name) == "", f"cookie not deleted: {set_cookies}"
    body, _ = send("GET", "/", header(second))
    assert "hello stranger" in body, f"the session outlived sign-out: {body}"


def drive_flask(app: Any) -> None:
    client = app.test_client(use_cookies=False)

    def send(method: str, path: str, cookie: str | None) -> tuple[str, list[str]]:
        response = client.open(path, method=method, headers={"Cookie": cookie} if cookie else {})
        assert response.status_code < 400, (path, response.status_code, response.text)
        return response.get_data(as_text=True), response.headers.getlist("Set-Cookie")

    check_sign_in_read_sign_out(send, app.config["SESSION_COOKIE_NAME"])


def _drive_httpx_client(client: Any, cookie_name: str) -> None:
    def send(method: str, path: str, cookie: str | None) -> tuple[str, list[str]]:
        client.cookies.clear()
        response = client.request(method, path, headers={"Cookie": cookie} if cookie else {})
        assert response.status_code < 400, (path, response.status_code, response.text)
        return response.text, response.headers.get_list("set-cookie")

    check_sign_in_read_sign_out(send, cookie_name)


def drive_starlette(app: Any) -> None:
    import warnings

    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the client is the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

    with TestClient(app) as client:
        _drive_httpx_client(client, "session")


def drive_litestar(app: Any) -> None:
    from litestar.testing import TestClient

    with TestClient(app) as client:
        _drive_httpx_client(client, "session")


def drive_django(namespace: Mapping[str, Any]) -> None:
    """The block holds a settings module's lines and the views ``login``, ``home`` and
    ``logout``; this supplies the rest of a project (URLs, and Django's session middleware
    unless the block names its own ``MIDDLEWARE``)."""
    import django
    from django.conf import settings
    from django.test import Client
    from django.urls import path

    given = {name: value for name, value in namespace.items() if name.isupper()}
    given.setdefault("MIDDLEWARE", ["django.contrib.sessions.middleware.SessionMiddleware"])
    settings.configure(
        SECRET_KEY="docs example", ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__, **given
    )
    django.setup()
    global urlpatterns
    urlpatterns = [
        path("", namespace["home"]),
        path("login", namespace["login"]),
        path("logout", namespace["logout"]),
    ]
    client = Client()

    def send(method: str, route: str, cookie: str | None) -> tuple[str, list[str]]:
        client.cookies.clear()
        extra = {"HTTP_COOKIE": cookie} if cookie else {}
        response = client.generic(method, route, **extra)
        assert response.status_code < 400, (route, response.status_code, response.content)
        set_cookies = [morsel.OutputString() for morsel in response.cookies.values()]
        return response.content.decode(), set_cookies

    check_sign_in_read_sign_out(send, settings.SESSION_COOKIE_NAME)


urlpatterns: list[Any] = []


def drive_quart(app: Any) -> None:
    import asyncio

    client = app.test_client(use_cookies=False)
    loop = asyncio.new_event_loop()

    async def request(method: str, path: str, cookie: str | None) -> tuple[str, list[str]]:
        response = await client.open(
            path, method=method, headers={"Cookie": cookie} if cookie else {}
        )
        body = await response.get_data(as_text=True)
        assert response.status_code < 400, (path, response.status_code, body)
        return body, response.headers.getlist("Set-Cookie")

    def send(method: str, path: str, cookie: str | None) -> tuple[str, list[str]]:
        return loop.run_until_complete(request(method, path, cookie))

    try:
        check_sign_in_read_sign_out(send, app.config["SESSION_COOKIE_NAME"])
    finally:
        loop.close()


def drive_aiohttp(app: Any) -> None:
    import asyncio
    import warnings

    from aiohttp.test_utils import TestClient, TestServer

    # aiohttp-session keeps its own state under str keys, which aiohttp >= 3.13 warns about.
    warnings.filterwarnings("ignore", "It is recommended to use web.RequestKey")
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())

    async def request(method: str, path: str, cookie: str | None) -> tuple[str, list[str]]:
        client.session.cookie_jar.clear()
        response = await client.request(method, path, headers={"Cookie": cookie} if cookie else {})
        body = await response.text()
        assert response.status < 400, (path, response.status, body)
        return body, response.headers.getall("Set-Cookie", [])

    def send(method: str, path: str, cookie: str | None) -> tuple[str, list[str]]:
        return loop.run_until_complete(request(method, path, cookie))

    try:
        check_sign_in_read_sign_out(send, "AIOHTTP_SESSION")
    finally:
        loop.run_until_complete(client.close())
        loop.close()
