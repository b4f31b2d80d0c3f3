"""Run a WSGI server in the foreground until SIGTERM or SIGINT, then clean up."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

__all__ = ["Server", "serve_until_stopped"]


class Server(Protocol):
    """What werkzeug's ``make_server`` returns, as far as this module needs it."""

    server_port: int

    def serve_forever(self) -> None: ...
    def shutdown(self) -> None: ...
    def server_close(self) -> None: ...


def serve_until_stopped(server: Server, announce: str, cleanup: Callable[[], object]) -> int:
    """Print ``announce`` (formatted with ``port``), serve until SIGTERM or SIGINT, close the
    server, then call ``cleanup`` (close the store: that writes its snapshot). Returns 0."""

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(announce.format(port=server.server_port), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        cleanup()
    return 0
