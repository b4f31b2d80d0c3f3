"""Per-request session cost in Quart and aiohttp: lembro's integration beside the peers.

The same view and the same measure as ``requests.py``: read a counter from the session
and write it back plus one, for one client that keeps its cookie; a backend's *cost* is
its time per request over the same app with no sessions, in the same repeat. Apps are
driven in process, with no server and no sockets: an ASGI call for Quart, aiohttp's own
``Application._handle`` (routing and middlewares, as its server calls it) for aiohttp.

- Quart: ``lembro.quart.Lembro`` (a ``MemoryStore``), Quart's cookie sessions, and
  quart-session (which has no in-memory backend: Redis, memcached, MongoDB or none) on
  its Redis interface handed a dict in this process, so only quart-session's own work is
  timed, none of a backend's.
- aiohttp: ``lembro.aiohttp.LembroStorage`` (a ``MemoryStore``), and aiohttp-session's
  ``SimpleCookieStorage`` (JSON in the cookie) and ``EncryptedCookieStorage`` (Fernet;
  aiohttp-session has no in-memory storage either).

Then, when a redis-server is at hand, the same apps on one started for the run: lembro's
``RedisStore`` beside quart-session's Redis interface and aiohttp-session's
``RedisStorage``, timed with the wall clock (a round trip is time spent waiting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness import Case, Config, Row, Section, Table, Target, measure, progress, ticks
from requests import (
    LEMBRO,
    NONE,
    SECRET,
    AsgiClient,
    _asgi_case,
    _cookie_from,
    _cost_rows,
    _count,
)

__all__ = ["run"]

QUART_COOKIE = "Quart cookie"
QUART_SESSION = "quart-session (dict backend)"
SIMPLE_COOKIE = "aiohttp-session SimpleCookieStorage"
ENCRYPTED_COOKIE = "aiohttp-session EncryptedCookieStorage"
QUART_KINDS = [NONE, LEMBRO, QUART_COOKIE, QUART_SESSION]
AIOHTTP_KINDS = [NONE, LEMBRO, SIMPLE_COOKIE, ENCRYPTED_COOKIE]

LEMBRO_REDIS = "lembro RedisStore"
QUART_SESSION_REDIS = "quart-session redis"
AIOHTTP_REDIS = "aiohttp-session RedisStorage"

# EncryptedCookieStorage's key: 32 bytes.
_FERNET_KEY = b"bench-fernet-key-32-bytes-long!!"


class DictBackend:
    """What quart-session's Redis interface asks of its client (``get``, ``setex``,
    ``delete``), on a dict in this process: the backend costs nothing, so what is timed
    is quart-session's own work."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, key: str) -> Any:
        return self.data.get(key)

    async def setex(self, name: str, time: Any, value: Any) -> None:
        self.data[name] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


# ---- the apps ----


def quart_app(kind: str, redis_url: str | None = None, prefix: str = "") -> Any:
    """The Quart app with ``kind``'s sessions (``NONE`` for none); on Redis at
    ``redis_url`` for the Redis kinds."""
    from quart import Quart, session

    app = Quart(f"bench_quart_{kind.replace(' ', '_')}")
    app.secret_key = SECRET

    @app.get("/")
    async def count() -> str:
        if kind == NONE:
            return "1"
        return str(_count(session))

    if kind in (LEMBRO, LEMBRO_REDIS):
        from lembro import MemoryStore, RedisStore
        from lembro.quart import Lembro

        if kind == LEMBRO:
            Lembro(app, MemoryStore("64M", None))
        else:
            Lembro(app, RedisStore(redis_url or "", prefix=prefix))
    elif kind in (QUART_SESSION, QUART_SESSION_REDIS):
        from quart_session import Session

        if kind == QUART_SESSION:
            backend: Any = DictBackend()
        else:
            from redis import asyncio as aioredis

            backend = aioredis.from_url(redis_url or "", decode_responses=True)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=backend, SESSION_KEY_PREFIX=prefix)
        Session(app)
    return app


