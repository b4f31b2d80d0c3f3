"""OwnerIndex through its own API: owners by name, each with its sessions newest first."""

from __future__ import annotations

import pytest

from lembro.memory.expiry import ExpiryIndex
from lembro.memory.owners import OwnedEntry, OwnerIndex

RECORDS = ExpiryIndex()


def entry(sid: str) -> OwnedEntry:
    return OwnedEntry(sid, b"data", 1.0, RECORDS.add(sid, 1.0))


def sids(index: OwnerIndex, name: str) -> list[str]:
    return [e.sid for e in index.sessions(name)]


def test_a_new_owner_is_reported_once_and_lists_its_sessions_newest_first() -> None:
    index = OwnerIndex()
    a, b, c = entry("a"), entry("b"), entry("c")
    assert index.join(a, "ana") == "ana"
    assert index.join(b, "ana") is None  # not new: the budget counts it once
    assert index.join(c, "bob") == "bob"
    assert sids(index, "ana") == ["b", "a"]
    assert sids(index, "bob") == ["c"]
    assert sids(index, "nobody") == []
    assert sorted(index.names()) == ["ana", "bob"]
    assert len(index) == 2
    index.check([a, b, c])


def test_owners_are_one_by_equal_names_not_by_the_same_str() -> None:
    index = OwnerIndex()
    a, b = entry("a"), entry("b")
    index.join(a, "".join(["an", "a"]))
    assert index.join(b, "".join(["a", "na"])) is None
    assert sids(index, "ana") == ["b", "a"]


def test_a_use_moves_a_session_to_the_front_of_its_owner_only() -> None:
    index = OwnerIndex()
    a, b, c, other = entry("a"), entry("b"), entry("c"), entry("other")
    for e in (a, b, c):
        index.join(e, "ana")
    index.join(other, "bob")
    index.used(a)
    assert sids(index, "ana") == ["a", "c", "b"]
    index.used(b)  # the oldest
    assert sids(index, "ana") == ["b", "a", "c"]
    index.used(b)  # already the newest
    assert sids(index, "ana") == ["b", "a", "c"]
    assert sids(index, "bob") == ["other"]
    index.check([a, b, c, other])


def test_a_use_of_a_session_without_an_owner_changes_nothing() -> None:
    index = OwnerIndex()
    lone = entry("lone")
    index.used(lone)
    assert index.owner_of(lone) is None
    assert len(index) == 0
    index.check([lone])


@pytest.mark.parametrize("leaving", ["newest", "middle", "oldest"])
def test_leaving_from_any_place_keeps_the_rest_in_order(leaving: str) -> None:
    index = OwnerIndex()
    old, middle, new = entry("oldest"), entry("middle"), entry("newest")
    for e in (old, middle, new):
        index.join(e, "ana")
    gone = {"newest": new, "middle": middle, "oldest": old}[leaving]
    assert index.leave(gone) is None  # the owner still has sessions
    assert index.owner_of(gone) is None
    assert gone.newer is None  # it holds no neighbour alive
    assert gone.older is None
    assert sids(index, "ana") == [s for s in ("newest", "middle", "oldest") if s != leaving]
    index.check([e for e in (old, middle, new) if e is not gone] + [gone])


def test_the_last_session_leaving_drops_its_owner() -> None:
    index = OwnerIndex()
    a, b = entry("a"), entry("b")
    index.join(a, "ana")
    index.join(b, "ana")
    assert index.leave(a) is None
    assert index.leave(b) == "ana"  # for the budget to uncount
    assert index.leave(b) is None  # no owner any more: nothing to leave
    assert len(index) == 0
    assert sids(index, "ana") == []
    index.check([a, b])


def test_a_session_moves_from_one_owner_to_another() -> None:
    index = OwnerIndex()
    a, b = entry("a"), entry("b")
    index.join(a, "ana")
    index.join(b, "ana")
    index.leave(a)
    assert index.join(a, "bob") == "bob"
    assert index.owner_of(a) == "bob"
    assert sids(index, "ana") == ["b"]
    assert sids(index, "bob") == ["a"]
    index.check([a, b])


