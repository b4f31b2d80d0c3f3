"""The background work of in-memory stores: a purge thread per store that holds the store
only weakly, a restart in forked children, and a last snapshot at exit and on SIGTERM."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Tended", "install_sigterm_exit", "register", "start"]

log = logging.getLogger("lembro")


class Tended(Protocol):
    """What the background work needs of a store (``MemoryStore`` is one)."""

    on_error: Callable[[BaseException], object] | None
    snapshot: str | None

    def _background_tick(self, now: float) -> None: ...
    def _after_fork_in_child(self) -> None: ...
    def close(self) -> None: ...


_LIVE: weakref.WeakSet[Tended] = weakref.WeakSet()


def register(store: Tended) -> None:
    """Tend ``store`` across forks and at exit, for as long as it lives."""
    _LIVE.add(store)


def start(store: Tended, stop: threading.Event, period: float) -> threading.Thread:
    """Start a daemon thread that wakes ``store`` every ``period`` seconds until ``stop`` is
    set or the store is garbage-collected; it never keeps the store (or the interpreter)
    alive."""
    thread = threading.Thread(
        target=_loop, args=(weakref.ref(store), stop, period), name="lembro-purge", daemon=True
    )
    weakref.finalize(store, stop.set)
    thread.start()
    return thread


def _loop(ref: weakref.ref[Tended], stop: threading.Event, period: float) -> None:
    """Purge (and snapshot) while the store lives; holds it only during one wake."""
    while not stop.wait(period):
        store = ref()
        if store is None:
            return
        try:
            store._background_tick(time.monotonic())
        except Exception as e:  # a failing purge must not end the thread
            handler = store.on_error
            if handler is None:
                log.exception("background purge failed")
            else:
                try:
                    handler(e)
                except Exception:
                    log.exception("on_error handler failed")
        del store


def _restart_after_fork() -> None:
    for store in list(_LIVE):
        store._after_fork_in_child()


def _close_at_exit() -> None:
    """At interpreter exit, close the stores that keep a snapshot, so it is written."""
    for store in list(_LIVE):
        if store.snapshot is not None:
            try:
                store.close()
            except Exception:
                log.exception("writing the snapshot at exit failed")


def install_sigterm_exit() -> None:
    """Make SIGTERM exit through ``atexit`` (so snapshots are written) where nothing else
    handles it: only in the main thread, and only while SIGTERM has its default action."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the server (gunicorn, uvicorn) or the app shuts down in its own way
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


os.register_at_fork(after_in_child=_restart_after_fork)
atexit.register(_close_at_exit)
