"""The background thread of an in-memory store: it wakes the store at a fixed rate (to
purge, and to save a periodic snapshot) and holds it only weakly, so a store nothing else
refers to is collected and its thread ends. Started by the store, never on import."""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from ._log import log

__all__ = ["Tended", "next_due", "start"]


class Tended(Protocol):
    """What the background thread needs of a store (``MemoryStore`` is one)."""

    on_error: Callable[[BaseException], object] | None

    def _background_tick(self, now: float) -> None: ...


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
