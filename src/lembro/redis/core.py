"""The Redis stores' sans-I/O core: options, key names, command arguments, reply decoding
and the error policy, shared by :mod:`lembro.redis.sync` and :mod:`lembro.redis.asyncio`.

Each session is one Redis string, ``prefix + sid``, holding the serialized session and
carrying the session's lifetime as a Redis expiry, so Redis removes expired sessions
itself and bounds memory with its own ``maxmemory`` policy. With ``owner_key``, each owner
also has a sorted set, ``prefix + "owner:" + quoted owner + ":"``, of its sessions' ids
scored by their last use (see :meth:`RedisCore._owner_index`).

Every operation is written once, as a generator of *steps* (the ``_*_steps`` methods):
it yields what to send (:data:`Request`) and gets the reply back, or the client's error
thrown in. ``RedisStore`` drives a generator with blocking calls and ``AsyncRedisStore``
with awaits; nothing here talks to Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Literal, TypeGuard, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..checks import (
    apply_changes,
    check_changes,
    check_owner,
    check_owner_key,
    check_seconds,
    check_session_id,
    made_id,
    owner_of,
)
from ..errors import InvalidOption, SerializationError, SessionTooLarge, StoreUnavailable
from ..ids import new_session_id, redact
from ..lifetimes import Loaded, SessionInfo, check_device, check_grace, check_max_sessions
from ..protocol import Stats
from ..serializers import (
    Serializer,
    dumps_session,
    get_serializer,
    loads_session,
    require_safe_serializer,
)
from ..size import parse_size
from . import record
from .record import Alias, Header

__all__ = [
    "DEFAULT_MAX_SESSION_BYTES",
    "FAILS_CLOSED",
    "SCAN_COUNT",
    "SEPARATOR",
    "Command",
    "OnUnavailable",
    "RedisCore",
    "RedisOptions",
    "Request",
]

log = logging.getLogger("lembro")

OnUnavailable = Literal["raise", "empty"]
Command = tuple[Any, ...]
# What a step asks of the I/O: ("send", [command, ...]) -> the replies, in one round trip;
# ("scan", "string" | "zset") -> the keys of that type matching the prefix;
# ("config", None) -> CONFIG GET maxmemory's reply.
Request = tuple[str, Any]
T = TypeVar("T")
_C = TypeVar("_C", bound="RedisCore")
Steps = Generator[Request, Any, T]

# A prefix ends with the separator and a session id never holds one, so the keys of
# "app:" (app:<id>) and of "app:admin:" (app:admin:<id>) cannot be taken for each other.
SEPARATOR = ":"
# The largest serialized session a store sends by default, in bytes; a session over it
# is refused with SessionTooLarge before anything is sent.
DEFAULT_MAX_SESSION_BYTES = 4 * 1024 * 1024
# Redis refuses a value over proto-max-bulk-len (512 MiB unless configured) by closing
# the connection, which a client cannot tell from an outage: no larger bound is accepted.
_MAX_BULK = 512 * 1024 * 1024
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
# are gone (min-replicas-to-write), a server that answers but does not speak Redis.
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
    "InvalidResponse",
)
# Every other error a client library raises: a command Redis refused (ACLs, a disabled
# or renamed command), a cluster client that found no node. Never raised raw.
_CLIENT_ERROR_NAMES = (
    "RedisError",
    "ValkeyError",
    "RedisClusterException",
    "ValkeyClusterException",
)
_CLIENT_LIBRARIES = ("redis", "valkey")
_URL_FORMS = "a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
# Operations that must not report success they did not have: a logout whose record may
# still be live, a clear that may have left sessions, numbers that would be made up.
_FAIL_CLOSED = frozenset(
    {"destroy", "clear", "stats", "destroy_sessions_of", "destroy_session_of", "rename"}
)
_READS = frozenset(
    {
        "get",
        "load",
        "renew",
        "touch",
        "all",
        "len",
        "contains",
        "sessions_of",
        "session_info",
        "time_left",
    }
)
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
# Runs the command ARGV[1] on KEYS[1] with the rest of ARGV, unless the key holds
# something other than a string (another app's hash, list, set...): then -1, and the key
# is left as it was. A write, touch or destroy of a session is this script, so a store
# never overwrites, moves the expiry of, or deletes a key that is not a session.
_GUARDED = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'string' then
  return -1
end
return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))
"""
# What the guard answers for a key that is not a session.
_FOREIGN = -1
# A destroy_sessions_of in progress marks its owner's set with a member that is no
# session id (it holds the separator), scored minus the marker's deadline in ms (Redis's
# clock): markers sort below every session, and one past its deadline (a call that died
# half way) is dropped by the next look. A rename of one of the set's sessions to a
# session of the same owner is refused while a marker is live: the logout everywhere
# read the set before the new id joined it, and would leave the new id alive.
_ENDING_MARK = "ending:"
# Seconds a marker outlives the round trips of the call that set it would take.
_ENDING_GRACE = 10.0
_LIVE_MARKER = """
local function ending(index)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', index, '(' .. string.format('%d', -now), '(0')
  return redis.call('ZCOUNT', index, '-inf', '(0') > 0
end
"""
# Marks KEYS[1] (an owner's set) with the marker ARGV[1] for ARGV[2] ms, if the set exists.
_MARK_ENDING = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', -(now + tonumber(ARGV[2]))), ARGV[1])
return 1
"""
# Moves session KEYS[1] to KEYS[2] on one server, in one step: 0 (nothing changed) when
# KEYS[1] holds no session (absent, or past its absolute end; {alias} for an alias, left
# for the caller to follow), or when ARGV[5]
# says the new session joins KEYS[3] (its owner's set) and a logout everywhere of that
# owner, which counts KEYS[1] among its sessions, is under way; -1 when KEYS[1] and -2
# when KEYS[2] is another app's key; -3 when ARGV[9] is the SHA-1 of the value expected
# in KEYS[1] and another write landed since it was read. The owner's set is joined first
# and the old record deleted last, so that a write Redis refuses (a full Redis) changes
# no session; with ARGV[6], KEYS[4] is the set the old session leaves. The new header is
# made from the old one and ARGV[11..17] (see record.NEXT); with ARGV[10] ms of grace,
# the old id becomes an alias of the new one instead of being deleted.
_RENAME = (
    record.PRELUDE
    + record.NEXT
    + _LIVE_MARKER
    + """
local kind = kind_of(KEYS[1])
if kind == 'none' then
  return 0
elseif kind ~= 'string' then
  return -1
end
kind = kind_of(KEYS[2])
if kind ~= 'none' and kind ~= 'string' then
  return -2
end
local v = redis.call('GET', KEYS[1])
if is_alias(v) then
  return {v}
end
if ARGV[9] ~= '' and redis.sha1hex(v) ~= ARGV[9] then
  return -3
end
local now = now_ms()
local old = parse(v)
if over(old, now) then
  redis.call('DEL', KEYS[1])
  return 0
end
local owned = ARGV[5] == '1'
if owned then
  if ending(KEYS[3]) and redis.call('ZSCORE', KEYS[3], ARGV[7]) then
    return 0
  end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[8])
  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
  end
end
local h = next_header(old, now, 11)
local px = cap(h, tonumber(ARGV[2]), now)
redis.call('SET', KEYS[2], stamp(h) .. ARGV[1], 'PX', px)
retire(KEYS[1], ARGV[8], tonumber(ARGV[10]), px, h, now, ARGV[11])
if owned then
  redis.call('ZREM', KEYS[3], ARGV[7])
end
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[4], ARGV[7])
end
return 1
"""
)
# On a cluster, the rename's step on the new session's owner set (KEYS[1]): 0 when a
# logout everywhere that counts ARGV[1] (the old id) is under way; else ARGV[2] (the new
# id) joins with score ARGV[3], the set kept alive ARGV[4] ms, and 1.
_CLAIM = (
    _LIVE_MARKER
    + """
if ending(KEYS[1]) and redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""
)
_CHANGED = -2
# record.PEEK's answer for a string with neither a session's header nor an alias's.
_HEADERLESS = 3
# How many aliases a read follows (an id renewed again within its former id's grace).
_HOPS = 4
# ms after which load writes a session's last_seen again: most reads write nothing.
_SEEN_EVERY_MS = 60_000
# How many times an update reads, changes and writes before it gives up: each failed try
# means another write of the session landed in between, so every try lets one through.
_UPDATE_TRIES = 16
# The empty answer of an operation that raises during an outage whatever on_unavailable
# says, so never returns one.
FAILS_CLOSED: Any = None
# WAIT counts the replicas that have every write of the connection it is sent on, so it
# must follow the deletions on their own connection: a cluster client sends it elsewhere.
_WAIT_ON_ONE = "0 on a Redis Cluster: WAIT needs one primary (one server or Sentinel)"
# What Sentinel publishes when a service's primary changes:
# "<service> <old ip> <old port> <new ip> <new port>".
_SWITCH_CHANNEL = "+switch-master"
# How redis-py's and valkey-py's Sentinel connections report a READONLY reply.
_DEMOTED_TEXT = "previous master is now a slave"
Address = tuple[str, int]


class _Primary:
    """What a store knows of its primary's moves: how many it has seen (a step in flight
    across one is sent again, since it may have reached the former primary), each one
    logged once as a WARNING."""

    __slots__ = ("_lock", "_where", "moves")

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self.moves = 0

    def moved(self, before: object, after: object, why: str) -> None:
        with self._lock:
            self.moves += 1
        log.warning(
            "Redis at %s: the primary moved from %s to %s (%s); connections to the "
            "former primary are dropped",
            self._where,
            _address(before),
            _address(after),
            why,
        )


def _address(address: object) -> str:
    if isinstance(address, (tuple, list)) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return "?"


