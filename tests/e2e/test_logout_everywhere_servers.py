"""Log out everywhere across real servers (issue 19): two uvicorn processes serving one
Starlette app on one real redis-server, driven over HTTP on 127.0.0.1.

A user signed in on devices served by the other process is signed out by one call in
this one; and while that user's other devices keep sending requests (each a write of its
session) from several threads, none of their sessions survives the call.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lembro import RedisStore

from ..redis_server import RedisServer
from .procs import Server, free_port

pytestmark = pytest.mark.e2e

ASGI_APP = """
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lembro import RedisStore
from lembro.starlette import SessionMiddleware, logout_everywhere, regenerate


async def login(request: Request) -> PlainTextResponse:
    regenerate(request)
    request.session["user"] = request.path_params["name"]
    return PlainTextResponse("in")


async def whoami(request: Request) -> PlainTextResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(f"{request.session.get('user') or 'anonymous'} {request.session['n']}")


async def logout_others(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(await logout_everywhere(request, request.session["user"])))


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("up")


store = RedisStore(os.environ["REDIS_URL"], prefix=os.environ["PREFIX"], owner_key="user")
app = Starlette(
    routes=[
        Route("/", ping),
        Route("/login/{name}", login, methods=["POST"]),
        Route("/whoami", whoami),
        Route("/logout-others", logout_others, methods=["POST"]),
    ]
)
app.add_middleware(SessionMiddleware, secret_key="lembro-e2e", store=store)
"""


@pytest.fixture
def servers(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Server, Server, str]]:
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    prefix = f"lembro-e2e:{uuid.uuid4().hex[:12]}:"
    env = {"REDIS_URL": redis_server.url, "PREFIX": prefix}
    started = []
    try:
        for _ in range(2):
            port = free_port()
            args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "asgi:app"]
            started.append(Server(args, tmp_path, port, env, name="uvicorn"))
        for server in started:
            server.wait_ready()
        yield started[0], started[1], prefix
    finally:
        for server in started:
            server.stop()
        with RedisStore(redis_server.url, prefix=prefix, owner_key="user") as store:
            store.clear()


def sid_of(client: httpx.Client) -> str:
    return client.cookies["session"].split(".")[0]


def test_one_call_signs_out_the_users_devices_served_by_another_process(
    servers: tuple[Server, Server, str], redis_server: RedisServer
) -> None:
    first, second, prefix = servers
    with (
        httpx.Client(base_url=first.url) as laptop,
        httpx.Client(base_url=second.url) as phone,
        RedisStore(redis_server.url, prefix=prefix, owner_key="user") as store,
    ):
        laptop.post("/login/alice")
        phone.post("/login/alice")
        phone_before = sid_of(phone)
        assert len(store.sessions_of("alice")) == 2

        assert laptop.post("/logout-others").text == "1"

        assert store.sessions_of("alice") == [sid_of(laptop)]
        assert phone.get("/whoami").text == "anonymous 1"
        assert sid_of(phone) != phone_before
        assert laptop.get("/whoami").text == "alice 1"


def test_no_session_of_the_user_survives_while_its_devices_keep_writing(
    servers: tuple[Server, Server, str], redis_server: RedisServer
) -> None:
    first, second, prefix = servers
    keeper = httpx.Client(base_url=first.url)
    devices = [httpx.Client(base_url=(first, second)[i % 2].url) for i in range(6)]
    try:
        keeper.post("/login/alice")
        for device in devices:
            device.post("/login/alice")
        ended = [sid_of(device) for device in devices]
        busy = threading.Barrier(len(devices) + 1)
        stop = threading.Event()
        errors: list[BaseException] = []

        def browse(device: httpx.Client) -> None:
            try:
                device.get("/whoami")
                busy.wait()
                while not stop.is_set():
                    device.get("/whoami")  # a write of the session on every request
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=browse, args=(device,)) for device in devices]
        for thread in threads:
            thread.start()
        busy.wait()
        assert keeper.post("/logout-others").text == str(len(devices))
        for device in devices:  # a request of each after the call, too
            device.get("/whoami")
        stop.set()
        for thread in threads:
            thread.join()
        assert errors == []
        with RedisStore(redis_server.url, prefix=prefix, owner_key="user") as store:
            assert store.sessions_of("alice") == [sid_of(keeper)]
            for sid in ended:
                assert store.get(sid) is None
        for device in devices:
            assert device.get("/whoami").text.startswith("anonymous ")
    finally:
        keeper.close()
        for device in devices:
            device.close()
