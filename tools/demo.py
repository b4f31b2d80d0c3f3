"""The demo: a Flask app on lembro sessions that shows your session and the store's state.

``make demo`` (``python -m tools.demo`` from the repository root) serves it on
http://127.0.0.1:8000 with a threaded WSGI server. One page shows a visit counter, a login
that rotates the session id and a logout that removes the session, beside the store's live
counters and a bar of bytes held against the cap, refreshed every second. A button floods
the store with 100,000 anonymous sessions. Signed in, the page lists every session of your
name (log in as one name from two browsers to see two) and a button signs out the others;
``/devices`` lists them with their browser, IP and last use, each with a button that ends it.
``/metrics`` serves the store's metrics to Prometheus (``lembro.metrics``). ``/together``
changes a theme and a cart in overlapping requests, and keeps both (tools/demo_together.py).

A visit is one view of the page: the buttons post, then redirect to the page, which counts
that view once. Right after a logout the page says the session ended and starts no new one;
the next visit does.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import hmac
import html
import logging
import socket
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone

try:
    from flask import Flask, jsonify, redirect, request
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response
except ImportError as e:  # pragma: no cover - exercised only without Flask
    raise SystemExit(
        f"the demo needs Flask and prometheus_client ({e.name} is missing): run it with "
        "`make demo`, which installs them (the demo dependency group in pyproject.toml)"
    ) from e

from lembro.flask import Lembro, logout_everywhere, session
from lembro.ids import new_session_id, redact
from lembro.lifetimes import SessionInfo
from lembro.memory import MemoryStore
from lembro.metrics import LembroCollector
from lembro.protocol import SessionStore
from lembro.size import format_size
from tools.demo_together import add_together_page
from tools.options import size_option
from tools.serving import serve_until_stopped

__all__ = [
    "FLOOD_SIZE",
    "OWNER_KEY",
    "build_parser",
    "check_port",
    "create_app",
    "main",
    "plural",
]

FLOOD_SIZE = 100_000
#: The session field that holds the signed-in name: the demo's stores index sessions by it.
OWNER_KEY = "user"


def plural(count: int, noun: str) -> str:
    """``"1 visit"``, ``"2 visits"``, ``"1,000 visits"``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def create_app(store: SessionStore | None = None, *, secret_key: str | None = None) -> Flask:
    """Return the demo app on ``store`` (default: a 4 MiB ``MemoryStore`` indexed by
    ``OWNER_KEY``; a store without ``owner_key`` gets no list of devices)."""
    app = Flask("tools.demo")
    app.secret_key = secret_key or new_session_id()
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    # The cookie carries only the id; scripts need not read it, other sites need not send it.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if store is None:
        store = MemoryStore("4M", 5.0, owner_key=OWNER_KEY)
    Lembro(app, store)
    indexed = getattr(store, "owner_key", None) == OWNER_KEY
    registry = CollectorRegistry()  # the app's own: one collector per registry
    LembroCollector(store, registry=registry)

    def devices() -> list[dict[str, object]]:
        """The sessions of the signed-in name, most recently used first (ids redacted)."""
        user = session.get(OWNER_KEY)
        if not indexed or not isinstance(user, str):
            return []
        current = getattr(session, "sid", None)
        return [{"id": redact(sid), "current": sid == current} for sid in store.sessions_of(user)]

    @app.get("/")
    def page() -> str:
        ended = request.args.get("ended") == "1"
        if ended:
            # Show the ended session as ended: reading an empty session stores nothing, so
            # no new session starts until the next visit.
            visits = 0
            notice = (
                "Your session ended: its record is deleted from the store and its cookie "
                "cleared. The next visit starts a new one."
            )
        else:
            visits = session.get("visits", 0) + 1
            session["visits"] = visits
            notice = ""
        user = session.get("user") or "nobody"
        return (
            _PAGE.replace("{{user}}", html.escape(user))
            .replace("{{visits}}", f"{visits:,}")
            .replace("{{visits_unit}}", "visit" if visits == 1 else "visits")
            .replace("{{notice}}", html.escape(notice))
            .replace("{{notice_hidden}}", "" if notice else " hidden")
        )

    @app.get("/api/state")
    def state() -> Response:
        stats = store.stats()
        sid = getattr(session, "sid", None)
        return jsonify(
            you={
                "visits": session.get("visits", 0),
                "user": session.get("user"),
                "sid": redact(sid) if sid else None,
            },
            devices=devices(),
            store={
                "kind": type(store).__name__,
                "sessions": stats.sessions,
                "size": stats.size,
                "max_size": stats.max_size,
                "size_text": format_size(stats.size),
                "max_size_text": format_size(stats.max_size) if stats.max_size else "—",
                "hits": stats.hits,
                "misses": stats.misses,
                "expired": stats.expired,
                "evicted": stats.evicted,
                "purges": stats.purges,
            },
        )

    @app.get("/metrics")
    def metrics() -> Response:
        """The store's metrics, read now, for Prometheus to scrape."""
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.post("/login")
    def login() -> Response:
        name = (request.form.get("name") or "").strip()[:40] or "guest"
        session.regenerate()
        session["user"] = name
        return redirect("/", code=303)

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect("/?ended=1", code=303)

    @app.post("/logout-others")
    def logout_others() -> Response:
        user = session.get(OWNER_KEY)
        if indexed and isinstance(user, str):
            logout_everywhere(user)  # keeps this session, ends the name's others
        return redirect("/", code=303)

    # A device is named in the page by a keyed hash of its session id, never the id: a
    # page (or a script injected into it) must not hold another session's id.
    handle_key = new_session_id().encode()

    def handle(sid: str) -> str:
        return hmac.new(handle_key, sid.encode(), hashlib.sha256).hexdigest()[:32]

    def sessions_of_user() -> tuple[str | None, list[SessionInfo]]:
        user = session.get(OWNER_KEY)
        if not indexed or not isinstance(user, str):
            return None, []
        infos: list[SessionInfo] = store.sessions_of(user, info=True)
        return user, infos

    @app.get("/devices")
    def devices_page() -> str:
        user, infos = sessions_of_user()
        current = getattr(session, "sid", None)
        rows = "".join(_device_row(info, info.id == current, handle(info.id)) for info in infos)
        if user is None:
            body = '<p>Sign in on <a href="/">the main page</a> to see your devices.</p>'
        else:
            body = (
                f"<p>Every session signed in as <b>{html.escape(user)}</b>, most recently "
                f'used first.</p><ul id="device-list">{rows}</ul>'
                '<p><a href="/">Back</a></p>'
            )
        return _DEVICES_PAGE.replace("{{body}}", body)

    @app.post("/devices/end")
    def end_device() -> Response:
        user, infos = sessions_of_user()
        wanted = request.form.get("device", "")
        for info in infos:
            if user is not None and hmac.compare_digest(handle(info.id), wanted):
                # Ends it only if it is this user's: another user's id, even guessed, is not.
                store.destroy_session_of(user, info.id)
        return redirect("/devices", code=303)

    @app.post("/flood")
    def flood() -> Response:
        count = min(request.args.get("count", FLOOD_SIZE, type=int) or FLOOD_SIZE, FLOOD_SIZE)
        started = time.perf_counter()
        for i in range(count):  # what a swarm of cookieless bots leaves behind
            store.set(new_session_id(), {"bot": i, "ua": "crawler/1.0"})
        return jsonify(created=count, seconds=round(time.perf_counter() - started, 3))

    add_together_page(app)
    return app


