"""lembro: server-side sessions in one process's memory, bounded and self-purging."""

from .errors import (
    InvalidOption,
    InvalidSize,
    LembroError,
    SerializationError,
    SessionTooLarge,
    StoreUnavailable,
)
from .memory import MemoryStore
from .protocol import AsyncSessionStore, SessionStore, Stats, as_async
from .serializers import Serializer
from .size import format_size, parse_size

__all__ = [
    "AsyncSessionStore",
    "InvalidOption",
    "InvalidSize",
    "LembroError",
    "MemoryStore",
    "SerializationError",
    "Serializer",
    "SessionStore",
    "SessionTooLarge",
    "Stats",
    "StoreUnavailable",
    "as_async",
    "format_size",
    "parse_size",
]

__version__ = "0.1.0"