def aiohttp_app(kind: str, redis_url: str | None = None, prefix: str = "") -> Any:
    """The aiohttp app with ``kind``'s storage (``NONE`` for none), frozen as its server
    freezes it; on Redis at ``redis_url`` for the Redis kinds."""
    import aiohttp_session
    from aiohttp import web

    async def count(request: web.Request) -> web.Response:
        if kind == NONE:
            return web.Response(text="1")
        session = await aiohttp_session.get_session(request)
        return web.Response(text=str(_count(session)))

    app = web.Application()
    storage: Any = None
    if kind in (LEMBRO, LEMBRO_REDIS):
        from lembro import MemoryStore, RedisStore
        from lembro.aiohttp import LembroStorage

        store: Any = (
            MemoryStore("64M", None)
            if kind == LEMBRO
            else RedisStore(redis_url or "", prefix=prefix)
        )
        storage = LembroStorage(store, secret_key=SECRET)
    elif kind == SIMPLE_COOKIE:
        storage = aiohttp_session.SimpleCookieStorage()
    elif kind == ENCRYPTED_COOKIE:
        from aiohttp_session.cookie_storage import EncryptedCookieStorage

        storage = EncryptedCookieStorage(_FERNET_KEY)
    elif kind == AIOHTTP_REDIS:
        from aiohttp_session.redis_storage import RedisStorage
        from redis import asyncio as aioredis

        storage = RedisStorage(aioredis.from_url(redis_url or ""))  # keys: its cookie name, _, id
    if storage is not None:
        aiohttp_session.setup(app, storage)
    app.router.add_get("/", count)
    app.freeze()
    return app


# ---- the aiohttp driver: a request built as its server builds one, handled in process ----


