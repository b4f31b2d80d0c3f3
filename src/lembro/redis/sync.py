"""RedisStore: the blocking I/O around :mod:`lembro.redis.core`.

Each method hands one of the core's step generators to :meth:`RedisStore._run`, which
sends what it asks for; :mod:`lembro.redis.asyncio` is the same with awaits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

from ..lifetimes import Device, Loaded, SessionInfo
from ..protocol import AsyncSessionStore, Stats
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

__all__ = ["RedisStore"]

log = logging.getLogger("lembro")

# Seconds the listener waits for a message before it looks whether it was stopped; close()
# wakes it sooner by dropping its connection.
_POLL = 1.0


class RedisStore(RedisCore):
    """Sessions in Redis under ``prefix``, shared by every process that uses the same Redis.

    ``url`` is ``redis://host:port/db``, ``rediss://`` (TLS), ``unix:///path``,
    ``redis+cluster://host:port`` (any node of a Redis Cluster; ``rediss+cluster://`` for
    TLS) or ``redis+sentinel://host[:port][,host[:port]...]/service_name[/db]`` (the
    primary that Sentinel names, followed through failovers; the port defaults to 26379).
    ``client`` is a ready client to use instead: redis-py's or valkey-py's ``Redis``/
    ``Valkey``, ``RedisCluster``/``ValkeyCluster`` or a Sentinel ``master_for(...)``
    client (its own timeouts and retries apply, and ``close()`` leaves it open).
    ``prefix`` must end in ``":"``, and the store owns exactly the keys ``prefix + id``
    that hold a session it can read (and its owner sets): a store on ``"app:"`` never sees
    ``"app:admin:"``'s sessions, and another app's key under the prefix is skipped (one
    WARNING names it), never returned, counted, overwritten or deleted. ``ttl`` is the
    default lifetime in seconds; Redis removes a session when it ends, so ``purge()`` has
    nothing to do. ``socket_timeout`` and ``connect_timeout`` are seconds.
    ``max_session_bytes`` (default 4 MiB, at most 512 MiB) bounds one serialized session:
    a larger one raises ``SessionTooLarge`` before anything is sent. The options are kept
    in one :class:`~lembro.redis.RedisOptions`, ``store.options``.

    On Sentinel, the store listens (from its first call until ``close()``, in a daemon
    thread) for Sentinel's ``+switch-master`` and moves its connections to the new
    primary when it is announced; a ``READONLY`` reply makes it look the primary up again
    too. In the second or so between the replica's promotion and the announcement, the
    former primary still takes writes, which it loses when demoted: ``wait_replicas``
    (0: off) makes ``destroy``, ``destroy_sessions_of`` and ``clear`` send WAIT after
    their deletions and raise ``StoreUnavailable`` unless that many replicas confirmed
    them within ``wait_timeout`` seconds, so that a logout reported done survives a
    failover or a crash of the primary (refused on a cluster).

    When Redis does not answer, or cannot take the command now (a failover, a cluster
    that is down or resharding), or answers but not as Redis, calls raise
    ``StoreUnavailable`` (``on_unavailable="raise"``), or (``"empty"``) reads see no
    session and writes are dropped, with a WARNING log; ``destroy()``, ``clear()`` and
    ``stats()`` raise either way, so a logout is never reported done when it was not. The
    first call after Redis (or the new primary) answers works again. A command Redis
    refuses (ACLs, a disabled command) raises ``StoreUnavailable`` too: no raw client
    error reaches the caller.

    ``owner_key`` names the session field that holds the signed-in user (``None``: no
    owner index, and no cost). With it, each owner's session ids are kept in a sorted set
    by last use, for :meth:`sessions_of` and :meth:`destroy_sessions_of`; an owner is a
    str or an int, compared as a str (``42`` and ``"42"`` are one owner), and a write
    whose owner field holds anything else raises ``SerializationError``.

    Lifetimes (issue 29): ``absolute_ttl`` (seconds, ``None``: none) ends a session that
    long after its sign-in, however it is used: every operation that sets a session's
    expiry sets it to the earlier of the idle ``ttl`` and the absolute end, in the same
    script. ``renew_every`` (seconds, ``None``: never) makes :meth:`load` move a session
    whose id is older than that to a fresh id, the old id answering as the new one for
    ``renew_grace`` seconds and then reading as a stolen cookie (the session is ended,
    with one WARNING). ``max_sessions_per_user`` (needs ``owner_key``) ends an owner's
    sessions with the oldest sign-in beyond that many, after a write that gives the owner
    one more: steps after the write, not one script (an owner's sessions live in other
    hash slots on a Cluster), so two sign-ins at once may each end one, never leaving
    more than the limit. Each session's created, renewed and last-seen times, absolute end
    and device live in a small header inside its own value (no key more per session); a
    value written by a version before it reads as a session first seen now.

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
        return self._run("get", sid, self._get_steps(sid), None)

    def load(self, sid: str, *, new_id: Callable[[], str] | None = None) -> Loaded | None:
        """The read a request makes: session ``sid`` as :class:`~lembro.Loaded` (the id to
        use from now on, the data, the seconds to its absolute end), or ``None``; a hit
        or a miss, as :meth:`get`.

        An id replaced by a renewal answers as the new one during its grace; one
        replaced longer ago is a stolen cookie: the session that replaced it is ended,
        one WARNING logged (no id; the owner if any), and the answer is ``None``. With
        ``renew_every``, a session whose id was issued longer ago than that is moved to
        a fresh id (a :meth:`rename` keeping its lifetime, the old id in grace for
        ``renew_grace`` seconds): ``new_id()``, by default ``new_session_id()``; a
        caller that keeps its ids under a prefix of its own (Litestar's namespaces)
        gives one that returns a fresh, unguessable id under it each call (a bad one
        raises ``InvalidOption``, as :meth:`lembro.MemoryStore.load` says).
        ``last_seen`` is written when the stored one is a minute old. One script on the
        session's key (with ``owner_key``, pipelined with the ZADD that counts the use):
        one round trip, one more to follow an alias or to renew (a few on a cluster), one
        more once for a session written before lembro kept lifetimes (it gets its header
        then).
        """
        return self._run("load", sid, self._load_steps(sid, new_id), None)

    def session_info(self, sid: str) -> SessionInfo | None:
        """What session ``sid`` is (:class:`~lembro.SessionInfo`), or ``None``; neither a
        hit nor a miss. GET and PTTL in one round trip."""
        return self._run("session_info", sid, self._session_info_steps(sid), None)

    def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        """Return a fresh copy of session ``sid`` and give it a new lifetime of ``ttl``
        seconds (default: the store's ``ttl``) in the same step, or ``None`` when absent:
        a get and a touch that no write can come between, so a ``set`` racing it is
        never undone. A hit or a miss, as :meth:`get`. One GETEX (with ``owner_key``,
        pipelined with the owner's set's upkeep; a second round trip when this store has
        not seen ``sid`` lately and the session names an owner). Raises
        ``InvalidOption`` for a bad ``ttl`` before anything is sent."""
        return self._run("renew", sid, self._renew_steps(sid, ttl), None)

    def set(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None = None,
        *,
        device: Device | None = None,
    ) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's ``ttl``),
        never past the session's absolute end; ``device`` is recorded when the session
        is created here (a set of an id not held).

        One script that SETs with PX and leaves another app's key alone (with
        ``owner_key``, pipelined with the owner's set's upkeep: one round trip; with
        ``max_sessions_per_user``, the owner's sessions read and the oldest beyond the
        limit ended in two or three more when the owner gains one). Raises
        ``InvalidOption``, ``SerializationError`` or ``SessionTooLarge`` before anything
        is sent, so the stored session is unchanged; ``InvalidOption`` too when ``sid``'s
        key holds another app's data.
        """
        self._run("set", sid, self._write_steps(sid, data, ttl, device=device), False)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a live session; ``False`` when absent. One SET XX."""
        return self._run("replace", sid, self._write_steps(sid, data, ttl, "XX"), False)

    def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        """Apply ``changes`` (top-level keys set) and ``deleted`` (top-level keys
        removed) to session ``sid`` as it is now, and give it a new lifetime of ``ttl``
        seconds: what a request that changed some keys writes back, so that requests of
        one session that change different keys never undo each other's changes.
        ``False``, and nothing written, when ``sid`` is absent: a destroyed session is
        never recreated. With no change, a :meth:`touch`.

        A GET, then a script that writes the changed session only if it is still the one
        read (with ``owner_key``, pipelined with the owner's set's upkeep, and one more
        round trip when the owner changed): one round trip more than :meth:`set`, and
        again while other writes of the session land in between, at most 16 times
        (then ``StoreUnavailable``). One key, so the same on a cluster. Raises
        ``InvalidOption``, ``SerializationError`` or ``SessionTooLarge`` before anything
        is written, as :meth:`set`.
        """
        return self._run("update", sid, self._update_steps(sid, changes, deleted, ttl), False)

    def rename(
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
        """Move session ``old`` to the id ``new`` (a fresh one), holding ``data`` for
        ``ttl`` seconds: a regenerate as one operation.

        ``reset_lifetime=True`` is a sign-in: ``new`` starts a new absolute lifetime;
        ``False`` is a privilege change or a renewal inside one sign-in: ``new`` keeps
        ``old``'s ``created`` and absolute end. With ``grace`` seconds, ``old`` answers as
        ``new`` for that long, then reads as a stolen cookie until ``new`` could end (a
        key of its own, ``prefix + old``); ``destroy(old)`` meanwhile ends ``new`` too.
        ``device`` is recorded on ``new`` (else ``old``'s is kept). ``False``, and nothing written,
        when ``old`` is absent (a logout won the race), or when a
        :meth:`destroy_sessions_of` of the owner ``data`` names, which counts ``old``, is
        under way. With ``owner_key``, ``new`` joins its owner's set in the same step.

        One script on one server or Sentinel's primary: ``old`` and ``new`` are never
        both there, or both gone. On a cluster, where they may live on different nodes:
        ``new`` is written first and ``old`` deleted second, and if ``old`` was gone by
        then, ``new`` is deleted again (two round trips; four with ``owner_key``). Raises
        ``InvalidOption``, ``SerializationError`` or ``SessionTooLarge`` before anything
        is sent, and ``StoreUnavailable`` when Redis does not answer, whatever
        ``on_unavailable``: ``old`` is left as it was (on a cluster, unless the node of
        ``old`` deleted it and its answer was lost).
        """
        steps = self._rename_steps(old, new, data, ttl, reset_lifetime, grace, device)
        return self._run("rename", old, steps, False)

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Give ``sid`` a new lifetime of ``ttl`` seconds; ``False`` when absent. One PEXPIRE
        (with ``owner_key``, a GETEX when this store has not seen ``sid`` lately and must
        read it to find its owner, and a second round trip when it names one)."""
        return self._run("touch", sid, self._touch_steps(sid, ttl), False)

    def time_left(self, sid: str) -> float | None:
        """Seconds until session ``sid`` ends, or ``None`` when absent; neither a hit nor a
        miss. TYPE and PTTL, in one round trip."""
        return self._run("time_left", sid, self._time_left_steps(sid), None)

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether one was there. One DEL (and, with
        ``wait_replicas``, a WAIT in the same round trip).

        Raises ``StoreUnavailable`` when Redis does not answer, or fewer than
        ``wait_replicas`` replicas confirmed the deletion, whatever ``on_unavailable``.
        """
        return self._run("destroy", sid, self._destroy_steps(sid), False)

    @overload
    def sessions_of(self, owner: str | int, *, info: Literal[False] = False) -> list[str]: ...
    @overload
    def sessions_of(self, owner: str | int, *, info: Literal[True]) -> list[SessionInfo]: ...
    @overload
    def sessions_of(self, owner: str | int, *, info: bool) -> list[str] | list[SessionInfo]: ...
    def sessions_of(self, owner: str | int, *, info: bool = False) -> list[str] | list[SessionInfo]:
        """The ids of ``owner``'s live sessions, most recently used first; with
        ``info=True``, each as a :class:`~lembro.SessionInfo`, the most recently seen
        first (each one's PTTL in its MGET's round trip).

        ZREVRANGE of the owner's set, then MGET of its members (per slot on a cluster) to
        keep only the live sessions whose ``owner_key`` field still names ``owner``; the
        others are pruned from the set (a third round trip, only when there are some).
        Raises ``InvalidOption`` on a store without ``owner_key`` or for an owner that is
        not a str or an int.
        """
        if info:
            infos: list[SessionInfo] = self._run(
                "sessions_of", None, self._sessions_info_steps(owner), []
            )
            return infos
        return self._run("sessions_of", None, self._sessions_of_steps(owner), [])

    def destroy_session_of(self, owner: str | int, sid: str) -> bool:
        """End session ``sid`` only if its owner is ``owner`` (a user cannot end another
        user's session by guessing its id); whether it did. Counted as a logout. A GET,
        then a script that deletes the session only if it is still the one read (and a
        WAIT with ``wait_replicas``). Raises ``InvalidOption`` as :meth:`sessions_of`,
        and ``StoreUnavailable`` when Redis does not answer, whatever
        ``on_unavailable``."""
        steps = self._destroy_session_of_steps(owner, sid)
        return self._run("destroy_session_of", sid, steps, False)

    def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """End every live session of ``owner`` but ``keep`` (the current session's id, for
        "sign out my other devices"); return how many this call ended.

        As :meth:`sessions_of`, then one pipeline of a DEL per session and the pruning of
        the owner's set (with ``wait_replicas``, and a WAIT). A session that joins the
        owner after the set was read is not ended; the set is marked while the call runs,
        and a :meth:`rename` of one of its sessions under the same owner is refused
        meanwhile (it would outlive the call). Raises ``StoreUnavailable`` when Redis does
        not answer, or fewer than ``wait_replicas`` replicas confirmed, whatever
        ``on_unavailable``: a logout everywhere is never reported done when it was not.
        """
        steps = self._destroy_sessions_of_steps(owner, keep)
        return self._run("destroy_sessions_of", None, steps, 0)

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` is a live session; neither a hit nor a miss. One TYPE."""
        return self._run("contains", None, self._contains_steps(sid), False)

    def all(self) -> dict[str, dict[str, Any]]:
        """Return a fresh copy of every live session under the prefix. SCAN (every
        primary of a cluster), then one MGET per batch of keys (per slot on a cluster)."""
        return self._run("all", None, self._all_steps(), {})

    def __len__(self) -> int:
        """The number of live sessions under the prefix (SCAN: O(keys in the database);
        another app's string under the prefix is counted, its other types are not)."""
        return self._run("len", None, self._len_steps(), 0)

    def clear(self) -> None:
        """Remove every session under the prefix, and no other key. Counters are kept.

        Raises ``StoreUnavailable`` when Redis does not answer, or fewer than
        ``wait_replicas`` replicas confirmed a batch of deletions, whatever
        ``on_unavailable``.
        """
        self._run("clear", None, self._clear_steps(), None)

    def purge(self) -> int:
        """Return 0: Redis removes expired sessions itself."""
        return 0

    def stats(self) -> Stats:
        """The store's counters now; always raises ``StoreUnavailable`` when Redis is down.

        ``sessions`` and ``size`` (bytes, MEMORY USAGE or, where that is disabled, the
        payload lengths) are summed over a SCAN of the prefix; ``max_size`` is Redis's
        ``maxmemory`` where CONFIG GET is allowed and a limit is set, else ``None``.
        ``hits``, ``misses`` and the other counters are this object's own (and its
        :meth:`as_async` twin's; :meth:`counters` reads them without Redis). With
        ``owner_key``, ``signed_in_users`` counts the owner sets, over a second SCAN.
        """
        stats: Stats = self._run("stats", None, self._stats_steps(), FAILS_CLOSED)
        return stats

    def close(self) -> None:
        """Stop listening to Sentinel, and close the connections this store opened (not a
        ``client`` it was given)."""
        self._listens = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if self._owns_client:
            for client in (self._client, *self._helpers):
                client.close()

    def as_async(self) -> AsyncSessionStore:
        """An ``AsyncRedisStore`` on the same options (``store.options``, whole), for
        ASGI apps.

        A store built on a given ``client`` gets a face that runs each call in a worker
        thread instead, since a sync client cannot be shared with an event loop.
        """
        if not self._owns_client:
            from ..protocol import _ThreadAsync

            return _ThreadAsync(self)
        from .asyncio import AsyncRedisStore

        twin = AsyncRedisStore.from_options(self.options)
        twin._share_counts(self)
        return twin

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- I/O --------------------------------------------------------------------------

    def _run(self, op: str, sid: object, steps: Steps[T], empty: T) -> T:
        """Drive ``steps``: send each request, hand back its reply (or throw in the
        client's error), and return what the steps return; ``empty`` when Redis is down
        and ``on_unavailable`` lets ``op`` fail quietly."""
        if self._listens and (self._listener is None or self._listener.pid != os.getpid()):
            self._listen()
        steps = self._across_switches(steps)
        with self._call(op, sid):
            try:
                request = next(steps)
                while True:
                    try:
                        reply = self._perform(request)
                    except Exception as error:  # the steps may handle it, else it rises
                        request = steps.throw(error)
                    else:
                        request = steps.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
        return empty

    def _listen(self) -> None:
        """Start the listener: on the first use, and again in a forked child (which has
        none of its parent's threads)."""
        with self._lock:
            if not self._listens or (
                self._listener is not None and self._listener.pid == os.getpid()
            ):
                return
            self._listener = _Listener(self._watched, self._primary)
            # A store dropped without close() stops its listener too.
            weakref.finalize(self, self._listener.stop, False)

    def _perform(self, request: Request) -> Any:
        kind, argument = request
        if kind == "resolve":
            return _find_primary(getattr(self._client, "connection_pool", None), self._watched)
        if kind == "send":
            if len(argument) == 1:
                return [self._client.execute_command(*argument[0])]
            pipe = self._client.pipeline(transaction=False)
            for command in argument:
                pipe.execute_command(*command)
            return pipe.execute()
        if kind == "scan":
            return list(
                self._client.scan_iter(match=self._pattern, count=SCAN_COUNT, _type=argument)
            )
        return self._client.config_get("maxmemory")


def _find_primary(pool: Any, watched: Any) -> tuple[Address | None, Address] | None:
    """Drop ``pool``'s idle connections and, for a Sentinel pool (``watched``), ask
    Sentinel for the primary again: its address before and now (``None`` for another
    pool, whose connections reconnect to the address they were given)."""
    if pool is None:
        return None
    found = None
    if watched is not None:
        before = watched.master_address
        # Connections to another address are dropped when they are released.
        found = before, watched.get_master_address()
    pool.disconnect(inuse_connections=False)
    return found


class _Listener:
    """A daemon thread subscribed to ``+switch-master`` on one of a Sentinel pool's
    Sentinels (the next one when it stops answering). On an announcement for the pool's
    service it looks the primary up again, which drops the connections to the former
    one, and tells the store's :class:`_Primary`. On each (re)subscription it looks the
    primary up too, since a switch may have been announced while it was not listening."""

    def __init__(self, pool: Any, primary: _Primary) -> None:
        self._pool = pool
        self._primary = primary
        self._stopped = threading.Event()
        self._pubsub: Any = None
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self._listen, name=f"lembro-sentinel-{pool.service_name}", daemon=True
        )
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop the thread; with ``wait``, return once it has ended."""
        self._stopped.set()
        connection = getattr(self._pubsub, "connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):  # wakes the thread from its read
                connection.disconnect()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout=_POLL + 5)

    def _listen(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            sentinels = list(self._pool.sentinel_manager.sentinels)
            sentinel = sentinels[failures % len(sentinels)]
            pubsub = sentinel.pubsub()
            self._pubsub = pubsub
            try:
                pubsub.subscribe(_SWITCH_CHANNEL)
                while not self._stopped.is_set():
                    self._handle(sentinel, pubsub.get_message(timeout=_POLL))
            except Exception as error:  # any failure: on to the next Sentinel
                if self._stopped.is_set():
                    break
                failures += 1
                log.debug("Sentinel %s: listening for switches failed: %s", sentinel, error)
                self._stopped.wait(min(failures, 10) * 0.1)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _handle(self, sentinel: Any, message: Any) -> None:
        pool = self._pool
        if isinstance(message, dict) and message.get("type") in ("subscribe", b"subscribe"):
            before = pool.master_address
            after = pool.get_master_address()
            if before is not None and before != after:
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
            pool.get_master_address()
        finally:
            self._primary.moved(before, new, "Sentinel announced it")
