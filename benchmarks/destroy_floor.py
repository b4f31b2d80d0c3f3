"""Why no thread-safe store's destroy beats starsessions' ``InMemoryStore.remove``.

``python benchmarks/destroy_floor.py`` times, through one ``await`` each and side by side
with ``make bench``'s harness (paired ratios over interleaved batches, the CPU time of this
thread):

- starsessions' ``remove``: ``del self.data[sid]`` in a coroutine: no lock, no accounting;
- a pop with no lock that accounts the size later (one ``deque.append`` of the bytes'
  length; the session is freed then, as starsessions' is): the least a store that counts
  its bytes does, and not even thread-safe, since another thread's read-modify-write of
  the size could interleave with it;
- the floor's destroy (a pop under a ``threading.Lock``, the least a thread-safe store
  does) through ``lembro.as_async``, as ``make bench`` drives it;
- lembro's ``MemoryStore.destroy`` through ``lembro.as_async``, as its Starlette
  middleware calls it.

It explains the destroy row of docs/benchmarks.md's async table, where starsessions is
faster than the floor; ``make bench`` does not run it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

from harness import Config, Row, measure
from memory_stores import Floor, _adder, _async_case, _await_each, _Starsessions

from lembro import MemoryStore, SessionStore, as_async
from lembro.serializers import MsgpackSerializer

STARSESSIONS = "starsessions remove"


class _NoLock:
    """A pop with no lock; the bytes it freed are queued, to be accounted under a lock later."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self._freed: deque[int] = deque()
        self._dumps = MsgpackSerializer().dumps

    def put(self, sid: str, data: dict[str, Any]) -> None:
        self.data[sid] = self._dumps(data)

    async def destroy(self, sid: str) -> None:
        blob = self.data.pop(sid, None)
        if blob is not None:
            self._freed.append(len(blob))


def main() -> None:
    config = Config(batch=5_000, repeats=41)
    star, no_lock, floor = _Starsessions(), _NoLock(), Floor()
    memory = MemoryStore("1G", None)
    loop = asyncio.new_event_loop()
    try:
        cases = {
            STARSESSIONS: _async_case(loop, _adder(star.put), _await_each(star.store.remove)),
            "pop, no lock": _async_case(loop, _adder(no_lock.put), _await_each(no_lock.destroy)),
            "floor (as_async)": _async_case(
                loop, _adder(floor.set), _await_each(as_async(cast(SessionStore, floor)).destroy)
            ),
            "lembro (as_async)": _async_case(
                loop, _adder(memory.set), _await_each(as_async(memory).destroy)
            ),
        }
        row = Row.timed("destroy", "µs", measure(cases, config), list(cases))
    finally:
        loop.close()
        memory.close()
    print(f"destroy through await, {config.repeats} paired repeats of up to {config.batch:,}")
    for name, value in row.values.items():
        ratio = row.ratio(name, STARSESSIONS) or 0.0
        print(f"  {name:22s} {(value or 0.0) * 1000:6.0f} ns  {ratio:.2f}x starsessions")


if __name__ == "__main__":
    main()
