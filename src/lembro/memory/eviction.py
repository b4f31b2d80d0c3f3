"""The eviction order: who goes first when the store must shrink below its cap.

Expired sessions go first (the store purges them before asking). Among the live, the
ones least likely to be missed go first, judged by how often and how recently each was
used, in one number, its score: every use (the create, and each get, set, replace and
touch that finds it) adds one to a count whose past uses fade, each weighing half as much
once the store has seen ``HALF_LIFE`` more uses per session it holds when full. This is LRFU (Lee
et al., 2001), frequency with aging in the spirit of Caffeine's TinyLFU, without its
periodic halving, which knocks a new user's count below a later bot's.

The score is kept in a form that does not change as time passes: log2 of the faded count,
plus the time in half-lives. So one sort ranks every session, and a bot must come back
more often than a user, within a few half-lives, to outrank them.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import attrgetter

from .entry import Entry

__all__ = ["HALF_LIFE", "SAMPLE", "EvictionOrder"]

# How many uses per session the store holds when full halve the weight of a use. Long
# enough that a user who comes back every few uses per session keeps a higher score than
# a bot's burst of requests; short enough that a session popular long ago gives way to
# today's users.
HALF_LIFE = 16.0

# How many sessions a large store's prune looks at to find the score below which the
# sessions it must evict lie: enough that the cut lands within a few percent of the
# exact one, few enough to sort in a moment.
SAMPLE = 1024


class EvictionOrder:
    """Scores sessions by uses that fade, and chooses victims: the lowest scores first.

    A later use weighs more than an earlier one (the time has moved on), so among
    sessions used as often, the less recently used scores lower: the store keeps no
    separate recency order."""

    __slots__ = ("_now", "_step", "_uses")

    def __init__(self, capacity: int) -> None:
        self._now = 0.0  # the time, in half-lives
        self._step = 0.0  # how far one use moves the time: see ``resize``
        self._uses = 0.0  # every use ever counted, for ``check``
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        """The store holds about ``capacity`` sessions (at least one) when full: a
        half-life is ``HALF_LIFE`` uses per session of them. The store says so at each
        prune, when it is full and the estimate is good; between prunes, counts fade at
        the pace of the last estimate."""
        self._step = 1.0 / (HALF_LIFE * capacity)

    def created(self, entry: Entry, uses: float = 1.0) -> None:
        """``entry`` is a new session, with ``uses`` uses (one, unless restored from a
        snapshot with its faded count, which may have faded below one)."""
        self._now += self._step
        self._uses += uses
        entry.score = math.log2(max(uses, _FADED)) + self._now

    def used(self, entry: Entry) -> None:
        """``entry`` was used once more."""
        self._now += self._step
        self._uses += 1
        now = self._now
        entry.score = math.log2(2.0 ** (entry.score - now) + 1.0) + now

    def count(self, entry: Entry) -> float:
        """``entry``'s faded count of uses now: 1.0 for a session just created."""
        count: float = 2.0 ** (entry.score - self._now)
        return count

    def ranked(self, entries: Iterable[Entry]) -> list[Entry]:
        """``entries``, lowest score first (ties keep their order). O(n log n)."""
        return sorted(entries, key=_score)

    def victims(
        self, entries: Iterable[Entry], need: int, cost: Callable[[Entry], int], keep: str | None
    ) -> list[Entry]:
        """The entries to evict to free ``need`` bytes (``cost`` says what each frees),
        lowest score first, never ``keep``. O(n log n), in one sort."""
        chosen: list[Entry] = []
        for entry in self.ranked(entries):
            if need <= 0:
                break
            if entry.sid != keep:
                chosen.append(entry)
                need -= cost(entry)
        return chosen

    def cutoff(self, entries: list[Entry], need: int, cost: Callable[[Entry], int]) -> float:
        """The score at or below which the sessions to evict to free ``need`` bytes lie,
        estimated from a sample of ``entries`` (``cost`` says what each frees): a large
        store is pruned a batch at a time, taking the sessions scored at most this, without
        sorting them all. ``inf`` when the sample says every session must go."""
        if need <= 0 or not entries:
            return -math.inf
        sample = _random.sample(entries, min(SAMPLE, len(entries)))
        sample.sort(key=_score)
        scale = len(entries) / len(sample)
        freed = 0.0
        for entry in sample:
            freed += cost(entry) * scale
            if freed >= need:
                return entry.score
        return math.inf

    @staticmethod
    def scored_at_most(entries: Iterable[Entry], cutoff: float) -> Iterator[Entry]:
        """``entries`` scored at most ``cutoff``, in their order."""
        return (entry for entry in entries if entry.score <= cutoff)

    @staticmethod
    def lowest_first(entries: Iterable[Entry], run: int) -> Iterator[Entry]:
        """``entries``, lowest score first: sorted ``run`` at a time and the runs merged as
        they are taken, so no single sort holds the interpreter for all of them."""
        it = iter(entries)
        runs = []
        while chunk := list(islice(it, run)):
            chunk.sort(key=_score)
            runs.append(chunk)
        return heapq.merge(*runs, key=_score)

    def check(self, entry: Entry) -> None:
        """Raise ``AssertionError`` when ``entry``'s score could not have been given: a
        faded count is a number, and never more than every use counted so far (it may
        be 0.0: a session unused for about a thousand half-lives fades below the
        smallest float)."""
        if not math.isfinite(entry.score) or not 0.0 <= self.count(entry) <= self._uses:
            raise AssertionError(f"session {entry.sid[:8]!r} scores {entry.score}")


_score = attrgetter("score")
_FADED = 2.0**-1000  # the least count a restored session starts with: faded, not zero
_random = random.Random(0)  # seeded, so a run's prunes can be reproduced
