"""The soak's server side: one Flask app on one store, served by werkzeug's threaded server.

``python -m tools.soak_server --store lembro|flask-session|dict`` serves the soak app on
a free loopback port, prints ``PORT <n>`` on its first line of stdout and serves until
SIGTERM or SIGINT. Only the session store differs between the three: the app, the
framework and the server are the same.

Routes: ``GET /count`` increments the session's counter and returns it as text (a
returning user's visit; its first visit also stores a ~250-byte profile); ``GET /flood``
stores ~250 bytes in a fresh session (a cookieless client that never returns);
``GET /_soak/stats`` returns the store's size as JSON and touches no session.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from flask import Flask, jsonify, session
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Response

from lembro.checks import apply_changes
from lembro.errors import InvalidOption
from lembro.flask import Lembro
from lembro.memory import MemoryStore
from lembro.protocol import Stats
from lembro.serializers import dumps_session, get_serializer, loads_session
from tools.serving import serve_until_stopped

__all__ = ["STORES", "DictStore", "create_app", "main", "rss_bytes"]

#: The stores the soak compares, in the order it runs them.
STORES = ("lembro", "flask-session", "dict")

# What a session carries besides its counter: about what a small app keeps (a user's
# name, flags, a CSRF token, a cart). 250 bytes of data per session, as the brief asks.
_PAYLOAD = "x" * 230

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    """The resident set size of process ``pid`` (default: this one), in bytes."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


class DictStore:
    """A lembro-protocol store over a plain dict: no purge, no bound.

    It is what express-session's ``MemoryStore`` and starsessions' ``InMemoryStore`` are:
    a session expires only when someone reads it after its time (as express-session
    checks), so a session no one returns to stays forever. It holds serialized bytes
    with the same msgpack serializer as ``MemoryStore``, so the soak compares the bound
    and the purge, not the encoding. ``payload_bytes`` counts ids and data, in bytes.
    """

    blocking = False

    def __init__(self, ttl: float = 86400.0) -> None:
        self._ttl = float(ttl)
        self._serializer = get_serializer("msgpack")
        self._data: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self.payload_bytes = 0
        self._hits = 0
        self._misses = 0

    @property
    def ttl(self) -> float:
        """The default lifetime of a session, in seconds."""
        return self._ttl

    def _drop_locked(self, sid: str) -> bool:
        old = self._data.pop(sid, None)
        if old is not None:
            self.payload_bytes -= len(sid) + len(old[1])
        return old is not None

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return session ``sid``, or ``None``; an expired one is dropped when read."""
        with self._lock:
            item = self._data.get(sid)
            if item is None:
                self._misses += 1
                return None
            if item[0] <= time.monotonic():
                self._drop_locked(sid)
                self._misses += 1
                return None
            self._hits += 1
        return loads_session(self._serializer, item[1])

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``data`` under ``sid`` for ``ttl`` seconds (default: the store's)."""
        blob = dumps_session(self._serializer, data)
        expires = time.monotonic() + (self._ttl if ttl is None else ttl)
        with self._lock:
            self._drop_locked(sid)
            self._data[sid] = (expires, blob)
            self.payload_bytes += len(sid) + len(blob)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Like :meth:`set`, only over a session that is there; whether it was."""
        with self._lock:
            if sid not in self._data:
                return False
        self.set(sid, data, ttl)
        return True

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        """Extend session ``sid`` by ``ttl`` seconds from now; whether it was there."""
        with self._lock:
            item = self._data.get(sid)
            if item is None:
                return False
            self._data[sid] = (time.monotonic() + (self._ttl if ttl is None else ttl), item[1])
            return True

    def destroy(self, sid: str) -> bool:
        """Remove session ``sid``; return whether it was there."""
        with self._lock:
            return self._drop_locked(sid)

    def renew(self, sid: str, ttl: float | None = None) -> dict[str, Any] | None:
        """Session ``sid`` with a new lifetime of ``ttl`` seconds, or ``None``."""
        data = self.get(sid)
        if data is not None:
            self.touch(sid, ttl)
        return data

    def rename(self, old: str, new: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        """Move session ``old`` to ``new`` with ``data``, in one step; whether it was there."""
        blob = dumps_session(self._serializer, data)
        expires = time.monotonic() + (self._ttl if ttl is None else ttl)
        with self._lock:
            if not self._drop_locked(old):
                return False
            self._drop_locked(new)
            self._data[new] = (expires, blob)
            self.payload_bytes += len(new) + len(blob)
            return True

    def update(
        self,
        sid: str,
        changes: dict[str, Any],
        deleted: Iterable[str] = (),
        ttl: float | None = None,
    ) -> bool:
        """Apply ``changes`` and ``deleted`` to session ``sid`` as it is now, in one hold
        of the lock; whether it was there."""
        expires = time.monotonic() + (self._ttl if ttl is None else ttl)
        with self._lock:
            item = self._data.get(sid)
            if item is None:
                return False
            data = loads_session(self._serializer, item[1])
            apply_changes(data, changes, tuple(deleted))
            blob = dumps_session(self._serializer, data)
            self._drop_locked(sid)
            self._data[sid] = (expires, blob)
            self.payload_bytes += len(sid) + len(blob)
            return True

    def time_left(self, sid: str) -> float | None:
        """Seconds until session ``sid`` expires, or ``None``."""
        with self._lock:
            item = self._data.get(sid)
        return None if item is None else max(item[0] - time.monotonic(), 0.0)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every session, expired or not (this store never looks)."""
        with self._lock:
            items = list(self._data.items())
        return {sid: loads_session(self._serializer, blob) for sid, (_, blob) in items}

    def clear(self) -> None:
        """Remove every session."""
        with self._lock:
            self._data.clear()
            self.payload_bytes = 0

    def purge(self) -> int:
        """Nothing: this store never purges, which is the point of having it here."""
        return 0

    def stats(self) -> Stats:
        """Counters; ``size`` is ids plus serialized data, in bytes."""
        with self._lock:
            return Stats(
                sessions=len(self._data),
                size=self.payload_bytes,
                max_size=None,
                hits=self._hits,
                misses=self._misses,
                expired=0,
                evicted=0,
                purges=0,
            )

    def sessions_of(self, owner: str | int) -> list[str]:
        """Refused: this store keeps no owner index."""
        raise InvalidOption("owner_key", None, "a store with an owner index (MemoryStore)")

    def destroy_sessions_of(self, owner: str | int, keep: str | None = None) -> int:
        """Refused: this store keeps no owner index."""
        raise InvalidOption("owner_key", None, "a store with an owner index (MemoryStore)")

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, sid: object) -> bool:
        return sid in self._data


