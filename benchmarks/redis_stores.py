"""Redis stores side by side on one local redis-server: latency and round trips.

The stores, all holding the same sessions (msgpack 256 bytes, JSON a little more) under
their own key prefixes on one redis-server started for the run (loopback, a free port,
no persistence):

- ``lembro RedisStore`` / ``lembro AsyncRedisStore``: the stores under test, built from a
  URL with their defaults, as users build them.
- ``floor (redis-py)`` / ``floor (redis.asyncio)``: bare redis-py, ``GET`` and
  ``SET ... PX`` of msgspec msgpack bytes with a client built by ``from_url`` with its
  defaults: the least a Redis session store can do, with the same serializer as lembro.
- ``Flask-Session redis``: Flask-Session 0.8's ``RedisSessionInterface``; operations
  call the methods its ``open_session``/``save_session`` call (``_retrieve_session_data``,
  ``_upsert_session``, ``_delete_session``); the request row calls ``open_session`` and
  ``save_session`` themselves.
- ``starsessions RedisStore``: async; operations call ``read``/``write``/``remove`` with
  its middleware's default JSON serializer around them; the request row runs its
  ``SessionMiddleware`` (with ``SessionAutoloadMiddleware``) as an ASGI app.

Time here is the wall clock: the work is a network round trip, which CPU time leaves out.
Round trips are counted in a separate, untimed pass: client side, the sends a store's
connection makes; server side, ``INFO commandstats`` before and after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import msgspec
import redis
import redis.asyncio
from flask import Flask, Request, Response
from flask_session.redis import RedisSession, RedisSessionInterface
from harness import Case, Config, Row, Section, Table, Target, Timings, measure, progress, ticks
from memory_stores import VARIANTS
from starlette.types import Message, Receive, Scope, Send
from starsessions import JsonSerializer, SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarSessionMiddleware
from starsessions.stores.redis import RedisStore as StarRedisStore
from werkzeug.test import EnvironBuilder

from lembro import AsyncRedisStore, RedisStore
from lembro.flask import LembroSessionInterface
from lembro.ids import new_session_id
from lembro.starlette import SessionMiddleware as LembroSessionMiddleware

__all__ = ["ASYNC", "SYNC", "RedisServer", "run"]

TTL = 86_400  # seconds: a day, for every store
TTL_MS = TTL * 1000
SECRET = "benchmark-secret-key-0123456789abcdef"

LEMBRO = "lembro RedisStore"
FLASK_SESSION = "Flask-Session redis"
FLOOR = "floor (redis-py)"
LEMBRO_ASYNC = "lembro AsyncRedisStore"
STARSESSIONS = "starsessions RedisStore"
FLOOR_ASYNC = "floor (redis.asyncio)"
SYNC = (LEMBRO, FLASK_SESSION, FLOOR)
ASYNC = (LEMBRO_ASYNC, STARSESSIONS, FLOOR_ASYNC)
PEERS = {LEMBRO: (FLASK_SESSION,), LEMBRO_ASYNC: (STARSESSIONS,)}
PREFIXES = {
    LEMBRO: "lembro:",
    FLASK_SESSION: "session:",
    FLOOR: "floor:",
    LEMBRO_ASYNC: "alembro:",
    STARSESSIONS: "starsessions.",
    FLOOR_ASYNC: "afloor:",
}

OPS = ("get", "set", "touch", "destroy", "request")
LABELS = {
    "get": "get (hit)",
    "set": "set, replacing an id",
    "touch": "touch",
    "destroy": "destroy",
    "request": "a request: load + save a modified session",
}
NO_TOUCH = "no touch"
# Operations per store in the counting pass; the table shows the count per operation.
COUNT_RUNS = 5


# ---- the server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """Debian's redis-server on a free loopback port, no persistence, in a temp dir."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(executable).exists():
            raise RuntimeError("redis-server not found: `make redis-server` installs it")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="lembro-bench-redis-"))
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.process = subprocess.Popen(
            [executable, *args, "no", "--dir", str(self._dir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10.0
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def version(self) -> str:
        client = redis.Redis.from_url(self.url)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


# ---- counting round trips ------------------------------------------------------------------


class _Sends:
    """How many times counting connections have written to the socket: one per round trip
    (a pipeline is one write; a health-check PING is its own)."""

    n = 0


class _CountingConnection(redis.connection.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Sends.n += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _AsyncCountingConnection(redis.asyncio.connection.Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Sends.n += 1
        await super().send_packed_command(command, check_health)


def _counting_client(url: str) -> redis.Redis:
    return redis.Redis(
        connection_pool=redis.ConnectionPool.from_url(url, connection_class=_CountingConnection)
    )


def _counting_async_client(url: str) -> redis.asyncio.Redis:
    pool = redis.asyncio.ConnectionPool.from_url(url, connection_class=_AsyncCountingConnection)
    return redis.asyncio.Redis(connection_pool=pool)


def _commandstats(admin: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_").upper(): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


@dataclass
class Trips:
    """Round trips per operation and the commands they carried, e.g. ``2: GET, SET``."""

    round_trips: float
    commands: dict[str, float]

    def note(self) -> str:
        names = ", ".join(
            name if n == 1 else f"{n:g}x{name}" for name, n in sorted(self.commands.items())
        )
        return f"{self.round_trips:g} RT: {names}"


def _count(admin: redis.Redis, case: Case[Any], runs: int) -> Trips:
    """Round trips and commands of ``case``, per operation, over ``runs`` batches of one."""
    inputs = [case.prepare(1) for _ in range(runs)]
    before, sends = _commandstats(admin), _Sends.n
    for data in inputs:
        case.run(data)
    after, sent = _commandstats(admin), _Sends.n - sends
    delta = {k: (v - before.get(k, 0)) / runs for k, v in after.items()}
    return Trips(sent / runs, {k: v for k, v in delta.items() if v})


# ---- sessions ------------------------------------------------------------------------------

_variants = itertools.cycle(VARIANTS)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
_serial = itertools.count()


def _modified(data: dict[str, Any]) -> None:
    """What a request does to its session: one value changes."""
    data["last_seen"] = float(next(_serial))


def _sample(held: list[str], n: int) -> list[str]:
    return [held[(k * 7_919 + n) % len(held)] for k in range(n)]


# ---- sync stores ---------------------------------------------------------------------------


@dataclass
class SyncDriver:
    """One sync store: its operations, and a request as its framework integration runs it.

    ``request(sid)`` loads session ``sid`` from a cookie, changes it and saves it;
    ``request_input(sid)`` builds what it needs beforehand (not timed).
    """

    get: Callable[[str], object]
    set: Callable[[str, dict[str, Any]], object]
    touch: Callable[[str], object] | None
    destroy: Callable[[str], object]
    request_input: Callable[[str], Any]
    request: Callable[[Any], object]
    close: Callable[[], None]


def _flask_app() -> Flask:
    app = Flask("lembro_bench")
    app.secret_key = SECRET
    app.permanent_session_lifetime = timedelta(seconds=TTL)
    return app


def _request(app: Flask, cookie: str) -> tuple[Request, Response]:
    environ = EnvironBuilder(path="/", headers=[("Cookie", f"session={cookie}")]).get_environ()
    return app.request_class(environ), app.response_class()


def _flask_request(app: Flask, interface: Any) -> Callable[[tuple[Request, Response]], object]:
    open_session, save_session = interface.open_session, interface.save_session

    def request(pair: tuple[Request, Response]) -> object:
        session = open_session(app, pair[0])
        session["last_seen"] = float(next(_serial))
        save_session(app, session, pair[1])
        return session

    return request


def build_sync(name: str, url: str, client: redis.Redis | None = None) -> SyncDriver:
    """A sync store on ``url`` (or on ``client``, for the counting pass)."""
    prefix = PREFIXES[name]
    app = _flask_app()
    if name == LEMBRO:
        store = (
            RedisStore(url, prefix=prefix, ttl=TTL)
            if client is None
            else RedisStore(url, client=client, prefix=prefix, ttl=TTL)
        )
        interface = LembroSessionInterface(store)
        signer = interface.get_signer(app)
        assert signer is not None  # the app has a secret key

        def lembro_input(sid: str) -> tuple[Request, Response]:
            return _request(app, signer.sign(sid))

        return SyncDriver(
            store.get, store.set, store.touch, store.destroy,
            lembro_input, _flask_request(app, interface), store.close,
        )  # fmt: skip
    own = client or redis.Redis.from_url(url)
    if name == FLASK_SESSION:
        fs = RedisSessionInterface(app, client=own, key_prefix=prefix, permanent=True)
        retrieve, upsert, delete = fs._retrieve_session_data, fs._upsert_session, fs._delete_session
        lifetime = app.permanent_session_lifetime

        def fs_set(sid: str, data: dict[str, Any]) -> None:
            upsert(lifetime, RedisSession(data, sid=sid), prefix + sid)

        return SyncDriver(
            lambda sid: retrieve(prefix + sid), fs_set, None, lambda sid: delete(prefix + sid),
            lambda sid: _request(app, sid), _flask_request(app, fs), own.close,
        )  # fmt: skip
    if name == FLOOR:
        get, put = own.get, own.set

        def floor_get(sid: str) -> dict[str, Any] | None:
            blob = get(prefix + sid)
            return None if blob is None else _decode(cast(bytes, blob))

        def floor_set(sid: str, data: dict[str, Any]) -> None:
            put(prefix + sid, _encode(data), px=TTL_MS)

        def floor_request(sid: str) -> None:
            data = floor_get(sid)
            assert data is not None
            _modified(data)
            floor_set(sid, data)

        return SyncDriver(
            floor_get, floor_set, lambda sid: own.pexpire(prefix + sid, TTL_MS),
            lambda sid: own.delete(prefix + sid), lambda sid: sid, floor_request, own.close,
        )  # fmt: skip
    raise ValueError(f"unknown store {name!r}")


def _loop(op: Callable[[Any], object]) -> Callable[[list[Any]], None]:
    def run(items: list[Any]) -> None:
        for item in items:
            op(item)

    return run


def _loop_set(put: Callable[[str, dict[str, Any]], object]) -> Callable[[list[Any]], None]:
    def run(pairs: list[tuple[str, dict[str, Any]]]) -> None:
        for sid, data in pairs:
            put(sid, data)

    return run


def _pairs(sids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for sid in sids:
        data = dict(next(_variants))
        _modified(data)
        out.append((sid, data))
    return out


def _adder(put: Callable[[str, dict[str, Any]], object]) -> Callable[[int], list[str]]:
    def prepare(n: int) -> list[str]:
        sids = [new_session_id() for _ in range(n)]
        _loop_set(put)(_pairs(sids))
        return sids

    return prepare


def _sync_case(op: str, drv: SyncDriver, held: list[str]) -> Case[Any] | None:
    if op == "get":
        return Case(lambda n: _sample(held, n), _loop(drv.get))
    if op == "set":
        return Case(lambda n: _pairs(_sample(held, n)), _loop_set(drv.set))
    if op == "touch":
        return None if drv.touch is None else Case(lambda n: _sample(held, n), _loop(drv.touch))
    if op == "destroy":
        return Case(_adder(drv.set), _loop(drv.destroy))
    return Case(lambda n: [drv.request_input(sid) for sid in _sample(held, n)], _loop(drv.request))


def _sync_trips(url: str, admin: redis.Redis, held: list[str]) -> dict[str, dict[str, Trips]]:
    """Each store's round trips per operation, on counting clients."""
    trips: dict[str, dict[str, Trips]] = {op: {} for op in OPS}
    for name in SYNC:
        client = _counting_client(url)
        drv = build_sync(name, url, client)
        client.ping()  # connect (and its handshake) before counting
        for op in OPS:
            case = _sync_case(op, drv, held)
            if case is None:
                continue
            trips[op][name] = _count(admin, case, COUNT_RUNS)
        drv.close()
    return trips


def _row(
    op: str, timed: Timings, trips: dict[str, dict[str, Trips]], names: tuple[str, ...]
) -> Row:
    """The table row of ``op``: each store's median time, its round trips as a note, and
    "no touch" for a store that has no such operation (nothing timed)."""
    row = Row.timed(LABELS[op], "µs", timed, list(names))
    row.notes = {name: t.note() for name, t in trips[op].items()}
    row.notes.update({name: NO_TOUCH for name in names if name not in timed})
    return row


def _sync_table(server: RedisServer, admin: redis.Redis, config: Config) -> Table:
    table = Table("Redis stores, sync, per operation (wall clock)", list(SYNC), FLOOR)
    held = [new_session_id() for _ in range(config.sessions)]
    drivers = {name: build_sync(name, server.url) for name in SYNC}
    for drv in drivers.values():
        _loop_set(drv.set)(_pairs(held))
    trips = _sync_trips(server.url, admin, held)
    for op in OPS:
        progress(f"redis sync: {LABELS[op]}")
        cases = {name: case for name, drv in drivers.items() if (case := _sync_case(op, drv, held))}
        table.rows.append(_row(op, measure(cases, config), trips, SYNC))
    for drv in drivers.values():
        drv.close()
    _ROUND_TRIPS[table.title] = trips
    return table


# ---- async stores --------------------------------------------------------------------------


@dataclass
class AsyncDriver:
    """One async store; as ``SyncDriver``, with coroutines."""

    get: Callable[[str], Awaitable[object]]
    set: Callable[[str, dict[str, Any]], Awaitable[object]]
    touch: Callable[[str], Awaitable[object]] | None
    destroy: Callable[[str], Awaitable[object]]
    request_input: Callable[[str], Any]
    request: Callable[[Any], Awaitable[object]]
    close: Callable[[], Awaitable[None]]


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(_message: Message) -> None:
    return None


async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind a session middleware: change the session, answer 204."""
    scope["session"]["last_seen"] = float(next(_serial))
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _scope(cookie: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"cookie", f"session={cookie}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


def _asgi_request(app: Any) -> Callable[[Scope], Awaitable[None]]:
    async def request(scope: Scope) -> None:
        await app(scope, _receive, _discard)

    return request


def build_async(name: str, url: str, client: redis.asyncio.Redis | None = None) -> AsyncDriver:
    """An async store on ``url`` (or on ``client``, for the counting pass)."""
    prefix = PREFIXES[name]
    if name == LEMBRO_ASYNC:
        store = (
            AsyncRedisStore(url, prefix=prefix, ttl=TTL)
            if client is None
            else AsyncRedisStore(url, client=client, prefix=prefix, ttl=TTL)
        )
        middleware = LembroSessionMiddleware(_endpoint, SECRET, max_age=TTL, store=store)
        sign = middleware.signer.sign
        return AsyncDriver(
            store.get, store.set, store.touch, store.destroy,
            lambda sid: _scope(sign(sid)), _asgi_request(middleware), store.close,
        )  # fmt: skip
    own = client or redis.asyncio.Redis.from_url(url)
    if name == STARSESSIONS:
        star = StarRedisStore(connection=own, prefix=prefix)
        serializer = JsonSerializer()
        dumps, loads = serializer.serialize, serializer.deserialize
        star_app = StarSessionMiddleware(
            SessionAutoloadMiddleware(_endpoint), store=star, lifetime=TTL, rolling=True
        )

        async def star_get(sid: str) -> dict[str, Any]:
            return loads(await star.read(sid, lifetime=TTL))

        async def star_set(sid: str, data: dict[str, Any]) -> None:
            await star.write(sid, dumps(data), lifetime=TTL, ttl=TTL)

        return AsyncDriver(
            star_get, star_set, None, star.remove, _scope, _asgi_request(star_app), own.aclose,
        )  # fmt: skip
    if name == FLOOR_ASYNC:
        get, put = own.get, own.set

        async def floor_get(sid: str) -> dict[str, Any] | None:
            blob = await get(prefix + sid)
            return None if blob is None else _decode(cast(bytes, blob))

        async def floor_set(sid: str, data: dict[str, Any]) -> None:
            await put(prefix + sid, _encode(data), px=TTL_MS)

        async def floor_request(sid: str) -> None:
            data = await floor_get(sid)
            assert data is not None
            _modified(data)
            await floor_set(sid, data)

        return AsyncDriver(
            floor_get, floor_set, lambda sid: own.pexpire(prefix + sid, TTL_MS),
            lambda sid: own.delete(prefix + sid), lambda sid: sid, floor_request, own.aclose,
        )  # fmt: skip
    raise ValueError(f"unknown store {name!r}")


def _await_each(
    op: Callable[[Any], Awaitable[object]],
) -> Callable[[list[Any]], Coroutine[Any, Any, int]]:
    async def body(items: list[Any]) -> int:
        start = ticks()
        for item in items:
            await op(item)
        return ticks() - start

    return body


def _await_set(
    put: Callable[[str, dict[str, Any]], Awaitable[object]],
) -> Callable[[list[Any]], Coroutine[Any, Any, int]]:
    async def body(pairs: list[tuple[str, dict[str, Any]]]) -> int:
        start = ticks()
        for sid, data in pairs:
            await put(sid, data)
        return ticks() - start

    return body


def _async_case(
    loop: asyncio.AbstractEventLoop, op: str, drv: AsyncDriver, held: list[str]
) -> Case[Any] | None:
    """A case whose batch is one coroutine that times itself (the loop's start-up is left out)."""

    def timed(body: Callable[[Any], Coroutine[Any, Any, int]]) -> Callable[[Any], int]:
        return lambda items: loop.run_until_complete(body(items))

    if op == "get":
        return Case(lambda n: _sample(held, n), timed(_await_each(drv.get)))
    if op == "set":
        return Case(lambda n: _pairs(_sample(held, n)), timed(_await_set(drv.set)))
    if op == "touch":
        if drv.touch is None:
            return None
        return Case(lambda n: _sample(held, n), timed(_await_each(drv.touch)))
    if op == "destroy":

        def prepare(n: int) -> list[str]:
            sids = [new_session_id() for _ in range(n)]
            loop.run_until_complete(_await_set(drv.set)(_pairs(sids)))
            return sids

        return Case(prepare, timed(_await_each(drv.destroy)))
    return Case(
        lambda n: [drv.request_input(sid) for sid in _sample(held, n)],
        timed(_await_each(drv.request)),
    )


def _async_trips(
    loop: asyncio.AbstractEventLoop, url: str, admin: redis.Redis, held: list[str]
) -> dict[str, dict[str, Trips]]:
    trips: dict[str, dict[str, Trips]] = {op: {} for op in OPS}
    for name in ASYNC:
        client = _counting_async_client(url)
        drv = build_async(name, url, client)
        loop.run_until_complete(client.ping())
        for op in OPS:
            case = _async_case(loop, op, drv, held)
            if case is None:
                continue
            trips[op][name] = _count(admin, case, COUNT_RUNS)
        loop.run_until_complete(drv.close())
        if name == LEMBRO_ASYNC:  # a given client is the caller's to close
            loop.run_until_complete(client.aclose())
    return trips


def _async_table(server: RedisServer, admin: redis.Redis, config: Config) -> Table:
    table = Table(
        "Redis stores, async: one event loop, each operation awaited (wall clock)",
        list(ASYNC),
        FLOOR_ASYNC,
    )
    loop = asyncio.new_event_loop()
    try:
        held = [new_session_id() for _ in range(config.sessions)]
        drivers = {name: build_async(name, server.url) for name in ASYNC}
        for drv in drivers.values():
            loop.run_until_complete(_await_set(drv.set)(_pairs(held)))
        trips = _async_trips(loop, server.url, admin, held)
        for op in OPS:
            progress(f"redis async: {LABELS[op]}")
            cases = {
                name: case
                for name, drv in drivers.items()
                if (case := _async_case(loop, op, drv, held))
            }
            table.rows.append(_row(op, measure(cases, config), trips, ASYNC))
        for drv in drivers.values():
            loop.run_until_complete(drv.close())
    finally:
        loop.close()
    _ROUND_TRIPS[table.title] = trips
    return table


# ---- the owner index -----------------------------------------------------------------------

OWNED = "lembro RedisStore, owner_key"
OWNER_FIELD = "user_id"
PER_OWNER = 5  # sessions per owner, as one user on five devices
OWNER_OPS = ("get", "set", "touch", "sessions_of")
OWNER_LABELS = {**LABELS, "sessions_of": f"sessions_of (an owner with {PER_OWNER} sessions)"}


def _owned_pairs(sids: list[str], held: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Sessions as ``_pairs`` makes them, each with its owner: the same for every
    ``PER_OWNER`` consecutive ids of ``held``."""
    where = {sid: i for i, sid in enumerate(held)}
    return [
        (sid, {**data, OWNER_FIELD: where.get(sid, 0) // PER_OWNER}) for sid, data in _pairs(sids)
    ]


def _owner_case(op: str, store: RedisStore, held: list[str]) -> Case[Any] | None:
    owners = max(1, len(held) // PER_OWNER)
    if op == "sessions_of":
        if store.owner_key is None:
            return None
        return Case(lambda n: [k % owners for k in _sample(list(range(owners)), n)],
                    _loop(store.sessions_of))  # fmt: skip
    if op == "set":
        return Case(lambda n: _owned_pairs(_sample(held, n), held), _loop_set(store.set))
    return Case(lambda n: _sample(held, n), _loop(store.get if op == "get" else store.touch))


def _owner_table(server: RedisServer, admin: redis.Redis, config: Config) -> Table:
    """What ``owner_key`` costs a RedisStore: the same store with and without it."""
    names = (OWNED, LEMBRO)
    table = Table("Redis owner index: RedisStore with and without owner_key", list(names), LEMBRO)
    held = [new_session_id() for _ in range(config.sessions)]

    def build(name: str, client: redis.Redis | None = None) -> RedisStore:
        owner_key = OWNER_FIELD if name == OWNED else None
        prefix = "owned:" if name == OWNED else "plain:"
        if client is None:
            return RedisStore(server.url, prefix=prefix, ttl=TTL, owner_key=owner_key)
        return RedisStore(client=client, prefix=prefix, ttl=TTL, owner_key=owner_key)

    stores = {name: build(name) for name in names}
    for store in stores.values():
        _loop_set(store.set)(_owned_pairs(held, held))
        _loop(store.get)(held)  # as a worker that has served these sessions before
    trips: dict[str, dict[str, Trips]] = {op: {} for op in OWNER_OPS}
    for name in names:
        client = _counting_client(server.url)
        counted = build(name, client)
        client.ping()
        _loop(counted.get)(held)
        for op in OWNER_OPS:
            if (case := _owner_case(op, counted, held)) is not None:
                trips[op][name] = _count(admin, case, COUNT_RUNS)
        client.close()
    for op in OWNER_OPS:
        progress(f"redis owner index: {OWNER_LABELS[op]}")
        cases = {n: c for n, store in stores.items() if (c := _owner_case(op, store, held))}
        row = Row.timed(OWNER_LABELS[op], "µs", measure(cases, config), list(names))
        row.notes = {n: t.note() for n, t in trips[op].items()}
        row.notes.update({n: "no owner index" for n in names if n not in cases})
        table.rows.append(row)
    for store in stores.values():
        store.clear()
        store.close()
    return table


# ---- targets -------------------------------------------------------------------------------

# Round trips measured per table title: the targets read them after the tables are built.
_ROUND_TRIPS: dict[str, dict[str, dict[str, Trips]]] = {}


def _targets(tables: list[tuple[Table, str, str]]) -> list[Target]:
    targets: list[Target] = []
    for table, mine, floor in tables:
        trips = _ROUND_TRIPS[table.title]
        peers = PEERS[mine]
        worse = []
        shown = []
        for op in OPS:
            ours = trips[op].get(mine)
            theirs = {p: trips[op][p].round_trips for p in peers if p in trips[op]}
            if ours is None or not theirs:
                continue
            fewest = min(theirs.values())
            shown.append(f"{op} {ours.round_trips:g} vs {fewest:g}")
            if ours.round_trips > fewest:
                worse.append(op)
        targets.append(
            Target(
                f"{mine}: no more round trips than {', '.join(peers)}",
                not worse,
                "; ".join(shown) + (f" (more on: {', '.join(worse)})" if worse else ""),
            )
        )
        for op in ("get", "set"):
            row = table.row(LABELS[op])
            ours_us, floor_us = row.values.get(mine), row.values.get(floor)
            ratio = row.ratio(mine, floor)
            if ours_us is None or floor_us is None or ratio is None:
                continue
            targets.append(
                Target(
                    f"{mine} {LABELS[op]} within 1.1x {floor}",
                    ratio <= 1.1,
                    f"{ratio:.2f}x ({ours_us:.3g} vs {floor_us:.3g} µs)",
                )
            )
    return targets


@contextmanager
def _server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


def run(config: Config) -> Section:
    """Measure the Redis stores on one fresh local redis-server; return tables and targets."""
    logging.getLogger("lembro").setLevel(logging.ERROR)
    # Wall clock: a round trip is time spent waiting on a socket, which CPU time leaves out.
    # Wall time also counts whatever else the shared machine runs meanwhile: batches a
    # third as long, so a burst of other work spoils fewer of them.
    config = dataclasses.replace(config, clock="wall", batch_budget=config.batch_budget / 3)
    _ROUND_TRIPS.clear()
    with _server() as server:
        admin = redis.Redis.from_url(server.url)
        try:
            version = server.version()
            sync = _sync_table(server, admin, config)
            gc.collect()
            asyn = _async_table(server, admin, config)
            gc.collect()
            owners = _owner_table(server, admin, config)
        finally:
            admin.close()
    targets = _targets([(sync, LEMBRO, FLOOR), (asyn, LEMBRO_ASYNC, FLOOR_ASYNC)])
    set_row = owners.row(OWNER_LABELS["set"])
    ratio = set_row.ratio(OWNED, LEMBRO)
    same_trips = (
        set_row.notes.get(OWNED, "").split(":")[0] == set_row.notes.get(LEMBRO, "-").split(":")[0]
    )
    targets.append(
        Target(
            "RedisStore set with owner_key: the same round trips as without",
            same_trips,
            f"{set_row.notes.get(OWNED)} vs {set_row.notes.get(LEMBRO)}; "
            + (f"{ratio:.2f}x the time" if ratio is not None else "no ratio"),
        )
    )
    notes = [
        f'One redis-server {version} on 127.0.0.1, started for the run with --save "" '
        "--appendonly no; one client connection per store. Batches are timed with the wall "
        f"clock (time.perf_counter_ns), not CPU time: the work is a network round trip. Each "
        f"store holds {config.sessions:,} sessions under its own prefix; batches of up to "
        f"{config.batch:,} operations, {config.repeats} repeats, stores interleaved; cells "
        "are medians, and a ratio is the median of the two stores' ratios repeat by repeat.",
        "[n RT: ...] is the round trips one operation costs (sends on the store's connection, "
        "counted client side) and the commands Redis ran for it (INFO commandstats before "
        f"and after), averaged over {COUNT_RUNS} operations in a separate, untimed pass.",
        "Floors: bare redis-py GET and SET ... PX of msgspec msgpack bytes (lembro's "
        "serializer), on a client from from_url with its defaults. lembro's stores are built "
        "from a URL with theirs (socket_timeout 2 s, one retry on a connection error).",
        "Flask-Session: get/set/destroy call RedisSessionInterface._retrieve_session_data, "
        "_upsert_session and _delete_session, what its open_session/save_session call; "
        "msgspec msgpack, its default. starsessions: read/write/remove with its middleware's "
        "default JSON serializer around them. Neither has a touch: a rolling session is a "
        "rewrite (see set).",
        "A request: a session loaded from the request's cookie, one value changed, saved. "
        "Sync: open_session + save_session of lembro.flask's LembroSessionInterface and of "
        "Flask-Session's RedisSessionInterface on a Werkzeug request built beforehand (not "
        "timed). Async: the ASGI app lembro.starlette.SessionMiddleware and starsessions' "
        "SessionMiddleware + SessionAutoloadMiddleware, around an endpoint that changes "
        "the session. Floors: GET, decode, change, encode, SET, no framework.",
        "lembro.flask and lembro.starlette save a changed session they loaded with "
        "replace(): one SET ... XX, which writes only over a live record, so a session "
        "destroyed meanwhile (a logout elsewhere) is never written back; both peers SET "
        "unconditionally.",
        f"Owner index: the same RedisStore with owner_key={OWNER_FIELD!r} and without, on "
        f"{config.sessions:,} sessions of which each {PER_OWNER} consecutive ones share an "
        "owner, every session read once by the store beforehand (as a worker that served "
        "them): a write adds to its SET one EVAL of a script that ZADDs the session to its "
        "owner's set and pushes the set's expiry later when it must, pipelined in the same "
        "round trip; sessions_of is a ZREVRANGE of the owner's set and an MGET "
        "of its members.",
    ]
    return Section("Redis session stores", [sync, asyn, owners], targets, notes)
