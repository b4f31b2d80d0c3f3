"""A real redis-server for the tests: on a free loopback port, in a temp dir, no persistence."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .ports import free_port

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str | None:
    """The path of Debian's redis-server (``make redis-server`` installs it), or ``None``."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def _ping(port: int) -> bool:
    """Whether a Redis answers PING on ``port`` (raw RESP, so no client library is involved)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process. ``start()``/``stop()``/``kill()``; restarts keep the port."""

    def __init__(self, executable: str, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.executable = executable
        self.port = port or free_port()
        self.args = list(args)  # more redis-server options, such as --cluster-enabled yes
        self._dir = Path(tempfile.mkdtemp(prefix="lembro-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        """The server's working directory (its log, dump and cluster files)."""
        return self._dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, wait: float = 10.0) -> None:
        """Start the server and return once it answers PING; wait at most ``wait`` seconds."""
        log = (self._dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--daemonize",
                "no",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: "
                    + (self._dir / "redis.log").read_text(errors="replace")[-2000:]
                )
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {wait}s")

    def kill(self) -> None:
        """End the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections and never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) if it runs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
