"""The Redis stores' sans-I/O core: options, key names, command arguments, reply decoding
and the error policy, shared by :mod:`lembro.redis.sync` and :mod:`lembro.redis.asyncio`.

Each session is one Redis string, ``prefix + sid``, holding the serialized session and
carrying the session's lifetime as a Redis expiry, so Redis removes expired sessions
itself and bounds memory with its own ``maxmemory`` policy. With ``owner_key``, each owner
also has a sorted set, ``prefix + "owner:" + quoted owner + ":"``, of its sessions' ids
scored by their last use (see :meth:`RedisCore._owner_index`). Nothing here talks to Redis:
the stores send the commands built here and hand the replies back to be decoded.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from types import ModuleType, TracebackType
from typing import Any, Literal, TypeGuard
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..checks import check_owner, check_owner_key, check_seconds, check_session_id, owner_of
from ..errors import InvalidOption, SerializationError, StoreUnavailable
from ..ids import redact
from ..protocol import Stats
from ..serializers import (
    Serializer,
    dumps_session,
    get_serializer,
    loads_session,
    require_safe_serializer,
)

__all__ = ["SCAN_COUNT", "SEPARATOR", "Command", "OnUnavailable", "RedisCore"]

log = logging.getLogger("lembro")

OnUnavailable = Literal["raise", "empty"]
Command = tuple[Any, ...]

# A prefix ends with the separator and a session id never holds one, so the keys of
# "app:" (app:<id>) and of "app:admin:" (app:admin:<id>) cannot be taken for each other.
SEPARATOR = ":"
# Redis rejects an expiry that overflows its millisecond clock; ~285,000 years is plenty.
_MAX_TTL_MS = 2**53
# Keys per SCAN step, and per MGET / DEL / MEMORY USAGE batch: big enough to keep round
# trips few, small enough that no single command blocks Redis for long.
_BATCH = SCAN_COUNT = 512
# During an outage, at most one WARNING per this many seconds; the rest go to DEBUG.
_WARN_EVERY = 10.0
_GLOB_SPECIAL = frozenset("*?[]\\")
# What "Redis did not answer, or cannot take this now" looks like in redis-py and
# valkey-py, which name their errors alike: a lost or refused connection (with
# AuthenticationError, BusyLoadingError, MasterNotFoundError), a timeout, a former primary
# that is now a read-only replica, a full Redis with maxmemory-policy noeviction, a
# cluster that is down, resharding or has lost a slot's owner, a primary whose replicas
# are gone (min-replicas-to-write).
_UNAVAILABLE_NAMES = (
    "ConnectionError",
    "TimeoutError",
    "ReadOnlyError",
    "OutOfMemoryError",
    "ClusterDownError",
    "ClusterError",
    "TryAgainError",
    "SlotNotCoveredError",
    "MasterDownError",
)
_CLIENT_LIBRARIES = ("redis", "valkey")
_URL_FORMS = "a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
# Operations that must not report success they did not have: a logout whose record may
# still be live, a clear that may have left sessions, numbers that would be made up.
_FAIL_CLOSED = frozenset({"destroy", "clear", "stats", "destroy_sessions_of"})
_READS = frozenset({"get", "touch", "all", "len", "contains", "sessions_of"})
# An owner's key ends with the separator, so it is never ``prefix + id`` of any store
# (an id holds no separator), and the owner inside it is quoted, so holds none either.
_OWNER_MARK = "owner:"
# How many sessions' owners a store remembers, so that get, touch and destroy can keep
# the owner's set in the same round trip; a session this process has not seen lately
# costs touch a second round trip, and its get is not counted as a use.
_RECENT_OWNERS = 4096
# Adds a member with its score, and pushes the set's expiry to at least ARGV[3] ms from
# now, never earlier (a new set has no expiry: PTTL -1).
_JOIN = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""
# Removes the members given with their scores, each only if its score is still the one
# read: a session that rejoined its owner meanwhile (a new score) stays in the set.
# Seconds a member of an owner's set is safe from pruning after it joined: longer than a
# write's join and SET can be apart (a pipeline, or per node on a cluster, within the
# store's socket timeouts).
_JOIN_GRACE = 10.0
_PRUNE = """
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""


