"""`make bench` still runs: each section of benchmarks/run.py --quick exits 0 and prints
every store's column, the Redis section's round trips per operation, and its targets.

No timing is asserted: the numbers of a smoke run on a shared machine mean nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each section runs on its own (so the runs spread over the test workers), with the
# stores each must print beside lembro's.
SECTION_STORES = {
    "memory_stores": (
        "lembro MemoryStore",
        "floor",
        "cachetools TLRUCache",
        "Django LocMemCache",
        "cachelib SimpleCache",
        "starsessions InMemoryStore",
        "lembro (as_async)",
    ),
    # On a redis-server of its own (Debian's; `make redis-server`).
    "redis_stores": (
        "lembro RedisStore",
        "Flask-Session redis",
        "floor (redis-py)",
        "lembro AsyncRedisStore",
        "starsessions RedisStore",
        "floor (redis.asyncio)",
    ),
    # Each framework's sessions beside lembro's.
    "requests": (
        "Starlette cookie",
        "Flask cookie",
        "Flask-Session cachelib",
        "Django cache (LocMem)",
        "Django signed_cookies",
        "Django db (SQLite)",
        "lembro engine, Django's middleware",
        "Litestar server-side MemoryStore",
        "Litestar cookie",
    ),
    # Quart's and aiohttp's sessions beside lembro's, in process and on Redis.
    "quart_aiohttp": (
        "Quart cookie",
        "quart-session (dict backend)",
        "aiohttp-session SimpleCookieStorage",
        "aiohttp-session EncryptedCookieStorage",
        "quart-session redis",
        "aiohttp-session RedisStorage",
    ),
    "flood": ("lembro MemoryStore", "cachelib SimpleCache", "cachetools TLRUCache"),
    "stalls": ("one lifetime: longest get() wait", "mixed lifetimes: longest get() wait"),
}
# What else each section must print.
SECTION_TEXT = {
    "memory_stores": ("get (hit)", "update, one key"),
    # Round trips are counted, not timed, so they are exact even in a smoke run.
    "redis_stores": (
        "[1 RT: GET]",
        "[1 RT: SET]",
        "[1 RT: PEXPIRE]",
        "[1 RT: DEL]",
        "[2 RT: GET, SET]",
    ),
    "requests": (
        "session cost per request (µs)",
        "Starlette under uvicorn (requests/s)",
        # lembro beside its best peer, in each framework
        *(
            f"{framework} (best peer: "
            for framework in ("Starlette", "Flask", "Django", "Litestar")
        ),
    ),
    "quart_aiohttp": (
        "Quart: lembro's cost at most half of every peer's",
        "aiohttp: lembro's cost at most half of every peer's",
    ),
    "flood": ("Bot requests per user session lost",),
    "stalls": ("destroy_sessions_of()",),
}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("section", sorted(SECTION_STORES))
def test_quick_run_of_a_section_prints_and_writes_its_tables(section: str, tmp_path: Path) -> None:
    markdown = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--section",
            section,
            "--repeats",
            "1",
            "--sessions",
            "300",
            "--markdown",
            str(markdown),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    printed_headers = [line for line in done.stdout.splitlines() if line.startswith("operation")]
    printed = {cell.strip() for line in printed_headers for cell in line.split("  ") if cell}
    assert set(SECTION_STORES[section]) <= printed, done.stdout
    for text in SECTION_TEXT[section]:
        assert text in done.stdout, done.stdout
    assert "Targets:" in done.stdout
    if section == "redis_stores":
        for store in ("lembro RedisStore", "lembro AsyncRedisStore"):
            verdicts = [
                line.split()[0]
                for line in done.stdout.splitlines()
                if line.strip().startswith(("PASS", "FAIL")) and f" {store}" in line
            ]
            # One round-trip target and two latency targets (get, set) per Redis store.
            assert len(verdicts) == 3, done.stdout

    written = markdown.read_text(encoding="utf-8")
    headers = [line for line in written.splitlines() if line.startswith("| operation |")]
    cells = {cell.strip() for line in headers for cell in line.strip("|").split("|")}
    assert set(SECTION_STORES[section]) <= cells, written


def test_a_ratio_is_the_median_of_the_ratios_repeat_by_repeat() -> None:
    from benchmarks.harness import Row, Timings

    # The machine slowed down tenfold in the third repeat, for both stores alike.
    timings = Timings({"mine": [1.2, 2.0, 12.0], "floor": [1.0, 1.0, 10.0]})
    row = Row.timed("get", "µs", timings, ["mine", "floor", "absent"])
    assert row.values == {"mine": 2.0, "floor": 1.0, "absent": None}
    assert row.ratio("mine", "floor") == pytest.approx(1.2)  # 1.2, 2.0, 1.2: not 2.0 / 1.0
    assert row.ratio("absent", "floor") is None
    # Values not timed together (no samples) fall back to the ratio of the values.
    assert Row("purge", "ms", {"mine": 3.0, "floor": 30.0}).ratio("mine", "floor") == 0.1


def _run_module(monkeypatch: pytest.MonkeyPatch, default: Path) -> ModuleType:
    """benchmarks/run.py as a module, its default markdown at ``default`` and one section,
    ``stalls``, that measures nothing."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setattr(run, "DEFAULT_MARKDOWN", default)
    monkeypatch.setattr(run, "SECTIONS", ("stalls",))
    section = ModuleType("stalls")
    section.run = lambda config: run.Section("Stalls", [])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stalls", section)
    return run


def test_a_run_of_some_sections_leaves_the_benchmarks_page_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("every section's tables\n", encoding="utf-8")
    run = _run_module(monkeypatch, page)

    assert run.main(["--section", "stalls"]) == 0
    assert page.read_text(encoding="utf-8") == "every section's tables\n"

    elsewhere = tmp_path / "stalls.md"
    assert run.main(["--section", "stalls", "--markdown", str(elsewhere)]) == 0
    assert "## Stalls" in elsewhere.read_text(encoding="utf-8")
    assert page.read_text(encoding="utf-8") == "every section's tables\n"


def test_a_full_run_writes_the_benchmarks_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("last run's tables\n", encoding="utf-8")
    run = _run_module(monkeypatch, page)

    assert run.main([]) == 0
    assert "## Stalls" in page.read_text(encoding="utf-8")
