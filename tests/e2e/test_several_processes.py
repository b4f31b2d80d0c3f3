"""Several processes serving one app with a MemoryStore: one ERROR naming the way out,
never with one worker (reloaders included), and a refusal to start when asked."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .procs import (
    ASGI_APP,
    DJANGO_APP,
    DJANGO_VIEWS,
    FLASK_APP,
    SEVERAL,
    Server,
    env_for,
    free_port,
    run_script,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(FLASK_APP)
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    (tmp_path / "manage.py").write_text(DJANGO_APP)
    (tmp_path / "views.py").write_text(DJANGO_VIEWS)
    return tmp_path


def gunicorn(
    directory: Path, *options: str, env: dict[str, str] | None = None, app: str = "app:app"
) -> Server:
    port = free_port()
    args = ["-m", "gunicorn", *options, "-b", f"127.0.0.1:{port}", app]
    return Server(args, directory, port, env, name="gunicorn")


def uvicorn(directory: Path, *options: str) -> Server:
    port = free_port()
    args = ["-m", "uvicorn", *options, "--host", "127.0.0.1", "--port", str(port), "asgi:app"]
    return Server(args, directory, port, name="uvicorn")


def pids_serving(server: Server, want: int, tries: int = 400) -> set[str]:
    """Send requests on fresh connections until ``want`` processes have answered."""
    pids: set[str] = set()
    for _ in range(tries):
        pids.add(httpx.get(server.url + "/", timeout=5).text.split()[0])
        if len(pids) >= want:
            break
    return pids


def assert_one_error_naming_redis(server: Server) -> None:
    output = server.output()
    assert output.count(SEVERAL) == 1, output  # the second worker to claim says it, once
    assert "lembro: 1 other process(es)" in output
    assert "lembro.RedisStore" in output
    assert f"they listen on {server.url.removeprefix('http://')}" in output


def test_gunicorn_with_two_workers_logs_one_error_naming_redis(app_dir: Path) -> None:
    server = gunicorn(app_dir, "-w", "2")
    try:
        server.wait_ready()
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert_one_error_naming_redis(server)


def test_gunicorn_preload_with_two_workers_logs_the_error_once_both_have_served(
    app_dir: Path,
) -> None:
    server = gunicorn(app_dir, "--preload", "-w", "2")
    try:
        server.wait_ready()
        assert len(pids_serving(server, 2)) == 2
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert_one_error_naming_redis(server)


def test_gunicorn_with_two_django_workers_logs_the_error_once_both_have_served(
    app_dir: Path,
) -> None:
    server = gunicorn(app_dir, "-w", "2", app="manage:application")  # the store is lazy
    try:
        server.wait_ready()
        assert len(pids_serving(server, 2)) == 2
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert_one_error_naming_redis(server)


@pytest.mark.parametrize("options", [["-w", "1"], ["--preload", "-w", "1"]], ids=" ".join)
def test_gunicorn_with_one_worker_says_nothing(app_dir: Path, options: list[str]) -> None:
    server = gunicorn(app_dir, *options)
    try:
        server.wait_ready()
        pids_serving(server, 2, tries=20)
    finally:
        server.stop()
    assert SEVERAL not in server.output()


def test_refuse_makes_gunicorn_with_two_workers_fail_to_start(app_dir: Path) -> None:
    server = gunicorn(app_dir, "-w", "2", env={"LEMBRO_SEVERAL_PROCESSES": "refuse"})
    code = server.process.wait(60)
    assert code != 0
    assert "SeveralProcesses" in server.output()


def test_uvicorn_with_two_workers_logs_the_error_once_both_have_served(app_dir: Path) -> None:
    server = uvicorn(app_dir, "--workers", "2")
    try:
        server.wait_ready()
        # uvicorn's parent binds the socket and the first worker to start listens on it:
        # a worker that built its store before then claims at its first session write.
        assert len(pids_serving(server, 2)) == 2
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert_one_error_naming_redis(server)


def test_uvicorn_with_one_process_says_nothing(app_dir: Path) -> None:
    server = uvicorn(app_dir)
    try:
        server.wait_ready()
        pids_serving(server, 2, tries=10)
    finally:
        server.stop()
    assert SEVERAL not in server.output()


PREFORK = """
import os, socket
from lembro import MemoryStore, SeveralProcesses

