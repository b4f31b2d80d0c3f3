"""Several processes serving one app with a MemoryStore: one ERROR naming the way out,
never with one worker (reloaders included), and a refusal to start when asked."""

from __future__ import annotations

import fcntl
import itertools
import os
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


def test_gunicorn_with_two_workers_logs_one_error_naming_redis(app_dir: Path) -> None:
    server = gunicorn(app_dir, "-w", "2")
    try:
        server.wait_ready()
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    output = server.output()
    assert output.count(SEVERAL) == 1  # the second worker to start says it, once
    assert "ERROR:lembro:lembro: 1 other process(es)" in output
    assert "RedisStore" in output


def test_gunicorn_preload_with_two_workers_logs_the_error_at_their_first_requests(
    app_dir: Path,
) -> None:
    server = gunicorn(app_dir, "--preload", "-w", "2")
    try:
        server.wait_ready()
        assert len(pids_serving(server, 2)) == 2
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert server.output().count(SEVERAL) == 1
    assert "ERROR:lembro:" in server.output()


def test_gunicorn_with_two_django_workers_logs_the_error_at_their_first_requests(
    app_dir: Path,
) -> None:
    server = gunicorn(app_dir, "-w", "2", app="manage:application")  # the store is lazy
    try:
        server.wait_ready()
        assert len(pids_serving(server, 2)) == 2
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert server.output().count(SEVERAL) == 1


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


def test_uvicorn_with_two_workers_logs_the_error(app_dir: Path) -> None:
    server = uvicorn(app_dir, "--workers", "2")
    try:
        server.wait_ready()
        assert server.wait_for(SEVERAL)
    finally:
        server.stop()
    assert server.output().count(SEVERAL) == 1


def test_uvicorn_with_one_process_says_nothing(app_dir: Path) -> None:
    server = uvicorn(app_dir)
    try:
        server.wait_ready()
        pids_serving(server, 2, tries=10)
    finally:
        server.stop()
    assert SEVERAL not in server.output()


FORK_THAT_SERVES = """
import os
from lembro import MemoryStore
store = MemoryStore("1M", None)
child_served, parent_served = os.pipe(), os.pipe()
pid = os.fork()
if pid == 0:
    store.set("b", {"n": 1})  # the child serves first
    os.write(child_served[1], b"x")
    os.read(parent_served[0], 1)  # and lives on while the parent serves
else:
    os.read(child_served[0], 1)
    store.set("a", {"n": 1})  # the parent serves too, and finds the child
    os.write(parent_served[1], b"x")
    os.waitpid(pid, 0)
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_plain_fork_that_serves_logs_the_error(tmp_path: Path) -> None:
    result = run_script(FORK_THAT_SERVES, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(SEVERAL) == 1


REFUSING_FORK = """
import os
from lembro import MemoryStore, SeveralProcesses
store = MemoryStore("1M", None)
pid = os.fork()
if pid:
    store.set("a", {"n": 1})
    os.waitpid(pid, 0)
    print("parent served")
else:
    import time
    time.sleep(0.5)  # the parent claims first
    try:
        store.set("b", {"n": 1})
    except SeveralProcesses:
        print("child refused")
    os._exit(0)
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_refuse_makes_a_forked_process_refuse_its_session_writes(tmp_path: Path) -> None:
    result = run_script(REFUSING_FORK, tmp_path, {"LEMBRO_SEVERAL_PROCESSES": "refuse"})
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")) == ["", "child refused", "parent served"]


def test_ignore_turns_the_check_off(tmp_path: Path) -> None:
    result = run_script(FORK_THAT_SERVES, tmp_path, {"LEMBRO_SEVERAL_PROCESSES": "ignore"})
    assert result.returncode == 0, result.stderr
    assert SEVERAL not in result.stderr


POOL_THAT_DOES_NOT_SERVE = """
import multiprocessing
from lembro import MemoryStore

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


def visits_of(client: httpx.Client, url: str) -> tuple[str, int]:
    pid, visits = client.get(url + "/", timeout=5).text.split()
    return pid, int(visits)


def reload_until_new_process(client: httpx.Client, url: str, touch: Path, old: str) -> None:
    """Touch ``touch`` until a different process answers (the reloader restarted it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        touch.write_text(touch.read_text() + "\n# touched\n")
        time.sleep(1.5)
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


DEAD_CHILD = """
import os, signal
from lembro import MemoryStore
runtime = os.environ["LEMBRO_RUNTIME_DIR"]
store = MemoryStore("1M", None)
pid = os.fork()
if pid == 0:
    store.set("b", {"n": 1})  # the child serves: it claims
    os.kill(os.getpid(), signal.SIGKILL)  # and dies without cleaning up
os.waitpid(pid, 0)
print(len(os.listdir(runtime)))  # the dead child's claim is left
store.set("a", {"n": 1})  # the parent serves: it claims, and finds only a dead claim
print(len(os.listdir(runtime)))  # its own
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_dead_processs_claim_is_not_counted_and_is_removed(tmp_path: Path) -> None:
    result = run_script(DEAD_CHILD, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    assert SEVERAL not in result.stderr
    assert list((tmp_path / "run").iterdir()) == []  # the parent's claim went at its exit


def test_a_runtime_directory_others_may_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run_script(FORK_THAT_SERVES, tmp_path, {"LEMBRO_RUNTIME_DIR": str(shared)})
    assert result.returncode == 0, result.stderr
    assert "cannot check for other processes" in result.stderr
    assert list(shared.iterdir()) == []


CLAIM_AT_ONCE = """
import os, sys
from lembro import MemoryStore, SeveralProcesses
ready, start, done = map(int, sys.argv[1:])
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


def claim_at_once(directory: Path, count: int) -> tuple[dict[int, set[int]], set[int], list[str]]:
    """Start ``count`` processes that each build a MemoryStore at the same instant, and
    watch the claims' directory meanwhile. Return what each process found (its pid: the
    others' pids), the pids whose claim files are there once all have claimed, and the
    claim names the watcher could lock while their owners lived (each must be locked)."""
    env = {"LEMBRO_SEVERAL_PROCESSES": "refuse"}
    ready_r, ready_w = os.pipe()
    start_r, start_w = os.pipe()
    done_r, done_w = os.pipe()
    fds = (ready_w, start_r, done_r)
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
    for fd in fds:
        os.close(fd)
    runtime = directory / "run"
    unlocked: list[str] = []
    claiming = threading.Event()

    def watch() -> None:
        while claiming.is_set():
            for path in runtime.glob("*-*-*"):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
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
        claimed = {int(path.name.rsplit("-", 1)[1]) for path in runtime.glob("*-*-*")}
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
    for round_ in range(10):
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
    result = run_script(FORK_THAT_SERVES, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()
