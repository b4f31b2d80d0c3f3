"""lembro: server-side sessions in one process's memory, bounded and self-purging."""

from typing import TYPE_CHECKING, Any

from .errors import (
    InvalidOption,
    InvalidSize,
    LembroError,
    SerializationError,
    SessionTooLarge,
    SeveralProcesses,
    StoreUnavailable,
)
from .lifetimes import Device, Loaded, SessionInfo
from .memory import MemoryStore
from .protocol import AsyncSessionStore, SessionStore, Stats, as_async
from .serializers import Serializer
from .size import format_size, parse_size

if TYPE_CHECKING:
    from .redis import AsyncRedisStore, RedisStore

__all__ = [
    "AsyncRedisStore",
    "AsyncSessionStore",
    "Device",
    "InvalidOption",
    "InvalidSize",
    "LembroError",
    "Loaded",
    "MemoryStore",
    "RedisStore",
    "SerializationError",
    "Serializer",
    "SessionInfo",
    "SessionStore",
    "SessionTooLarge",
    "SeveralProcesses",
    "Stats",
    "StoreUnavailable",
    "as_async",
    "format_size",
    "parse_size",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The Redis stores load redis-py on first use, so `import lembro` never needs it.
    if name in ("RedisStore", "AsyncRedisStore"):
        from . import redis

        return getattr(redis, name)
    raise AttributeError(f"module 'lembro' has no attribute {name!r}")
