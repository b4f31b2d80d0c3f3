"""SessionTable through its own API: no lock, no clock of its own, work in steps."""

from __future__ import annotations

import sys

import pytest

from lembro.memory.budget import RECORD_OVERHEAD, session_cost
from lembro.memory.table import SMALL, SessionTable

NOW = 1000.0


def table(max_size: int = 1 << 20, owners: bool = False) -> SessionTable:
    return SessionTable(max_size, 0.75, owners=owners)


def test_a_write_read_touch_and_destroy_keep_every_part_in_step() -> None:
    t = table()
    assert t.write("a", b"one", NOW + 10, None, NOW, only_over_live=False)
    assert not t.write("b", b"two", NOW + 10, None, NOW, only_over_live=True)  # not there
    assert t.read("a", NOW) == b"one"
    assert t.read("b", NOW) is None
    assert (t.hits, t.misses) == (1, 1)
    assert t.touch("a", NOW + 5, NOW) == (True, True)  # earlier: a new record, the old flagged
    assert t.touch("a", NOW + 5, NOW) == (True, False)  # the same expiry: the record stays
    assert t.touch("b", NOW + 5, NOW) == (False, False)
    assert t.budget.size == session_cost("a", b"one") + 2 * RECORD_OVERHEAD
    t.check()
    assert t.time_left("a", NOW) == 5
    assert t.renew("a", NOW + 60, NOW) == b"one"
    assert t.time_left("a", NOW) == 60
    assert t.destroy("a", NOW)
    assert not t.destroy("a", NOW)
    t.check()


def test_an_expired_session_is_removed_and_counted_when_looked_at() -> None:
    t = table()
    t.write("a", b"x", NOW + 1, None, NOW, only_over_live=False)
    assert not t.holds("a", NOW + 1)
    assert len(t) == 1  # holds() changes nothing
    assert t.live("a", NOW + 1) is None
    assert (len(t), t.expired) == (0, 1)
    t.check()


def test_a_purge_takes_what_is_due_a_step_at_a_time() -> None:
    t = table()
    for i in range(10):
        t.write(f"s{i}", b"x", NOW + i, None, NOW, only_over_live=False)
    assert t.purge(NOW + 5, 4) == (4, True)
    assert t.purge(NOW + 5, 4) == (2, False)
    assert len(t) == 4
    assert t.expired == 6
    t.check()


def test_a_small_table_over_its_cap_evicts_the_least_used_exactly() -> None:
    cost = session_cost("s0", b"x" * 100) + RECORD_OVERHEAD
    t = table(cost * 10)
    for i in range(11):
        t.write(f"s{i}", b"x" * 100, NOW + 100, None, NOW, only_over_live=False)
        if i != 3:
            t.read(f"s{i}", NOW)  # all but s3 used twice
    assert t.budget.over
    assert t.upkeep_due
    assert len(t) <= SMALL
    evicted = t.prune_small(keep="s10")
    assert 1 <= evicted <= 4  # down to three quarters of ten sessions' worth
    assert "s3" not in t.sessions  # the one used once went first
    assert "s10" in t.sessions
    assert t.need <= 0
    t.check()


def test_a_large_table_evicts_below_a_cutoff_and_spares_a_session_used_meanwhile() -> None:
    t = table()
    for i in range(2000):
        t.write(f"s{i}", b"x" * 100, NOW + 100, None, NOW, only_over_live=False)
    t.budget.max_size = t.budget.size  # over its target: a quarter must go
    entries = t.entries()
    cutoff = t.cutoff(entries)
    spared = entries[0]
    t.read(spared.sid, NOW)  # used after the cutoff was chosen: scored above it now
    evicted, done = t.evict(entries, keep=None, cutoff=cutoff)
    assert done
    assert spared.sid in t.sessions
    assert 400 <= evicted <= 600
    while t.compact_step(64):
        pass
    t.check()


def test_ending_a_detached_owner_spares_keep_and_new_logins() -> None:
    t = table(owners=True)
    for i in range(5):
        t.write(f"a{i}", b"x", NOW + 100, "ana", NOW, only_over_live=False)
    owner = t.detach_owner("ana", keep="a2")
    assert owner is not None
    t.write("new", b"x", NOW + 100, "ana", NOW, only_over_live=False)  # a login meanwhile
    ended, more = t.end_detached(owner, NOW, 3)
    assert (ended, more) == (3, True)
    t.check()
    assert t.end_detached(owner, NOW, 3) == (1, False)
    assert sorted(t.sessions_of("ana", NOW)) == ["a2", "new"]
    t.check()


