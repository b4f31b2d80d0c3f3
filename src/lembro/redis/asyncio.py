"""AsyncRedisStore: the asyncio I/O around :mod:`lembro.redis.core`.

The twin of :mod:`lembro.redis.sync`: each method hands the same step generator to
:meth:`AsyncRedisStore._run`, which awaits what the blocking store calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..protocol import Stats
from .core import FAILS_CLOSED, SCAN_COUNT, RedisCore, Request, Steps, T

__all__ = ["AsyncRedisStore"]


class AsyncRedisStore(RedisCore):
    """The twin of :class:`~lembro.redis.RedisStore` on asyncio clients, for ASGI apps.

    Same options, URLs, keys and semantics; every method is a coroutine, with ``length()``
    and ``contains(sid)`` in place of ``len()`` and ``in``. ``client`` is a ready asyncio
    client: ``redis.asyncio.Redis``/``RedisCluster``, a Sentinel ``master_for(...)`` from
    ``redis.asyncio.sentinel``, or valkey-py's twins. Use one store from one event loop.
    """

    _asynchronous = True

    @property
    def client(self) -> Any:
        """The asyncio redis-py or valkey-py client this store talks through."""
        return self._client

    async def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent, as
        :meth:`RedisStore.get`."""
        return await self._run("get", sid, self._get_steps(sid), None)

    async def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        """Return session ``sid`` and give it a new lifetime in one step, as
        :meth:`RedisStore.renew`."""
        return await self._run("renew", sid, self._renew_steps(sid, ttl), None)

    async def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds, as :meth:`RedisStore.set`."""
        await self._run("set", sid, self._write_steps(sid, data, ttl), False)

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a live session; ``False`` when absent. One SET XX."""
        return await self._run("replace", sid, self._write_steps(sid, data, ttl, "XX"), False)

    async def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        """Apply ``changes`` and ``deleted`` to session ``sid`` as it is now, as
        :meth:`RedisStore.update`."""
        return await self._run("update", sid, self._update_steps(sid, changes, deleted, ttl), False)

    async def rename(
        self, old: str, new: str, data: dict[str, Any], ttl: float | None = None
    ) -> bool:
        """Move session ``old`` to the id ``new`` in one operation, as
        :meth:`RedisStore.rename`."""
        return await self._run("rename", old, self._rename_steps(old, new, data, ttl), False)

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds, as :meth:`RedisStore.touch`."""
        return await self._run("touch", sid, self._touch_steps(sid, ttl), False)

    async def time_left(self, sid: str) -> float | None:
        """Seconds until session ``sid`` ends, or ``None``, as :meth:`RedisStore.time_left`."""
        return await self._run("time_left", sid, self._time_left_steps(sid), None)

    async def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there. One DEL. Raises
        ``StoreUnavailable`` when Redis does not answer, whatever ``on_unavailable``."""
        return await self._run("destroy", sid, self._destroy_steps(sid), False)

    async def sessions_of(self, owner: str | int) -> list[str]:
        """The ids of ``owner``'s live sessions, most recently used first, as
        :meth:`RedisStore.sessions_of`."""
        return await self._run("sessions_of", None, self._sessions_of_steps(owner), [])

    async def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every live session of ``owner`` but ``keep``; return how many this call
        ended, as :meth:`RedisStore.destroy_sessions_of` (and, as it, fail closed)."""
        steps = self._destroy_sessions_of_steps(owner, keep)
        return await self._run("destroy_sessions_of", None, steps, 0)

    async def contains(self, sid: str) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss. One TYPE."""
        return await self._run("contains", None, self._contains_steps(sid), False)

    async def all(self) -> dict[str, dict[str, Any]]:
        """Every live session under the prefix, as :meth:`RedisStore.all`."""
        return await self._run("all", None, self._all_steps(), {})

    async def length(self) -> int:
        """The number of live sessions under the prefix, as ``len()`` of a
        :class:`RedisStore`."""
        return await self._run("len", None, self._len_steps(), 0)

    async def clear(self) -> None:
        """Remove every session under the prefix, and no other key, as
        :meth:`RedisStore.clear`."""
        await self._run("clear", None, self._clear_steps(), None)

    async def purge(self) -> int:
        """Return 0: Redis removes expired sessions itself."""
        return 0

    async def stats(self) -> Stats:
        """The store's counters now, as :meth:`RedisStore.stats` describes them."""
        stats: Stats = await self._run("stats", None, self._stats_steps(), FAILS_CLOSED)
        return stats

    async def close(self) -> None:
        """Close the connections this store opened (not a ``client`` it was given)."""
        if self._owns_client:
            for client in (self._client, *self._helpers):
                await client.aclose()

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- I/O: RedisStore's, with awaits --------------------------------------------------

    async def _run(self, op: str, sid: object, steps: Steps[T], empty: T) -> T:
        with self._call(op, sid):
            try:
                request = next(steps)
                while True:
                    try:
                        reply = await self._perform(request)
                    except Exception as error:  # the steps may handle it, else it rises
                        request = steps.throw(error)
                    else:
                        request = steps.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
        return empty

    async def _perform(self, request: Request) -> Any:
        kind, argument = request
        if kind == "send":
            if len(argument) == 1:
                return [await self._client.execute_command(*argument[0])]
            pipe = self._client.pipeline(transaction=False)
            for command in argument:
                pipe.execute_command(*command)
            return await pipe.execute()
        if kind == "scan":
            scan = self._client.scan_iter(match=self._pattern, count=SCAN_COUNT, _type=argument)
            return [key async for key in scan]
        return await self._client.config_get("maxmemory")
