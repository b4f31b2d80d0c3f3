"""``make bench``: lembro's stores side by side with the stores people use, in one process.

Each section is a module in this directory with ``run(config) -> harness.Section``;
``SECTIONS`` lists them in order. A section whose module is absent is skipped with a
line saying so, which is how ``redis_stores`` plugs in: add the file, nothing else.

    python benchmarks/run.py                 # full run, writes docs/benchmarks.md
    python benchmarks/run.py --quick         # smoke run: small sizes, writes nothing
    python benchmarks/run.py --section stalls                 # prints, writes nothing
    python benchmarks/run.py --section stalls --markdown out.md

Only a full run of every section writes docs/benchmarks.md by default: a run of some
sections (``--section``) or a quick one writes markdown only where ``--markdown`` says,
so it never replaces the page's other tables with nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import CLOCKS, Config, Section, render_markdown, render_text

HERE = Path(__file__).resolve().parent
DEFAULT_MARKDOWN = HERE.parent / "docs" / "benchmarks.md"

# In the order they run and print. A missing module is skipped, so a section may be
# listed before its file exists.
# "requests" first: it configures Django for its apps, which the others only read.
SECTIONS = ("requests", "quart_aiohttp", "memory_stores", "flood", "stalls", "redis_stores")


# Dated: a check made once by hand, not by each run; a later run keeps the text as it is.
WHY_BY_HAND = (
    "Why `benchmarks/harness.py` times by hand rather than with pyperf or pytest-benchmark: "
    "both time one benchmark at a time (pyperf in worker processes of its own, one "
    "benchmark after another; pytest-benchmark one test at a time) and compare results "
    "across runs, so two stores compared that way are timed seconds apart, and on a shared "
    "machine its speed changes in between. These tables are ratios of stores, so the "
    "harness times the stores moments apart: each repeat runs every store's batch once, in "
    "a rotating order, and a ratio is the median of the stores' ratios repeat by repeat, so "
    "what the machine does to a whole repeat cancels. Checked on 2026-12-07, with lembro's "
    "`MemoryStore.get` over a floor's (a lock, a dict, bare msgspec; 10,000 sessions of "
    "about 250 bytes), the same timed batch both ways, alternated, five runs each, twice "
    "(the machine otherwise quiet). pyperf (`--fast`, about 18 s a run; the ratio of the "
    "two benchmarks' medians) gave ratios spread by max/min 1.12 and 1.30 on the wall clock "
    "(medians of the five 1.44 and 1.37), and 1.43 and 1.85 on the thread's CPU time (1.44 "
    "and 1.23); `harness.measure` (21 repeats, under a second of timing a run) gave 1.10 "
    "and 1.08 on CPU time (1.44 and 1.43), and 1.08 and 1.08 on the wall clock (1.44 and "
    "1.45). Where pyperf serves, one benchmark followed from run to run, `make bench` has "
    "none."
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument(
        "--markdown",
        metavar="PATH",
        type=Path,
        help="write the tables as markdown here (default: a full run of every section "
        f"writes {DEFAULT_MARKDOWN}; a run with --section or --quick writes nothing)",
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default: all); writes no markdown "
        "without --markdown",
    )
    parser.add_argument("--repeats", type=int, help="timed batches per store and operation")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this thread's CPU time (default; leaves out time other processes hold "
        "the core); wall: time.perf_counter_ns",
    )
    parser.add_argument("--sessions", type=int, help="sessions held below the cap")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> Config:
    config = Config.smoke() if args.quick else Config()
    changes: dict[str, Any] = {"clock": args.clock}
    if args.repeats is not None:
        changes["repeats"] = max(1, args.repeats)
    if args.sessions is not None:
        changes["sessions"] = max(1, args.sessions)
    return dataclasses.replace(config, **changes)


def _revision() -> str:
    """The commit measured, "+dirty" when the tree differs from it."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _header(config: Config, started: datetime.datetime) -> list[str]:
    return [
        "# Benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `make bench` (`benchmarks/run.py"
        f"{' --quick' if config.quick else ''}`), Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, lembro at `{_revision()}`; batches timed with the "
        f"{'CPU time of the benchmark thread' if config.clock == 'cpu' else 'wall clock'}"
        " unless a table's title says otherwise (the Redis tables: the wall clock).",
        "",
        "## Method",
        "",
        "The machine is shared and noisy: read the ratios, which come from stores measured "
        "side by side in one process and one run, more than the absolute times. Times are "
        "medians per operation over repeated batches.",
        "",
        WHY_BY_HAND,
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    config = _config(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    sections: list[Section] = []
    for name in args.section or SECTIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise  # the section exists but needs something missing: say so, loudly
            print(f"(section {name}: benchmarks/{name}.py not present, skipped)\n")
            continue
        section: Section = module.run(config)
        sections.append(section)
        print(render_text(section), "\n", flush=True)
    elapsed = time.perf_counter() - t0
    print(f"({elapsed:.0f} s{', quick run: sizes are small' if config.quick else ''})")

    # Only a full run may replace the whole page: a partial one would erase the others.
    whole = not config.quick and not args.section
    path = args.markdown or (DEFAULT_MARKDOWN if whole else None)
    if path is not None:
        body = _header(config, started)
        for section in sections:
            body += ["", render_markdown(section)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(body) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    elif args.section and not config.quick:
        print(
            f"(wrote no markdown: a run of some sections leaves {DEFAULT_MARKDOWN.name} as "
            "it is; --markdown PATH writes its tables)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