def _sentinel_pool(client: object) -> Any:
    """The connection pool of a Sentinel ``master_for(...)`` client, or ``None``."""
    pool = getattr(client, "connection_pool", None)
    needs = ("get_master_address", "sentinel_manager", "service_name")
    if pool is None or not all(hasattr(pool, name) for name in needs):
        return None
    return pool if getattr(pool, "is_master", False) else None


def _announced_switch(message: object, service: str) -> Address | None:
    """The new primary's address in a ``+switch-master`` message of Sentinel's pub/sub
    for ``service``; ``None`` for any other message."""
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    data = message.get("data")
    if not isinstance(data, (bytes, str)):
        return None
    parts = _as_bytes(data).decode(errors="replace").split()
    if len(parts) != 5 or parts[0] != service or not parts[4].isdigit():
        return None
    return parts[3], int(parts[4])


class _Unknown:
    """The owner of a session this store has not seen lately."""


_UNKNOWN = _Unknown()


def _advance(steps: Steps[T], reply: Any = None, error: Exception | None = None) -> Any:
    """``steps`` moved on by ``reply`` (or ``error`` thrown in): its next request, or
    ``_Finished`` holding what it returned."""
    try:
        return steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as done:
        return _Finished(done.value)


@dataclass(frozen=True)
class _Finished:
    value: Any


def _is_primary(role: object) -> bool:
    """Whether a ROLE reply is a primary's (``master``, offset, replicas)."""
    return isinstance(role, (list, tuple)) and bool(role) and role[0] in (b"master", "master")


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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _answers(alias: Alias, now_ms: int, hops: int) -> bool | None:
    """Whether an operation that followed ``hops`` aliases already follows ``alias``
    (``True``), meets a stolen cookie (``False``: its grace is over), or finds nothing
    (``None``: a sign-in since, which forgets the ids the session had before)."""
    if hops and alias.sign_in:
        return None
    return now_ms < alias.grace_end


def _alias(value: object) -> Alias | None:
    """The alias a stored value is, or ``None``."""
    if not isinstance(value, (bytes, str)):
        return None
    parsed = record.split(_as_bytes(value))
    return parsed if isinstance(parsed, Alias) else None


def _as_bytes(value: bytes | str) -> bytes:
    # The store's own clients never decode replies; a given client is checked for it.
    return value if isinstance(value, bytes) else value.encode()


def _guarded(*command: Any) -> Command:
    """``command`` (its second item the key) run only on a key that is not another app's."""
    name, key, *args = command
    return ("EVAL", _GUARDED, 1, key, name, *args)


def _wrong_type(error: BaseException) -> bool:
    """Whether ``error`` is Redis's refusal of a command on a key of another type."""
    return str(error).startswith("WRONGTYPE")


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


