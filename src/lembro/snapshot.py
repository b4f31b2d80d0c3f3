"""Snapshot files: a MemoryStore's live sessions on disk, so a restart logs no one out.

The file is a 16-byte magic, a CRC-32 of the body, and the body: msgpack of the save's
wall-clock time, the serializer's name, and each session as ``[sid, seconds_left,
read_again, data]`` in least-recently-used-first order. It is written to a temporary file
with mode 0600, fsynced, and renamed over the old one, so a crash mid-write leaves the
previous snapshot whole.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["SnapshotRecord", "read_snapshot", "write_snapshot"]

log = logging.getLogger("lembro")

_MAGIC = b"LEMBRO-SNAPSHOT1"
_VERSION = 1

# sid, seconds of life left at save time, whether it was read again (off probation), data
SnapshotRecord = tuple[str, float, bool, bytes]


class _Body(msgspec.Struct, array_like=True):
    version: int
    saved_at: float  # wall-clock seconds (time.time()) at save
    serializer: str
    sessions: list[tuple[str, float, bool, bytes]]


class _Foreign(Exception):
    """The file is not a snapshot this store can load."""


def write_snapshot(
    path: str | os.PathLike[str], serializer: str, records: list[SnapshotRecord]
) -> None:
    """Write ``records`` to ``path`` atomically (temporary file, fsync, rename), mode 0600."""
    target = Path(path)
    body = msgspec.msgpack.encode(_Body(_VERSION, time.time(), serializer, records))
    blob = _MAGIC + zlib.crc32(body).to_bytes(4, "big") + body
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply to a file left behind
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def read_snapshot(path: str | os.PathLike[str], serializer: str) -> list[SnapshotRecord]:
    """Return the sessions in ``path`` with their lifetimes reduced by the time since the save.

    A missing file gives ``[]``. A corrupt, truncated or foreign file (or one made with
    another serializer) is moved aside to ``<path>.corrupt-<time>`` with one WARNING, and
    gives ``[]``. Never raises for the file's content.
    """
    source = Path(path)
    try:
        blob = source.read_bytes()
    except FileNotFoundError:
        return []
    try:
        body = _parse(blob, serializer)
    except _Foreign as e:
        aside = source.with_name(f"{source.name}.corrupt-{int(time.time())}")
        try:
            os.replace(source, aside)
            where = f"moved aside to {aside}"
        except OSError as move_error:
            where = f"could not be moved aside ({move_error})"
        log.warning("snapshot %s is unusable (%s): %s; starting empty", source, e, where)
        return []
    elapsed = max(0.0, time.time() - body.saved_at)
    return [
        (sid, left - elapsed, bool(read_again), data)
        for sid, left, read_again, data in body.sessions
        if left - elapsed > 0
    ]


def _parse(blob: bytes, serializer: str) -> _Body:
    if not blob.startswith(_MAGIC):
        raise _Foreign("not a lembro snapshot")
    header = len(_MAGIC) + 4
    if len(blob) < header:
        raise _Foreign("truncated")
    body = blob[header:]
    if zlib.crc32(body).to_bytes(4, "big") != blob[len(_MAGIC) : header]:
        raise _Foreign("checksum mismatch: truncated or damaged")
    try:
        parsed: Any = msgspec.msgpack.decode(body, type=_Body)
    except msgspec.DecodeError as e:
        raise _Foreign(f"undecodable: {e}") from None
    if parsed.version != _VERSION:
        raise _Foreign(f"version {parsed.version}, expected {_VERSION}")
    if parsed.serializer != serializer:
        raise _Foreign(
            f"written with serializer {parsed.serializer!r}, this store uses {serializer!r}"
        )
    result: _Body = parsed
    return result


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
