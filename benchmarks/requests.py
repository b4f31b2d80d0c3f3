"""Per-request session cost in each framework: lembro's integration beside the peers.

Every app serves the same view: read a counter from the session and write it back plus
one (one session read and written per request), for one client that keeps its cookie.
The baseline is the same app with no sessions at all; a backend's *cost* is its time per
request over the baseline's, in the same repeat. Apps are driven in process, with no
server and no sockets (an ASGI call for Starlette, a WSGI call for Flask and Django), so
what is timed is the framework, the session machinery and the view.

- Starlette: ``lembro.starlette.SessionMiddleware`` (a ``MemoryStore``, Starlette's
  default arguments), Starlette's cookie ``SessionMiddleware``, starsessions with its
  ``InMemoryStore`` (``load_session`` in the view, as it asks).
- Flask: ``lembro.flask.Lembro`` (a ``MemoryStore``), Flask's cookie sessions,
  Flask-Session on cachelib's ``SimpleCache``.
- Django: ``lembro.django.SessionMiddleware`` with the ``lembro.django`` engine (the
  memory store); lembro's engine under Django's own ``SessionMiddleware``, for
  comparison (not a peer); Django's ``cache`` engine on ``LocMemCache``,
  ``signed_cookies`` and ``db`` on SQLite (a file, persistent connection), under Django's
  ``SessionMiddleware``.
- Litestar: ``lembro.litestar`` (``LembroSessionConfig``, a ``LembroStore`` on a
  ``MemoryStore``), Litestar's ``ServerSideSessionConfig`` on its own ``MemoryStore``,
  and its ``CookieBackendConfig``.

A table then puts each framework's lembro cost beside its best peer's (the peer with the
lowest cost in that run), with the ratio lembro/best peer.

Then one run on real servers on 127.0.0.1: uvicorn for Starlette and werkzeug's threaded
server for Flask, each app in a child process, driven by keep-alive clients in threads;
requests per second, bounded in count and time.
"""

from __future__ import annotations

import asyncio
import atexit
import http.client
import io
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import Case, Config, Row, Section, Table, Target, measure, progress, ticks

__all__ = ["run"]

SECRET = "bench-secret-key-bench-secret-key"
HERE = Path(__file__).resolve().parent

NONE = "no sessions"
LEMBRO = "lembro"

# What a logged-in user's session holds: the fields of memory_stores.session_data (about
# 250 bytes as msgpack), written by a client's first request; each timed request then
# reads them and counts one more visit.
SESSION: dict[str, Any] = {
    "user_id": 1_000_042,
    "username": "user1000042",
    "name": "Ada Lovelace",
    "email": "user1000042@example.org",
    "roles": ["member", "editor", "billing"],
    "csrf_token": "q7bT0m1T7o0n9rYb2xk8fJ3s6d5c4v3b2n1m0l9k8j7",
    "created_at": 1732790000.25,
    "last_seen": 1732790400.75,
    "is_staff": False,
    "mfa_verified": True,
    "locale": "en-GB",
    "cart_items": 3,
}


def _count(session: Any) -> int:
    """The view's work on the session: log in on the first request, then count visits."""
    if "user_id" not in session:
        session.update(SESSION)
    visits: int = session.get("visits", 0) + 1
    session["visits"] = visits
    return visits


# ---- drivers: one client, its cookie kept between requests ----


def _cookie_from(set_cookie: str) -> str | None:
    """``name=value`` of a Set-Cookie header, or ``None`` when it deletes the cookie."""
    pair = set_cookie.split(";", 1)[0].strip()
    lowered = set_cookie.lower()
    if pair.endswith("=") or pair.endswith('=""') or "max-age=0" in lowered or "1970" in lowered:
        return None
    return pair


class AsgiClient:
    """Calls an ASGI app directly with a GET, as a server would, keeping the cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookie: str | None = None

    def receiver(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        """A request's ``receive``: the empty body, at every read."""

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        return receive

    async def get(self, path: str) -> None:
        headers = [(b"host", b"bench")]
        if self.cookie is not None:
            headers.append((b"cookie", self.cookie.encode("latin-1")))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
            "state": {},
            "extensions": {},
        }
        receive = self.receiver()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 200, message
                for name, value in message.get("headers", ()):
                    if name.lower() == b"set-cookie":
                        self.cookie = _cookie_from(value.decode("latin-1"))

        await self.app(scope, receive, send)


