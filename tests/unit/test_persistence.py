"""SnapshotFile through its own API: which process writes the file, and when a forked
child must load it again."""

from __future__ import annotations

from pathlib import Path

from lembro.memory.persistence import SnapshotFile
from lembro.snapshot import SnapshotRecord, read_snapshot, write_snapshot

RECORDS: list[SnapshotRecord] = [("a", 60.0, False, b"\x80")]


def sids(path: Path) -> list[str]:
    return [record[0] for record in read_snapshot(path, "msgpack")]


def loaded(snapshot: SnapshotFile) -> list[str]:
    taken: list[SnapshotRecord] = []
    assert snapshot.load(taken.append, max_bytes=1 << 20, max_lifetime=3600.0)
    return [record[0] for record in taken]


def test_only_a_process_that_changed_the_sessions_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    snapshot = SnapshotFile(str(path), "msgpack")
    assert loaded(snapshot) == []
    assert not snapshot.write_if_current(False, lambda: RECORDS)
    assert not path.exists()
    assert snapshot.write_if_current(True, lambda: RECORDS)
    assert sids(path) == ["a"]


def test_changes_from_before_a_fork_are_written_unless_a_child_replaced_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    write_snapshot(path, "msgpack", [])
    snapshot = SnapshotFile(str(path), "msgpack")
    snapshot.before_fork(True)
    snapshot.forked_in_parent(True)
    assert snapshot.write_if_current(False, lambda: RECORDS)  # no child wrote: ours to write
    assert sids(path) == ["a"]

    snapshot.before_fork(True)
    snapshot.forked_in_parent(True)
    write_snapshot(path, "msgpack", [("child", 60.0, False, b"\x80")])  # a child carried on
    assert not snapshot.write_if_current(False, lambda: RECORDS)
    assert sids(path) == ["child"]


def test_a_child_reloads_only_a_file_replaced_since_its_unchanged_parent_loaded_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.snap"
    write_snapshot(path, "msgpack", RECORDS)
    snapshot = SnapshotFile(str(path), "msgpack")
    assert loaded(snapshot) == ["a"]
    assert not snapshot.stale_in_child(changed=False)  # the file as the parent loaded it
    write_snapshot(path, "msgpack", [("b", 60.0, False, b"\x80")])  # a worker wrote at exit
    assert snapshot.stale_in_child(changed=False)
    assert not snapshot.stale_in_child(changed=True)  # a parent that served keeps its own
