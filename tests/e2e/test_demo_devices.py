"""The demo's "your devices" list and its "sign out other devices" button (issue 19), over
real HTTP to the demo's own server process, with two browsers (two cookie jars)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lembro.ids import redact
from tests.servers import DemoServer, start_demo

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoServer]:
    server = start_demo(["--snapshot", ""], cwd=tmp_path)
    yield server
    server.stop()


def state(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/state")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def sid_of(client: httpx.Client) -> str:
    return client.cookies["session"].split(".")[0]


def test_two_browsers_signed_in_as_one_name_see_both_sessions(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as laptop, httpx.Client(base_url=demo.url) as phone:
        laptop.post("/login", data={"name": "ada"}, follow_redirects=True)
        phone.post("/login", data={"name": "ada"}, follow_redirects=True)
        seen = state(laptop)["devices"]
        assert len(seen) == 2
        assert {d["id"] for d in seen} == {redact(sid_of(laptop)), redact(sid_of(phone))}
        assert [d["current"] for d in seen if d["id"] == redact(sid_of(laptop))] == [True]
        assert sum(d["current"] for d in seen) == 1
        assert all(len(d["id"]) <= 7 for d in seen)  # redacted: never a usable id


def test_sign_out_other_devices_ends_the_other_browsers_session(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as laptop, httpx.Client(base_url=demo.url) as phone:
        laptop.post("/login", data={"name": "ada"}, follow_redirects=True)
        phone.post("/login", data={"name": "ada"}, follow_redirects=True)
        phone_before = sid_of(phone)
        response = laptop.post("/logout-others")
        assert response.status_code == 303
        assert state(laptop)["devices"] == [{"id": redact(sid_of(laptop)), "current": True}]
        assert state(laptop)["you"]["user"] == "ada"
        phone_now = state(phone)
        assert phone_now["you"]["user"] is None
        assert phone_now["devices"] == []
        phone.get("/")  # its next visit starts a new, anonymous session
        assert sid_of(phone) != phone_before
        assert state(phone)["you"] == {"visits": 1, "user": None, "sid": redact(sid_of(phone))}


def test_other_names_and_anonymous_visitors_are_not_listed(demo: DemoServer) -> None:
    with (
        httpx.Client(base_url=demo.url) as ada,
        httpx.Client(base_url=demo.url) as bob,
        httpx.Client(base_url=demo.url) as visitor,
    ):
        ada.post("/login", data={"name": "ada"}, follow_redirects=True)
        bob.post("/login", data={"name": "bob"}, follow_redirects=True)
        visitor.get("/")
        assert len(state(ada)["devices"]) == 1
        assert state(visitor)["devices"] == []
        bob.post("/logout-others")  # bob's only session is his own: nothing else ends
        assert state(ada)["you"]["user"] == "ada"
        assert state(bob)["you"]["user"] == "bob"


def test_the_page_has_the_devices_list_and_its_button(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url) as client:
        page = client.get("/").text
        assert 'id="devices"' in page
        assert 'action="/logout-others"' in page
        assert "this device" in page
