"""Several processes serving one app, each with its own MemoryStore: detected, said loudly.

A ``MemoryStore`` holds its sessions in one process. When a server runs several (gunicorn
``-w 2``, uvicorn ``--workers 2``), each has its own copy and a user's next request may
land in a process that never saw their session.

**Which processes are one app's workers: those that listen on the same sockets.** A
process's *identity* is the set of listening sockets it holds: every open descriptor
(listed from ``/proc/self/fd``, else ``/dev/fd``) that is a socket with
``SO_ACCEPTCONN`` set, as its address family and ``getsockname()`` address (host and
port, a Unix socket's path, or an abstract socket's name), sorted, together with the
process's network namespace where the system names one (``/proc/self/ns/net``). The
workers of one server share their listening socket (gunicorn's master opens it and forks
them, with or without ``--preload``; uvicorn ``--workers`` passes it to the children it
spawns), or each bind the same address with ``SO_REUSEPORT``: they have one identity. Two
unrelated programs do not: they listen on nothing, or on different addresses, since two
sockets listen on one address only when both ask to share it. A process that listens on
nothing (a script, a test run, a ``multiprocessing`` worker, a task queue's worker) has
no identity, claims nothing, and is never counted.

**Claims.** A process with an identity holds a *claim*: a file in a private runtime
directory named ``<identity: 16 hex digits of a SHA-256>-<pid>``, locked with a POSIX
record lock (``lockf``). Such a lock belongs to the process that took it: a forked child
does not inherit it, and it goes when the process ends, however it ends. A file under a
claim name is always locked already (it is made and locked as ``.claiming-<pid>``, then
renamed). A process that claims then looks for other claims of its identity: a lock it
cannot take is held by a live process, which counts, unless it is this process's parent
(a server's master that built a store while holding the socket, then forked its
workers); a file it can lock was left by a dead process and is removed, whatever its
identity, as is a ``.claiming-`` file whose process is gone. Nothing is removed at exit
(lembro installs no exit hook): the next process to look removes what a dead one left.

**When a process looks.** ``check()`` is called when a store is built and at a store's
first change after it was loaded or forked. A process looks for its listening sockets at
its first check and, if it found none (a store built before the server listened), once
more at its next check; after it has claimed, or looked twice, a check costs a
``getpid()`` and a dict lookup. A fork is told by the pid: a process whose pid has no
state yet is new, and one forked from a process that had checked drops the state it
inherited (closing the inherited claim descriptor, which leaves the parent's lock
alone). So gunicorn's workers without ``--preload`` claim when they build their store,
at start-up; with ``--preload`` the master builds its store before it opens its socket
and claims nothing, and each worker claims at its first session write. uvicorn's parent
binds the socket and the first worker to start listens on it, so a worker that built its
store before then claims at its first session write.

What it does then is ``LEMBRO_SEVERAL_PROCESSES`` in the environment: ``"error"`` (the
default) logs one ERROR naming the way out; ``"refuse"`` raises
:class:`lembro.errors.SeveralProcesses` (from the store's constructor, or from every
session write of a process that claimed at its first); ``"ignore"`` checks nothing.
``LEMBRO_RUNTIME_DIR`` moves the claims' directory (default: ``$XDG_RUNTIME_DIR/lembro``
or ``<tmp>/lembro-<uid>``).

Not caught: workers that share no listening address (a server that hands connections to
its workers itself), a process that forks a worker and also serves sessions itself (its
worker does not count it), several hosts, a process that found no listening socket at its
first two checks, and systems that list no descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Collection, Sequence

from ._log import log
from .errors import InvalidOption, SeveralProcesses
from .snapshot import pid_alive

__all__ = ["POLICIES", "check", "policy", "runtime_dir"]


#: The values ``LEMBRO_SEVERAL_PROCESSES`` accepts.
POLICIES = ("error", "refuse", "ignore")

#: How many times a process looks for its listening sockets before it gives up: at its
#: first check, and again at its next, for a store built before the server listened.
_LOOKS = 2

# A claim's file name: <identity: 16 hex digits>-<pid>
_CLAIM = re.compile(r"([0-9a-f]{16})-([0-9]+)")
# A claim being made, locked before it is renamed to its claim name: .claiming-<pid>
_CLAIMING = re.compile(r"\.claiming-([0-9]+)")

# A socket object made over a copy of the app's descriptor is told it is non-blocking:
# otherwise, with a default timeout set (socket.setdefaulttimeout), it would make the
# open file non-blocking, and the copy shares that with the app's socket. 0 where the
# system has no such flag.
_NONBLOCKING = getattr(socket, "SOCK_NONBLOCK", 0)

# A listening socket: its address family and its address as text.
_Listener = tuple[int, str]


class _Process:
    """What one process (one pid) knows of its claim. Changed only under ``lock``."""

    __slots__ = ("done", "fd", "file", "found", "lock", "looks", "path", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lock = threading.Lock()
        self.looks = 0  # times it looked for its listening sockets
        self.done = False  # claimed, or gave up looking: a check costs a getpid()
        self.fd: int | None = None  # the claim's descriptor, locked
        self.file: tuple[int, int] | None = None  # the claim's (st_dev, st_ino)
        self.path: str | None = None
        self.found: list[int] = []  # the other live claims of its identity, by pid


# By pid: this process's state, and those of the processes it was forked from (a fork
# copies this dict), dropped at its first check. A forked child never takes an inherited
# lock: a thread of its parent may have held it at the fork, and nothing would release it.
_processes: dict[int, _Process] = {}


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
    """Claim this process as one serving on its listening sockets, once per process; log
    one ERROR (or raise :class:`SeveralProcesses`) when other live processes listening on
    the same sockets hold claims. A process that listens on nothing claims nothing. Cheap
    once claimed: every store calls it when built, and at its first change after it was
    loaded or forked."""
    me = _this_process()
    if me.done:
        if me.found and policy() == "refuse":
            raise SeveralProcesses(me.pid, list(me.found))
        return
    mode = policy()
    if mode == "ignore":
        return
    with me.lock:
        if not me.done:
            _forget_inherited(me)
            _look(me)
        others = list(me.found)
    if others and mode == "refuse":
        raise SeveralProcesses(me.pid, others)


def _this_process() -> _Process:
    pid = os.getpid()
    me = _processes.get(pid)
    if me is None:  # the first check of this process, or of a forked child
        me = _processes.setdefault(pid, _Process(pid))  # one winner among racing threads
    return me


def _forget_inherited(me: _Process) -> None:
    """Drop the state of the processes this one was forked from (``me.lock`` held). An
    inherited claim descriptor is closed if it still refers to the claim: closing it
    leaves the parent's lock alone, as a record lock belongs to the process that took it."""
    for pid in [pid for pid in _processes if pid != me.pid]:
        inherited = _processes.pop(pid, None)
        if inherited is None or inherited.fd is None:
            continue
        try:
            info = os.fstat(inherited.fd)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == inherited.file:
            with contextlib.suppress(OSError):
                os.close(inherited.fd)


