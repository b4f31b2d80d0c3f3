"""The demo (tools/demo.py), served by a real server process on a free loopback port, driven
over HTTP as a browser would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ROOT, DemoServer, start_demo, tools_env
from tools.demo import plural

pytestmark = pytest.mark.e2e


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
        client.get("/")  # "Visit again" is a link to the page
        you = state(client)["you"]
        assert you["visits"] == 2
        store = state(client)["store"]
        assert store["sessions"] == 1
        assert store["max_size"] == 4 * 1024 * 1024
        assert 0 < store["size"] <= store["max_size"]  # type: ignore[operator]


def test_demo_serves_its_stores_metrics_to_prometheus(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as client:
        client.get("/")
        client.post("/login", data={"name": "ada"})
        client.post("/logout")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, sample.labels.get("reason", "")): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("lembro_up", "")] == 1
    assert samples[("lembro_sessions", "")] == 0
    assert samples[("lembro_max_bytes", "")] == 4 * 1024 * 1024
    assert samples[("lembro_created_total", "")] == 2  # the visit's, and the login's new id
    assert samples[("lembro_destroyed_total", "regenerate")] == 1
    assert samples[("lembro_destroyed_total", "logout")] == 1
    assert samples[("lembro_cookies_rejected_total", "bad_signature")] == 0
    assert "set-cookie" not in response.headers


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


def test_each_button_counts_its_visit_once_when_the_browser_follows_the_redirect(
    demo: DemoServer,
) -> None:
    with httpx.Client(base_url=demo.url, follow_redirects=True) as client:
        first = client.get("/")
        assert '<div class="big" id="visits">1</div><div id="visits-unit">visit</div>' in (
            first.text
        )
        client.post("/login", data={"name": "ada"})  # the POST, then the page once
        assert state(client)["you"]["visits"] == 2
        again = client.get("/")
        assert '<div id="visits-unit">visits</div>' in again.text
        assert state(client)["you"]["visits"] == 3


def test_logout_shows_the_session_ended_and_starts_no_new_one(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url, follow_redirects=True) as client:
        client.get("/")
        page = client.post("/logout")
        assert page.url.path == "/"
        assert "Your session ended" in page.text
        assert "session" not in client.cookies
        assert state(client)["store"]["sessions"] == 0
        assert state(client)["you"]["visits"] == 0
        client.get("/")  # the next visit starts a new session
        assert state(client)["you"]["visits"] == 1
        assert state(client)["store"]["sessions"] == 1


def test_the_cookie_is_http_only_and_same_site_lax(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as client:
        cookie = client.get("/").headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie


def test_plural_says_one_visit_and_many_visits() -> None:
    assert plural(1, "visit") == "1 visit"
    assert plural(0, "visit") == "0 visits"
    assert plural(1234, "visit") == "1,234 visits"


def run_demo_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=tools_env(),
        check=False,
    )


def test_demo_help_names_the_command_and_explains_every_option() -> None:
    done = run_demo_command("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m tools.demo")
    options = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  --")]
    assert options == [
        "--host",
        "--port",
        "--max-size",
        "--ttl",
        "--absolute-ttl",
        "--renew-every",
        "--secret-key",
        "--snapshot",
        "--snapshot-interval",
    ]
    # Each option's entry: its own line, then its help on that line or the lines below it.
    entries = done.stdout.split("\noptions:", 1)[1].split("\n  -")[1:]
    assert len(entries) == 1 + len(options)  # and -h
    for entry in entries:
        spec, _, rest = entry.partition("  ")
        assert rest.split(), f"-{spec} has no help"


def test_a_bad_max_size_gets_lembros_own_message() -> None:
    done = run_demo_command("--max-size", "4X")
    assert done.returncode == 2
    assert "argument --max-size: invalid size '4X'; expected a positive int of bytes" in (
        done.stderr
    )
    assert "invalid size_option value" not in done.stderr


def test_a_busy_port_says_how_to_pick_another() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_demo_command("--port", str(port), "--snapshot", "")
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert f"`make demo PORT={port + 1}`" in done.stderr
    assert "Traceback" not in done.stderr


def test_make_demo_passes_port_to_the_demo() -> None:
    env = {name: value for name, value in os.environ.items() if name != "PORT"}
    for args, port in (([], 8000), (["PORT=8011"], 8011)):
        done = subprocess.run(
            ["make", "--dry-run", "demo", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
            check=True,
        )
        assert f"-m tools.demo --port {port}\n" in done.stdout