class _Unknown:
    """The owner of a session this store has not seen lately."""


_UNKNOWN = _Unknown()


def _is_sid(sid: object) -> TypeGuard[str]:
    return isinstance(sid, str) and sid != "" and SEPARATOR not in sid


def _ttl_ms(seconds: float) -> int:
    """Seconds as Redis's whole milliseconds: rounded up, never 0 (Redis would refuse it)."""
    return min(max(1, math.ceil(seconds * 1000)), _MAX_TTL_MS)


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _batches(items: Iterable[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _as_bytes(value: bytes | str) -> bytes:
    # The store's own clients never decode replies; a given client is checked for it.
    return value if isinstance(value, bytes) else value.encode()


def _library_errors(names: Iterable[str]) -> tuple[type[Exception], ...]:
    """The classes called ``names`` in every client library loaded so far."""
    found: list[type[Exception]] = []
    for library in _CLIENT_LIBRARIES:
        module = sys.modules.get(f"{library}.exceptions")
        found.extend(getattr(module, name) for name in names if hasattr(module, name))
    return tuple(found)


def _client_library() -> ModuleType:
    """redis-py if installed, else valkey-py (their APIs match); the root module."""
    for library in _CLIENT_LIBRARIES:
        try:
            module = importlib.import_module(library)
            for part in ("asyncio", "cluster", "sentinel", "retry", "backoff", "asyncio.retry"):
                importlib.import_module(f"{library}.{part}")
        except ImportError:
            continue
        return module
    raise ImportError(
        "lembro.RedisStore needs redis-py or valkey-py, and neither is installed: "
        "pip install lembro[redis]"
    )


def _max_size(config: object) -> int | None:
    """``maxmemory`` from a CONFIG GET reply, in bytes; ``None`` when unlimited or unknown."""
    if not isinstance(config, dict):
        return None
    for name, value in config.items():
        if name in ("maxmemory", b"maxmemory"):
            try:
                limit = int(value)
            except (TypeError, ValueError):
                return None
            return limit or None
    return None


class _Call:
    """Wraps one store operation's I/O: notes success, and turns an outage into
    ``StoreUnavailable`` or, where ``on_unavailable="empty"`` allows it, a log line and
    the ``with`` block skipped (the caller then returns its empty answer)."""

    __slots__ = ("_core", "_op", "_sid")

    def __init__(self, core: RedisCore, op: str, sid: str | None) -> None:
        self._core, self._op, self._sid = core, op, sid

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        core = self._core
        if error is None:
            if core._outage:
                core._answers_again()
            return False
        if not isinstance(error, core._unavailable_errors):
            return False
        core._unavailable(self._op, self._sid, error)
        return True


class RedisCore:
    """Options, keys, commands, decoding, counters and outage handling for both stores.

    A subclass supplies the I/O: it sends each command this class builds through its
    client, inside ``with self._call(op, sid):``, and decodes the reply here.
    """

    _asynchronous: bool

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        prefix: str = "lembro:",
        ttl: float = 86400.0,
        serializer: str | Serializer = "msgpack",
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        on_unavailable: OnUnavailable = "raise",
        trust_pickle: bool = False,
        owner_key: str | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidOption("url", url, _URL_FORMS)
        if not isinstance(prefix, str) or not prefix.endswith(SEPARATOR):
            # An empty prefix would make clear() delete every key in the database; one
            # without the separator could be the start of another store's prefix.
            raise InvalidOption("prefix", prefix, f"a str ending in {SEPARATOR!r}, like 'lembro:'")
        if on_unavailable not in ("raise", "empty"):
            raise InvalidOption("on_unavailable", on_unavailable, "'raise' or 'empty'")
        self.url = url
        self.prefix = prefix
        self.ttl = check_seconds(ttl, "ttl")
        self.socket_timeout = check_seconds(socket_timeout, "socket_timeout")
        self.connect_timeout = check_seconds(connect_timeout, "connect_timeout")
        self.on_unavailable: OnUnavailable = on_unavailable
        self.owner_key = check_owner_key(owner_key)
        # session id -> its owner's key (None: no owner), for the sessions seen lately;
        # oldest first. Guarded by _lock.
        self._owners: dict[str, str | None] = {}
        self._serializer_option = serializer
        self._serializer = get_serializer(serializer)
        require_safe_serializer(self._serializer, "a Redis server", trust_pickle)
        self._prefix_bytes = prefix.encode()
        self._pattern = _glob_escape(prefix) + "*"
        self._lock = threading.Lock()  # guards the counters and outage state only
        self._hits = 0
        self._misses = 0
        self._outage = False
        self._last_warning = -math.inf
        self._suppressed = 0
        self._owns_client = client is None
        # Clients the store opened besides ``_client`` (a Sentinel's), closed with it.
        self._helpers: list[Any] = []
        if client is None:
            client = self._connect(url, self._asynchronous)
        else:
            self._check_client(client, self._asynchronous)
        self._client: Any = client
        # A cluster client can say which slot a key hashes to; multi-key commands are
        # then split per slot.
        self._keyslot = getattr(client, "keyslot", None)
        self._where = _describe(client)
        self._unavailable_errors = _library_errors(_UNAVAILABLE_NAMES)
        self._refused = _library_errors(("ResponseError",))

    # ---- the client ---------------------------------------------------------------------

    def _connect(self, url: str, asynchronous: bool) -> object:
        """A client for ``url``: redis://, rediss://, unix://, redis+cluster://,
        rediss+cluster://, or redis+sentinel://host:port[,host:port...]/service[/db]."""
        # Clients open their connections on first use (a sync cluster client excepted), so
        # an asyncio store can be built outside an event loop.
        lib = _client_library()
        scheme, _, rest = url.partition("://")
        flavour = lib.asyncio if asynchronous else lib
        retry_module = lib.asyncio.retry if asynchronous else lib.retry
        # One immediate retry on a connection error only: it replaces a pooled connection
        # that a restarted Redis closed, so the first call after a restart works. A
        # timeout is not retried, so a hung Redis costs one socket_timeout, not several.
        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": retry_module.Retry(
                lib.backoff.NoBackoff(), 1, supported_errors=(lib.exceptions.ConnectionError,)
            ),
            "decode_responses": False,
        }
        if scheme in ("redis+cluster", "rediss+cluster"):
            module = flavour.cluster if asynchronous else lib.cluster
            cluster = getattr(module, "RedisCluster", None) or module.ValkeyCluster
            try:  # a sync cluster client asks a node for the slot map right away
                return cluster.from_url(scheme.split("+")[0] + "://" + rest, **options)
            except (lib.exceptions.RedisClusterException, lib.exceptions.RedisError) as e:
                raise StoreUnavailable(f"no Redis Cluster node answers: {e}") from e
        if scheme == "redis+sentinel":
            return self._sentinel_master(flavour, rest, options)
        if scheme not in ("redis", "rediss", "unix"):
            raise InvalidOption("url", url, _URL_FORMS)
        return flavour.Redis.from_url(url, **options)

    def _sentinel_master(self, flavour: ModuleType, rest: str, options: dict[str, Any]) -> object:
        parts = urlsplit("redis+sentinel://" + rest)
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or not parts.netloc:
            raise InvalidOption(
                "url", self.url, "redis+sentinel://host:port[,host:port...]/service_name[/db]"
            )
        credentials, _, hosts = parts.netloc.rpartition("@")
        user, _, password = credentials.partition(":")
        nodes = []
        for node in hosts.split(","):
            host, _, port = node.rpartition(":")
            nodes.append((host.strip("[]") or "127.0.0.1", int(port or 26379)))
        query = dict(parse_qsl(parts.query))
        timeouts = {
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        }
        sentinel = flavour.sentinel.Sentinel(nodes, sentinel_kwargs=timeouts, **timeouts)
        self._helpers.extend(sentinel.sentinels)
        return sentinel.master_for(
            path[0],
            db=int(path[1]) if len(path) > 1 else 0,
            username=unquote(user) or query.get("username"),
            password=unquote(password) or query.get("password"),
            retry=options["retry"],
            decode_responses=False,
        )

    def _check_client(self, client: Any, asynchronous: bool) -> None:
        """Refuse a ``client`` that cannot do what the store needs, is of the other kind
        (sync or asyncio), or decodes responses: the store reads bytes."""
        kind = "an asyncio" if asynchronous else "a"
        wanted = f"{kind} redis-py or valkey-py client (Redis, RedisCluster, master_for(...))"
        needs = ("execute_command", "pipeline", "scan_iter", "get_encoder")
        if not all(callable(getattr(client, name, None)) for name in needs):
            raise InvalidOption("client", client, wanted)
        if inspect.iscoroutinefunction(client.execute_command) != asynchronous:
            raise InvalidOption("client", client, wanted)
        if getattr(client.get_encoder(), "decode_responses", False):
            raise InvalidOption("client", client, "a client with decode_responses=False")

    # ---- keys and commands ----------------------------------------------------------------

    def _key(self, sid: str) -> str:
        return self.prefix + sid

    def _write(self, sid: str, data: dict[str, Any], ttl: float | None, *flags: str) -> Command:
        """SET for a write, checked and serialized; raises ``InvalidOption`` or
        ``SerializationError`` before anything is sent."""
        check_session_id(sid)
        if SEPARATOR in sid:
            raise InvalidOption("session id", sid, f"a str without {SEPARATOR!r}")
        lifetime = self.ttl if ttl is None else check_seconds(ttl, "ttl")
        blob = dumps_session(self._serializer, data)
        return ("SET", self._key(sid), blob, "PX", _ttl_ms(lifetime), *flags)

    def _get_command(self, sid: object) -> Command | None:
        return ("GET", self._key(sid)) if _is_sid(sid) else None

    def _set_command(self, sid: str, data: dict[str, Any], ttl: float | None) -> Command:
        return self._write(sid, data, ttl)

    def _replace_command(self, sid: str, data: dict[str, Any], ttl: float | None) -> Command:
        return self._write(sid, data, ttl, "XX")

    def _touch_command(self, sid: object, ttl: float | None) -> Command | None:
        lifetime = self.ttl if ttl is None else check_seconds(ttl, "ttl")
        return ("PEXPIRE", self._key(sid), _ttl_ms(lifetime)) if _is_sid(sid) else None

    def _destroy_command(self, sid: object) -> Command | None:
        return ("DEL", self._key(sid)) if _is_sid(sid) else None

    def _contains_command(self, sid: object) -> Command | None:
        return ("EXISTS", self._key(sid)) if _is_sid(sid) else None

    # ---- the owner index ----------------------------------------------------------------

    def _owner_index(self, owner: object) -> str:
        """The key of ``owner``'s sorted set (members: session ids; scores: last use, in
        seconds since the epoch); raises ``InvalidOption`` for a bad owner, or when the
        store has no ``owner_key``."""
        if self.owner_key is None:
            raise InvalidOption(
                "owner_key",
                None,
                "a session field name: sessions_of and destroy_sessions_of need a store "
                "built with owner_key='...'",
            )
        return self.prefix + _OWNER_MARK + quote(check_owner(owner), safe="") + SEPARATOR

    def _recall(self, sid: str) -> str | _Unknown | None:
        with self._lock:
            return self._owners.get(sid, _UNKNOWN)

    def _remember(self, sid: str, index: str | None) -> None:
        with self._lock:
            self._owners.pop(sid, None)
            self._owners[sid] = index
            if len(self._owners) > _RECENT_OWNERS:
                del self._owners[next(iter(self._owners))]

    def _forget(self, *sids: str) -> None:
        with self._lock:
            for sid in sids:
                self._owners.pop(sid, None)

    def _index_of(self, data: dict[str, Any]) -> str | None:
        """The owner's key for session ``data``; raises ``SerializationError`` for an owner
        field of the wrong type."""
        assert self.owner_key is not None
        owner = owner_of(data, self.owner_key)
        return None if owner is None else self._owner_index(owner)

    def _stored_index(self, data: dict[str, Any] | None) -> str | None:
        """Like :meth:`_index_of`, for a session read back: a bad owner field is no owner."""
        try:
            return None if data is None else self._index_of(data)
        except SerializationError:
            return None

    def _join(self, index: str, sid: str, lifetime_ms: int) -> list[Command]:
        """Commands that make ``sid`` the most recent member of ``index``, and keep
        ``index`` alive one store ``ttl`` past a member that lives ``lifetime_ms``."""
        keep = min(lifetime_ms + _ttl_ms(self.ttl), _MAX_TTL_MS)
        return [("EVAL", _JOIN, 1, index, time.time(), sid, keep)]

    def _owned_write(
        self, sid: str, data: dict[str, Any], ttl: float | None, *flags: str
    ) -> tuple[list[Command], int, str | None]:
        """The commands of a write on a store with ``owner_key``, where the SET's reply
        is among them, and the owner's key: the session joins its owner's set, is
        written, then leaves the set of the owner it had (when this store knows it;
        otherwise reads prune it from there). In that order, so that on one server a
        write cut short leaves at worst a stale member, never a session missing from
        its owner's set."""
        command = self._write(sid, data, ttl, *flags)
        index = self._index_of(data)
        commands = [] if index is None else self._join(index, sid, command[4])
        at = len(commands)
        commands.append(command)
        before = self._recall(sid)
        if isinstance(before, str) and before != index:
            commands.append(("ZREM", before, sid))
        return commands, at, index

    def _written(self, sid: str, index: str | None, done: bool) -> None:
        if done:
            self._remember(sid, index)
        else:
            self._forget(sid)

    def _owned_get(self, sid: object) -> list[Command] | None:
        """GET, and the session's use counted in its owner's set when this store knows
        the owner (ZADD XX: a get never adds a member)."""
        command = self._get_command(sid)
        if command is None:
            return None
        name = command[1][len(self.prefix) :]
        index = self._recall(name)
        if isinstance(index, str):
            return [command, ("ZADD", index, "XX", time.time(), name)]
        return [command]

    def _got_owned(self, sid: str, blob: bytes | str | None) -> dict[str, Any] | None:
        data = self._got(blob)
        self._written(sid, self._stored_index(data), data is not None)
        return data

    def _owned_touch(self, sid: object, ttl: float | None) -> tuple[list[Command], int] | None:
        """PEXPIRE, after the owner's set's upkeep when this store knows the owner, or
        with a GET to learn it (then :meth:`_touch_follow_up` says what else to send);
        and where the PEXPIRE's reply is."""
        command = self._touch_command(sid, ttl)
        if command is None:
            return None
        name = command[1][len(self.prefix) :]
        index = self._recall(name)
        if isinstance(index, _Unknown):
            return [command, ("GET", command[1])], 0
        commands = [] if index is None else self._join(index, name, command[2])
        return [*commands, command], len(commands)

    def _touch_follow_up(
        self, sid: str, commands: list[Command], replies: list[Any]
    ) -> list[Command]:
        """After a touch that had to read the session: the commands that keep its
        owner's set, if it has an owner."""
        if not (len(commands) == 2 and commands[1][0] == "GET"):  # the owner was known
            return []
        if not replies[0] or replies[1] is None:
            self._forget(sid)
            return []
        try:
            data: dict[str, Any] | None = loads_session(self._serializer, _as_bytes(replies[1]))
        except SerializationError:
            data = None
        index = self._stored_index(data)
        self._remember(sid, index)
        return [] if index is None else self._join(index, sid, commands[0][2])

    def _owned_destroy(self, sid: object) -> list[Command] | None:
        """DEL, and ZREM from the owner's set when this store knows the owner; otherwise
        the next read of that set prunes it."""
        command = self._destroy_command(sid)
        if command is None:
            return None
        name = command[1][len(self.prefix) :]
        index = self._recall(name)
        self._forget(name)
        return [command] + ([("ZREM", index, name)] if isinstance(index, str) else [])

    def _members(self, reply: Any) -> list[tuple[str, bytes]]:
        """A ZREVRANGE ... WITHSCORES reply as ``(session id, score)``, most recent first."""
        items = list(reply or [])
        if items and isinstance(items[0], (list, tuple)):  # RESP3 pairs
            pairs = [(m, s) for m, s in items]
        else:
            pairs = list(zip(items[::2], items[1::2], strict=True))
        members = []
        for member, score in pairs:
            try:
                sid = _as_bytes(member).decode()
            except UnicodeDecodeError:
                continue
            if _is_sid(sid):
                members.append(
                    (
                        sid,
                        _as_bytes(score) if not isinstance(score, float) else repr(score).encode(),
                    )
                )
        return members

    def _member_keys(self, members: list[tuple[str, bytes]]) -> list[bytes]:
        return [self._key(sid).encode() for sid, _ in members]

    def _sort_members(
        self,
        index: str,
        members: list[tuple[str, bytes]],
        fetched: Iterable[tuple[list[Command], list[Any]]],
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        """The members still live and still the owner's, in the set's order, and the
        stale ones (expired, destroyed, or now someone else's) with their scores. A
        member that joined in the last ``_JOIN_GRACE`` seconds is neither: its write may
        not have landed yet (the join goes first), and pruning it now would leave that
        session out of its owner's set for good."""
        recent = time.time() - _JOIN_GRACE
        blobs: dict[bytes, Any] = {}
        for commands, replies in fetched:
            for command, values in zip(commands, replies, strict=True):
                blobs.update(zip(command[1:], values, strict=True))
        live, stale = [], []
        for (sid, score), key in zip(members, self._member_keys(members), strict=True):
            blob = blobs.get(key)
            if blob is not None:
                try:
                    data: dict[str, Any] | None = loads_session(self._serializer, _as_bytes(blob))
                except SerializationError:
                    # A record no one can read: the set's word that it is the owner's
                    # stands, so a logout everywhere ends it too.
                    live.append(sid)
                    continue
                if self._stored_index(data) == index:
                    live.append(sid)
                    continue
            if float(score) < recent:
                stale.append((sid, score))
        return live, stale

    def _prune_command(self, index: str, members: list[tuple[str, bytes]]) -> Command:
        flat = [part for sid, score in members for part in (sid, score)]
        return ("EVAL", _PRUNE, 1, index, *flat)

    def _ending(
        self, index: str, ended: list[str], stale: list[tuple[str, bytes]]
    ) -> list[Command]:
        """A DEL per session in ``ended`` (each reply says whether this call ended it),
        then their removal from ``index`` (an ended id never comes back) and the pruning
        of ``stale``."""
        commands: list[Command] = [("DEL", self._key(sid)) for sid in ended]
        if ended:
            commands.append(("ZREM", index, *ended))
        if stale:
            commands.append(self._prune_command(index, stale))
        return commands

    def _per_slot(self, name: str, keys: list[bytes]) -> list[Command]:
        """``name keys...`` as one command on a single Redis, one per hash slot on a
        cluster (a multi-key command must not cross slots)."""
        if self._keyslot is None:
            return [(name, *keys)]
        slots: dict[int, list[bytes]] = {}
        for key in keys:
            slots.setdefault(self._keyslot(key), []).append(key)
        return [(name, *same_slot) for same_slot in slots.values()]

    def _mgets(self, keys: list[bytes]) -> Iterator[list[Command]]:
        """MGETs for ``keys``: one per batch, or per slot within a batch on a cluster."""
        for batch in _batches(keys):
            yield self._per_slot("MGET", batch)

    def _own_keys(self, keys: Iterable[bytes], owners: bool = False) -> list[bytes]:
        """The session keys of this store among SCAN's matches, each once (SCAN may repeat
        a key, and its pattern also matches a longer prefix's keys, which hold a
        separator); with ``owners``, this store's owner keys too."""
        start = len(self._prefix_bytes)
        separator = SEPARATOR.encode()
        mark = _OWNER_MARK.encode()
        own = []
        for key in dict.fromkeys(keys):
            rest = key[start:]
            # An empty rest is no session of ours: it is the name of another store's owner
            # set whose prefix ends where ours does (``app:owner:42:`` under ``app:``).
            if (rest and separator not in rest) or (
                owners
                and rest.startswith(mark)
                and rest.endswith(separator)
                and separator not in rest[len(mark) : -1]
            ):
                own.append(key)
        return own

    # ---- replies ----------------------------------------------------------------------

    def _got(self, blob: bytes | str | None) -> dict[str, Any] | None:
        """A GET reply as a session, counted as a hit or a miss."""
        with self._lock:
            if blob is None:
                self._misses += 1
                return None
            self._hits += 1
        return loads_session(self._serializer, _as_bytes(blob))

    def _sessions(self, fetched: Iterable[tuple[list[Command], list[Any]]]) -> dict[str, Any]:
        """MGET replies (with the commands that asked) as ``{sid: session}``; a key that
        expired since SCAN, or whose id is not text, is left out."""
        found: dict[str, dict[str, Any]] = {}
        start = len(self._prefix_bytes)
        for commands, replies in fetched:
            for command, blobs in zip(commands, replies, strict=True):
                for key, blob in zip(command[1:], blobs, strict=True):
                    try:
                        sid = key[start:].decode()
                    except UnicodeDecodeError:
                        continue
                    if blob is not None:
                        found[sid] = loads_session(self._serializer, _as_bytes(blob))
        return found

    def _usage_commands(self, keys: list[bytes]) -> list[Command]:
        return [("MEMORY USAGE", key) for key in keys]

    def _strlen_commands(self, keys: list[bytes]) -> list[Command]:
        return [("STRLEN", key) for key in keys]

    def _size(self, keys: list[bytes], replies: list[Any], payload_only: bool = False) -> int:
        """Bytes from MEMORY USAGE replies, or from STRLEN ones plus the key lengths."""
        if payload_only:
            replies = [n + len(key) if n else 0 for key, n in zip(keys, replies, strict=True)]
        return sum(int(n) for n in replies if n)

    def _stats(self, sessions: int, size: int, config: object) -> Stats:
        with self._lock:
            hits, misses = self._hits, self._misses
        # Redis expires and evicts keys itself and does not count them per prefix.
        return Stats(
            sessions=sessions,
            size=size,
            max_size=_max_size(config),
            hits=hits,
            misses=misses,
            expired=0,
            evicted=0,
            purges=0,
        )

    # ---- outages ------------------------------------------------------------------------

    def _call(self, op: str, sid: str | None = None) -> _Call:
        return _Call(self, op, sid)

    def _answers_again(self) -> None:
        with self._lock:
            was, self._outage, self._suppressed = self._outage, False, 0
            self._last_warning = -math.inf
        if was:
            log.warning("Redis at %s answers again", self._where)

    def _unavailable(self, op: str, sid: str | None, error: BaseException) -> None:
        """Raise ``StoreUnavailable`` from ``error``, or log it when ``on_unavailable="empty"``
        allows ``op`` to fail quietly."""
        if self.on_unavailable == "raise" or op in _FAIL_CLOSED:
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
        effect = "read as empty" if op in _READS else "dropped"
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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._where} prefix={self.prefix!r}>"


def _describe(client: object) -> str:
    """Where a client connects, without credentials: host:port/db, a socket path, a
    cluster's first node, or a Sentinel service."""
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service:
        return f"sentinel service {service}"
    node = getattr(client, "get_default_node", None)
    if callable(node):
        # An asyncio cluster client knows its nodes only once connected: name the ones
        # it starts from.
        names = getattr(node(), "name", None) or ",".join(
            getattr(getattr(client, "nodes_manager", None), "startup_nodes", None) or "?"
        )
        return f"cluster via {names}"
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
