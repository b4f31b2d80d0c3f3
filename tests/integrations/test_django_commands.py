"""``manage.py check`` and ``manage.py clearsessions`` with lembro.django, run as a user
runs them: a real ``django-admin`` process on a settings module of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _django_admin(
    tmp_path: Path, lembro: str, *command: str, engine: str = "lembro.django"
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "lembro_test_settings.py").write_text(
        "SECRET_KEY = 'x'\n"
        "INSTALLED_APPS = ['django.contrib.sessions', 'lembro.django.LembroConfig']\n"
        f"SESSION_ENGINE = {engine!r}\n"
        f"LEMBRO = {lembro}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)]),
        "DJANGO_SETTINGS_MODULE": "lembro_test_settings",
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("lembro", "named"),
    [
        ('{"MAX_SIZE": "4X"}', "4X"),
        ('{"NOPE": 1}', "NOPE"),
        ('{"STORE": "mongo"}', "mongo"),
        ('{"STORE": "redis"}', "URL"),
        ('{"LOW_WATER": 2}', "low_water"),
    ],
)
def test_check_fails_on_a_bad_lembro_setting(tmp_path: Path, lembro: str, named: str) -> None:
    result = _django_admin(tmp_path, lembro, "check")
    assert result.returncode != 0
    assert "lembro.E001" in result.stderr
    assert named in result.stderr


def test_check_passes_on_good_settings(tmp_path: Path) -> None:
    result = _django_admin(tmp_path, '{"MAX_SIZE": "8M", "INTERVAL": 60}', "check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("engine", ["lembro", "lembro.django.SessionStore"])
def test_check_fails_on_a_session_engine_naming_lembro_wrongly(tmp_path: Path, engine: str) -> None:
    # Both pass Django's own checks and fail only at the first request.
    result = _django_admin(tmp_path, "{}", "check", engine=engine)
    assert result.returncode != 0
    assert "lembro.E002" in result.stderr
    assert f"SESSION_ENGINE = {engine!r}" in result.stderr
    assert "HINT: SESSION_ENGINE = 'lembro.django'" in result.stderr


def test_clearsessions_with_the_memory_store_says_why_there_is_nothing_to_purge(
    tmp_path: Path,
) -> None:
    result = _django_admin(tmp_path, '{"MAX_SIZE": "4M"}', "clearsessions")
    assert result.returncode == 0, result.stderr
    assert "lives inside the server process" in result.stderr
    assert "nothing to purge" in result.stderr


def test_clearsessions_with_redis_says_redis_expires_sessions_itself(
    tmp_path: Path, redis_server: Any
) -> None:
    lembro = f'{{"STORE": "redis", "URL": "{redis_server.url}"}}'
    result = _django_admin(tmp_path, lembro, "clearsessions")
    assert result.returncode == 0, result.stderr
    assert "Redis removes expired sessions itself" in result.stderr
