"""RedisStore and AsyncRedisStore: sessions in Redis, for apps that run as several processes.

Each session is one Redis string, ``prefix + sid``, holding the serialized session and
carrying the session's lifetime as a Redis expiry, so Redis removes expired sessions
itself and bounds memory with its own ``maxmemory`` policy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypeGuard

try:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "lembro.RedisStore needs redis-py, which is not installed: pip install lembro[redis]"
    ) from e

from .checks import check_seconds, check_session_id
from .errors import InvalidOption, StoreUnavailable
from .ids import redact
from .protocol import AsyncSessionStore, Stats
from .serializers import Serializer, dumps_session, get_serializer, loads_session

__all__ = ["AsyncRedisStore", "RedisStore"]

log = logging.getLogger("lembro")

OnUnavailable = Literal["raise", "empty"]

# Redis rejects an expiry that overflows its millisecond clock; ~285,000 years is plenty.
_MAX_TTL_MS = 2**53
# Keys per SCAN step, and per MGET / DEL / MEMORY USAGE batch: big enough to keep round
# trips few, small enough that no single command blocks Redis for long.
_BATCH = 512
# During an outage, at most one WARNING per this many seconds; the rest go to DEBUG.
_WARN_EVERY = 10.0
# What "Redis did not answer" looks like in redis-py (AuthenticationError and
# BusyLoadingError are ConnectionErrors). OutOfMemoryError is a full Redis whose
# maxmemory-policy is noeviction: it cannot take the write either.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
)
_GLOB_SPECIAL = frozenset("*?[]\\")


def _is_sid(sid: object) -> TypeGuard[str]:
    return isinstance(sid, str) and sid != ""


def _ttl_ms(seconds: float) -> int:
    """Seconds as Redis's whole milliseconds: rounded up, never 0 (Redis would refuse it)."""
    return min(max(1, math.ceil(seconds * 1000)), _MAX_TTL_MS)


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _chunks(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# One immediate retry on a connection error only: it replaces a pooled connection that a
# restarted Redis closed, so the first call after a restart works. A timeout is not
# retried, so a hung Redis costs one socket_timeout, not a series of them.
_RETRY_ON: tuple[type[redis.exceptions.RedisError], ...] = (redis.exceptions.ConnectionError,)


def _as_bytes(value: bytes | str) -> bytes:
    # The store's own clients never decode replies; a given client is checked for it.
    return value if isinstance(value, bytes) else value.encode()


class _RedisBase:
    """Options, keys, counters and outage handling shared by the sync and async stores."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl: float,
        serializer: str | Serializer,
        socket_timeout: float,
        connect_timeout: float,
        on_unavailable: OnUnavailable,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidOption("url", url, "a redis:// , rediss:// or unix:// URL")
        if not isinstance(prefix, str) or not prefix:
            # An empty prefix would make clear() delete every key in the database.
            raise InvalidOption("prefix", prefix, "a non-empty str such as 'lembro:'")
        if on_unavailable not in ("raise", "empty"):
            raise InvalidOption("on_unavailable", on_unavailable, "'raise' or 'empty'")
        self.url = url
        self.prefix = prefix
        self.ttl = check_seconds(ttl, "ttl")
        self.socket_timeout = check_seconds(socket_timeout, "socket_timeout")
        self.connect_timeout = check_seconds(connect_timeout, "connect_timeout")
        self.on_unavailable: OnUnavailable = on_unavailable
        self._serializer_option = serializer
        self._serializer = get_serializer(serializer)
        self._prefix_bytes = prefix.encode()
        self._pattern = _glob_escape(prefix) + "*"
        self._where = "redis"
        self._lock = threading.Lock()  # guards the counters and outage state only
        self._hits = 0
        self._misses = 0
        self._outage = False
        self._last_warning = -math.inf
        self._suppressed = 0

    def _key(self, sid: str) -> str:
        return self.prefix + sid

    def _check_client(
        self, client: object, kind: type[redis.Redis] | type[redis.asyncio.Redis], what: str
    ) -> None:
        """Refuse a given ``client`` that is not a ``kind`` (``what`` names it) or that
        decodes responses: the store reads bytes."""
        if not isinstance(client, kind):
            raise InvalidOption("client", client, what)
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise InvalidOption("client", client, "a client with decode_responses=False")

    def _write_args(
        self, sid: str, data: dict[str, Any], ttl: float | None
    ) -> tuple[str, bytes, int]:
        """Check and serialize a write: (key, blob, lifetime in ms). Raises ``InvalidOption``
        or ``SerializationError`` before anything is sent."""
        check_session_id(sid)
        lifetime = self.ttl if ttl is None else check_seconds(ttl, "ttl")
        return self._key(sid), dumps_session(self._serializer, data), _ttl_ms(lifetime)

    def _sid(self, key: bytes) -> str | None:
        """The session id in ``key``, or ``None`` for a key no lembro store wrote."""
        try:
            return key[len(self._prefix_bytes) :].decode()
        except UnicodeDecodeError:
            return None

    def _describe(self, kwargs: dict[str, Any]) -> str:
        """Where the client connects, without credentials: host:port/db or a socket path."""
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def _ok(self) -> None:
        """Note a successful call; the first one after an outage says so."""
        if self._outage:
            with self._lock:
                was, self._outage, self._suppressed = self._outage, False, 0
                self._last_warning = -math.inf
            if was:
                log.warning("Redis at %s answers again", self._where)

    def _unavailable(self, op: str, sid: str | None, error: Exception) -> None:
        """Raise ``StoreUnavailable`` from ``error``, or log it when ``on_unavailable="empty"``."""
        if self.on_unavailable == "raise":
            raise StoreUnavailable(
                f"Redis at {self._where} is unavailable ({op}): {error}"
            ) from error
        now = time.monotonic()
        with self._lock:
            self._outage = True
            loud = now - self._last_warning >= _WARN_EVERY
            if loud:
                self._last_warning = now
                suppressed, self._suppressed = self._suppressed, 0
            else:
                self._suppressed += 1
        who = f" session {redact(sid)}" if sid else ""
        effect = "read as empty" if op in ("get", "touch", "all", "len", "contains") else "dropped"
        if loud:
            log.warning(
                "Redis at %s is unavailable: %s%s %s (%s)%s",
                self._where,
                op,
                who,
                effect,
                error,
                f"; {suppressed} more since the last warning" if suppressed else "",
            )
        else:
            log.debug("Redis at %s is unavailable: %s%s %s", self._where, op, who, effect)

    def _counters(self) -> tuple[int, int]:
        with self._lock:
            return self._hits, self._misses

    def _loads(self, blob: bytes) -> dict[str, Any]:
        return loads_session(self._serializer, blob)

    def _stats(self, sessions: int, size: int, max_size: int | None) -> Stats:
        hits, misses = self._counters()
        # Redis expires and evicts keys itself and does not count them per prefix.
        return Stats(
            sessions=sessions,
            size=size,
            max_size=max_size,
            hits=hits,
            misses=misses,
            expired=0,
            evicted=0,
            purges=0,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._where} prefix={self.prefix!r}>"


def _max_size(config: dict[Any, Any]) -> int | None:
    """``maxmemory`` from a CONFIG GET reply, in bytes; ``None`` when unlimited or unknown."""
    for name, value in config.items():
        if name in ("maxmemory", b"maxmemory"):
            try:
                limit = int(value)
            except (TypeError, ValueError):
                return None
            return limit or None
    return None


class RedisStore(_RedisBase):
    """Sessions in Redis under ``prefix``, shared by every process that uses the same Redis.

    ``url`` is a redis-py URL (``redis://host:port/db``, ``rediss://``, ``unix://``);
    ``client`` is a ready ``redis.Redis`` to use instead (its own timeouts and retries
    apply, and ``close()`` leaves it open). ``ttl`` is the default lifetime in seconds;
    Redis removes a session when it ends, so ``purge()`` has nothing to do. ``socket_timeout``
    and ``connect_timeout`` are seconds. When Redis does not answer, calls raise
    ``StoreUnavailable`` (``on_unavailable="raise"``), or (``"empty"``) reads see no session
    and writes are dropped, with a WARNING log; the first call after Redis is back works.

    Memory is bounded by Redis itself: set ``maxmemory`` and a ``maxmemory-policy`` of
    ``volatile-lru`` (or ``allkeys-lru`` on a Redis that holds only sessions).
    Every method is thread-safe and costs the round trips it says.
    """

    blocking = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: redis.Redis | None = None,
        prefix: str = "lembro:",
        ttl: float = 86400.0,
        serializer: str | Serializer = "msgpack",
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        on_unavailable: OnUnavailable = "raise",
    ) -> None:
        super().__init__(
            url,
            prefix=prefix,
            ttl=ttl,
            serializer=serializer,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            on_unavailable=on_unavailable,
        )
        self._owns_client = client is None
        if client is None:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=_RETRY_ON),
                decode_responses=False,
            )
        else:
            self._check_client(client, redis.Redis, "a redis.Redis")
            self._client = client
        self._where = self._describe(self._client.connection_pool.connection_kwargs)

    @property
    def client(self) -> redis.Redis:
        """The redis-py client this store talks through."""
        return self._client

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent. One GET."""
        if not _is_sid(sid):
            self._count(hit=False)
            return None
        try:
            blob = self._client.get(self._key(sid))
        except _UNAVAILABLE as e:
            self._unavailable("get", sid, e)
            blob = None
        else:
            self._ok()
        self._count(hit=blob is not None)
        if blob is None:
            return None
        return self._loads(_as_bytes(blob))

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        One SET with PX. Raises ``InvalidOption`` or ``SerializationError`` before
        anything is sent, so the stored session is unchanged.
        """
        key, blob, px = self._write_args(sid, data, ttl)
        try:
            self._client.set(key, blob, px=px)
        except _UNAVAILABLE as e:
            self._unavailable("set", sid, e)
        else:
            self._ok()

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a live session; ``False`` when absent. One SET XX."""
        key, blob, px = self._write_args(sid, data, ttl)
        try:
            done = self._client.set(key, blob, px=px, xx=True)
        except _UNAVAILABLE as e:
            self._unavailable("replace", sid, e)
            return False
        self._ok()
        return bool(done)

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds; ``False`` when absent. One PEXPIRE."""
        lifetime = self.ttl if ttl is None else check_seconds(ttl, "ttl")
        if not _is_sid(sid):
            return False
        try:
            done = bool(self._client.pexpire(self._key(sid), _ttl_ms(lifetime)))
        except _UNAVAILABLE as e:
            self._unavailable("touch", sid, e)
            return False
        self._ok()
        return done

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there. One DEL."""
        if not _is_sid(sid):
            return False
        try:
            removed = self._client.delete(self._key(sid))
        except _UNAVAILABLE as e:
            self._unavailable("destroy", sid, e)
            return False
        self._ok()
        return bool(removed)

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session under the prefix. SCAN, then MGETs."""
        try:
            found: list[tuple[str, bytes]] = []
            for batch in _chunks(self._keys(), _BATCH):
                for key, blob in zip(batch, self._client.mget(batch), strict=True):
                    sid = self._sid(key)
                    if blob is not None and sid is not None:  # None: expired since SCAN
                        found.append((sid, _as_bytes(blob)))
        except _UNAVAILABLE as e:
            self._unavailable("all", None, e)
            return {}
        self._ok()
        return {sid: self._loads(blob) for sid, blob in found}

    def __len__(self) -> int:
        """The number of live sessions under the prefix (SCAN: O(keys in the database))."""
        try:
            count = len(self._keys())
        except _UNAVAILABLE as e:
            self._unavailable("len", None, e)
            return 0
        self._ok()
        return count

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss. One EXISTS."""
        if not _is_sid(sid):
            return False
        try:
            present = bool(self._client.exists(self._key(sid)))
        except _UNAVAILABLE as e:
            self._unavailable("contains", sid, e)
            return False
        self._ok()
        return present

    def clear(self) -> None:
        """Remove every session under the prefix, and no other key. Counters are kept."""
        try:
            # Deleting while scanning is safe: SCAN still returns every key that stays.
            for batch in _chunks(self._scan(), _BATCH):
                self._client.delete(*batch)
        except _UNAVAILABLE as e:
            self._unavailable("clear", None, e)
        else:
            self._ok()

    def purge(self) -> int:
        """Return 0: Redis removes expired sessions itself."""
        return 0

    def stats(self) -> Stats:
        """The store's counters now; always raises ``StoreUnavailable`` when Redis is down.

        ``sessions`` and ``size`` (bytes, MEMORY USAGE or, where that is disabled, the
        payload lengths) are summed over a SCAN of the prefix; ``max_size`` is Redis's
        ``maxmemory`` where CONFIG GET is allowed and a limit is set, else ``None``.
        ``hits`` and ``misses`` are this object's own.
        """
        try:
            keys = self._keys()
            size = 0
            for batch in _chunks(keys, _BATCH):
                size += self._batch_size(batch)
            try:
                max_size = _max_size(self._client.config_get("maxmemory"))
            except redis.exceptions.ResponseError:  # CONFIG disabled, as on managed Redis
                max_size = None
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"Redis at {self._where} is unavailable (stats): {e}") from e
        self._ok()
        return self._stats(len(keys), size, max_size)

    def close(self) -> None:
        """Close the connections this store opened (not a ``client`` it was given)."""
        if self._owns_client:
            self._client.close()

    def as_async(self) -> AsyncSessionStore:
        """An ``AsyncRedisStore`` on the same URL and options, for ASGI apps.

        A store built on a given ``client`` gets a face that runs each call in a worker
        thread instead, since a sync client cannot be shared with an event loop.
        """
        if not self._owns_client:
            from .protocol import _ThreadAsync

            return _ThreadAsync(self)
        return AsyncRedisStore(
            self.url,
            prefix=self.prefix,
            ttl=self.ttl,
            serializer=self._serializer_option,
            socket_timeout=self.socket_timeout,
            connect_timeout=self.connect_timeout,
            on_unavailable=self.on_unavailable,
        )

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- helpers ----------------------------------------------------------------------

    def _scan(self) -> Iterator[bytes]:
        return self._client.scan_iter(match=self._pattern, count=_BATCH)

    def _keys(self) -> list[bytes]:
        # SCAN may return a key twice (when the table rehashes mid-scan): deduplicate.
        return list(dict.fromkeys(self._scan()))

    def _batch_size(self, batch: list[bytes]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key)
        try:
            usages = pipe.execute()
        except redis.exceptions.ResponseError:  # MEMORY disabled: count payloads and keys
            pipe = self._client.pipeline(transaction=False)
            for key in batch:
                pipe.strlen(key)
            usages = [
                n + len(key) if n else 0 for key, n in zip(batch, pipe.execute(), strict=True)
            ]
        return sum(int(n) for n in usages if n)


class AsyncRedisStore(_RedisBase):
    """The twin of :class:`RedisStore` on ``redis.asyncio``, for ASGI apps.

    Same options, keys and semantics; every method is a coroutine, with ``length()`` and
    ``contains(sid)`` in place of ``len()`` and ``in``. ``client`` is a ready
    ``redis.asyncio.Redis``. Use one store from one event loop.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: redis.asyncio.Redis | None = None,
        prefix: str = "lembro:",
        ttl: float = 86400.0,
        serializer: str | Serializer = "msgpack",
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        on_unavailable: OnUnavailable = "raise",
    ) -> None:
        super().__init__(
            url,
            prefix=prefix,
            ttl=ttl,
            serializer=serializer,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            on_unavailable=on_unavailable,
        )
        self._owns_client = client is None
        if client is None:
            # Connections open on first use, so this is safe outside an event loop.
            self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
                url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
                retry=AsyncRetry(NoBackoff(), 1, supported_errors=_RETRY_ON),
                decode_responses=False,
            )
        else:
            self._check_client(client, redis.asyncio.Redis, "a redis.asyncio.Redis")
            self._client = client
        self._where = self._describe(self._client.connection_pool.connection_kwargs)

    @property
    def client(self) -> redis.asyncio.Redis:
        """The redis-py asyncio client this store talks through."""
        return self._client

    async def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent. One GET."""
        if not _is_sid(sid):
            self._count(hit=False)
            return None
        try:
            blob = await self._client.get(self._key(sid))
        except _UNAVAILABLE as e:
            self._unavailable("get", sid, e)
            blob = None
        else:
            self._ok()
        self._count(hit=blob is not None)
        if blob is None:
            return None
        return self._loads(_as_bytes(blob))

    async def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        One SET with PX. Raises ``InvalidOption`` or ``SerializationError`` before
        anything is sent, so the stored session is unchanged.
        """
        key, blob, px = self._write_args(sid, data, ttl)
        try:
            await self._client.set(key, blob, px=px)
        except _UNAVAILABLE as e:
            self._unavailable("set", sid, e)
        else:
            self._ok()

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a live session; ``False`` when absent. One SET XX."""
        key, blob, px = self._write_args(sid, data, ttl)
        try:
            done = await self._client.set(key, blob, px=px, xx=True)
        except _UNAVAILABLE as e:
            self._unavailable("replace", sid, e)
            return False
        self._ok()
        return bool(done)

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds; ``False`` when absent. One PEXPIRE."""
        lifetime = self.ttl if ttl is None else check_seconds(ttl, "ttl")
        if not _is_sid(sid):
            return False
        try:
            done = bool(await self._client.pexpire(self._key(sid), _ttl_ms(lifetime)))
        except _UNAVAILABLE as e:
            self._unavailable("touch", sid, e)
            return False
        self._ok()
        return done

    async def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there. One DEL."""
        if not _is_sid(sid):
            return False
        try:
            removed = await self._client.delete(self._key(sid))
        except _UNAVAILABLE as e:
            self._unavailable("destroy", sid, e)
            return False
        self._ok()
        return bool(removed)

    async def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session under the prefix. SCAN, then MGETs."""
        try:
            found: list[tuple[str, bytes]] = []
            for batch in _chunks(await self._keys(), _BATCH):
                for key, blob in zip(batch, await self._client.mget(batch), strict=True):
                    sid = self._sid(key)
                    if blob is not None and sid is not None:  # None: expired since SCAN
                        found.append((sid, _as_bytes(blob)))
        except _UNAVAILABLE as e:
            self._unavailable("all", None, e)
            return {}
        self._ok()
        return {sid: self._loads(blob) for sid, blob in found}

    async def length(self) -> int:
        """The number of live sessions under the prefix (SCAN: O(keys in the database))."""
        try:
            count = len(await self._keys())
        except _UNAVAILABLE as e:
            self._unavailable("len", None, e)
            return 0
        self._ok()
        return count

    async def contains(self, sid: str) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss. One EXISTS."""
        if not _is_sid(sid):
            return False
        try:
            present = bool(await self._client.exists(self._key(sid)))
        except _UNAVAILABLE as e:
            self._unavailable("contains", sid, e)
            return False
        self._ok()
        return present

    async def clear(self) -> None:
        """Remove every session under the prefix, and no other key. Counters are kept."""
        try:
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=self._pattern, count=_BATCH):
                batch.append(key)
                if len(batch) >= _BATCH:
                    await self._client.delete(*batch)
                    batch = []
            if batch:
                await self._client.delete(*batch)
        except _UNAVAILABLE as e:
            self._unavailable("clear", None, e)
        else:
            self._ok()

    async def purge(self) -> int:
        """Return 0: Redis removes expired sessions itself."""
        return 0

    async def stats(self) -> Stats:
        """The store's counters now, as :meth:`RedisStore.stats` describes them."""
        try:
            keys = await self._keys()
            size = 0
            for batch in _chunks(keys, _BATCH):
                size += await self._batch_size(batch)
            try:
                max_size = _max_size(await self._client.config_get("maxmemory"))
            except redis.exceptions.ResponseError:  # CONFIG disabled, as on managed Redis
                max_size = None
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"Redis at {self._where} is unavailable (stats): {e}") from e
        self._ok()
        return self._stats(len(keys), size, max_size)

    async def close(self) -> None:
        """Close the connections this store opened (not a ``client`` it was given)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- helpers ----------------------------------------------------------------------

    async def _keys(self) -> list[bytes]:
        # SCAN may return a key twice (when the table rehashes mid-scan): deduplicate.
        keys: dict[bytes, None] = {}
        async for key in self._client.scan_iter(match=self._pattern, count=_BATCH):
            keys[key] = None
        return list(keys)

    async def _batch_size(self, batch: list[bytes]) -> int:
        async with self._client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key)
            try:
                usages = await pipe.execute()
            except redis.exceptions.ResponseError:  # MEMORY disabled: count payloads and keys
                for key in batch:
                    pipe.strlen(key)
                lengths = await pipe.execute()
                usages = [n + len(key) if n else 0 for key, n in zip(batch, lengths, strict=True)]
        return sum(int(n) for n in usages if n)