workers = int(os.environ["WORKERS"])
listener = socket.create_server(("127.0.0.1", 0))
store = MemoryStore("1M", None)  # built by the master, which holds the socket: it claims
served, release = os.pipe(), os.pipe()
pids = []
for n in range(workers):
    pid = os.fork()
    if pid == 0:
        try:
            os.close(release[1])
            try:
                store.set(f"w{n}", {"n": n})  # each worker serves
                print(f"worker {n} served", flush=True)
            except SeveralProcesses:
                print(f"worker {n} refused", flush=True)
            os.write(served[1], b"s")
            os.read(release[0], 1)  # and lives on until every worker has served
        finally:
            os._exit(0)
    pids.append(pid)
    os.read(served[0], 1)  # one worker after the other
os.close(release[1])
for pid in pids:
    os.waitpid(pid, 0)
"""


def prefork(directory: Path, workers: int, env: dict[str, str] | None = None) -> str:
    """Run a server that listens, builds its store and forks ``workers`` workers that
    each serve, alive together; return its output."""
    result = run_script(PREFORK, directory, {"WORKERS": str(workers), **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_server_that_forks_two_workers_logs_one_error(tmp_path: Path) -> None:
    output = prefork(tmp_path, 2)
    assert "worker 0 served" in output
    assert "worker 1 served" in output
    assert output.count(SEVERAL) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_worker_does_not_count_the_master_that_built_the_store_before_forking_it(
    tmp_path: Path,
) -> None:
    output = prefork(tmp_path, 1)
    assert "worker 0 served" in output
    assert SEVERAL not in output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_refuse_makes_a_second_forked_worker_refuse_its_session_writes(tmp_path: Path) -> None:
    output = prefork(tmp_path, 2, {"LEMBRO_SEVERAL_PROCESSES": "refuse"})
    assert "worker 0 served" in output
    assert "worker 1 refused" in output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ignore_turns_the_check_off(tmp_path: Path) -> None:
    output = prefork(tmp_path, 2, {"LEMBRO_SEVERAL_PROCESSES": "ignore"})
    assert "worker 1 served" in output
    assert SEVERAL not in output
    assert not (tmp_path / "run").exists()


POOL_THAT_DOES_NOT_SERVE = """
import multiprocessing
import socket
from lembro import MemoryStore

listener = socket.create_server(("127.0.0.1", 0))  # a server: its pool workers inherit this
store = MemoryStore("1M", None)

def square(n):
    return n * n

if __name__ == "__main__":
    store.set("a", {"n": 1})
    with multiprocessing.get_context("fork").Pool(3) as pool:
        assert pool.map(square, range(30)) == [n * n for n in range(30)]
    store.set("b", {"n": 2})
"""


def test_a_pool_of_forked_workers_that_never_touch_sessions_says_nothing(tmp_path: Path) -> None:
    (tmp_path / "pool.py").write_text(POOL_THAT_DOES_NOT_SERVE)
    result = run_script("import runpy; runpy.run_path('pool.py', run_name='__main__')", tmp_path)
    assert result.returncode == 0, result.stderr
    assert SEVERAL not in result.stderr
    assert "forked" not in result.stderr  # nor that the workers hold a copy of the sessions


# Two programs of one shell, one directory: started alike (``python -c``, same arguments),
# unlike in what they run.
PROGRAM = """
import os, socket, sys
from lembro import MemoryStore

ready, done = map(int, sys.argv[1:])
if os.environ.get("LISTEN"):  # a little server of its own, on a port of its own
    listener = socket.create_server(("127.0.0.1", 0))
store = MemoryStore("1M", None)
store.set("{name}", {{"n": 1}})
os.write(ready, b"r")
os.read(done, 1)  # alive until every program is
"""


def run_together(
    directory: Path, codes: list[str], env: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run each of ``codes`` in its own interpreter in ``directory``, given the descriptors
    to say it is ready and to wait on, all alive at once until every one is ready."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    processes: list[subprocess.Popen[str]] = []
    try:
        try:
            for code in codes:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", code, str(ready_w), str(done_r)],
                        cwd=directory,
                        env=env_for(directory, env),
                        pass_fds=(ready_w, done_r),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
        finally:
            os.close(ready_w)  # the programs hold their own
            os.close(done_r)
        ready, deadline = 0, time.monotonic() + 60
        while ready < len(codes) and time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes):
                break  # one ended before the others were ready: their output says why
            if select.select([ready_r], [], [], 0.1)[0]:
                ready += len(os.read(ready_r, len(codes)))
    finally:
        os.close(done_w)
        os.close(ready_r)
        results = []
        for process in processes:
            try:
                out, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


@pytest.mark.parametrize("listen", ["", "1"], ids=["listening on nothing", "each on its own port"])
def test_two_programs_run_from_one_shell_in_one_directory_are_not_workers(
    tmp_path: Path, listen: str
) -> None:
    env = {"LEMBRO_SEVERAL_PROCESSES": "refuse", "LISTEN": listen}
    codes = [PROGRAM.format(name="a"), PROGRAM.format(name="b")]
    results = run_together(tmp_path, codes, env)
    for result in results:
        assert result.returncode == 0, result.stderr  # no SeveralProcesses
        assert SEVERAL not in result.stderr
    claims = list((tmp_path / "run").iterdir()) if listen else []
    assert len(claims) == (2 if listen else 0)  # a program that listens on nothing claims nothing
    if not listen:
        assert not (tmp_path / "run").exists()


SERVER_SCRIPT = """
import os, socket
from lembro import MemoryStore

