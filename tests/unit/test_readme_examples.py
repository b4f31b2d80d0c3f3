"""Every ```python block in README.md runs as written, and every link in it is absolute.

Each block runs in a fresh namespace in its own interpreter, in an empty temporary
directory, with the Django settings module unset. Only blocks that need a server which the
reader must start first are skipped, each with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
# A block that needs a server the reader runs: what it needs, told by what it calls.
_NEEDS_SERVER = {"RedisStore(": "a Redis server at 127.0.0.1:6379"}


def readme_blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


BLOCKS = readme_blocks()


def test_readme_has_the_examples_this_test_expects() -> None:
    assert len(BLOCKS) >= 6
    assert sum(any(k in code for k in _NEEDS_SERVER) for _, code in BLOCKS) <= 2


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line {line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line: int, code: str, tmp_path: Path) -> None:
    for marker, needs in _NEEDS_SERVER.items():
        if marker in code:
            pytest.skip(f"README line {line} needs {needs}")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"README line {line}:\n{done.stderr}"


def test_links_and_images_are_absolute_so_they_work_on_a_package_index() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "no links found: the pattern is stale"
    relative = [target for target in targets if not target.startswith("https://")]
    assert relative == []
