"""The soak: real servers, real HTTP traffic, and the memory each session store holds.

``make soak`` (``python -m tools.soak`` from the repository root) runs, for each store, the
same Flask app served single-process by werkzeug's threaded WSGI server in its own
subprocess on a free loopback port (see :mod:`tools.soak_server`), and drives it from a
load generator in another process for ``--duration`` seconds: ``--users`` returning users
who keep their cookie and count their visits, mixed with a flood of cookieless clients that
each leave a ~250-byte session and never return. Once a second it reads the server's RSS
from ``/proc`` and the store's size from ``/_soak/stats``. It writes ``soak.png`` (RSS and
sessions held over time, one line per store) and ``soak.md`` (the table and the target
checks, also printed) to ``--out``, and exits 1 when a target fails.

Only loopback traffic; every count and every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

from tools.options import size_text_option

__all__ = ["add_arguments", "main", "run"]

# Kept here rather than imported: soak_server imports Flask, which the load generator's
# processes need not load.
_STORES = ("lembro", "flask-session", "dict")
_LABELS = {
    "lembro": "lembro MemoryStore (4M)",
    "flask-session": "Flask-Session 0.8 + cachelib SimpleCache",
    "dict": "unbounded dict store",
}
# What the servers (flask, flask_session, cachelib) and the chart (matplotlib) import.
_NEEDS = ("flask", "flask_session", "cachelib", "matplotlib")
_COLORS = {"lembro": "#2f7d5b", "flask-session": "#3b6fb6", "dict": "#c0552b"}

# Seconds after the load starts at which memory is taken as warmed up: lembro reaches its
# cap in about that time at the default mix on a 2-core machine.
_WARMUP = 10.0
# A run shorter than this cannot say whether memory is flat or growing after warm-up.
_MIN_JUDGED = 2 * _WARMUP
_FLAT_TOLERANCE = 0.10  # lembro's final RSS within 10% of its RSS at warm-up
_GROWTH = 0.10  # the unbounded store's final RSS at least 10% above its RSS at warm-up

_HTTP_TIMEOUT = 10.0  # seconds a request may take before it counts as an error
_START_AFTER = 0.1  # seconds from the load generator's threads started to the load
_LOAD_STARTS_WITHIN = 60.0  # seconds a load generator may take to start its interpreter
_START_TIMEOUT = 30.0  # seconds a server may take to print its port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the soak's options to ``parser``."""
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per store")
    parser.add_argument(
        "--stores",
        default=",".join(_STORES),
        help=f"comma-separated, in run order (default: {','.join(_STORES)})",
    )
    parser.add_argument("--users", type=int, default=1000, help="returning users")
    parser.add_argument(
        "--flood", type=float, default=0.7, help="share of requests that are cookieless floods"
    )
    parser.add_argument("--connections", type=int, default=8, help="concurrent client threads")
    parser.add_argument(
        "--max-size", type=size_text_option, default="4M", help="lembro's cap, e.g. 4M (bytes)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where to write")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix")


# ---- the load generator (its own process) ----------------------------------------------


@dataclass
class _Tally:
    """One client thread's results."""

    requests: int = 0
    errors: int = 0
    lost_events: int = 0
    lost_users: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    first_error: str | None = None


def _cookie(response: http.client.HTTPResponse) -> str | None:
    """The session cookie's ``name=value`` from a response, if it set one."""
    header = response.getheader("Set-Cookie")
    if not header:
        return None
    pair = header.split(";", 1)[0]
    return pair if pair.startswith("session=") and len(pair) > len("session=") else None


class _Client:
    """One thread's HTTP client: a connection it reopens as the server closes it."""

    def __init__(self, port: int, tally: _Tally) -> None:
        self.port = port
        self.tally = tally
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_HTTP_TIMEOUT)

    def get(self, path: str, cookie: str | None) -> tuple[str, str | None] | None:
        """``GET path``: its body and the cookie it set, or ``None`` (an error, counted)."""
        headers = {"Cookie": cookie} if cookie else {}
        started = time.perf_counter()
        self.tally.requests += 1
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            body = response.read().decode("ascii", "replace")
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            self._error(f"GET {path}: {e!r}")
            self.conn.close()
            return None
        if status != 200:
            self._error(f"GET {path}: HTTP {status}")
            return None
        self.tally.latencies.append(time.perf_counter() - started)
        return body, _cookie(response)

    def _error(self, text: str) -> None:
        self.tally.errors += 1
        if self.tally.first_error is None:
            self.tally.first_error = text


