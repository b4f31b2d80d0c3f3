"""Lifetimes, renewal and devices (issue 29), one suite over every store and deployment.

Run through test_contract.py's ``backend`` fixture: MemoryStore on the fake clock, the
Redis stores with short real lifetimes (``backend.short``) and ``in_time`` for the
scenarios that wait. What every store promises: an absolute end no use moves, renewal
with a grace, a replaced id after its grace treated as a stolen cookie, what a session
is at a glance, and sessions per user.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest

from lembro import Device, InvalidOption, Loaded, SessionInfo
from lembro.lifetimes import MAX_USER_AGENT

from . import test_contract as contract
from .test_contract import LONG, Backend, SyncFace, sid

# The contract's fixture, so this suite runs on every store and deployment it does.
backend = contract.backend

USER = "user"
ROUNDING = 0.001  # seconds: a float sum on the fake clock, a millisecond on Redis


class Awaited:
    """An async store behind a ``SyncFace``, every coroutine method of it run on the
    face's loop (the face itself names only the methods the older suites call)."""

    def __init__(self, face: SyncFace) -> None:
        self.face = face

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.face.store, name)
        if not inspect.iscoroutinefunction(found):
            return found
        return lambda *args, **kwargs: self.face._run(found(*args, **kwargs))

    def __len__(self) -> int:
        return len(self.face)

    def __contains__(self, sid: object) -> bool:
        return sid in self.face


