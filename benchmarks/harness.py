"""What every benchmark section shares: the run's sizes, batch timing, tables and targets.

A section (``memory_stores``, later ``redis_stores``) is a module with a
``run(config) -> Section`` function; ``run.py`` runs the sections it is given and prints
and writes their tables. Times are medians over repeated batches, per operation.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "CLOCKS",
    "Case",
    "Config",
    "Row",
    "Section",
    "Table",
    "Target",
    "Timings",
    "measure",
    "progress",
    "render_markdown",
    "render_text",
    "ticks",
    "use_clock",
]

T = TypeVar("T")

# "cpu": this thread's CPU time, which leaves out the time other processes hold the core
# (on a shared 2-core machine that is most of the noise; the runs here are one thread, so
# nothing else is left out). "wall": time.perf_counter_ns.
CLOCKS: dict[str, Callable[[], int]] = {
    "cpu": time.thread_time_ns,
    "wall": time.perf_counter_ns,
}
_clock: list[Callable[[], int]] = [CLOCKS["cpu"]]
_started = time.perf_counter()


def use_clock(name: str) -> None:
    """Time batches with the clock ``name`` (a key of ``CLOCKS``) from now on."""
    _clock[0] = CLOCKS[name]


def ticks() -> int:
    """Nanoseconds on the clock batches are timed with; only differences mean anything."""
    return _clock[0]()


def progress(message: str) -> None:
    """A line on stderr saying what runs now, so a long run shows it is alive."""
    print(f"  {time.perf_counter() - _started:5.0f} s  {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    """The sizes of one run; ``quick`` shrinks them all for a smoke run.

    ``sessions``: sessions a store holds for the below-the-cap operations.
    ``batch``: operations per timed batch (fewer for a slow store, see ``batch_budget``).
    ``repeats``: timed batches per store and operation; tables show their median.
    ``cap``: sessions a store holds at its bound, for the churn row.
    ``purge_total`` / ``purge_expired``: sessions held / of them expired, for the purge row.
    ``memory_sessions``: sessions stored for the bytes-per-session row.
    ``batch_budget``: seconds a batch should take at most; slower stores get smaller batches.
    ``clock``: what batches are timed with, a key of ``CLOCKS``.
    """

    quick: bool = False
    clock: str = "cpu"
    sessions: int = 10_000
    batch: int = 10_000
    repeats: int = 21
    cap: int = 10_000
    purge_total: int = 500_000
    purge_expired: int = 1_000
    memory_sessions: int = 100_000
    batch_budget: float = 0.25
    min_batch: int = 50

    @classmethod
    def smoke(cls) -> Config:
        """Sizes for ``--quick``: seconds, not minutes; numbers are only indicative."""
        return cls(
            quick=True,
            sessions=1_000,
            batch=1_000,
            repeats=3,
            cap=1_000,
            purge_total=20_000,
            purge_expired=200,
            memory_sessions=2_000,
            batch_budget=0.02,
            min_batch=10,
        )


@dataclass
class Case(Generic[T]):
    """One store's batch of one operation.

    ``prepare(n)`` builds a batch's input for ``n`` operations (not timed); ``run(input)``
    performs them (timed, gc off) and may return the nanoseconds it measured itself with
    ``ticks()``, which an async case does to leave the event loop's start-up out;
    ``cleanup(input)`` restores the store's state afterwards (not timed). ``per_batch``
    fixes the operations per batch (1 for a purge); otherwise a calibration run sizes it.
    """

    prepare: Callable[[int], T]
    run: Callable[[T], int | None]
    cleanup: Callable[[T], None] = lambda _input: None
    per_batch: int | None = None


def _timed(case: Case[Any], n: int) -> int:
    data = case.prepare(n)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = ticks()
        measured = case.run(data)
        elapsed = ticks() - start
    finally:
        if enabled:
            gc.enable()
    case.cleanup(data)
    return elapsed if measured is None else measured


class Timings(dict[str, float]):
    """Each store's median time per operation in µs, by name; ``samples`` keeps every
    repeat's time per operation (µs), in the order the repeats ran."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        super().__init__({name: statistics.median(values) for name, values in samples.items()})
        self.samples = samples