def _visit(client: _Client, user: list[Any], uid: int) -> None:
    """One returning user's turn: count a visit and check the count is the one expected.

    ``user`` is ``[cookie, expected count]``. A first visit is two requests back to back,
    as a login and the page it redirects to; after that, one request per turn. A count
    that starts again at 1 means the server lost the session.
    """
    cookie, count = user
    result = client.get("/count", cookie)
    if result is None:
        return
    body, new_cookie = result
    if new_cookie:
        user[0] = new_cookie
    if body != str(count + 1):
        client.tally.lost_events += 1
        client.tally.lost_users.add(uid)
    user[1] = int(body) if body.isdigit() else 0
    if cookie is None and user[1] == 1:
        _visit(client, user, uid)


def _load_thread(
    port: int, uids: list[int], flood: float, seed: int, start: float, stop: float, tally: _Tally
) -> None:
    client = _Client(port, tally)
    rng = random.Random(seed)
    users: dict[int, list[Any]] = {uid: [None, 0] for uid in uids}
    turn = 0
    while time.monotonic() < start:
        time.sleep(min(0.05, max(0.0, start - time.monotonic())))
    while time.monotonic() < stop:
        if not uids or rng.random() < flood:
            result = client.get("/flood", None)
            if result is not None and result[1] is None:
                client._error("GET /flood: no session cookie")
        else:
            uid = uids[turn % len(uids)]  # round robin: each user returns at a steady pace
            turn += 1
            _visit(client, users[uid], uid)
    client.conn.close()


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _load_main(
    conn: Connection,
    port: int,
    users: int,
    connections: int,
    flood: float,
    seed: int,
    duration: float,
) -> None:
    """The load generator process: send the instant the load starts (its threads are
    started, on the monotonic clock both processes share), run the client threads, send
    back a summary."""
    start = time.monotonic() + _START_AFTER
    stop = start + duration
    tallies = [_Tally() for _ in range(connections)]
    threads = [
        threading.Thread(
            target=_load_thread,
            args=(port, list(range(i, users, connections)), flood, seed * 1000 + i, start, stop),
            kwargs={"tally": tallies[i]},
            daemon=True,
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    conn.send(start)
    for thread in threads:
        # A request has a timeout, so a thread ends within it of the deadline.
        thread.join(max(1.0, stop - time.monotonic()) + 3 * _HTTP_TIMEOUT)
    ended = time.monotonic()
    latencies = sorted(x for tally in tallies for x in tally.latencies)
    lost_users: set[int] = set().union(*(tally.lost_users for tally in tallies))
    first_errors = [tally.first_error for tally in tallies if tally.first_error]
    conn.send(
        {
            "requests": sum(tally.requests for tally in tallies),
            "errors": sum(tally.errors for tally in tallies),
            "lost_events": sum(tally.lost_events for tally in tallies),
            "lost_users": len(lost_users),
            "p50": _percentile(latencies, 0.50),
            "p99": _percentile(latencies, 0.99),
            "elapsed": ended - start,
            "first_error": first_errors[0] if first_errors else None,
            "stuck_threads": sum(thread.is_alive() for thread in threads),
        }
    )
    conn.close()


# ---- one store's run ---------------------------------------------------------------------


@dataclass
class _Sample:
    t: float  # seconds since the load started
    rss: int  # bytes
    sessions: int | None
    size: int | None  # bytes of ids and data, as the store counts them
    cpu: float  # seconds of CPU the server has used since it started
    blocks: int | None  # memory blocks Python's allocator holds (sys.getallocatedblocks)


@dataclass
class _Result:
    store: str
    samples: list[_Sample]
    load: dict[str, Any]

    @property
    def throughput(self) -> float:
        """Requests per second."""
        return float(self.load["requests"]) / max(1e-9, float(self.load["elapsed"]))

    def rss_at(self, t: float) -> int | None:
        """RSS at the first sample at or after ``t`` seconds, in bytes."""
        for sample in self.samples:
            if sample.t >= t:
                return sample.rss
        return None

    @property
    def cpu_per_request(self) -> float:
        """Server CPU seconds per request over the load; steadier than req/s on a busy box."""
        used = self.samples[-1].cpu - self.samples[0].cpu
        return used / max(1, int(self.load["requests"]))

    @property
    def peak_rss(self) -> int:
        return max(sample.rss for sample in self.samples)

    @property
    def final_rss(self) -> int:
        return self.samples[-1].rss


def _read_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _read_cpu(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The fields after the command name, which is in parentheses and may hold spaces;
        # utime and stime are the 14th and 15th fields of the line.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stats(conn: http.client.HTTPConnection) -> dict[str, Any] | None:
    try:
        conn.request("GET", "/_soak/stats")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        return None
    if response.status != 200:
        return None
    result: dict[str, Any] = json.loads(body)
    return result


def _start_server(store: str, max_size: str) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "tools.soak_server", "--store", store]
    command += ["--max-size", max_size]
    # werkzeug runs a thread per connection, and glibc gives threads their own malloc
    # arenas, which grow RSS with no live object behind it; production Python servers cap
    # them, as docs/processes.md says. Every store runs with the same setting.
    env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], _START_TIMEOUT)
    line = server.stdout.readline() if ready else ""
    if not line.startswith("PORT "):
        _stop_server(server)
        raise RuntimeError(f"the {store} server did not start (said {line!r})")
    return server, int(line.split()[1])


