"""What the contract tests' store bindings share about short lifetimes on a real server."""

from __future__ import annotations

import time
from collections.abc import Callable

# The Redis kinds that differ from another kind only in how they connect: the tests marked
# ``lifetimes`` are left out for them (see conftest.py).
CONNECTION_ONLY = frozenset(
    {"tls", "async-tls", "tls-cluster", "sentinel", "async-sentinel", "valkey-url", "async-valkey"}
)


class ShortLives:
    """A binding whose tests write sessions of lifetime ``short`` seconds and wait them
    out; ``_note_first_wait`` is called by its waits."""

    kind: str
    short: float
    _first_wait: float | None
    _late = False
    _started = 0.0

    def _note_first_wait(self) -> None:
        assert self.kind not in CONNECTION_ONLY, (
            "a test that waits out lifetimes is marked @pytest.mark.lifetimes"
        )
        if self._first_wait is None:
            self._first_wait = time.monotonic()

    def begin(self) -> None:
        """Mark where the scenario's first session is written, after a set-up that takes
        time of its own (building apps): a stall before this point made no check late."""
        self._started = time.monotonic()

    def within(self, started: float, seconds: float) -> None:
        """Note a check that had to come less than ``seconds`` after ``started``
        (``time.monotonic()``), called right after it and before its asserts: when it
        came later, a stall of the machine made it late, and ``in_time`` runs the
        scenario again if it fails."""
        if time.monotonic() - started >= seconds:
            self._late = True

    def in_time(self, scenario: Callable[[], None]) -> None:
        """Run ``scenario``, which checks sessions of lifetime ``self.short`` alive before
        its first wait. For Redis real time passes: when the scenario fails and more than
        that lifetime had passed before its first wait (or a check noted by ``within``
        came late), the loaded machine stalled between a write and its check, which then
        showed nothing either way; so it runs again, with lifetimes five times as long
        (twice at most). A failure in time is a failure."""
        for attempt in range(3):
            self._started, self._first_wait, self._late = time.monotonic(), None, False
            try:
                scenario()
                return
            except AssertionError:
                checked = self._first_wait or time.monotonic()
                late = self._late or checked - self._started > self.short
                if self.kind == "memory" or attempt == 2 or not late:
                    raise
            self.short *= 5
