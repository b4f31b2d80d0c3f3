"""Importing lembro changes nothing in the process: no signal handler, no fork hook, no
exit hook, no file, no thread. Hooks come with the first store that needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULES = [
    "lembro",
    "lembro.memory",
    "lembro.memory.store",
    "lembro.hooks",
    "lembro.background",
    "lembro.processes",
    "lembro.snapshot",
    "lembro.serializers",
    "lembro.cli",
    "lembro.flask",
    "lembro.starlette",
    "lembro.django",
    "lembro.litestar",
    "lembro.redis",
]

# What lembro's modules import from elsewhere, imported first: some of them install
# hooks of their own (logging registers an exit hook and fork hooks, for one).
OTHERS = [
    "logging",
    "asyncio",
    "concurrent.futures",
    "msgspec",
    "flask",
    "itsdangerous",
    "starlette.requests",
    "django.apps",
    "django.conf",
    "django.contrib.auth",
    "django.contrib.sessions.backends.base",
    "django.core.checks",
    "django.core.signals",
    "litestar",
    "redis",
    "redis.asyncio",
]

PROBE = """
import atexit, importlib, os, signal, sys, threading
for name in OTHERS:
    importlib.import_module(name)

registered = []
real_register_at_fork = os.register_at_fork
def register_at_fork(**hooks):
    registered.append(sorted(hooks))
    return real_register_at_fork(**hooks)
os.register_at_fork = register_at_fork

def handlers():
    return {s: signal.getsignal(s) for s in signal.valid_signals()
            if s not in (signal.SIGKILL, signal.SIGSTOP)}

before = (handlers(), atexit._ncallbacks(), threading.active_count(), sorted(os.listdir(".")))
for name in MODULES:
    __import__(name)
after = (handlers(), atexit._ncallbacks(), threading.active_count(), sorted(os.listdir(".")))
assert after == before, (before, after)
assert registered == [], registered

AFTER_IMPORT
print("ok")
"""

A_STORE = """
import gc
import lembro
from lembro import hooks
assert hooks.installed() == frozenset()
plain = lembro.MemoryStore("1M", None)
assert registered, "a store needs the fork hooks"
assert hooks.installed() == {"fork"}
assert handlers() == before[0], "a store without a snapshot installs no handler"
kept = lembro.MemoryStore("1M", None, snapshot="s.snap")
assert hooks.installed() == {"fork", "exit", "sigterm"}
assert handlers()[signal.SIGTERM] is not before[0][signal.SIGTERM]
kept.close()
assert hooks.installed() == {"fork"}, "the last snapshot store takes its hooks with it"
assert handlers() == before[0]
del plain, kept
gc.collect()
assert hooks.installed() == frozenset(), "the fork hooks act only while a store lives"
"""


def probe(tmp_path: Path, after_import: str = "") -> subprocess.CompletedProcess[str]:
    code = (
        PROBE.replace("OTHERS", repr(OTHERS))
        .replace("MODULES", repr(MODULES))
        .replace("AFTER_IMPORT", after_import)
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_every_lembro_module_installs_nothing_and_writes_nothing(
    tmp_path: Path,
) -> None:
    result = probe(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_hooks_come_with_the_stores_that_need_them_and_go_with_them(tmp_path: Path) -> None:
    result = probe(tmp_path, A_STORE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_import_lembro_alone_registers_no_exit_hook_even_through_what_it_imports(
    tmp_path: Path,
) -> None:
    """The core imports neither logging nor asyncio until they are used: each registers an
    exit hook when imported, which an app that imports lembro first would get from us."""
    code = (
        "import atexit, signal, sys\n"
        "handler, hooks = signal.getsignal(signal.SIGTERM), atexit._ncallbacks()\n"
        "import lembro\n"
        "assert (signal.getsignal(signal.SIGTERM), atexit._ncallbacks()) == (handler, hooks)\n"
        "assert 'logging' not in sys.modules and 'asyncio' not in sys.modules\n"
        "store = lembro.MemoryStore('1M', None)\n"
        "store.set('a' * 43, {'n': 1})\n"
        "assert store.get('a' * 43) == {'n': 1}\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
