"""The background work of in-memory stores: a purge thread per store that holds the store
only weakly, a restart in forked children, and a last snapshot at exit and on SIGTERM.

A store with a snapshot file is kept alive until it is closed (or the interpreter exits),
so one reachable only from a function's locals is still written at exit. SIGTERM's
default action kills the process without running ``atexit``; so where nothing else
handles SIGTERM, lembro's handler (installed from the main thread when lembro is
imported there, or when a store with a snapshot is built there) makes it exit through
``atexit`` while a store keeps a snapshot, and otherwise dies of it as before."""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Tended", "forget", "install_sigterm_exit", "next_due", "register", "start"]

log = logging.getLogger("lembro")


class Tended(Protocol):
    """What the background work needs of a store (``MemoryStore`` is one)."""

    on_error: Callable[[BaseException], object] | None
    snapshot: str | None

    def _background_tick(self, now: float) -> None: ...
    def _after_fork_in_child(self) -> None: ...
    def _forked_in_parent(self) -> None: ...
    def close(self) -> None: ...


_LIVE: weakref.WeakSet[Tended] = weakref.WeakSet()
# Stores with a snapshot, held strongly until closed: their sessions are written at exit
# even when nothing else refers to them any more.
_KEPT: dict[int, Tended] = {}


def register(store: Tended) -> None:
    """Tend ``store`` across forks and at exit, for as long as it lives (a store with a
    snapshot: until it is closed)."""
    _LIVE.add(store)
    if store.snapshot is not None:
        _KEPT[id(store)] = store


def forget(store: Tended) -> None:
    """``store`` is closed: stop keeping it alive for the exit."""
    _KEPT.pop(id(store), None)


def next_due(due: float, period: float, now: float) -> float:
    """The time after ``due`` when work done every ``period`` seconds is next due: the
    first of ``due + period``, ``due + 2 * period``, ... later than ``now``. A fixed rate,
    so the work's own duration does not push the schedule back; times missed while it
    ran long are skipped, not made up in a burst."""
    due += period
    if due <= now:
        due += (math.floor((now - due) / period) + 1) * period
    return due


def start(
    store: Tended,
    stop: threading.Event,
    period: float,
    clock: Callable[[], float] = time.monotonic,
) -> threading.Thread:
    """Start a daemon thread that wakes ``store`` every ``period`` seconds of ``clock``,
    at a fixed rate from now, until ``stop`` is set or the store is garbage-collected; it
    never keeps the store (or the interpreter) alive."""
    thread = threading.Thread(
        target=_loop,
        args=(weakref.ref(store), stop, period, clock),
        name="lembro-purge",
        daemon=True,
    )
    weakref.finalize(store, stop.set)
    thread.start()
    return thread


def _loop(
    ref: weakref.ref[Tended], stop: threading.Event, period: float, clock: Callable[[], float]
) -> None:
    """Purge (and snapshot) while the store lives; holds it only during one wake."""
    due = clock() + period
    while not stop.wait(max(due - clock(), 0.0)):
        now = clock()
        if now < due:
            continue  # woke early
        store = ref()
        if store is None:
            return
        try:
            store._background_tick(now)
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
        due = next_due(due, period, clock())


def _restart_after_fork() -> None:
    # A forked child has changed no sessions yet, so none are its to write: it dies of
    # SIGTERM as it would without lembro (a terminated multiprocessing pool joins its
    # workers, and a Python-level handler can miss a signal that comes while the child is
    # still starting) until one of its stores with a snapshot changes and installs the
    # handler again.
    if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for store in list(_LIVE):
        store._after_fork_in_child()


def _after_fork_in_parent() -> None:
    for store in list(_LIVE):
        store._forked_in_parent()


def _close_at_exit() -> None:
    """At interpreter exit, close the stores that keep a snapshot, so it is written."""
    for store in list(_LIVE):
        if store.snapshot is not None:
            try:
                store.close()
            except Exception:
                log.exception("writing the snapshot at exit failed")


_warned_sigterm = False


def install_sigterm_exit() -> None:
    """Make SIGTERM exit through ``atexit`` (so snapshots are written) where nothing else
    handles it, while SIGTERM has its default action. Only the main thread may install a
    handler; called from another while SIGTERM would still kill the process unsaved, it
    logs one WARNING saying how to fix it."""
    global _warned_sigterm
    current = signal.getsignal(signal.SIGTERM)
    if current is not signal.SIG_DFL:
        return  # ours, or the server's (gunicorn, uvicorn, Django's reloader) or the app's
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    elif not _warned_sigterm:
        _warned_sigterm = True
        log.warning(
            "lembro could not catch SIGTERM (it was imported outside the main thread, and "
            "nothing else handles SIGTERM): a plain kill will not write the snapshot. "
            "Import lembro in the main thread (in settings.py or the WSGI module)."
        )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    if _KEPT:
        raise SystemExit(128 + signum)  # through atexit: the snapshots are written
    # No snapshot to write: die of the signal, as without lembro.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_parent=_after_fork_in_parent, after_in_child=_restart_after_fork)
atexit.register(_close_at_exit)
if threading.current_thread() is threading.main_thread():
    install_sigterm_exit()  # now, in the main thread: a store may be built in another
