"""Real server processes for the process-model tests: started on a free loopback port,
their output kept in a file, stopped by signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.ports import free_port

__all__ = ["SEVERAL", "Server", "env_for", "free_port", "run_group", "run_script"]

# What lembro's ERROR about several processes says.
SEVERAL = "serve this app with their own MemoryStore"

LOGGING = """
import logging
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
logging.getLogger("lembro").addHandler(_handler)
"""

FLASK_APP = (
    LOGGING
    + """
import os
from flask import Flask, session
from lembro.flask import Lembro

app = Flask(__name__)
app.secret_key = "a test key"
app.config["LEMBRO_SNAPSHOT"] = os.environ.get("SNAPSHOT") or None
Lembro(app)


@app.get("/")
def visit():
    session["visits"] = session.get("visits", 0) + 1
    return f"{os.getpid()} {session['visits']}"


@app.get("/logout")
def logout():
    session.clear()
    return f"{os.getpid()} 0"


@app.get("/pid")
def pid():
    return f"{os.getpid()} 0"


if __name__ == "__main__":
    # The reloader looks at the files four times a second (werkzeug: once), so a test
    # that touches one sees the restart sooner.
    app.run(
        "127.0.0.1", int(os.environ["PORT"]), debug=True, use_reloader=True, reloader_interval=0.25
    )
"""
)

ASGI_APP = (
    LOGGING
    + """
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from lembro import MemoryStore
from lembro.starlette import SessionMiddleware


async def visit(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return PlainTextResponse(f"{os.getpid()} {request.session['visits']}")


app = Starlette(routes=[Route("/", visit)])
app.add_middleware(SessionMiddleware, secret_key="a test key", store=MemoryStore("1M"))
"""
)

DJANGO_APP = """
import os
import sys

from django.conf import settings
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="a test key",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF="views",
    INSTALLED_APPS=["lembro.django.LembroConfig"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE="lembro.django",
    LEMBRO={"SNAPSHOT": os.environ.get("SNAPSHOT") or None},
)

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
else:  # served by gunicorn as manage:application
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
"""

DJANGO_VIEWS = """
import os
from django.http import HttpResponse
from django.urls import path


def visit(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(f"{os.getpid()} {request.session['visits']}")


urlpatterns = [path("", visit)]
"""


def env_for(directory: Path, extra: dict[str, str]) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    path = os.pathsep.join(p for p in (src, str(directory), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
        "LEMBRO_RUNTIME_DIR": str(directory / "run"),
        **extra,
    }


class Server:
    """A server command running in ``directory`` on ``port``; its output in ``log``."""

    def __init__(
        self,
        args: Sequence[str],
        directory: Path,
        port: int,
        env: dict[str, str] | None = None,
        name: str = "server",
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / f"{name}-{port}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=directory,
                env=env_for(directory, {"PORT": str(port), **(env or {})}),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.output()}")
            try:
                httpx.get(self.url + "/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer:\n{self.output()}")

    def wait_for(self, text: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(0.1)
        return False

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is not None:
                with contextlib.suppress(ProcessLookupError):  # workers a dead master left
                    os.killpg(self.process.pid, signal.SIGKILL)


def run_script(
    code: str, directory: Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in ``directory``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=directory,
        env=env_for(directory, env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_group(
    code: str, directory: Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Like ``run_script``, in a process group of its own that is killed whole when the
    run ends, however it ends: a script that forks (a pool, a server) leaves nothing
    behind, even when it hangs. A hang fails the test with ``TimeoutExpired``."""
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=directory,
        env=env_for(directory, env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