def measure(cases: dict[str, Case[Any]], config: Config) -> Timings:
    """Time each store's case, interleaved: every repeat runs every store once, the order
    rotating so none always goes first. Return each store's times per operation, in µs.
    """
    use_clock(config.clock)
    sizes: dict[str, int] = {}
    for name, case in cases.items():
        if case.per_batch is not None:
            sizes[name] = case.per_batch
            continue
        probe = max(1, min(config.batch, 100 if not config.quick else 20))
        per_op = _timed(case, probe) / probe / 1e9  # seconds; also warms the case up
        fit = int(config.batch_budget / per_op) if per_op > 0 else config.batch
        sizes[name] = max(min(config.min_batch, config.batch), min(config.batch, fit))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for rep in range(config.repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            n = sizes[name]
            samples[name].append(_timed(cases[name], n) / n / 1000.0)
    return Timings(samples)


@dataclass
class Row:
    """One operation across stores: ``values[store]`` in ``unit``, ``None`` for n/a.

    ``samples``: the repeats behind the values, when they were timed together (a
    ``Timings``'s), for ratios measured repeat by repeat.
    """

    label: str
    unit: str
    values: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def timed(cls, label: str, unit: str, timings: Timings, names: list[str]) -> Row:
        """The row of ``timings`` for the stores ``names`` (``None`` for one not timed)."""
        return cls(label, unit, {n: timings.get(n) for n in names}, samples=timings.samples)

    def ratio(self, column: str, to: str) -> float | None:
        """``column``'s time over ``to``'s (either a column or a case timed with them);
        ``None`` when either is n/a.

        When both were timed in the same repeats, the median of their ratios repeat by
        repeat: the machine's speed drifts between repeats (a shared machine), and two
        stores timed a moment apart see nearly the same machine. Otherwise the ratio of
        the values.
        """
        a, b = self.samples.get(column), self.samples.get(to)
        if a and b and len(a) == len(b):
            paired = [x / y for x, y in zip(a, b, strict=True) if y > 0]
            if paired:
                return statistics.median(paired)
        mine, theirs = self.values.get(column), self.values.get(to)
        if mine is None or not theirs:
            return None
        return mine / theirs


@dataclass
class Table:
    """Rows of operations, columns of stores; each cell also shows its ratio to ``baseline``."""

    title: str
    columns: list[str]
    baseline: str
    rows: list[Row] = field(default_factory=list)

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)

    def value(self, label: str, column: str) -> float | None:
        return self.row(label).values.get(column)

    def cells(self) -> list[list[str]]:
        """The table as strings: a header line, then one line per row."""
        out = [["operation", *self.columns]]
        for row in self.rows:
            line = [f"{row.label} ({row.unit})"]
            for column in self.columns:
                value = row.values.get(column)
                note = row.notes.get(column, "")
                if value is None:
                    line.append(f"n/a{' (' + note + ')' if note else ''}")
                    continue
                text = _number(value)
                ratio = row.ratio(column, self.baseline)
                if ratio is not None:
                    text += f" ({ratio:.2f}x)"
                if note:
                    text += f" [{note}]"
                line.append(text)
            out.append(line)
        return out


@dataclass
class Target:
    """A goal and whether this run met it; ``detail`` gives the numbers behind the verdict."""

    goal: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.goal}: {self.detail}"


@dataclass
class Section:
    """What a section module's ``run(config)`` returns."""

    title: str
    tables: list[Table]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_text(section: Section) -> str:
    """A section as plain text for the terminal."""
    lines = [section.title, "=" * len(section.title)]
    for table in section.tables:
        cells = table.cells()
        widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
        lines += ["", f"{table.title} (ratio to {table.baseline})"]
        for k, line in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
    if section.targets:
        lines += ["", "Targets:"]
        lines += [f"  {target.line()}" for target in section.targets]
    if section.notes:
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in section.notes]
    return "\n".join(lines)


def render_markdown(section: Section) -> str:
    """A section as markdown: a heading, its tables, targets and notes."""
    lines = [f"## {section.title}"]
    for table in section.tables:
        cells = table.cells()
        lines += [
            "",
            f"**{table.title}** (each cell: median (ratio to {table.baseline}; of stores "
            "timed side by side, the median of their ratios repeat by repeat))",
            "",
        ]
        lines.append("| " + " | ".join(cells[0]) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(cells[0]) - 1)) + "|")
        lines += ["| " + " | ".join(line) + " |" for line in cells[1:]]
    if section.targets:
        lines += ["", "Targets:", ""]
        lines += [f"- {target.line()}" for target in section.targets]
    if section.notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines)