def _stop_server(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.stdout is not None:
        server.stdout.close()


def _run_store(store: str, args: argparse.Namespace) -> _Result:
    server, port = _start_server(store, args.max_size)
    load: multiprocessing.process.BaseProcess | None = None
    try:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        load = context.Process(
            target=_load_main,
            args=(sender, port, args.users, args.connections, args.flood, args.seed),
            kwargs={"duration": args.duration},
            name=f"lembro-soak-load-{store}",
            daemon=True,
        )
        load.start()
        sender.close()
        # Both processes count from the instant the load generator names, once its
        # interpreter is up.
        if not receiver.poll(_LOAD_STARTS_WITHIN):
            raise RuntimeError(f"the load generator for {store} did not start")
        start: float = receiver.recv()
        samples: list[_Sample] = []
        stats_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_HTTP_TIMEOUT)
        tick = 0
        while tick <= math.ceil(args.duration):
            time.sleep(max(0.0, start + tick - time.monotonic()))
            rss = _read_rss(server.pid)
            cpu = _read_cpu(server.pid)
            t = time.monotonic() - start
            stats = _stats(stats_conn)
            samples.append(
                _Sample(
                    t=t,
                    rss=rss,
                    sessions=stats["sessions"] if stats else None,
                    size=stats["size"] if stats else None,
                    cpu=cpu,
                    blocks=stats.get("blocks") if stats else None,
                )
            )
            tick = max(tick + 1, math.floor(time.monotonic() - start) + 1)
        stats_conn.close()
        if not receiver.poll(args.duration + 6 * _HTTP_TIMEOUT):
            load.terminate()
            raise RuntimeError(f"the load generator for {store} sent no results")
        summary: dict[str, Any] = receiver.recv()
        load.join(10)
        receiver.close()
    finally:
        if load is not None and load.is_alive():
            load.terminate()
            load.join(10)
        _stop_server(server)
    return _Result(store, samples, summary)


