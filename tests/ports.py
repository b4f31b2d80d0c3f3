"""Loopback ports for the servers the tests start: free now, and kept free until used.

A port found free by binding to port 0 and closing is a port of the kernel's ephemeral
range: between the close and the server's own bind, any process's outgoing connection may
take it as its local port (and so may a restarted server's port while it is down). On a
machine busy with other tests that happens. So a port is picked below that range, where
the kernel never hands out ports by itself, at random (other test runs on the machine pick
too), in a slice of its own for each pytest-xdist worker, and never twice in one process.
"""

from __future__ import annotations

import os
import random
import socket

__all__ = ["free_port"]

_LOWEST = 20000  # below: ports that well-known services tend to use
_handed_out: set[int] = set()
_random = random.Random()


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _slice() -> range:
    """This process's ports: a worker's share of those below the ephemeral range."""
    ports = range(_LOWEST, _ephemeral_start())
    try:
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
        workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        return ports
    size = len(ports) // workers
    return ports[worker * size : (worker + 1) * size] if worker < workers else ports


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port() -> int:
    """A loopback TCP port no process listens on, handed out once per test process."""
    ports = _slice()
    if len(ports) >= 100:  # else (a wide ephemeral range) the kernel's own choice
        for _ in range(200):
            port = _random.choice(ports)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    while (port := _kernel_port()) in _handed_out:
        pass
    _handed_out.add(port)
    return port
