"""Sessions survive the ways a process ends: SIGTERM (the store built in any thread,
Django's lazy store included), sys.exit, the end of main(), and a gunicorn --preload
restart, where only the worker's sessions are current."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lembro.snapshot import read_snapshot

from .procs import (
    DJANGO_APP,
    DJANGO_VIEWS,
    FLASK_APP,
    Server,
    env_for,
    free_port,
    run_group,
    run_script,
)

pytestmark = pytest.mark.e2e


def saved(path: Path) -> list[str]:
    return sorted(r[0] for r in read_snapshot(path, "msgpack"))


BUILT_IN_A_THREAD = """
import threading, time
import lembro

def build():
    global store
    store = lembro.MemoryStore("1M", None, snapshot="s.snap")
    store.set("from_a_thread", {"n": 1})

thread = threading.Thread(target=build)
thread.start()
thread.join()
print("ready", flush=True)
time.sleep(60)
"""


def start_script(code: str, directory: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=directory,
        env=env_for(directory, {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_snapshot_store_built_off_the_main_thread_says_sigterm_is_not_caught(
    tmp_path: Path,
) -> None:
    """Only the main thread may install a signal handler: a store built in another says
    so once, and SIGTERM then kills the process as it would without lembro."""
    process = start_script(BUILT_IN_A_THREAD, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM, err
    assert err.count("cannot catch SIGTERM") == 1, err


def test_sigterm_without_a_snapshot_still_kills_as_before(tmp_path: Path) -> None:
    code = BUILT_IN_A_THREAD.replace(', snapshot="s.snap"', "")
    process = start_script(code, tmp_path)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM


def test_sigterm_writes_the_snapshot_of_a_store_built_in_the_main_thread(tmp_path: Path) -> None:
    code = BUILT_IN_A_THREAD.replace("thread.start()\nthread.join()", "build()")
    assert code != BUILT_IN_A_THREAD
    process = start_script(code, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert saved(tmp_path / "s.snap") == ["from_a_thread"]


CHAINED = """
import os, signal, sys
import lembro

def mine(signum, frame):
    print("mine", flush=True)
    sys.exit(7)

signal.signal(signal.SIGTERM, mine)
store = lembro.MemoryStore("1M", None, snapshot="s.snap")
assert signal.getsignal(signal.SIGTERM) is not mine  # lembro's, while the store is open
store.set("chained", {"n": 1})
os.kill(os.getpid(), signal.SIGTERM)
"""


def test_sigterm_chains_to_the_handler_lembro_replaced_and_the_snapshot_is_written(
    tmp_path: Path,
) -> None:
    result = run_script(CHAINED, tmp_path)
    assert result.returncode == 7, result.stderr
    assert result.stdout == "mine\n"
    assert saved(tmp_path / "s.snap") == ["chained"]


def test_closing_the_last_snapshot_store_puts_the_replaced_handler_back(tmp_path: Path) -> None:
    code = """
import signal
import lembro

def mine(signum, frame):
    pass

signal.signal(signal.SIGTERM, mine)
first = lembro.MemoryStore("1M", None, snapshot="a.snap")
second = lembro.MemoryStore("1M", None, snapshot="b.snap")
first.close()
assert signal.getsignal(signal.SIGTERM) is not mine  # the second still needs it
second.close()
assert signal.getsignal(signal.SIGTERM) is mine
plain = lembro.MemoryStore("1M", None)  # no snapshot: no handler
assert signal.getsignal(signal.SIGTERM) is mine
"""
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_sys_exit_writes_the_snapshot(tmp_path: Path) -> None:
    code = """
import sys
from lembro import MemoryStore
store = MemoryStore("1M", None, snapshot="s.snap")
store.set("before_exit", {"n": 1})
sys.exit(3)
"""
    result = run_script(code, tmp_path)
    assert result.returncode == 3, result.stderr
    assert saved(tmp_path / "s.snap") == ["before_exit"]


def test_the_end_of_main_writes_a_store_only_its_locals_held(tmp_path: Path) -> None:
    code = """
import gc
from lembro import MemoryStore