class AiohttpClient:
    """Hands an aiohttp app a GET as its server would (``Application._handle``: routing,
    middlewares, the view), keeping the cookie. No socket: the protocol and writer are
    stand-ins that nothing in this path writes to."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        from aiohttp.streams import EMPTY_PAYLOAD

        self.app = app
        self.loop = loop
        self.cookie: str | None = None
        self._payload = EMPTY_PAYLOAD
        self._protocol = SimpleNamespace(
            ssl_context=None,
            peername=("127.0.0.1", 50000),
            sockname=("127.0.0.1", 80),
            transport=None,
            writer=None,
        )

    async def get(self, path: str) -> None:
        from aiohttp import web
        from aiohttp.http import HttpVersion11, RawRequestMessage
        from multidict import CIMultiDict, CIMultiDictProxy
        from yarl import URL

        pairs = [("Host", "bench")]
        if self.cookie is not None:
            pairs.append(("Cookie", self.cookie))
        headers = CIMultiDictProxy(CIMultiDict(pairs))
        raw = tuple((k.encode(), v.encode()) for k, v in pairs)
        message = RawRequestMessage(
            "GET", path, HttpVersion11, headers, raw, False, None, False, False, URL(path)
        )
        request = web.Request(
            message,
            self._payload,
            self._protocol,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            self.loop,
        )
        response = await self.app._handle(request)
        assert response.status == 200, response.status
        for morsel in response.cookies.values():
            header = morsel.OutputString()
            self.cookie = _cookie_from(header)


def _aiohttp_case(app: Any, loop: asyncio.AbstractEventLoop) -> Case[int]:
    client = AiohttpClient(app, loop)

    async def batch(n: int) -> int:
        get = client.get
        start = ticks()
        for _ in range(n):
            await get("/")
        return ticks() - start

    loop.run_until_complete(client.get("/"))  # the first request creates the session
    return Case(prepare=lambda n: n, run=lambda n: loop.run_until_complete(batch(n)))


class QuartClient(AsgiClient):
    """An :class:`AsgiClient` for Quart, which reads the request's messages in a task of
    its own until the client goes away: the body is handed over once, and later reads
    wait until Quart cancels them (an answer at once would have that task spin)."""

    def receiver(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        sent = [False]

        async def receive() -> dict[str, Any]:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.get_running_loop().create_future()  # until Quart cancels it
            return {"type": "http.disconnect"}

        return receive


def _quart_case(app: Any, loop: asyncio.AbstractEventLoop) -> Case[int]:
    return _asgi_case(app, loop, QuartClient)


def _table(title: str, cases: dict[str, Case[Any]], config: Config, baseline: str) -> Table:
    progress(f"quart_aiohttp: {title}, {len(cases)} apps interleaved")
    timings = measure(cases, config)
    names = [name for name in cases if name != NONE]
    cost, total = _cost_rows(timings, names)
    table = Table(title, [NONE, *names], baseline)
    table.rows += [cost, total]
    return table


def _target(table: Table, framework: str, ours: str) -> Target:
    row = table.row("session cost per request")
    peers = [name for name in table.columns if name not in (NONE, ours)]
    ratios = {peer: row.ratio(ours, peer) for peer in peers}
    detail = ", ".join(
        f"lembro/{peer} {ratio:.2f}" for peer, ratio in ratios.items() if ratio is not None
    )
    ok = all(ratio is not None and ratio <= 0.5 for ratio in ratios.values())
    return Target(f"{framework}: lembro's cost at most half of every peer's", ok, detail)


def _in_process(config: Config) -> list[Table]:
    loop = asyncio.new_event_loop()
    try:
        quart = _table(
            "Quart: one session read and written per request",
            {kind: _quart_case(quart_app(kind), loop) for kind in QUART_KINDS},
            config,
            LEMBRO,
        )
        gc.collect()
        aiohttp = _table(
            "aiohttp: one session read and written per request",
            {kind: _aiohttp_case(aiohttp_app(kind), loop) for kind in AIOHTTP_KINDS},
            config,
            LEMBRO,
        )
    finally:
        loop.close()
    return [quart, aiohttp]


def _on_redis(config: Config) -> tuple[list[Table], str] | None:
    """Each framework's Redis kinds on one redis-server started for the run, timed with
    the wall clock; with the server's version. ``None`` without a redis-server."""
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return None
    from redis_stores import RedisServer

    # Wall clock: a round trip is time spent waiting on a socket, which CPU time leaves
    # out; batches a third as long, as the Redis section's, so a burst of other work on
    # the shared machine spoils fewer of them.
    config = dataclasses.replace(config, clock="wall", batch_budget=config.batch_budget / 3)
    server = RedisServer()
    loop = asyncio.new_event_loop()
    try:
        url, version = server.url, server.version()
        quart = _table(
            "Quart on a local redis-server (wall clock)",
            {
                NONE: _quart_case(quart_app(NONE), loop),
                LEMBRO_REDIS: _quart_case(quart_app(LEMBRO_REDIS, url, "lq:"), loop),
                QUART_SESSION_REDIS: _quart_case(quart_app(QUART_SESSION_REDIS, url, "qs:"), loop),
            },
            config,
            LEMBRO_REDIS,
        )
        gc.collect()
        aiohttp = _table(
            "aiohttp on a local redis-server (wall clock)",
            {
                NONE: _aiohttp_case(aiohttp_app(NONE), loop),
                LEMBRO_REDIS: _aiohttp_case(aiohttp_app(LEMBRO_REDIS, url, "la:"), loop),
                AIOHTTP_REDIS: _aiohttp_case(aiohttp_app(AIOHTTP_REDIS, url, "as:"), loop),
            },
            config,
            LEMBRO_REDIS,
        )
    finally:
        loop.close()
        server.close()
    return [quart, aiohttp], version


# ---- instructions, counted by valgrind ----

HERE = Path(__file__).resolve().parent

# What a child under callgrind runs: this module, loaded from its file, makes
# ``warm + n`` requests to one app.
_COUNT = """
import asyncio, importlib.util, logging, sys
sys.path.insert(0, {here!r})
spec = importlib.util.spec_from_file_location("lembro_bench_quart_aiohttp", {file!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
logging.disable(logging.CRITICAL)
loop = asyncio.new_event_loop()
if {framework!r} == "quart":
    client = module.QuartClient(module.quart_app({kind!r}))
else:
    client = module.AiohttpClient(module.aiohttp_app({kind!r}), loop)
async def batch():
    for _ in range({warm} + {n}):
        await client.get("/")
loop.run_until_complete(batch())
"""

_VALGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def _counting(framework: str, kind: str, n: int, warm: int) -> subprocess.Popen[str]:
    """A child that makes ``warm + n`` requests to ``kind``'s app under callgrind."""
    code = _COUNT.format(
        here=str(HERE),
        file=str(Path(__file__).resolve()),
        framework=framework,
        kind=kind,
        n=n,
        warm=warm,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])}
    return subprocess.Popen(
        [*_VALGRIND, sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collected(process: subprocess.Popen[str]) -> int:
    """The instructions callgrind counted in ``process``'s whole run."""
    _out, err = process.communicate()
    for line in err.splitlines():
        if "Collected :" in line:
            return int(line.split("Collected :")[1].split()[0])
    raise RuntimeError(f"callgrind counted nothing (exit {process.returncode}): {err[-500:]}")


def _instructions(config: Config) -> Table | None:
    """Instructions per request of each in-process app, counted by callgrind: the same on
    every run of one build, whatever else the machine is doing. ``None`` without
    valgrind, or in a smoke run."""
    if config.quick or shutil.which("valgrind") is None:
        return None
    n, warm = 500, 50
    rows: list[Row] = []
    for framework, kinds in (("quart", QUART_KINDS), ("aiohttp", AIOHTTP_KINDS)):
        progress(f"quart_aiohttp: {framework}, instructions per request under callgrind")
        per_request: dict[str, float] = {}
        for kind in kinds:  # two children at once: the run and its start-up alone
            short, long = _counting(framework, kind, 0, warm), _counting(framework, kind, n, warm)
            per_request[kind] = (_collected(long) - _collected(short)) / n
        base = per_request.pop(NONE)
        values: dict[str, float | None] = {
            kind: count - base for kind, count in per_request.items()
        }
        rows.append(Row(f"{framework}: session cost per request", "instructions", values))
    columns = [LEMBRO, *[k for k in QUART_KINDS + AIOHTTP_KINDS if k not in (NONE, LEMBRO)]]
    table = Table("Instructions per request, counted by valgrind (callgrind)", columns, LEMBRO)
    table.rows += rows
    return table


# ---- the section ----


def run(config: Config) -> Section:
    """Measure the request-level session cost of Quart's and aiohttp's sessions."""
    logging.getLogger("lembro").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="aiohttp_session")
    tables = _in_process(config)
    quart, aiohttp = tables
    targets = [_target(quart, "Quart", LEMBRO), _target(aiohttp, "aiohttp", LEMBRO)]
    on_redis = _on_redis(config)
    if on_redis is not None:
        tables += on_redis[0]
    counted = _instructions(config)
    if counted is not None:
        tables.append(counted)
    notes = [
        "Session cost: time per request over the same app with no sessions, both timed in "
        "the same repeat; a ratio of two backends is the median of their cost ratios repeat "
        "by repeat. Cells show each backend's ratio to lembro.",
        f"In process: {config.repeats} repeats of batches of up to {config.batch:,} requests, "
        "apps interleaved, one client whose cookie is kept; the session holds a logged-in "
        "user's fields, as in the Flask and Starlette tables.",
        "quart-session's dict backend: quart-session's Redis interface handed an object "
        "with its client's get, setex and delete on a dict, so its cost is quart-session's "
        "own (JSON with tags, the cookie); it signs no id by default (uuid4 in the cookie).",
    ]
    if counted is not None:
        notes.append(
            "Instructions (when valgrind is installed): each app in a child process under "
            "callgrind, 550 requests less 50, over 500; cost over the same app with no "
            "sessions, as in the Flask and Starlette instruction counts."
        )
    if on_redis is not None:
        notes.append(
            f"On Redis: one redis-server {on_redis[1]} on 127.0.0.1 started for the run, "
            "each backend under keys of its own, timed with the wall clock. Round trips "
            "per request: lembro 3 (a GET to load; a GET and a compare-and-set script to "
            "write back only the keys changed, so overlapping requests keep each other's "
            "changes), quart-session and aiohttp-session 2 (GET, then SET of the whole "
            "session: the last request to finish wins)."
        )
    return Section("Request-level session cost: Quart and aiohttp", tables, targets, notes)


if __name__ == "__main__":  # pragma: no cover - a quick look without run.py
    from harness import render_text

    print(render_text(run(Config.smoke())))
