"""What the contract tests' store bindings share about short lifetimes on a real server."""

from __future__ import annotations

import time
from collections.abc import Callable


class ShortLives:
    """A binding whose tests write sessions of lifetime ``short`` seconds and wait them
    out; ``_note_first_wait`` is called by its waits."""

    kind: str
    short: float
    _first_wait: float | None

    def _note_first_wait(self) -> None:
        if self._first_wait is None:
            self._first_wait = time.monotonic()

    def in_time(self, scenario: Callable[[], None]) -> None:
        """Run ``scenario``, which checks sessions of lifetime ``self.short`` alive before
        its first wait. For Redis real time passes: when the scenario fails and more than
        that lifetime had passed before its first wait, the loaded machine stalled between
        a write and its check, which then showed nothing either way; so it runs again, with
        lifetimes five times as long (twice at most). A failure in time is a failure."""
        for attempt in range(3):
            started, self._first_wait = time.monotonic(), None
            try:
                scenario()
                return
            except AssertionError:
                checked = self._first_wait or time.monotonic()
                if self.kind == "memory" or attempt == 2 or checked - started <= self.short:
                    raise
            self.short *= 5
