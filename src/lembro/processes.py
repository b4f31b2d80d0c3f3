"""Several processes serving one app, each with its own MemoryStore: detected, said loudly.

A ``MemoryStore`` holds its sessions in one process. When a server runs several (gunicorn
``-w 2``, uvicorn ``--workers 2``, a process that forks and keeps serving), each has its
own copy and a user's next request may land in a process that never saw their session.

How it is detected: each process that serves with a MemoryStore holds a *claim*, a file
locked with ``flock`` for as long as the process lives, in a private runtime directory.
Its name says which app (a hash of the working directory and the command line, which
every worker of one server shares), which group of processes (the server's master: the
parent a worker was forked or spawned from) and which process. A process that claims
looks for other live claims of the same app and group: a lock it cannot take is held by
a live process; a file it can lock was left by a dead one and is removed.

When a process claims: when it builds a store (so gunicorn's workers without
``--preload``, and uvicorn's, claim at start-up), and, after a fork, at the store's first
change (so ``--preload`` workers claim at their first request, while the master that
forked them, or a pool worker that never touches sessions, claims nothing).

What it does then is ``LEMBRO_SEVERAL_PROCESSES`` in the environment: ``"error"`` (the
default) logs one ERROR naming the way out; ``"refuse"`` raises
:class:`lembro.errors.SeveralProcesses` (from the store's constructor, or from the first
write after a fork); ``"ignore"`` checks nothing. ``LEMBRO_RUNTIME_DIR`` moves the claims'
directory (default: ``$XDG_RUNTIME_DIR/lembro`` or ``<tmp>/lembro-<uid>``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import stat
import sys
import tempfile
import threading

from .errors import InvalidOption, SeveralProcesses
from .snapshot import pid_alive

__all__ = ["POLICIES", "check", "policy", "runtime_dir"]

log = logging.getLogger("lembro")

#: The values ``LEMBRO_SEVERAL_PROCESSES`` accepts.
POLICIES = ("error", "refuse", "ignore")

_lock = threading.Lock()
_group: int | None = None  # the master's pid; None: not known yet (the parent's pid then)
_claimed_group: int | None = None  # the group this process holds a claim in
_claim_fd: int | None = None
_claim_path: str | None = None
_found: list[int] = []  # the other live processes found when this process claimed

# A claim's file name: <app: 16 hex digits>-<group pid>-<pid>
_CLAIM = re.compile(r"[0-9a-f]{16}-[0-9]+-([0-9]+)")
# A claim being made, locked before it is renamed to its claim name: .claiming-<pid>
_CLAIMING = re.compile(r"\.claiming-([0-9]+)")


def policy() -> str:
    """What to do when several processes serve: ``LEMBRO_SEVERAL_PROCESSES`` ("error")."""
    value = os.environ.get("LEMBRO_SEVERAL_PROCESSES", "error").strip().lower() or "error"
    if value not in POLICIES:
        raise InvalidOption("LEMBRO_SEVERAL_PROCESSES", value, f"one of {', '.join(POLICIES)}")
    return value


def runtime_dir() -> str:
    """The directory that holds the claims: ``LEMBRO_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/lembro``, else ``<tempdir>/lembro-<uid>``."""
    explicit = os.environ.get("LEMBRO_RUNTIME_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "lembro")
    return os.path.join(tempfile.gettempdir(), f"lembro-{os.getuid()}")


def check() -> None:
    """Claim this process as one serving its app, once per group; log one ERROR (or raise
    :class:`SeveralProcesses`) when other live processes of the same app and group hold
    claims. Cheap once claimed: every store calls it when built, and at its first change
    after a fork."""
    if _claimed_group is not None and _claimed_group == _current_group():
        if _found and policy() == "refuse":
            raise SeveralProcesses(os.getpid(), list(_found))
        return
    mode = policy()
    if mode == "ignore":
        return
    with _lock:
        if _claimed_group != _current_group():
            _claim()
        others = list(_found)
    if not others:
        return
    if mode == "refuse":
        raise SeveralProcesses(os.getpid(), others)


def _current_group() -> int:
    global _group
    if _group is None:
        _group = os.getppid()
    return _group


def _app_key() -> str:
    """Which app: the working directory and the command line, hashed (every worker of one
    server shares both; spawned workers get the parent's ``sys.argv``)."""
    try:
        where = os.getcwd()
    except OSError:
        where = ""
    text = "\0".join([where, *sys.argv])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _claim() -> None:
    """Take this process's claim in the current group and look for others (lock held)."""
    global _claimed_group, _claim_fd, _claim_path
    group = _current_group()
    _release()
    _claimed_group = group
    _found.clear()
    directory = runtime_dir()
    if not _private_directory(directory):
        return
    prefix = f"{_app_key()}-{group}-"
    path = os.path.join(directory, f"{prefix}{os.getpid()}")
    fd = _locked_file(directory, path)
    if fd is None:
        return
    _claim_fd, _claim_path = fd, path
    others = _live_claims(directory, prefix)
    _found.extend(others)
    if others:
        log.error(
            "lembro: %d other process(es) (pid %s) serve this app with their own MemoryStore: each "
            "holds its own sessions, so users are logged out at random when their requests "
            "land in another process. Run one worker process with threads (gunicorn -w 1 "
            "--threads 8, uvicorn without --workers), or use lembro.RedisStore to share "
            "sessions between processes. Set LEMBRO_SEVERAL_PROCESSES=refuse to refuse to "
            "start instead of this message.",
            len(others),
            ", ".join(map(str, others)),
        )


def _locked_file(directory: str, path: str) -> int | None:
    """Make the claim file ``path``, locked by this process before it appears under that
    name (another process that finds a claim unlocked removes it as a dead one's): made
    and locked under a name of its own, then renamed. Return its descriptor, or ``None``
    when it cannot be made."""
    making = os.path.join(directory, f".claiming-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.unlink(making)  # left by a killed process that had this pid
    try:
        fd = os.open(
            making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as e:
        log.debug("cannot claim %s: %s", path, e)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, " ".join(sys.argv).encode("utf-8", "replace")[:4096])
        os.rename(making, path)
    except OSError as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(making)
        log.debug("cannot claim %s: %s", path, e)
        return None
    return fd


def _private_directory(directory: str) -> bool:
    """Make ``directory`` (mode 0700) if missing; use it only if it is this user's own."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        log.warning("lembro cannot check for other processes: %s", e)
        return False
    try:
        info = os.lstat(directory)
    except OSError as e:
        log.warning("lembro cannot check for other processes: %s", e)
        return False
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o022
    ):
        log.warning(
            "lembro cannot check for other processes: %s is not a directory only this "
            "user may write",
            directory,
        )
        return False
    return True


def _live_claims(directory: str, prefix: str) -> list[int]:
    """The pids of the other live claims named ``prefix<pid>``. Removes the files of dead
    claims of any app and group on the way, and those of claims that a killed process
    was making, so the directory never fills up."""
    live = []
    mine = os.getpid()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        making = _CLAIMING.fullmatch(name)
        if making is not None and not pid_alive(int(making.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
            continue
        match = _CLAIM.fullmatch(name)
        if match is None or int(match.group(1)) == mine:
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner holds the lock: alive
            if name.startswith(prefix):
                live.append(int(match.group(1)))
        except OSError:
            pass
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)  # its owner is gone
        finally:
            os.close(fd)
    return sorted(live)


def _release() -> None:
    """Drop this process's claim: unlock, close, remove its file."""
    global _claim_fd, _claim_path, _claimed_group
    if _claim_path is not None:
        with contextlib.suppress(OSError):
            os.unlink(_claim_path)
    if _claim_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_claim_fd)  # the lock goes with the last descriptor
    _claim_fd = _claim_path = None
    _claimed_group = None


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    """The parent forked a child that carries its stores: from now on its group is its own
    pid (its children's group), and it claims again only at its stores' next change."""
    global _group
    try:
        _release()
        _found.clear()
        _group = os.getpid()
    finally:
        _lock.release()


def _after_fork_in_child() -> None:
    """The child's group is the parent that forked it. The inherited claim descriptor is
    closed without unlocking: it shares the parent's lock, which the parent releases."""
    global _group, _claim_fd, _claim_path, _claimed_group, _lock
    _lock = threading.Lock()
    if _claim_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_claim_fd)
    _claim_fd = _claim_path = None
    _claimed_group = None
    _found.clear()
    _group = os.getppid()


atexit.register(_release)
os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
