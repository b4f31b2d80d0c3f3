"""The demo, served by a real server process on a free loopback port, driven over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import DemoServer, start_demo


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoServer]:
    server = start_demo(["--snapshot", ""], cwd=tmp_path)
    yield server
    server.stop()


def state(client: httpx.Client) -> dict[str, dict[str, object]]:
    response = client.get("/api/state")
    assert response.status_code == 200
    result: dict[str, dict[str, object]] = response.json()
    return result


def test_demo_counts_visits_and_shows_the_store(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "lembro" in page.text
        assert "Flood" in page.text
        client.post("/visit")
        you = state(client)["you"]
        assert you["visits"] == 2
        store = state(client)["store"]
        assert store["sessions"] == 1
        assert store["max_size"] == 4 * 1024 * 1024
        assert 0 < store["size"] <= store["max_size"]  # type: ignore[operator]


def test_demo_state_alone_creates_no_session(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as client:
        body = state(client)
        assert body["you"]["visits"] == 0
        assert body["store"]["sessions"] == 0
        assert "set-cookie" not in client.get("/api/state").headers


def test_demo_login_rotates_the_id_and_logout_removes_the_session(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as client:
        client.get("/")
        before = client.cookies["session"]
        client.post("/login", data={"name": "ada"})
        after = client.cookies["session"]
        assert after != before
        you = state(client)["you"]
        assert you == {"visits": 1, "user": "ada", "sid": you["sid"]}
        with httpx.Client(base_url=demo.url, cookies={"session": before}) as old:
            assert state(old)["you"]["visits"] == 0  # the old id is gone from the store
        client.post("/logout")
        assert "session" not in client.cookies
        assert state(client)["store"]["sessions"] == 0


def test_flood_keeps_the_cap_and_the_visitor(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url, timeout=60) as client:
        client.get("/")
        client.get("/")
        flood = client.post("/flood").json()
        assert flood["created"] == 100_000
        store = state(client)["store"]
        assert store["evicted"] > 50_000  # type: ignore[operator]
        assert store["size"] <= store["max_size"]  # type: ignore[operator]
        assert state(client)["you"]["visits"] == 2
