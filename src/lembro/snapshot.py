"""Snapshot files: a MemoryStore's live sessions on disk, so a restart logs no one out.

The file is a 16-byte magic and a sequence of frames, each a 4-byte length, a CRC-32 of
its payload and the payload, in msgpack: first ``[version, saved_at, serializer]`` (the
save's wall-clock time, the serializer's name), then each session as ``[sid,
seconds_left, uses, data, lifetimes]`` (``uses``: its count of uses as the eviction order
fades them, so a load gives back each session's rank whatever the order of the file;
``lifetimes``: see ``Lifetimes``), and last their count, so a file cut at a frame's end
is still seen to be cut. Frames are written and read one at a time: neither a save nor a
load holds the whole file in memory.

Version 3 (``LEMBRO-SNAPSHOT3``) added each session's lifetimes and device; a file of
version 2 (``LEMBRO-SNAPSHOT2``, whose sessions have no ``lifetimes``) still loads, each
session then as created at the load.

A save writes a fresh temporary file next to the target (``mkstemp``: a unique name,
``O_EXCL``, so no symlink planted there is followed), mode 0600, fsyncs it and renames it
over the old file, under a lock per path: a crash mid-write leaves the previous snapshot
whole, and two saves in one process never share a file. A load never raises for what it
finds at the path: a bad file is moved aside under a unique name with one WARNING.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from ._log import log
from .errors import InvalidOption

__all__ = [
    "FileIdentity",
    "Lifetimes",
    "SnapshotRecord",
    "check_snapshot_path",
    "file_identity",
    "load_snapshot",
    "pid_alive",
    "read_snapshot",
    "remove_leftovers",
    "write_snapshot",
]


_MAGIC = b"LEMBRO-SNAPSHOT3"
_FRAME = 8  # a frame's length and CRC-32, 4 bytes each, big-endian
_VERSION = 3
# Files of these versions load too, with their own magic.
_OLDER = {b"LEMBRO-SNAPSHOT2": 2}

# A save's temporary file: ".<name>.tmp-<pid>-<random>", so a later start can tell a
# killed writer's leftover (its pid is gone) from a live writer's file.
_TEMPORARY = ".{name}.tmp-{pid}-"

# A session's lifetimes at save time, in seconds: how long ago it was created, renewed
# (its id issued) and last seen, how long until its absolute end (None: none), and the
# device recorded for it (its ip and user agent, None: unknown).
Lifetimes = tuple[float, float, float, "float | None", "str | None", "str | None"]

# sid, seconds of life left at save time, its faded count of uses (a bool, from a file
# that says only whether it was used again: 2 or 1), data, and its lifetimes (None: from
# a file of version 2, which has none)
SnapshotRecord = tuple[str, float, float, bytes, "Lifetimes | None"]

# A file's inode, modification time (nanoseconds) and size: a save replaces all three.
FileIdentity = tuple[int, int, int]


class _Header(msgspec.Struct, array_like=True):
    version: int
    saved_at: float  # wall-clock seconds (time.time()) at save
    serializer: str


class _Lifetimes(msgspec.Struct, array_like=True):
    created: float
    renewed: float
    seen: float
    absolute_left: float | None
    ip: str | None
    user_agent: str | None


class _Session(msgspec.Struct, array_like=True):
    sid: str
    left: float
    uses: float | bool
    data: bytes
    lifetimes: _Lifetimes | None = None  # version 2 has none


# The last frame is an int: how many sessions the file holds.


class _Unusable(Exception):
    """What is at the path is not a snapshot this store can load."""


# One lock per target path, so that a periodic save and an explicit one in the same
# process take turns; a forked child starts with fresh ones (a lock held by another
# thread at the fork would never be released in the child), seen by its pid.
_save_locks: dict[str, threading.Lock] = {}
_save_locks_guard = threading.Lock()
_save_locks_pid = os.getpid()


def _lock_for(target: Path) -> threading.Lock:
    global _save_locks_guard, _save_locks_pid
    if _save_locks_pid != os.getpid():
        _save_locks_guard = threading.Lock()
        _save_locks.clear()
        _save_locks_pid = os.getpid()
    with _save_locks_guard:
        return _save_locks.setdefault(os.fspath(target), threading.Lock())


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


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big") + payload


def write_snapshot(
    path: str | os.PathLike[str],
    serializer: str,
    records: Iterable[SnapshotRecord],
    only_if: Callable[[], bool] | None = None,
) -> bool:
    """Write ``records`` to ``path`` atomically, one at a time as they come: a unique
    temporary file (mode 0600) in the same directory, fsync, rename over ``path``, fsync
    of the directory. With ``only_if``, it is asked just before the rename, and ``False``
    leaves ``path`` as it is (and this returns ``False``)."""
    target = Path(path)
    encode = msgspec.msgpack.Encoder().encode
    with _lock_for(target):
        # mkstemp opens with O_CREAT | O_EXCL (and O_NOFOLLOW where there is one), mode 0600.
        fd, temporary = tempfile.mkstemp(
            prefix=_TEMPORARY.format(name=target.name, pid=os.getpid()), dir=target.parent
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_MAGIC)
                handle.write(_frame(encode(_Header(_VERSION, time.time(), serializer))))
                count = 0
                for record in records:
                    handle.write(_frame(encode(record)))
                    count += 1
                handle.write(_frame(encode(count)))
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
    """The sessions in ``path`` as a list: see ``load_snapshot``, which takes them one at
    a time ([] when the file is unusable)."""
    records: list[SnapshotRecord] = []
    loaded = load_snapshot(
        path, serializer, records.append, max_bytes=max_bytes, max_lifetime=max_lifetime
    )
    return records if loaded else []


def load_snapshot(
    path: str | os.PathLike[str],
    serializer: str,
    take: Callable[[SnapshotRecord], None],
    *,
    max_bytes: int | None = None,
    max_lifetime: float = math.inf,
) -> bool:
    """Give ``take`` each session in ``path``, as it is read, with its lifetime (seconds)
    reduced by the time since the save and capped at ``max_lifetime``; return whether the
    whole file was good. ``False`` after some sessions were taken means the file was cut
    short or damaged past them: the caller drops what it took.

    Nothing at the path gives ``True`` and no session. Anything else that is not a
    snapshot this store can load (a directory, a symlink loop or a dangling one, a file
    this process may not read, garbage, a truncated or damaged file, one larger than
    ``max_bytes``, one made with another serializer or by another version) gives ``False``
    and one WARNING, and is moved aside to ``<path>.corrupt-<time>-<random>`` where the
    directory allows. A record whose lifetime is not a finite number is skipped. Never
    raises but for what ``take`` raises.
    """
    source = Path(path)
    try:
        os.lstat(source)
    except FileNotFoundError:
        return True
    except OSError as e:
        log.warning("snapshot %s cannot be examined (%s); starting empty", source, e)
        return False
    try:
        _load(source, serializer, max_bytes, max_lifetime, take)
    except _Unusable as e:
        log.warning(
            "snapshot %s is unusable (%s): %s; starting empty", source, e, _move_aside(source)
        )
        return False
    return True


def _load(
    source: Path,
    serializer: str,
    max_bytes: int | None,
    max_lifetime: float,
    take: Callable[[SnapshotRecord], None],
) -> None:
    """Open ``source``, check its magic and size before reading on, then read and give
    ``take`` one session at a time; raise ``_Unusable`` for anything wrong."""
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
            head = handle.read(len(_MAGIC))
            if not head:
                raise _Unusable("empty")
            version = _VERSION if head == _MAGIC else _OLDER.get(head)
            if version is None:
                if len(head) == len(_MAGIC) and head.startswith(_MAGIC[:-1]):
                    raise _Unusable("written by another version of lembro")
                if _MAGIC.startswith(head):
                    raise _Unusable("truncated")
                raise _Unusable("not a lembro snapshot")
            if max_bytes is not None and info.st_size > max_bytes:
                raise _Unusable(f"{info.st_size} bytes, more than the {max_bytes} it may hold")
            _read_frames(handle, info.st_size, version, serializer, max_lifetime, take)
        except OSError as e:  # EIO
            raise _Unusable(e.strerror or str(e)) from None


def _read_frames(
    handle: Any,
    size: int,
    version: int,
    serializer: str,
    max_lifetime: float,
    take: Callable[[SnapshotRecord], None],
) -> None:
    limit = size  # no frame is longer than the file was when opened: it may not grow
    read_frame = _frame_reader(handle, limit)
    header = _decode(read_frame(), _Header)
    if header.version != version:
        raise _Unusable(f"version {header.version}, expected {version}")
    if header.serializer != serializer:
        raise _Unusable(
            f"written with serializer {header.serializer!r}, this store uses {serializer!r}"
        )
    saved_at = header.saved_at
    elapsed = max(0.0, time.time() - saved_at) if math.isfinite(saved_at) else 0.0
    count = 0
    decoder = msgspec.msgpack.Decoder(_Session | int)
    while True:
        try:
            item: Any = decoder.decode(read_frame())
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise _Unusable(f"undecodable: {e}") from None
        if isinstance(item, int):  # the trailer
            if item != count:
                raise _Unusable(f"holds {count} sessions, says {item}")
            if handle.read(1):
                raise _Unusable("more after its end")
            return
        count += 1
        left, uses = item.left, item.uses
        if not math.isfinite(left):  # inf would live forever; nan compares false to everything
            continue
        if isinstance(uses, bool):
            uses = 2.0 if uses else 1.0
        elif not (0.0 < uses < math.inf):
            uses = 1.0  # a count no save writes: as a new session's
        left = min(left - elapsed, max_lifetime)
        lifetimes = None if item.lifetimes is None else _aged(item.lifetimes, elapsed)
        if lifetimes is not None and lifetimes[3] is not None:
            left = min(left, lifetimes[3])  # never past its absolute end
        if left > 0:
            take((item.sid, left, uses, item.data, lifetimes))


def _aged(saved: _Lifetimes, elapsed: float) -> Lifetimes:
    """A session's lifetimes as they are ``elapsed`` seconds after the save. A time that
    is not a finite number, or in the future, counts as now; an absolute end that is not
    a finite number, as none."""

    def ago(seconds: float) -> float:
        return seconds + elapsed if 0.0 <= seconds < math.inf else elapsed

    end = saved.absolute_left
    absolute_left = end - elapsed if end is not None and math.isfinite(end) else None
    return (
        ago(saved.created),
        ago(saved.renewed),
        ago(saved.seen),
        absolute_left,
        saved.ip,
        saved.user_agent,
    )


def _frame_reader(handle: Any, limit: int) -> Callable[[], bytes]:
    def read_frame() -> bytes:
        head = handle.read(_FRAME)
        if len(head) < _FRAME:
            raise _Unusable("truncated")
        length = int.from_bytes(head[:4], "big")
        if length > limit:
            raise _Unusable("damaged: a frame longer than the file")
        payload: bytes = handle.read(length)
        if len(payload) < length:
            raise _Unusable("truncated")
        if zlib.crc32(payload).to_bytes(4, "big") != head[4:]:
            raise _Unusable("checksum mismatch: truncated or damaged")
        return payload

    return read_frame


def _decode(payload: bytes, kind: type[_Header]) -> _Header:
    try:
        return msgspec.msgpack.decode(payload, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise _Unusable(f"undecodable: {e}") from None


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
