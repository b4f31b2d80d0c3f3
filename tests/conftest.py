"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lembro import MemoryStore

from .redis_server import RedisServer, find_redis_server


class FakeClock:
    """A clock that moves only when told: seconds as a float."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Iterator[MemoryStore]:
    with MemoryStore("1M", None, clock=clock) as s:
        yield s


def start_redis_server(port: int | None = None) -> RedisServer:
    """A running redis-server on a free loopback port; fails the test when none is installed."""
    executable = find_redis_server()
    if executable is None:
        pytest.fail("redis-server is not installed: run `make redis-server`")
    for attempt in range(3):
        server = RedisServer(executable, port)
        try:
            server.start()
        except RuntimeError:
            server.close()
            if port is not None or attempt == 2:  # a fixed port, or no free one thrice
                raise
            continue
        return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server shared by the whole test session, stopped at its end."""
    server = start_redis_server()
    yield server
    server.close()
