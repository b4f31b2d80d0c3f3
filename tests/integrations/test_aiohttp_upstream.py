"""aiohttp-session's own tests, run against lembro.aiohttp.LembroStorage where they apply.

The tests are read from the sdist of the installed aiohttp-session (fetched by
tests/integrations/upstream.py, never copied into this repo) and bound here:

- ``tests/test_redis_storage.py``: its storage tests, with ``RedisStorage`` standing for a
  ``LembroStorage`` on a ``RedisStore`` over the suite's real redis-server. The helpers
  that reach into Redis by aiohttp-session's key format (``make_cookie``,
  ``load_cookie``, the ``redis`` fixture's ``exists`` and ``ttl``) ask the lembro store
  the same questions about the session the cookie names. One line changes:
  ``session._changed`` reads ``session.modified`` (a ``LembroSession`` reports itself
  changed to aiohttp-session's middleware so the storage sees every response, for
  ``Vary: Cookie``, and keeps the real flag in ``modified``).
- ``tests/test_http_exception.py``, ``tests/test_response_types.py`` and
  ``test_abstract_storage.py::test_max_age_also_returns_expires``: the middleware's
  behaviour with any storage, ``SimpleCookieStorage`` standing for a ``LembroStorage``.

Left out, each for its reason in ``NOT_APPLICABLE``: what checks another storage's
format or constructor, a custom ``key_factory`` (lembro issues every id), a test
that sleeps five seconds for a real expiry (lembro's expiry is tested with a clock), and
one that reads the cookie a change sends again (lembro does not re-send an unchanged
cookie that ends with the browser).
"""

from __future__ import annotations

import sys
import time
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lembro import MemoryStore, RedisStore
from lembro.aiohttp import LembroStorage
from lembro.ids import new_session_id
from tests.integrations.upstream import upstream_source
from tests.redis_server import RedisServer

SECRET = "upstream-secret"
_DIST = "aiohttp_session"
_PACKAGE = "aiohttp_session_upstream_tests"

