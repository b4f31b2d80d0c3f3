"""``update``: the changes of concurrent requests of one session are all kept (issue 28).

Run against every store and deployment through test_contract.py's ``backend`` fixture.
Each request writes back only the top-level keys it set or deleted, applied to the
session as it is when the write lands: two requests that change different keys both
keep their change, the later of two writes of one key wins, a key one request deleted is
not brought back by another that only read it, and a destroyed session stays gone.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from lembro import InvalidOption, SerializationError, SessionTooLarge

from . import test_contract as contract
from .test_contract import LONG, SHORT, Backend, sid

# The contract's fixtures, so this suite runs on every store and deployment it does.
backend = contract.backend
store = contract.store

WRITERS = 8
ROUNDS = 20


def test_two_requests_that_change_different_keys_both_keep_their_change(store: Any) -> None:
    s = sid()
    store.set(s, {"user": "ana"})
    first, second = store.get(s), store.get(s)  # two requests load the session
    first["theme"] = "dark"
    second["cart"] = [1]
    assert store.update(s, {"theme": first["theme"]}) is True
    assert store.update(s, {"cart": second["cart"]}) is True
    assert store.get(s) == {"user": "ana", "theme": "dark", "cart": [1]}


def test_the_later_write_of_one_key_wins(store: Any) -> None:
    s = sid()
    store.set(s, {"theme": "light", "n": 1})
    assert store.update(s, {"theme": "dark"}) is True
    assert store.update(s, {"theme": "blue"}) is True
    assert store.get(s) == {"theme": "blue", "n": 1}


def test_a_deleted_key_is_not_brought_back_by_a_request_that_only_read_it(store: Any) -> None:
    s = sid()
    store.set(s, {"flash": "saved", "cart": []})
    reader = store.get(s)  # loads the flash message, changes only the cart
    assert store.update(s, {}, ["flash"]) is True  # another request consumed the flash
    reader["cart"].append(7)
    assert store.update(s, {"cart": reader["cart"]}) is True
    assert store.get(s) == {"cart": [7]}


def test_an_update_leaves_the_values_it_did_not_change_as_they_were(store: Any) -> None:
    s = sid()
    kept = {
        "when": datetime(2024, 3, 31, 1, 30, tzinfo=ZoneInfo("Europe/Lisbon")),
        "tags": {"a", "b"},
        "pair": (1, "x"),
        "id": UUID(int=7),
        "nested": {"at": [date(2024, 1, 2), Decimal("1.10")]},
    }
    store.set(s, {**kept, "n": 1})
    assert store.update(s, {"n": 2}) is True
    back = store.get(s)
    assert back == {**kept, "n": 2}
    assert back["when"].tzinfo == ZoneInfo("Europe/Lisbon")
    assert type(back["pair"]) is tuple


def test_a_destroyed_session_is_not_recreated_by_an_update(store: Any) -> None:
    s = sid()
    store.set(s, {"user": "ana"})
    assert store.destroy(s) is True  # a logout finished first
    assert store.update(s, {"cart": [1]}) is False
    assert store.update(s, {}, ["user"]) is False
    assert store.update(s, {}) is False
    assert s not in store
    assert store.all() == {}


@pytest.mark.lifetimes
def test_an_update_of_an_expired_session_is_false(backend: Backend) -> None:
    store = backend.new()
    s = sid()
    store.set(s, {"n": 1}, ttl=SHORT)
    backend.wait_expired(store, s)
    assert store.update(s, {"n": 2}) is False
    assert s not in store


def test_an_empty_update_only_extends_the_life(backend: Backend) -> None:
    store = backend.new()
    s = sid()
    store.set(s, {"n": 1}, ttl=SHORT)
    assert store.update(s, {}, (), ttl=LONG) is True
    left = store.time_left(s)
    assert left is not None
    assert left > LONG / 2
    assert store.get(s) == {"n": 1}


def test_an_update_gives_the_session_its_new_lifetime(backend: Backend) -> None:
    store = backend.new()
    s = sid()
    store.set(s, {"n": 1}, ttl=LONG)
    assert store.update(s, {"n": 2}, ttl=SHORT) is True
    left = store.time_left(s)
    assert left is not None
    assert left < LONG / 2


@pytest.mark.parametrize("value", [object(), 2**70])
def test_an_unserializable_change_raises_and_changes_nothing(store: Any, value: Any) -> None:
    s = sid()
    store.set(s, {"v": "old"})
    with pytest.raises(SerializationError):
        store.update(s, {"v": "new", "bad": value})
    assert store.get(s) == {"v": "old"}


def test_a_change_too_large_raises_and_changes_nothing(backend: Backend) -> None:
    store = backend.new(max_session_bytes=1024)
    s = sid()
    store.set(s, {"v": "old"})
    with pytest.raises(SessionTooLarge):
        store.update(s, {"v": "x" * 4096})
    assert store.get(s) == {"v": "old"}


@pytest.mark.parametrize(
    ("changes", "deleted"), [([("a", 1)], ()), ({"a": 1}, "flash"), ({"a": 1}, 7)]
)
def test_bad_arguments_raise_and_change_nothing(store: Any, changes: Any, deleted: Any) -> None:
    s = sid()
    store.set(s, {"flash": "f", "a": 0})
    with pytest.raises(InvalidOption):
        store.update(s, changes, deleted)
    with pytest.raises(InvalidOption):
        store.update("", {"a": 1})
    with pytest.raises(InvalidOption):
        store.update(s, {"a": 1}, ttl=0)
    assert store.all() == {s: {"flash": "f", "a": 0}}


def test_an_update_that_signs_in_moves_the_session_into_its_owners_index(
    backend: Backend,
) -> None:
    store = backend.new(owner_key="user")
    s = sid()
    store.set(s, {"cart": [1]})
    assert store.update(s, {"user": "ana"}) is True  # a login in place
    assert store.sessions_of("ana") == [s]
    assert store.update(s, {"cart": [2]}) is True  # a change of another key keeps the owner
    assert store.sessions_of("ana") == [s]
    assert store.update(s, {"user": "bob"}) is True  # signed in as someone else
    assert store.sessions_of("ana") == []
    assert store.sessions_of("bob") == [s]
    assert store.update(s, {}, ["user"]) is True  # a logout that keeps the session
    assert store.sessions_of("bob") == []
    assert store.get(s) == {"cart": [2]}


def test_an_update_whose_owner_field_is_of_a_bad_type_raises(backend: Backend) -> None:
    store = backend.new(owner_key="user")
    s = sid()
    store.set(s, {"user": "ana"})
    with pytest.raises(SerializationError):
        store.update(s, {"user": [1, 2]})
    assert store.get(s) == {"user": "ana"}
    assert store.sessions_of("ana") == [s]


# A small session is changed in one step; a large one (in memory: over a few KiB) is
# changed outside the lock and written only if no other write landed meanwhile.
@pytest.mark.parametrize("padding", [0, 20_000], ids=["small", "large"])
def test_concurrent_writers_of_their_own_keys_lose_nothing(backend: Backend, padding: int) -> None:
    if backend.loop is not None:
        pytest.skip("threads drive the sync stores; the async ones have their own test")
    store = backend.new()
    first = {"user": "ana", "pad": "x" * padding}
    for _ in range(ROUNDS):
        s = sid()
        store.set(s, first)
        start = threading.Barrier(WRITERS)
        errors: list[BaseException] = []

        def write(
            i: int,
            s: str = s,
            start: threading.Barrier = start,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                start.wait()
                assert store.update(s, {f"k{i}": i}) is True
            except BaseException as e:  # seen by the main thread
                errors.append(e)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.get(s) == {**first, **{f"k{i}": i for i in range(WRITERS)}}


def test_concurrent_async_writers_of_their_own_keys_lose_nothing(backend: Backend) -> None:
    if backend.loop is None:
        pytest.skip("the async stores only")
    face: Any = backend.new()
    inner = face.store

    async def round_of_writers(s: str) -> list[bool]:
        return list(await asyncio.gather(*(inner.update(s, {f"k{i}": i}) for i in range(WRITERS))))

    for _ in range(ROUNDS):
        s = sid()
        face.set(s, {"user": "ana"})
        assert backend.loop.run_until_complete(round_of_writers(s)) == [True] * WRITERS
        assert face.get(s) == {"user": "ana", **{f"k{i}": i for i in range(WRITERS)}}