def _ago(when: object) -> str:
    """How long ago ``when`` (an aware datetime) was, in words."""
    if not isinstance(when, datetime):
        return "unknown"
    seconds = max(0, int((datetime.now(timezone.utc) - when).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _device_row(info: SessionInfo, current: bool, token: str) -> str:
    """One device of the devices page: what it is, and a button that ends it."""
    agent = html.escape(info.user_agent or "unknown browser")
    ip = html.escape(info.ip or "unknown IP")
    seen = f"last seen {_ago(info.last_seen)}"
    if current:
        action = '<span class="this">this device</span>'
    else:
        action = (
            '<form method="post" action="/devices/end">'
            f'<input type="hidden" name="device" value="{token}">'
            "<button>End this session</button></form>"
        )
    return (
        f'<li class="device"><span class="agent">{agent}</span>'
        f'<span class="ip">{ip}</span><span class="seen">{seen}</span>{action}</li>'
    )


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line: ``python -m tools.demo --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Serve lembro's demo: a Flask app on a MemoryStore, showing your session "
        "and the store's live state (make demo).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--max-size", type=size_option, default="4M", help="the store's cap, e.g. 4M (bytes)"
    )
    parser.add_argument("--ttl", type=float, default=1800.0, help="session lifetime, seconds")
    parser.add_argument(
        "--absolute-ttl",
        type=float,
        default=12 * 3600.0,
        help="seconds from sign-in after which a session ends however it is used",
    )
    parser.add_argument(
        "--renew-every",
        type=float,
        default=None,
        help="seconds after which a session gets a new id on its next request (default never)",
    )
    parser.add_argument(
        "--secret-key",
        default="lembro demo: not a secret",
        help="Flask's secret key, which signs the session cookie",
    )
    parser.add_argument(
        "--snapshot",
        default="lembro-demo.snapshot",
        help="file that keeps sessions across restarts (written on exit); '' for none",
    )
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=None,
        help="also write the snapshot every this many seconds (survives a crash)",
    )
    return parser