def test_owners_leaving_in_numbers_keep_the_rest_listed() -> None:
    index = OwnerIndex()
    entries = [entry(f"s{i}") for i in range(1000)]
    for i, e in enumerate(entries):
        index.join(e, f"user{i}")
    for e in entries[:950]:  # the table is rebuilt on the way down
        assert index.leave(e) is not None
    assert len(index) == 50
    assert sorted(index.names()) == sorted(f"user{i}" for i in range(950, 1000))
    assert all(sids(index, f"user{i}") == [f"s{i}"] for i in range(950, 1000))
    index.join(entries[0], "user999")
    assert sids(index, "user999") == ["s0", "s999"]
    index.check(entries)


def test_check_finds_a_broken_list() -> None:
    index = OwnerIndex()
    a, b, c = entry("a"), entry("b"), entry("c")
    for e in (a, b, c):
        index.join(e, "ana")
    b.older = None  # c -> b -/-> a
    with pytest.raises(AssertionError, match="ana"):
        index.check([a, b, c])


def test_check_finds_a_session_its_owner_does_not_list() -> None:
    index = OwnerIndex()
    a, stray = entry("a"), entry("stray")
    index.join(a, "ana")
    stray.owner = a.owner  # says it is ana's, but is not in ana's list
    with pytest.raises(AssertionError, match="2 sessions have an owner, 1 are listed"):
        index.check([a, stray])


def test_check_finds_an_owner_the_index_does_not_hold() -> None:
    index, other = OwnerIndex(), OwnerIndex()
    a = entry("a")
    other.join(a, "ana")
    with pytest.raises(AssertionError, match="not indexed"):
        index.check([a])


def test_own_says_which_owners_came_and_went() -> None:
    index = OwnerIndex()
    a, b = entry("a"), entry("b")
    assert index.own(a, "ana") == (None, "ana")  # a login
    assert index.own(b, "ana") == (None, None)
    assert index.own(a, "ana") == (None, None)  # a write of the same owner: a use
    assert sids(index, "ana") == ["a", "b"]
    assert index.own(a, "bob") == (None, "bob")  # a login as someone else
    assert index.own(b, "bob") == ("ana", None)  # ana's last session went to bob
    assert sids(index, "bob") == ["b", "a"]
    assert index.own(a, None) == (None, None)  # a logout
    assert index.own(b, None) == ("bob", None)
    assert len(index) == 0
    index.check([a, b])


def test_a_detached_owner_keeps_its_sessions_apart_from_new_ones_of_that_name() -> None:
    index = OwnerIndex()
    a, b, new = entry("a"), entry("b"), entry("new")
    index.join(a, "ana")
    index.join(b, "ana")
    detached = index.detach("ana")
    assert detached is not None
    assert index.detach("ana") is None  # gone from the table
    assert index.join(new, "ana") == "ana"  # a new login: a new owner of that name
    assert sids(index, "ana") == ["new"]
    assert index.own(b, "ana") == (None, None)  # written as ana: stays with the detached
    assert detached.newest is b
    index.check([a, b, new])
    assert sorted(index.names()) == ["ana", "ana"]  # both counted until the first is empty
    assert index.leave(b) is None
    assert index.leave(a) == "ana"  # the detached owner's last session: dropped
    assert index.names() == ["ana"]
    index.check([new])


def test_a_session_rejoins_the_owner_of_its_name_from_a_detached_one() -> None:
    index = OwnerIndex()
    keep, other = entry("keep"), entry("other")
    index.join(keep, "ana")
    index.join(other, "ana")
    index.detach("ana")
    assert index.rejoin(keep) == (None, "ana")  # a new owner in the table
    assert sids(index, "ana") == ["keep"]
    index.check([keep, other])
