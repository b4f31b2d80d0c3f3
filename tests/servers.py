"""Start real server processes for tests: the demo app (tools/demo.py), on a free loopback
port. The demo is a repository tool, run as ``python -m tools.demo`` with the repository
root importable, as ``make demo`` runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["ROOT", "DemoServer", "start_demo", "tools_env"]

_LISTENING = re.compile(r"http://127\.0\.0\.1:(\d+)/")
ROOT = Path(__file__).resolve().parent.parent


def tools_env() -> dict[str, str]:
    """The environment for a ``python -m tools...`` process started in another directory:
    the repository root (for ``tools``) ahead of what the tests already import from."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


@dataclass
class DemoServer:
    """A running ``python -m tools.demo`` process and the URL it serves."""

    process: subprocess.Popen[str]
    url: str
    output: list[str]
    drain: threading.Thread

    def stop(self, signal_number: int | None = None, timeout: float = 10.0) -> int:
        """Send ``signal_number`` (default SIGTERM) and wait; return the exit code."""
        if self.process.poll() is None:
            if signal_number is None:
                self.process.terminate()
            else:
                self.process.send_signal(signal_number)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout)
        self.drain.join(timeout)
        return code


def _drain(stream: IO[str], keep: list[str]) -> None:
    with stream:  # closed at EOF, when the process has exited
        for line in stream:
            keep.append(line)
            del keep[:-200]


def start_demo(
    args: Sequence[str] = (), cwd: Path | None = None, timeout: float = 20.0
) -> DemoServer:
    """Start the demo on port 0 (the OS picks a free one) and wait until it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env=tools_env(),
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            # Drain the rest, so request logs never fill the pipe and stall the server.
            drain = threading.Thread(target=_drain, args=(process.stdout, seen), daemon=True)
            drain.start()
            return DemoServer(process, f"http://127.0.0.1:{match.group(1)}", seen, drain)
    process.kill()
    process.wait()
    process.stdout.close()
    raise RuntimeError("demo did not start:\n" + "".join(seen))