def check_port(host: str, port: int) -> None:
    """Exit, saying how to pick another port, when ``port`` on ``host`` cannot be listened on.

    Tried before the store starts, so there is nothing to undo; werkzeug's own message (which
    names no ``make demo PORT=``) stays for the rare case another program takes the port in
    between.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise SystemExit(
                f"port {port} on {host} is in use (a demo still running?): pick another with "
                f"`make demo PORT={port + 1}` (python -m tools.demo --port {port + 1}); "
                "PORT=0 picks a free one"
            ) from None
        raise SystemExit(f"cannot listen on {host} port {port}: {e.strerror or e}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.demo``: serve the demo until SIGTERM or Ctrl-C; return the exit status."""
    args = build_parser().parse_args(argv)
    check_port(args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = MemoryStore(
        args.max_size,
        5.0,
        ttl=args.ttl,
        snapshot=args.snapshot or None,
        snapshot_interval=args.snapshot_interval if args.snapshot else None,
        owner_key=OWNER_KEY,
        absolute_ttl=args.absolute_ttl,
        renew_every=args.renew_every,
    )
    app = create_app(store, secret_key=args.secret_key)
    server = make_server(args.host, args.port, app, threaded=True)
    return serve_until_stopped(
        server, f"lembro demo on http://{args.host}:{{port}}/  (Ctrl-C stops)", store.close
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lembro demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 * { box-sizing: border-box; }
 body { font: 16px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
        padding: 0 1rem; color: #1d2430; background: #f7f8fa; }
 h1 { margin-bottom: .2rem; } h2 { margin-top: 0; } .sub { color: #5b6575; margin-top: 0; }
 .grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.4fr); gap: 1.2rem; }
 @media (max-width: 720px) { .grid { grid-template-columns: minmax(0, 1fr); }
                             body { margin: 1rem auto; } }
 .card { background: #fff; border: 1px solid #dde2ea; border-radius: 10px; padding: 1rem 1.2rem; }
 .big { font-size: 2.4rem; font-weight: 700; line-height: 1.1; }
 .bar { height: 1.4rem; background: #e8ecf2; border-radius: 6px; overflow: hidden; }
 .fill { height: 100%; width: 0; background: #2f7d5b; transition: width .4s; }
 .fill.hot { background: #c0552b; }
 table { border-collapse: collapse; width: 100%; } td { padding: .2rem 0; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }
 button, .button { font: inherit; padding: .35rem .9rem; border-radius: 6px;
          border: 1px solid #99a3b3; background: #fff; cursor: pointer; color: inherit;
          text-decoration: none; display: inline-block; white-space: nowrap; }
 button.primary { background: #1d2430; color: #fff; }
 .actions { display: flex; flex-direction: column; gap: .6rem; margin: 1rem 0; }
 .row { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
 .row form { display: flex; gap: .5rem; margin: 0; }
 form.login { max-width: 24rem; flex-wrap: nowrap; }
 form.login input { font: inherit; padding: .3rem .5rem; min-width: 0; flex: 1 1 8rem; }
 .notice { background: #fff7e6; border: 1px solid #e8c77d; border-radius: 6px;
           padding: .5rem .8rem; }
 code { overflow-wrap: anywhere; }
 #note { color: #5b6575; min-height: 1.4rem; }
 h3 { margin: 1rem 0 .2rem; font-size: 1.05rem; }
 #devices { list-style: none; padding: 0; margin: .4rem 0 .8rem; }
 #devices li { display: flex; justify-content: space-between; gap: .5rem;
               padding: .3rem .5rem; border: 1px solid #dde2ea; border-radius: 6px;
               margin-bottom: .3rem; }
 #devices .this { color: #2f7d5b; font-weight: 600; }
</style></head>
<body>
<h1>lembro</h1>
<p class="sub">Server-side sessions in one process's memory: capped, self-purging,
flood-resistant. <a href="/together">Two tabs at once</a>: a theme and a cart changed
together, nothing lost.</p>
<div class="grid">
 <div class="card">
  <h2>Your session</h2>
  <p class="notice" id="notice"{{notice_hidden}}>{{notice}}</p>
  <div class="big" id="visits">{{visits}}</div><div id="visits-unit">{{visits_unit}}</div>
  <p>Signed in as <b id="user">{{user}}</b> · id <code id="sid">…</code></p>
  <div class="actions">
   <div class="row">
    <a class="button" href="/">Visit again</a>
    <form method="post" action="/logout"><button>Log out</button></form>
   </div>
   <form class="row login" method="post" action="/login">
    <input name="name" placeholder="your name" aria-label="your name">
    <button>Log in</button>
   </form>
  </div>
  <p class="sub">Logging in moves your data to a new id and destroys the old record;
  logging out deletes the session and its cookie.</p>
  <div id="devices-box" hidden>
   <h3>Your devices</h3>
   <p class="sub">Every session signed in as <b id="devices-user"></b>, most recent first:
   log in with the same name from another browser to add one.</p>
   <ul id="devices"></ul>
   <form method="post" action="/logout-others" id="logout-others">
    <button>Sign out other devices</button>
   </form>
   <p><a href="/devices">See each device</a></p>
  </div>
 </div>
 <div class="card">
  <h2>The store <small id="kind"></small></h2>
  <div class="bar"><div class="fill" id="fill"></div></div>
  <p><b id="size">…</b> held of <b id="max">…</b> cap</p>
  <table>
   <tr><td>sessions</td><td class="n" id="sessions"></td></tr>
   <tr><td>hits</td><td class="n" id="hits"></td></tr>
   <tr><td>misses</td><td class="n" id="misses"></td></tr>
   <tr><td>expired</td><td class="n" id="expired"></td></tr>
   <tr><td>evicted</td><td class="n" id="evicted"></td></tr>
  </table>
  <p><button class="primary" id="flood">Flood: 100,000 bot sessions</button></p>
  <p id="note"></p>
 </div>
</div>
<script>
const $ = (id) => document.getElementById(id);
const fmt = (n) => n.toLocaleString("en-US");
async function refresh() {
  const r = await fetch("/api/state", {credentials: "same-origin"});
  const s = await r.json();
  $("visits").textContent = fmt(s.you.visits);
  $("visits-unit").textContent = s.you.visits === 1 ? "visit" : "visits";
  $("user").textContent = s.you.user || "nobody";
  $("sid").textContent = s.you.sid || "none";
  const devices = s.devices || [];
  $("devices-box").hidden = devices.length === 0;
  $("devices-user").textContent = s.you.user || "";
  $("devices").replaceChildren(...devices.map((d) => {
    const li = document.createElement("li");
    const id = document.createElement("code"); id.textContent = d.id;
    const tag = document.createElement("span");
    tag.textContent = d.current ? "this device" : "another device";
    if (d.current) tag.className = "this";
    li.append(id, tag); return li;
  }));
  $("logout-others").hidden = devices.length < 2;
  const st = s.store;
  $("kind").textContent = st.kind;
  for (const k of ["sessions", "hits", "misses", "expired", "evicted"]) {
    $(k).textContent = fmt(st[k]);
  }
  $("size").textContent = st.size_text; $("max").textContent = st.max_size_text;
  const pct = st.max_size ? Math.min(100, 100 * st.size / st.max_size) : 0;
  $("fill").style.width = pct + "%"; $("fill").classList.toggle("hot", pct > 90);
}
$("flood").onclick = async () => {
  $("flood").disabled = true; $("note").textContent = "flooding…";
  const r = await (await fetch("/flood", {method: "POST"})).json();
  $("note").textContent = `${fmt(r.created)} bot sessions in ${r.seconds} s: ` +
    "the cap held, and your session is still here.";
  $("flood").disabled = false; refresh();
};
refresh(); setInterval(refresh, 1000);
</script>
</body></html>
"""


_DEVICES_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lembro demo: your devices</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 16px/1.45 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto;
        padding: 0 1rem; color: #1d2430; background: #f7f8fa; }
 ul { list-style: none; padding: 0; }
 li.device { display: grid; grid-template-columns: 1fr auto auto auto; gap: .8rem;
             align-items: center; background: #fff; border: 1px solid #dde2ea;
             border-radius: 8px; padding: .5rem .8rem; margin-bottom: .4rem; }
 .agent { overflow-wrap: anywhere; } .ip, .seen { color: #5b6575; }
 .this { color: #2f7d5b; font-weight: 600; } form { margin: 0; }
 button { font: inherit; padding: .25rem .7rem; border-radius: 6px;
          border: 1px solid #99a3b3; background: #fff; cursor: pointer; }
</style></head>
<body>
<h1>Your devices</h1>
{{body}}
</body></html>
"""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