listener = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
store = MemoryStore("1M", None)
store.set("a", {"n": 1})
"""


def test_a_server_run_twice_in_a_row_says_nothing_and_its_first_claim_is_removed(
    tmp_path: Path,
) -> None:
    env = {"PORT": str(free_port()), "LEMBRO_SEVERAL_PROCESSES": "refuse"}
    runtime = tmp_path / "run"
    first = run_script(SERVER_SCRIPT, tmp_path, env)
    assert first.returncode == 0, first.stderr
    [left] = runtime.iterdir()  # no exit hook: the next process to look removes it
    second = run_script(SERVER_SCRIPT, tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert SEVERAL not in first.stderr + second.stderr
    [claim] = runtime.iterdir()
    assert claim != left
    assert claim.name.split("-")[0] == left.name.split("-")[0]  # the same identity


def visits_of(client: httpx.Client, url: str) -> tuple[str, int]:
    pid, visits = client.get(url + "/", timeout=5).text.split()
    return pid, int(visits)


def reload_until_new_process(client: httpx.Client, url: str, touch: Path, old: str) -> None:
    """Touch ``touch`` until a different process answers (the reloader restarted it),
    asking often, touching again only when a touch went unseen for a while."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        touch.write_text(touch.read_text() + "\n# touched\n")
        touched = time.monotonic()
        while time.monotonic() < touched + 5:
            time.sleep(0.2)
            try:
                if peek_pid(url) != old:
                    return
            except httpx.HTTPError:
                continue
    raise AssertionError("the reloader did not restart the app")


def peek_pid(url: str) -> str:
    """Which process serves now, from a request without the session cookie."""
    return httpx.get(url + "/", timeout=5).text.split()[0]


def test_flask_reloader_keeps_sessions_with_lembro_snapshot_and_says_nothing(
    app_dir: Path,
) -> None:
    port = free_port()
    env = {"SNAPSHOT": str(app_dir / "dev.snapshot")}
    server = Server(["app.py"], app_dir, port, env, name="flask")
    try:
        server.wait_ready()
        with httpx.Client() as client:
            pid, visits = visits_of(client, server.url)
            _, visits = visits_of(client, server.url)
            assert visits == 2
            reload_until_new_process(client, server.url, app_dir / "app.py", pid)
            new_pid, visits = visits_of(client, server.url)
        assert new_pid != pid
        assert visits == 3
    finally:
        server.stop()
    assert SEVERAL not in server.output()


def test_django_runserver_reloader_keeps_sessions_with_snapshot_and_says_nothing(
    app_dir: Path,
) -> None:
    port = free_port()
    env = {"SNAPSHOT": str(app_dir / "dev.snapshot")}
    server = Server(["manage.py", "runserver", f"127.0.0.1:{port}"], app_dir, port, env, "django")
    try:
        server.wait_ready()
        with httpx.Client() as client:
            pid, visits = visits_of(client, server.url)
            _, visits = visits_of(client, server.url)
            assert visits == 2
            reload_until_new_process(client, server.url, app_dir / "views.py", pid)
            new_pid, visits = visits_of(client, server.url)
        assert new_pid != pid
        assert visits == 3
    finally:
        server.stop()
    assert SEVERAL not in server.output()


SERVER_LEAVING_A_HELPER = """
import os, socket
from lembro import MemoryStore

listener = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
store = MemoryStore("1M", None)  # it claims
if os.fork() == 0:  # a helper that never serves sessions, and outlives the server
    listener.close()
    os.read(0, 1)  # until the test closes its stdin
    os._exit(0)
"""


