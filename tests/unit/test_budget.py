"""Budget through its own API: what a session costs, and the size against the cap."""

from __future__ import annotations

import sys

import pytest

from lembro.memory.budget import RECORD_OVERHEAD, SESSION_OVERHEAD, Budget, session_cost
from lembro.memory.entry import Entry
from lembro.memory.expiry import ExpiryIndex

INDEX = ExpiryIndex()


def make(sid: str, data: bytes) -> Entry:
    return Entry(sid, data, 1.0, INDEX.add(sid, 1.0))


@pytest.mark.parametrize("sid", ["a" * 43, "é" * 43, "€" * 43, "😀" * 43])
def test_an_id_costs_the_bytes_cpython_holds_for_it(sid: str) -> None:
    assert session_cost(sid, b"xyz") == sys.getsizeof(sid) + 3 + SESSION_OVERHEAD
    assert session_cost("😀" * 43, b"") > session_cost("a" * 43, b"") + 3 * 43 - 1


def test_adding_and_removing_a_session_returns_to_zero() -> None:
    budget = Budget(10_000, 0.75)
    entry = make("s", b"x" * 100)
    budget.add_session(entry)  # and its expiry record
    assert budget.size == session_cost("s", entry.data) + RECORD_OVERHEAD
    budget.remove_session(entry)
    assert budget.size == RECORD_OVERHEAD  # until the index drops the record
    budget.remove_records(1)
    assert budget.size == 0


def test_over_means_above_max_size_and_target_is_the_low_water_mark() -> None:
    budget = Budget(1000, 0.75)
    assert budget.target == 750
    for _ in range(1000 // RECORD_OVERHEAD):
        budget.add_record()
    assert not budget.over
    budget.add_record()
    assert budget.over


def test_a_new_session_costs_its_record_too() -> None:
    budget = Budget(10_000, 0.5)
    assert budget.new_session_cost("s", b"ab") == session_cost("s", b"ab") + RECORD_OVERHEAD


def test_capacity_estimates_how_many_sessions_fit() -> None:
    budget = Budget(10_000, 0.75)
    assert budget.capacity(0) == 1
    assert budget.first_capacity() == 9  # a guess of 1 KiB each
    entry = make("s", b"x" * 100)
    budget.add_session(entry)
    assert budget.capacity(1) == 10_000 // (session_cost("s", entry.data) + RECORD_OVERHEAD)


def test_check_names_a_size_that_does_not_add_up() -> None:
    budget = Budget(10_000, 0.75)
    entry = make("s", b"x")
    budget.add_session(entry)
    budget.check([entry], 1)
    budget.add_record()
    with pytest.raises(AssertionError, match="size is"):
        budget.check([entry], 0)
