"""Snapshot files: a MemoryStore's live sessions on disk, so a restart logs no one out.

The file is a 16-byte magic, a CRC-32 of the body, and the body: msgpack of the format's
version, the save's wall-clock time, the serializer's name, and each session as ``[sid,
seconds_left, read_again, data]`` in least-recently-used-first order.

A save writes a fresh temporary file next to the target (``mkstemp``: a unique name,
``O_EXCL``, so no symlink planted there is followed), mode 0600, fsyncs it and renames it
over the old file, under a lock per path: a crash mid-write leaves the previous snapshot
whole, and two saves in one process never share a file. A load never raises for what it
finds at the path: a bad file is moved aside under a unique name with one WARNING.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import secrets
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .errors import InvalidOption

__all__ = [
    "FileIdentity",
    "SnapshotRecord",
    "check_snapshot_path",
    "file_identity",
    "pid_alive",
    "read_snapshot",
    "remove_leftovers",
    "write_snapshot",
]

log = logging.getLogger("lembro")

_MAGIC = b"LEMBRO-SNAPSHOT1"
_HEADER = len(_MAGIC) + 4  # magic, CRC-32 of the body
_VERSION = 1

# A save's temporary file: ".<name>.tmp-<pid>-<random>", so a later start can tell a
# killed writer's leftover (its pid is gone) from a live writer's file.
_TEMPORARY = ".{name}.tmp-{pid}-"

# sid, seconds of life left at save time, whether it was read again (off probation), data
SnapshotRecord = tuple[str, float, bool, bytes]

# A file's inode, modification time (nanoseconds) and size: a save replaces all three.
FileIdentity = tuple[int, int, int]


class _Body(msgspec.Struct, array_like=True):
    version: int
    saved_at: float  # wall-clock seconds (time.time()) at save
    serializer: str
    sessions: list[tuple[str, float, bool, bytes]]


class _Unusable(Exception):
    """What is at the path is not a snapshot this store can load."""


# One lock per target path, so that a periodic save and an explicit one in the same
# process take turns; forked children start with fresh ones (a lock held by another
# thread at the fork would never be released in the child).
_save_locks: dict[str, threading.Lock] = {}
_save_locks_guard = threading.Lock()


def _lock_for(target: Path) -> threading.Lock:
    with _save_locks_guard:
        return _save_locks.setdefault(os.fspath(target), threading.Lock())


def _fresh_locks_in_child() -> None:
    global _save_locks_guard
    _save_locks_guard = threading.Lock()
    _save_locks.clear()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


def check_snapshot_path(path: str | os.PathLike[str]) -> str:
    """Return ``path`` as a str, or raise :class:`InvalidOption` when a snapshot could
    never be written there: its directory is missing or this process may not write in
    it. (Said at construction, not at exit when the sessions would be lost.)"""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidOption("snapshot", path, "a file path")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise InvalidOption("snapshot", path, "a str file path")
    directory = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(directory):
        raise InvalidOption("snapshot", path, f"a file in an existing directory ({directory})")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidOption(
            "snapshot", path, f"a file in a directory this process may write ({directory})"
        )
    return name


def file_identity(path: str | os.PathLike[str]) -> FileIdentity | None:
    """What tells a save of ``path`` from another: its inode, modification time and size
    (``None``: nothing there, or nothing this process can see)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def write_snapshot(
    path: str | os.PathLike[str],
    serializer: str,
    records: list[SnapshotRecord],
    only_if: Callable[[], bool] | None = None,
) -> bool:
    """Write ``records`` to ``path`` atomically: a unique temporary file (mode 0600) in the
    same directory, fsync, rename over ``path``, fsync of the directory. With ``only_if``,
    it is asked just before the rename, and ``False`` leaves ``path`` as it is (and this
    returns ``False``)."""
    target = Path(path)
    body = msgspec.msgpack.encode(_Body(_VERSION, time.time(), serializer, records))
    blob = _MAGIC + zlib.crc32(body).to_bytes(4, "big") + body
    with _lock_for(target):
        # mkstemp opens with O_CREAT | O_EXCL (and O_NOFOLLOW where there is one), mode 0600.
        fd, temporary = tempfile.mkstemp(
            prefix=_TEMPORARY.format(name=target.name, pid=os.getpid()), dir=target.parent
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            if only_if is not None and not only_if():
                os.unlink(temporary)
                return False
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    _fsync_directory(target.parent)
    return True


def remove_leftovers(path: str | os.PathLike[str]) -> int:
    """Remove temporary files a killed writer left next to ``path``; return how many.

    Only files whose writer's process is gone: another process may be saving right now."""
    target = Path(path)
    prefix = f".{target.name}.tmp-"
    removed = 0
    try:
        names = os.listdir(target.parent)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        try:
            os.unlink(target.parent / name)
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("snapshot: removed %d temporary files left by a killed writer", removed)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is alive (this process is; another user's is, as far as we
    can tell)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def read_snapshot(
    path: str | os.PathLike[str],
    serializer: str,
    *,
    max_bytes: int | None = None,
    max_lifetime: float = math.inf,
) -> list[SnapshotRecord]:
    """Return the sessions in ``path`` with their lifetimes (seconds) reduced by the time
    since the save and capped at ``max_lifetime``.

    Nothing at the path gives ``[]``. Anything else that is not a snapshot this store can
    load (a directory, a symlink loop or a dangling one, a file this process may not
    read, garbage, a truncated or damaged file, one larger than ``max_bytes``, one made
    with another serializer or by another version) gives ``[]`` and one WARNING, and is
    moved aside to ``<path>.corrupt-<time>-<random>`` where the directory allows. A
    record whose lifetime is not a finite number is skipped. Never raises.
    """
    source = Path(path)
    try:
        os.lstat(source)
    except FileNotFoundError:
        return []
    except OSError as e:
        log.warning("snapshot %s cannot be examined (%s); starting empty", source, e)
        return []
    try:
        body = _load(source, serializer, max_bytes)
    except _Unusable as e:
        log.warning(
            "snapshot %s is unusable (%s): %s; starting empty", source, e, _move_aside(source)
        )
        return []
    elapsed = max(0.0, time.time() - body.saved_at) if math.isfinite(body.saved_at) else 0.0
    records: list[SnapshotRecord] = []
    for sid, left, read_again, data in body.sessions:
        if not math.isfinite(left):  # inf would live forever; nan compares false to everything
            continue
        left = min(left - elapsed, max_lifetime)
        if left > 0:
            records.append((sid, left, bool(read_again), data))
    return records


def _load(source: Path, serializer: str, max_bytes: int | None) -> _Body:
    """Open ``source``, check its magic and size before reading the body, and decode it."""
    try:
        # O_NONBLOCK: a FIFO at the path must not hang the start; a regular file ignores it.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        # ELOOP, ENOENT (a dangling symlink), EACCES, EISDIR on some systems
        raise _Unusable(e.strerror or str(e)) from None
    try:
        info = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise _Unusable(e.strerror or str(e)) from None
    if not stat.S_ISREG(info.st_mode):  # a directory, a FIFO, a device (/dev/zero never ends)
        os.close(fd)
        raise _Unusable("not a regular file")
    with os.fdopen(fd, "rb") as handle:
        try:
            head = handle.read(_HEADER)
            if not head:
                raise _Unusable("empty")
            if not head.startswith(_MAGIC[: len(head)]):
                if head.startswith(_MAGIC[:-1]):
                    raise _Unusable("written by another version of lembro")
                raise _Unusable("not a lembro snapshot")
            if len(head) < _HEADER:
                raise _Unusable("truncated")
            if max_bytes is not None and info.st_size > max_bytes:
                raise _Unusable(f"{info.st_size} bytes, more than the {max_bytes} it may hold")
            body = handle.read(-1 if max_bytes is None else max_bytes + 1 - _HEADER)
            if max_bytes is not None and len(body) > max_bytes - _HEADER:  # grew since
                raise _Unusable(f"more than the {max_bytes} bytes it may hold")
        except OSError as e:  # EIO
            raise _Unusable(e.strerror or str(e)) from None
    if zlib.crc32(body).to_bytes(4, "big") != head[len(_MAGIC) :]:
        raise _Unusable("checksum mismatch: truncated or damaged")
    try:
        parsed: Any = msgspec.msgpack.decode(body, type=_Body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise _Unusable(f"undecodable: {e}") from None
    if parsed.version != _VERSION:
        raise _Unusable(f"version {parsed.version}, expected {_VERSION}")
    if parsed.serializer != serializer:
        raise _Unusable(
            f"written with serializer {parsed.serializer!r}, this store uses {serializer!r}"
        )
    result: _Body = parsed
    return result


def _move_aside(source: Path) -> str:
    """Rename ``source`` (the entry itself, never a symlink's target) to a unique name
    beside it; say where it went."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for _ in range(3):
        aside = source.with_name(f"{source.name}.corrupt-{stamp}-{secrets.token_hex(4)}")
        if os.path.lexists(aside):
            continue
        try:
            os.rename(source, aside)
        except OSError as e:
            if e.errno == errno.EEXIST or e.errno == errno.ENOTEMPTY:
                continue
            return f"could not be moved aside ({e})"
        return f"moved aside to {aside}"
    return "could not be moved aside (no free name)"


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