def test_a_helper_that_outlives_its_server_does_not_keep_the_servers_claim_alive(
    tmp_path: Path,
) -> None:
    env = {"PORT": str(free_port())}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_LEAVING_A_HELPER],
        cwd=tmp_path,
        env=env_for(tmp_path, env),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert server.wait(30) == 0  # the server is gone; its helper lives on
        restarted = run_script(SERVER_SCRIPT, tmp_path, env)
        assert restarted.returncode == 0, restarted.stderr
        assert SEVERAL not in restarted.stderr
    finally:
        assert server.stdin is not None
        server.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_a_runtime_directory_others_may_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    output = prefork(tmp_path, 2, {"LEMBRO_RUNTIME_DIR": str(shared)})
    assert "cannot check for other processes" in output
    assert list(shared.iterdir()) == []


CLAIM_AT_ONCE = """
import os, sys
from lembro import MemoryStore, SeveralProcesses
ready, start, done, listener = map(int, sys.argv[1:])  # listener: the server's socket
os.write(ready, b"r")
os.read(start, 1)  # every process is released at once
try:
    MemoryStore("1M", None)
    others = []
except SeveralProcesses as e:
    others = e.others
print(os.getpid(), *others, flush=True)
os.read(done, 1)  # alive, holding its claim, until the test has looked
"""


def claims(runtime: Path) -> list[Path]:
    """The claim files in ``runtime``, not the ones being made."""
    return [path for path in runtime.glob("*-*") if not path.name.startswith(".")]


def claim_at_once(directory: Path, count: int) -> tuple[dict[int, set[int]], set[int], list[str]]:
    """Start ``count`` processes that hold one listening socket and each build a
    MemoryStore at the same instant, and watch the claims' directory meanwhile. Return
    what each process found (its pid: the others' pids), the pids whose claim files are
    there once all have claimed, and the claim names the watcher could lock while their
    owners lived (each must be locked)."""
    env = {"LEMBRO_SEVERAL_PROCESSES": "refuse"}
    ready_r, ready_w = os.pipe()
    start_r, start_w = os.pipe()
    done_r, done_w = os.pipe()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        fds = (ready_w, start_r, done_r, listener.fileno())
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", CLAIM_AT_ONCE, *map(str, fds)],
                cwd=directory,
                env=env_for(directory, env),
                pass_fds=fds,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(count)
        ]
    for fd in fds[:3]:
        os.close(fd)
    runtime = directory / "run"
    unlocked: list[str] = []
    claiming = threading.Event()

    def watch() -> None:
        while claiming.is_set():
            for path in claims(runtime):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:  # held: its owner lives
                    pass
                else:
                    unlocked.append(path.name)
                finally:
                    os.close(fd)

    try:
        for _ in range(count):
            assert os.read(ready_r, 1) == b"r"
        claiming.set()
        watcher = threading.Thread(target=watch)
        watcher.start()
        os.close(start_w)
        found: dict[int, set[int]] = {}
        for process in processes:
            assert process.stdout is not None
            pid, *others = map(int, process.stdout.readline().split())
            found[pid] = set(others)
        claiming.clear()
        watcher.join()
        claimed = {int(path.name.rsplit("-", 1)[1]) for path in claims(runtime)}
    finally:
        os.close(done_w)
        os.close(ready_r)
        for process in processes:
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
    return found, claimed, unlocked


def test_processes_that_claim_at_the_same_instant_never_miss_or_erase_each_other(
    tmp_path: Path,
) -> None:
    """Of any two processes serving at once, the later to look sees the earlier; and no
    claim is ever taken for a dead one's while its owner lives."""
    for round_ in range(3):
        directory = tmp_path / f"round{round_}"
        directory.mkdir()
        found, claimed, unlocked = claim_at_once(directory, 8)
        assert len(found) == 8
        assert unlocked == []
        assert claimed == set(found), f"round {round_}: claims erased"
        unseen = [
            (a, b)
            for a, b in itertools.combinations(found, 2)
            if a not in found[b] and b not in found[a]
        ]
        assert unseen == [], f"round {round_}: pairs that never saw each other"


def test_a_claim_a_killed_process_was_making_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    leftover = runtime / f".claiming-{dead.stdout.strip()}"
    leftover.write_text("killed before the rename")
    prefork(tmp_path, 1)
    assert not leftover.exists()
