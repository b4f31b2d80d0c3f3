"""The eviction order: who goes first when the store must shrink below its cap.

Expired sessions go first (the store purges them before asking). Among the live, the
ones least likely to be missed go first: the fewest uses, and among equal uses the least
recently used. Uses are counted per session (a created session has one; each get, set,
replace and touch that finds it adds one), saturate at ``MAX_USES``, and age: every time
the store has seen ``AGING_PERIOD`` uses per session it holds, every count is halved (as
Caffeine's TinyLFU sketch does), lazily, when a count is next read. So a session that was
popular long ago does not stay forever, and a bot must come back more often than a user
to outrank them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from .entry import Entry

__all__ = ["AGING_PERIOD", "MAX_USES", "EvictionOrder"]

# The most uses a count holds (four bits, as in Caffeine's sketch): a session used
# thousands of times still ages out within a few periods once it stops coming back.
MAX_USES = 15

# Uses per session held between two agings. Long enough for a user who comes back a few
# times per period to keep a count above a burst of a few requests; short enough that
# counts follow a change in who is active.
AGING_PERIOD = 32

# The period never drops below this many uses, so a nearly empty store does not age on
# every few calls.
_MIN_PERIOD = 1024


class EvictionOrder:
    """Counts uses with aging and chooses victims: fewest uses first, then least recent.

    Recency is the order the store keeps its entries in (least recently used first); this
    class holds only the counting and the choice.
    """

    __slots__ = ("_since_aging", "age")

    def __init__(self) -> None:
        self.age = 0  # how many agings have happened
        self._since_aging = 0

    def created(self, entry: Entry) -> None:
        """``entry`` is a new session: one use."""
        entry.uses = 1
        entry.aged = self.age

    def restored(self, entry: Entry, used_again: bool) -> None:
        """``entry`` comes from a snapshot: two uses if it had been used again, else one."""
        entry.uses = 2 if used_again else 1
        entry.aged = self.age

    def used(self, entry: Entry, population: int) -> None:
        """``entry`` was used once more; ``population`` is how many sessions are held."""
        entry.uses = min(self.uses(entry) + 1, MAX_USES)
        entry.aged = self.age
        self._since_aging += 1
        if self._since_aging >= max(AGING_PERIOD * population, _MIN_PERIOD):
            self.age += 1
            self._since_aging = 0

    def uses(self, entry: Entry) -> int:
        """``entry``'s count now: halved once per aging since it was last counted."""
        return entry.uses >> min(self.age - entry.aged, 4)

    def victims(
        self, entries: Collection[Entry], need: int, cost: Callable[[Entry], int], keep: str | None
    ) -> list[Entry]:
        """The entries to evict to free ``need`` bytes (``cost`` says what each frees), in
        eviction order, never ``keep``. ``entries`` iterate least recently used first.
        O(entries): two passes."""
        by_uses = [0] * (MAX_USES + 1)
        for entry in entries:
            if entry.sid != keep:
                by_uses[self.uses(entry)] += cost(entry)
        # Evict every entry with fewer than ``level`` uses, and the least recently used
        # of those with ``level`` uses until ``need`` is met.
        level, below = 0, 0
        while level < MAX_USES and below + by_uses[level] < need:
            below += by_uses[level]
            level += 1
        more = need - below
        chosen: list[Entry] = []
        for entry in entries:
            if entry.sid == keep:
                continue
            uses = self.uses(entry)
            if uses < level:
                chosen.append(entry)
            elif uses == level and more > 0:
                chosen.append(entry)
                more -= cost(entry)
        return chosen
