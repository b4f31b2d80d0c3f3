"""Snapshots keep each session's lifetimes and device (format 3), and files of format 2,
written before, still load."""

from __future__ import annotations

import datetime
import logging
import math
import shutil
from pathlib import Path

import pytest

from lembro import Device, MemoryStore
from lembro.snapshot import read_snapshot, write_snapshot
from tests.conftest import FakeClock

KEY = "user"
# Written by lembro before format 3 (commit cdce739): three sessions with a lifetime of
# ten years, "session-of-ana" ({"user": "ana", "cart": [1, 2]}), "session-of-bob"
# ({"user": 7, "when": date(2026, 12, 7)}) and "anonymous" ({"theme": "dark"}).
VERSION_2 = Path(__file__).parent / "fixtures" / "snapshot-v2.snap"


def seconds(delta: datetime.timedelta) -> float:
    return delta.total_seconds()


def test_a_restart_keeps_when_each_session_began_was_renewed_and_last_seen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    clock = FakeClock()
    with MemoryStore(
        "1M", None, clock=clock, snapshot=path, owner_key=KEY, absolute_ttl=3600.0
    ) as store:
        store.set("old", {KEY: "ana"}, device=Device("198.51.100.0", "Firefox"))
        clock.advance(100)
        assert store.rename("old", "s", {KEY: "ana"}, reset_lifetime=False, grace=30.0)
        clock.advance(100)
        store.get("s")
        clock.advance(100)
        before = store.session_info("s")
    assert before is not None
    later = FakeClock(50_000.0)  # another process: its clock has nothing to do with this one
    with MemoryStore(
        "1M", None, clock=later, snapshot=path, owner_key=KEY, absolute_ttl=3600.0
    ) as store:
        after = store.session_info("s")
        assert after is not None
        assert (after.id, after.owner, after.ip, after.user_agent) == (
            "s",
            "ana",
            "198.51.100.0",
            "Firefox",
        )
        for field in ("created", "renewed", "last_seen", "expires", "absolute_expires"):
            kept, was = getattr(after, field), getattr(before, field)
            assert abs(seconds(kept - was)) < 1.0, field  # the wall-clock moment, kept
        assert seconds(after.renewed - after.created) == pytest.approx(100, abs=1e-3)
        assert seconds(after.last_seen - after.renewed) == pytest.approx(100, abs=1e-3)
        assert store.get("old") is None  # a replaced id is not saved: its grace ends
        left = store.time_left("s")
        assert left is not None
        assert left == pytest.approx(3600 - 300, abs=1.0)  # its absolute end, kept
        store.check()


def test_a_session_whose_absolute_end_passed_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    ended = (10.0, 10.0, 1.0, -1.0, None, None)
    live = (10.0, 10.0, 1.0, 50.0, "198.51.100.7", None)
    write_snapshot(
        path, "msgpack", [("ended", 60.0, 1.0, b"\x80", ended), ("live", 60.0, 1.0, b"\x80", live)]
    )
    with MemoryStore("1M", None, snapshot=path) as store:
        assert list(store.all()) == ["live"]
        left = store.time_left("live")
        assert left is not None
        assert left <= 50.0  # capped at the absolute end it was saved with
        info = store.session_info("live")
        assert info is not None
        assert info.ip == "198.51.100.7"


def test_a_store_with_a_shorter_absolute_ttl_does_not_load_what_it_would_have_ended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    old = (7200.0, 7200.0, 1.0, None, None, None)  # signed in two hours before the save
    new = (60.0, 60.0, 1.0, None, None, None)
    write_snapshot(
        path, "msgpack", [("old", 600.0, 1.0, b"\x80", old), ("new", 600.0, 1.0, b"\x80", new)]
    )
    with MemoryStore("1M", None, snapshot=path, absolute_ttl=3600.0) as store:
        assert list(store.all()) == ["new"]
        assert store.stats().sessions == 1
        left = store.time_left("new")
        assert left is not None
        assert left <= 600.0


def test_odd_lifetimes_in_a_file_count_as_now_and_never_stop_a_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.snap"
    odd = (math.inf, -5.0, math.nan, math.nan, "1" * 500, "x" * 5000)
    write_snapshot(path, "msgpack", [("s", 60.0, 1.0, b"\x80", odd)])
    with MemoryStore("1M", None, snapshot=path) as store:
        info = store.session_info("s")
        assert info is not None
        assert info.created == info.renewed == info.last_seen  # as if created at the load
        assert (info.ip, info.user_agent) == (None, None)  # no device a store would record
        store.check()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_file_of_format_2_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    shutil.copy(VERSION_2, path)
    clock = FakeClock()
    with MemoryStore(
        "1M", None, clock=clock, ttl=3600.0, snapshot=path, owner_key=KEY, absolute_ttl=600.0
    ) as store:
        assert store.all() == {
            "session-of-ana": {KEY: "ana", "cart": [1, 2]},
            "session-of-bob": {KEY: 7, "when": datetime.date(2026, 12, 7)},
            "anonymous": {"theme": "dark"},
        }
        assert store.sessions_of("ana") == ["session-of-ana"]
        info = store.session_info("session-of-bob")
        assert info is not None
        assert info.owner == 7
        assert info.created == info.renewed == info.last_seen  # as created at the load
        assert info.absolute_expires is not None
        assert seconds(info.absolute_expires - info.created) == pytest.approx(600, abs=1e-3)
        assert store.time_left("anonymous") == pytest.approx(600)  # the absolute end first
        clock.advance(600)
        assert store.get("anonymous") is None
        store.set("new", {"n": 1})  # changed: written back at close, in format 3
    assert path.read_bytes()[:16] == b"LEMBRO-SNAPSHOT3"
    assert sorted(r[0] for r in read_snapshot(path, "msgpack")) == ["new"]
    assert VERSION_2.read_bytes()[:16] == b"LEMBRO-SNAPSHOT2"  # the fixture is as written
