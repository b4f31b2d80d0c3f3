"""Litestar with lembro sessions: ``python examples/litestar_app.py`` serves
http://127.0.0.1:8003/ (uvicorn); each visit counts, /login rotates the id, /logout ends it."""

from typing import Any

from litestar import Litestar, Request, get, post

from lembro import MemoryStore
from lembro.litestar import LembroSessionConfig, LembroStore, regenerate


@get("/")
async def count(request: Request[Any, Any, Any]) -> dict[str, Any]:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return {"visits": request.session["visits"], "user": request.session.get("user")}


@post("/login")
async def login(request: Request[Any, Any, Any]) -> dict[str, str]:
    regenerate(request)  # a new id at login; the old record is destroyed
    request.session["user"] = "ada"
    return {"user": "ada"}


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> dict[str, str]:
    request.clear_session()
    return {"user": "nobody"}


app = Litestar(
    route_handlers=[count, login, logout],
    middleware=[LembroSessionConfig(max_age=1800).middleware],
    stores={"sessions": LembroStore(MemoryStore("4M", 360.0))},
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8003)
