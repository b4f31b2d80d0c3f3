"""Many clients at once against a Flask app on lembro sessions, over a real threaded server.

A real Werkzeug server (``threaded=True``, one thread per request) runs in a background
thread of the test process, on a free loopback port; 17 client threads, each with its own
HTTP connection, send it a bounded number of requests: eight clients own one session
each (counting, appending, reading, regenerating, logging out), eight share one session,
and one never has a cookie.

The rule for concurrent requests of one session is **last writer wins, per key**: each
request loads its own copy of the session, and a request that changed it writes back the
keys it changed when its response is made (tests/e2e/test_concurrent_changes.py shows
that changes of different keys are all kept). Here every writer of the shared session
writes the same keys: of two requests that overlap, the one that saves last replaces
what the other saved. What that guarantees, and what is asserted below for the shared
session:

- a session is always one whole write: never a mix of two writes, never half of one;
- a value a request reads is a value some request wrote whole;
- changes can be lost (an append made by an overlapping request may be overwritten),
  but nothing is invented: every entry in a list was written by a writer of that session,
  once, and each writer's entries keep their order;
- once requests stop overlapping, the last write is what the next request reads.

Sessions that no other request touches lose nothing: their counts are exact.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, got_request_exception, jsonify, session
from flask.typing import ResponseReturnValue
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from lembro import MemoryStore
from lembro.flask import Lembro, LembroSession
from lembro.ids import is_session_id
from tests.unit.test_memory import assert_accounting_exact

OWN_CLIENTS = 8  # each with a session of its own
SHARED_CLIENTS = 8  # all on one session
REQUESTS_PER_CLIENT = 40
WHOLE_PARTS = 16  # a whole write repeats its mark this many times, so a mix would show
JOIN_TIMEOUT = 120.0  # seconds: a bound, not a measurement; a hang fails the test


def whole_write(writer: str, seq: int) -> dict[str, Any]:
    """One write to the shared session: every part says who wrote it and when."""
    mark = f"{writer}:{seq}"
    return {"writer": writer, "seq": seq, "parts": [mark] * WHOLE_PARTS, "text": mark * 8}


def is_whole(value: Any) -> bool:
    """Whether ``value`` is exactly one :func:`whole_write`, not pieces of several."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("writer"), str)
        and isinstance(value.get("seq"), int)
        and value == whole_write(value["writer"], value["seq"])
    )


def make_app(store: MemoryStore, errors: list[BaseException]) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="concurrency-secret")
    Lembro(app, store)

    def record(sender: Flask, exception: BaseException, **extra: Any) -> None:
        errors.append(exception)

    got_request_exception.connect(record, app, weak=False)

    @app.post("/inc")
    def inc() -> ResponseReturnValue:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.post("/append/<writer>/<int:seq>")
    def append(writer: str, seq: int) -> ResponseReturnValue:
        # A new list, not an in-place append: the session sees the assignment.
        session["items"] = [*session.get("items", []), f"{writer}:{seq}"]
        return jsonify(session["items"])

    @app.post("/whole/<writer>/<int:seq>")
    def whole(writer: str, seq: int) -> ResponseReturnValue:
        session["w"] = whole_write(writer, seq)
        return "ok"

    @app.get("/read")
    def read() -> ResponseReturnValue:
        return jsonify(dict(session))

    @app.post("/regenerate")
    def regenerate() -> ResponseReturnValue:
        assert isinstance(session, LembroSession)
        session.regenerate()
        return "ok"

    @app.post("/logout")
    def logout() -> ResponseReturnValue:
        session.clear()
        return "out"

    return app


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without a log line per request; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[BaseWSGIServer, MemoryStore, list[BaseException]]]:
    """A threaded Werkzeug server on a free port, its store, and the app's exceptions."""
    errors: list[BaseException] = []
    with MemoryStore("16M", None) as store:
        srv = make_server(
            "127.0.0.1", 0, make_app(store, errors), threaded=True, request_handler=QuietHandler
        )
        thread = threading.Thread(target=srv.serve_forever, name="wsgi-server", daemon=True)
        thread.start()
        try:
            yield srv, store, errors
        finally:
            srv.shutdown()
            srv.server_close()
            thread.join(timeout=10)
    assert not thread.is_alive()


