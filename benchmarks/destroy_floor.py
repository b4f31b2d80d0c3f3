"""Why no thread-safe store's destroy beats starsessions' ``InMemoryStore.remove``.

``python benchmarks/destroy_floor.py`` times, through one ``await`` each and side by side
(paired ratios over interleaved batches, the CPU time of this thread):

- starsessions' ``remove``: ``del self.data[sid]`` in a coroutine: no lock, no accounting;
- a pop with no lock that accounts the size later (one ``deque.append`` of what it
  removed): the least a store that counts its bytes does, and not even thread-safe, since
  another thread's read-modify-write of the size could interleave with it;
- the floor's destroy (a pop under a ``threading.Lock``, the least a thread-safe store
  does) through ``lembro.as_async``, as ``make bench`` drives it;
- lembro's ``MemoryStore.destroy`` through ``lembro.as_async``, as its Starlette
  middleware calls it.

It backs one line of README's benchmark notes; ``make bench`` does not run it.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from memory_stores import Floor
from starsessions import InMemoryStore

from lembro import MemoryStore, SessionStore, as_async

BATCH = 5_000
REPEATS = 41
BLOB = b"x" * 250


class _NoLock:
    """A pop with no lock; what it removed is queued, to be accounted under a lock later."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._removed: deque[Any] = deque()

    async def destroy(self, sid: str) -> None:
        entry = self.data.pop(sid, None)
        if entry is not None:
            self._removed.append(entry)


async def _batch(op: Callable[[str], Awaitable[None]], sids: list[str]) -> float:
    start = time.thread_time_ns()
    for sid in sids:
        await op(sid)
    return (time.thread_time_ns() - start) / len(sids)


def main() -> None:
    star = InMemoryStore()
    no_lock, floor = _NoLock(), Floor()
    floor_front = as_async(cast(SessionStore, floor))
    memory = MemoryStore("1G", None)
    front = as_async(memory)

    def fill_dict(data: dict[str, Any]) -> Callable[[list[str]], None]:
        return lambda sids: data.update(dict.fromkeys(sids, BLOB))

    def fill_floor(sids: list[str]) -> None:
        for sid in sids:
            floor.set(sid, {"x": "y" * 240})

    def fill_lembro(sids: list[str]) -> None:
        for sid in sids:
            memory.set(sid, {"x": "y" * 240})

    cases: dict[str, tuple[Callable[[list[str]], None], Callable[[str], Awaitable[None]]]] = {
        "starsessions remove": (fill_dict(star.data), star.remove),
        "pop, no lock": (fill_dict(no_lock.data), no_lock.destroy),
        "floor (as_async)": (fill_floor, floor_front.destroy),
        "lembro (as_async)": (fill_lembro, front.destroy),
    }
    loop = asyncio.new_event_loop()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for rep in range(REPEATS):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            fill, op = cases[name]
            sids = [secrets.token_urlsafe(32) for _ in range(BATCH)]
            fill(sids)
            times[name].append(loop.run_until_complete(_batch(op, sids)))
    loop.close()
    memory.close()
    base = times["starsessions remove"]
    print(f"destroy through await, {REPEATS} paired repeats of {BATCH:,}")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(times[name], base, strict=True))
        print(f"  {name:22s} {statistics.median(times[name]):6.0f} ns  {ratio:.2f}x starsessions")


if __name__ == "__main__":
    main()
