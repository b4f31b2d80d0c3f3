"""RedisStore and AsyncRedisStore: sessions in Redis (one server, Sentinel, Cluster, Valkey),
for apps that run as several processes.

The commands, keys, reply decoding and error policy live once, in :mod:`.core`;
:mod:`.sync` and :mod:`.asyncio` only send them.
"""

from __future__ import annotations

from .asyncio import AsyncRedisStore
from .core import DEFAULT_MAX_SESSION_BYTES, SEPARATOR, OnUnavailable, RedisOptions
from .sync import RedisStore

__all__ = [
    "DEFAULT_MAX_SESSION_BYTES",
    "SEPARATOR",
    "AsyncRedisStore",
    "OnUnavailable",
    "RedisOptions",
    "RedisStore",
]
