"""The process-wide hooks in-memory stores need, installed by the first store that needs
them and removed with the last: nothing here acts when lembro is imported.

- **Fork**: a fork copies memory while other threads may be halfway through a change, so
  every live store's lock is taken before the fork and released after it on both sides,
  and each store is told which side it is on. ``os.register_at_fork`` cannot be undone:
  the hooks are registered when the first store is built and do nothing while no store
  lives.
- **Exit**: while a store with a snapshot file is open, an ``atexit`` hook closes it (so
  its snapshot is written), and the store is kept alive for it even when nothing else
  refers to it; the hook is unregistered when the last such store is closed.
- **SIGTERM**: its default action kills the process without running ``atexit``. While a
  store with a snapshot is open, and only when it was built in the main thread (the only
  one that may install a handler), lembro's handler replaces the one there and makes
  SIGTERM exit through ``atexit``; a handler it replaced (a server's or the app's) is
  called instead, and ``SIG_IGN`` stays ignored. The handler is put back when the last
  such store is closed. Across a fork, SIGTERM is blocked, and a child gets the replaced
  handler back before it is unblocked: a child never runs a handler it did not ask for,
  and a SIGTERM sent to it meanwhile is delivered then, not lost.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from ._log import log

__all__ = ["Hooked", "attach", "detach", "installed"]


class Hooked(Protocol):
    """What the hooks need of a store (``MemoryStore`` is one)."""

    snapshot: str | None

    def _before_fork(self) -> None: ...
    def _after_fork_in_parent(self) -> None: ...
    def _after_fork_in_child(self) -> None: ...
    def close(self) -> None: ...


_Handler = Callable[[int, FrameType | None], Any] | int | None

_guard = threading.Lock()
_live: weakref.WeakSet[Hooked] = weakref.WeakSet()
# Stores with a snapshot, held until closed: their sessions are written at exit even when
# nothing else refers to them any more.
_kept: dict[int, Hooked] = {}
_fork_hooks = False
_replaced: _Handler = None  # the SIGTERM handler lembro's replaced, while it is installed
_installed = False
_held_for_fork: list[Hooked] = []
_mask_before_fork: set[int | signal.Signals] | None = None
_warned_thread = False


def attach(store: Hooked) -> None:
    """Tend ``store`` across forks, and, when it keeps a snapshot, at exit and on SIGTERM
    until it is closed."""
    global _fork_hooks
    with _guard:
        if not _fork_hooks:
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )
            _fork_hooks = True
        _live.add(store)
        if store.snapshot is None:
            return
        if not _kept:
            atexit.register(_close_at_exit)
        _kept[id(store)] = store
    install_sigterm()


def detach(store: Hooked) -> None:
    """``store`` is closed: stop keeping it for the exit; the last one takes the exit hook
    and the SIGTERM handler with it."""
    with _guard:
        if _kept.pop(id(store), None) is None or _kept:
            return
        atexit.unregister(_close_at_exit)
    _uninstall_sigterm()


def install_sigterm() -> None:
    """Make SIGTERM exit through ``atexit`` while a store keeps a snapshot (called again
    by a forked child whose store changed, so its sessions are now its own to write).
    From another thread than the main one it cannot: one WARNING says what to do."""
    global _installed, _replaced, _warned_thread
    if _installed or not _kept:
        return
    if threading.current_thread() is not threading.main_thread():
        if not _warned_thread:
            _warned_thread = True
            log.warning(
                "lembro cannot catch SIGTERM: the MemoryStore with a snapshot was built "
                "outside the main thread, so a plain kill will not write the snapshot. "
                "Build it in the main thread (at import of settings.py or the app module), "
                "or call store.close() from your own shutdown code."
            )
        return
    _replaced = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


def installed() -> frozenset[str]:
    """Which hooks lembro holds in this process now: ``"fork"`` (registered for good, but
    acting only while a store lives), ``"exit"`` and ``"sigterm"``."""
    held = {"fork"} if _fork_hooks and len(_live) else set()
    if _kept:
        held.add("exit")
    if _installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        held.add("sigterm")
    return frozenset(held)


def _uninstall_sigterm() -> None:
    """Put back the handler lembro's replaced, if lembro's is still the one there."""
    global _installed, _replaced
    if not _installed:
        return
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _replaced)
        _installed = False
        _replaced = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    replaced = _replaced
    if callable(replaced):
        replaced(signum, frame)  # a server's graceful stop exits through atexit itself
    elif replaced == signal.SIG_IGN:
        return
    elif _kept:
        raise SystemExit(128 + signum)  # through atexit: the snapshots are written
    else:  # nothing to write any more: die of the signal, as without lembro
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _close_at_exit() -> None:
    """At interpreter exit, close the stores that keep a snapshot, so it is written."""
    for store in list(_kept.values()):
        try:
            store.close()
        except Exception:
            log.exception("writing the snapshot at exit failed")


def _before_fork() -> None:
    global _mask_before_fork
    if _installed:
        _mask_before_fork = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    for store in list(_live):
        store._before_fork()
        _held_for_fork.append(store)


def _restore_mask() -> None:
    global _mask_before_fork
    if _mask_before_fork is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask_before_fork)
        _mask_before_fork = None


def _after_fork_in_parent() -> None:
    try:
        while _held_for_fork:
            _held_for_fork.pop()._after_fork_in_parent()
    finally:
        _restore_mask()


def _after_fork_in_child() -> None:
    global _guard, _installed, _replaced
    _guard = threading.Lock()
    try:
        if _installed:
            # A forked child has changed no sessions yet, so none are its to write: it
            # gets the handler lembro replaced, until one of its stores changes.
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, _replaced)
            _installed = False
            _replaced = None
        while _held_for_fork:
            _held_for_fork.pop()._after_fork_in_child()
    finally:
        _restore_mask()
