"""The demo: a Flask app on lembro sessions that shows your session and the store's state.

``python -m lembro demo`` serves it on http://127.0.0.1:8000 with a threaded WSGI server.
One page shows a visit counter, a login that rotates the session id and a logout that
removes the session, beside the store's live counters and a bar of bytes held against the
cap, refreshed every second. A button floods the store with 100,000 anonymous sessions.
"""

from __future__ import annotations

import html
import time

from flask import Flask, jsonify, redirect, request, session
from werkzeug.wrappers import Response

from .flask import Lembro
from .ids import new_session_id
from .memory import MemoryStore
from .protocol import SessionStore
from .size import format_size

__all__ = ["FLOOD_SIZE", "create_app"]

FLOOD_SIZE = 100_000


def create_app(store: SessionStore | None = None, *, secret_key: str | None = None) -> Flask:
    """Return the demo app on ``store`` (default: a 4 MiB ``MemoryStore``)."""
    app = Flask("lembro.demo")
    app.secret_key = secret_key or new_session_id()
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    if store is None:
        store = MemoryStore("4M", 5.0)
    Lembro(app, store)

    @app.get("/")
    def page() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return _PAGE.replace("{{user}}", html.escape(session.get("user") or "nobody"))

    @app.get("/api/state")
    def state() -> Response:
        stats = store.stats()
        sid = getattr(session, "sid", None)
        return jsonify(
            you={
                "visits": session.get("visits", 0),
                "user": session.get("user"),
                "sid": sid[:8] + "…" if sid else None,
            },
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

    @app.post("/visit")
    def visit() -> Response:
        session["visits"] = session.get("visits", 0) + 1
        return redirect("/", code=303)

    @app.post("/login")
    def login() -> Response:
        name = (request.form.get("name") or "").strip()[:40] or "guest"
        session.regenerate()  # type: ignore[attr-defined]
        session["user"] = name
        return redirect("/", code=303)

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect("/", code=303)

    @app.post("/flood")
    def flood() -> Response:
        count = min(request.args.get("count", FLOOD_SIZE, type=int) or FLOOD_SIZE, FLOOD_SIZE)
        started = time.perf_counter()
        for i in range(count):  # what a swarm of cookieless bots leaves behind
            store.set(new_session_id(), {"bot": i, "ua": "crawler/1.0"})
        return jsonify(created=count, seconds=round(time.perf_counter() - started, 3))

    return app


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lembro demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 16px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
        padding: 0 1rem; color: #1d2430; background: #f7f8fa; }
 h1 { margin-bottom: .2rem; } .sub { color: #5b6575; margin-top: 0; }
 .grid { display: grid; grid-template-columns: 1fr 1.4fr; gap: 1.2rem; }
 .card { background: #fff; border: 1px solid #dde2ea; border-radius: 10px; padding: 1rem 1.2rem; }
 .big { font-size: 2.4rem; font-weight: 700; }
 .bar { height: 1.4rem; background: #e8ecf2; border-radius: 6px; overflow: hidden; }
 .fill { height: 100%; width: 0; background: #2f7d5b; transition: width .4s; }
 .fill.hot { background: #c0552b; }
 table { border-collapse: collapse; width: 100%; } td { padding: .2rem 0; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }
 button { font: inherit; padding: .35rem .9rem; border-radius: 6px; border: 1px solid #99a3b3;
          background: #fff; cursor: pointer; } button.primary { background: #1d2430; color: #fff; }
 form { display: inline; } input { font: inherit; padding: .3rem; width: 9rem; }
 #note { color: #5b6575; min-height: 1.4rem; }
</style></head>
<body>
<h1>lembro</h1>
<p class="sub">Server-side sessions in one process's memory: capped, self-purging,
flood-resistant.</p>
<div class="grid">
 <div class="card">
  <h2>Your session</h2>
  <div class="big" id="visits">…</div><div>visits</div>
  <p>Signed in as <b id="user">{{user}}</b> · id <code id="sid">…</code></p>
  <form method="post" action="/visit"><button>Visit again</button></form>
  <form method="post" action="/login"><input name="name" placeholder="your name">
   <button>Log in</button></form>
  <form method="post" action="/logout"><button>Log out</button></form>
  <p class="sub">Logging in moves your data to a new id and destroys the old record;
  logging out deletes the session and its cookie.</p>
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
const fmt = (n) => n.toLocaleString();
async function refresh() {
  const r = await fetch("/api/state", {credentials: "same-origin"});
  const s = await r.json();
  $("visits").textContent = fmt(s.you.visits);
  $("user").textContent = s.you.user || "nobody";
  $("sid").textContent = s.you.sid || "none";
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
  $("note").textContent = `${fmt(r.created)} bot sessions in ${r.seconds}s: ` +
    "the cap held, and your session is still here.";
  $("flood").disabled = false; refresh();
};
refresh(); setInterval(refresh, 1000);
</script>
</body></html>
"""
