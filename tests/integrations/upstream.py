"""Fetch a framework's own test files from its source distribution on the package index.

The frameworks' wheels ship no tests, so the suites that lembro must pass (Starlette's
session middleware tests, Django's session backend tests) are read from the sdist of the
installed version, downloaded once with pip into ``.venv/upstream/`` and never committed.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

__all__ = ["upstream_source"]

_CACHE = Path(sys.prefix) / "upstream"


def _sdist(dist: str) -> Path:
    wanted = version(dist)
    _CACHE.mkdir(parents=True, exist_ok=True)
    for path in _CACHE.glob("*.tar.gz"):
        if path.name.lower() == f"{dist.lower()}-{wanted}.tar.gz":
            return path
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(_CACHE),
            f"{dist}=={wanted}",
        ],
        check=True,
    )
    return _sdist(dist)


def upstream_source(dist: str, member: str) -> str:
    """Return the text of ``member`` (e.g. ``"tests/middleware/test_session.py"``) in the
    sdist of the installed version of ``dist``."""
    archive = _sdist(dist)
    with tarfile.open(archive) as tar:
        for info in tar.getmembers():
            if info.name.split("/", 1)[-1] == member:
                handle = tar.extractfile(info)
                assert handle is not None
                return handle.read().decode()
    raise FileNotFoundError(f"{member} not in {archive.name}")
