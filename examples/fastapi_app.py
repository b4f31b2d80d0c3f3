"""A visit counter on FastAPI, its session kept server-side: python examples/fastapi_app.py"""

import os

from fastapi import FastAPI, Request

from lembro import MemoryStore
from lembro.starlette import SessionMiddleware

app = FastAPI()
app.add_middleware(
    SessionMiddleware,
    secret_key=os.environ.get("SECRET_KEY", "dev-only-change-me"),
    store=MemoryStore("4M"),  # at most 4 MiB of sessions; expired ones purged
)


@app.get("/")
def count(request: Request) -> dict[str, int]:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return {"visits": request.session["visits"]}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8001)