def test_a_rename_moves_a_session_in_one_step_unless_its_owner_is_being_ended() -> None:
    t = table(owners=True)
    t.write("a", b"x", NOW + 100, "ana", NOW, only_over_live=False)
    t.write("b", b"x", NOW + 100, "ana", NOW, only_over_live=False)
    assert t.rename("a", "a2", b"yy", NOW + 50, "ana", NOW)
    assert sorted(t.sessions_of("ana", NOW)) == ["a2", "b"]
    assert t.time_left("a2", NOW) == 50
    assert not t.rename("a", "a3", b"yy", NOW + 50, "ana", NOW)  # gone: nothing written
    assert not t.holds("a3", NOW)
    t.check()
    owner = t.detach_owner("ana", keep=None)  # a logout everywhere, under way
    assert owner is not None
    assert not t.rename("b", "b2", b"z", NOW + 50, "ana", NOW)  # would outlive it
    assert t.holds("b", NOW)
    assert not t.holds("b2", NOW)
    assert t.rename("a2", "bob1", b"z", NOW + 50, "bob", NOW)  # a login as someone else
    assert t.end_detached(owner, NOW, 10) == (1, False)
    assert t.sessions_of("ana", NOW) == []
    assert t.sessions_of("bob", NOW) == ["bob1"]
    t.check()


def test_taking_a_table_apart_empties_it() -> None:
    t = table()
    for i in range(100):
        t.write(f"s{i}", b"x", NOW + 100, None, NOW, only_over_live=False)
    t.take_apart(7)
    assert len(t) == 0
    assert len(t.expiry) == 0


@pytest.mark.parametrize("held", [200, 2000])
def test_a_table_that_held_many_more_sessions_is_rebuilt_small(held: int) -> None:
    t = table()
    for i in range(held):
        t.write(f"s{i}", b"x", NOW + 100, None, NOW, only_over_live=False)
    full = sys.getsizeof(t.sessions)
    assert not t.rebuild_due
    for i in range(held - 10):
        t.destroy(f"s{i}", NOW)
    assert t.rebuild_due
    assert t.upkeep_due
    while t.rebuild_step(16):
        pass
    assert not t.rebuild_due
    assert sys.getsizeof(t.sessions) < full / 2  # at most twice the slots it needs
    assert list(t.sessions) == [f"s{i}" for i in range(held - 10, held)]
    t.check()


def test_sessions_added_and_removed_during_a_rebuild_keep_their_order() -> None:
    t = table()
    for i in range(400):
        t.write(f"s{i}", b"x", NOW + 100, None, NOW, only_over_live=False)
    for i in range(0, 400, 2):
        t.destroy(f"s{i}", NOW)
    for i in range(1, 101, 2):
        t.destroy(f"s{i}", NOW)  # 150 left of 400: a rebuild is due
    assert t.rebuild_step(32)  # s101..s163 (odd) copied, the rest pending
    t.check()
    t.destroy("s103", NOW)  # copied already
    t.destroy("s301", NOW)  # not copied yet
    t.write("new1", b"x", NOW + 100, None, NOW, only_over_live=False)
    t.destroy("s105", NOW)
    t.write("s105", b"y", NOW + 100, None, NOW, only_over_live=False)  # made again: newest
    t.write("s107", b"z", NOW + 100, None, NOW, only_over_live=False)  # rewritten in place
    assert t.rename("s109", "moved1", b"m", NOW + 100, None, NOW)  # copied, then moved
    assert t.rename("s399", "moved2", b"n", NOW + 100, None, NOW)  # moved before its copy
    t.check()
    while t.rebuild_step(32):
        t.check()
    gone = (103, 105, 109, 301, 399)
    kept = [f"s{i}" for i in range(101, 400, 2) if i not in gone]
    assert sorted(t.sessions) == sorted([*kept, "new1", "s105", "moved1", "moved2"])
    assert [sid for sid in t.sessions if sid in kept] == kept  # oldest first still
    assert t.read("s107", NOW) == b"z"
    assert t.read("s105", NOW) == b"y"
    assert t.read("moved1", NOW) == b"m"
    assert t.read("moved2", NOW) == b"n"
    assert t.read("s109", NOW) is None
    assert not t.rebuild_due
    t.check()


def test_write_if_writes_only_over_the_very_bytes_read() -> None:
    t = table(owners=True)
    t.write("s", b"\x81\xa1a\x01", 100.0, None, 0.0, only_over_live=False)
    read = t.read("s", 1.0)
    assert read is not None
    # Another write of equal bytes lands between the read and the write: a change.
    t.write("s", bytes(bytearray(read)), 100.0, None, 2.0, only_over_live=True)
    assert t.write_if("s", read, b"\x81\xa1b\x02", 100.0, "ana", 3.0) is None
    current = t.read("s", 4.0)
    assert current is not None
    assert t.write_if("s", current, b"\x81\xa1b\x02", 100.0, "ana", 5.0) is True
    assert t.read("s", 6.0) == b"\x81\xa1b\x02"
    assert t.sessions_of("ana", 6.0) == ["s"]
    t.destroy("s", 7.0)
    assert t.write_if("s", current, b"\x80", 100.0, None, 8.0) is False
    assert "s" not in t.sessions
    t.check()
