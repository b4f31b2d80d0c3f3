"""Snapshots: sessions survive a restart; a damaged file never crashes a start."""

from __future__ import annotations

import logging
import signal
import stat
import time
from pathlib import Path

import httpx
import pytest

from lembro import InvalidOption, MemoryStore
from lembro.snapshot import read_snapshot
from tests.conftest import FakeClock
from tests.servers import start_demo

SESSION = {"user": 7, "roles": ["admin"]}


def test_close_writes_and_a_new_store_loads_the_live_sessions(tmp_path: Path) -> None:
    path = tmp_path / "sessions.snapshot"
    with MemoryStore("1M", None, snapshot=path) as first:
        first.set("a", SESSION, ttl=3600)
        first.set("b", {"n": 1}, ttl=3600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["sessions.snapshot"]  # no temporary left
    with MemoryStore("1M", None, snapshot=path) as second:
        assert second.all() == {"a": SESSION, "b": {"n": 1}}
        assert second.size == first.size


def test_remaining_lifetimes_carry_over_and_expired_sessions_are_skipped(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "s.snap"
    with MemoryStore("1M", None, snapshot=path, clock=clock) as first:
        first.set("long", SESSION, ttl=3600)
        first.set("short", SESSION, ttl=0.2)
        first.set("dead", SESSION, ttl=10)
        clock.advance(10)  # "dead" has expired by the time of the save
    time.sleep(0.3)  # real time passes while the process is down: "short" runs out
    later = FakeClock(50_000.0)
    with MemoryStore("1M", None, snapshot=path, clock=later) as second:
        assert set(second.all()) == {"long"}
        later.advance(3589)  # 3590 s were left at the save, less the ~0.3 s down
        assert "long" in second
        later.advance(1)
        assert "long" not in second


def test_uses_survive_so_the_flood_still_goes_first(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    with MemoryStore("1M", None, snapshot=path) as first:
        first.set("user", SESSION)
        first.get("user")  # came back
        first.set("bot", SESSION)
        one_session = first.size // 2
    # Room for one and a half: loading the second prunes, and the bot goes first.
    with MemoryStore(one_session * 3 // 2, None, snapshot=path) as second:
        assert set(second.all()) == {"user"}
        second.check()


def test_a_missing_file_means_an_empty_store(tmp_path: Path) -> None:
    with MemoryStore("1M", None, snapshot=tmp_path / "none.snap") as s:
        assert len(s) == 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda blob: b"not a snapshot at all", id="foreign"),
        pytest.param(lambda blob: blob[: len(blob) // 2], id="truncated"),
        pytest.param(lambda blob: blob[:10], id="truncated-header"),
        pytest.param(lambda blob: blob[:-5] + b"\x00\x01\x02\x03\x04", id="corrupt"),
        pytest.param(lambda blob: b"", id="empty"),
    ],
)
def test_a_damaged_file_is_moved_aside_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    path = tmp_path / "s.snap"
    with MemoryStore("1M", None, snapshot=path) as first:
        for i in range(20):
            first.set(f"s{i}", SESSION)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with MemoryStore("1M", None, snapshot=path) as second:
        assert len(second) == 0
        assert not path.exists()
        aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
        assert len(aside) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unusable" in warnings[0].getMessage()
    assert not path.exists()  # the store never changed: nothing of its to write


def test_a_snapshot_from_another_serializer_is_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.snap"
    with MemoryStore("1M", None, snapshot=path, serializer="pickle", trust_pickle=True) as first:
        first.set("a", SESSION)
    with MemoryStore("1M", None, snapshot=path, serializer="json") as second:
        assert len(second) == 0
    assert "serializer" in caplog.text


def test_loading_more_than_the_cap_prunes(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    with MemoryStore("1M", None, snapshot=path) as first:
        for i in range(200):
            first.set(f"s{i:04d}", SESSION)
    with MemoryStore(first.size // 2, None, snapshot=path) as second:
        assert second.size <= second.max_size
        assert 0 < len(second) < 200


def test_periodic_snapshot_writes_without_a_close(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    store = MemoryStore("1M", None, snapshot=path, snapshot_interval=0.02)
    try:
        store.set("a", SESSION)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not read_snapshot(path, "msgpack"):
            time.sleep(0.02)
        assert [r[0] for r in read_snapshot(path, "msgpack")] == ["a"]
    finally:
        store.close()


def test_snapshot_interval_needs_a_snapshot_file() -> None:
    with pytest.raises(InvalidOption):
        MemoryStore("1M", None, snapshot_interval=5)
    with pytest.raises(InvalidOption):
        MemoryStore("1M", None, snapshot=42)  # type: ignore[arg-type]


def visits(client: httpx.Client) -> int:
    response = client.get("/api/state")
    assert response.status_code == 200
    result: int = response.json()["you"]["visits"]
    return result


@pytest.mark.e2e
def test_sessions_survive_sigterm_and_restart_of_a_real_server(tmp_path: Path) -> None:
    args = ["--snapshot", str(tmp_path / "demo.snap")]
    server = start_demo(args, cwd=tmp_path)
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            client.get("/")
        cookie = client.cookies["session"]
    assert server.stop(signal.SIGTERM) == 0
    restarted = start_demo(args, cwd=tmp_path)
    try:
        with httpx.Client(base_url=restarted.url, cookies={"session": cookie}) as client:
            assert visits(client) == 3
    finally:
        restarted.stop()


@pytest.mark.e2e
def test_sigkill_loses_sessions_without_a_periodic_snapshot(tmp_path: Path) -> None:
    args = ["--snapshot", str(tmp_path / "demo.snap")]
    server = start_demo(args, cwd=tmp_path)
    with httpx.Client(base_url=server.url) as client:
        client.get("/")
        cookie = client.cookies["session"]
    server.stop(signal.SIGKILL)
    restarted = start_demo(args, cwd=tmp_path)
    try:
        with httpx.Client(base_url=restarted.url, cookies={"session": cookie}) as client:
            assert visits(client) == 0
    finally:
        restarted.stop()


@pytest.mark.e2e
def test_sigkill_keeps_sessions_up_to_the_last_periodic_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "demo.snap"
    args = ["--snapshot", str(path), "--snapshot-interval", "0.1"]
    server = start_demo(args, cwd=tmp_path)
    with httpx.Client(base_url=server.url) as client:
        client.get("/")
        client.get("/")
        cookie = client.cookies["session"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = read_snapshot(path, "msgpack") if path.exists() else []
        if records and any(b"visits" in r[3] and b"\x02" in r[3] for r in records):
            break
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    restarted = start_demo(args, cwd=tmp_path)
    try:
        with httpx.Client(base_url=restarted.url, cookies={"session": cookie}) as client:
            assert visits(client) == 2
    finally:
        restarted.stop()