def main():
    store = MemoryStore("1M", 0.01, snapshot="s.snap")
    store.set("in_main", {"n": 1})

main()
gc.collect()
"""
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert saved(tmp_path / "s.snap") == ["in_main"]


def visits(client: httpx.Client, url: str, path: str = "/") -> int:
    return int(client.get(url + path, timeout=5).text.split()[1])


def test_django_lazy_store_is_written_on_sigterm_and_read_after_restart(
    tmp_path: Path,
) -> None:
    (tmp_path / "manage.py").write_text(DJANGO_APP)
    (tmp_path / "views.py").write_text(DJANGO_VIEWS)
    env = {"SNAPSHOT": str(tmp_path / "s.snap")}

    def runserver() -> Server:
        port = free_port()
        args = ["manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
        server = Server(args, tmp_path, port, env, name="django")
        server.wait_ready()
        return server

    server = runserver()
    with httpx.Client() as client:
        assert visits(client, server.url) == 1
        assert visits(client, server.url) == 2
        cookie = client.cookies["sessionid"]
    assert server.stop(signal.SIGTERM) == 128 + signal.SIGTERM, server.output()
    server = runserver()
    try:
        with httpx.Client(cookies={"sessionid": cookie}) as client:
            assert visits(client, server.url) == 3
    finally:
        server.stop()


def test_gunicorn_preload_restart_keeps_the_workers_logins_and_logouts(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(FLASK_APP)
    env = {"SNAPSHOT": str(tmp_path / "s.snap")}

    def gunicorn() -> Server:
        port = free_port()
        args = ["-m", "gunicorn", "--preload", "-w", "1", "-b", f"127.0.0.1:{port}", "app:app"]
        server = Server(args, tmp_path, port, env, name="gunicorn")
        server.wait_ready()
        return server

    server = gunicorn()
    stay, leave, new = httpx.Client(), httpx.Client(), httpx.Client()
    try:
        assert visits(stay, server.url) == 1
        assert visits(leave, server.url) == 1
        assert server.stop() == 0
        server = gunicorn()  # the master loads both sessions, then forks the worker
        assert visits(leave, server.url, "/logout") == 0  # a logout in the worker
        assert visits(new, server.url) == 1  # a login in the worker
        assert visits(stay, server.url) == 2
        assert server.stop() == 0  # the worker writes; the master, unchanged, must not
        server = gunicorn()
        assert visits(stay, server.url) == 3
        assert visits(new, server.url) == 2
        assert visits(leave, server.url) == 1  # logged out: a new session
    finally:
        server.stop()
        for client in (stay, leave, new):
            client.close()


def test_a_recycled_preload_worker_starts_from_the_sessions_as_they_are_now(
    tmp_path: Path,
) -> None:
    """gunicorn --preload --max-requests: the master loaded the snapshot at start and
    never serves; a worker replacing one that reached its request limit must start from
    the file its predecessor wrote at exit, not from the master's copy: a logout made
    since stays made, and a login made since is kept."""
    (tmp_path / "app.py").write_text(FLASK_APP)
    env = {"SNAPSHOT": str(tmp_path / "s.snap")}

    def gunicorn(*extra: str) -> Server:
        port = free_port()
        args = ["-m", "gunicorn", "--preload", "-w", "1", *extra, "-b", f"127.0.0.1:{port}"]
        server = Server([*args, "app:app"], tmp_path, port, env, name="gunicorn")
        server.wait_ready()
        return server

    server = gunicorn()
    leave, new = httpx.Client(), httpx.Client()
    try:
        assert visits(leave, server.url) == 1
        assert server.stop() == 0  # the worker writes the snapshot: one session
        server = gunicorn("--max-requests", "4")
        ((name, cookie),) = leave.cookies.items()  # as a stolen copy would replay it
        first = int(leave.get(server.url + "/logout", timeout=5).text.split()[0])
        assert visits(new, server.url) == 1  # a login in the first worker
        for _ in range(2):  # the first worker's fourth request: it exits and writes
            new.get(server.url + "/pid", timeout=5)
        for _ in range(100):  # until the master has started the next worker
            pid = int(new.get(server.url + "/pid", timeout=5).text.split()[0])
            if pid != first:
                break
        assert pid != first, "the worker was not recycled"
        with httpx.Client(cookies={name: cookie}) as replayed:
            assert visits(replayed, server.url) == 1, "a logout came back in a recycled worker"
        assert visits(new, server.url) == 2, "a login was lost in the recycled worker"
    finally:
        server.stop()
        for client in (leave, new):
            client.close()


FORKED_CHILD_SIGTERM = """
import os, signal, sys
from lembro import MemoryStore