class WsgiClient:
    """Calls a WSGI app directly with a GET, as a server would, keeping the cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookie: str | None = None
        self.base = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "bench",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        assert status.startswith("200"), status
        for name, value in headers:
            if name.lower() == "set-cookie":
                self.cookie = _cookie_from(value)
        return lambda _data: None

    def get(self, path: str) -> None:
        environ = dict(self.base)
        environ["PATH_INFO"] = path
        environ["wsgi.input"] = io.BytesIO(b"")
        if self.cookie is not None:
            environ["HTTP_COOKIE"] = self.cookie
        body = self.app(environ, self._start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _asgi_case(
    app: Any, loop: asyncio.AbstractEventLoop, client_class: type[AsgiClient] = AsgiClient
) -> Case[int]:
    client = client_class(app)

    async def batch(n: int) -> int:
        get = client.get
        start = ticks()
        for _ in range(n):
            await get("/")
        return ticks() - start

    loop.run_until_complete(client.get("/"))  # the first request creates the session
    return Case(prepare=lambda n: n, run=lambda n: loop.run_until_complete(batch(n)))


def _wsgi_case(app: Any) -> Case[int]:
    client = WsgiClient(app)
    client.get("/")  # the first request creates the session

    def batch(n: int) -> None:
        get = client.get
        for _ in range(n):
            get("/")

    return Case(prepare=lambda n: n, run=batch)


# ---- the apps ----


def starlette_app(kind: str) -> Any:
    """The Starlette app with ``kind``'s sessions (``NONE`` for none)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def count(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(_count(request.session)))

    async def bare(request: Request) -> PlainTextResponse:
        return PlainTextResponse("1")

    middleware: list[Any] = []
    view: Any = count
    if kind == LEMBRO:
        from lembro import MemoryStore
        from lembro.starlette import SessionMiddleware as LembroMiddleware

        store = MemoryStore("64M", None)
        middleware = [Middleware(LembroMiddleware, secret_key=SECRET, store=store)]
    elif kind == "Starlette cookie":
        from starlette.middleware.sessions import SessionMiddleware

        middleware = [Middleware(SessionMiddleware, secret_key=SECRET)]
    elif kind == "starsessions InMemoryStore":
        from starsessions import InMemoryStore, load_session
        from starsessions import SessionMiddleware as StarMiddleware

        async def star_count(request: Request) -> PlainTextResponse:
            await load_session(request)
            return await count(request)

        view = star_count
        middleware = [Middleware(StarMiddleware, store=InMemoryStore(), cookie_https_only=False)]
    else:
        view = bare
    return Starlette(routes=[Route("/", view)], middleware=middleware)


