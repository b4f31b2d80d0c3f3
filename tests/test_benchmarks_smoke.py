"""`make bench` still runs: benchmarks/run.py --quick exits 0 and prints every store's column.

No timing is asserted: the numbers of a smoke run on a shared machine mean nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORES = (
    "lembro MemoryStore",
    "floor",
    "cachetools TLRUCache",
    "Django LocMemCache",
    "cachelib SimpleCache",
    "starsessions InMemoryStore",
    "lembro (as_async)",
)


@pytest.mark.slow
def test_quick_run_prints_and_writes_a_table_with_every_store(tmp_path: Path) -> None:
    markdown = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--repeats",
            "1",
            "--sessions",
            "300",
            "--markdown",
            str(markdown),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    printed_headers = [line for line in done.stdout.splitlines() if line.startswith("operation")]
    printed = {cell.strip() for line in printed_headers for cell in line.split("  ") if cell}
    assert set(STORES) <= printed, done.stdout
    assert "get (hit)" in done.stdout
    assert "Targets:" in done.stdout

    written = markdown.read_text(encoding="utf-8")
    headers = [line for line in written.splitlines() if line.startswith("| operation |")]
    cells = {cell.strip() for line in headers for cell in line.strip("|").split("|")}
    assert set(STORES) <= cells, written