class Stores:
    """Makes the stores of one test on ``backend``; the memory ones are recounted from
    scratch at the end (``check``)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.made: list[Any] = []

    def new(self, **options: Any) -> Any:
        store = self.backend.new(**options)
        self.made.append(store)
        return Awaited(store) if isinstance(store, SyncFace) else store

    def check(self) -> None:
        if self.backend.kind == "memory":
            for store in self.made:
                store.check()


@pytest.fixture
def stores(backend: Backend) -> Iterator[Stores]:
    made = Stores(backend)
    yield made
    made.check()


def lembro_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("lembro") and r.levelno == logging.WARNING
    ]


# ---- the absolute lifetime -------------------------------------------------------------


@pytest.mark.lifetimes
def test_no_use_touch_or_write_moves_the_expiry_past_the_absolute_end(
    backend: Backend, stores: Stores
) -> None:
    def scenario() -> None:
        short = backend.short
        store = stores.new(owner_key=USER, absolute_ttl=short, ttl=LONG)
        s, renamed = sid(), sid()
        store.set(s, {USER: "ana"}, ttl=LONG)
        uses = [
            lambda: store.get(s),
            lambda: store.load(s),
            lambda: store.touch(s, LONG),
            lambda: store.renew(s, LONG),
            lambda: store.replace(s, {USER: "ana", "n": 1}, LONG),
            lambda: store.update(s, {"n": 2}, ttl=LONG),
            lambda: store.update(s, {}, ttl=LONG),
            lambda: store.set(s, {USER: "ana", "n": 3}, LONG),
        ]
        for use in uses:
            use()
            left = store.time_left(s)
            assert left is not None
            assert left <= short + ROUNDING
        assert store.rename(s, renamed, {USER: "ana"}, LONG, reset_lifetime=False)
        left = store.time_left(renamed)
        assert left is not None
        assert left <= short + ROUNDING
        backend.wait_expired(store, renamed)
        assert store.get(renamed) is None
        assert store.load(renamed) is None
        assert store.touch(renamed, LONG) is False
        assert store.sessions_of("ana") == []

    backend.in_time(scenario)


def test_time_left_is_the_earlier_of_the_idle_and_the_absolute_end(stores: Stores) -> None:
    store = stores.new(absolute_ttl=LONG)
    idle, fresh = sid(), sid()
    store.set(idle, {"n": 1}, ttl=LONG / 10)
    store.set(fresh, {"n": 1}, ttl=LONG * 10)
    idle_left, absolute_left = store.time_left(idle), store.time_left(fresh)
    assert idle_left is not None
    assert absolute_left is not None
    assert idle_left <= LONG / 10 + ROUNDING
    assert LONG / 2 < absolute_left <= LONG + ROUNDING


def test_load_says_how_long_until_the_absolute_end(stores: Stores) -> None:
    bounded, unbounded = stores.new(absolute_ttl=LONG), stores.new()
    s = sid()
    bounded.set(s, {"n": 1})
    unbounded.set(s, {"n": 1})
    loaded = bounded.load(s)
    assert isinstance(loaded, Loaded)
    assert loaded.sid == s
    assert loaded.data == {"n": 1}
    assert loaded.absolute_left is not None
    assert LONG / 2 < loaded.absolute_left <= LONG + ROUNDING
    assert unbounded.load(s) == Loaded(s, {"n": 1}, None)
    assert bounded.load(sid()) is None


@pytest.mark.lifetimes
def test_a_sign_in_starts_a_new_absolute_lifetime_and_a_privilege_change_keeps_it(
    backend: Backend, stores: Stores
) -> None:
    def scenario() -> None:
        store = stores.new(absolute_ttl=backend.short, ttl=LONG)
        signed_in, elevated, a, b = sid(), sid(), sid(), sid()
        store.set(a, {"n": 1})
        store.set(b, {"n": 1})
        backend.wait(backend.short / 2)
        assert store.rename(a, signed_in, {"n": 2}, LONG, reset_lifetime=True)
        assert store.rename(b, elevated, {"n": 2}, LONG, reset_lifetime=False)
        signed_in_left = store.time_left(signed_in)
        elevated_left = store.time_left(elevated)
        assert signed_in_left is not None
        assert elevated_left is None or elevated_left < signed_in_left
        fresh, kept = store.session_info(signed_in), store.session_info(elevated)
        assert fresh is not None
        if kept is not None:  # Redis: it may have ended already, as it should
            assert kept.created < fresh.created
            assert kept.renewed > kept.created  # this id was issued after the sign-in
            assert kept.absolute_expires is not None
            assert fresh.absolute_expires is not None
            assert kept.absolute_expires < fresh.absolute_expires
        assert fresh.renewed == fresh.created

    backend.in_time(scenario)


# ---- a rename with a grace ------------------------------------------------------------


def test_an_id_in_its_grace_answers_as_the_session_it_was_replaced_by(stores: Stores) -> None:
    store = stores.new()
    old, new = sid(), sid()
    store.set(old, {"cart": [1]})
    assert store.rename(old, new, {"cart": [1, 2]}, grace=LONG, reset_lifetime=False)
    assert store.get(old) == {"cart": [1, 2]}
    loaded = store.load(old)
    assert loaded is not None
    assert loaded.sid == new  # the response sets the cookie to it
    assert loaded.data == {"cart": [1, 2]}
    assert store.update(old, {"theme": "dark"}) is True  # a request in flight writes back
    assert store.get(new) == {"cart": [1, 2], "theme": "dark"}
    assert store.all() == {new: {"cart": [1, 2], "theme": "dark"}}
    assert len(store) == 1


def test_a_logout_with_the_old_id_during_its_grace_ends_the_session(stores: Stores) -> None:
    store = stores.new()
    old, new = sid(), sid()
    store.set(old, {"n": 1})
    assert store.rename(old, new, {"n": 1}, grace=LONG, reset_lifetime=False)
    assert store.destroy(old) is True
    assert store.get(new) is None
    assert store.get(old) is None
    assert new not in store


def test_without_a_grace_the_old_id_is_simply_gone(stores: Stores) -> None:
    store = stores.new()
    old, new = sid(), sid()
    store.set(old, {"n": 1})
    assert store.rename(old, new, {"n": 1})
    assert store.get(old) is None
    assert store.get(new) == {"n": 1}  # a late request with the old id ended nothing


@pytest.mark.lifetimes
def test_a_replaced_id_after_its_grace_is_a_stolen_cookie(
    backend: Backend, stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    def scenario() -> None:
        store = stores.new(owner_key=USER)
        old, new = sid(), sid()
        store.set(old, {USER: "ana"}, ttl=LONG)
        assert store.rename(
            old, new, {USER: "ana"}, LONG, grace=backend.short, reset_lifetime=False
        )
        assert store.get(new) == {USER: "ana"}
        backend.wait(backend.short)
        caplog.clear()
        assert store.load(old) is None  # the thief gets nothing
        assert store.get(new) is None  # and the session it was replaced by is ended
        assert store.sessions_of("ana") == []
        assert store.get(old) is None
        warnings = lembro_warnings(caplog)
        assert len(warnings) == 1
        assert old not in warnings[0]
        assert new not in warnings[0]
        assert "ana" in warnings[0]

    with caplog.at_level(logging.WARNING, logger="lembro"):
        backend.in_time(scenario)


# ---- renewal -------------------------------------------------------------------------


@pytest.mark.lifetimes
def test_load_renews_an_id_issued_longer_ago_than_renew_every(
    backend: Backend, stores: Stores
) -> None:
    def scenario() -> None:
        store = stores.new(renew_every=backend.short, renew_grace=LONG)
        s = sid()
        store.set(s, {"n": 1}, ttl=LONG)
        first = store.load(s)
        assert first is not None
        assert first.sid == s
        backend.wait(backend.short)
        backend.wait(backend.short / 10)
        renewed = store.load(s)
        assert renewed is not None
        assert renewed.sid != s
        assert renewed.data == {"n": 1}
        assert store.get(renewed.sid) == {"n": 1}
        assert store.get(s) == {"n": 1}  # in its grace: a request in flight still works
        again = store.load(s)
        assert again is not None
        assert again.sid == renewed.sid
        info = store.session_info(renewed.sid)
        assert info is not None
        assert info.id == renewed.sid
        assert info.renewed > info.created  # the sign-in's start is kept
        assert store.all() == {renewed.sid: {"n": 1}}

    backend.in_time(scenario)


@pytest.mark.lifetimes
def test_load_renews_to_the_id_new_id_makes(backend: Backend, stores: Stores) -> None:
    # What Litestar's namespaced store asks: the renewed id under the prefix its keys have.
    store = stores.new(renew_every=backend.short / 20, renew_grace=LONG)
    prefix = "sessions\x1e"
    s, kept = prefix + sid(), prefix + sid()
    store.set(s, {"n": 1}, ttl=LONG)
    store.set(kept, {"n": 2}, ttl=LONG)
    backend.wait(backend.short / 10)  # both are due a renewal
    renewed = store.load(s, new_id=lambda: prefix + sid())
    assert renewed is not None
    assert renewed.sid != s
    assert renewed.sid.startswith(prefix)
    assert renewed.data == {"n": 1}
    assert store.get(renewed.sid) == {"n": 1}
    with pytest.raises(InvalidOption, match="new_id"):
        store.load(kept, new_id=lambda: kept)  # no fresh id: not renewed
    assert store.get(kept) == {"n": 2}
    assert sorted(store.all()) == sorted([renewed.sid, kept])


@pytest.mark.lifetimes
def test_get_never_renews(backend: Backend, stores: Stores) -> None:
    def scenario() -> None:
        store = stores.new(renew_every=backend.short)
        s = sid()
        store.set(s, {"n": 1}, ttl=LONG)
        backend.wait(backend.short)
        backend.wait(backend.short / 10)
        assert store.get(s) == {"n": 1}
        assert list(store.all()) == [s]

    backend.in_time(scenario)


# ---- what a session is, at a glance -------------------------------------------------------


def test_session_info_says_who_when_and_from_where(stores: Stores) -> None:
    store = stores.new(owner_key=USER, absolute_ttl=LONG * 10)
    s, anonymous = sid(), sid()
    device = Device(ip="203.0.113.0", user_agent="Mozilla/5.0 (X11; Linux x86_64)")
    store.set(s, {USER: 42}, ttl=LONG, device=device)
    store.set(anonymous, {"theme": "dark"}, ttl=LONG)
    before = store.stats()
    info = store.session_info(s)
    assert isinstance(info, SessionInfo)
    assert (info.id, info.owner, info.ip, info.user_agent) == (
        s,
        42,
        "203.0.113.0",
        "Mozilla/5.0 (X11; Linux x86_64)",
    )
    for moment in (info.created, info.renewed, info.last_seen, info.expires):
        assert moment.utcoffset() == timedelta(0)
        assert moment.tzinfo is not None
    assert info.renewed == info.created
    assert info.created <= info.last_seen < info.expires
    assert abs((info.expires - info.created).total_seconds() - LONG) < 5
    assert info.absolute_expires is not None
    assert abs((info.absolute_expires - info.created).total_seconds() - LONG * 10) < 0.01
    plain = store.session_info(anonymous)
    assert plain is not None
    assert (plain.owner, plain.ip, plain.user_agent) == (None, None, None)
    assert store.session_info(sid()) is None
    after = store.stats()
    assert (after.hits, after.misses) == (before.hits, before.misses)  # neither
    assert info.created.tzinfo is not None
    assert info.created.astimezone(timezone.utc) == info.created


def test_a_store_without_absolute_ttl_says_none(stores: Stores) -> None:
    store = stores.new()
    s = sid()
    store.set(s, {"n": 1})
    info = store.session_info(s)
    assert info is not None
    assert info.absolute_expires is None
    assert info.owner is None


def test_the_device_is_recorded_at_creation_and_at_a_rename(stores: Stores) -> None:
    store = stores.new()
    s, regenerated, kept = sid(), sid(), sid()
    store.set(s, {"n": 1}, device=Device("198.51.100.7", "first"))
    store.set(s, {"n": 2}, device=Device("198.51.100.8", "second"))  # not a creation
    info = store.session_info(s)
    assert info is not None
    assert (info.ip, info.user_agent) == ("198.51.100.7", "first")
    assert store.rename(s, regenerated, {"n": 3}, device=Device("2001:db8::", "third"))
    info = store.session_info(regenerated)
    assert info is not None
    assert (info.ip, info.user_agent) == ("2001:db8::", "third")
    assert store.rename(regenerated, kept, {"n": 4})  # no device given: the one it had
    info = store.session_info(kept)
    assert info is not None
    assert (info.ip, info.user_agent) == ("2001:db8::", "third")


def test_a_long_user_agent_is_cut_not_refused(stores: Stores) -> None:
    store = stores.new()
    s = sid()
    store.set(s, {"n": 1}, device=Device(None, "x" * (MAX_USER_AGENT * 3)))
    info = store.session_info(s)
    assert info is not None
    assert info.user_agent == "x" * MAX_USER_AGENT
    assert info.ip is None


# ---- sessions per user ------------------------------------------------------------------


@pytest.mark.lifetimes
def test_sessions_of_with_info_lists_each_session_most_recently_used_first(
    backend: Backend, stores: Stores
) -> None:
    store = stores.new(owner_key=USER)
    a, b, c = sid(), sid(), sid()
    for s, agent in ((a, "phone"), (b, "laptop"), (c, "tablet")):
        store.set(s, {USER: "ana"}, device=Device(None, agent))
        backend.wait(0.002)
    store.get(a)
    infos = store.sessions_of("ana", info=True)
    assert [i.id for i in infos] == store.sessions_of("ana") == [a, c, b]
    assert [i.user_agent for i in infos] == ["phone", "tablet", "laptop"]
    assert all(i.owner == "ana" for i in infos)
    assert store.sessions_of("nobody", info=True) == []


def test_destroy_session_of_ends_only_the_owners_own_session(stores: Stores) -> None:
    store = stores.new(owner_key=USER)
    ana, bob = sid(), sid()
    store.set(ana, {USER: "ana"})
    store.set(bob, {USER: "bob"})
    logouts = store.stats().logouts
    assert store.destroy_session_of("ana", bob) is False  # a guessed id of another user
    assert store.get(bob) == {USER: "bob"}
    assert store.destroy_session_of("ana", sid()) is False
    assert store.destroy_session_of("ana", ana) is True
    assert store.get(ana) is None
    assert store.destroy_session_of("ana", ana) is False
    assert store.stats().logouts == logouts + 1


@pytest.mark.lifetimes
def test_max_sessions_per_user_ends_the_oldest_sign_in(backend: Backend, stores: Stores) -> None:
    store = stores.new(owner_key=USER, max_sessions_per_user=2)
    first, second, third, fourth, guest, bob = (sid() for _ in range(6))
    store.set(first, {USER: "ana"})
    backend.wait(0.002)
    store.set(second, {USER: "ana"})
    backend.wait(0.002)
    store.set(bob, {USER: "bob"})
    store.get(first)  # the most recently used, but the oldest sign-in
    store.set(third, {USER: "ana"})
    assert sorted(store.sessions_of("ana")) == sorted([second, third])
    assert store.get(first) is None
    backend.wait(0.002)
    store.set(guest, {"theme": "dark"})
    assert store.rename(guest, fourth, {USER: "ana"})  # a sign-in on another device
    assert sorted(store.sessions_of("ana")) == sorted([third, fourth])
    assert store.sessions_of("bob") == [bob]
    store.set(fourth, {USER: "ana", "cart": [1]})  # a write of one already held: no change
    assert sorted(store.sessions_of("ana")) == sorted([third, fourth])


@pytest.mark.lifetimes
def test_an_update_that_signs_in_counts_toward_max_sessions_per_user(
    backend: Backend, stores: Stores
) -> None:
    store = stores.new(owner_key=USER, max_sessions_per_user=1)
    old, guest = sid(), sid()
    store.set(old, {USER: "ana"})
    backend.wait(0.002)
    store.set(guest, {"theme": "dark"})
    assert store.update(guest, {USER: "ana"}) is True
    assert store.sessions_of("ana") == [guest]
    assert store.get(old) is None


# ---- bad values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"absolute_ttl": 0},
        {"absolute_ttl": -1},
        {"absolute_ttl": float("inf")},
        {"absolute_ttl": "1h"},
        {"absolute_ttl": True},
        {"renew_every": 0},
        {"renew_every": float("nan")},
        {"renew_every": "5m"},
        {"renew_grace": -1},
        {"renew_grace": float("inf")},
        {"renew_grace": None},
        {"max_sessions_per_user": 0, "owner_key": USER},
        {"max_sessions_per_user": 1.5, "owner_key": USER},
        {"max_sessions_per_user": True, "owner_key": USER},
        {"max_sessions_per_user": 3},  # without owner_key, no one to count for
    ],
)
def test_a_bad_option_is_refused(backend: Backend, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOption):
        backend.new(**options)


@pytest.mark.parametrize(
    "keywords",
    [
        {"reset_lifetime": "yes"},
        {"reset_lifetime": None},
        {"grace": -1},
        {"grace": float("inf")},
        {"grace": "10s"},
        {"device": "198.51.100.7"},
        {"device": Device(ip=7)},  # type: ignore[arg-type]
    ],
)
def test_a_rename_with_a_bad_argument_raises_and_changes_nothing(
    stores: Stores, keywords: dict[str, Any]
) -> None:
    store = stores.new()
    old, new = sid(), sid()
    store.set(old, {"n": 1})
    with pytest.raises(InvalidOption):
        store.rename(old, new, {"n": 2}, **keywords)
    assert store.get(old) == {"n": 1}
    assert store.get(new) is None


@pytest.mark.parametrize("device", ["198.51.100.7", ("198.51.100.7", "ua"), Device("1" * 100)])
def test_a_set_with_a_bad_device_raises_and_changes_nothing(stores: Stores, device: Any) -> None:
    store = stores.new()
    s = sid()
    with pytest.raises(InvalidOption):
        store.set(s, {"n": 1}, device=device)
    assert store.get(s) is None
    assert len(store) == 0


@pytest.mark.parametrize(
    ("owner", "session"), [(1.5, "x"), (True, "x"), (None, "x"), ("ana", ""), ("ana", 7)]
)
def test_destroy_session_of_with_bad_arguments_raises_and_changes_nothing(
    stores: Stores, owner: Any, session: Any
) -> None:
    store = stores.new(owner_key=USER)
    s = sid()
    store.set(s, {USER: "ana"})
    with pytest.raises(InvalidOption):
        store.destroy_session_of(owner, session)
    assert store.get(s) == {USER: "ana"}


def test_the_new_calls_need_an_owner_key_where_they_name_an_owner(stores: Stores) -> None:
    store = stores.new()
    s = sid()
    store.set(s, {USER: "ana"})
    with pytest.raises(InvalidOption):
        store.sessions_of("ana", info=True)
    with pytest.raises(InvalidOption):
        store.destroy_session_of("ana", s)
    assert store.get(s) == {USER: "ana"}
