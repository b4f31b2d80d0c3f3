"""Flood: do bots that come back push out the users who come back?

At a 256 KiB cap, 200 users each make 5 requests to begin with, then one request every
round; between two rounds, 500 bots each make a session and come back 0, 1, 2, 5 or 10
times (the scenarios), each time after ten more bots came. A bot that comes back more
often than a user is a user to any order by use; the last column is lembro with
``owner_key``, the users signed in and the bots not, where every anonymous session goes
before any signed-in one. Every round one user leaves
for good and a new one arrives (5 requests to begin with, then one every round), so
departed users must age out and new ones must hold their place. A user loses their
session when a request finds it gone.

Each store holds what lembro's MemoryStore holds at 256 KiB: lembro by bytes, the others
by count (as many sessions as lembro fits). A request is a get, and a new session on a
miss; for cachelib a get and a set (its order is by expiry, so a rolling session is
rewritten on every request, as Flask-Session does by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachelib import SimpleCache
from cachetools import LRUCache, TLRUCache
from harness import Config, Row, Section, Table, Target, progress

from lembro import MemoryStore
from lembro.ids import new_session_id

CAP = 256 * 1024
USERS = 200
BOTS = 500
FIRST_REQUESTS = 5
BOT_DELAY = 10  # a bot comes back after this many more bots came
SESSION = {"user": 4242, "csrf": "c" * 43, "cart": [101, 202, 303], "theme": "dark"}
BOT_SESSION = {"seen": 4242, "csrf": "c" * 43, "cart": [101, 202, 303], "theme": "dark"}
SCENARIOS = {
    "(a) bots never come back": 0,
    "(b) come back once": 1,
    "(c) come back twice": 2,
    "(d) come back 5 times": 5,
    "(e) come back 10 times": 10,
}
SIGNED_IN = "lembro, users signed in"
STORES = ("lembro MemoryStore", "cachelib SimpleCache", "cachetools TLRUCache", "LRU", SIGNED_IN)


class FakeClock:
    """Seconds, moved by the scenario: one second per round."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    """One store seen as a web app sees it: a request either finds its session or not."""

    request: Callable[[str], bool]  # True when the session was there
    create: Callable[[str], None]  # a bot's session
    sign_in: Callable[[str], None]  # a user's session


def lembro_capacity() -> int:
    """How many of the scenario's sessions lembro's MemoryStore holds at ``CAP``."""
    with MemoryStore(CAP, None) as probe:
        probe.set(new_session_id(), SESSION)
        return CAP // probe.size


def make_site(name: str, clock: FakeClock) -> Site:
    ttl = 86400.0
    count = lembro_capacity()
    if name in ("lembro MemoryStore", SIGNED_IN):
        owner_key = "user" if name == SIGNED_IN else None
        store = MemoryStore(CAP, None, ttl=ttl, clock=clock, owner_key=owner_key)
        return Site(
            lambda sid: store.get(sid) is not None,
            lambda sid: store.set(sid, BOT_SESSION),
            lambda sid: store.set(sid, SESSION),
        )
    if name == "cachelib SimpleCache":
        cache = SimpleCache(threshold=count, default_timeout=int(ttl))

        def rolling(sid: str) -> bool:
            found = cache.get(sid) is not None
            if found:
                cache.set(sid, SESSION)
            return found

        return Site(
            rolling, lambda sid: cache.set(sid, BOT_SESSION), lambda sid: cache.set(sid, SESSION)
        )
    held: Any
    if name == "cachetools TLRUCache":
        held = TLRUCache(count, lambda _k, _v, now: now + ttl, timer=clock)
    else:
        held = LRUCache(count)
    return Site(
        lambda sid: held.get(sid) is not None,
        lambda sid: held.__setitem__(sid, BOT_SESSION),
        lambda sid: held.__setitem__(sid, SESSION),
    )


@dataclass
class Outcome:
    users_lost: int  # users who found their session gone at least once
    losses: int  # requests of users that found their session gone
    bot_requests: int

    @property
    def bot_requests_per_loss(self) -> float | None:
        return self.bot_requests / self.losses if self.losses else None


def flood(site: Site, clock: FakeClock, returns: int, rounds: int) -> Outcome:
    """Play the scenario with bots that come back ``returns`` times."""
    lost: set[str] = set()
    losses = bot_requests = 0

    def arrive() -> str:
        user = new_session_id()
        site.sign_in(user)
        for _ in range(FIRST_REQUESTS - 1):
            site.request(user)
        return user

    users = [arrive() for _ in range(USERS)]
    names = {sid: f"user{i}" for i, sid in enumerate(users)}
    for round_ in range(rounds):
        clock.now += 1
        for i, sid in enumerate(users):
            if not site.request(sid):
                losses += 1
                lost.add(names[sid])
                site.sign_in(sid)  # a new session under the same name, as a login would
                users[i] = sid
        gone = round_ % USERS
        users[gone] = arrive()  # one leaves for good, one arrives
        names[users[gone]] = f"user{USERS + round_}"
        bots = [new_session_id() for _ in range(BOTS)]
        for j in range(BOTS + BOT_DELAY * returns):
            if j < BOTS:
                site.create(bots[j])
            for back in range(j - BOT_DELAY * returns, j, BOT_DELAY):
                if 0 <= back < BOTS:
                    site.request(bots[back])
        bot_requests += BOTS * (1 + returns)
    return Outcome(len(lost), losses, bot_requests)


def run(config: Config) -> Section:
    """Play each scenario against each store; tabulate users lost and bots' cost."""
    logging.getLogger("lembro").setLevel(logging.ERROR)  # its one "too small" warning
    rounds = 5 if config.quick else 100
    lost = Table(f"Users who lost their session over {rounds} rounds", list(STORES), STORES[0])
    cost = Table("Bot requests per user session lost", list(STORES), STORES[0])
    results: dict[tuple[str, str], Outcome] = {}
    for scenario, returns in SCENARIOS.items():
        progress(f"flood: {scenario}")
        for name in STORES:
            clock = FakeClock()
            results[scenario, name] = flood(make_site(name, clock), clock, returns, rounds)
        lost.rows.append(
            Row(scenario, "users", {n: float(results[scenario, n].users_lost) for n in STORES})
        )
        cost.rows.append(
            Row(
                scenario,
                "requests",
                {n: results[scenario, n].bot_requests_per_loss for n in STORES},
                notes={n: "none lost" for n in STORES if results[scenario, n].losses == 0},
            )
        )
    targets = [
        Target(
            f"lembro: 0 users lost in {scenario}",
            results[scenario, STORES[0]].users_lost == 0,
            f"{results[scenario, STORES[0]].users_lost} lost",
        )
        for scenario, returns in SCENARIOS.items()
        if returns <= 2  # bots that come back more often than users are users to a score
    ] + [
        Target(
            f"lembro with users signed in: 0 users lost in {scenario}",
            results[scenario, SIGNED_IN].users_lost == 0,
            f"{results[scenario, SIGNED_IN].users_lost} lost",
        )
        for scenario in SCENARIOS
    ]
    notes = [
        f"{USERS} users ({FIRST_REQUESTS} requests each to begin with, then one a round; one "
        f"leaves and one arrives every round), {BOTS} bots between rounds; each store holds "
        f"{lembro_capacity()} sessions of {len(SESSION)} keys (lembro: {CAP // 1024} KiB).",
    ]
    return Section("Flood: bots against returning users", [lost, cost], targets, notes)
