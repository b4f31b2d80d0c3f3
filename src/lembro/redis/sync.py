"""RedisStore: the blocking I/O around :mod:`lembro.redis.core`."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidOption
from ..protocol import AsyncSessionStore, Stats
from .core import SCAN_COUNT, Command, RedisCore, _batches

__all__ = ["RedisStore"]


class RedisStore(RedisCore):
    """Sessions in Redis under ``prefix``, shared by every process that uses the same Redis.

    ``url`` is ``redis://host:port/db``, ``rediss://`` (TLS), ``unix:///path``,
    ``redis+cluster://host:port`` (any node of a Redis Cluster; ``rediss+cluster://`` for
    TLS) or ``redis+sentinel://host:port[,host:port...]/service_name[/db]`` (the primary
    that Sentinel names, followed through failovers). ``client`` is a ready client to use
    instead: redis-py's or valkey-py's ``Redis``/``Valkey``, ``RedisCluster``/
    ``ValkeyCluster`` or a Sentinel ``master_for(...)`` client (its own timeouts and
    retries apply, and ``close()`` leaves it open). ``prefix`` must end in ``":"``, and
    the store owns exactly the keys ``prefix + id``: a store on ``"app:"`` never sees
    ``"app:admin:"``'s sessions. ``ttl`` is the default lifetime in seconds; Redis
    removes a session when it ends, so ``purge()`` has nothing to do. ``socket_timeout``
    and ``connect_timeout`` are seconds.

    When Redis does not answer, or cannot take the command now (a failover, a cluster
    that is down or resharding), calls raise ``StoreUnavailable``
    (``on_unavailable="raise"``), or (``"empty"``) reads see no session and writes are
    dropped, with a WARNING log; ``destroy()``, ``clear()`` and ``stats()`` raise either
    way, so a logout is never reported done when it was not. The first call after Redis
    (or the new primary) answers works again.

    ``owner_key`` names the session field that holds the signed-in user (``None``: no
    owner index, and no cost). With it, each owner's session ids are kept in a sorted set
    by last use, for :meth:`sessions_of` and :meth:`destroy_sessions_of`; an owner is a
    str or an int, compared as a str (``42`` and ``"42"`` are one owner), and a write
    whose owner field holds anything else raises ``SerializationError``.

    Memory is bounded by Redis itself: set ``maxmemory`` and a ``maxmemory-policy`` of
    ``volatile-lru`` (or ``allkeys-lru`` on a Redis that holds only sessions).
    Every method is thread-safe and costs the round trips it says.
    """

    blocking = True
    _asynchronous = False

    @property
    def client(self) -> Any:
        """The redis-py or valkey-py client this store talks through."""
        return self._client

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid``, or ``None`` when absent. One GET (with
        ``owner_key``, pipelined with the ZADD that counts the use)."""
        if self.owner_key is None:
            return self._got(self._execute("get", sid, self._get_command(sid)))
        replies = self._send("get", sid, self._owned_get(sid))
        return self._got_owned(sid, replies[0]) if replies else self._got(None)

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``).

        One SET with PX (with ``owner_key``, pipelined with the owner's set's upkeep: one
        round trip). Raises ``InvalidOption`` or ``SerializationError`` before anything is
        sent, so the stored session is unchanged.
        """
        if self.owner_key is None:
            self._execute("set", sid, self._set_command(sid, data, ttl))
            return
        commands, at, index = self._owned_write(sid, data, ttl)
        replies = self._send("set", sid, commands)
        self._written(sid, index, bool(replies and replies[at]))

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a live session; ``False`` when absent. One SET XX."""
        if self.owner_key is None:
            return bool(self._execute("replace", sid, self._replace_command(sid, data, ttl)))
        commands, at, index = self._owned_write(sid, data, ttl, "XX")
        replies = self._send("replace", sid, commands)
        done = bool(replies and replies[at])
        self._written(sid, index, done)
        return done

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds; ``False`` when absent. One PEXPIRE
        (with ``owner_key``, a second round trip when this store has not seen ``sid``
        lately and must read it to find its owner)."""
        if self.owner_key is None:
            return bool(self._execute("touch", sid, self._touch_command(sid, ttl)))
        planned = self._owned_touch(sid, ttl)
        if planned is None:
            return False
        commands, at = planned
        replies = self._send("touch", sid, commands)
        if not replies:
            return False
        follow_up = self._touch_follow_up(sid, commands, replies)
        if follow_up:
            self._send("touch", sid, follow_up)
        return bool(replies[at])

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there. One DEL.

        Raises ``StoreUnavailable`` when Redis does not answer, whatever ``on_unavailable``.
        """
        if self.owner_key is None:
            return bool(self._execute("destroy", sid, self._destroy_command(sid)))
        replies = self._send("destroy", sid, self._owned_destroy(sid))
        return bool(replies and replies[0])

    def sessions_of(self, owner: str | int) -> list[str]:
        """The ids of ``owner``'s live sessions, most recently used first.

        ZREVRANGE of the owner's set, then MGET of its members (per slot on a cluster) to
        keep only the live sessions whose ``owner_key`` field still names ``owner``; the
        others are pruned from the set (a third round trip, only when there are some).
        Raises ``InvalidOption`` on a store without ``owner_key`` or for an owner that is
        not a str or an int.
        """
        index = self._owner_index(owner)
        with self._call("sessions_of"):
            live, stale = self._look_up(index)
            if stale:
                self._client.execute_command(*self._prune_command(index, stale))
            return live
        return []

    def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every live session of ``owner`` but ``keep`` (the current session's id, for
        "sign out my other devices"); return how many this call ended.

        As :meth:`sessions_of`, then one pipeline of a DEL per session and the pruning of
        the owner's set. A session that joins the owner after the set was read is not
        ended. Raises ``StoreUnavailable`` when Redis does not answer, whatever
        ``on_unavailable``: a logout everywhere is never reported done when it was not.
        """
        index = self._owner_index(owner)
        if keep is not None and not isinstance(keep, str):
            raise InvalidOption("keep", keep, "None or a session id (str)")
        with self._call("destroy_sessions_of"):
            live, stale = self._look_up(index)
            ended = [sid for sid in live if sid != keep]
            commands = self._ending(index, ended, stale)
            replies = self._pipeline(commands) if commands else []
            self._forget(*ended)
            return sum(int(n) for n in replies[: len(ended)])
        raise AssertionError("destroy_sessions_of fails closed")  # pragma: no cover

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss. One EXISTS."""
        return bool(self._execute("contains", None, self._contains_command(sid)))

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session under the prefix. SCAN (every
        primary of a cluster), then one MGET per batch of keys (per slot on a cluster)."""
        with self._call("all"):
            fetched = [(mgets, self._pipeline(mgets)) for mgets in self._mgets(self._keys())]
            return self._sessions(fetched)
        return {}

    def __len__(self) -> int:
        """The number of live sessions under the prefix (SCAN: O(keys in the database))."""
        with self._call("len"):
            return len(self._keys())
        return 0

    def clear(self) -> None:
        """Remove every session under the prefix, and no other key. Counters are kept.

        Raises ``StoreUnavailable`` when Redis does not answer, whatever ``on_unavailable``.
        """
        with self._call("clear"):
            for batch in _batches(self._keys(owners=True)):
                self._pipeline(self._per_slot("DEL", batch))

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
        with self._call("stats"):
            keys = self._keys()
            size = sum(self._memory(batch) for batch in _batches(keys))
            config = self._config()
        return self._stats(len(keys), size, config)

    def close(self) -> None:
        """Close the connections this store opened (not a ``client`` it was given)."""
        if self._owns_client:
            for client in (self._client, *self._helpers):
                client.close()

    def as_async(self) -> AsyncSessionStore:
        """An ``AsyncRedisStore`` on the same URL and options, for ASGI apps.

        A store built on a given ``client`` gets a face that runs each call in a worker
        thread instead, since a sync client cannot be shared with an event loop.
        """
        if not self._owns_client:
            from ..protocol import _ThreadAsync

            return _ThreadAsync(self)
        from .asyncio import AsyncRedisStore

        return AsyncRedisStore(
            self.url,
            prefix=self.prefix,
            ttl=self.ttl,
            serializer=self._serializer_option,
            socket_timeout=self.socket_timeout,
            connect_timeout=self.connect_timeout,
            on_unavailable=self.on_unavailable,
            owner_key=self.owner_key,
        )

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- I/O --------------------------------------------------------------------------

    def _execute(self, op: str, sid: str | None, command: Command | None) -> Any:
        """Send ``command`` (nothing when it is ``None``); ``None`` when Redis is down and
        ``on_unavailable`` lets ``op`` fail quietly."""
        if command is not None:
            with self._call(op, sid):
                return self._client.execute_command(*command)
        return None

    def _send(self, op: str, sid: str | None, commands: list[Command] | None) -> list[Any]:
        """Send ``commands`` in one round trip; their replies, or ``[]`` when there were
        none or Redis is down and ``on_unavailable`` lets ``op`` fail quietly."""
        if commands:
            with self._call(op, sid):
                if len(commands) == 1:
                    return [self._client.execute_command(*commands[0])]
                return self._pipeline(commands)
        return []

    def _look_up(self, index: str) -> tuple[list[str], list[tuple[str, bytes]]]:
        members = self._members(
            self._client.execute_command("ZREVRANGE", index, 0, -1, "WITHSCORES")
        )
        mgets = list(self._mgets(self._member_keys(members)))
        return self._sort_members(index, members, [(m, self._pipeline(m)) for m in mgets])

    def _pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = pipe.execute()
        return replies

    def _keys(self, owners: bool = False) -> list[bytes]:
        scan = self._client.scan_iter(match=self._pattern, count=SCAN_COUNT)
        return self._own_keys(scan, owners)

    def _memory(self, keys: list[bytes]) -> int:
        try:
            return self._size(keys, self._pipeline(self._usage_commands(keys)))
        except self._refused:  # MEMORY disabled: count payloads and keys
            return self._size(keys, self._pipeline(self._strlen_commands(keys)), True)

    def _config(self) -> object:
        try:
            return self._client.config_get("maxmemory")
        except self._refused:  # CONFIG disabled, as on managed Redis
            return None
