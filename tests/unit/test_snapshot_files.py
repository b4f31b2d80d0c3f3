"""Snapshot files: bad paths and files never crash a start, saves never corrupt the file,
lifetimes from a file are bounded, and only the process whose sessions are current writes."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from lembro import InvalidOption, MemoryStore
from lembro.serializers import get_serializer
from lembro.snapshot import read_snapshot, write_snapshot

SESSION = {"user": 7}
as_root = os.geteuid() == 0


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def good_snapshot(path: Path, n: int = 3) -> None:
    with MemoryStore("1M", None, snapshot=path) as store:
        for i in range(n):
            store.set(f"s{i}", SESSION)


def make_directory(path: Path) -> None:
    path.mkdir()


def make_loop(path: Path) -> None:
    path.symlink_to(path)


def make_dangling(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


def make_garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def make_truncated(path: Path) -> None:
    good_snapshot(path, 50)
    path.write_bytes(path.read_bytes()[:-100])


def make_other_serializer(path: Path) -> None:
    with MemoryStore("1M", None, snapshot=path, serializer="json") as store:
        store.set("a", SESSION)


def make_future_version(path: Path) -> None:
    good_snapshot(path)
    blob = path.read_bytes()
    path.write_bytes(b"LEMBRO-SNAPSHOT9" + blob[16:])


def make_huge(path: Path) -> None:
    good_snapshot(path)
    with open(path, "r+b") as handle:  # sparse: the magic is right, the size is not
        handle.truncate(300 * 1024 * 1024)


def make_fifo(path: Path) -> None:
    os.mkfifo(path)  # opened for reading the usual way, it would wait for a writer forever


def make_endless(path: Path) -> None:
    path.symlink_to("/dev/zero")


BAD = {
    "fifo": make_fifo,
    "endless-device": make_endless,
    "directory": make_directory,
    "symlink-loop": make_loop,
    "dangling-symlink": make_dangling,
    "garbage": make_garbage,
    "truncated": make_truncated,
    "other-serializer": make_other_serializer,
    "future-version": make_future_version,
    "huge": make_huge,
}


@pytest.mark.parametrize("make", BAD.values(), ids=BAD.keys())
def test_a_bad_snapshot_gives_one_warning_an_empty_store_and_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "s.snap"
    make(path)
    caplog.clear()
    with MemoryStore("1M", None, snapshot=path) as store:
        assert len(store) == 0
        store.set("new", SESSION)
    assert len(warnings_of(caplog)) == 1
    assert [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert [r[0] for r in read_snapshot(path, "msgpack")] == ["new"]  # and the next save works


@pytest.mark.skipif(as_root, reason="root reads any file")
def test_an_unreadable_snapshot_gives_one_warning_and_an_empty_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.snap"
    good_snapshot(path)
    path.chmod(0)
    with MemoryStore("1M", None, snapshot=path) as store:
        assert len(store) == 0
    assert len(warnings_of(caplog)) == 1


def as_nobody(action: Callable[[], bool]) -> bool:
    """Run ``action`` in a forked child that has given up root for the user nobody (so
    file permissions hold for it, as for any app not run as root); return its result."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test runner
        ok = False
        try:
            os.setgid(65534)
            os.setuid(65534)
            ok = action()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def open_directory(mode: int) -> Path:
    """A directory in /tmp that the user nobody can reach, with ``mode``."""
    directory = Path(tempfile.mkdtemp(prefix="lembro-test-"))
    directory.chmod(mode)
    return directory


@pytest.mark.skipif(not as_root, reason="needs root to give up to another user")
def test_an_unreadable_snapshot_gives_one_warning_and_an_empty_store_for_a_non_root_app() -> None:
    directory = open_directory(0o777)
    try:
        path = directory / "s.snap"
        good_snapshot(path)
        path.chmod(0)

        def load() -> bool:
            warned: list[logging.LogRecord] = []
            handler = logging.Handler(logging.WARNING)
            handler.emit = warned.append  # type: ignore[method-assign]
            logging.getLogger("lembro").addHandler(handler)
            store = MemoryStore("1M", None, snapshot=path)
            return len(store) == 0 and len(warned) == 1

        assert as_nobody(load)
    finally:
        shutil.rmtree(directory)


