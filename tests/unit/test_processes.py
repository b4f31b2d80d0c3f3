"""The several-processes check's identity (the listening sockets a process holds), its
claims across a fork, and how often a process looks: real sockets, real forks."""

from __future__ import annotations

import ast
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lembro import processes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """This process as if it had never checked, its claims in a directory of the test's;
    its own state put back after."""
    directory = tmp_path / "run"
    monkeypatch.setenv("LEMBRO_RUNTIME_DIR", str(directory))
    monkeypatch.delenv("LEMBRO_SEVERAL_PROCESSES", raising=False)
    saved = dict(processes._processes)
    processes._processes.clear()
    try:
        yield directory
    finally:
        for state in processes._processes.values():
            if state.pid == os.getpid() and state.fd is not None:
                os.close(state.fd)
        processes._processes.clear()
        processes._processes.update(saved)


def in_child(work: Callable[[], object], timeout: float = 30.0) -> str:
    """Run ``work`` in a forked child and return the repr of what it returned (or of what
    it raised); the child is killed if it has not answered within ``timeout`` seconds."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            try:
                text = repr(work())
            except BaseException as e:
                text = f"raised {e!r}"
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError("the forked child did not answer")
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        os.kill(pid, signal.SIGKILL)  # a zombie by now, unless it hung
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def locked_by_another_process(path: Path) -> bool:
    """Whether the claim at ``path`` is locked, tested from a forked child (a process that
    opens and closes its own claim file drops its lock on it)."""
    return in_child(lambda: processes._held(os.open(path, os.O_RDONLY))) == "True"


def listener(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    if family == socket.AF_INET:
        return socket.create_server(("127.0.0.1", 0))
    sock = socket.socket(family)
    sock.bind(f"\0lembro-test-{os.getpid()}-{time.monotonic_ns()}")
    sock.listen()
    return sock


def test_a_socket_is_part_of_the_identity_only_while_it_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = (socket.AF_INET, f"127.0.0.1:{sock.getsockname()[1]}")
        assert address not in processes._listening_sockets()  # bound, not listening
        sock.listen()
        assert address in processes._listening_sockets()
    assert address not in processes._listening_sockets()


def test_a_unix_socket_is_named_by_its_path(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)
        sock.listen()
        assert (socket.AF_UNIX, path) in processes._listening_sockets()


def test_looking_leaves_every_descriptor_as_it_was() -> None:
    with listener():
        before = sorted(os.listdir("/proc/self/fd"))
        processes._listening_sockets()
        assert sorted(os.listdir("/proc/self/fd")) == before


def test_looking_never_makes_the_apps_socket_non_blocking_under_a_default_timeout() -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        with listener() as sock:
            sock.setblocking(True)
            assert (socket.AF_INET, f"127.0.0.1:{sock.getsockname()[1]}") in (
                processes._listening_sockets()
            )
            assert not fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        socket.setdefaulttimeout(previous)


def test_the_identity_does_not_depend_on_the_order_sockets_were_opened() -> None:
    with listener() as a, listener(socket.AF_UNIX) as b:
        found = processes._listening_sockets()
        assert found == sorted(found)
        mine = [
            entry
            for entry in found
            if entry[1] in (f"127.0.0.1:{a.getsockname()[1]}", "@" + b.getsockname()[1:].decode())
        ]
        assert len(mine) == 2
    assert processes._identity(mine) == processes._identity(mine[::-1])
    assert processes._identity(mine[:1]) != processes._identity(mine)


def test_a_forked_child_sees_the_same_listening_sockets() -> None:
    with listener(), listener(socket.AF_UNIX):
        here = processes._listening_sockets()
        assert in_child(processes._listening_sockets) == repr(here)


def test_a_listening_process_claims_once_and_then_never_looks_again(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with listener():
        name = processes._identity(processes._listening_sockets())
        looks = count_looks(monkeypatch)
        for _ in range(5):
            processes.check()
    assert len(looks) == 1
    claim = runtime / f"{name}-{os.getpid()}"
    assert [path.name for path in runtime.iterdir()] == [claim.name]
    assert locked_by_another_process(claim)


def test_a_process_listening_on_nothing_looks_twice_then_stops_and_claims_nothing(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks = count_looks(monkeypatch, answer=[])
    for _ in range(5):
        processes.check()
    assert len(looks) == 2
    assert not runtime.exists()


def test_a_store_built_before_the_server_listens_claims_at_the_next_check(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: list[processes._Listener] = []
    count_looks(monkeypatch, answer=server)
    processes.check()  # the store is built: nothing listens yet
    assert not runtime.exists()
    server.append((socket.AF_INET, "127.0.0.1:8000"))  # the server opens its socket
    processes.check()  # the store's first change
    assert [path.name for path in runtime.iterdir()] == [
        f"{processes._identity(server)}-{os.getpid()}"
    ]


def count_looks(
    monkeypatch: pytest.MonkeyPatch, answer: list[processes._Listener] | None = None
) -> list[None]:
    """Count the times the check looks for listening sockets (the real ones, or ``answer``
    as it is at each look)."""
    looks: list[None] = []
    real = processes._listening_sockets

    def look() -> list[processes._Listener]:
        looks.append(None)
        return list(answer) if answer is not None else real()

    monkeypatch.setattr(processes, "_listening_sockets", look)
    return looks


def test_a_forked_child_claims_anew_and_leaves_its_parents_claim_locked(runtime: Path) -> None:
    with listener():
        processes.check()
        [parent_claim] = runtime.iterdir()

        def child() -> tuple[list[str], list[int]]:
            processes.check()
            me = processes._processes[os.getpid()]
            return sorted(os.listdir(runtime)), me.found

        names, found = ast.literal_eval(in_child(child))
    assert found == []  # the process it was forked from does not count
    claims = sorted(path.name for path in runtime.iterdir())
    assert len(claims) == 2
    assert parent_claim.name in claims
    assert names == claims
    assert locked_by_another_process(parent_claim)  # the child closed its copy and died


def test_a_forked_child_checks_even_if_a_thread_of_its_parent_was_checking(
    runtime: Path,
) -> None:
    def claims_in_child() -> int:
        processes.check()
        return len(os.listdir(runtime))

    with listener():
        me = processes._this_process()
        with me.lock:  # another thread was inside check() at the fork
            answer = in_child(claims_in_child)
    assert answer == "1"  # the child claimed, under a lock of its own


def test_importing_lembro_installs_no_fork_or_exit_hook_of_this_module() -> None:
    code = """
import atexit, os
hooks = []
os.register_at_fork = lambda **hooks_: hooks.extend(hooks_.values())
atexit.register = lambda function, *a, **k: hooks.append(function)
import lembro.processes
print(sorted(f.__qualname__ for f in hooks if f.__module__ == "lembro.processes"))
"""
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
