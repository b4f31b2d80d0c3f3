"""Real HTTP servers for async apps, each on its own event loop in a thread of the test
process, listening on a free loopback port: Hypercorn for an ASGI app (Quart's own
server), aiohttp's own runner (``web.AppRunner`` and ``TCPSite``) for an aiohttp app.

Each is a context manager that yields the server's base URL and stops the server, and
its loop, however the block ends.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["serve_aiohttp", "serve_asgi"]


@contextmanager
def _serve_in_thread(
    serve: Callable[[asyncio.Event, list[str]], Awaitable[None]],
) -> Iterator[str]:
    """Run ``serve(stop, urls)`` on a new loop in a thread; ``serve`` appends its URL to
    ``urls`` once it listens and returns when ``stop`` is set."""
    loop = asyncio.new_event_loop()
    urls: list[str] = []
    errors: list[BaseException] = []
    stop_holder: list[asyncio.Event] = []
    listening = threading.Event()

    async def main() -> None:
        stop = asyncio.Event()
        stop_holder.append(stop)
        await serve(stop, urls)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as e:  # reported by the test's thread
            errors.append(e)
        finally:
            listening.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()

    def watch() -> None:  # wakes the waiting test once the server listens, or has failed
        while not urls and thread.is_alive():
            thread.join(0.01)
        listening.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        listening.wait(30)
        if errors or not urls:
            raise RuntimeError(f"the server did not start: {errors!r}")
        yield urls[0]
    finally:
        if stop_holder and not loop.is_closed():
            loop.call_soon_threadsafe(stop_holder[0].set)
        thread.join(30)
        if errors:
            raise errors[0]


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with Hypercorn on 127.0.0.1; yield its base URL."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections queue from now on, before Hypercorn accepts them
    port = sock.getsockname()[1]

    async def run(stop: asyncio.Event, urls: list[str]) -> None:
        config = Config()
        # Hypercorn owns (and closes) the descriptor it is given: give it a copy.
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 1.0
        task = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))
        urls.append(f"http://127.0.0.1:{port}")
        await task

    try:
        with _serve_in_thread(run) as url:
            yield url
    finally:
        sock.close()


@contextmanager
def serve_aiohttp(app: Any) -> Iterator[str]:
    """Serve the aiohttp ``app`` with its own runner on 127.0.0.1; yield its base URL."""
    from aiohttp import web

    async def run(stop: asyncio.Event, urls: list[str]) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            urls.append(f"http://{host}:{port}")
            await stop.wait()
        finally:
            await runner.cleanup()

    with _serve_in_thread(run) as url:
        yield url
