"""README's "Lifetimes" and "Sessions per user and devices": each claim, tested.

Each test names the words of README it holds to (``claim``), so a claim reworded or
dropped there fails here until its test follows. README's code blocks run as they are
in test_docs_examples.py; these tests show, on a fake clock, what the blocks cannot.
"""

from __future__ import annotations

import logging
import re

import pytest

from lembro import Device, MemoryStore
from tests.conftest import FakeClock
from tests.servers import ROOT

README = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))


def claim(words: str) -> None:
    assert words in README, f"README no longer says {words!r}"


def test_absolute_ttl_ends_a_session_however_it_is_used(clock: FakeClock) -> None:
    claim("`absolute_ttl` ends a session at its creation plus that many seconds, whatever its use.")
    with MemoryStore("4M", None, clock=clock, ttl=60, absolute_ttl=600) as store:
        store.set("sid", {"user": "ada"})
        for _ in range(59):
            clock.advance(10)
            assert store.get("sid") is not None
            store.touch("sid")
            store.update("sid", {"n": 1})
            store.set("sid", {"user": "ada"})
        clock.advance(10)
        assert store.get("sid") is None  # 600 s after its creation


def test_load_renews_and_the_old_id_answers_for_the_grace_then_is_a_stolen_cookie(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    claim("With `renew_every`, `store.load(sid)` moves an older id to a new one (`.sid`)")
    claim("the old id answers for `renew_grace` seconds, then counts as a stolen cookie")
    claim("(the session ends).")
    with MemoryStore("4M", None, clock=clock, renew_every=900, renew_grace=10) as store:
        store.set("sid", {"user": "ada"})
        clock.advance(901)
        loaded = store.load("sid")
        assert loaded is not None
        assert loaded.sid != "sid"
        clock.advance(9)
        assert store.get("sid") == {"user": "ada"}
        clock.advance(1)
        with caplog.at_level(logging.WARNING, logger="lembro"):
            assert store.get("sid") is None
        assert store.get(loaded.sid) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_reset_lifetime_false_keeps_the_absolute_end_and_true_starts_a_new_one(
    clock: FakeClock,
) -> None:
    claim("`rename(old, new, data, reset_lifetime=False)` keeps the absolute end (a")
    claim("privilege change); `True` starts a new one (a sign-in).")
    with MemoryStore("4M", None, clock=clock, absolute_ttl=3600) as store:
        store.set("a", {"n": 1})
        store.set("b", {"n": 1})
        clock.advance(600)
        assert store.rename("a", "a2", {"n": 2}, reset_lifetime=False)
        assert store.rename("b", "b2", {"n": 2}, reset_lifetime=True)
        assert store.time_left("a2") == pytest.approx(3000)
        assert store.time_left("b2") == pytest.approx(3600)


def test_sessions_of_with_info_describes_each_session_most_recently_used_first(
    clock: FakeClock,
) -> None:
    claim("`sessions_of(user, info=True)` describes each session (device, created, last seen,")
    claim("expiry, in UTC), most recently used first")
    with MemoryStore("4M", None, clock=clock, owner_key="user") as store:
        store.set("phone", {"user": "ada"}, device=Device("203.0.113.0", "Safari"))
        clock.advance(60)
        store.set("laptop", {"user": "ada"}, device=Device("198.51.100.0", "Firefox"))
        clock.advance(60)
        store.get("phone")
        phone, laptop = store.sessions_of("ada", info=True)
        assert (phone.id, phone.ip, phone.user_agent) == ("phone", "203.0.113.0", "Safari")
        assert laptop.id == "laptop"
        assert (phone.last_seen - phone.created).total_seconds() == pytest.approx(120, abs=1e-3)
        assert (laptop.created - phone.created).total_seconds() == pytest.approx(60, abs=1e-3)
        for moment in (phone.created, phone.last_seen, phone.expires):
            assert moment.utcoffset() is not None
            assert moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_destroy_session_of_ends_a_session_only_if_it_is_that_users() -> None:
    claim("`destroy_session_of(user, sid)` ends one only if it is that user's")
    claim("list a user's sessions and devices; sign out one, or the others.")
    with MemoryStore("4M", None, owner_key="user") as store:
        store.set("ada-phone", {"user": "ada"})
        store.set("ada-laptop", {"user": "ada"})
        store.set("ada-tablet", {"user": "ada"})
        store.set("bob-phone", {"user": "bob"})
        assert store.destroy_session_of("ada", "bob-phone") is False
        assert store.destroy_session_of("ada", "ada-phone") is True
        assert store.destroy_sessions_of("ada", keep="ada-laptop") == 1  # the others
        assert store.sessions_of("ada") == ["ada-laptop"]
        assert store.sessions_of("bob") == ["bob-phone"]


def test_max_sessions_per_user_ends_the_oldest_sign_in_beyond_n(clock: FakeClock) -> None:
    claim("`max_sessions_per_user=N` ends sign-ins beyond N, oldest first.")
    with MemoryStore("4M", None, clock=clock, owner_key="user", max_sessions_per_user=3) as store:
        for n in range(4):
            store.set(f"sign-in-{n}", {"user": "ada"})
            clock.advance(1)
            store.get("sign-in-0")  # used the most lately, but signed in first
        assert sorted(store.sessions_of("ada")) == ["sign-in-1", "sign-in-2", "sign-in-3"]