store = MemoryStore("1M", None, snapshot="s.snap")
assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # lembro's, in the parent
pid = os.fork()
if pid == 0:
    default_after_fork = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    store.set("mine", {"n": 1})
    caught_once_changed = signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    os._exit(0 if default_after_fork and caught_once_changed else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_dies_of_sigterm_as_without_lembro_until_its_sessions_change(
    tmp_path: Path,
) -> None:
    """A terminated multiprocessing pool joins its workers: lembro's SIGTERM handler must
    not outlive the fork in a child that has no sessions of its own to write."""
    result = run_script(FORKED_CHILD_SIGTERM, tmp_path)
    assert result.returncode == 0, result.stderr


POOL_TERMINATED = """
import multiprocessing, sys
import lembro

if sys.argv[1:] == ["snapshot"]:
    store = lembro.MemoryStore("1M", None, snapshot="s.snap")
    store.set("held", {"n": 1})

def square(n):
    return n * n

if __name__ == "__main__":
    for _ in range(CYCLES):
        with multiprocessing.get_context("fork").Pool(3) as pool:  # __exit__ terminates
            assert pool.map(square, range(30)) == [n * n for n in range(30)]
"""

CHURN = """
import multiprocessing, time

def square(n):
    return n * n

if __name__ == "__main__":
    end = time.monotonic() + 120
    while time.monotonic() < end:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pool.map(square, range(10))
"""


@pytest.mark.parametrize("store", ["imported", "snapshot"])
def test_terminated_pools_never_hang_beside_other_pools(tmp_path: Path, store: str) -> None:
    """``Pool.__exit__`` sends SIGTERM to workers it just forked: a Python-level handler
    inherited across the fork used to hang it. 200 cycles, with lembro imported or a
    snapshot store built, while two other processes churn pools beside it."""
    (tmp_path / "pools.py").write_text(POOL_TERMINATED.replace("CYCLES", "200"))
    (tmp_path / "churn.py").write_text(CHURN)
    churners = [
        subprocess.Popen([sys.executable, "churn.py"], cwd=tmp_path, start_new_session=True)
        for _ in range(2)
    ]
    try:
        result = run_group(
            f"import runpy, sys; sys.argv = ['pools.py', {store!r}]; "
            "runpy.run_path('pools.py', run_name='__main__')",
            tmp_path,
            timeout=240,
        )
    finally:
        for churner in churners:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(churner.pid, signal.SIGKILL)
            churner.wait()
    assert result.returncode == 0, result.stderr


SIGTERM_WHILE_SERVING = """
import os, random, signal, threading
from lembro import MemoryStore

store = MemoryStore("1M", None, snapshot="s.snap")
sid = "a" * 43
store.set(sid, {"n": 1})
threading.Timer(random.uniform(0.02, 0.1), os.kill, (os.getpid(), signal.SIGTERM)).start()
while True:  # the main thread is in and out of the store's lock when the signal lands
    store.get(sid)
"""


def test_sigterm_while_the_main_thread_uses_the_store_never_hangs_the_exit(
    tmp_path: Path,
) -> None:
    """lembro's SIGTERM exit raises in the main thread wherever it is; the snapshot written
    at exit then takes the store's lock, which must not have been left held."""
    for _ in range(20):
        (tmp_path / "s.snap").unlink(missing_ok=True)
        result = run_script(SIGTERM_WHILE_SERVING, tmp_path, timeout=20)
        assert result.returncode == 128 + signal.SIGTERM, result.stderr
        assert saved(tmp_path / "s.snap") == ["a" * 43]
