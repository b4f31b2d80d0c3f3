"""Every code block in README.md and docs/ runs as written, or is marked as a fragment.

The convention, for whoever writes the docs (an HTML comment on the line just before a
fence, invisible once rendered, on GitHub, the package index and the docs site alike):

- a ```` ```python ```` block with no mark runs as a script, in its own interpreter, in an
  empty temporary directory, with warnings as errors: it must exit 0, and it asserts what
  it shows (``assert store.get(sid) == ...``);
- ``<!-- run: flask -->`` (or ``starlette``, ``django``, ``litestar``, ``quart``,
  ``aiohttp``) before a block marks
  a quick start: the block defines ``POST /login`` (sign in, regenerating the id),
  ``GET /`` (``hello ada`` or ``hello stranger``) and ``POST /logout``, and the suite then
  drives it through that framework's test client and asserts sign-in, read, a new id at
  the next sign-in, and sign-out (tests/docs_apps.py). A Django block holds settings lines
  and the three views; the suite supplies the URLs and the middleware;
- ``<!-- fragment -->`` before a block: a piece of a larger program, a shell command or a
  configuration file, shown, not run (what it names is tested elsewhere);
- a block that names ``redis://127.0.0.1:6379/0`` runs against the suite's own
  redis-server: the URL is replaced with that server's.

Any other fence without a mark fails here. docs/architecture.md (the maintainer's map; its
fences are diagrams) and the generated benchmark and soak pages are not checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

_FENCE = re.compile(
    r"(?:^<!-- (?P<mark>[a-z]+(?:: [a-z]+)?) -->\n)?^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
FRAMEWORKS = ("flask", "starlette", "django", "litestar", "quart", "aiohttp")
#: The frameworks README shows a quick start for; the others have theirs in docs/.
README_FRAMEWORKS = ("flask", "starlette", "django", "litestar")
README_REDIS_URL = "redis://127.0.0.1:6379/0"
NOT_CHECKED = {"architecture.md", "benchmarks.md", "soak.md"}

DOC_FILES = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name not in NOT_CHECKED),
]
_COMMIT_HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def blocks(path: Path) -> list[tuple[str, str | None, str, str]]:
    """(where, mark, info string, code) of each fenced block in ``path``."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start("info")) + 1
        where = f"{path.relative_to(ROOT)}:{line}"
        found.append((where, m.group("mark"), m.group("info").strip(), m.group("code")))
    return found


ALL_BLOCKS = [block for path in DOC_FILES for block in blocks(path)]
RUN_BLOCKS = [block for block in ALL_BLOCKS if block[1] != "fragment"]


def test_the_docs_hold_the_examples_this_test_expects() -> None:
    readme = blocks(ROOT / "README.md")
    marks = [mark for _, mark, _, _ in readme]
    for framework in README_FRAMEWORKS:
        assert f"run: {framework}" in marks, f"README has no {framework} quick start"
    for framework in FRAMEWORKS:
        page = blocks(ROOT / "docs" / f"{framework}.md")
        assert f"run: {framework}" in [mark for _, mark, _, _ in page], framework
    assert any(README_REDIS_URL in code for _, mark, _, code in readme if mark != "fragment")
    assert len(ALL_BLOCKS) >= 20, "the fence pattern is stale"


@pytest.mark.parametrize(
    ("where", "mark", "info"),
    [(where, mark, info) for where, mark, info, _ in ALL_BLOCKS],
    ids=[block[0] for block in ALL_BLOCKS],
)
def test_every_block_runs_or_is_marked_a_fragment(where: str, mark: str | None, info: str) -> None:
    if mark == "fragment":
        return
    assert info == "python", f"{where}: a ```{info} block: run it as python or mark it"
    assert mark is None or mark.removeprefix("run: ") in FRAMEWORKS, f"{where}: mark {mark!r}"


@pytest.mark.parametrize(
    ("where", "mark", "code"),
    [(where, mark, code) for where, mark, info, code in RUN_BLOCKS if info == "python"],
    ids=[block[0] for block in RUN_BLOCKS if block[2] == "python"],
)
def test_block_runs_as_written(
    where: str, mark: str | None, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if README_REDIS_URL in code:
        code = code.replace(README_REDIS_URL, request.getfixturevalue("redis_server").url)
    if mark is not None:
        framework = mark.removeprefix("run: ")
        app = "globals()" if framework == "django" else "app"
        code += f"\n\nfrom tests.docs_apps import drive_{framework}\ndrive_{framework}({app})\n"
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{where}:\n{done.stderr}"


def test_readme_links_and_images_are_absolute_so_they_work_on_a_package_index() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "no links found: the pattern is stale"
    relative = [target for target in targets if not target.startswith("https://")]
    assert relative == []


def test_readme_is_a_front_door() -> None:
    """Short, names the two set-up commands near the top, and keeps maintainer detail out."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(re.findall(r"\S+", text)) <= 1500
    top = text[:1500]
    assert "make demo" in top
    assert "make test" in top
    for word in ("floor", "claims", "sans-I/O", "FAILED"):
        assert word not in text, word
    assert _COMMIT_HASH.search(text) is None, "a commit hash in README"
