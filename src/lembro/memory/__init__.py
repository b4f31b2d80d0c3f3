"""The in-memory store: ``MemoryStore`` (the keeper, in ``store``) over a
``SessionTable`` (in ``table``) and its parts. docs/architecture.md maps them."""

from .budget import (
    DEVICE_OVERHEAD,
    MARKER_OVERHEAD,
    OWNED_SESSION_OVERHEAD,
    OWNER_OVERHEAD,
    RECORD_OVERHEAD,
    SESSION_OVERHEAD,
)
from .store import MemoryStore

__all__ = [
    "DEVICE_OVERHEAD",
    "MARKER_OVERHEAD",
    "OWNED_SESSION_OVERHEAD",
    "OWNER_OVERHEAD",
    "RECORD_OVERHEAD",
    "SESSION_OVERHEAD",
    "MemoryStore",
]
