"""EvictionOrder through its own API: uses that fade decide who goes first."""

from __future__ import annotations

from lembro.memory.entry import Entry
from lembro.memory.eviction import HALF_LIFE, EvictionOrder
from lembro.memory.expiry import ExpiryIndex

CAPACITY = 100
INDEX = ExpiryIndex()


def entry(order: EvictionOrder, sid: str, uses: int = 1) -> Entry:
    made = Entry(sid, b"x" * 10, 100.0, INDEX.add(sid, 100.0))
    order.created(made)
    for _ in range(uses - 1):
        order.used(made)
    return made


def one_byte(_: Entry) -> int:
    return 1


def names(entries: list[Entry]) -> list[str]:
    return [e.sid for e in entries]


def ordered() -> EvictionOrder:
    return EvictionOrder(CAPACITY)


def test_a_new_session_counts_one_use() -> None:
    order = ordered()
    assert order.count(entry(order, "a")) == 1.0


def test_fewer_uses_go_first() -> None:
    order = ordered()
    held = [entry(order, "often", 5), entry(order, "once", 1), entry(order, "twice", 2)]
    assert names(order.victims(held, 2, one_byte, None)) == ["once", "twice"]


def test_among_equal_uses_the_least_recently_used_goes_first() -> None:
    order = ordered()
    held = [entry(order, "old"), entry(order, "new")]  # least recently used first
    assert names(order.victims(held, 1, one_byte, None)) == ["old"]


def test_victims_free_what_is_needed_and_no_more() -> None:
    order = ordered()
    held = [entry(order, f"s{i}") for i in range(10)]
    assert len(order.victims(held, 35, lambda e: 10, None)) == 4
    assert order.victims(held, 0, one_byte, None) == []


def test_the_session_being_written_is_never_a_victim() -> None:
    order = ordered()
    held = [entry(order, "keep"), entry(order, "other", 3)]
    assert names(order.victims(held, 10, one_byte, "keep")) == ["other"]


def test_uses_fade_by_half_every_half_life() -> None:
    order = ordered()
    old = entry(order, "old", 4)
    other = entry(order, "other")
    for _ in range(int(HALF_LIFE * CAPACITY)):  # one half-life of another session's uses
        order.used(other)
    assert 1.9 < order.count(old) < 2.1


def test_a_burst_long_ago_gives_way_to_a_newcomer() -> None:
    order = ordered()
    bot = entry(order, "bot", 3)
    other = entry(order, "other")
    for _ in range(int(2 * HALF_LIFE * CAPACITY)):
        order.used(other)
    newcomer = entry(order, "newcomer")
    assert names(order.victims([bot, newcomer], 1, one_byte, None)) == ["bot"]


def test_a_user_who_comes_back_outranks_a_later_burst() -> None:
    order = ordered()
    user = entry(order, "user", 5)
    for _ in range(30):  # a visit every few uses per session
        for _ in range(3 * CAPACITY):
            order.used(entry(order, "bot"))
        order.used(user)
    for _ in range(3 * CAPACITY):
        entry(order, "x")
    burst = entry(order, "burst", 3)
    assert names(order.victims([user, burst], 1, one_byte, None)) == ["burst"]


def test_a_restored_session_keeps_its_uses() -> None:
    order = ordered()
    made = Entry("r", b"", 1.0, INDEX.add("r", 1.0))
    order.created(made, uses=2)
    assert order.count(made) == 2.0
    order.check(made)


def test_a_session_unused_for_a_thousand_half_lives_still_checks_as_valid() -> None:
    """Its faded count underflows to 0.0: a valid state, the lowest rank there is."""
    order = EvictionOrder(16)
    idle, busy = entry(order, "idle"), entry(order, "busy")
    for _ in range(int(16 * HALF_LIFE * 1100)):
        order.used(busy)
    order.check(idle)
    order.check(busy)
    assert names(order.victims([idle, busy], 1, one_byte, keep=None)) == ["idle"]


def test_the_cutoff_from_a_sample_lands_near_the_exact_one() -> None:
    order = ordered()
    entries = [entry(order, f"s{i}", uses=1 + i % 10) for i in range(20_000)]
    need = 5_000  # a quarter of them, one byte each
    cutoff = order.cutoff(entries, need, one_byte)
    below = sum(1 for e in entries if e.score <= cutoff)
    assert 0.8 * need <= below <= 1.2 * need
    taken = list(EvictionOrder.scored_at_most(entries, cutoff))
    assert len(taken) == below
    assert all(e.score <= cutoff for e in taken)


def test_no_need_gives_a_cutoff_below_every_score_and_too_much_need_takes_all() -> None:
    order = ordered()
    entries = [entry(order, f"s{i}") for i in range(100)]
    assert not list(EvictionOrder.scored_at_most(entries, order.cutoff(entries, 0, one_byte)))
    everything = order.cutoff(entries, 1_000, one_byte)
    assert len(list(EvictionOrder.scored_at_most(entries, everything))) == 100