_SESSION_COOKIE = re.compile(r"session=([^;]*)")


@dataclass
class Client:
    """One client with its own connection and cookie, like one browser tab."""

    port: int
    cookie: str | None = None
    statuses: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str) -> tuple[int, str]:
        headers = {} if self.cookie is None else {"Cookie": f"session={self.cookie}"}
        self.conn.request(method, path, headers=headers)
        response = self.conn.getresponse()
        body = response.read().decode()
        self.statuses.append(response.status)
        for header in response.headers.get_all("Set-Cookie") or []:
            match = _SESSION_COOKIE.match(header)
            if match is not None:
                self.cookie = match[1] or None  # an empty value deletes the cookie
        return response.status, body

    @property
    def sid(self) -> str | None:
        return None if self.cookie is None else self.cookie.rsplit(".", 1)[0]

    def close(self) -> None:
        self.conn.close()


def run_own_client(client: Client, seed: int, store: MemoryStore) -> dict[str, Any]:
    """Count, append, read, regenerate and log out on a session no one else uses.

    Every answer must be exact; returns the session the client expects at the end.
    """
    rng = random.Random(seed)
    name = f"own{seed}"
    expected: dict[str, Any] = {}
    for seq in range(REQUESTS_PER_CLIENT):
        op = rng.choices(["inc", "append", "read", "regenerate", "logout"], [7, 5, 5, 2, 1])[0]
        if op == "inc":
            status, body = client.request("POST", "/inc")
            expected["n"] = expected.get("n", 0) + 1
            assert (status, int(body)) == (200, expected["n"])
        elif op == "append":
            status, body = client.request("POST", f"/append/{name}/{seq}")
            expected["items"] = [*expected.get("items", []), f"{name}:{seq}"]
            assert (status, json.loads(body)) == (200, expected["items"])
        elif op == "read":
            status, body = client.request("GET", "/read")
            assert (status, json.loads(body)) == (200, expected)
        elif op == "regenerate":
            old = client.sid
            status, _ = client.request("POST", "/regenerate")
            assert status == 200
            if expected:  # an empty session has no record to move
                assert client.sid is not None
                assert client.sid != old
                assert old not in store  # the old record is destroyed
        else:
            old = client.sid
            status, _ = client.request("POST", "/logout")
            assert status == 200
            assert client.cookie is None
            assert old is None or old not in store
            expected = {}
    status, body = client.request("GET", "/read")
    assert (status, json.loads(body)) == (200, expected)
    return expected


def run_shared_client(client: Client, index: int, reads: list[Any]) -> list[int]:
    """Write whole values, append and read on the shared session; return the seqs of the
    whole writes that answered 200."""
    rng = random.Random(1000 + index)
    name = f"shared{index}"
    written = []
    for seq in range(REQUESTS_PER_CLIENT):
        op = rng.choices(["whole", "append", "read"], [4, 3, 3])[0]
        if op == "whole":
            status, _ = client.request("POST", f"/whole/{name}/{seq}")
            if status == 200:
                written.append(seq)
        elif op == "append":
            status, body = client.request("POST", f"/append/{name}/{seq}")
            assert status == 200
            items = json.loads(body)
            assert items[-1] == f"{name}:{seq}"  # its own write, on top of a whole list
            reads.append({"items": items})
        else:
            status, body = client.request("GET", "/read")
            assert status == 200
            reads.append(json.loads(body))
        assert status == 200
    return written


def run_cookieless_client(client: Client) -> None:
    """Only reads, never with a cookie: must get an empty session and create nothing."""
    for _ in range(REQUESTS_PER_CLIENT):
        status, body = client.request("GET", "/read")
        assert (status, json.loads(body)) == (200, {})
        assert client.cookie is None


