"""A short soak through the real command (``python -m tools.soak``, as ``make soak`` runs it):
three real servers, real HTTP, a chart and a table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, tools_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LABELS = {
    "lembro": "lembro MemoryStore (4M)",
    "flask-session": "Flask-Session 0.8 + cachelib SimpleCache",
    "dict": "unbounded dict store",
}
# The table's columns, in order, after the store's label.
COLUMNS = [
    "requests",
    "errors",
    "req/s",
    "cpu",
    "p50",
    "p99",
    "lost",
    "held",
    "rss10",
    "peak",
    "final",
]


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The soak table's rows by store label, each as column -> cell text."""
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in LABELS.values():
            rows[cells[0]] = dict(zip(COLUMNS, cells[1:], strict=True))
    return rows


def test_short_soak_writes_chart_and_table_and_lembro_keeps_every_user(tmp_path: Path) -> None:
    # Each user returns several times even in this short run: a lost session shows.
    command = [sys.executable, "-m", "tools.soak", "--duration", "1", "--users", "50"]
    command += ["--connections", "4", "--out", str(tmp_path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=tools_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr

    png = tmp_path / "soak.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = table_rows((tmp_path / "soak.md").read_text(encoding="utf-8"))
    assert set(rows) == set(LABELS.values())
    # The table is printed as well as written.
    assert all(label in done.stdout for label in LABELS.values())

    for row in rows.values():
        assert int(row["requests"].replace(",", "")) > 0, row
    lembro = rows[LABELS["lembro"]]
    assert lembro["errors"] == "0", lembro
    assert lembro["lost"].startswith("0 of 50"), lembro
    assert "PASS 0 returning users logged out by the flood, for lembro" in done.stdout


def test_unknown_store_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.soak", "--stores", "lembro,nope"]
    command += ["--out", str(tmp_path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=tools_env()
    )
    assert done.returncode != 0
    assert "nope" in done.stderr
    assert not (tmp_path / "soak.md").exists()


def test_a_bad_max_size_is_refused_with_lembros_message_before_any_load(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.soak", "--max-size", "4X", "--out", str(tmp_path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=tools_env()
    )
    assert done.returncode == 2
    assert "argument --max-size: invalid size '4X'" in done.stderr
    assert not (tmp_path / "soak.md").exists()