def flask_app(kind: str) -> Any:
    """The Flask app with ``kind``'s sessions (``NONE`` for none)."""
    from flask import Flask, session

    app = Flask(f"bench_{kind.replace(' ', '_')}")
    app.secret_key = SECRET

    @app.get("/")
    def count() -> str:
        if kind == NONE:
            return "1"
        return str(_count(session))

    if kind == LEMBRO:
        from lembro import MemoryStore
        from lembro.flask import Lembro

        Lembro(app, MemoryStore("64M", None))
    elif kind == "Flask-Session cachelib":
        from cachelib import SimpleCache
        from flask_session import Session

        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache(threshold=100_000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Session(app)
    return app


def litestar_app(kind: str) -> Any:
    """The Litestar app with ``kind``'s sessions (``NONE`` for none)."""
    from litestar import Litestar, Request, get

    @get("/", sync_to_thread=False)
    def count(request: Request[Any, Any, Any]) -> str:
        if kind == NONE:
            return "1"
        return str(_count(request.session))

    middleware: list[Any] = []
    stores: dict[str, Any] = {}
    if kind == LEMBRO:
        from lembro import MemoryStore
        from lembro.litestar import LembroSessionConfig, LembroStore

        middleware = [LembroSessionConfig().middleware]
        stores = {"sessions": LembroStore(MemoryStore("64M", None))}
    elif kind == "Litestar server-side MemoryStore":
        from litestar.middleware.session.server_side import ServerSideSessionConfig
        from litestar.stores.memory import MemoryStore as LitestarMemoryStore

        middleware = [ServerSideSessionConfig().middleware]
        stores = {"sessions": LitestarMemoryStore()}
    elif kind == "Litestar cookie":
        from litestar.middleware.session.client_side import CookieBackendConfig

        middleware = [CookieBackendConfig(secret=SECRET.encode()[:32]).middleware]
    return Litestar([count], middleware=middleware, stores=stores, logging_config=None)


FLASK_KINDS = [NONE, LEMBRO, "Flask cookie", "Flask-Session cachelib"]
LITESTAR_KINDS = [NONE, LEMBRO, "Litestar server-side MemoryStore", "Litestar cookie"]
STARLETTE_KINDS = [NONE, LEMBRO, "Starlette cookie", "starsessions InMemoryStore"]
LEMBRO_DJANGO_MIDDLEWARE = "lembro engine, Django's middleware"
DJANGO_ENGINES = {
    NONE: None,
    LEMBRO: "lembro.django",
    LEMBRO_DJANGO_MIDDLEWARE: "lembro.django",
    "Django cache (LocMem)": "django.contrib.sessions.backends.cache",
    "Django signed_cookies": "django.contrib.sessions.backends.signed_cookies",
    "Django db (SQLite)": "django.contrib.sessions.backends.db",
}


def _django_views() -> Any:
    from django.http import HttpResponse
    from django.urls import path

    def count(request: Any) -> HttpResponse:
        return HttpResponse(str(_count(request.session)))

    def bare(request: Any) -> HttpResponse:
        return HttpResponse("1")

    return [path("", count), path("bare", bare)]


urlpatterns: list[Any] = []


def _configure_django() -> None:
    from django.conf import settings

    if settings.configured:
        if getattr(settings, "LEMBRO_BENCH", False):
            return
        raise RuntimeError(
            "Django was configured before benchmarks/requests.py: run this section first"
        )
    # Django's db engine's SQLite file, removed when the run ends.
    directory = tempfile.mkdtemp(prefix="lembro-bench-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    settings.configure(
        LEMBRO_BENCH=True,
        SECRET_KEY=SECRET,
        USE_TZ=True,
        ALLOWED_HOSTS=["bench"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.sessions"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(directory, "sessions.sqlite3"),
                "CONN_MAX_AGE": None,
            }
        },
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="lembro.django",
        LEMBRO={"INTERVAL": None, "MAX_SIZE": "64M"},
    )
    import django

    django.setup()
    urlpatterns.extend(_django_views())
    from django.contrib.sessions.models import Session
    from django.db import connection

    with connection.schema_editor() as editor:
        editor.create_model(Session)