def _listening_sockets() -> list[_Listener]:
    """The listening sockets this process holds, sorted: ``(address family, address)``
    for every open descriptor that is a socket with ``SO_ACCEPTCONN`` set; the address is
    ``host:port`` (``[host]:port`` for IPv6), a Unix socket's path, or ``@name`` for an
    abstract one. Empty where the system lists no descriptors."""
    found: set[_Listener] = set()
    if not _NONBLOCKING and socket.getdefaulttimeout() is not None:
        return []  # a socket object made now would make the app's sockets non-blocking
    for fd in _open_descriptors():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            copy = os.dup(fd)  # closed by the socket object, never the app's descriptor
        except OSError:
            continue
        try:
            sock = socket.socket(type=socket.SOCK_STREAM | _NONBLOCKING, fileno=copy)
        except (OSError, ValueError):  # not a socket Python can represent
            os.close(copy)
            continue
        with sock:
            try:
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                found.add((int(sock.family), _address_text(sock.family, sock.getsockname())))
            except OSError:
                continue
    return sorted(found)


def _open_descriptors() -> list[int]:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        return sorted(int(name) for name in names if name.isdigit())
    return []


def _address_text(family: int, address: object) -> str:
    if family == socket.AF_INET and isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    if family == socket.AF_INET6 and isinstance(address, tuple):
        host, port, _flow, scope = address
        return f"[{host}%{scope}]:{port}" if scope else f"[{host}]:{port}"
    if isinstance(address, bytes):  # an abstract Unix socket's name, after its NUL
        return "@" + address[1:].decode("utf-8", "backslashreplace")
    return str(address)


