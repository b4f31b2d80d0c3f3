"""AsyncRedisStore: the asyncio I/O around :mod:`lembro.redis.core`."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidOption
from ..protocol import Stats
from .core import SCAN_COUNT, Command, RedisCore, _batches

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
        if self.owner_key is None:
            return self._got(await self._execute("get", sid, self._get_command(sid)))
        replies = await self._send("get", sid, self._owned_get(sid))
        return self._got_owned(sid, replies[0]) if replies else self._got(None)

    async def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds, as :meth:`RedisStore.set`."""
        if self.owner_key is None:
            await self._execute("set", sid, self._set_command(sid, data, ttl))
            return
        commands, at, index = self._owned_write(sid, data, ttl)
        replies = await self._send("set", sid, commands)
        self._written(sid, index, bool(replies and replies[at]))

    async def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a live session; ``False`` when absent. One SET XX."""
        if self.owner_key is None:
            return bool(await self._execute("replace", sid, self._replace_command(sid, data, ttl)))
        commands, at, index = self._owned_write(sid, data, ttl, "XX")
        replies = await self._send("replace", sid, commands)
        done = bool(replies and replies[at])
        self._written(sid, index, done)
        return done

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds, as :meth:`RedisStore.touch`."""
        if self.owner_key is None:
            return bool(await self._execute("touch", sid, self._touch_command(sid, ttl)))
        planned = self._owned_touch(sid, ttl)
        if planned is None:
            return False
        commands, at = planned
        replies = await self._send("touch", sid, commands)
        if not replies:
            return False
        follow_up = self._touch_follow_up(sid, commands, replies)
        if follow_up:
            await self._send("touch", sid, follow_up)
        return bool(replies[at])

    async def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there. One DEL. Raises
        ``StoreUnavailable`` when Redis does not answer, whatever ``on_unavailable``."""
        if self.owner_key is None:
            return bool(await self._execute("destroy", sid, self._destroy_command(sid)))
        replies = await self._send("destroy", sid, self._owned_destroy(sid))
        return bool(replies and replies[0])

    async def sessions_of(self, owner: str | int) -> list[str]:
        """The ids of ``owner``'s live sessions, most recently used first, as
        :meth:`RedisStore.sessions_of`."""
        index = self._owner_index(owner)
        with self._call("sessions_of"):
            live, stale = await self._look_up(index)
            if stale:
                await self._client.execute_command(*self._prune_command(index, stale))
            return live
        return []

    async def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every live session of ``owner`` but ``keep``; return how many this call
        ended, as :meth:`RedisStore.destroy_sessions_of` (and, as it, fail closed)."""
        index = self._owner_index(owner)
        if keep is not None and not isinstance(keep, str):
            raise InvalidOption("keep", keep, "None or a session id (str)")
        with self._call("destroy_sessions_of"):
            live, stale = await self._look_up(index)
            ended = [sid for sid in live if sid != keep]
            commands = self._ending(index, ended, stale)
            replies = await self._pipeline(commands) if commands else []
            self._forget(*ended)
            return sum(int(n) for n in replies[: len(ended)])
        raise AssertionError("destroy_sessions_of fails closed")  # pragma: no cover

    async def contains(self, sid: str) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss. One EXISTS."""
        return bool(await self._execute("contains", None, self._contains_command(sid)))

    async def all(self) -> dict[str, dict[str, Any]]:
        """Every live session under the prefix, as :meth:`RedisStore.all`."""
        with self._call("all"):
            mgets = list(self._mgets(await self._keys()))
            return self._sessions([(each, await self._pipeline(each)) for each in mgets])
        return {}

    async def length(self) -> int:
        """The number of live sessions under the prefix (SCAN: O(keys in the database))."""
        with self._call("len"):
            return len(await self._keys())
        return 0

    async def clear(self) -> None:
        """Remove every session under the prefix, and no other key, as
        :meth:`RedisStore.clear`."""
        with self._call("clear"):
            for keys in _batches(await self._keys(owners=True)):
                await self._pipeline(self._per_slot("DEL", keys))

    async def purge(self) -> int:
        """Return 0: Redis removes expired sessions itself."""
        return 0

    async def stats(self) -> Stats:
        """The store's counters now, as :meth:`RedisStore.stats` describes them."""
        with self._call("stats"):
            found = await self._keys()
            sizes = [await self._memory(keys) for keys in _batches(found)]
            maxmemory = await self._config()
        return self._stats(len(found), sum(sizes), maxmemory)

    async def close(self) -> None:
        """Close the connections this store opened (not a ``client`` it was given)."""
        if self._owns_client:
            for client in (self._client, *self._helpers):
                await client.aclose()

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- I/O --------------------------------------------------------------------------

    async def _execute(self, op: str, sid: str | None, command: Command | None) -> Any:
        if command is None:
            return None
        with self._call(op, sid):
            return await self._client.execute_command(*command)
        return None

    async def _send(self, op: str, sid: str | None, commands: list[Command] | None) -> list[Any]:
        if commands:
            with self._call(op, sid):
                if len(commands) == 1:
                    return [await self._client.execute_command(*commands[0])]
                return await self._pipeline(commands)
        return []

    async def _look_up(self, index: str) -> tuple[list[str], list[tuple[str, bytes]]]:
        reply = await self._client.execute_command("ZREVRANGE", index, 0, -1, "WITHSCORES")
        members = self._members(reply)
        mgets = list(self._mgets(self._member_keys(members)))
        fetched = [(each, await self._pipeline(each)) for each in mgets]
        return self._sort_members(index, members, fetched)

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute()
        return replies

    async def _keys(self, owners: bool = False) -> list[bytes]:
        scan = self._client.scan_iter(match=self._pattern, count=SCAN_COUNT)
        return self._own_keys([key async for key in scan], owners)

    async def _memory(self, keys: list[bytes]) -> int:
        try:
            return self._size(keys, await self._pipeline(self._usage_commands(keys)))
        except self._refused:  # MEMORY disabled: count payloads and keys
            return self._size(keys, await self._pipeline(self._strlen_commands(keys)), True)

    async def _config(self) -> object:
        try:
            return await self._client.config_get("maxmemory")
        except self._refused:  # CONFIG disabled, as on managed Redis
            return None