def django_app(kind: str) -> tuple[Any, str]:
    """A Django WSGI handler with ``kind``'s engine, and the path it serves."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    engine = DJANGO_ENGINES[kind]
    if engine is None:
        with override_settings(MIDDLEWARE=[]):
            return WSGIHandler(), "/bare"
    # lembro with its own middleware; the other engines (and lembro's engine alone, for
    # comparison) with Django's.
    middleware = (
        "lembro.django.SessionMiddleware"
        if kind == LEMBRO
        else "django.contrib.sessions.middleware.SessionMiddleware"
    )
    # SessionMiddleware takes its engine when the handler is built.
    with override_settings(SESSION_ENGINE=engine, MIDDLEWARE=[middleware]):
        return WSGIHandler(), "/"


# ---- in-process tables ----


def _cost_rows(timings: Any, names: list[str]) -> tuple[Row, Row]:
    """(cost over no sessions, time per request) rows; costs paired repeat by repeat."""
    base = timings.samples[NONE]
    costs = {
        name: [t - b for t, b in zip(timings.samples[name], base, strict=True)] for name in names
    }
    cost = Row(
        "session cost per request",
        "µs",
        {name: statistics.median(costs[name]) for name in names},
        samples=costs,
    )
    total = Row.timed("time per request", "µs", timings, [NONE, *names])
    return cost, total


def _table(framework: str, cases: dict[str, Case[Any]], config: Config) -> Table:
    progress(f"requests: {framework}, {len(cases)} apps interleaved")
    timings = measure(cases, config)
    names = [name for name in cases if name != NONE]
    cost, total = _cost_rows(timings, names)
    table = Table(f"{framework}: one session read and written per request", [NONE, *names], LEMBRO)
    table.rows += [cost, total]
    return table


FRAMEWORKS = ("starlette", "flask", "django", "litestar")


def _framework_table(framework: str, config: Config) -> Table:
    """The in-process table of one framework (a name of ``FRAMEWORKS``)."""
    if framework in ("starlette", "litestar"):
        build, kinds = (
            (starlette_app, STARLETTE_KINDS)
            if framework == "starlette"
            else (litestar_app, LITESTAR_KINDS)
        )
        loop = asyncio.new_event_loop()
        try:
            cases = {kind: _asgi_case(build(kind), loop) for kind in kinds}
            return _table(framework.capitalize(), cases, config)
        finally:
            loop.close()
    if framework == "flask":
        return _table("Flask", {kind: _wsgi_case(flask_app(kind)) for kind in FLASK_KINDS}, config)
    _configure_django()
    django_cases: dict[str, Case[Any]] = {}
    for kind in DJANGO_ENGINES:
        handler, path = django_app(kind)
        django_cases[kind] = _path_case(handler, path)
    return _table("Django", django_cases, config)


def _in_process(config: Config) -> list[Table]:
    return [_framework_table(framework, config) for framework in FRAMEWORKS]


def _path_case(app: Any, path: str) -> Case[int]:
    client = WsgiClient(app)
    client.get(path)

    def batch(n: int) -> None:
        get = client.get
        for _ in range(n):
            get(path)

    return Case(prepare=lambda n: n, run=batch)


# ---- real servers ----


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What a child process runs first: this module, loaded from its file as ``module``.
_LOAD_MODULE = """
import importlib.util, sys, logging
sys.path.insert(0, {here!r})
spec = importlib.util.spec_from_file_location("lembro_bench_requests", {file!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # Django's ROOT_URLCONF and Litestar's type hints import it
spec.loader.exec_module(module)
logging.disable(logging.CRITICAL)
"""


def _child(body: str, **fields: object) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a Python child that loads this module, then
    runs ``body`` (formatted with ``fields``)."""
    code = (_LOAD_MODULE + body).format(
        here=str(HERE), file=str(Path(__file__).resolve()), **fields
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])}
    return [sys.executable, "-c", code], env


_SERVE = """
if {framework!r} == "starlette":
    import uvicorn
    uvicorn.run(module.starlette_app({kind!r}), host="127.0.0.1", port={port},
                log_level="error", access_log=False, lifespan="off")
else:
    from werkzeug.serving import WSGIRequestHandler, make_server
    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
        def log_request(self, *args, **kwargs):
            pass
    make_server("127.0.0.1", {port}, module.flask_app({kind!r}), threaded=True,
                request_handler=Handler).serve_forever()
"""


def _serve(framework: str, kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    command, env = _child(_SERVE, framework=framework, kind=kind, port=port)
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{framework} {kind} did not start on port {port}")


def _load(port: int, clients: int, per_client: int, limit: float) -> float:
    """Requests per second over ``clients`` keep-alive connections, each its own session."""
    done = [0] * clients
    stop = time.monotonic() + limit

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        cookie: str | None = None
        for _ in range(per_client):
            if time.monotonic() > stop:
                break
            headers = {} if cookie is None else {"Cookie": cookie}
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            for header in response.headers.get_all("Set-Cookie") or ():
                cookie = _cookie_from(header)
            done[index] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start)