def _identity(listening: Sequence[_Listener]) -> str:
    """The claim name's identity part for these listening sockets: 16 hex digits of a
    SHA-256 over the sorted sockets and this process's network namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/net")
    except OSError:
        namespace = ""
    text = "\n".join([namespace, *(f"{family} {address}" for family, address in sorted(listening))])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _look(me: _Process) -> None:
    """Look for this process's listening sockets, and claim under them when there are
    some (``me.lock`` held). ``me.done`` is set last: a thread that sees it set sees what
    the claim found."""
    me.looks += 1
    listening = _listening_sockets()
    if listening:
        _claim(me, listening)
    me.done = bool(listening) or me.looks >= _LOOKS


def _claim(me: _Process, listening: list[_Listener]) -> None:
    """Take this process's claim under ``listening`` and look for the other live claims
    of the same identity; log the ERROR when there are some (``me.lock`` held)."""
    directory = runtime_dir()
    if not _private_directory(directory):
        return
    name = _identity(listening)
    path = os.path.join(directory, f"{name}-{me.pid}")
    made = _locked_file(directory, path, listening)
    if made is None:
        return
    me.fd, me.file = made
    me.path = path
    # A process's parent does not count: a server's master that built a store while it
    # held the socket (gunicorn --preload handed inherited sockets) serves no request.
    others = _live_claims(directory, name, ignore={me.pid, os.getppid()})
    me.found = others
    if others:
        log.error(
            "lembro: %d other process(es) (pid %s) serve this app with their own MemoryStore "
            "(they listen on %s, as this one does): each holds its own sessions, so users "
            "are logged out at random when their requests land in another process. Run one "
            "worker process with threads (gunicorn -w 1 --threads 8, uvicorn without "
            "--workers), or use lembro.RedisStore to share sessions between processes. Set "
            "LEMBRO_SEVERAL_PROCESSES=refuse to refuse to start instead of this message.",
            len(others),
            ", ".join(map(str, others)),
            ", ".join(address for _family, address in listening),
        )


def _locked_file(
    directory: str, path: str, listening: Sequence[_Listener]
) -> tuple[int, tuple[int, int]] | None:
    """Make the claim file ``path``, locked by this process before it appears under that
    name (another process that finds a claim unlocked removes it as a dead one's): made
    and locked under a name of its own, then renamed. Return its descriptor and its
    ``(st_dev, st_ino)``, or ``None`` when it cannot be made."""
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
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        addresses = " ".join(address for _family, address in listening)
        about = f"{addresses}\n{' '.join(sys.argv)}\n"  # for whoever lists the directory
        os.write(fd, about.encode("utf-8", "replace")[:4096])
        info = os.fstat(fd)
        os.rename(making, path)
    except OSError as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(making)
        log.debug("cannot claim %s: %s", path, e)
        return None
    return fd, (info.st_dev, info.st_ino)


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


def _live_claims(directory: str, name: str, ignore: Collection[int]) -> list[int]:
    """The pids of the live claims of identity ``name``, but those in ``ignore``. Removes
    the files of dead claims of any identity on the way, and those of claims that a
    killed process was making, so the directory never fills up."""
    live = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    for entry in entries:
        making = _CLAIMING.fullmatch(entry)
        if making is not None and not pid_alive(int(making.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))
            continue
        match = _CLAIM.fullmatch(entry)
        if match is None or int(match.group(2)) in ignore:
            continue
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            held = _held(fd)
            if held and match.group(1) == name:
                live.append(int(match.group(2)))
            elif held is False:
                _remove_if_same(path, fd)  # its owner is gone
        finally:
            os.close(fd)  # and with it the lock taken to test it
    return sorted(live)


def _held(fd: int) -> bool | None:
    """Whether another process holds the lock on ``fd``'s file (its owner is alive);
    ``None`` when the lock cannot be tested."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return True if e.errno in (errno.EACCES, errno.EAGAIN) else None
    return False


def _remove_if_same(path: str, fd: int) -> None:
    """Remove ``path`` if it is still the file open as ``fd``: a process that reuses a
    dead one's pid may have renamed its own claim onto that name since."""
    with contextlib.suppress(OSError):
        here, opened = os.lstat(path), os.fstat(fd)
        if (here.st_dev, here.st_ino) == (opened.st_dev, opened.st_ino):
            os.unlink(path)