@pytest.mark.skipif(not as_root, reason="needs root to give up to another user")
def test_a_directory_not_writable_is_refused_at_construction_for_a_non_root_app() -> None:
    directory = open_directory(0o755)
    try:

        def build() -> bool:
            try:
                MemoryStore("1M", None, snapshot=directory / "s.snap")
            except InvalidOption as e:
                return "may write" in str(e)
            return False

        assert as_nobody(build)
    finally:
        shutil.rmtree(directory)


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    make_huge(path)
    tracemalloc.start()
    try:
        assert read_snapshot(path, "msgpack", max_bytes=1024 * 1024) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_snapshot_larger_than_four_times_max_size_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.snap"
    blob = b"x" * 1000
    write_snapshot(path, "msgpack", [(f"s{i:04d}", 60.0, True, blob) for i in range(150)])
    size = path.stat().st_size
    max_size = (size - 65536) // 4 - 100  # the file is just over the limit
    with MemoryStore(max_size, None, snapshot=path) as store:
        assert len(store) == 0
    assert "more than" in " ".join(warnings_of(caplog))
    write_snapshot(path, "msgpack", [(f"s{i:04d}", 60.0, True, blob) for i in range(150)])
    with MemoryStore(max_size + 200, None, snapshot=path) as store:  # just under: loaded, pruned
        assert 0 < len(store) < 150


def test_huge_garbage_is_refused_by_its_magic_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    with open(path, "wb") as handle:
        handle.write(b"garbage" * 10)
        handle.truncate(300 * 1024 * 1024)
    tracemalloc.start()
    try:
        assert read_snapshot(path, "msgpack") == []  # no size limit given: the magic decides
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_two_bad_files_in_the_same_second_are_moved_aside_under_two_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    for _ in range(2):
        make_garbage(path)
        assert read_snapshot(path, "msgpack") == []
    assert len([p for p in tmp_path.iterdir() if ".corrupt-" in p.name]) == 2


def test_a_missing_file_is_an_empty_store_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with MemoryStore("1M", None, snapshot=tmp_path / "none.snap") as store:
        assert len(store) == 0
    assert warnings_of(caplog) == []


def test_a_snapshot_in_a_missing_directory_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match="existing directory"):
        MemoryStore("1M", None, snapshot=tmp_path / "nowhere" / "s.snap")