def assert_items_well_formed(items: Any, writers: set[str]) -> None:
    """A list of appends: from known writers, each entry once, each writer's in order."""
    assert isinstance(items, list)
    assert len(items) == len(set(items))
    last: dict[str, int] = {}
    for item in items:
        writer, seq = item.split(":")
        assert writer in writers
        assert int(seq) > last.get(writer, -1)
        last[writer] = int(seq)


def test_concurrent_clients_keep_sessions_whole_and_accounting_exact(
    server: tuple[BaseWSGIServer, MemoryStore, list[BaseException]],
) -> None:
    srv, store, errors = server
    port = srv.server_port

    shared_seed = Client(port)
    status, _ = shared_seed.request("POST", "/whole/seed/0")
    assert status == 200
    assert shared_seed.cookie is not None
    shared_sid = shared_seed.sid
    assert shared_sid is not None
    shared_seed.close()

    own = [Client(port) for _ in range(OWN_CLIENTS)]
    shared = [Client(port, cookie=shared_seed.cookie) for _ in range(SHARED_CLIENTS)]
    cookieless = Client(port)
    shared_reads: list[Any] = []  # list.append is atomic: threads may share it
    results: dict[str, Any] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(OWN_CLIENTS + SHARED_CLIENTS + 1)

    def worker(key: str, job: Any, *args: Any) -> None:
        try:
            start.wait(timeout=30)
            results[key] = job(*args)
        except BaseException as e:
            failures.append(e)

    threads = [
        threading.Thread(target=worker, args=(f"own{i}", run_own_client, c, i, store))
        for i, c in enumerate(own)
    ]
    threads += [
        threading.Thread(target=worker, args=(f"shared{i}", run_shared_client, c, i, shared_reads))
        for i, c in enumerate(shared)
    ]
    threads.append(
        threading.Thread(target=worker, args=("cookieless", run_cookieless_client, cookieless))
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    for c in [*own, *shared, cookieless]:
        c.close()
    assert not any(t.is_alive() for t in threads), "a client hung"
    if failures:
        raise failures[0]
    assert errors == []  # no exception inside the app
    statuses = [s for c in [*own, *shared, cookieless] for s in c.statuses]
    assert len(statuses) == (OWN_CLIENTS + SHARED_CLIENTS + 1) * REQUESTS_PER_CLIENT + OWN_CLIENTS
    assert set(statuses) == {200}  # no 500s

    # Sessions no one else touched: exactly what their client expects, none lost.
    expected_by_sid = {c.sid: results[f"own{i}"] for i, c in enumerate(own) if c.sid}
    assert all(is_session_id(sid) for sid in expected_by_sid)
    for i, c in enumerate(own):
        assert (c.sid is None) == (results[f"own{i}"] == {})
    held = store.all()  # every session still loads
    for sid, data in expected_by_sid.items():
        assert held[sid] == data

    # The shared session: every read, and the final value, is one whole write that was made.
    writers = {f"shared{i}" for i in range(SHARED_CLIENTS)}
    made = {("seed", 0)} | {
        (f"shared{i}", seq) for i in range(SHARED_CLIENTS) for seq in results[f"shared{i}"]
    }
    for seen in shared_reads:
        assert set(seen) <= {"w", "items"}
        if "w" in seen:
            assert is_whole(seen["w"])
            assert (seen["w"]["writer"], seen["w"]["seq"]) in made
        assert_items_well_formed(seen.get("items", []), writers)
    final = held[shared_sid]
    assert is_whole(final["w"])
    assert (final["w"]["writer"], final["w"]["seq"]) in made  # a write that happened
    assert_items_well_formed(final.get("items", []), writers)

    # Nothing else stored (the cookieless reader created nothing; regenerated and logged
    # out records are gone), and the store's byte count is exact.
    assert set(held) == set(expected_by_sid) | {shared_sid}
    assert len(store) == len(held)
    assert_accounting_exact(store)

    # Once requests stop overlapping, the last write is what is read.
    last = Client(port, cookie=shared_seed.cookie)
    assert last.request("POST", "/whole/final/1")[0] == 200
    status, body = last.request("GET", "/read")
    last.close()
    assert status == 200
    assert json.loads(body)["w"] == whole_write("final", 1)
