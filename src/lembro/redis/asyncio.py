"""AsyncRedisStore: the asyncio I/O around :mod:`lembro.redis.core`.

The twin of :mod:`lembro.redis.sync`: each method hands the same step generator to
:meth:`AsyncRedisStore._run`, which awaits what the blocking store calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

from ..lifetimes import Device, Loaded, SessionInfo
from ..protocol import Stats
from .core import (
    _SWITCH_CHANNEL,
    FAILS_CLOSED,
    SCAN_COUNT,
    Address,
    RedisCore,
    Request,
    Steps,
    T,
    _announced_switch,
    _Primary,
)

__all__ = ["AsyncRedisStore"]

log = logging.getLogger("lembro")

# Seconds the listener waits for a message at a time (cancelling it wakes it at once).
_POLL = 1.0


class AsyncRedisStore(RedisCore):
    """The twin of :class:`~lembro.redis.RedisStore` on asyncio clients, for ASGI apps.

    Same options, URLs, keys and semantics; every method is a coroutine, with ``length()``
    and ``contains(sid)`` in place of ``len()`` and ``in``. ``client`` is a ready asyncio
    client: ``redis.asyncio.Redis``/``RedisCluster``, a Sentinel ``master_for(...)`` from
    ``redis.asyncio.sentinel``, or valkey-py's twins. Use one store from one event loop.
    On Sentinel, its listener for ``+switch-master`` is a task on that loop, started by
    the first call and ended by ``close()``.
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

    async def load(self, sid: str, *, new_id: Callable[[], str] | None = None) -> Loaded | None:
        """The read a request makes, as :meth:`RedisStore.load` (``new_id`` too)."""
        return await self._run("load", sid, self._load_steps(sid, new_id), None)

    async def session_info(self, sid: str) -> SessionInfo | None:
        """What session ``sid`` is, or ``None``, as :meth:`RedisStore.session_info`."""
        return await self._run("session_info", sid, self._session_info_steps(sid), None)

    async def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        """Return session ``sid`` and give it a new lifetime in one step, as
        :meth:`RedisStore.renew`."""
        return await self._run("renew", sid, self._renew_steps(sid, ttl), None)

    async def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds, as :meth:`RedisStore.set`."""
        await self._run("set", sid, self._write_steps(sid, data, ttl, device=device), False)

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
        self,
        old: str,
        new: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        reset_lifetime: bool = True,
        grace: float = 0.0,
        device: Device | None = None,
    ) -> bool:
        """Move session ``old`` to the id ``new`` in one operation, as
        :meth:`RedisStore.rename`."""
        steps = self._rename_steps(old, new, data, ttl, reset_lifetime, grace, device)
        return await self._run("rename", old, steps, False)

    async def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds, as :meth:`RedisStore.touch`."""
        return await self._run("touch", sid, self._touch_steps(sid, ttl), False)

    async def time_left(self, sid: str) -> float | None:
        """Seconds until session ``sid`` ends, or ``None``, as :meth:`RedisStore.time_left`."""
        return await self._run("time_left", sid, self._time_left_steps(sid), None)

    async def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there, as
        :meth:`RedisStore.destroy` (and, as it, fail closed and honour ``wait_replicas``)."""
        return await self._run("destroy", sid, self._destroy_steps(sid), False)

    @overload
    async def sessions_of(self, owner: str | int, *, info: Literal[False] = False) -> list[str]: ...
    @overload
    async def sessions_of(self, owner: str | int, *, info: Literal[True]) -> list[SessionInfo]: ...
    @overload
    async def sessions_of(
        self, owner: str | int, *, info: bool
    ) -> list[str] | list[SessionInfo]: ...
    async def sessions_of(
        self, owner: str | int, *, info: bool = False
    ) -> list[str] | list[SessionInfo]:
        """The ids of ``owner``'s live sessions (with ``info=True``, each as a
        :class:`~lembro.SessionInfo`), most recently used first, as
        :meth:`RedisStore.sessions_of`."""
        if info:
            infos: list[SessionInfo] = await self._run(
                "sessions_of", None, self._sessions_info_steps(owner), []
            )
            return infos
        return await self._run("sessions_of", None, self._sessions_of_steps(owner), [])

    async def destroy_session_of(self, owner: str | int, sid: str) -> bool:
        """End session ``sid`` only if its owner is ``owner``, as
        :meth:`RedisStore.destroy_session_of`."""
        steps = self._destroy_session_of_steps(owner, sid)
        return await self._run("destroy_session_of", sid, steps, False)

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
        """Stop listening to Sentinel, and close the connections this store opened (not a
        ``client`` it was given)."""
        self._listens = False
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        if self._owns_client:
            for client in (self._client, *self._helpers):
                await client.aclose()

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- I/O: RedisStore's, with awaits --------------------------------------------------

    async def _run(self, op: str, sid: object, steps: Steps[T], empty: T) -> T:
        if self._listens and (
            self._listener is None or self._listener.loop is not asyncio.get_running_loop()
        ):
            self._listen()
        steps = self._across_switches(steps)
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

    def _listen(self) -> None:
        """Start the listener task on the running loop: on the first use, and again when
        the store is used from another loop."""
        old, self._listener = self._listener, _Listener(self._watched, self._primary)
        if old is not None:
            old.cancel()
        # A store dropped without close() stops its listener too.
        weakref.finalize(self, self._listener.cancel)

    async def _perform(self, request: Request) -> Any:
        kind, argument = request
        if kind == "resolve":
            pool = getattr(self._client, "connection_pool", None)
            return await _find_primary(pool, self._watched)
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


async def _find_primary(pool: Any, watched: Any) -> tuple[Address | None, Address] | None:
    """The sync store's ``_find_primary``, with awaits."""
    if pool is None:
        return None
    found = None
    if watched is not None:
        before = watched.master_address
        found = before, await watched.get_master_address()
    await pool.disconnect(inuse_connections=False)
    return found


