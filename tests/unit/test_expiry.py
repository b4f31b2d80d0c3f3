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
    assert index.compaction_due(live=500) is False
    index.remove(records[1])
    assert index.should_compact(live=499) is True
    assert index.compaction_due(live=499) is True
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
    assert index.compaction_due(live=1) is False


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


def test_a_compaction_in_steps_drops_flagged_records_and_keeps_every_live_one_due() -> None:
    index = ExpiryIndex()
    records = [index.add(f"s{t}", float(t)) for t in range(1000)]
    for t in (999, 500, 10):
        index.add(f"late{t}", float(t) + 0.5)  # out of order: into the heap
    for record in records[::2]:
        index.remove(record)
    assert index.stale == 500
    index.start_compaction()
    assert index.compacting
    assert index.compaction_due(live=10_000)  # under way, however many are live
    assert not index.should_compact(live=0)  # none to start while one is under way
    index.add("during", 2000.0)  # records keep coming during a compaction
    dropped, more = index.compact_step(100)
    assert (dropped, more) == (50, True)
    assert due_sids(index, 20.0) == ["s1", "s3", "s5", "s7", "s9", "late10", "s11"] + [
        f"s{t}" for t in range(13, 21, 2)
    ]  # in time order from wherever they are held meanwhile
    index.check()
    total = dropped
    while more:
        count, more = index.compact_step(100)
        total += count
    assert total == 500
    assert index.stale == 0
    assert not index.compacting
    assert not index.compaction_due(live=0)
    index.check()
    times = {f"s{t}": float(t) for t in range(1000)}
    times.update({"late999": 999.5, "late500": 500.5, "during": 2000.0})
    rest = due_sids(index, 3000.0)
    assert len(rest) == 500 - 10 + 3
    assert [times[sid] for sid in rest] == sorted(times[sid] for sid in rest)
