"""The public namespace: every module's ``__all__`` is complete, and extras stay optional."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import lembro
from tests.integrations.test_django import configure_django

MODULES = [
    "lembro",
    "lembro.background",
    "lembro.checks",
    "lembro.cli",
    "lembro.errors",
    "lembro.ids",
    "lembro.clients",
    "lembro.lifetimes",
    "lembro.memory",
    "lembro.protocol",
    "lembro.serializers",
    "lembro.size",
    "lembro.snapshot",
    "lembro.flask",
    "lembro.starlette",
    "lembro.django",
    "lembro.litestar",
    "lembro.quart",
    "lembro.aiohttp",
    "lembro.metrics",
    "lembro.redis",
    "lembro.redis.core",
    "lembro.redis.sync",
    "lembro.redis.asyncio",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_name_the_module_defines(name: str) -> None:
    if name == "lembro.django":
        configure_django()  # its SessionBase reads settings at import
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert all(hasattr(module, attr) for attr in exported), exported - set(dir(module))
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == name
    }
    assert defined <= exported, f"{name} defines but does not export {defined - exported}"


def test_the_package_exports_the_names_the_issue_names() -> None:
    assert {
        "MemoryStore",
        "parse_size",
        "format_size",
        "Stats",
        "LembroError",
        "InvalidSize",
        "SessionTooLarge",
        "SerializationError",
        "RedisStore",
        "AsyncRedisStore",
    } <= set(lembro.__all__)


def test_import_lembro_needs_only_msgspec() -> None:
    code = (
        "import sys, lembro; lembro.MemoryStore('1M', None).close(); "
        "print(sorted(m for m in ('flask', 'starlette', 'django', 'litestar', 'quart', "
        "'aiohttp', 'aiohttp_session', 'redis', 'prometheus_client', "
        "'itsdangerous') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
