"""The README's set-ups, each framework on a Redis deployment: Flask on a Redis Cluster,
Starlette on Sentinel and on Valkey through valkey-py, Django on a TLS cluster; a login,
a visit and a logout through the framework, the record checked in Redis."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from flask import Flask, session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lembro import AsyncRedisStore, RedisStore
from lembro.flask import Lembro

from ..redis_server import RedisServer
from ..topologies import Cluster, SentinelSetup

SECRET = "a test secret that is long enough"


def prefix() -> str:
    return f"lembro-test:{uuid.uuid4().hex[:12]}:"


def test_flask_on_a_redis_cluster(redis_cluster: Cluster) -> None:
    store = RedisStore(redis_cluster.url, prefix=prefix())
    app = Flask(__name__)
    app.secret_key = SECRET
    Lembro(app, store)

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"user": session.get("user")}

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "ok"

    client = app.test_client()
    client.post("/login")
    assert client.get("/me").json == {"user": "alice"}
    assert list(store.all().values()) == [{"user": "alice"}]
    client.post("/logout")
    assert client.get("/me").json == {"user": None}
    assert len(store) == 0
    store.close()


def starlette_app(store: AsyncRedisStore, client: Any = None) -> Starlette:
    """The app, closing the store (and a client it was given) when it shuts down."""
    from lembro.starlette import SessionMiddleware

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await store.close()
        if client is not None:
            await client.aclose()

    async def login(request: Request) -> JSONResponse:
        request.session["user"] = "bob"
        return JSONResponse("ok")

    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.session.get("user")})

    async def logout(request: Request) -> JSONResponse:
        request.session.clear()
        return JSONResponse("ok")

    return Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/me", me),
            Route("/logout", logout, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
        lifespan=lifespan,
    )


def visit(app: Starlette) -> list[Any]:
    from .test_starlette import TestClient  # imported there without httpx's warning

    with TestClient(app) as client:  # one event loop for the whole visit
        client.post("/login")
        seen = [client.get("/me").json()]
        client.post("/logout")
        seen.append(client.get("/me").json())
    return seen


def test_starlette_on_sentinel(redis_sentinel: SentinelSetup) -> None:
    store = AsyncRedisStore(redis_sentinel.url, prefix=prefix())
    assert visit(starlette_app(store)) == [{"user": "bob"}, {"user": None}]
    with RedisStore(redis_sentinel.url, prefix=store.prefix) as check:
        assert len(check) == 0


def test_starlette_on_valkey_through_valkey_py(valkey_server: RedisServer) -> None:
    import valkey.asyncio

    client = valkey.asyncio.Valkey.from_url(valkey_server.url)
    store = AsyncRedisStore(client=client, prefix=prefix())
    assert visit(starlette_app(store, client)) == [{"user": "bob"}, {"user": None}]
    with RedisStore(valkey_server.url, prefix=store.prefix) as check:
        assert len(check) == 0


def test_django_builds_a_store_on_a_tls_cluster_url(tls_cluster: Cluster) -> None:
    from lembro.django import build_store

    from .test_django import configure_django

    configure_django()
    store = build_store({"STORE": "redis", "URL": tls_cluster.url, "PREFIX": prefix()})
    assert isinstance(store, RedisStore)
    store.set("abc", {"user": "carol"})
    assert store.get("abc") == {"user": "carol"}
    assert store.destroy("abc") is True
    store.close()
