"""MemoryStore's lifetimes (issue 29) through its own API: the absolute end, last seen,
renewal and its grace, the markers of replaced ids (their cost, their end), sessions per
user, and the SessionTable that keeps all of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from typing import Any

import pytest

from lembro import Device, InvalidOption, Loaded, MemoryStore, as_async
from lembro.memory import MARKER_OVERHEAD, RECORD_OVERHEAD
from lembro.memory.budget import RENEWED_OVERHEAD, device_cost
from lembro.memory.table import SessionTable
from lembro.protocol import _ThreadAsync
from tests.conftest import FakeClock

from .test_memory import SESSION, held_between, sid_of

NOW = 1000.0
KEY = "user"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def store_of(clock: FakeClock, **options: Any) -> MemoryStore:
    return MemoryStore("1M", None, clock=clock, **options)


def table(**options: Any) -> SessionTable:
    return SessionTable(1 << 20, 0.75, **{"owners": False, **options})


# ---- the absolute end --------------------------------------------------------------------


def test_a_session_ends_at_its_absolute_end_however_often_it_is_used(clock: FakeClock) -> None:
    store = store_of(clock, absolute_ttl=100.0, ttl=30.0)
    store.set("s", {"n": 1})
    assert store.time_left("s") == 30.0  # the idle end comes first
    for _ in range(9):  # a user who comes back every 10 seconds
        clock.advance(10)
        assert store.renew("s") == {"n": 1}
    assert store.time_left("s") == pytest.approx(10.0)  # now the absolute end comes first
    clock.advance(9.999)
    assert store.touch("s") is True
    assert store.update("s", {"n": 2}) is True
    clock.advance(0.001)
    assert store.get("s") is None
    assert store.stats().expired == 1
    store.check()


def test_the_purge_removes_sessions_at_their_absolute_end(clock: FakeClock) -> None:
    store = store_of(clock, absolute_ttl=50.0, ttl=1000.0)
    for i in range(10):
        store.set(f"s{i}", {"n": i})
    clock.advance(49)
    for i in range(10):
        store.touch(f"s{i}", ttl=1000.0)  # an extension the absolute end caps
    assert store.purge() == 0
    clock.advance(1)
    assert store.purge() == 10
    assert len(store) == 0
    store.check()


def test_the_table_caps_every_expiry_it_is_given() -> None:
    t = table(absolute_ttl=10.0)
    t.write("a", b"x", NOW + 100, None, NOW, only_over_live=False)
    assert t.time_left("a", NOW) == 10.0
    t.write("a", b"y", NOW + 100, None, NOW + 5, only_over_live=False)
    assert t.time_left("a", NOW + 5) == 5.0
    assert t.touch("a", NOW + 100, NOW + 6) == (True, False)  # capped: the same expiry
    assert t.renew("a", NOW + 100, NOW + 6) == b"y"
    assert t.time_left("a", NOW + 6) == 4.0
    assert t.rename("a", "b", b"z", NOW + 100, None, NOW + 7, reset_lifetime=False)
    assert t.time_left("b", NOW + 7) == 3.0
    assert t.rename("b", "c", b"z", NOW + 100, None, NOW + 8, reset_lifetime=True)
    assert t.time_left("c", NOW + 8) == 10.0  # a sign-in: a new absolute lifetime
    t.check()


# ---- last seen ----------------------------------------------------------------------------


def test_last_seen_is_the_last_use(clock: FakeClock) -> None:
    store = store_of(clock)
    store.set("s", {"n": 1})

    def seen() -> float:
        info = store.session_info("s")
        assert info is not None
        return (info.last_seen - info.created).total_seconds()

    assert seen() == 0
    for use, then in [
        (lambda: store.get("s"), 5),
        (lambda: store.load("s"), 10),
        (lambda: store.touch("s"), 15),
        (lambda: store.update("s", {"n": 2}), 20),
        (lambda: store.replace("s", {"n": 3}), 25),
    ]:
        clock.advance(5)
        use()
        assert seen() == pytest.approx(then, abs=1e-3)
    clock.advance(5)
    store.session_info("s")  # neither a use nor a change
    store.time_left("s")
    assert "s" in store
    assert seen() == pytest.approx(25, abs=1e-3)


# ---- renewal --------------------------------------------------------------------------


def test_load_renews_only_once_the_id_is_older_than_renew_every(clock: FakeClock) -> None:
    store = store_of(clock, renew_every=10.0, renew_grace=5.0, ttl=100.0)
    store.set("s", {"n": 1})
    clock.advance(10)
    assert store.load("s") == Loaded("s", {"n": 1}, None)  # not more than 10 s yet
    clock.advance(0.5)
    left = store.time_left("s")
    renewed = store.load("s")
    assert renewed is not None
    assert renewed.sid != "s"
    assert len(renewed.sid) == 43  # lembro.ids.new_session_id()
    assert store.time_left(renewed.sid) == left  # a read changes no lifetime
    assert store.stats().regenerates == 1
    store.check()


def test_the_grace_ends_exactly_after_renew_grace(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(clock, renew_every=10.0, renew_grace=5.0)
    store.set("s", {"n": 1})
    clock.advance(11)
    loaded = store.load("s")
    assert loaded is not None
    new = loaded.sid
    clock.advance(4.999)
    assert store.get("s") == {"n": 1}
    assert store.time_left("s") == store.time_left(new)
    assert "s" in store
    clock.advance(0.001)
    assert "s" not in store  # looking changes nothing
    assert store.get(new) == {"n": 1}
    caplog.clear()
    assert store.get("s") is None
    assert store.get(new) is None
    assert store.get("s") is None  # the session is gone: one WARNING, not one per read
    assert len(warnings_of(caplog)) == 1
    assert "none" in warnings_of(caplog)[0]  # no owner
    store.check()


def test_a_logout_with_a_stolen_id_ends_the_session_and_is_not_a_logout_of_it(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(clock, owner_key=KEY)
    store.set("old", {KEY: "ana"})
    assert store.rename("old", "new", {KEY: "ana"}, grace=2.0, reset_lifetime=False)
    clock.advance(2)
    caplog.clear()
    assert store.destroy("old") is False
    assert store.get("new") is None
    assert len(warnings_of(caplog)) == 1
    assert "'ana'" in warnings_of(caplog)[0]
    assert "old" not in warnings_of(caplog)[0]


def test_ids_renewed_twice_lead_to_the_session_and_the_oldest_ends_first(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(clock)
    store.set("a", {"n": 1})
    assert store.rename("a", "b", {"n": 1}, grace=5.0, reset_lifetime=False)
    clock.advance(1)
    assert store.rename("b", "c", {"n": 2}, grace=5.0, reset_lifetime=False)
    loaded = store.load("a")
    assert loaded is not None
    assert loaded.sid == "c"
    assert loaded.data == {"n": 2}
    clock.advance(4)  # a's grace is over, b's is not
    assert store.get("b") == {"n": 2}
    assert store.get("a") is None  # stolen
    assert store.get("c") is None
    assert store.get("b") is None
    assert len(warnings_of(caplog)) == 1
    store.check()


def test_a_sign_in_forgets_the_ids_the_session_had(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(clock)
    store.set("a", {"n": 1})
    assert store.rename("a", "b", {"n": 1}, grace=100.0, reset_lifetime=False)
    assert store.rename("b", "c", {"user": "ana"})  # a sign-in: reset_lifetime=True
    assert store.get("a") is None  # an id of the visitor before the sign-in leads nowhere
    assert store.get("b") is None
    clock.advance(200)
    assert store.get("a") is None
    assert store.get("c") == {"user": "ana"}
    assert warnings_of(caplog) == []
    store.check()


# ---- the markers: their cost and their end ---------------------------------------------------


def test_a_marker_is_counted_and_leaves_with_its_session() -> None:
    t = table()
    t.write("a" * 43, b"x", NOW + 100, None, NOW, only_over_live=False)
    before = t.budget.size
    assert t.rename(
        "a" * 43, "b" * 43, b"x", NOW + 100, None, NOW + 1, grace=5.0, reset_lifetime=False
    )
    marker = MARKER_OVERHEAD + sys.getsizeof("a" * 43)
    # its old record stays counted until the index drops it; renewed is a float of its own
    assert t.budget.size == before + marker + RECORD_OVERHEAD + RENEWED_OVERHEAD
    assert list(t.markers) == ["a" * 43]
    t.check()
    assert t.destroy("b" * 43, NOW + 2)
    assert t.markers == {}
    assert t.budget.size == t.expiry.stale * RECORD_OVERHEAD
    t.check()


@pytest.mark.parametrize("how", ["purge", "expiry on access", "eviction", "clear"])
def test_markers_go_whichever_way_their_session_ends(how: str) -> None:
    t = table()
    for i in range(20):
        t.write(f"s{i}", b"x", NOW + 10, None, NOW, only_over_live=False)
        assert t.rename(
            f"s{i}", f"r{i}", b"x", NOW + 10, None, NOW, grace=1.0, reset_lifetime=False
        )
    assert len(t.markers) == 20
    if how == "purge":
        t.purge(NOW + 10, 1000)
    elif how == "expiry on access":
        for i in range(20):
            assert t.find(f"s{i}", NOW + 10) is None
    elif how == "eviction":
        t.budget.max_size = 1000  # room for about one session and its marker
        assert t.prune_small(keep=None) >= 19
    else:
        t.take_apart(7)
    assert len(t.markers) == len(t.sessions) <= 1  # one marker left with each session kept
    assert t.thefts == []  # an ended session's old ids are no theft
    if how != "clear":
        t.check()


def test_a_marker_of_an_id_reused_by_a_rename_is_dropped_alone() -> None:
    t = table()
    t.write("a", b"x", NOW + 10, None, NOW, only_over_live=False)
    t.write("other", b"y", NOW + 10, None, NOW, only_over_live=False)
    assert t.rename("a", "b", b"x", NOW + 10, None, NOW, grace=5.0, reset_lifetime=False)
    assert t.rename("b", "c", b"x", NOW + 10, None, NOW, grace=5.0, reset_lifetime=False)
    assert t.rename("other", "a", b"y", NOW + 10, None, NOW)  # the id "a", free again
    assert t.read("a", NOW) == b"y"
    assert sorted(t.markers) == ["b"]
    assert t.read("b", NOW) == b"x"
    t.check()


def test_a_rename_named_by_an_id_in_its_grace_to_the_id_the_session_has_keeps_it() -> None:
    t = table()
    t.write("a", b"x", NOW + 10, None, NOW, only_over_live=False)
    assert t.rename("a", "b", b"x", NOW + 10, None, NOW, grace=5.0, reset_lifetime=False)
    assert t.rename("a", "b", b"y", NOW + 10, None, NOW + 1, grace=5.0)
    assert t.read("b", NOW + 1) == b"y"
    assert t.read("a", NOW + 1) is None  # the sign-in forgot it
    assert t.markers == {}
    t.check()


def test_the_cap_holds_with_devices_and_renewals_in_their_grace() -> None:
    """Every session records a device (a long user agent); sessions come back and are
    renewed, leaving markers in their grace: what they all cost is counted."""
    clock = FakeClock()
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 " * 3

    def step(store: MemoryStore, i: int, rng: random.Random) -> None:
        clock.advance(0.01)
        fresh = agent[:-1] + agent[-1]  # each request brings its header as a new str
        store.set(sid_of(i), SESSION, device=Device(f"198.51.{i % 250}.0", fresh))
        for _ in range(3):
            store.load(sid_of(rng.randrange(max(0, i - 2000), i + 1)))

    held_between(
        0.6, 1.0, step, 8000, clock=clock, renew_every=1.0, renew_grace=60.0, owner_key=KEY
    )


def test_a_device_is_counted() -> None:
    device = Device("198.51.100.7", "x" * 300)
    plain, recorded = MemoryStore("1M", None), MemoryStore("1M", None)
    plain.set("s", SESSION)
    recorded.set("s", SESSION, device=device)
    assert recorded.size - plain.size == device_cost(device)
    assert device_cost(device) > 300
    assert recorded.stats().size == recorded.size
    recorded.check()


# ---- sessions per user ----------------------------------------------------------------


def test_max_sessions_per_user_ends_expired_sessions_before_live_ones(clock: FakeClock) -> None:
    store = store_of(clock, owner_key=KEY, max_sessions_per_user=2)
    store.set("short", {KEY: "ana"}, ttl=5)
    clock.advance(1)
    store.set("long", {KEY: "ana"}, ttl=100)
    clock.advance(10)  # "short" expired, not purged
    store.set("new", {KEY: "ana"})
    assert sorted(store.sessions_of("ana")) == ["long", "new"]
    stats = store.stats()
    assert (stats.expired, stats.logouts) == (1, 0)
    clock.advance(1)
    store.set("newer", {KEY: "ana"})
    assert sorted(store.sessions_of("ana")) == ["new", "newer"]
    assert store.stats().logouts == 1  # "long", the oldest sign-in
    store.check()


def test_sessions_of_with_info_keeps_an_int_owner_an_int(clock: FakeClock) -> None:
    store = store_of(clock, owner_key=KEY, absolute_ttl=3600.0)
    store.set("a", {KEY: 42}, device=Device("198.51.100.7", "phone"))
    clock.advance(60)
    store.set("b", {KEY: "42"})
    infos = store.sessions_of(42, info=True)
    assert [(i.id, i.owner, i.user_agent) for i in infos] == [
        ("b", "42", None),
        ("a", 42, "phone"),
    ]
    assert (infos[0].created - infos[1].created).total_seconds() == pytest.approx(60, abs=1e-3)
    with pytest.raises(InvalidOption):
        store.sessions_of(42, info="yes")  # type: ignore[call-overload]


# ---- bad values change nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    "keywords",
    [{"reset_lifetime": 1}, {"grace": -1.0}, {"device": "phone"}, {"ttl": 0}],
)
def test_a_refused_rename_changes_nothing(clock: FakeClock, keywords: dict[str, Any]) -> None:
    store = store_of(clock, owner_key=KEY)
    store.set("old", {KEY: "ana"})
    size, stats = store.size, store.stats()
    with pytest.raises(InvalidOption):
        store.rename("old", "new", {KEY: "ana"}, **keywords)
    assert (store.size, store.stats()) == (size, stats)
    assert store.sessions_of("ana") == ["old"]


# ---- the async faces ------------------------------------------------------------------


class AppStore:
    """A store of the app's written before issue 29: no device, no rename keywords."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self.data[sid] = data

    def rename(self, old: str, new: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        return self.data.pop(old, None) is not None and self.data.setdefault(new, data) is data


@pytest.mark.parametrize("face", ["inline", "threaded"])
def test_the_async_faces_pass_every_new_argument_on(clock: FakeClock, face: str) -> None:
    store = store_of(clock, owner_key=KEY, renew_every=10.0)
    front: Any = as_async(store) if face == "inline" else _ThreadAsync(store)

    async def scenario() -> None:
        await front.set("a", {KEY: "ana"}, device=Device("::1", "phone"))
        clock.advance(11)
        loaded = await front.load("a")
        assert loaded is not None
        assert loaded.sid != "a"
        info = await front.session_info(loaded.sid)
        assert info is not None
        assert info.user_agent == "phone"
        assert [i.id for i in await front.sessions_of("ana", info=True)] == [loaded.sid]
        assert await front.sessions_of("ana") == [loaded.sid]
        assert await front.rename(
            loaded.sid, "b", {KEY: "ana"}, reset_lifetime=False, grace=3.0, device=Device()
        )
        assert await front.get(loaded.sid) == {KEY: "ana"}  # in its grace
        assert await front.destroy_session_of("bob", "b") is False
        assert await front.destroy_session_of("ana", "b") is True
        await front.set("c", {"n": 1})
        clock.advance(11)
        renewed = await front.load("c", new_id=lambda: "ns:c2")
        assert renewed is not None
        assert renewed.sid == "ns:c2"

    asyncio.run(scenario())
    store.check()


@pytest.mark.parametrize("face", ["inline", "threaded"])
def test_a_store_of_the_apps_still_works_through_the_async_faces(face: str) -> None:
    app = AppStore()
    front: Any = _ThreadAsync(app) if face == "threaded" else as_async(MemoryStore("1M", None))
    if face == "inline":  # an inline face over a store with the old signatures
        from lembro.protocol import _InlineAsync

        front = _InlineAsync(app)  # type: ignore[arg-type]

    async def scenario() -> None:
        await front.set("a", {"n": 1})
        assert await front.rename("a", "b", {"n": 2})
        with pytest.raises(InvalidOption):
            await front.load("b")  # a store without load: the integration uses get

    asyncio.run(scenario())
    assert app.data == {"b": {"n": 2}}


# ---- every path at once -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_any_mix_of_calls_keeps_every_structure_and_the_size_exact(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Random calls over a few ids and owners on a small store (so it prunes), with
    renewals, graces, stolen ids, devices, an absolute end and a cap per owner: after
    each, everything recounted from scratch agrees with what the store keeps."""
    rng = random.Random(seed)
    clock = FakeClock()
    store = MemoryStore(
        12_000,
        None,
        clock=clock,
        owner_key=KEY,
        absolute_ttl=300.0,
        renew_every=20.0,
        renew_grace=5.0,
        max_sessions_per_user=3,
    )
    ids = [f"id{n}" for n in range(40)]
    owners = [None, "ana", "bob", 7]

    def data() -> dict[str, Any]:
        owner = rng.choice(owners)
        payload: dict[str, Any] = {"pad": "p" * rng.randrange(800)}
        if owner is not None:
            payload[KEY] = owner
        return payload

    def device() -> Device | None:
        return rng.choice([None, Device("198.51.100.7", "ua" * rng.randrange(300))])

    calls = [
        lambda: store.set(rng.choice(ids), data(), rng.choice([None, 30.0]), device=device()),
        lambda: store.get(rng.choice(ids)),
        lambda: store.load(rng.choice(ids)),
        lambda: store.touch(rng.choice(ids), rng.choice([5.0, 500.0])),
        lambda: store.update(rng.choice(ids), {"n": rng.random()}),
        lambda: store.replace(rng.choice(ids), data()),
        lambda: store.destroy(rng.choice(ids)),
        lambda: store.rename(
            rng.choice(ids),
            rng.choice(ids),
            data(),
            reset_lifetime=rng.random() < 0.5,
            grace=rng.choice([0.0, 5.0]),
            device=device(),
        ),
        lambda: store.destroy_session_of(rng.choice(owners[1:]), rng.choice(ids)),
        lambda: store.sessions_of(rng.choice(owners[1:]), info=True),
        lambda: store.session_info(rng.choice(ids)),
        lambda: store.purge(),
        lambda: clock.advance(rng.choice([0.5, 3.0, 10.0])),
    ]
    with caplog.at_level(logging.ERROR, logger="lembro"):  # thefts and evictions: expected
        for _ in range(1500):
            with contextlib.suppress(InvalidOption):  # a rename from an id to itself
                rng.choice(calls)()
            store.check()
    stats = store.stats()
    ended = stats.expired + stats.evicted + stats.logouts + stats.regenerates
    assert stats.created - ended - stats.logouts_everywhere == stats.sessions
    assert stats.evicted > 0  # the store was kept under its cap along the way
