"""RedisStore and AsyncRedisStore: sessions in Redis (one server, Sentinel, Cluster, Valkey),
for apps that run as several processes.

The commands, keys, reply decoding and error policy live once, in :mod:`.core`;
:mod:`.sync` and :mod:`.asyncio` only send them.
"""

from __future__ import annotations

from .asyncio import AsyncRedisStore
from .core import SEPARATOR, OnUnavailable
from .sync import RedisStore

__all__ = ["SEPARATOR", "AsyncRedisStore", "OnUnavailable", "RedisStore"]
