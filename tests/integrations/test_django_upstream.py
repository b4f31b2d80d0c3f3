"""Django's own session backend tests, bound to lembro.django.

Source: ``tests/sessions_tests/tests.py`` in the sdist of the installed Django (fetched by
tests/upstream.py, never committed). Its ``SessionTestsMixin`` runs against
``lembro.django.SessionStore`` exactly as Django binds ``CacheSessionTests`` to its cache
engine, and its ``SessionMiddlewareTests`` run with ``SESSION_ENGINE = "lembro.django"``,
under Django's ``SessionMiddleware`` and again under ``lembro.django.SessionMiddleware``.
"""

from __future__ import annotations

import sys
import types
import unittest
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore as DatabaseSession
from django.db import connection
from django.test import SimpleTestCase, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment

import lembro.django
from tests.integrations.test_django import configure_django
from tests.integrations.upstream import upstream_source
from tests.redis_server import RedisServer, find_redis_server

configure_django()

_PACKAGE = "sessions_tests"


def _load_upstream() -> types.ModuleType:
    """Import Django's sessions_tests/tests.py as ``sessions_tests.tests``.

    It imports ``SessionStore`` from its sibling ``.models``, a custom database session for
    tests not run here; a synthetic ``sessions_tests.models`` stands in with Django's own
    database engine, so no test model has to be registered with an app.
    """
    package = types.ModuleType(_PACKAGE)
    package.__path__ = []
    models = types.ModuleType(f"{_PACKAGE}.models")
    models.SessionStore = DatabaseSession  # type: ignore[attr-defined]
    module = types.ModuleType(f"{_PACKAGE}.tests")
    module.__package__ = _PACKAGE
    module.__file__ = f"<django sdist>/tests/{_PACKAGE}/tests.py"
    sys.modules.setdefault(_PACKAGE, package)
    sys.modules.setdefault(f"{_PACKAGE}.models", models)
    sys.modules[module.__name__] = module
    source = upstream_source("django", f"tests/{_PACKAGE}/tests.py")
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - Django's tests
    return module


_upstream = _load_upstream()


@pytest.fixture(scope="module", autouse=True)
def _test_database() -> Iterator[None]:
    """A fresh in-memory database, as Django's test runner makes one.

    Only ``SessionMiddlewareTests`` need it: it is a ``TestCase``, and one of its tests
    builds a database session on purpose (``test_session_update_error_redirect``).
    """
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield
    connection.creation.destroy_test_db(old_name, verbosity=0)
    teardown_test_environment()


class LembroSessionTests(_upstream.SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    """Django's SessionTestsMixin, bound as Django binds CacheSessionTests."""

    backend = lembro.django.SessionStore


class LembroRedisSessionTests(LembroSessionTests):
    """The same suite with ``LEMBRO = {"STORE": "redis", ...}``, on a real redis-server."""

    @classmethod
    def setUpClass(cls) -> None:
        executable = find_redis_server()
        if executable is None:
            raise unittest.SkipTest("redis-server is not installed (make redis-server)")
        server = RedisServer(executable)
        server.start()
        cls.addClassCleanup(server.close)
        lembro_settings = override_settings(LEMBRO={"STORE": "redis", "URL": server.url})
        lembro_settings.enable()
        cls.addClassCleanup(lembro_settings.disable)
        super().setUpClass()

    def test_bound_to_redis(self) -> None:
        assert isinstance(lembro.django.get_store(), lembro.RedisStore)


class _EngineRecords:
    """Stands in for Django's ``Session`` model in the upstream middleware tests: the one
    test that reads a record back (``test_empty_session_saved``) asks the database, which
    only the db engine writes; this reads the same record from the configured engine,
    and the test's assertions stay Django's."""

    class objects:
        @staticmethod
        def get(session_key: str) -> Any:
            if not lembro.django.SessionStore().exists(session_key):
                raise LookupError(f"no session record under {session_key!r}")
            data = lembro.django.SessionStore(session_key).load()
            return types.SimpleNamespace(get_decoded=lambda: data)


class LembroSessionMiddlewareTests(_upstream.SessionMiddlewareTests):  # type: ignore[misc]
    """Django's SessionMiddlewareTests with ``SESSION_ENGINE = "lembro.django"``."""

    def test_empty_session_saved(self) -> None:
        model = _upstream.Session
        _upstream.Session = _EngineRecords
        try:
            super().test_empty_session_saved()
        finally:
            _upstream.Session = model


class LembroMiddlewareUpstreamTests(LembroSessionMiddlewareTests):
    """Django's SessionMiddlewareTests again, with ``lembro.django.SessionMiddleware``
    where they build Django's (their module's ``SessionMiddleware`` name, swapped for
    each test)."""

    def setUp(self) -> None:
        super().setUp()
        django_middleware = _upstream.SessionMiddleware
        _upstream.SessionMiddleware = lembro.django.SessionMiddleware
        self.addCleanup(setattr, _upstream, "SessionMiddleware", django_middleware)

    def test_bound_to_lembros_middleware(self) -> None:
        assert _upstream.SessionMiddleware is lembro.django.SessionMiddleware


def test_the_upstream_suite_was_loaded_whole() -> None:
    """Guard against a Django release renaming what this module binds to."""
    mixin_tests: list[Any] = [n for n in dir(_upstream.SessionTestsMixin) if n.startswith("test")]
    middleware_tests = [n for n in dir(_upstream.SessionMiddlewareTests) if n.startswith("test")]
    assert len(mixin_tests) >= 50
    assert len(middleware_tests) >= 10
