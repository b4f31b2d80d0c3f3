"""The demo's "two tabs at once" page (``/together``): one tab picks a theme while another
adds to a cart, and neither change is lost.

Each change is a request that loads the session, waits a moment (a slow network or a busy
server; ``delay`` milliseconds, at most ``MAX_DELAY_MS``) so that requests started
together are in flight together, then writes one key: the theme is assigned, the cart is
appended to in place. lembro writes back only the keys a request changed, so the theme
request (which read an empty cart) does not erase the cart items, and the cart requests
(which read the old theme) do not undo the theme. The page fires them from two panels, or
all at once; ``/together?panel=theme`` and ``?panel=cart`` show one panel each, to open in
two real tabs.
"""

from __future__ import annotations

import time

from flask import Flask, jsonify, request
from werkzeug.wrappers import Response

from lembro.flask import session

__all__ = ["DEFAULT_DELAY_MS", "ITEMS", "MAX_DELAY_MS", "THEMES", "add_together_page"]

THEMES = ("light", "dark", "sepia")
ITEMS = ("tea", "bread", "apples", "cheese", "coffee")
DEFAULT_DELAY_MS = 800
MAX_DELAY_MS = 3000


def _delay() -> None:
    """Hold the request, its session loaded, for ``?delay=`` milliseconds (bounded)."""
    try:
        ms = int(request.args.get("delay", DEFAULT_DELAY_MS))
    except ValueError:
        ms = DEFAULT_DELAY_MS
    time.sleep(min(max(ms, 0), MAX_DELAY_MS) / 1000)


def _state() -> dict[str, object]:
    cart = session.get("cart")
    return {"theme": session.get("theme", "light"), "cart": list(cart) if cart else []}


def add_together_page(app: Flask) -> None:
    """Add ``/together`` and its API (``/api/together``, ``/api/theme``, ``/api/cart``)
    to the demo app."""

    @app.get("/together")
    def together() -> str:
        session.setdefault("cart", [])  # the session exists before the tabs race
        panel = request.args.get("panel")
        hidden = {
            "theme": " hidden" if panel == "cart" else "",
            "cart": " hidden" if panel == "theme" else "",
        }
        return (
            _PAGE.replace("{{theme}}", str(_state()["theme"]))
            .replace("{{theme_hidden}}", hidden["theme"])
            .replace("{{cart_hidden}}", hidden["cart"])
        )

    @app.get("/api/together")
    def together_state() -> Response:
        return jsonify(_state())

    @app.post("/api/theme")
    def pick_theme() -> Response | tuple[Response, int]:
        theme = request.form.get("theme", "")
        if theme not in THEMES:
            return jsonify(error=f"theme must be one of {', '.join(THEMES)}"), 400
        seen = _state()  # what this request loaded
        _delay()
        session["theme"] = theme
        return jsonify(loaded=seen, wrote={"theme": theme})

    @app.post("/api/cart")
    def add_to_cart() -> Response | tuple[Response, int]:
        item = request.form.get("item", "")
        if item not in ITEMS:
            return jsonify(error=f"item must be one of {', '.join(ITEMS)}"), 400
        cart = session.setdefault("cart", [])
        seen = _state()
        _delay()
        cart.append(item)  # changed in place: no assignment, and still written back
        return jsonify(loaded=seen, wrote={"cart": item})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lembro demo: two tabs at once</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 * { box-sizing: border-box; }
 body { font: 16px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
        padding: 0 1rem; transition: background .3s, color .3s; }
 body.light { background: #f7f8fa; color: #1d2430; }
 body.dark { background: #1b1f27; color: #e6e9ef; }
 body.sepia { background: #f4ecd8; color: #4a3b28; }
 .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2rem; }
 @media (max-width: 720px) { .grid { grid-template-columns: 1fr; } }
 .card { border: 1px solid #99a3b3; border-radius: 10px; padding: 1rem 1.2rem; }
 button { font: inherit; padding: .35rem .9rem; border-radius: 6px; margin: .15rem;
          border: 1px solid #99a3b3; background: transparent; color: inherit; cursor: pointer; }
 .sub { opacity: .75; margin-top: 0; } #log { font: 14px ui-monospace, monospace; }
 a { color: inherit; }
</style></head>
<body class="{{theme}}">
<h1>Two tabs at once</h1>
<p class="sub">Each click is a request that loads your session, waits <span id="ms"></span> ms
(a slow network), then changes one thing. Click in both panels within that time, or press
<b>Both at once</b>: the two tabs' requests overlap, and both changes are kept, because
lembro writes back only what each request changed. Open
<a href="/together?panel=theme" target="_blank">the theme picker</a> and
<a href="/together?panel=cart" target="_blank">the cart</a> in two tabs to race them for
real. <a href="/">Back to the demo</a>.</p>
<div class="grid">
 <div class="card" id="theme-panel"{{theme_hidden}}>
  <h2>Tab A: theme</h2>
  <button data-theme="light">Light</button><button data-theme="dark">Dark</button>
  <button data-theme="sepia">Sepia</button>
 </div>
 <div class="card" id="cart-panel"{{cart_hidden}}>
  <h2>Tab B: cart</h2>
  <button data-item="tea">+ tea</button><button data-item="bread">+ bread</button>
  <button data-item="apples">+ apples</button><button data-item="cheese">+ cheese</button>
  <p>In your cart: <b id="cart">…</b></p>
 </div>
</div>
<p><button id="both">Both at once: the dark theme, and tea in the cart</button></p>
<div class="card"><h3>Your session, as stored</h3><p id="stored">…</p><div id="log"></div></div>
<script>
const DELAY = 800;
document.getElementById("ms").textContent = DELAY;
const $ = (id) => document.getElementById(id);
const log = (line) => { const p = document.createElement("div"); p.textContent = line;
                        $("log").prepend(p); };
async function refresh() {
  const s = await (await fetch("/api/together")).json();
  document.body.className = s.theme;
  $("cart").textContent = s.cart.join(", ") || "nothing yet";
  $("stored").textContent = `theme ${s.theme}; cart [${s.cart.join(", ")}]`;
}
// One tab sends its own changes one after another, as a page does; the two panels are
// two tabs, whose requests overlap. (Two requests that change one key at once, the cart
// twice, are two writes of that key: the later one wins.)
const queues = {theme: Promise.resolve(), cart: Promise.resolve()};
const queued = (panel, path, field, value) =>
  (queues[panel] = queues[panel].then(() => send(path, field, value)));
async function send(path, field, value) {
  log(`${path} ${value}: sent`);
  const body = new URLSearchParams({[field]: value});
  const r = await fetch(`${path}?delay=${DELAY}`, {method: "POST", body});
  const j = await r.json();
  log(`${path} ${value}: done (it had loaded theme ${j.loaded.theme}, cart [${j.loaded.cart}])`);
  await refresh();
}
document.querySelectorAll("[data-theme]").forEach((b) =>
  b.onclick = () => queued("theme", "/api/theme", "theme", b.dataset.theme));
document.querySelectorAll("[data-item]").forEach((b) =>
  b.onclick = () => queued("cart", "/api/cart", "item", b.dataset.item));
$("both").onclick = () => Promise.all([
  queued("theme", "/api/theme", "theme", "dark"), queued("cart", "/api/cart", "item", "tea")]);
setInterval(refresh, 2000);
refresh();
</script>
</body></html>
"""
