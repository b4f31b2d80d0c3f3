"""``session.regenerate()`` type-checks in an app, with no ``type: ignore``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

APP = """
from flask import Flask
from lembro.flask import Lembro, regenerate, session

app = Flask(__name__)
Lembro(app)


@app.post("/login")
def login() -> str:
    session.regenerate()
    regenerate()
    session["user"] = "alice"
    return "ok"
"""


@pytest.mark.slow
def test_regenerate_type_checks_in_an_app(tmp_path: Path) -> None:
    source = tmp_path / "typed_app.py"
    source.write_text(APP)
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True,
        text=True,
        env={"MYPYPATH": str(src), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