def _servers(config: Config) -> Table:
    """Requests/s of each app on its own server; every app of a framework is up at once
    and measured in rounds, the order rotating, so that each sees the same machine."""
    clients = 8
    rounds = 1 if config.quick else 5
    per_client = 40 if config.quick else 250
    limit = 3.0 if config.quick else 10.0
    rows: dict[str, dict[str, float | None]] = {}
    for framework, kinds in (("starlette", STARLETTE_KINDS), ("flask", FLASK_KINDS)):
        progress(f"requests: {framework} on real servers, {rounds} rounds")
        servers = {kind: _serve(framework, kind) for kind in kinds}
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        try:
            for _process, port in servers.values():
                _load(port, clients, max(5, per_client // 10), limit)  # warm up
            for index in range(rounds):
                shift = index % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    samples[kind].append(_load(servers[kind][1], clients, per_client, limit))
        finally:
            for process, _port in servers.values():
                process.terminate()
                process.wait(10)
        rows[framework] = {kind: statistics.median(values) for kind, values in samples.items()}
    table = Table(
        f"real servers on 127.0.0.1, {clients} keep-alive clients in threads of this process",
        [
            NONE,
            LEMBRO,
            "Starlette cookie",
            "starsessions InMemoryStore",
            "Flask cookie",
            "Flask-Session cachelib",
        ],
        LEMBRO,
    )
    table.rows.append(Row("Starlette under uvicorn", "requests/s", rows["starlette"]))
    table.rows.append(Row("Flask under werkzeug, threaded", "requests/s", rows["flask"]))
    return table


# ---- instructions, counted by valgrind ----

_COUNT = """
import asyncio
count = {warm} + {n}
if {framework!r} in ("starlette", "litestar"):
    app = getattr(module, {framework!r} + "_app")({kind!r})
    client = module.AsgiClient(app)
    async def batch():
        for _ in range(count):
            await client.get("/")
    asyncio.new_event_loop().run_until_complete(batch())
else:
    if {framework!r} == "django":
        module._configure_django()
        app, path = module.django_app({kind!r})
    else:
        app, path = module.flask_app({kind!r}), "/"
    client = module.WsgiClient(app)
    for _ in range(count):
        client.get(path)
"""

_VALGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def _counting(framework: str, kind: str, n: int, warm: int) -> subprocess.Popen[str]:
    """A child that makes ``warm + n`` requests to ``kind``'s app under callgrind."""
    command, env = _child(_COUNT, framework=framework, kind=kind, n=n, warm=warm)
    return subprocess.Popen(
        [*_VALGRIND, *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collected(process: subprocess.Popen[str]) -> int:
    """The instructions callgrind counted in ``process``'s whole run."""
    _out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the counted child failed (exit {process.returncode}): {err[-800:]}")
    for line in err.splitlines():
        if "Collected :" in line:
            return int(line.split("Collected :")[1].split()[0])
    raise RuntimeError(f"callgrind counted nothing (exit {process.returncode}): {err[-500:]}")


def _instructions(config: Config) -> Table | None:
    """Instructions per request of each Starlette and Flask app, counted by callgrind:
    the same on every run of one build, whatever else the machine is doing. ``None``
    without valgrind, or in a smoke run."""
    if config.quick or shutil.which("valgrind") is None:
        return None
    n, warm = 500, 50
    table = Table(
        "Instructions per request, counted by valgrind (callgrind): lembro beside the best peer",
        [LEMBRO, "best peer"],
        LEMBRO,
    )
    django_kinds = [kind for kind in DJANGO_ENGINES if kind != "Django db (SQLite)"]
    for framework, kinds in (
        ("starlette", STARLETTE_KINDS),
        ("flask", FLASK_KINDS),
        ("django", django_kinds),
        ("litestar", LITESTAR_KINDS),
    ):
        progress(f"requests: {framework}, instructions per request under callgrind")
        per_request: dict[str, float] = {}
        for kind in kinds:  # two children at once: the runs and the baseline
            short, long = _counting(framework, kind, 0, warm), _counting(framework, kind, n, warm)
            per_request[kind] = (_collected(long) - _collected(short)) / n
        base = per_request.pop(NONE)
        costs = {kind: count - base for kind, count in per_request.items()}
        peers = [kind for kind in costs if kind not in (LEMBRO, LEMBRO_DJANGO_MIDDLEWARE)]
        best = min(peers, key=lambda kind: costs[kind])
        label = (
            f"{framework.capitalize()}: session cost per request (best peer: {best}; "
            f"lembro/best peer {costs[LEMBRO] / costs[best]:.2f})"
        )
        table.rows.append(
            Row(label, "instructions", {LEMBRO: costs[LEMBRO], "best peer": costs[best]})
        )
    return table


# ---- the section ----


def _peers(table: Table) -> list[str]:
    """The peers of a framework's table: its columns but no sessions and lembro's own."""
    return [name for name in table.columns if name not in (NONE, LEMBRO, LEMBRO_DJANGO_MIDDLEWARE)]


def _best_peer(table: Table) -> str:
    """The peer with the lowest session cost in ``table``."""
    row = table.row("session cost per request")
    return min(_peers(table), key=lambda peer: row.values.get(peer) or float("inf"))


def _target(table: Table, framework: str, bound: float, goal: str) -> Target:
    row = table.row("session cost per request")
    ratios = {peer: row.ratio(LEMBRO, peer) for peer in _peers(table)}
    best = _best_peer(table)
    detail = ", ".join(
        f"lembro/{peer}{' (best peer)' if peer == best else ''} {ratio:.2f}"
        for peer, ratio in ratios.items()
        if ratio is not None
    )
    ok = all(ratio is not None and ratio <= bound for ratio in ratios.values())
    return Target(f"{framework}: {goal}", ok, detail)


def _side_by_side(tables: list[Table]) -> Table:
    """Each framework's lembro cost beside its best peer's, from the tables of this run."""
    table = Table(
        "Session cost per request, lembro beside the best peer of each framework (this run)",
        [LEMBRO, "best peer"],
        LEMBRO,
    )
    for framework_table in tables:
        row = framework_table.row("session cost per request")
        best = _best_peer(framework_table)
        ratio = row.ratio(LEMBRO, best)
        framework = framework_table.title.split(":", 1)[0]
        label = f"{framework} (best peer: {best}; lembro/best peer {ratio:.2f})"
        table.rows.append(
            Row(
                label,
                "µs",
                {LEMBRO: row.values.get(LEMBRO), "best peer": row.values.get(best)},
                samples={LEMBRO: row.samples[LEMBRO], "best peer": row.samples[best]},
            )
        )
    return table


def run(config: Config) -> Section:
    """Measure the request-level session cost of each integration and its peers."""
    logging.getLogger("lembro").setLevel(logging.ERROR)
    tables = _in_process(config)
    starlette, flask, django, litestar = tables
    half = "lembro's cost at most half of every peer's"
    targets = [
        _target(starlette, "Starlette", 0.5, half),
        _target(flask, "Flask", 0.5, half),
        _target(django, "Django", 0.5, "lembro's cost at most half of every engine's"),
        _target(litestar, "Litestar", 0.5, half),
    ]
    tables.insert(0, _side_by_side(tables))
    tables.append(_servers(config))
    counted = _instructions(config)
    if counted is not None:
        tables.append(counted)
    notes = [
        "Session cost: time per request over the same app with no sessions, both timed in "
        "the same repeat; a ratio of two backends is the median of their cost ratios repeat "
        "by repeat. Cells show each backend's ratio to lembro: 3.00x is three times "
        "lembro's cost.",
        f"In process: {config.repeats} repeats of batches of up to {config.batch:,} requests, "
        "apps interleaved, one client whose cookie is kept. The session holds a logged-in "
        "user's fields (about 250 bytes as msgpack, as in the store tables); each request "
        "reads it and counts one more visit.",
        "Django: lembro is lembro.django.SessionMiddleware with the lembro.django engine; "
        "\"lembro engine, Django's middleware\" is the same engine under Django's own "
        "SessionMiddleware (not a peer), beside Django's engines under theirs.",
        "Real servers: each app in a child process of its own, all of a framework's apps up "
        "at once and measured in rounds (5 in a full run, the order rotating; cells are "
        "medians); the clients run in this process, on the same cores, so requests/s "
        "include the clients' own cost.",
        "Instructions (when valgrind is installed): each app in a child process under "
        "callgrind, 550 requests less 50, over 500; cost over the same app with no "
        "sessions. A count does not change with the machine's load, so it settles what "
        "a noisy run leaves open, but it is not time: an instruction of interpreted "
        "Python costs more than one of a C loop, so a Python-heavy backend's share of "
        "time is larger than its share of instructions.",
    ]
    return Section("Request-level session cost", tables, targets, notes)


if __name__ == "__main__":  # pragma: no cover - a quick look without run.py
    # python benchmarks/requests.py              the whole section, smoke sizes
    # python benchmarks/requests.py django ...   only these frameworks' in-process tables,
    #                                            full sizes
    from harness import render_text

    chosen = sys.argv[1:]
    if not chosen:
        print(render_text(run(Config.smoke())))
    else:
        logging.getLogger("lembro").setLevel(logging.ERROR)
        unknown = set(chosen) - set(FRAMEWORKS)
        if unknown:
            sys.exit(f"unknown framework(s) {sorted(unknown)}: choose from {FRAMEWORKS}")
        config = Config()
        chosen_tables = [_framework_table(framework, config) for framework in chosen]
        targets = [_target(t, t.title.split(":")[0], 0.5, "at most half") for t in chosen_tables]
        chosen_tables.insert(0, _side_by_side(chosen_tables))
        print(render_text(Section("Request-level session cost", chosen_tables, targets)))
