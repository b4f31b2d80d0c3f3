"""docs/redis.md's set-ups, each framework on a Redis deployment: Flask on a Redis Cluster,
Starlette on Sentinel and on Valkey through valkey-py, Django on a TLS cluster; a login,
a visit and a logout through the framework, the record checked in Redis. And Litestar's
store on Redis: a renewal racing a write."""

from __future__ import annotations

import asyncio
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
from lembro.litestar import LembroStore

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


def test_litestar_renewal_never_undoes_a_set_racing_it(redis_server: RedisServer) -> None:
    """Litestar's get(renew_for=...) reads and renews in one GETEX: a set() of a new value
    that lands between the read and the renewal is never overwritten by the old one."""

    async def main() -> list[bytes | None]:
        async with AsyncRedisStore(redis_server.url, prefix=prefix()) as redis_store:
            store = LembroStore(redis_store)
            finals = []
            for _ in range(50):
                await store.set("key", b"old", expires_in=60)
                read, _ = await asyncio.gather(
                    store.get("key", renew_for=120), store.set("key", b"new", expires_in=60)
                )
                assert read in (b"old", b"new")
                finals.append(await store.get("key"))
            await redis_store.clear()
            return finals

    assert asyncio.run(main()) == [b"new"] * 50


def test_litestar_renewal_on_redis_moves_the_expiry_it_reports(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with AsyncRedisStore(redis_server.url, prefix=prefix(), ttl=1000) as redis_store:
            store = LembroStore(redis_store)
            await store.set("short", b"value", expires_in=10)
            await store.set("forever", b"value")
            assert await store.get("short", renew_for=500) == b"value"
            assert 490 <= (await store.expires_in("short") or 0) <= 500
            assert await store.get("forever", renew_for=5) == b"value"
            assert await store.expires_in("forever") == -1  # no expiry, as Litestar says
            # It still lives the lembro store's ttl, not the 5 s it was asked to renew for.
            assert (await redis_store.time_left("LITESTAR\x1eforever") or 0) > 900
            assert await store.get("absent", renew_for=5) is None
            assert await store.expires_in("absent") is None
            await redis_store.clear()

    asyncio.run(main())
