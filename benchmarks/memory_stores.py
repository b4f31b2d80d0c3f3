"""In-memory stores side by side: lembro's MemoryStore, a floor, and the stores people use.

The stores, all holding the same sessions (43-character ids): flat ones (about 250 bytes
serialized) for every row, and realistic ones (a login with a list of roles, nested dicts
of cookie settings and of preferences; about 420 bytes) for the rows that say so.

- ``lembro MemoryStore``: the store under test, ``interval=None`` (no purge thread).
- ``floor``: the least a correct thread-safe store must do, with none of lembro's code:
  one lock, a dict of sid -> (bytes, expiry), the dict encoded by bare msgspec
  (``msgspec.msgpack.encode``/``decode``, no exactness check), the clock read once per
  operation, expiry checked on get. Its purge scans every session: it has no expiry
  index. At the cap it evicts the oldest insertion.
- ``cachetools TLRUCache``: bounded in bytes (``getsizeof=len`` of the serialized
  session), ``ttu`` from a ttl, behind a ``threading.Lock`` as cachetools asks for threads.
- ``Django LocMemCache``: pickles the dict itself; bounded by ``MAX_ENTRIES``.
- ``cachelib SimpleCache``: Flask-Session's memory backend; pickles itself; bounded by
  ``threshold``.
- ``starsessions InMemoryStore``: async only; measured in a second table, next to floor
  and lembro driven through the same ``await`` (``lembro.as_async``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import logging
import pickle
import random
import secrets
import statistics
import threading
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import cachetools
import msgspec
from cachelib import SimpleCache
from django.conf import settings
from harness import Case, Config, Row, Section, Table, Target, measure, progress, ticks
from starsessions import InMemoryStore, JsonSerializer

from lembro import MemoryStore, SessionStore, as_async
from lembro.ids import new_session_id
from lembro.memory.budget import RECORD_OVERHEAD, session_cost
from lembro.serializers import MsgpackSerializer

if not settings.configured:
    settings.configure(USE_TZ=True)

from django.core.cache.backends.locmem import LocMemCache  # needs the settings above

__all__ = ["STORES", "Floor", "LockedTLRU", "realistic_session_data", "run", "session_data"]

TTL = 86_400  # seconds: a day, for every store
BIG = 1 << 40  # a bound no run reaches: "below the cap"

LEMBRO = "lembro MemoryStore"
LEMBRO_BELOW = "lembro MemoryStore, below its cap"  # timed beside the churn row
FLOOR = "floor"
CACHETOOLS = "cachetools TLRUCache"
DJANGO = "Django LocMemCache"
CACHELIB = "cachelib SimpleCache"
STARSESSIONS = "starsessions InMemoryStore"
LEMBRO_AWAIT = "lembro (as_async)"
FLOOR_AWAIT = "floor (await)"
SYNC = (LEMBRO, FLOOR, CACHETOOLS, DJANGO, CACHELIB)
ASYNC = (LEMBRO_AWAIT, FLOOR_AWAIT, STARSESSIONS)
STORES = (*SYNC, STARSESSIONS)


def session_data(i: int) -> dict[str, Any]:
    """A realistic session: 254 bytes as msgpack, the same length for every ``i``."""
    n = 1_000_000 + i % 9_000_000
    return {
        "user_id": n,
        "username": f"user{n}",
        "name": "Ada Lovelace",
        "email": f"user{n}@example.org",
        "roles": ["member", "editor", "billing"],
        "csrf_token": secrets.token_urlsafe(32),
        "created_at": 1732790000.25 + i,
        "last_seen": 1732790400.75 + i,
        "is_staff": False,
        "mfa_verified": True,
        "locale": "en-GB",
        "cart_items": 3,
    }


def realistic_session_data(i: int) -> dict[str, Any]:
    """A session shaped like a real login's: a list of roles, a nested dict of cookie
    settings and one of preferences (itself nesting one); the same length for every ``i``."""
    n = 1_000_000 + i % 9_000_000
    return {
        "_user_id": str(n),
        "_fresh": True,
        "user": {
            "id": n,
            "username": f"user{n}",
            "email": f"user{n}@example.org",
            "roles": ["member", "editor", "billing"],
            "mfa_verified": True,
        },
        "csrf_token": secrets.token_urlsafe(32),
        "cookie": {
            "secure": True,
            "httponly": True,
            "samesite": "Lax",
            "path": "/",
            "max_age": 1_209_600,
            "domain": None,
        },
        "preferences": {
            "theme": "dark",
            "language": "en-GB",
            "timezone": "Europe/London",
            "page_size": 50,
            "notifications": {"email": True, "sms": False},
        },
        "created_at": 1732790000.25 + i,
        "last_seen": 1732790400.75 + i,
        "cart_items": 3,
    }


VARIANTS = [session_data(i) for i in range(64)]
BLOB = len(msgspec.msgpack.encode(VARIANTS[0]))
REALISTIC = [realistic_session_data(i) for i in range(64)]
REALISTIC_BLOB = len(msgspec.msgpack.encode(REALISTIC[0]))


def _pairs(
    sids: list[str], variants: list[dict[str, Any]] = VARIANTS
) -> list[tuple[str, dict[str, Any]]]:
    return list(zip(sids, itertools.cycle(variants), strict=False))


def _ids(n: int) -> list[str]:
    return [new_session_id() for _ in range(n)]


class FakeClock:
    """Seconds that move only when told, for the purge row."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Floor:
    """The floor: one lock, a dict sid -> (bytes, expiry in clock seconds), and none of
    lembro's code: ``encode``/``decode`` are bare msgspec msgpack unless given.

    ``max_entries`` bounds the count (the oldest insertion goes first); ``purge`` scans
    every session, as a store without an expiry index must.
    """

    blocking = False  # lets lembro.as_async call it inline, as it does MemoryStore

    def __init__(
        self,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int | None = None,
        encode: Callable[[Any], bytes] = msgspec.msgpack.encode,
        decode: Callable[[bytes], Any] = msgspec.msgpack.decode,
    ) -> None:
        self.ttl = float(ttl)
        self._clock = clock
        self._max = max_entries or 0
        self._lock = threading.Lock()
        # Bounded, it keeps insertion order where evicting the oldest is O(1); a dict's
        # next(iter()) walks the holes its deletions leave at the front.
        self._fifo: OrderedDict[str, tuple[bytes, float]] | None = (
            None if max_entries is None else OrderedDict()
        )
        self._data: dict[str, tuple[bytes, float]] = {} if self._fifo is None else self._fifo
        self._encode = encode
        self._decode = decode

    # The lock is held in with blocks, as lembro holds its own: acquire() then try is not
    # safe when a signal handler raises between the two (lembro's SIGTERM exit does).

    def get(self, sid: str) -> dict[str, Any] | None:
        now = self._clock()
        with self._lock:
            item = self._data.get(sid)
            if item is None:
                return None
            if item[1] <= now:
                del self._data[sid]
                return None
        result: dict[str, Any] = self._decode(item[0])
        return result

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        blob = self._encode(data)
        now = self._clock()
        with self._lock:
            self._data[sid] = (blob, now + (self.ttl if ttl is None else ttl))
            if self._fifo is not None and len(self._fifo) > self._max:
                self._fifo.popitem(last=False)

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        now = self._clock()
        with self._lock:
            item = self._data.get(sid)
            if item is None:
                return False
            if item[1] <= now:
                del self._data[sid]
                return False
            self._data[sid] = (item[0], now + (self.ttl if ttl is None else ttl))
            return True

    def update(self, sid: str, changes: dict[str, Any], ttl: float | None = None) -> bool:
        """Set ``changes`` in live session ``sid`` in one hold of the lock (decoded, changed,
        encoded again) and give it a new lifetime; whether it was live."""
        now = self._clock()
        with self._lock:
            item = self._data.get(sid)
            if item is None or item[1] <= now:
                return False
            data = self._decode(item[0])
            data.update(changes)
            self._data[sid] = (self._encode(data), now + (self.ttl if ttl is None else ttl))
            return True

    def destroy(self, sid: str) -> bool:
        """Remove ``sid``; whether a live session was removed, as the protocol asks (a
        regenerate must know whether a logout won the race)."""
        now = self._clock()
        with self._lock:
            item = self._data.pop(sid, None)
        return item is not None and item[1] > now

    def purge(self) -> int:
        now = self._clock()
        with self._lock:
            expired = [sid for sid, (_, expires) in self._data.items() if expires <= now]
            for sid in expired:
                del self._data[sid]
        return len(expired)

    def __len__(self) -> int:
        return len(self._data)