@pytest.mark.skipif(as_root, reason="root writes any directory")
def test_a_snapshot_in_a_directory_not_writable_is_refused_at_construction(
    tmp_path: Path,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(InvalidOption, match="may write"):
        MemoryStore("1M", None, snapshot=locked / "s.snap")


def test_lifetimes_from_a_file_are_capped_at_the_ttl_and_must_be_finite(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    blob = get_serializer("msgpack").dumps(SESSION)
    write_snapshot(
        path,
        "msgpack",
        [
            ("forever", math.inf, True, blob),
            ("nan", math.nan, True, blob),
            ("long", 10 * 86400.0, True, blob),
            ("fine", 60.0, True, blob),
        ],
    )
    now = [1000.0]
    with MemoryStore("1M", None, ttl=3600, snapshot=path, clock=lambda: now[0]) as store:
        assert set(store.all()) == {"long", "fine"}
        now[0] += 3601
        assert set(store.all()) == set()  # "long" was cut to the store's ttl


def test_pickle_with_a_snapshot_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    with pytest.raises(InvalidOption, match="trust_pickle"):
        MemoryStore("1M", None, serializer="pickle", snapshot=path)
    with MemoryStore("1M", None, serializer="pickle", snapshot=path, trust_pickle=True) as store:
        store.set("a", {"when": (1, 2)})
    with MemoryStore("1M", None, serializer="pickle") as plain:  # no file: nothing to trust
        plain.set("a", SESSION)


def test_pickle_from_a_planted_snapshot_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    marker = tmp_path / "ran"
    # What an attacker who can write the file would plant: a pickle that runs a command.
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    write_snapshot(path, "pickle", [("sid", 60.0, True, payload)])
    with pytest.raises(InvalidOption):
        MemoryStore("1M", None, serializer="pickle", snapshot=path)
    with MemoryStore("1M", None, snapshot=path) as store:  # msgpack: moved aside, not run
        assert store.all() == {}
    assert not marker.exists()


def test_a_planted_symlink_at_the_old_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    victim.chmod(0o644)
    path = tmp_path / "s.snap"
    (tmp_path / f".s.snap.{os.getpid()}.tmp").symlink_to(victim)
    good_snapshot(path)
    assert victim.read_text() == "keep me"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert len(read_snapshot(path, "msgpack")) == 3


def test_concurrent_saves_in_one_process_never_fail_or_expose_a_partial_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.snap"
    store = MemoryStore("1M", None, snapshot=path, snapshot_interval=0.001)
    for i in range(200):
        store.set(f"s{i:03d}", {"n": i, "pad": "x" * 200})
    store.save_snapshot()  # the file exists before the reader starts
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = time.monotonic() + 1.0

    def save() -> None:
        while time.monotonic() < stop:
            try:
                store.set("s000", {"n": 0, "pad": "x" * 200})
                store.save_snapshot()
            except BaseException as e:
                errors.append(e)

    def read() -> None:
        while time.monotonic() < stop:
            seen.append(len(read_snapshot(path, "msgpack")))

    threads = [threading.Thread(target=save) for _ in range(3)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert errors == []
    assert seen
    assert set(seen) == {200}
    assert warnings_of(caplog) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.snap"]


def test_leftovers_of_a_killed_writer_are_removed_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    leftover = tmp_path / f".s.snap.tmp-{dead.stdout.strip()}-abc123"
    leftover.write_bytes(b"half a snapshot")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_progress = tmp_path / f".s.snap.tmp-{live.pid}-def456"
        in_progress.write_bytes(b"being written")
        with MemoryStore("1M", None, snapshot=path):
            pass
        assert not leftover.exists()
        assert in_progress.exists()  # another process may be writing it now
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()


def test_a_store_unchanged_since_it_was_loaded_never_overwrites_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    good_snapshot(path)
    idle = MemoryStore("1M", None, snapshot=path)  # loads three sessions, changes nothing
    with MemoryStore("1M", None, snapshot=path) as current:
        current.destroy("s0")
        current.set("login", SESSION)
    idle.close()
    assert sorted(r[0] for r in read_snapshot(path, "msgpack")) == ["login", "s1", "s2"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads
def test_after_a_fork_only_the_process_that_changes_sessions_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    good_snapshot(path)
    parent = MemoryStore("1M", None, snapshot=path, snapshot_interval=0.05)
    parent.set("before_fork", SESSION)  # changed before the fork: the child carries it on
    pid = os.fork()
    if pid == 0:  # the worker: a login and a logout, then a clean exit
        code = 1
        try:
            parent.set("new_login", SESSION)
            parent.destroy("s0")
            parent.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(0.2)  # several of the parent's periodic wakes
    parent.close()  # the master's exit
    assert sorted(r[0] for r in read_snapshot(path, "msgpack")) == [
        "before_fork",
        "new_login",
        "s1",
        "s2",
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_idle_forked_child_never_puts_the_file_back(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    store = MemoryStore("1M", None, snapshot=path, snapshot_interval=0.05)
    store.set("old", SESSION)
    store.save_snapshot()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pool worker that never touches sessions, with a periodic snapshot
        os.close(writer)
        os.read(reader, 1)  # until the parent is done
        os._exit(0)
    os.close(reader)
    try:
        store.destroy("old")
        store.set("new", SESSION)
        store.save_snapshot()
        time.sleep(0.3)  # the child's purge thread wakes several times
        assert [r[0] for r in read_snapshot(path, "msgpack")] == ["new"]
    finally:
        os.write(writer, b"x")
        os.close(writer)
        os.waitpid(pid, 0)
        store.close()


def fork_child(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child that then leaves without pytest's teardown; wait
    for it and check that it exited 0."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def saved_sids(path: Path) -> list[str]:
    """The session ids a fresh store loads from ``path``."""
    with MemoryStore("1M", None, snapshot=path) as reader:
        return sorted(reader.all())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_process_that_forks_an_idle_helper_still_writes_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    store = MemoryStore("1M", None, snapshot=path)
    store.set("login", SESSION)  # not written yet
    fork_child(lambda: None)  # a helper (multiprocessing, a subprocess) that serves nothing
    store.close()  # the app's exit: nothing changed since the fork
    assert saved_sids(path) == ["login"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_child_that_carries_the_sessions_on_is_not_overwritten_by_its_parent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    store = MemoryStore("1M", None, snapshot=path)
    store.set("before_fork", SESSION)

    def serve() -> None:  # a --preload worker: it serves, then exits cleanly
        store.set("child_login", SESSION)
        store.close()

    fork_child(serve)
    fork_child(lambda: None)  # a later idle child does not make the parent's copy current
    store.close()  # the master's exit: its copy is older than the child's
    assert saved_sids(path) == ["before_fork", "child_login"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_parent_that_changes_sessions_after_the_fork_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    store = MemoryStore("1M", None, snapshot=path)
    store.set("before_fork", SESSION)

    def serve() -> None:
        store.set("child_login", SESSION)
        store.close()

    fork_child(serve)
    store.set("parent_login", SESSION)  # the parent serves too: its copy is the newer
    store.close()
    assert saved_sids(path) == ["before_fork", "parent_login"]
