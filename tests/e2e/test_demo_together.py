"""The demo's two-tabs page (tools/demo_together.py), served by the real demo process and
driven over HTTP: a theme change and cart additions in flight at once, none lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import DemoServer, start_demo

pytestmark = pytest.mark.e2e

DELAY_MS = 400  # each request holds its loaded session this long, so they overlap


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoServer]:
    server = start_demo(["--snapshot", ""], cwd=tmp_path)
    try:
        yield server
    finally:
        server.stop()


def at_once(url: str, cookies: httpx.Cookies, posts: list[tuple[str, dict[str, str]]]) -> list:
    """POST each (path, form) at the same moment, each on a connection of its own, as two
    tabs of one browser would; return the JSON answers in order."""
    start = threading.Barrier(len(posts))
    answers: list[object] = [None] * len(posts)

    def send(index: int, path: str, form: dict[str, str]) -> None:
        with httpx.Client(base_url=url, cookies=cookies, timeout=30) as client:
            start.wait()
            response = client.post(f"{path}?delay={DELAY_MS}", data=form)
            assert response.status_code == 200, response.text
            answers[index] = response.json()

    threads = [
        threading.Thread(target=send, args=(i, path, form)) for i, (path, form) in enumerate(posts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers)
    return answers


def test_a_theme_and_cart_additions_made_at_once_are_all_kept(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url, timeout=30) as browser:
        page = browser.get("/together")
        assert page.status_code == 200
        assert "Two tabs at once" in page.text
        cart: list[str] = []
        themes = ["dark", "sepia", "light", "dark"]
        items = ["tea", "bread", "apples", "cheese"]
        for theme, item in zip(themes, items, strict=True):
            picked, added = at_once(
                demo.url,
                browser.cookies,
                [("/api/theme", {"theme": theme}), ("/api/cart", {"item": item})],
            )
            # Each loaded the session before the other wrote: neither saw the other's change.
            assert picked["loaded"]["cart"] == cart
            assert added["loaded"]["theme"] != theme
            cart.append(item)
            assert browser.get("/api/together").json() == {"theme": theme, "cart": cart}


def test_the_page_links_the_two_panels_and_refuses_unknown_values(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url, timeout=30) as browser:
        assert 'href="/together"' in browser.get("/").text
        theme_only = browser.get("/together?panel=theme").text
        assert 'id="cart-panel" hidden' in theme_only
        assert browser.post("/api/theme?delay=0", data={"theme": "plaid"}).status_code == 400
        assert browser.post("/api/cart?delay=0", data={"item": "<script>"}).status_code == 400
        assert browser.get("/api/together").json() == {"theme": "light", "cart": []}