def _sentinel_nodes(url: str, hosts: str) -> list[tuple[str, int]]:
    """``host[:port],...`` (IPv6 hosts in brackets) as addresses; the port defaults to
    26379, Sentinel's own."""
    nodes = []
    for node in hosts.split(","):
        if node.startswith("["):
            host, _, rest = node[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = node.partition(":")
        if not port:
            port = "26379"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidOption(
                "url", url, "redis+sentinel://host[:port][,host[:port]...]/service_name[/db]"
            )
        nodes.append((host or "127.0.0.1", int(port)))
    return nodes


def _maybe_seconds(value: object, name: str) -> float | None:
    return None if value is None else check_seconds(value, name)


@dataclass(frozen=True)
class RedisOptions:
    """Everything a Redis store is built from but its client, checked once.

    ``RedisStore(url, **options)`` and ``AsyncRedisStore(...)`` build one;
    ``store.options`` is it, and ``as_async()`` hands it whole to the twin (the
    ``serializer`` object itself, ``trust_pickle`` and every limit included). Seconds are
    floats; ``max_session_bytes`` is bytes (an int, or a size such as ``"4M"``), at most
    512 MiB, Redis's default ``proto-max-bulk-len``. ``wait_replicas`` (0: none) is how
    many replicas must confirm a logout (``destroy``, ``destroy_sessions_of``, ``clear``)
    within ``wait_timeout`` seconds (less than ``socket_timeout``) before it is reported
    done. ``absolute_ttl`` (seconds, ``None``: none) ends a session that long after its
    sign-in whatever its use; ``renew_every`` (seconds, ``None``: never) moves a session
    used that long after its id was issued to a fresh id on its next ``load``, the old
    id answering for ``renew_grace`` seconds more; ``max_sessions_per_user`` (needs
    ``owner_key``) ends an owner's oldest sessions beyond that many. Raises
    ``InvalidOption`` (or ``InvalidSize``) for a value outside what it accepts.
    """

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "lembro:"
    ttl: float = 86400.0
    serializer: str | Serializer = "msgpack"
    socket_timeout: float = 2.0
    connect_timeout: float = 2.0
    on_unavailable: OnUnavailable = "raise"
    trust_pickle: bool = False
    owner_key: str | None = None
    max_session_bytes: int | str = DEFAULT_MAX_SESSION_BYTES
    wait_replicas: int = 0
    wait_timeout: float = 0.1
    absolute_ttl: float | None = None
    renew_every: float | None = None
    renew_grace: float = 10.0
    max_sessions_per_user: int | None = None
    _resolved: Serializer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise InvalidOption("url", self.url, _URL_FORMS)
        if not isinstance(self.prefix, str) or not self.prefix.endswith(SEPARATOR):
            # An empty prefix would make clear() delete every key in the database; one
            # without the separator could be the start of another store's prefix.
            raise InvalidOption(
                "prefix", self.prefix, f"a str ending in {SEPARATOR!r}, like 'lembro:'"
            )
        if self.on_unavailable not in ("raise", "empty"):
            raise InvalidOption("on_unavailable", self.on_unavailable, "'raise' or 'empty'")
        if not isinstance(self.trust_pickle, bool):
            raise InvalidOption("trust_pickle", self.trust_pickle, "True or False")
        limit = parse_size(self.max_session_bytes)
        if limit > _MAX_BULK:
            raise InvalidOption(
                "max_session_bytes",
                self.max_session_bytes,
                "at most 512 MiB, the largest value Redis takes (proto-max-bulk-len)",
            )
        if (
            isinstance(self.wait_replicas, bool)
            or not isinstance(self.wait_replicas, int)
            or self.wait_replicas < 0
        ):
            raise InvalidOption(
                "wait_replicas", self.wait_replicas, "a number of replicas, 0 or more (an int)"
            )
        wait_timeout = check_seconds(self.wait_timeout, "wait_timeout")
        if wait_timeout >= check_seconds(self.socket_timeout, "socket_timeout"):
            # A WAIT that outlasts the socket would cost every unconfirmed logout a
            # dropped connection as well as the error.
            raise InvalidOption(
                "wait_timeout", self.wait_timeout, "seconds, less than socket_timeout"
            )
        resolved = get_serializer(self.serializer)
        require_safe_serializer(resolved, "a Redis server", self.trust_pickle)
        limit_per_user = check_max_sessions(
            self.max_sessions_per_user, check_owner_key(self.owner_key)
        )
        grace = check_grace(self.renew_grace, "renew_grace")
        checked = {
            "absolute_ttl": _maybe_seconds(self.absolute_ttl, "absolute_ttl"),
            "renew_every": _maybe_seconds(self.renew_every, "renew_every"),
            "renew_grace": grace,
            "max_sessions_per_user": limit_per_user,
            "ttl": check_seconds(self.ttl, "ttl"),
            "socket_timeout": check_seconds(self.socket_timeout, "socket_timeout"),
            "connect_timeout": check_seconds(self.connect_timeout, "connect_timeout"),
            "owner_key": check_owner_key(self.owner_key),
            "max_session_bytes": limit,
            "wait_timeout": wait_timeout,
            "_resolved": resolved,
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)


class _Call:
    """Wraps one store operation's I/O: notes success, and turns a client's error into
    ``StoreUnavailable`` or, for an outage where ``on_unavailable="empty"`` allows it, a
    log line and the ``with`` block skipped (the caller then returns its empty answer)."""

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
        if isinstance(error, core._unavailable_errors):
            core._unavailable(self._op, self._sid, error)
            return True
        if isinstance(error, core._client_errors):
            raise StoreUnavailable(f"Redis at {core._where} refused {self._op}: {error}") from error
        return False


class _Counts:
    """What this process did through one store (and its async twin, which shares it);
    guarded by the store's ``_lock``. See :class:`~lembro.protocol.Stats`."""

    __slots__ = (
        "created",
        "hits",
        "logouts",
        "logouts_everywhere",
        "misses",
        "regenerates",
        "unavailable",
    )

    def __init__(self) -> None:
        self.created = self.hits = self.misses = self.unavailable = 0
        self.logouts = self.regenerates = self.logouts_everywhere = 0


class RedisCore:
    """Options, keys, the operations' steps, decoding, counters and outage handling for
    both stores.

    A subclass supplies the I/O: its ``_run`` drives a ``_*_steps`` generator, sending
    each :data:`Request` through its client inside ``with self._call(op, sid):``.
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
        max_session_bytes: int | str = DEFAULT_MAX_SESSION_BYTES,
        wait_replicas: int = 0,
        wait_timeout: float = 0.1,
        absolute_ttl: float | None = None,
        renew_every: float | None = None,
        renew_grace: float = 10.0,
        max_sessions_per_user: int | None = None,
    ) -> None:
        options = RedisOptions(
            url=url,
            prefix=prefix,
            ttl=ttl,
            serializer=serializer,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            on_unavailable=on_unavailable,
            trust_pickle=trust_pickle,
            owner_key=owner_key,
            max_session_bytes=max_session_bytes,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            absolute_ttl=absolute_ttl,
            renew_every=renew_every,
            renew_grace=renew_grace,
            max_sessions_per_user=max_sessions_per_user,
        )
        self._setup(options, client)

    @classmethod
    def from_options(cls: type[_C], options: RedisOptions, *, client: Any = None) -> _C:
        """A store built from ``options`` (a :class:`RedisOptions`), on ``client`` if given."""
        if not isinstance(options, RedisOptions):
            raise InvalidOption("options", options, "a lembro.redis.RedisOptions")
        store = cls.__new__(cls)
        store._setup(options, client)
        return store

    def _setup(self, options: RedisOptions, client: Any) -> None:
        self.options = options
        # session id -> its owner's key (None: no owner), for the sessions seen lately;
        # oldest first. Guarded by _lock.
        self._owners: dict[str, str | None] = {}
        self._serializer = options._resolved
        self._prefix_bytes = options.prefix.encode()
        self._pattern = _glob_escape(options.prefix) + "*"
        self._lock = threading.Lock()  # guards the counters and the log throttles only
        self._counts = _Counts()
        self._outage = False
        self._last_warning = -math.inf
        self._suppressed = 0
        self._last_foreign = -math.inf
        self._owns_client = client is None
        # Clients the store opened besides ``_client`` (a Sentinel's), closed with it.
        self._helpers: list[Any] = []
        if client is None:
            if options.wait_replicas and "+cluster" in options.url.partition("://")[0]:
                raise InvalidOption("wait_replicas", options.wait_replicas, _WAIT_ON_ONE)
            client = self._connect(options.url, self._asynchronous)
        else:
            self._check_client(client, self._asynchronous)
        self._client: Any = client
        # A cluster client can say which slot a key hashes to; multi-key commands are
        # then split per slot.
        self._keyslot = getattr(client, "keyslot", None)
        if options.wait_replicas and self._keyslot is not None:
            raise InvalidOption("wait_replicas", options.wait_replicas, _WAIT_ON_ONE)
        self._where = _describe(client)
        self._unavailable_errors = _library_errors(_UNAVAILABLE_NAMES)
        self._client_errors = _library_errors(_CLIENT_ERROR_NAMES)
        self._refused = _library_errors(("ResponseError",))
        self._read_only = _library_errors(("ReadOnlyError",))
        # The pool of a Sentinel master_for(...) client: the store follows the primary
        # Sentinel names, listening for its announcements once the store is first used.
        self._watched = _sentinel_pool(client)
        self._primary = _Primary(self._where)
        # The shell's listener for Sentinel's announcements (a thread, or a task), once
        # started; none after close().
        self._listener: Any = None
        self._listens = self._watched is not None

    # ---- the options --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL the store connects to (as given, with any credentials)."""
        return self.options.url

    @property
    def prefix(self) -> str:
        """The prefix of every key this store owns."""
        return self.options.prefix

    @property
    def ttl(self) -> float:
        """The default lifetime of a session, in seconds."""
        return self.options.ttl

    @property
    def socket_timeout(self) -> float:
        """Seconds a command may wait for Redis's reply."""
        return self.options.socket_timeout

    @property
    def connect_timeout(self) -> float:
        """Seconds a connection may take to open."""
        return self.options.connect_timeout

    @property
    def on_unavailable(self) -> OnUnavailable:
        """``"raise"`` or ``"empty"``: what a call does while Redis does not answer."""
        return self.options.on_unavailable

    @property
    def owner_key(self) -> str | None:
        """The session field that names the signed-in user, or ``None``."""
        return self.options.owner_key

    @property
    def max_session_bytes(self) -> int:
        """The largest serialized session this store sends, in bytes."""
        limit = self.options.max_session_bytes
        assert isinstance(limit, int)  # parsed by RedisOptions
        return limit

    @property
    def wait_replicas(self) -> int:
        """How many replicas must confirm a logout before it is reported done (0: none)."""
        return self.options.wait_replicas

    @property
    def wait_timeout(self) -> float:
        """Seconds a logout waits for ``wait_replicas`` replicas to confirm it."""
        return self.options.wait_timeout

    @property
    def absolute_ttl(self) -> float | None:
        """Seconds a session lives after its sign-in at most, whatever its use (``None``:
        no bound)."""
        return self.options.absolute_ttl

    @property
    def renew_every(self) -> float | None:
        """Seconds after which ``load`` moves a session to a fresh id (``None``: never)."""
        return self.options.renew_every

    @property
    def renew_grace(self) -> float:
        """Seconds a renewed session's former id still answers as the new one."""
        return self.options.renew_grace

    @property
    def max_sessions_per_user(self) -> int | None:
        """How many sessions an owner may have at once (``None``: any number)."""
        return self.options.max_sessions_per_user

    # ---- the client ---------------------------------------------------------------------

    def _connect(self, url: str, asynchronous: bool) -> object:
        """A client for ``url``: redis://, rediss://, unix://, redis+cluster://,
        rediss+cluster://, or redis+sentinel://host[:port][,host[:port]...]/service[/db]."""
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
            # A cluster client retries a timeout as well as a lost connection, whatever
            # the retry's own errors say: no retry, so a hung node costs one
            # socket_timeout; a call that meets a restarted node fails once, and the next
            # one finds the node again.
            options["retry"] = retry_module.Retry(lib.backoff.NoBackoff(), 0)
            try:  # a sync cluster client asks a node for the slot map right away
                return cluster.from_url(scheme.split("+")[0] + "://" + rest, **options)
            except (lib.exceptions.RedisClusterException, lib.exceptions.RedisError) as e:
                raise StoreUnavailable(f"no Redis Cluster node answers: {e}") from e
        if scheme == "redis+sentinel":
            return self._sentinel_master(flavour, rest, options)
        if scheme not in ("redis", "rediss", "unix"):
            raise InvalidOption("url", url, _URL_FORMS)
        try:
            return flavour.Redis.from_url(url, **options)
        except ValueError as e:  # a port or db that is not a number, an unknown option
            raise InvalidOption("url", url, f"{_URL_FORMS} ({e})") from e

    def _sentinel_master(self, flavour: ModuleType, rest: str, options: dict[str, Any]) -> object:
        forms = "redis+sentinel://host[:port][,host[:port]...]/service_name[/db]"
        parts = urlsplit("redis+sentinel://" + rest)
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or not parts.netloc:
            raise InvalidOption("url", self.url, forms)
        if len(path) > 1 and not path[1].isdigit():
            raise InvalidOption("url", self.url, forms)
        credentials, _, hosts = parts.netloc.rpartition("@")
        user, _, password = credentials.partition(":")
        nodes = _sentinel_nodes(self.url, hosts)
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

    # ---- keys ---------------------------------------------------------------------------

    def _key(self, sid: str) -> str:
        return self.prefix + sid

    def _lifetime(self, ttl: float | None) -> float:
        return self.ttl if ttl is None else check_seconds(ttl, "ttl")

    def _encode(self, sid: str, data: dict[str, Any], ttl: float | None) -> tuple[str, bytes, int]:
        """A write's key, serialized session and lifetime in ms; raises ``InvalidOption``,
        ``SerializationError`` or ``SessionTooLarge`` before anything is sent."""
        check_session_id(sid)
        if SEPARATOR in sid:
            raise InvalidOption("session id", sid, f"a str without {SEPARATOR!r}")
        lifetime = self._lifetime(ttl)
        blob = dumps_session(self._serializer, data)
        if len(blob) > self.max_session_bytes:
            raise SessionTooLarge(len(blob), self.max_session_bytes)
        return self._key(sid), blob, _ttl_ms(lifetime)

    def _own_keys(self, keys: Iterable[bytes]) -> list[bytes]:
        """The session keys of this store among SCAN's matches, each once (SCAN may repeat
        a key, and its pattern also matches a longer prefix's keys, which hold a
        separator)."""
        start = len(self._prefix_bytes)
        separator = SEPARATOR.encode()
        own = []
        for key in dict.fromkeys(keys):
            rest = key[start:]
            if rest and separator not in rest:
                own.append(key)
        return own

    def _owner_keys(self, keys: Iterable[bytes]) -> list[bytes]:
        """This store's owner sets among SCAN's matches: ``owner:`` + a quoted owner + the
        separator, nothing more. ``app:owner:`` alone is no owner set of ``app:`` (its
        ``owner:`` is the mark's, with no owner after it): it is the owner set of the
        user named ``owner`` in the store on ``app:`` (``app:`` + ``owner:`` + ``owner``
        + ``:``) seen from a store on ``app:owner:``."""
        start = len(self._prefix_bytes)
        separator = SEPARATOR.encode()
        mark = _OWNER_MARK.encode()
        own = []
        for key in dict.fromkeys(keys):
            rest = key[start:]
            name = rest[len(mark) :]
            if rest.startswith(mark) and name.endswith(separator) and separator not in name[:-1]:
                own.append(key)
        return own

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
        if self.owner_key is None:
            return None
        with self._lock:
            return self._owners.get(sid, _UNKNOWN)

    def _remember(self, sid: str, index: str | None) -> None:
        if self.owner_key is None:
            return
        with self._lock:
            self._owners.pop(sid, None)
            self._owners[sid] = index
            if len(self._owners) > _RECENT_OWNERS:
                del self._owners[next(iter(self._owners))]

    def _forget(self, *sids: str) -> None:
        if self.owner_key is None:
            return
        with self._lock:
            for sid in sids:
                self._owners.pop(sid, None)

    def _index_of(self, data: dict[str, Any]) -> str | None:
        """The owner's key for session ``data`` (``None`` on a store without
        ``owner_key``); raises ``SerializationError`` for an owner field of the wrong
        type."""
        if self.owner_key is None:
            return None
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

    # ---- the operations, each written once (see the module) -----------------------------

    @property
    def _absolute_ms(self) -> int:
        """The absolute lifetime as a script's argument: ms, 0 for none."""
        absolute = self.absolute_ttl
        return 0 if absolute is None else _ttl_ms(absolute)

    def _device(self, device: object) -> tuple[str, ...]:
        """``device`` as a script's arguments: ``"1"`` and its four fields, or ``"0"`` and
        empty ones (keep the device known); raises ``InvalidOption`` for anything else."""
        checked = check_device(device)
        if checked is None:
            return ("0", "-1", "", "-1", "")
        il, ip, ul, ua = record.device_args(checked.ip, checked.user_agent)
        return ("1", il, ip.decode(), ul, ua.decode())

    def _get_steps(self, sid: object) -> Steps[dict[str, Any] | None]:
        """GET (with ``owner_key``, pipelined with the ZADD XX that counts the use when
        this store knows the owner); an alias in its grace is followed (one GET more), one
        after it is a stolen cookie (see :meth:`_stolen_steps`)."""
        if not _is_sid(sid):
            return self._got(None)
        for hop in range(_HOPS):
            key = self._key(sid)
            index = self._recall(sid)
            commands: list[Command] = [("GET", key)]
            if isinstance(index, str):
                commands.append(("ZADD", index, "XX", time.time(), sid))
            try:
                replies = yield ("send", commands)
            except self._refused as error:
                if not _wrong_type(error):
                    raise
                self._foreign([key])
                return self._got(None)
            blob = replies[0]
            alias = _alias(blob)
            if alias is not None:
                verdict = _answers(alias, _now_ms(), hop)
                if verdict:
                    sid = alias.target
                    continue
                if verdict is False:
                    yield from self._stolen_steps(sid)
                return self._got(None)
            data = self._read(key, blob)
            if data is None:
                self._forget(sid)
            else:
                self._remember(sid, self._stored_index(data))
            return data
        return self._got(None)

    def _load_steps(
        self, sid: object, new_id: Callable[[], str] | None = None
    ) -> Steps[Loaded | None]:
        """The read a request makes (see :meth:`RedisStore.load`): one script on the
        session's key (``record.LOAD``: the value, Redis's time, last_seen written when a
        minute old), with the owner's ZADD XX in the same round trip; an alias in its
        grace followed, one after it a stolen cookie; a value written without a header
        given one (one round trip more, once); a renewal due moved to a fresh id
        (``new_id()``, default ``new_session_id()``: a rename, one round trip more on one
        server)."""
        if not _is_sid(sid):
            return self._missed()
        renewals = hops = 0
        for _ in range(_HOPS + 2):
            key = self._key(sid)
            index = self._recall(sid)
            commands: list[Command] = [("EVAL", record.LOAD, 1, key, _SEEN_EVERY_MS)]
            if isinstance(index, str):
                commands.append(("ZADD", index, "XX", time.time(), sid))
            reply = (yield ("send", commands))[0]
            if reply is None or reply == _FOREIGN:
                if reply == _FOREIGN:
                    self._foreign([key])
                self._forget(sid)
                return self._missed()
            value, now, remaining = _as_bytes(reply[0]), int(reply[1]), int(reply[2])
            parsed = record.split(value)
            if isinstance(parsed, Alias):
                verdict = _answers(parsed, now, hops)
                if verdict:
                    hops += 1
                    sid = parsed.target
                    continue
                if verdict is False:
                    yield from self._stolen_steps(sid)
                return self._missed()
            header, blob = parsed
            data = self._read(key, blob, counted=False)
            if data is None:
                self._forget(sid)
                return self._missed()
            if header is None:
                digest = hashlib.sha1(value, usedforsecurity=False).hexdigest()
                stamp = ("EVAL", record.STAMP, 1, key, digest, self._absolute_ms)
                (stamped,) = yield ("send", [stamp])
                if stamped is None:  # written meanwhile: read it again
                    continue
                value, now = _as_bytes(stamped[0]), int(stamped[1])
                remaining = int(stamped[2])
                parsed = record.split(value)
                assert not isinstance(parsed, Alias)
                header = parsed[0]
            owners = self._stored_index(data)
            self._remember(sid, owners)
            every = self.renew_every
            if (
                every is not None
                and header is not None
                and now - header.renewed >= every * 1000
                and renewals < 2
            ):
                renewals += 1
                new = new_session_id() if new_id is None else made_id(new_id, sid)
                if not _is_sid(new):
                    expected = f"a callable returning ids without {SEPARATOR!r}"
                    raise InvalidOption("new_id", new, expected)
                digest = hashlib.sha1(value, usedforsecurity=False).hexdigest()
                moved = yield from self._move_steps(
                    sid,
                    new,
                    blob,
                    # The new id keeps the session's expiry: a renewal is no use of it.
                    remaining if remaining > 0 else _ttl_ms(self.ttl),
                    owners,
                    reset=False,
                    grace_ms=round(self.renew_grace * 1000),
                    device=self._device(None),
                    expect=digest,
                    old_value=value,
                )
                if moved != 1:  # another request renewed it, or wrote it: read again
                    continue
                self._count("created", "regenerates")
                sid = new
            left = None
            if header is not None and header.absolute_end:
                left = max(0.0, (header.absolute_end - now) / 1000)
            self._got(data)
            return Loaded(sid, data, left)
        return self._missed()

    def _stolen_steps(self, replaced: str) -> Steps[None]:
        """An id replaced longer ago than its grace was presented: the session it was
        replaced by is ended, the id's alias dropped (a later read of it finds nothing),
        and, when a session was ended, one WARNING says so (see :meth:`_stolen`)."""
        ended, data, _ = yield from self._end_steps(replaced)
        if ended:
            self._count("logouts")
            self._stolen(data)

    def _stolen(self, data: dict[str, Any] | None) -> None:
        """One WARNING for a session ended because an id it had before a renewal was
        presented after its grace: its owner if any, never an id (a log must not hold a
        usable one), as MemoryStore logs one per session it ends so."""
        owner = None
        if data is not None and self.owner_key is not None:
            with contextlib.suppress(SerializationError):
                owner = owner_of(data, self.owner_key)
        log.warning(
            "Redis at %s: a session id replaced by a renewal was presented after its grace "
            "(a stolen cookie, or a client that kept a stale one); the session that "
            "replaced it is ended%s",
            self._where,
            f" (owner {owner!r})" if owner is not None else "",
        )

    def _end_steps(self, sid: str) -> Steps[tuple[bool, dict[str, Any] | None, bool]]:
        """End session ``sid``, following aliases to the session they name (each key in
        one script, so a renewal racing it is either before, and followed, or after, and
        finds nothing), then drop the aliases passed: whether a session was ended, its
        data when reached through an alias, and whether ``sid`` was an alias past its
        grace (a stolen cookie). One round trip for a session, with its owner's ZREM
        and, with ``wait_replicas``, a WAIT."""
        aliases: list[tuple[str, bytes]] = []
        ended, data, stale = False, None, False
        target = sid
        for _ in range(_HOPS):
            key = self._key(target)
            # A session's value comes back only when reached through an alias: for the
            # owner its WARNING names, if that alias's grace is over.
            want = int(bool(aliases))
            commands: list[Command] = [("EVAL", record.DESTROY, 1, key, want)]
            index = self._recall(target)
            self._forget(target)
            if isinstance(index, str):
                commands.append(("ZREM", index, target))
            reply = self._confirmed((yield ("send", self._durable(commands))))[0]
            if isinstance(reply, list):
                value = _as_bytes(reply[1])
                if int(reply[0]) == 2:
                    alias = record.split(value)
                    assert isinstance(alias, Alias)
                    if aliases and alias.sign_in:  # a sign-in since: not that session's
                        break
                    if not aliases:
                        stale = _now_ms() >= alias.grace_end
                    aliases.append((key, value))
                    target = alias.target
                    continue
                ended, data = True, self._decode(value)
                owners = self._stored_index(data)
                if owners is not None and owners != index:
                    yield ("send", [("ZREM", owners, target)])
            elif reply == _FOREIGN:
                self._foreign([key])
            else:
                ended = bool(int(reply))
            break
        if aliases:
            drops: list[Command] = [("EVAL", record.DROP, 1, k, v) for k, v in aliases]
            self._confirmed((yield ("send", self._durable(drops))))
        return ended, data, stale

    def _renew_steps(self, sid: object, ttl: float | None) -> Steps[dict[str, Any] | None]:
        """``record.GETEX``: the session, its expiry moved in the same step (see
        :meth:`_extend_steps`); a hit or a miss, as a get."""
        lifetime = self._lifetime(ttl)
        if not _is_sid(sid):
            return self._got(None)
        _, data = yield from self._extend_steps(sid, _ttl_ms(lifetime), counted=True)
        return data

    def _extend_steps(
        self, sid: str, lifetime_ms: int, counted: bool
    ) -> Steps[tuple[bool, dict[str, Any] | None]]:
        """``record.GETEX``: ``sid``'s session read and its lifetime moved (never past its
        absolute end) in one step, so a write racing it is never undone; with
        ``owner_key``, the owner's set joined in the same round trip when this store
        knows the owner, or in a second one once the session named it. An alias in its
        grace is followed; one after it is a stolen cookie when ``counted`` (a read).
        Whether the key was there, and the session (``None`` when absent or not this
        store's)."""
        for hop in range(_HOPS):
            key = self._key(sid)
            index = self._recall(sid)
            commands = self._join(index, sid, lifetime_ms) if isinstance(index, str) else []
            at = len(commands)
            commands.append(("EVAL", record.GETEX, 1, key, lifetime_ms))
            reply = (yield ("send", commands))[at]
            if reply == _FOREIGN:
                self._foreign([key])
                return False, self._got(None) if counted else None
            blob = None if reply is None else _as_bytes(reply[0])
            alias = _alias(blob)
            if alias is not None:
                verdict = _answers(alias, int(reply[1]), hop)
                if verdict:
                    sid = alias.target
                    continue
                if counted:
                    if verdict is False:
                        yield from self._stolen_steps(sid)
                    self._got(None)
                return False, None
            data = self._read(key, blob, counted)
            if self.owner_key is not None:
                found = self._stored_index(data)
                if found is not None and found != index:
                    yield ("send", self._join(found, sid, lifetime_ms))
                if data is None:
                    self._forget(sid)
                else:
                    self._remember(sid, found)
            return blob is not None, data
        return False, self._got(None) if counted else None

    def _write_steps(
        self,
        sid: str,
        data: dict[str, Any],
        ttl: float | None,
        *flags: str,
        device: object = None,
    ) -> Steps[bool]:
        """``record.PUT`` (``flags``: XX for a replace): the session written under the
        header it has (a new one, with ``device``, when it is created), for its lifetime
        capped at its absolute end, in a script that never overwrites another app's key.
        With ``owner_key``, in one pipeline: the session joins its owner's set, is
        written, then leaves the set of the owner it had (when this store knows it;
        otherwise reads prune it from there). In that order, so that on one server a
        write cut short leaves at worst a stale member, never a session missing from its
        owner's set. An alias in its grace is written through to its session, if that
        session is still there (a replace: a logout meanwhile is never undone); one after
        it is left alone (nothing written). With ``max_sessions_per_user``, a write that
        gives its owner one session more then ends the owner's oldest beyond the limit.
        Raises ``InvalidOption``, ``SerializationError`` or ``SessionTooLarge`` before
        anything is sent."""
        key, blob, lifetime_ms = self._encode(sid, data, ttl)
        index = self._index_of(data)
        device_args = self._device(device)[1:]
        mode = "XX" if flags else ""
        for hop in range(_HOPS):
            commands = self._join(index, sid, lifetime_ms) if index is not None else []
            at = len(commands)
            absolute = self._absolute_ms
            commands.append(
                ("EVAL", record.PUT, 1, key, blob, lifetime_ms, mode, absolute, *device_args)
            )
            before = self._recall(sid)
            if isinstance(before, str) and before != index:
                commands.append(("ZREM", before, sid))
            self._forget(sid)  # until the write is known to have landed
            replies = yield ("send", commands)
            reply = replies[at]
            if isinstance(reply, list):
                alias = _alias(reply[0])
                if alias is not None and _answers(alias, int(reply[1]), hop):
                    sid = alias.target
                    key = self._key(sid)
                    # Only over the session it names: one logged out meanwhile is never
                    # written again through an id it had.
                    mode = "XX"
                    continue
                return False
            reply = int(reply)
            if reply == _FOREIGN:
                self._foreign([key])
                if not flags:
                    raise InvalidOption(
                        "session id", sid, "an id whose key holds no other app's data"
                    )
                return False
            if reply <= 0:
                return False
            self._remember(sid, index)
            if not flags:  # a set
                self._count("created")
            moved_in = reply == 2 or (isinstance(before, str) and before != index)
            if index is not None and moved_in and self.max_sessions_per_user is not None:
                yield from self._limit_steps(index, sid)
            return True
        return False

    def _update_steps(
        self, sid: str, changes: dict[str, Any], deleted: Iterable[str], ttl: float | None
    ) -> Steps[bool]:
        """GET, then the changed session written by a script only if the session is still
        the one read (``record.SWAP``, which keeps the header and caps the lifetime at the
        absolute end), again from the GET while other writes land between (at most
        :data:`_UPDATE_TRIES` times). An alias in its grace is followed. With
        ``owner_key``, the owner's set is joined in the script's round trip, and when the
        owner changed the session leaves the old owner's set after the write. Raises
        ``InvalidOption``, ``SerializationError`` or ``SessionTooLarge`` before anything
        is written, and ``StoreUnavailable`` when every try met another write."""
        check_session_id(sid)
        if SEPARATOR in sid:
            raise InvalidOption("session id", sid, f"a str without {SEPARATOR!r}")
        gone = check_changes(changes, deleted)
        lifetime = self._lifetime(ttl)
        if not changes and not gone:
            touched: bool = yield from self._touch_steps(sid, lifetime)
            return touched
        key = self._key(sid)
        hops = 0
        for _ in range(_UPDATE_TRIES):
            try:
                (current,) = yield ("send", [("GET", key)])
            except self._refused as error:
                if not _wrong_type(error):
                    raise
                self._foreign([key])
                return False
            alias = _alias(current)
            if alias is not None:
                if hops < _HOPS and _answers(alias, _now_ms(), hops):
                    hops += 1
                    sid, key = alias.target, self._key(alias.target)
                    continue
                return False
            data = self._decode(current)
            if data is None:
                if current is None:
                    self._forget(sid)
                else:
                    self._foreign([key])
                return False
            before = self._stored_index(data)
            apply_changes(data, changes, gone)
            _, blob, lifetime_ms = self._encode(sid, data, lifetime)
            index = self._index_of(data)
            commands = self._join(index, sid, lifetime_ms) if index is not None else []
            at = len(commands)
            digest = hashlib.sha1(_as_bytes(current), usedforsecurity=False).hexdigest()
            swap = ("EVAL", record.SWAP, 1, key, digest, blob, lifetime_ms, self._absolute_ms)
            commands.append(swap)
            self._forget(sid)  # until the write is known to have landed
            replies = yield ("send", commands)
            reply = int(replies[at])
            if reply == _CHANGED:
                continue
            if reply == _FOREIGN:
                self._foreign([key])
                return False
            if reply == 1:
                if before is not None and before != index:
                    yield ("send", [("ZREM", before, sid)])
                self._remember(sid, index)
                if index is not None and before != index and self.max_sessions_per_user:
                    yield from self._limit_steps(index, sid)
            return reply == 1
        raise StoreUnavailable(
            f"Redis at {self._where}: session {redact(sid)} changed by other writes "
            f"{_UPDATE_TRIES} times while an update was written; not written"
        )

    def _rename_steps(
        self,
        old: object,
        new: str,
        data: dict[str, Any],
        ttl: float | None,
        reset_lifetime: bool = True,
        grace: float = 0.0,
        device: object = None,
    ) -> Steps[bool]:
        """Session ``old`` moved to ``new`` (see :meth:`RedisStore.rename` and
        :meth:`_move_steps`). Raises before anything is sent for bad arguments."""
        _, blob, lifetime_ms = self._encode(new, data, ttl)
        if not _is_sid(old) or old == new:
            raise InvalidOption("old", old, f"a session id without {SEPARATOR!r}, other than new")
        if not isinstance(reset_lifetime, bool):
            raise InvalidOption("reset_lifetime", reset_lifetime, "True or False")
        grace = check_grace(grace, "grace")
        device_args = self._device(device)
        index = self._index_of(data)
        moved = yield from self._move_steps(
            old,
            new,
            blob,
            lifetime_ms,
            index,
            reset=reset_lifetime,
            grace_ms=math.ceil(grace * 1000),
            device=device_args,
            expect="",
            old_value=None,
        )
        if moved == 1:
            self._count("created", "regenerates")
            if index is not None and self.max_sessions_per_user is not None:
                yield from self._limit_steps(index, new)
        return moved in (1, 2)

    def _move_steps(
        self,
        old: str,
        new: str,
        blob: bytes,
        lifetime_ms: int,
        index: str | None,
        *,
        reset: bool,
        grace_ms: int,
        device: tuple[str, ...],
        expect: str,
        old_value: bytes | None,
    ) -> Steps[int]:
        """:meth:`_move_once_steps`, from the session an ``old`` in its grace names (a
        regenerate from a request in flight with the former cookie): 2 when that session
        already has the id ``new`` (written in place, no session more), else as
        :meth:`_move_once_steps`. A renewal (``expect``) never follows one."""
        for hop in range(_HOPS):
            reply = yield from self._move_once_steps(
                old,
                new,
                blob,
                lifetime_ms,
                index,
                reset=reset,
                grace_ms=grace_ms,
                device=device,
                expect=expect,
                old_value=old_value,
            )
            if not isinstance(reply, Alias):
                return reply
            if expect or not _answers(reply, _now_ms(), hop):
                return 0
            if reply.target == new:
                kept: int = yield from self._keep_steps(new, blob, lifetime_ms, index)
                return kept
            old = reply.target
        return 0

    def _keep_steps(self, sid: str, blob: bytes, lifetime_ms: int, index: str | None) -> Steps[int]:
        """``blob`` written over session ``sid`` (``record.PUT`` XX, after its owner's
        join): 2 when written, else 0."""
        commands = self._join(index, sid, lifetime_ms) if index is not None else []
        put = (
            "EVAL",
            record.PUT,
            1,
            self._key(sid),
            blob,
            lifetime_ms,
            "XX",
            0,
            "-1",
            "",
            "-1",
            "",
        )
        reply = (yield ("send", [*commands, put]))[-1]
        if isinstance(reply, list) or int(reply) <= 0:
            return 0
        self._remember(sid, index)
        return 2

    def _move_once_steps(
        self,
        old: str,
        new: str,
        blob: bytes,
        lifetime_ms: int,
        index: str | None,
        *,
        reset: bool,
        grace_ms: int,
        device: tuple[str, ...],
        expect: str,
        old_value: bytes | None,
    ) -> Steps[int | Alias]:
        """``old`` moved to ``new`` holding ``blob``: 1 when done; 0 when ``old`` holds
        no session (or a logout everywhere of the owner is under way); -3 when ``expect``
        is the SHA-1 of the value ``old`` was read with and another write landed since.
        The new header keeps the old one's ``created`` and absolute end unless ``reset``;
        ``device`` (see :meth:`_device`) replaces the old one's. With ``grace_ms``, ``old``
        becomes an alias of ``new`` (see :mod:`.record`) instead of being deleted.

        One script on one server (``_RENAME``). On a cluster, where the two keys (and the
        owner's set) may live on different nodes: ``old`` is read (unless
        ``old_value``), the new record written (``record.PUT_NEW``), then it joins its
        owner's set (refused while a logout everywhere of that owner counts ``old``),
        then ``old`` is deleted or made an alias if it still holds a session
        (``record.RETIRE``); if it does not (a logout won meanwhile), the new record is
        deleted again. An error after the new record was written deletes it again (as
        far as Redis answers) and rises."""
        old_key = self._key(old)
        key = self._key(new)
        before = self._recall(old)
        leave = before if isinstance(before, str) and before != index else None
        joining = (time.time(), min(lifetime_ms + _ttl_ms(self.ttl), _MAX_TTL_MS))
        self._forget(old, new)
        lifetime = ("1" if reset else "0", self._absolute_ms, *device)
        if self._keyslot is None:
            keys = (old_key, key, index or old_key, leave or old_key)
            flags = ("1" if index else "0", "1" if leave else "0")
            command = (
                "EVAL",
                _RENAME,
                4,
                *keys,
                blob,
                lifetime_ms,
                *joining,
                *flags,
                old,
                new,
                expect,
                grace_ms,
                *lifetime,
            )
            # With wait_replicas, the old id's end waits for replicas as a logout does: a
            # failover must not bring back the id a sign-in left.
            (reply,) = self._confirmed((yield ("send", self._durable([command]))))
            if isinstance(reply, list):
                alias = _alias(reply[0])
                return alias if alias is not None else 0
            reply = int(reply)
            if reply == _FOREIGN or reply == _FOREIGN - 1:
                self._foreign([old_key if reply == _FOREIGN else key])
                if reply != _FOREIGN:
                    raise InvalidOption("new", new, "an id whose key holds no other app's data")
        else:
            moved = yield from self._rename_in_steps(
                old, old_key, key, blob, lifetime_ms, index, lifetime, grace_ms, expect, old_value
            )
            if isinstance(moved, Alias):
                return moved
            reply = moved
            leaving: list[Command] = [("ZREM", owners, old) for owners in (index, leave) if owners]
            if reply == 1 and leaving:
                yield ("send", leaving)
        if reply == 1:
            self._remember(new, index)
        return reply if reply in (1, _CHANGED - 1) else 0

    def _rename_in_steps(
        self,
        old: str,
        old_key: str,
        key: str,
        blob: bytes,
        lifetime_ms: int,
        index: str | None,
        lifetime: tuple[Any, ...],
        grace_ms: int,
        expect: str,
        old_value: bytes | None,
    ) -> Steps[int | Alias]:
        """A cluster's rename (see :meth:`_move_once_steps`): 1 when done, -3 when ``old``
        changed since ``expect`` was read, the alias ``old`` holds, else 0."""
        new = key[len(self.prefix) :]
        if old_value is None:
            try:
                (current,) = yield ("send", [("GET", old_key)])
            except self._refused as error:
                if not _wrong_type(error):
                    raise
                self._foreign([old_key])
                return 0
            if current is None:
                return 0
            alias = _alias(current)
            if alias is not None:
                return alias
            old_value = _as_bytes(current)
        parsed = record.split(old_value)
        if isinstance(parsed, Alias):
            return 0
        header = old_value[: len(old_value) - len(parsed[1])]
        put = ("EVAL", record.PUT_NEW, 1, key, header, blob, lifetime_ms, *lifetime)
        (written,) = yield ("send", [put])
        if written == _FOREIGN:
            self._foreign([key])
            raise InvalidOption("new", new, "an id whose key holds no other app's data")
        if not isinstance(written, list):  # past its absolute end
            return 0
        px, absolute_end = int(written[0]), int(written[2])
        undo: list[Command] = [_guarded("DEL", key)]
        try:
            if index is not None:
                undo.append(("ZREM", index, new))
                keep = min(lifetime_ms + _ttl_ms(self.ttl), _MAX_TTL_MS)
                claim = ("EVAL", _CLAIM, 1, index, old, new, time.time(), keep)
                (claimed,) = yield ("send", [claim])
                if not int(claimed):
                    undo.pop()  # never joined
                    yield ("send", undo)
                    return 0
            sign_in = lifetime[0]
            retire = (
                "EVAL",
                record.RETIRE,
                1,
                old_key,
                expect,
                new,
                grace_ms,
                px,
                absolute_end,
                sign_in,
            )
            (taken,) = yield ("send", [retire])
        except Exception:
            # One command at a time, each on its own node: the node that failed may hold
            # the owner's set, and the new record is deleted still.
            for command in undo:
                with contextlib.suppress(Exception):  # the first error is the one that rises
                    yield ("send", [command])
            raise
        if int(taken) == 1:
            return 1
        if taken == _FOREIGN:
            self._foreign([old_key])
        yield ("send", undo)
        return _CHANGED - 1 if int(taken) == _CHANGED else 0

    def _touch_steps(self, sid: object, ttl: float | None) -> Steps[bool]:
        """``record.TOUCH``: the lifetime moved, never past the absolute end (with
        ``owner_key``, after the owner's set's upkeep when this store knows the owner;
        ``record.GETEX`` when it does not, to learn it). An alias in its grace is
        followed."""
        lifetime_ms = _ttl_ms(self._lifetime(ttl))
        if not _is_sid(sid):
            return False
        for hop in range(_HOPS):
            index = self._recall(sid)
            if isinstance(index, _Unknown):
                found, _ = yield from self._extend_steps(sid, lifetime_ms, counted=False)
                return found
            key = self._key(sid)
            commands = self._join(index, sid, lifetime_ms) if isinstance(index, str) else []
            commands.append(("EVAL", record.TOUCH, 1, key, lifetime_ms))
            reply = (yield ("send", commands))[-1]
            if isinstance(reply, list):
                alias = _alias(reply[0])
                if alias is not None and _answers(alias, int(reply[1]), hop):
                    sid = alias.target
                    continue
                return False
            return self._done(key, reply)
        return False

    def _destroy_steps(self, sid: object) -> Steps[bool]:
        """``record.DESTROY`` (see :meth:`_end_steps`): an alias's session is ended too
        (a logout from a tab holding the old cookie is a logout); through an alias past
        its grace, with the stolen cookie's WARNING."""
        if not _is_sid(sid):
            return False
        ended, data, stale = yield from self._end_steps(sid)
        if ended:
            self._count("logouts")
            if stale:  # an id replaced longer ago than its grace: a stolen cookie too
                self._stolen(data)
        return ended

    def _destroy_session_of_steps(self, owner: str | int, sid: object) -> Steps[bool]:
        """A GET, then the session deleted only if it is still the value read
        (``record.DROP``) and that value names ``owner`` (with its ZREM, and a WAIT with
        ``wait_replicas``); read again while other writes land between."""
        index = self._owner_index(owner)
        sid = check_session_id(sid)
        if not _is_sid(sid):
            return False
        key = self._key(sid)
        for _ in range(_UPDATE_TRIES):
            try:
                (current,) = yield ("send", [("GET", key)])
            except self._refused as error:
                if not _wrong_type(error):
                    raise
                self._foreign([key])
                return False
            if current is None or self._stored_index(self._decode(current)) != index:
                return False
            commands: list[Command] = [
                ("EVAL", record.DROP, 1, key, _as_bytes(current)),
                ("ZREM", index, sid),
            ]
            replies = self._confirmed((yield ("send", self._durable(commands))))
            if int(replies[0]):
                self._forget(sid)
                self._count("logouts")
                return True
        raise StoreUnavailable(
            f"Redis at {self._where}: session {redact(sid)} changed by other writes "
            f"{_UPDATE_TRIES} times while it was ended; not ended"
        )

    def _contains_steps(self, sid: object) -> Steps[bool]:
        """Whether a session is there (see :meth:`_peek_steps`)."""
        if not _is_sid(sid):
            return False
        held, _ = yield from self._peek_steps(sid)
        return held

    def _time_left_steps(self, sid: object) -> Steps[float | None]:
        """The seconds ``sid`` has left (already capped at its absolute end; see
        :meth:`_peek_steps`)."""
        if not _is_sid(sid):
            return None
        held, pttl = yield from self._peek_steps(sid)
        if not held or pttl < 0:
            # Absent, an alias, another app's string or a key without an expiry: no
            # session of this store's.
            return None
        return pttl / 1000

    def _peek_steps(self, sid: str) -> Steps[tuple[bool, int]]:
        """``record.PEEK``: whether ``sid`` holds a session, and its key's PTTL (ms). A
        string with a session's header holds one; a string with neither a session's
        header nor an alias's (written before headers, or by another app) is read to
        tell."""
        key = self._key(sid)
        (reply,) = yield ("send", [("EVAL", record.PEEK, 1, key)])
        kind = int(reply[0])
        if kind == _HEADERLESS:
            held = (yield from self._headerless_sessions_steps([key.encode()])) != []
        else:
            held = kind == 1
        return held, int(reply[1]) if held else -1

    def _session_info_steps(self, sid: object) -> Steps[SessionInfo | None]:
        """GET and PTTL, in one round trip: what ``sid`` is (``None``: no session); an id
        in its grace answers as its session, in one round trip more."""
        if not _is_sid(sid):
            return None
        key = self._key(sid)
        try:
            blob, left = yield ("send", [("GET", key), ("PTTL", key)])
        except self._refused as error:
            if not _wrong_type(error):
                raise
            self._foreign([key])
            return None
        if blob is None or int(left) < 0:
            return None
        alias = _alias(blob)
        if alias is not None:  # an id in its grace answers as its session
            if _now_ms() >= alias.grace_end:
                return None
            target = self._key(alias.target)
            blob, left = yield ("send", [("GET", target), ("PTTL", target)])
            if blob is None or int(left) < 0 or _alias(blob) is not None:
                return None
            sid = alias.target
        return self._info(sid, _as_bytes(blob), int(left), _now_ms())

    def _info(self, sid: str, value: bytes, left_ms: int, now_ms: int) -> SessionInfo | None:
        """A stored value as a :class:`SessionInfo`; ``None`` for an alias or a value no
        session. A value written without a header was first seen now."""
        parsed = record.split(value)
        if isinstance(parsed, Alias):
            return None
        header, blob = parsed
        try:
            data = loads_session(self._serializer, blob)
        except SerializationError:
            return None
        if header is None:
            header = Header(now_ms, now_ms, now_ms, 0, None, None)
        expires = now_ms + left_ms
        if header.absolute_end:
            # PTTL was read a moment before now_ms: never report a time past the end.
            expires = min(expires, header.absolute_end)
        owner = None
        if self.owner_key is not None:
            value_of = data.get(self.owner_key)
            if type(value_of) in (str, int):
                owner = value_of
        return SessionInfo(
            id=sid,
            owner=owner,
            created=record.as_datetime(header.created),
            renewed=record.as_datetime(header.renewed),
            last_seen=record.as_datetime(header.last_seen),
            expires=record.as_datetime(expires),
            absolute_expires=(
                record.as_datetime(header.absolute_end) if header.absolute_end else None
            ),
            ip=header.ip,
            user_agent=header.user_agent,
        )

    def _sessions_info_steps(self, owner: str | int) -> Steps[list[SessionInfo]]:
        """As :meth:`_sessions_of_steps`, with each member's PTTL in its MGET's round
        trip: the owner's sessions as :class:`SessionInfo`, most recently used first (the
        set's order: its scores are the last uses, kept to the millisecond, where a
        header's ``last_seen`` is kept to the minute)."""
        index = self._owner_index(owner)
        members, blobs, ttls = yield from self._fetch_steps(index, with_ttl=True)
        live, stale = self._sort_members(index, members, blobs)
        if stale:
            yield ("send", [self._prune_command(index, stale)])
        now = _now_ms()
        infos = []
        for sid in live:
            key = self._key(sid).encode()
            blob, left = blobs.get(key), ttls.get(key, -2)
            if blob is not None and left >= 0:
                info = self._info(sid, _as_bytes(blob), left, now)
                if info is not None:
                    infos.append(info)
        return infos

    def _limit_steps(self, index: str, keep: str) -> Steps[None]:
        """End the sessions of ``index``'s owner with the oldest ``created`` (never
        ``keep``) until ``max_sessions_per_user`` remain: the set read and its sessions
        fetched, then one pipeline of ``record.DESTROY`` per session ended."""
        limit = self.max_sessions_per_user
        assert limit is not None
        members, blobs, _ = yield from self._fetch_steps(index)
        live, _stale = self._sort_members(index, members, blobs)
        if len(live) <= limit:
            return

        def created(sid: str) -> int:
            blob = blobs.get(self._key(sid).encode())
            parsed = record.split(_as_bytes(blob)) if blob is not None else None
            if isinstance(parsed, tuple) and parsed[0] is not None:
                return parsed[0].created
            return 0  # written before headers: older than any that has one

        others = sorted((sid for sid in live if sid != keep), key=created)
        ended = others[: len(live) - limit]
        if not ended:
            return
        commands: list[Command] = [("EVAL", record.DESTROY, 1, self._key(sid), 0) for sid in ended]
        commands.append(("ZREM", index, *ended))
        self._confirmed((yield ("send", self._durable(commands))))
        self._forget(*ended)

    def _all_steps(self) -> Steps[dict[str, dict[str, Any]]]:
        """SCAN TYPE string (every primary of a cluster), then one MGET per batch of keys
        (per slot on a cluster); a value that is no session is left out, and logged."""
        keys = self._own_keys((yield ("scan", "string")))
        found: dict[str, dict[str, Any]] = {}
        foreign: list[bytes] = []
        for batch in _batches(keys):
            mgets = self._per_slot("MGET", batch)
            for key, blob in self._pairs(mgets, (yield ("send", mgets))):
                data = self._decode(blob)
                if data is not None:
                    found[key[len(self._prefix_bytes) :].decode()] = data
                elif blob is not None and _alias(blob) is None:
                    foreign.append(key)
        self._foreign(foreign)
        return found

    def _len_steps(self) -> Steps[int]:
        """SCAN, then the first bytes of each key (a GETRANGE each, one round trip per
        batch): aliases are no sessions."""
        keys = self._own_keys((yield ("scan", "string")))
        sessions = yield from self._sessions_among_steps(keys)
        return len(sessions)

    def _sessions_among_steps(self, keys: list[bytes]) -> Steps[list[bytes]]:
        """The keys among ``keys`` that hold a session (and still exist): the first bytes
        of each tell a session's header from an alias; a string with neither, written
        before headers or by another app, is read whole to tell (another app's is
        logged)."""
        found: list[bytes] = []
        headerless: list[bytes] = []
        for batch in _batches(keys):
            heads = yield ("send", [("GETRANGE", key, 0, len(record.HEADER) - 1) for key in batch])
            for key, head in zip(batch, heads, strict=True):
                if not head:
                    continue
                head = _as_bytes(head)
                if head == record.HEADER:
                    found.append(key)
                elif head != record.ALIAS:
                    headerless.append(key)
        found.extend((yield from self._headerless_sessions_steps(headerless)))
        return found

    def _headerless_sessions_steps(self, keys: list[bytes]) -> Steps[list[bytes]]:
        """The keys among ``keys`` (strings without a header) whose value this store reads
        as a session; another app's are logged."""
        found: list[bytes] = []
        foreign: list[bytes] = []
        for batch in _batches(keys):
            gets = self._per_slot("MGET", batch)
            for key, blob in self._pairs(gets, (yield ("send", gets))):
                if self._decode(blob) is not None:
                    found.append(key)
                elif blob is not None:
                    foreign.append(key)
        self._foreign(foreign)
        return found

    def _clear_steps(self) -> Steps[None]:
        """Per batch of string keys, an MGET and a DEL of those that hold a session; then
        a DEL of the owner sets."""
        keys = self._own_keys((yield ("scan", "string")))
        foreign: list[bytes] = []
        for batch in _batches(keys):
            mgets = self._per_slot("MGET", batch)
            ours = []
            for key, blob in self._pairs(mgets, (yield ("send", mgets))):
                if self._decode(blob) is not None or _alias(blob) is not None:
                    ours.append(key)
                elif blob is not None:
                    foreign.append(key)
            if ours:
                self._confirmed((yield ("send", self._durable(self._per_slot("DEL", ours)))))
        self._foreign(foreign)
        owners = self._owner_keys((yield ("scan", "zset")))
        for batch in _batches(owners):
            self._confirmed((yield ("send", self._durable(self._per_slot("DEL", batch)))))
        with self._lock:
            self._owners.clear()

    def _stats_steps(self) -> Steps[Stats]:
        """SCAN, MEMORY USAGE per key (STRLEN where MEMORY is disabled), CONFIG GET; the
        sessions counted leave out aliases (as ``len``), their bytes are in ``size``."""
        keys = self._own_keys((yield ("scan", "string")))
        sessions = yield from self._sessions_among_steps(keys)
        size = 0
        for batch in _batches(keys):
            try:
                replies = yield ("send", [("MEMORY USAGE", key) for key in batch])
                size += sum(int(n) for n in replies if n)
            except self._refused:  # MEMORY disabled: count payloads and keys
                replies = yield ("send", [("STRLEN", key) for key in batch])
                size += sum(int(n) + len(k) for k, n in zip(batch, replies, strict=True) if n)
        try:
            config = yield ("config", None)
        except self._refused:  # CONFIG disabled, as on managed Redis
            config = None
        users = None
        if self.owner_key is not None:  # a set lives one ttl past its last session
            users = len(self._owner_keys((yield ("scan", "zset"))))
        # Redis expires and evicts keys itself and does not count them per prefix.
        return Stats(
            sessions=len(sessions),
            size=size,
            max_size=_max_size(config),
            expired=0,
            evicted=0,
            purges=0,
            signed_in_users=users,
            **self.counters(),
        )

    def _sessions_of_steps(self, owner: str | int) -> Steps[list[str]]:
        """ZREVRANGE of the owner's set, MGET of its members (per slot on a cluster),
        and the pruning of stale members (a third round trip, only when there are
        some)."""
        index = self._owner_index(owner)
        live, stale = yield from self._look_up_steps(index)
        if stale:
            yield ("send", [self._prune_command(index, stale)])
        return live

    def _destroy_sessions_of_steps(self, owner: str | int, keep: str | None) -> Steps[int]:
        """As :meth:`_sessions_of_steps`, then one pipeline of a DEL per session and the
        pruning of the owner's set."""
        index = self._owner_index(owner)
        if keep is not None and not isinstance(keep, str):
            raise InvalidOption("keep", keep, "None or a session id (str)")
        # The set is marked as it is read (see _ENDING_MARK), and unmarked as it ends.
        marker = _ENDING_MARK + uuid.uuid4().hex
        grace = _ttl_ms(_ENDING_GRACE + 4 * self.socket_timeout)
        mark: Command = ("EVAL", _MARK_ENDING, 1, index, marker, grace)
        marked: list[Any] = []
        live, stale = yield from self._look_up_steps(index, mark, marked)
        ended = [sid for sid in live if sid != keep]
        commands = self._ending(index, ended, stale)
        if marked and int(marked[0]):
            commands.append(("ZREM", index, marker))
        replies = self._confirmed((yield ("send", self._durable(commands)))) if commands else []
        self._forget(*ended)
        count = sum(int(n) for n in replies[: len(ended)])
        with self._lock:
            self._counts.logouts_everywhere += count
        return count

    def _look_up_steps(
        self, index: str, first: Command | None = None, first_reply: list[Any] | None = None
    ) -> Steps[tuple[list[str], list[tuple[str, bytes]]]]:
        """The owner's set read (after ``first``, in the same round trip, whose reply is
        appended to ``first_reply``), and its members' sessions fetched: the live ones and
        the stale ones (see :meth:`_sort_members`)."""
        members, blobs, _ = yield from self._fetch_steps(index, first, first_reply)
        return self._sort_members(index, members, blobs)

    def _fetch_steps(
        self,
        index: str,
        first: Command | None = None,
        first_reply: list[Any] | None = None,
        with_ttl: bool = False,
    ) -> Steps[tuple[list[tuple[str, bytes]], dict[bytes, Any], dict[bytes, int]]]:
        """The owner's set read (see :meth:`_look_up_steps`), then its members' values
        (one MGET per batch, per slot on a cluster; with ``with_ttl``, each one's PTTL in
        the same round trip): the members, and each key's value and ms left."""
        read: list[Command] = [("ZREVRANGE", index, 0, -1, "WITHSCORES")]
        if first is not None:
            read.insert(0, first)
        replies = yield ("send", read)
        if first_reply is not None:
            first_reply.extend(replies[:-1])
        members = self._members(replies[-1])
        blobs: dict[bytes, Any] = {}
        ttls: dict[bytes, int] = {}
        for batch in _batches(self._member_keys(members)):
            mgets = self._per_slot("MGET", batch)
            commands = mgets + [("PTTL", key) for key in batch] if with_ttl else mgets
            replies = yield ("send", commands)
            blobs.update(self._pairs(mgets, replies[: len(mgets)]))
            if with_ttl:
                ttls.update(zip(batch, (int(n) for n in replies[len(mgets) :]), strict=True))
        return members, blobs, ttls

    # ---- the owner index's reads ----------------------------------------------------------

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
        blobs: dict[bytes, Any],
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        """The members still live and still the owner's, in the set's order, and the
        stale ones (expired, destroyed, or now someone else's) with their scores. A
        member that joined in the last ``_JOIN_GRACE`` seconds is neither: its write may
        not have landed yet (the join goes first), and pruning it now would leave that
        session out of its owner's set for good."""
        recent = time.time() - _JOIN_GRACE
        live, stale = [], []
        for (sid, score), key in zip(members, self._member_keys(members), strict=True):
            blob = blobs.get(key)
            parsed = None if blob is None else record.split(_as_bytes(blob))
            if isinstance(parsed, tuple):
                try:
                    data: dict[str, Any] | None = loads_session(self._serializer, parsed[1])
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

    # ---- batches and slots --------------------------------------------------------------

    def _per_slot(self, name: str, keys: list[bytes]) -> list[Command]:
        """``name keys...`` as one command on a single Redis, one per hash slot on a
        cluster (a multi-key command must not cross slots)."""
        if self._keyslot is None:
            return [(name, *keys)]
        slots: dict[int, list[bytes]] = {}
        for key in keys:
            slots.setdefault(self._keyslot(key), []).append(key)
        return [(name, *same_slot) for same_slot in slots.values()]

    @staticmethod
    def _pairs(commands: list[Command], replies: list[Any]) -> Iterator[tuple[bytes, Any]]:
        """``(key, value)`` for each key of the MGETs ``commands`` and their replies."""
        for command, blobs in zip(commands, replies, strict=True):
            yield from zip(command[1:], blobs, strict=True)

    # ---- replies ----------------------------------------------------------------------

    def _decode(self, blob: bytes | str | None) -> dict[str, Any] | None:
        """A stored value as a session; ``None`` when absent or not one (another app's
        string, or a record this store's serializer cannot read)."""
        if blob is None:
            return None
        parsed = record.split(_as_bytes(blob))
        if isinstance(parsed, Alias):
            return None
        try:
            return loads_session(self._serializer, parsed[1])
        except SerializationError:
            return None

    def _read(
        self, key: str, blob: bytes | str | None, counted: bool = True
    ) -> dict[str, Any] | None:
        """A GET (or GETEX) reply as a session, counted as a hit or a miss; a value that
        is no session is a miss, and logged."""
        data = self._decode(blob)
        if data is None and blob is not None and _alias(blob) is None:
            self._foreign([key])
        return self._got(data) if counted else data

    def _missed(self) -> Loaded | None:
        """Count a miss: ``None``, a load's answer for no session."""
        self._got(None)
        return None

    def _got(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        with self._lock:
            if data is None:
                self._counts.misses += 1
            else:
                self._counts.hits += 1
        return data

    def counters(self) -> dict[str, int]:
        """What this process did through the store (and its async twin), by
        :class:`~lembro.protocol.Stats` field: ``hits``, ``misses``, ``created``,
        ``logouts``, ``regenerates``, ``logouts_everywhere`` and ``unavailable``. Read
        without asking Redis, so ``lembro.metrics`` has them while Redis does not answer."""
        with self._lock:
            counts = self._counts
            return {name: getattr(counts, name) for name in _Counts.__slots__}

    def _count(self, *names: str) -> None:
        """One more of each of the counters ``names``."""
        with self._lock:
            counts = self._counts
            for name in names:
                setattr(counts, name, getattr(counts, name) + 1)

    def _share_counts(self, other: RedisCore) -> None:
        """Count into ``other``'s counters from now on (an async twin into its store's)."""
        self._counts, self._lock = other._counts, other._lock

    def _done(self, key: str, reply: Any) -> bool:
        """A guarded command's reply as whether it acted; another app's key is logged."""
        if reply == _FOREIGN:
            self._foreign([key])
            return False
        return bool(reply)

    # ---- failovers and durable logouts -----------------------------------------------------

    def _across_switches(self, steps: Steps[T]) -> Steps[T]:
        """``steps``, with one step sent again when it may have reached a former primary:
        one in flight while the store heard that the primary moved, or one answered
        READONLY (a demoted primary). Before a READONLY step is sent again, the pool's
        idle connections are dropped, the primary looked up again (from Sentinel) and
        asked ROLE: one that calls itself a replica fails the operation as an outage
        (the original error). Once per operation; a cluster client follows its nodes
        itself, so its steps pass through."""
        if self._keyslot is not None:
            return (yield from steps)
        sent_again = False
        # Priming a fresh generator: send(None) is next().
        step = _advance(steps)
        while not isinstance(step, _Finished):
            moves = self._primary.moves
            try:
                reply = yield step
            except Exception as error:
                if sent_again or not self._demoted(error):
                    step = _advance(steps, error=error)
                    continue
                sent_again = True
                yield from self._find_primary_steps(error)
                continue
            if self._primary.moves != moves and not sent_again:
                sent_again = True
                continue
            step = _advance(steps, reply)
        return step.value  # type: ignore[no-any-return]

    def _find_primary_steps(self, error: Exception) -> Steps[None]:
        """Drop the pool's idle connections and look the primary up again; raise
        ``error`` when the server found calls itself a replica."""
        found = yield ("resolve", None)
        if found is not None and found[0] is not None and found[0] != found[1]:
            self._primary.moved(found[0], found[1], "the former one answered READONLY")
        try:
            (role,) = yield ("send", [("ROLE",)])
        except self._refused:  # ROLE refused (an ACL): sending the step again will tell
            return
        if not _is_primary(role):
            raise error

    def _demoted(self, error: BaseException) -> bool:
        """Whether ``error`` says the server was a primary and is a replica now."""
        return (
            isinstance(error, self._read_only)
            or str(error).startswith("READONLY")
            or _DEMOTED_TEXT in str(error)
        )

    def _durable(self, commands: list[Command]) -> list[Command]:
        """``commands`` and, when logouts must reach replicas, a WAIT after them in the
        same pipeline: on their connection, whose writes are the ones WAIT counts."""
        if not self.wait_replicas:
            return commands
        return [*commands, ("WAIT", self.wait_replicas, _ttl_ms(self.wait_timeout))]

    def _confirmed(self, replies: list[Any]) -> list[Any]:
        """The replies of :meth:`_durable`'s ``commands``; raises ``StoreUnavailable``
        when fewer than ``wait_replicas`` replicas confirmed them in ``wait_timeout``."""
        if not self.wait_replicas:
            return replies
        *replies, confirmed = replies
        if int(confirmed) < self.wait_replicas:
            raise StoreUnavailable(
                f"Redis at {self._where}: {confirmed} of the {self.wait_replicas} replicas "
                f"asked for confirmed the logout within {self.wait_timeout} s; it is not "
                "reported done, since a failover now could bring the session back"
            )
        return replies

    # ---- outages and odd keys ---------------------------------------------------------------

    def _call(self, op: str, sid: object = None) -> _Call:
        return _Call(self, op, sid if isinstance(sid, str) else None)

    def _foreign(self, keys: list[bytes] | list[str]) -> None:
        """Note keys under the prefix that hold no session of this store's (another app's
        data, or a record its serializer cannot read): they are skipped, never counted,
        returned, overwritten or deleted. One WARNING naming one of them (its id part
        shortened), at most one per ``_WARN_EVERY`` seconds; DEBUG otherwise."""
        if not keys:
            return
        first = keys[0]
        name = first.decode(errors="replace") if isinstance(first, bytes) else first
        shown = self.prefix + redact(name[len(self.prefix) :])
        now = time.monotonic()
        with self._lock:
            loud = now - self._last_foreign >= _WARN_EVERY
            if loud:
                self._last_foreign = now
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        log.log(
            logging.WARNING if loud else logging.DEBUG,
            "Redis at %s: key %s%s under prefix %r holds no session of this store; skipped",
            self._where,
            shown,
            more,
            self.prefix,
        )

    def _answers_again(self) -> None:
        with self._lock:
            was, self._outage, self._suppressed = self._outage, False, 0
            self._last_warning = -math.inf
        if was:
            log.warning("Redis at %s answers again", self._where)

    def _unavailable(self, op: str, sid: str | None, error: BaseException) -> None:
        """Raise ``StoreUnavailable`` from ``error``, or log it when ``on_unavailable="empty"``
        allows ``op`` to fail quietly."""
        self._count("unavailable")
        if self.on_unavailable == "raise" or op in _FAIL_CLOSED:
            raise StoreUnavailable(
                f"Redis at {self._where} is unavailable ({op}): {error}"
            ) from error
        now = time.monotonic()
        with self._lock:
            self._outage = True
            if op in ("get", "renew", "load"):  # read as no session: a miss
                self._counts.misses += 1
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
