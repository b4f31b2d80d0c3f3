"""Starlette's own session middleware tests, run against lembro.starlette.

The tests are Starlette's ``tests/middleware/test_session.py`` from the sdist of the
installed Starlette (fetched by ``tests/upstream.py``, never copied into this repo), run
unchanged except for one line: ``from starlette.middleware.sessions import ...`` becomes
``from lembro.starlette import ...``. The ``test_client_factory`` fixture is the one
Starlette's ``tests/conftest.py`` defines; ``tests.types`` gets the one name they import.
"""

from __future__ import annotations

import functools
import importlib.util
import linecache
import re
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any, Literal

import pytest

from tests.integrations.upstream import upstream_source

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the tests are the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

_MEMBER = "tests/middleware/test_session.py"
_IMPORT = re.compile(r"^from starlette\.middleware\.sessions import ", re.MULTILINE)


def _load_upstream() -> types.ModuleType:
    source = upstream_source("starlette", _MEMBER)
    source, count = _IMPORT.subn("from lembro.starlette import ", source)
    assert count == 1, "the upstream import line moved: update this adapter"
    if importlib.util.find_spec("tests.types") is None:
        # Starlette's tests/types.py: only the type alias the session tests import.
        shim = types.ModuleType("tests.types")
        shim.TestClientFactory = Callable[..., TestClient]  # type: ignore[attr-defined]
        sys.modules["tests.types"] = shim
    filename = f"<starlette upstream {_MEMBER}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType("starlette_upstream_test_session")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - Starlette's own tests
    return module


_upstream = _load_upstream()
globals().update({name: obj for name, obj in vars(_upstream).items() if name.startswith("test_")})


@pytest.fixture
def test_client_factory(
    anyio_backend_name: Literal["asyncio", "trio"],
    anyio_backend_options: dict[str, Any],
) -> Callable[..., TestClient]:
    # As Starlette's tests/conftest.py; anyio's pytest plugin provides the backend fixtures.
    return functools.partial(
        TestClient, backend=anyio_backend_name, backend_options=anyio_backend_options
    )


def test_upstream_tests_run_against_lembro() -> None:
    import lembro.starlette

    assert _upstream.SessionMiddleware is lembro.starlette.SessionMiddleware
    assert _upstream.Session is lembro.starlette.Session
    names = {name for name in vars(_upstream) if name.startswith("test_")}
    assert len(names) >= 10
    assert names <= set(globals())
