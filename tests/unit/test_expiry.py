"""ExpiryIndex through its own API: records come due in time order, removals are flagged."""

from __future__ import annotations

import random

import pytest

from lembro.memory.expiry import ExpiryIndex


def due_sids(index: ExpiryIndex, now: float, limit: int = 1_000_000) -> list[str]:
    sids, _ = index.pop_due(now, limit)
    return sids


def test_records_come_due_in_time_order_whatever_order_they_arrive_in() -> None:
    index = ExpiryIndex()
    times = [float(t) for t in range(100)]
    random.Random(1).shuffle(times)
    for t in times:
        index.add(f"s{int(t)}", t)
    index.check()
    assert due_sids(index, 49.0) == [f"s{t}" for t in range(50)]
    assert due_sids(index, 1000.0) == [f"s{t}" for t in range(50, 100)]
    assert len(index) == 0


def test_nothing_is_due_before_its_time() -> None:
    index = ExpiryIndex()
    index.add("a", 10.0)
    assert index.pop_due(9.999, 10) == ([], 0)
    assert index.next_due() == 10.0
    assert due_sids(index, 10.0) == ["a"]
    assert index.next_due() is None


def test_a_removed_record_is_taken_but_names_no_session() -> None:
    index = ExpiryIndex()
    gone = index.add("gone", 1.0)
    index.add("kept", 2.0)
    index.remove(gone)
    index.remove(gone)  # twice changes nothing
    assert index.stale == 1
    assert gone.sid == ""  # keeps no id alive
    index.check()
    sids, taken = index.pop_due(5.0, 10)
    assert (sids, taken) == (["kept"], 2)
    assert index.stale == 0
    index.check()


def test_pop_due_takes_at_most_limit_records() -> None:
    index = ExpiryIndex()
    for i in range(10):
        index.add(f"s{i}", float(i))
    assert index.pop_due(100.0, 3) == (["s0", "s1", "s2"], 3)
    assert len(index) == 7


def test_a_live_record_taken_is_no_longer_held() -> None:
    index = ExpiryIndex()
    record = index.add("a", 1.0)
    assert due_sids(index, 1.0) == ["a"]
    index.remove(record)  # the session goes: nothing more to flag or count
    assert index.stale == 0
    index.check()


def test_compaction_drops_every_flagged_record_and_only_them() -> None:
    index = ExpiryIndex()
    records = [index.add(f"s{i}", float(i % 7)) for i in range(1000)]
    for record in records[::2]:
        index.remove(record)
    assert index.should_compact(live=500) is False  # as many stale as live: not yet
    index.remove(records[1])
    assert index.should_compact(live=499) is True
    assert index.compact() == 501
    assert len(index) == 499
    assert index.stale == 0
    index.check()
    live = sorted(r.sid for r in records if not r.removed)
    assert sorted(due_sids(index, 100.0)) == live


def test_a_few_stale_records_do_not_trigger_compaction() -> None:
    index = ExpiryIndex()
    index.add("live", 1.0)
    for _ in range(200):
        index.remove(index.add("x", 5.0))
    assert index.should_compact(live=1) is False


def test_clear_drops_everything() -> None:
    index = ExpiryIndex()
    index.remove(index.add("a", 1.0))
    index.add("b", 0.5)
    assert index.clear() == 2
    assert len(index) == 0
    assert index.stale == 0
    index.check()


def test_check_names_a_record_out_of_order() -> None:
    index = ExpiryIndex()
    first = index.add("a", 1.0)
    index.add("b", 2.0)
    first.expires = 3.0  # what only a bug could do
    with pytest.raises(AssertionError, match="out of order"):
        index.check()