class LockedTLRU:
    """cachetools.TLRUCache of msgpack bytes, bounded in bytes, behind one lock.

    ``ttu`` reads ``self._ttl``, set under the lock before each insert, so a ``set`` may
    give its own lifetime (the purge row needs short-lived sessions).
    """

    def __init__(
        self,
        maxsize: int,
        ttl: float = TTL,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = float(ttl)
        self._ttl = self.ttl
        self._lock = threading.Lock()
        self._cache: cachetools.TLRUCache[str, bytes] = cachetools.TLRUCache(
            maxsize, ttu=self._ttu, timer=timer, getsizeof=len
        )
        serializer = MsgpackSerializer()  # lembro's: "the same serializer"
        self._encode = serializer.dumps
        self._decode = serializer.loads

    def _ttu(self, _key: str, _value: bytes, now: float) -> float:
        return now + self._ttl

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            blob = self._cache.get(sid)
        if blob is None:
            return None
        result: dict[str, Any] = self._decode(blob)
        return result

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        blob = self._encode(data)
        with self._lock:
            self._ttl = self.ttl if ttl is None else ttl
            self._cache[sid] = blob

    def destroy(self, sid: str) -> None:
        with self._lock:
            self._cache.pop(sid, None)

    def purge(self) -> int:
        with self._lock:
            return len(self._cache.expire())

    def __len__(self) -> int:
        return len(self._cache)


@dataclass
class Driver:
    """A sync store's operations, as bound methods called directly in the timed loops."""

    get: Callable[[str], object]
    set: Callable[[str, dict[str, Any]], object]
    set_ttl: Callable[[str, dict[str, Any], float], object]
    touch: Callable[[str], object] | None
    destroy: Callable[[str], object]
    purge: Callable[[], object] | None
    count: Callable[[], int]
    close: Callable[[], None] = lambda: None
    # What a request that changed one key writes back, in one step (a store without one
    # would read and write the whole session: ``None``).
    update: Callable[[str], object] | None = None


_django_names = itertools.count()


def build(
    name: str, capacity: int | None = None, clock: Callable[[], float] | None = None
) -> Driver:
    """A fresh sync store; ``capacity`` sessions at its bound, or (``None``) no bound reached.

    ``clock`` (seconds) is injected where the store takes one; Django and cachelib read
    ``time.time()`` themselves.
    """
    tick = clock or time.monotonic
    if name == LEMBRO:
        per_session = session_cost(new_session_id(), b"x" * BLOB) + RECORD_OVERHEAD
        store = MemoryStore(BIG if capacity is None else capacity * per_session, None, clock=tick)
        return Driver(
            store.get, store.set, store.set, store.touch, store.destroy, store.purge,
            lambda: len(store), store.close, lambda sid: store.update(sid, ONE_KEY),
        )  # fmt: skip
    if name == FLOOR:
        floor = Floor(clock=tick, max_entries=capacity)
        return Driver(
            floor.get, floor.set, floor.set, floor.touch, floor.destroy, floor.purge,
            floor.__len__, update=lambda sid: floor.update(sid, ONE_KEY),
        )  # fmt: skip
    if name == CACHETOOLS:
        tlru = LockedTLRU(BIG if capacity is None else capacity * BLOB, timer=tick)
        return Driver(tlru.get, tlru.set, tlru.set, None, tlru.destroy, tlru.purge, tlru.__len__)
    if name == DJANGO:
        # Instances of one name share their data: every build gets its own name.
        location = f"lembro-bench-{next(_django_names)}"
        params = {
            "TIMEOUT": TTL,
            "OPTIONS": {"MAX_ENTRIES": capacity or BIG, "CULL_FREQUENCY": 3},
        }
        django = LocMemCache(location, params)
        return Driver(
            django.get, django.set, django.set, django.touch, django.delete, None,
            lambda: len(django._cache), django.clear,
        )  # fmt: skip
    if name == CACHELIB:
        simple = SimpleCache(threshold=capacity or BIG, default_timeout=TTL)

        def set_ttl(sid: str, data: dict[str, Any], ttl: float) -> object:
            return simple.set(sid, data, timeout=max(1, int(ttl)))

        def purge() -> int:
            # What SimpleCache._prune runs first once over its threshold; ``now`` is 2 s
            # ahead because its expiries are whole seconds of time.time().
            with getattr(simple, "_lock", nullcontext()):  # older cachelib has no lock
                before = len(simple._cache)
                simple._remove_expired(time.time() + 2)
                return before - len(simple._cache)

        return Driver(
            simple.get, simple.set, set_ttl, None, simple.delete, purge,
            lambda: len(simple._cache), lambda: None,
        )  # fmt: skip
    raise ValueError(f"unknown store {name!r}")


def _freeze() -> None:
    """Move what exists now out of the collector's sight until ``gc.unfreeze()``.

    The stores' sessions live through every batch; without this, each collection between
    batches walks all of them (half a million in the purge row) and the run takes minutes
    longer, timing nothing.
    """
    gc.collect()
    gc.freeze()


# ---- sync cases --------------------------------------------------------------------------


def _loop_get(get: Callable[[str], object]) -> Callable[[list[str]], None]:
    def run(sids: list[str]) -> None:
        for sid in sids:
            get(sid)

    return run


def _loop_set(
    put: Callable[[str, dict[str, Any]], object],
) -> Callable[[list[tuple[str, dict[str, Any]]]], None]:
    def run(pairs: list[tuple[str, dict[str, Any]]]) -> None:
        for sid, data in pairs:
            put(sid, data)

    return run


def _cases(
    op: str,
    drivers: dict[str, Driver],
    held: list[str],
    variants: list[dict[str, Any]] = VARIANTS,
) -> dict[str, Case[Any]]:
    """Each store's case for ``op``; ``held`` are the ids every store holds (and keeps);
    sets write sessions of ``variants``."""
    cases: dict[str, Case[Any]] = {}
    for name, drv in drivers.items():
        if op == "get":
            cases[name] = Case(lambda n: _sample(held, n), _loop_get(drv.get))
        elif op == "set_new":
            cases[name] = Case(
                lambda n: _pairs(_ids(n), variants), _loop_set(drv.set), _undo(drv.destroy)
            )
        elif op == "set_cap":
            cases[name] = Case(lambda n: _pairs(_ids(n), variants), _loop_set(drv.set))
        elif op == "set_replace":
            cases[name] = Case(lambda n: _pairs(_sample(held, n), variants), _loop_set(drv.set))
        elif op == "update" and drv.update is not None:
            cases[name] = Case(lambda n: _sample(held, n), _loop_get(drv.update))
        elif op == "touch" and drv.touch is not None:
            cases[name] = Case(lambda n: _sample(held, n), _loop_get(drv.touch))
        elif op == "destroy":
            cases[name] = Case(_adder(drv.set), _loop_get(drv.destroy))
    return cases


_random = random.Random(20241128)


def _adder(put: Callable[[str, dict[str, Any]], object]) -> Callable[[int], list[str]]:
    """A ``prepare`` that stores ``n`` new sessions and returns their ids, shuffled."""

    def prepare(n: int) -> list[str]:
        sids = _ids(n)
        _loop_set(put)(_pairs(sids))
        _random.shuffle(sids)
        return sids

    return prepare


def _undo(destroy: Callable[[str], object]) -> Callable[[list[tuple[str, Any]]], None]:
    """A ``cleanup`` that destroys the sessions a batch of sets made."""

    def cleanup(pairs: list[tuple[str, Any]]) -> None:
        for sid, _ in pairs:
            destroy(sid)

    return cleanup


def _sample(held: list[str], n: int) -> list[str]:
    """``n`` of the held ids, shuffled: requests do not arrive in insertion order."""
    if n <= len(held):
        return _random.sample(held, n)
    return [_random.choice(held) for _ in range(n)]


# ---- async cases: one event loop, each operation awaited -----------------------------------


def _async_case(
    loop: asyncio.AbstractEventLoop,
    prepare: Callable[[int], Any],
    body: Callable[[Any], Coroutine[Any, Any, int]],
    cleanup: Callable[[Any], None] = lambda _x: None,
) -> Case[Any]:
    """A case whose batch is one coroutine that times itself (the loop's start-up is left out)."""
    return Case(prepare, lambda data: loop.run_until_complete(body(data)), cleanup)


def _await_each(
    op: Callable[..., Awaitable[object]],
) -> Callable[[list[Any]], Coroutine[Any, Any, int]]:
    async def body(items: list[Any]) -> int:
        start = ticks()
        if items and isinstance(items[0], tuple):
            for sid, data in items:
                await op(sid, data)
        else:
            for sid in items:
                await op(sid)
        return ticks() - start

    return body


class _Starsessions:
    """starsessions' InMemoryStore, driven as its middleware drives it: its JSON serializer
    turns the dict into bytes before ``write`` and back after ``read``."""

    def __init__(self) -> None:
        self.store = InMemoryStore()
        self.serializer = JsonSerializer()

    async def fill(self, pairs: list[tuple[str, dict[str, Any]]]) -> None:
        for sid, data in pairs:
            await self.store.write(sid, self.serializer.serialize(data), lifetime=TTL, ttl=TTL)

    def put(self, sid: str, data: dict[str, Any]) -> None:
        """What ``write`` does, without a coroutine: for setting up a batch, not timed."""
        self.store.data[sid] = self.serializer.serialize(data)

    def drop(self, sid: str) -> None:
        """What ``remove`` does, without a coroutine: for cleaning up after a batch."""
        self.store.data.pop(sid, None)

    async def get_batch(self, sids: list[str]) -> int:
        read, loads = self.store.read, self.serializer.deserialize
        start = ticks()
        for sid in sids:
            loads(await read(sid, lifetime=TTL))
        return ticks() - start

    async def set_batch(self, pairs: list[tuple[str, dict[str, Any]]]) -> int:
        write, dumps = self.store.write, self.serializer.serialize
        start = ticks()
        for sid, data in pairs:
            await write(sid, dumps(data), lifetime=TTL, ttl=TTL)
        return ticks() - start

    async def destroy_batch(self, sids: list[str]) -> int:
        remove = self.store.remove
        start = ticks()
        for sid in sids:
            await remove(sid)
        return ticks() - start


# ---- the rows ------------------------------------------------------------------------------

OPS = ("get", "set_new", "set_replace", "update", "touch", "destroy")
LABELS = {
    "get": "get (hit)",
    "set_new": "set, new id, below the cap",
    "set_replace": "set, replacing an id",
    "update": "update, one key",
    "touch": "touch",
    "destroy": "destroy",
    "set_cap": "set at the cap (churn)",
}
NO_TOUCH = "no touch"
NO_UPDATE = "no update"
# The async table adds an await to each: update's cost is the sync table's.
ASYNC_OPS = tuple(op for op in OPS if op != "update")
# The change an update writes back: one key of a request's, as a visit counter's.
ONE_KEY: dict[str, Any] = {"visits": 7}
# The rows timed again on realistic sessions: the ones whose cost grows with the session.
REALISTIC_OPS = ("get", "set_new", "set_replace")
REALISTIC_LABEL = ", realistic session"


def _sync_table(config: Config, notes: list[str]) -> Table:
    table = Table("In-memory stores, sync, per operation", list(SYNC), FLOOR)
    held = _ids(config.sessions)
    held_realistic = _ids(config.sessions)
    drivers = {name: build(name) for name in SYNC}
    for drv in drivers.values():
        _loop_set(drv.set)(_pairs(held))
        _loop_set(drv.set)(_pairs(held_realistic, REALISTIC))
    _freeze()
    for op in OPS:
        progress(f"sync: {LABELS[op]}")
        timed = measure(_cases(op, drivers, held), config)
        row = Row.timed(LABELS[op], "µs", timed, list(SYNC))
        if op in ("touch", "update"):
            missing = NO_TOUCH if op == "touch" else NO_UPDATE
            row.notes = {name: missing for name in SYNC if name not in timed}
        table.rows.append(row)
    for op in REALISTIC_OPS:
        label = LABELS[op] + REALISTIC_LABEL
        progress(f"sync: {label}")
        timed = measure(_cases(op, drivers, held_realistic, REALISTIC), config)
        table.rows.append(Row.timed(label, "µs", timed, list(SYNC)))
    gc.unfreeze()
    for drv in drivers.values():
        drv.close()
    del drivers
    gc.collect()

    capped = {name: build(name, capacity=config.cap) for name in SYNC}
    for drv in capped.values():
        _loop_set(drv.set)(_pairs(_ids(2 * config.cap)))  # full, and already evicting
    # lembro below its cap again, timed in the same repeats: the target compares the two.
    below = build(LEMBRO)
    _loop_set(below.set)(_pairs(_ids(config.cap)))
    _freeze()
    progress(f"sync: {LABELS['set_cap']}")
    cases = _cases("set_cap", capped, [])
    cases[LEMBRO_BELOW] = _cases("set_new", {LEMBRO_BELOW: below}, [])[LEMBRO_BELOW]
    timed = measure(cases, config)
    held_at_cap = {name: drv.count() for name, drv in capped.items()}
    table.rows.append(Row.timed(LABELS["set_cap"], "µs", timed, list(SYNC)))
    below.close()
    notes.append(
        f"At the cap each store is bounded to hold about {config.cap:,} sessions; sessions "
        f"held after the run: {', '.join(f'{k} {v:,}' for k, v in held_at_cap.items())}. "
        "lembro prunes to 75% of max_size when a set goes over it; floor and cachetools "
        "evict one per set; Django culls a third (CULL_FREQUENCY=3); cachelib sorts every "
        "session by expiry on each set once over its threshold. A second lembro store, "
        f"below its cap (holding {config.cap:,} sessions) and writing new ids, is timed "
        "in the same repeats: the at-the-cap target compares the two side by side."
    )
    gc.unfreeze()
    for drv in capped.values():
        drv.close()
    del capped
    gc.collect()

    purge_label = f"purge {config.purge_expired:,} expired of {config.purge_total:,}"
    purge_row = Row(purge_label, "ms", {})
    live = _pairs(_ids(config.purge_total - config.purge_expired))
    for name in SYNC:
        ms = _purge_ms(name, config, live)
        purge_row.values[name] = ms
        if ms is None:
            purge_row.notes[name] = "no purge"
    del live
    table.rows.append(purge_row)

    memory_row = Row(f"memory per session at {config.memory_sessions:,}", "bytes", {})
    for name in SYNC:
        memory_row.values[name] = _memory_per_session(name, config.memory_sessions)
    table.rows.append(memory_row)
    return table


def _purge_ms(name: str, config: Config, live: list[tuple[str, dict[str, Any]]]) -> float | None:
    """Median milliseconds to purge ``purge_expired`` expired among ``purge_total`` sessions.

    ``live`` are the sessions that stay (the same ids for every store).
    """
    clock = FakeClock()
    drv = build(name, clock=clock)
    purge = drv.purge
    if purge is None:
        drv.close()
        return None
    progress(f"purge: {name}")
    _loop_set(drv.set)(live)
    _freeze()

    def prepare(_n: int) -> None:
        for sid, data in _pairs(_ids(config.purge_expired)):
            drv.set_ttl(sid, data, 1.0)
        clock.now += 2.0  # those are now expired; the rest live for a day

    def run(_x: None) -> None:
        purge()

    def check(_x: None) -> None:
        if drv.count() != len(live):  # a purge that removes the wrong sessions measures nothing
            raise RuntimeError(f"{name}: purge left {drv.count():,} sessions, not {len(live):,}")

    try:
        one = dataclasses.replace(config, batch=1)
        timed = measure({name: Case(prepare, run, check, per_batch=1)}, one)
    finally:
        gc.unfreeze()
        drv.close()
    return timed[name] / 1000.0


def _memory_per_session(name: str, n: int) -> float:
    """Bytes tracemalloc counts per stored session: id, payload and the store's bookkeeping."""
    progress(f"memory: {name}")
    data = VARIANTS[0]
    if name == STARSESSIONS:
        star = _Starsessions()
        loop = asyncio.new_event_loop()
        try:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):  # ids made inside: the store keeps them, the bench does not
                loop.run_until_complete(star.fill([(new_session_id(), data)]))
            used = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        finally:
            loop.close()
        return used / n
    drv = build(name)
    put = drv.set
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(n):
        put(new_session_id(), data)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    drv.close()
    del drv, put
    gc.collect()
    return used / n