class _Listener:
    """The sync store's listener as a task on the store's event loop: subscribed to
    ``+switch-master`` on one of a Sentinel pool's Sentinels, it looks the primary up
    again on each announcement for the pool's service and on each (re)subscription.

    It is stopped by a flag and by closing its connection, not by cancelling it: a
    cancellation that meets the client's read timeout can be lost, and the task with it.
    """

    def __init__(self, pool: Any, primary: _Primary) -> None:
        self._pool = pool
        self._primary = primary
        self._stopped = False
        self._pubsub: Any = None
        _release_to_the_primary_only(pool)
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(
            self._listen(), name=f"lembro-sentinel-{pool.service_name}"
        )

    def cancel(self) -> None:
        """Tell the task to end, from any thread; it does within ``_POLL`` seconds."""
        self._stopped = True

    async def stop(self) -> None:
        """End the task and, on its own loop, wait until it has ended (cancelled after
        ``_POLL`` seconds more, at worst)."""
        self._stopped = True
        if self.loop is not asyncio.get_running_loop():
            return
        connection = getattr(self._pubsub, "connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):  # wakes the task from its read
                await connection.disconnect(nowait=True)
        await asyncio.wait({self._task}, timeout=_POLL + 1)
        if not self._task.done():
            self._task.cancel()

    async def _listen(self) -> None:
        failures = 0
        while not self._stopped:
            sentinels = list(self._pool.sentinel_manager.sentinels)
            sentinel = sentinels[failures % len(sentinels)]
            pubsub = self._pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe(_SWITCH_CHANNEL)
                while not self._stopped:
                    await self._handle(sentinel, await pubsub.get_message(timeout=_POLL))
            except Exception as error:  # any failure: on to the next Sentinel
                if self._stopped:
                    break
                failures += 1
                log.debug("Sentinel %s: listening for switches failed: %s", sentinel, error)
                await asyncio.sleep(min(failures, 10) * 0.1)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _handle(self, sentinel: Any, message: Any) -> None:
        pool = self._pool
        if isinstance(message, dict) and message.get("type") in ("subscribe", b"subscribe"):
            before = pool.master_address
            after = await pool.get_master_address()
            if before is not None and before != after:
                await _drop_all(pool)
                self._primary.moved(before, after, "found on subscribing to Sentinel")
            return
        new = _announced_switch(message, pool.service_name)
        if new is None:
            return
        before = pool.master_address
        # The Sentinel that announced the switch knows the new primary; another may
        # learn of it later, so it is asked first.
        manager = pool.sentinel_manager
        manager.sentinels = [sentinel, *(s for s in manager.sentinels if s is not sentinel)]
        try:
            await pool.get_master_address()
            await _drop_all(pool)
        finally:
            self._primary.moved(before, new, "Sentinel announced it")


def _release_to_the_primary_only(pool: Any) -> None:
    """Make ``pool`` close a connection released to it while connected elsewhere than the
    primary it last looked up, as the blocking Sentinel pool does: a connection the pool
    handed out just before a switch can finish connecting to the former primary after
    :func:`_drop_all` ran, and would carry later commands there. Done once per pool, for
    the pool's life (every user of it is better for it)."""
    release = pool.release
    if getattr(release, "_lembro_checks_the_primary", False):
        return

    async def release_to_the_primary(connection: Any) -> None:
        primary = pool.master_address
        try:
            if primary is not None and (connection.host, connection.port) != tuple(primary):
                await connection.disconnect()
        finally:
            await release(connection)

    release_to_the_primary._lembro_checks_the_primary = True  # type: ignore[attr-defined]
    pool.release = release_to_the_primary


async def _drop_all(pool: Any) -> None:
    """Close every connection of ``pool``, those in use too: an asyncio pool takes a
    released connection back as it is, so one to the former primary would be used again.
    A command waiting on one fails as a lost connection, which the client sends again on
    a new one (to the new primary), as the store would anyway."""
    await pool.disconnect(inuse_connections=True)