NOT_APPLICABLE = {
    "test_load_bad_session": "a record lembro cannot read gives a new session (new=True)",
    "test_create_storage_with_custom_key_factory": "lembro issues every session id itself",
    "test_redis_from_create_pool": "RedisStorage's own constructor",
    "test_not_redis_provided_to_storage": "RedisStorage's own constructor",
    "test_no_aioredis_installed": "RedisStorage's own constructor",
    "test_old_aioredis_version": "RedisStorage's own constructor",
    "test_load_session_dont_load_expired_session": "sleeps 5 s for a real expiry",
    "test_max_age_session_reset": "reads SimpleCookieStorage's JSON cookie",
    "test_change_session": (
        "reads the cookie a write sends again; lembro sends a cookie that ends with the"
        " browser only when its id or signature changes, as with Flask and Starlette"
    ),
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _load(member: str, rewrite: Callable[[str], str] = lambda source: source) -> types.ModuleType:
    """aiohttp-session's ``tests/<member>`` as a module of a package that also holds its
    ``tests/typedefs.py`` (the tests import it relatively)."""
    if _PACKAGE not in sys.modules:
        package = types.ModuleType(_PACKAGE)
        package.__path__ = []
        sys.modules[_PACKAGE] = package
        typedefs = types.ModuleType(f"{_PACKAGE}.typedefs")
        source = upstream_source(_DIST, "tests/typedefs.py")
        exec(compile(source, "typedefs", "exec"), vars(typedefs))  # noqa: S102 - its own
        sys.modules[typedefs.__name__] = typedefs
    if "pytest_mock" not in sys.modules:  # imported for a type in tests left out here
        shim = types.ModuleType("pytest_mock")
        shim.MockFixture = Any  # type: ignore[attr-defined]
        sys.modules["pytest_mock"] = shim
    name = member.removesuffix(".py")
    module = types.ModuleType(f"{_PACKAGE}.{name}")
    module.__package__ = _PACKAGE
    module.__file__ = f"<aiohttp-session sdist>/tests/{member}"
    source = rewrite(upstream_source(_DIST, f"tests/{member}"))
    exec(compile(source, module.__file__, "exec"), vars(module))  # noqa: S102 - aiohttp-session's own
    return module


def _changed_is_modified(source: str) -> str:
    count = source.count("session._changed")
    assert count >= 3, "the upstream tests moved: update this adapter"
    return source.replace("session._changed", "session.modified")


def _memory_storage(**options: Any) -> LembroStorage:
    options.pop("encoder", None)
    options.pop("decoder", None)
    return LembroStorage(MemoryStore("1M", None), secret_key=SECRET, **options)


class _StoreView:
    """What the upstream tests ask of their ``redis`` fixture, asked of the lembro store
    about the session a cookie names: ``exists`` and ``ttl`` of ``AIOHTTP_SESSION_<cookie>``."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.storage = LembroStorage(store, secret_key=SECRET)

    def sid(self, key: str) -> str | None:
        return self.storage.signer.unsign(key.removeprefix("AIOHTTP_SESSION_"))[0]

    async def exists(self, key: str) -> int:
        sid = self.sid(key)
        return int(sid is not None and sid in self.store)

    async def ttl(self, key: str) -> int:
        sid = self.sid(key)
        left = None if sid is None else self.store.time_left(sid)
        return -2 if left is None else round(left)


def _redis_storage(view: _StoreView, *, max_age: int | None = None, **_: Any) -> LembroStorage:
    return LembroStorage(view.store, secret_key=SECRET, max_age=max_age)


async def _make_cookie(
    client: TestClient[Any, Any], view: _StoreView, data: dict[str, Any]
) -> None:
    sid = new_session_id()
    view.store.set(sid, data)
    client.session.cookie_jar.update_cookies({"AIOHTTP_SESSION": view.storage.signer.sign(sid)})


async def _load_cookie(client: TestClient[Any, Any], view: _StoreView) -> Any:
    cookies = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    sid = view.sid(cookies["AIOHTTP_SESSION"].value)
    data = None if sid is None else view.store.get(sid)
    return {"session": data, "created": int(time.time())} if data else {}


_redis_tests = _load("test_redis_storage.py", _changed_is_modified)
vars(_redis_tests).update(
    RedisStorage=_redis_storage, make_cookie=_make_cookie, load_cookie=_load_cookie
)
_middleware_tests = [
    _load("test_http_exception.py"),
    _load("test_response_types.py"),
    _load("test_abstract_storage.py"),
]
for _module in _middleware_tests:
    vars(_module)["SimpleCookieStorage"] = _memory_storage

_UPSTREAM = [_redis_tests, *_middleware_tests]
for _module in _UPSTREAM:
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and _name not in NOT_APPLICABLE:
            assert _name not in globals(), _name
            globals()[_name] = _test


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[_StoreView]:
    prefix = f"lembro-aiohttp-upstream:{uuid.uuid4().hex[:12]}:"
    with RedisStore(redis_server.url, prefix=prefix) as store:
        try:
            yield _StoreView(store)
        finally:
            store.clear()


@pytest.fixture
async def aiohttp_client() -> AsyncIterator[
    Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
]:
    """As pytest-aiohttp's fixture: a test client for an app, closed at the test's end."""
    clients: list[TestClient[Any, Any]] = []

    async def make(app: web.Application) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def test_upstream_tests_run_against_lembro() -> None:
    names = {name for module in _UPSTREAM for name in vars(module) if name.startswith("test_")}
    run = names - set(NOT_APPLICABLE)
    assert set(NOT_APPLICABLE) <= names, "a test left out is gone upstream: update the list"
    assert len(run) >= 12
    assert run <= set(globals())
    assert _redis_tests.RedisStorage is _redis_storage