def _routes(app: Flask, stats: Callable[[], dict[str, Any]]) -> None:
    @app.get("/count")
    def count() -> Response:
        if "n" not in session:
            session["profile"] = _PAYLOAD
        n = session.get("n", 0) + 1
        session["n"] = n
        return Response(str(n), mimetype="text/plain")

    @app.get("/flood")
    def flood() -> Response:
        session["bot"] = _PAYLOAD
        return Response("ok", mimetype="text/plain")

    @app.get("/_soak/stats")
    def soak_stats() -> Response:
        # Blocks Python's allocator holds: flat while RSS grows means the allocator's
        # free memory, not live objects, is what grows.
        return jsonify(rss=rss_bytes(), blocks=sys.getallocatedblocks(), **stats())


def create_app(store: str, max_size: str = "4M") -> tuple[Flask, Callable[[], None]]:
    """The soak app on ``store`` (one of ``STORES``), and a function that closes it."""
    app = Flask("lembro.soak")
    app.secret_key = "lembro soak: not a secret"  # loopback only, thrown away
    # The same lifetime for all three: an hour, longer than any soak, so nothing expires
    # and only the bound (or its absence) decides what stays.
    app.permanent_session_lifetime = timedelta(hours=1)
    close: Callable[[], None]
    stats: Callable[[], dict[str, Any]]

    if store == "lembro":
        memory = MemoryStore(max_size, 5.0, ttl=3600.0)
        Lembro(app, memory)
        close = memory.close

        def stats() -> dict[str, Any]:
            s = memory.stats()
            return {"sessions": s.sessions, "size": s.size, "evicted": s.evicted}

    elif store == "flask-session":
        from cachelib import SimpleCache
        from flask_session import Session

        # As Flask-Session 0.8 documents it: SESSION_TYPE "cachelib" with a cachelib
        # instance; SimpleCache's default threshold is 500 sessions.
        cache = SimpleCache()
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)
        Session(app)

        def close() -> None:
            cache.clear()

        def stats() -> dict[str, Any]:
            with cache._lock:
                items = list(cache._cache.items())
            # Ids plus pickled values: what the cache holds, without Python's overhead.
            size = sum(len(key) + len(value) for key, (_, value) in items)
            return {"sessions": len(items), "size": size, "evicted": None}

    elif store == "dict":
        plain = DictStore(ttl=3600.0)
        # A store of the app's, as the peers' are: without load, session_info and the
        # devices, which the integration does without (the protocol's optional members).
        Lembro(app, plain)  # type: ignore[arg-type]
        close = plain.close

        def stats() -> dict[str, Any]:
            return {"sessions": len(plain), "size": plain.payload_bytes, "evicted": 0}

    else:
        raise ValueError(f"unknown store {store!r}; expected one of {', '.join(STORES)}")

    _routes(app, stats)
    return app, close


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without its access log: a line per request would cost more
    than the session store does, and flood the terminal."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the soak app until SIGTERM or SIGINT; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m tools.soak_server")
    parser.add_argument("--store", choices=STORES, required=True)
    parser.add_argument("--max-size", default="4M", help="lembro's cap")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    app, close = create_app(args.store, args.max_size)
    server = make_server(args.host, 0, app, threaded=True, request_handler=_QuietHandler)
    return serve_until_stopped(server, "PORT {port}", close)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
