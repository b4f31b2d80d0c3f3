"""The demo's devices page (issue 29): each session of the signed-in name with its browser,
IP and last use, this one marked, and a button that ends another. Over real HTTP to the
demo's own server process, with browsers as separate cookie jars."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import DemoServer, start_demo

pytestmark = pytest.mark.e2e

_ROW = re.compile(r'<li class="device">(.*?)</li>', re.S)
_TOKEN = re.compile(r'name="device" value="([0-9a-f]+)"')


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoServer]:
    server = start_demo(["--snapshot", ""], cwd=tmp_path)
    yield server
    server.stop()


def browser(demo: DemoServer, agent: str) -> httpx.Client:
    return httpx.Client(base_url=demo.url, headers={"User-Agent": agent})


def rows(client: httpx.Client) -> list[str]:
    response = client.get("/devices")
    assert response.status_code == 200
    return _ROW.findall(response.text)


def signed_in_as(client: httpx.Client) -> str | None:
    user: str | None = client.get("/api/state").json()["you"]["user"]
    return user


def sid_of(client: httpx.Client) -> str:
    return client.cookies["session"].split(".")[0]


def test_the_page_lists_each_device_with_its_browser_ip_and_last_use(demo: DemoServer) -> None:
    with browser(demo, "Laptop/1.0") as laptop, browser(demo, "Phone/2.0") as phone:
        laptop.post("/login", data={"name": "ada"}, follow_redirects=True)
        phone.post("/login", data={"name": "ada"}, follow_redirects=True)
        found = rows(laptop)
        assert len(found) == 2
        mine = [row for row in found if "this device" in row]
        assert len(mine) == 1
        assert "Laptop/1.0" in mine[0]
        other = next(row for row in found if "this device" not in row)
        assert "Phone/2.0" in other
        assert "127.0.0.1" in other
        assert "just now" in other
        assert _TOKEN.search(other) is not None  # a button to end it
        page = laptop.get("/devices").text
        assert sid_of(phone) not in page
        assert sid_of(laptop) not in page


def test_the_button_ends_the_other_devices_session_only(demo: DemoServer) -> None:
    with browser(demo, "Laptop/1.0") as laptop, browser(demo, "Phone/2.0") as phone:
        laptop.post("/login", data={"name": "ada"}, follow_redirects=True)
        phone.post("/login", data={"name": "ada"}, follow_redirects=True)
        other = next(row for row in rows(laptop) if "this device" not in row)
        token = _TOKEN.search(other)
        assert token is not None
        response = laptop.post("/devices/end", data={"device": token.group(1)})
        assert response.status_code == 303
        assert signed_in_as(phone) is None  # the phone's session ended
        assert signed_in_as(laptop) == "ada"
        remaining = rows(laptop)
        assert len(remaining) == 1
        assert "this device" in remaining[0]


def test_another_user_cannot_end_a_session_that_is_not_theirs(demo: DemoServer) -> None:
    with browser(demo, "Phone/2.0") as phone, browser(demo, "Laptop/1.0") as laptop:
        phone.post("/login", data={"name": "ada"}, follow_redirects=True)
        laptop.post("/login", data={"name": "ada"}, follow_redirects=True)
        token = _TOKEN.search(next(row for row in rows(laptop) if "this device" not in row))
        assert token is not None
        with browser(demo, "Eve/6.6") as eve:
            eve.post("/login", data={"name": "eve"}, follow_redirects=True)
            eve.post("/devices/end", data={"device": token.group(1)})
        assert signed_in_as(phone) == "ada"


def test_a_user_agent_is_shown_as_text_never_as_markup(demo: DemoServer) -> None:
    with browser(demo, "<script>alert(1)</script>") as odd, browser(demo, "Plain/1") as plain:
        odd.post("/login", data={"name": "ada"}, follow_redirects=True)
        plain.post("/login", data={"name": "ada"}, follow_redirects=True)
        page = plain.get("/devices").text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_signed_out_the_page_asks_to_sign_in(demo: DemoServer) -> None:
    with browser(demo, "Laptop/1.0") as laptop:
        response = laptop.get("/devices")
        assert response.status_code == 200
        assert "Sign in" in response.text
        assert rows(laptop) == []