def _async_table(config: Config, sync: Table) -> Table:
    table = Table(
        "Async: one event loop, each operation awaited, per operation",
        list(ASYNC),
        FLOOR_AWAIT,
    )
    loop = asyncio.new_event_loop()
    try:
        held = _ids(config.sessions)
        lembro_store = MemoryStore(BIG, None)
        floor_store = Floor()
        # Floor has only the methods these rows call; as_async wraps it as it wraps MemoryStore.
        backs: dict[str, SessionStore] = {
            LEMBRO_AWAIT: lembro_store,
            FLOOR_AWAIT: cast(SessionStore, floor_store),
        }
        fronts = {name: as_async(back) for name, back in backs.items()}
        star = _Starsessions()
        for front in fronts.values():
            loop.run_until_complete(_await_each(front.set)(_pairs(held)))
        loop.run_until_complete(star.fill(_pairs(held)))
        _freeze()

        for op in ASYNC_OPS:
            progress(f"async: {LABELS[op]}")
            cases: dict[str, Case[Any]] = {}
            for name, front in fronts.items():
                if op == "get":
                    cases[name] = _async_case(
                        loop, lambda n: _sample(held, n), _await_each(front.get)
                    )
                elif op == "set_new":
                    cases[name] = _async_case(
                        loop,
                        lambda n: _pairs(_ids(n)),
                        _await_each(front.set),
                        _undo(backs[name].destroy),
                    )
                elif op == "set_replace":
                    cases[name] = _async_case(
                        loop, lambda n: _pairs(_sample(held, n)), _await_each(front.set)
                    )
                elif op == "touch":
                    cases[name] = _async_case(
                        loop, lambda n: _sample(held, n), _await_each(front.touch)
                    )
                elif op == "destroy":
                    cases[name] = _async_case(
                        loop, _adder(backs[name].set), _await_each(front.destroy)
                    )
            if op == "get":
                cases[STARSESSIONS] = _async_case(loop, lambda n: _sample(held, n), star.get_batch)
            elif op == "set_new":
                cases[STARSESSIONS] = _async_case(
                    loop, lambda n: _pairs(_ids(n)), star.set_batch, _undo(star.drop)
                )
            elif op == "set_replace":
                cases[STARSESSIONS] = _async_case(
                    loop, lambda n: _pairs(_sample(held, n)), star.set_batch
                )
            elif op == "destroy":
                cases[STARSESSIONS] = _async_case(loop, _adder(star.put), star.destroy_batch)
            timed = measure(cases, config)
            row = Row.timed(LABELS[op], "µs", timed, list(ASYNC))
            if op == "touch":
                row.notes[STARSESSIONS] = NO_TOUCH
            table.rows.append(row)
        lembro_store.close()
    finally:
        gc.unfreeze()
        loop.close()

    see_sync = "see the sync table"
    table.rows.append(
        Row(
            LABELS["set_cap"],
            "µs",
            {},
            {
                LEMBRO_AWAIT: see_sync,
                FLOOR_AWAIT: see_sync,
                STARSESSIONS: "unbounded: never evicts",
            },
        )
    )
    memory_label = sync.rows[-1].label
    table.rows.append(
        Row(
            memory_label,
            "bytes",
            {
                LEMBRO_AWAIT: sync.value(memory_label, LEMBRO),
                FLOOR_AWAIT: sync.value(memory_label, FLOOR),
                STARSESSIONS: _memory_per_session(STARSESSIONS, config.memory_sessions),
            },
        )
    )
    return table