# ---- the report ----------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def _table(results: list[_Result], users: int) -> list[str]:
    lines = [
        "| store | requests | errors | req/s | server CPU µs/req | p50 ms | p99 ms "
        "| users who lost their session "
        "| sessions held at end | RSS at 10 s | peak RSS | final RSS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        last = next((s.sessions for s in reversed(r.samples) if s.sessions is not None), None)
        lines.append(
            f"| {_LABELS[r.store]} | {r.load['requests']:,} | {r.load['errors']:,} "
            f"| {r.throughput:,.0f} | {r.cpu_per_request * 1e6:,.0f} "
            f"| {_ms(r.load['p50'])} | {_ms(r.load['p99'])} "
            f"| {r.load['lost_users']:,} of {users:,} ({r.load['lost_events']:,} times) "
            f"| {'n/a' if last is None else f'{last:,}'} | {_mib(r.rss_at(_WARMUP))} "
            f"| {_mib(r.peak_rss)} | {_mib(r.final_rss)} |"
        )
    return lines


def _targets(results: list[_Result], duration: float) -> list[tuple[str, str, str]]:
    """``(PASS|FAIL|SKIP, target, numbers)`` for each target."""
    by = {r.store: r for r in results}
    lembro, peer, plain = by.get("lembro"), by.get("flask-session"), by.get("dict")
    short = f"run shorter than {_MIN_JUDGED:.0f} s"
    out: list[tuple[str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def rss_change(
        result: _Result | None, name: str, store: str, ok: Callable[[float], bool]
    ) -> None:
        """Judge the change of ``result``'s RSS from 10 s to the end with ``ok``."""
        if result is None:
            out.append(("SKIP", name, f"{store} not run"))
            return
        base = result.rss_at(_WARMUP)
        if duration < _MIN_JUDGED or base is None:
            out.append(("SKIP", name, short))
            return
        base = base or 1
        change = (result.final_rss - base) / base
        numbers = f"{_mib(base)} at 10 s, {_mib(result.final_rss)} final ({change:+.1%})"
        out.append((verdict(ok(change)), name, numbers))

    rss_change(
        lembro,
        f"lembro RSS flat after warm-up (final within {_FLAT_TOLERANCE:.0%} of RSS at 10 s)",
        "lembro",
        lambda change: abs(change) <= _FLAT_TOLERANCE,
    )
    rss_change(
        plain,
        f"the unbounded store grows (final RSS over {_GROWTH:.0%} above RSS at 10 s)",
        "dict store",
        lambda change: change > _GROWTH,
    )

    name = "0 errors for every store"
    errors = {r.store: r.load["errors"] for r in results}
    detail = ", ".join(f"{store}: {n}" for store, n in errors.items())
    firsts = [r.load["first_error"] for r in results if r.load["first_error"]]
    if firsts:
        detail += f" (first: {firsts[0]})"
    out.append((verdict(not any(errors.values())), name, detail))

    name = "0 returning users logged out by the flood, for lembro"
    if lembro is None:
        out.append(("SKIP", name, "lembro not run"))
    else:
        lost = lembro.load["lost_users"]
        out.append((verdict(lost == 0), name, f"{lost} of the users lost their session"))

    name = "lembro's throughput no lower than Flask-Session's"
    if lembro is None or peer is None:
        out.append(("SKIP", name, "lembro or Flask-Session not run"))
    elif duration < _MIN_JUDGED:
        out.append(("SKIP", name, short))
    else:
        ratio = lembro.throughput / max(1e-9, peer.throughput)
        out.append(
            (
                verdict(ratio >= 1.0),
                name,
                f"{lembro.throughput:,.0f} vs {peer.throughput:,.0f} req/s ({ratio:.2f}x)",
            )
        )
    return out


def _plot(results: list[_Result], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    # Its font cache notice is not part of the report.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for r in results:
        color = _COLORS[r.store]
        top.plot(
            [s.t for s in r.samples],
            [s.rss / 2**20 for s in r.samples],
            label=_LABELS[r.store],
            color=color,
            linewidth=2,
        )
        held = [(s.t, s.sessions) for s in r.samples if s.sessions]  # a log scale: no 0
        bottom.plot([t for t, _ in held], [n for _, n in held], color=color, linewidth=2)
    for axis in (top, bottom):
        axis.axvline(_WARMUP, color="#99a3b3", linestyle=":", linewidth=1)
        axis.grid(True, color="#e3e7ee")
    top.set_ylabel("server RSS (MiB)")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", frameon=False)
    top.set_title(
        f"One Flask process under a session flood: {args.users:,} returning users, "
        f"{args.flood:.0%} cookieless requests",
        fontsize=11,
    )
    bottom.set_ylabel("sessions held")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds since the load started (dotted: warm-up at 10 s)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _diagnostics(results: list[_Result]) -> list[str]:
    """Where memory went in the second half of each run: RSS against live Python blocks."""
    lines = [
        "Growth over the second half of each run, RSS against the blocks Python's "
        "allocator holds (`sys.getallocatedblocks()`): blocks that stay flat while RSS "
        "grows are the allocators' free memory and fragmentation, not live objects.",
        "",
    ]
    for r in results:
        half = r.samples[-1].t / 2
        at = next((s for s in r.samples if s.t >= half and s.blocks is not None), None)
        end = next((s for s in reversed(r.samples) if s.blocks is not None), None)
        if at is None or end is None or at is end:
            continue
        lines.append(
            f"- {_LABELS[r.store]}, {at.t:.0f} s → {end.t:.0f} s: RSS {_mib(at.rss)} → "
            f"{_mib(end.rss)} "
            f"({(end.rss - at.rss) / 2**20:+.1f} MiB); blocks {at.blocks:,} → {end.blocks:,} "
            f"({(end.blocks or 0) - (at.blocks or 0):+,})"
        )
    return lines


def _report(
    results: list[_Result],
    targets: list[tuple[str, str, str]],
    args: argparse.Namespace,
    started: datetime.datetime,
) -> list[str]:
    return [
        "# Soak",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `make soak` (`python -m tools.soak "
        f"--duration {args.duration:g}`), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs.",
        "",
        f"Each store serves the same Flask app, single-process, from werkzeug's threaded "
        f"WSGI server in its own subprocess, for {args.duration:g} s. A load generator in "
        f"another process drives it over loopback HTTP with {args.connections} client "
        f"threads: {args.users:,} returning users who keep their cookie and count their "
        f"visits (`GET /count`; a count that starts again at 1 is a lost session), and "
        f"{args.flood:.0%} of requests from cookieless clients that each leave a ~250-byte "
        f"session and never return (`GET /flood`). werkzeug closes the connection after "
        f"each response, so every request is a new TCP connection. The parent samples the "
        f"server's RSS from `/proc` and the store's size once a second. Only the store "
        f"differs between runs: lembro's `MemoryStore(max_size={args.max_size!r})`; "
        f"Flask-Session 0.8 with `SESSION_TYPE='cachelib'` and a cachelib `SimpleCache()` "
        f"(its default threshold, 500 sessions); and a dict with no purge and no bound (what "
        f"express-session's `MemoryStore` and starsessions' `InMemoryStore` are), plugged "
        f"into `lembro.flask`.",
        "",
        "The machine has 2 cores shared with other work, and the load generator competes "
        "with the server for them: throughput and latency are those of the pair on this "
        "box, not of the server alone, and vary from run to run (lembro and the dict store "
        "run the very same integration code, so the gap between their rates is a measure "
        "of that noise). The server's CPU time per request, read from `/proc`, is the "
        "steadier figure. Memory is what to read.",
        "",
        "![RSS and sessions held over time, per store](soak.png)",
        "",
        *_table(results, args.users),
        "",
        *_diagnostics(results),
        "",
        "## Targets",
        "",
        *(f"- **{verdict}** {name}: {numbers}" for verdict, name, numbers in targets),
        "",
    ]


def run(args: argparse.Namespace) -> int:
    """Run the soak; return the exit status (1 when a target fails)."""
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    unknown = [name for name in stores if name not in _STORES]
    if unknown or not stores:
        raise SystemExit(f"unknown store(s) {unknown}; choose from {', '.join(_STORES)}")
    if args.duration <= 0 or args.users < 0 or args.connections < 1:
        raise SystemExit("--duration must be positive, --connections at least 1")
    if not 0 <= args.flood <= 1:
        raise SystemExit("--flood is a share between 0 and 1")
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        # Said before the load runs, not after it, when the chart would need them.
        raise SystemExit(
            f"the soak needs {', '.join(missing)}: run it with `make soak`, which installs "
            "them (the soak dependency group in pyproject.toml)"
        )
    started = datetime.datetime.now(datetime.timezone.utc)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # so the servers and load generators are stopped on the way out

    signal.signal(signal.SIGTERM, interrupt)
    results: list[_Result] = []
    for store in stores:
        print(f"soak: {_LABELS[store]} for {args.duration:g} s …", flush=True)
        result = _run_store(store, args)
        print(
            f"soak:   {result.load['requests']:,} requests, {result.throughput:,.0f} req/s, "
            f"{result.load['errors']} errors, {result.load['lost_users']} users lost, "
            f"final RSS {_mib(result.final_rss)}",
            flush=True,
        )
        results.append(result)

    targets = _targets(results, args.duration)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(results, out / "soak.png", args)
    report = _report(results, targets, args, started)
    (out / "soak.md").write_text("\n".join(report), encoding="utf-8")
    print()
    print("\n".join(_table(results, args.users)))
    print()
    print("\n".join(_diagnostics(results)))
    print()
    for verdict, name, numbers in targets:
        print(f"{verdict} {name}: {numbers}")
    print(f"\nwrote {out / 'soak.png'} and {out / 'soak.md'}")
    return 1 if any(verdict == "FAIL" for verdict, _, _ in targets) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.soak``: parse the options and run the soak; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak",
        description="Drive real servers with real HTTP traffic, one per session store, "
        "and chart the memory each holds (make soak).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