# ---- the owner index -----------------------------------------------------------------------

OWNED = "lembro MemoryStore, owner_key"
OWNER_FIELD = "user_id"
PER_OWNER = 5  # sessions per owner, as one user on five devices
OWNER_OPS = ("get", "set_new", "set_replace", "touch", "destroy", "sessions_of")
OWNER_LABELS = {**LABELS, "sessions_of": f"sessions_of (an owner with {PER_OWNER} sessions)"}
WRITES = (LABELS["set_new"], LABELS["set_replace"])


def _owned_pairs(sids: list[str], owner_of: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    """Sessions as ``_pairs`` makes them, with ``OWNER_FIELD`` naming their owner: from
    ``owner_of`` for a held id, a new owner for each ``PER_OWNER`` new ones."""
    fresh = itertools.count(len(owner_of) // PER_OWNER + 1)
    owners = {sid: owner_of.get(sid) for sid in sids}
    pairs = []
    for i, (sid, data) in enumerate(_pairs(sids)):
        owner = owners[sid]
        if owner is None:
            owner = next(fresh) if i % PER_OWNER == 0 else len(owner_of) // PER_OWNER
        pairs.append((sid, {**data, OWNER_FIELD: owner}))
    return pairs


def _owner_case(
    op: str, store: MemoryStore, held: list[str], owner_of: dict[str, int]
) -> Case[Any] | None:
    owners = max(1, len(held) // PER_OWNER)
    if op == "sessions_of":
        if store.owner_key is None:
            return None
        return Case(lambda n: [_random.randrange(owners) for _ in range(n)],
                    _loop_get(store.sessions_of))  # fmt: skip
    if op == "set_new":
        return Case(lambda n: _owned_pairs(_ids(n), owner_of), _loop_set(store.set),
                    _undo(store.destroy))  # fmt: skip
    if op == "set_replace":
        return Case(lambda n: _owned_pairs(_sample(held, n), owner_of), _loop_set(store.set))
    if op == "destroy":
        return Case(_adder(store.set), _loop_get(store.destroy))
    return Case(lambda n: _sample(held, n), _loop_get(store.get if op == "get" else store.touch))


def _owner_table(config: Config) -> Table:
    """What ``owner_key`` costs a MemoryStore: the same store with and without it, on
    the same sessions (each with an owner field)."""
    names = (OWNED, LEMBRO)
    table = Table("MemoryStore owner index: with and without owner_key", list(names), LEMBRO)
    held = _ids(config.sessions)
    owner_of = {sid: i // PER_OWNER for i, sid in enumerate(held)}
    stores = {
        name: MemoryStore(BIG, None, owner_key=OWNER_FIELD if name == OWNED else None)
        for name in names
    }
    for store in stores.values():
        _loop_set(store.set)(_owned_pairs(held, owner_of))
    _freeze()
    try:
        for op in OWNER_OPS:
            progress(f"memory owner index: {OWNER_LABELS[op]}")
            cases = {
                name: case
                for name, store in stores.items()
                if (case := _owner_case(op, store, held, owner_of)) is not None
            }
            row = Row.timed(OWNER_LABELS[op], "µs", measure(cases, config), list(names))
            row.notes.update({n: "no owner index" for n in names if n not in cases})
            table.rows.append(row)
    finally:
        gc.unfreeze()
        for store in stores.values():
            store.close()
    memory_row = Row(f"memory per session at {config.memory_sessions:,}", "bytes", {})
    for name in names:
        memory_row.values[name] = _owned_memory_per_session(name, config.memory_sessions)
    table.rows.append(memory_row)
    return table


def _owned_memory_per_session(name: str, n: int) -> float:
    """Bytes tracemalloc counts per stored session, ``PER_OWNER`` sessions per owner."""
    progress(f"memory: {name}")
    store = MemoryStore(BIG, None, owner_key=OWNER_FIELD if name == OWNED else None)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        store.set(new_session_id(), {**VARIANTS[0], OWNER_FIELD: i // PER_OWNER})
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    store.close()
    gc.collect()
    return used / n


# ---- targets -------------------------------------------------------------------------------


def _targets(sync: Table, asyn: Table, owners: Table, config: Config) -> list[Target]:
    targets: list[Target] = []
    for label in WRITES:  # what the owner index costs a write
        row = owners.row(label)
        ratio = row.ratio(OWNED, LEMBRO)
        if ratio is not None:
            targets.append(
                Target(
                    f"lembro {label} with owner_key within 1.5x without",
                    ratio <= 1.5,
                    f"{ratio:.2f}x ({row.values[OWNED]:.3g} vs {row.values[LEMBRO]:.3g} µs)",
                )
            )
    timed_rows = [row for row in sync.rows if row.unit in ("µs", "ms")]
    for row in timed_rows:
        mine, floor = row.values.get(LEMBRO), row.values.get(FLOOR)
        ratio = row.ratio(LEMBRO, FLOOR)
        if mine is None or floor is None or ratio is None:
            continue
        targets.append(
            Target(
                f"lembro {row.label} within 2.0x the floor",
                ratio <= 2.0,
                f"{ratio:.2f}x ({mine:.3g} vs {floor:.3g} {row.unit})",
            )
        )
    cap_row = sync.row(LABELS["set_cap"])
    at_cap = cap_row.values.get(LEMBRO)
    below = cap_row.samples.get(LEMBRO_BELOW)
    ratio = cap_row.ratio(LEMBRO, LEMBRO_BELOW)
    if at_cap is not None and below and ratio is not None:
        targets.append(
            Target(
                "lembro set at the cap no slower than 2x lembro set below it",
                ratio <= 2.0,
                f"{ratio:.2f}x ({at_cap:.3g} vs {statistics.median(below):.3g} µs, timed "
                "side by side)",
            )
        )
    # Faster than every thread-safe peer on the operations a request makes. cachelib's
    # SimpleCache takes a lock from 0.15 on (before, it is no more thread-safe than
    # starsessions' InMemoryStore, a bare dict); it pickles, where the others here write
    # lembro's exact msgpack or their own pickle.
    raced = {LABELS[key] for key in ("get", "set_new", "set_replace", "touch", "set_cap")}
    peers = (CACHETOOLS, DJANGO) + ((CACHELIB,) if _cachelib_locks() else ())
    for row in sync.rows:
        if row.label not in raced:
            continue
        mine = row.values.get(LEMBRO)
        # a peer's time over lembro's: above 1, lembro is faster
        theirs = {p: r for p in peers if (r := row.ratio(p, LEMBRO)) is not None}
        if mine is None or not theirs:
            continue
        fastest = min(theirs, key=lambda p: theirs[p])
        targets.append(
            Target(
                f"{LEMBRO} faster than {', '.join(theirs)} on {row.label}",
                all(r > 1.0 for r in theirs.values()),
                f"fastest peer {fastest} {row.values[fastest]:.3g} {row.unit}, lembro "
                f"{mine:.3g} ({theirs[fastest]:.2f}x lembro's time)",
            )
        )
    purge_row = next(row for row in sync.rows if row.label.startswith("purge"))
    purge = purge_row.values.get(LEMBRO)
    if purge is not None:
        targets.append(
            Target(
                f"lembro {purge_row.label} under 20 ms",
                purge < 20.0,
                f"{purge:.3g} ms" + (" (quick run: smaller store)" if config.quick else ""),
            )
        )
    return targets


def run(config: Config) -> Section:
    """Measure every in-memory store on the same workload; return tables and targets."""
    # The churn row evicts on purpose: lembro's one-time "max_size is too small" warning
    # would only interleave with the table.
    logging.getLogger("lembro").setLevel(logging.ERROR)
    notes: list[str] = []
    sync = _sync_table(config, notes)
    asyn = _async_table(config, sync)
    owners = _owner_table(config)
    one_serializer = _one_serializer_table(config)
    notes += [
        f"Sessions are {BLOB} bytes as msgpack (pickle and JSON make them larger), ids are 43 "
        f"characters; the realistic ones ({REALISTIC_BLOB} bytes: a login with a list of roles, a "
        "nested dict of cookie settings and one of preferences) are held beside them in every "
        f"store, {config.sessions:,} more. Below the cap, each store holds {config.sessions:,} "
        f"sessions of each shape; batches of up to {config.batch:,} operations, {config.repeats} "
        "repeats, stores interleaved, gc collected between batches and off during them; cells are "
        "medians. A ratio of two stores is the median of their ratios repeat by repeat: in a "
        "repeat they run moments apart, on nearly the same machine, so that the machine's drift "
        "between repeats cancels out.",
        "Every get returns a fresh dict and every set serializes: lembro and cachetools "
        "with lembro's exact msgpack (msgspec, after a check that every value comes back "
        "as it went in, its bytes copied to their exact length so that a store can count "
        "them), the floor with bare msgspec msgpack (no check, no copy), Django and "
        "cachelib with pickle (their own), starsessions with its middleware's JSON "
        "serializer (its default).",
        "floor: a lock, a dict sid -> (bytes, expiry) and bare msgspec, none of lembro's code; "
        "the least a correct thread-safe store does. It holds the lock in with blocks, as lembro "
        "does (acquire() then try is not safe when a signal handler raises in between), and its "
        "destroy says whether it removed a live session, as the store protocol asks. Its purge "
        "scans all sessions: it has no expiry index. Its bound evicts the oldest insertion, with "
        "no recency.",
        "Purge: lembro, floor and cachetools with an injected clock; cachelib's is "
        "SimpleCache._remove_expired, the scan its _prune runs on a set once over the "
        "threshold. Django LocMemCache has no purge (expired entries go when read, or in a "
        "cull once full). Each store is built alone for this row, not interleaved.",
        "Memory: tracemalloc's count of what the store holds after storing that many "
        "sessions (its ids, its serialized payloads, its bookkeeping), divided by the count.",
        "starsessions InMemoryStore has no expiry, no purge and no bound: sessions stay "
        "until the app deletes them. Its table drives floor and lembro through the same "
        "await (lembro.as_async), so each column pays the same coroutine overhead.",
        "cachetools, cachelib and starsessions have no touch; a rolling session there is "
        "a rewrite (see set, replacing an id).",
        "Writes on one serializer: lembro with its pickle serializer and the floor with "
        "pickle.dumps at the same protocol, beside Django and cachelib with their own pickle, "
        "below any cap; what remains is each store's own work per write. lembro's is an entry, an "
        "expiry record, a score and the byte count that keep its cap true; cachelib's is a dict "
        "store, its pruning left to the set that goes over its threshold (see set at the cap).",
    ]
    notes.append(
        f"Owner index: the same MemoryStore with owner_key={OWNER_FIELD!r} and without, on "
        f"the same sessions (each with an owner field, {PER_OWNER} sessions per owner). "
        "With it, a write reads the owner from the dict before serializing, and links the "
        "session first in its owner's list (a new owner every fifth new id); get and touch "
        "move it to the front; sessions_of walks one owner's list. Memory: the entry's "
        "three more fields, and each owner's record and name, per session."
    )
    return Section(
        "In-memory session stores",
        [sync, asyn, owners, one_serializer],
        _targets(sync, asyn, owners, config),
        notes,
    )


LEMBRO_PICKLE = "lembro MemoryStore, pickle"
FLOOR_PICKLE = "floor, pickle"
ONE_SERIALIZER = (LEMBRO_PICKLE, FLOOR_PICKLE, DJANGO, CACHELIB)


def _pickle_dumps(data: Any) -> bytes:
    """What lembro's pickle serializer writes, without lembro's code: for the floor."""
    return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)


def _one_serializer_table(config: Config) -> Table:
    """Writes with every store on pickle (Django's and cachelib's own): what the stores
    cost beside one another, the serializer aside."""
    table = Table(
        "Writes with every store on pickle",
        list(ONE_SERIALIZER),
        FLOOR_PICKLE,
    )
    held = _ids(config.sessions)
    lembro = MemoryStore(BIG, None, serializer="pickle")
    floor = Floor(encode=_pickle_dumps, decode=pickle.loads)
    drivers = {
        LEMBRO_PICKLE: Driver(
            lembro.get, lembro.set, lembro.set, lembro.touch, lembro.destroy, lembro.purge,
            lambda: len(lembro), lembro.close,
        ),
        FLOOR_PICKLE: Driver(
            floor.get, floor.set, floor.set, floor.touch, floor.destroy, floor.purge,
            floor.__len__,
        ),
        DJANGO: build(DJANGO),
        CACHELIB: build(CACHELIB),
    }  # fmt: skip
    for drv in drivers.values():
        _loop_set(drv.set)(_pairs(held))
    _freeze()
    for op in ("set_new", "set_replace"):
        progress(f"one serializer: {LABELS[op]}")
        timed = measure(_cases(op, drivers, held), config)
        table.rows.append(Row.timed(LABELS[op], "µs", timed, list(ONE_SERIALIZER)))
    gc.unfreeze()
    for drv in drivers.values():
        drv.close()
    return table


def _cachelib_locks() -> bool:
    """Whether the installed cachelib's SimpleCache takes a lock (0.15 and later)."""
    from cachelib import SimpleCache

    return hasattr(SimpleCache(), "_lock")
