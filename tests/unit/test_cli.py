"""The ``lembro`` command: its help names it and its command, ``info`` reports the extras."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lembro
from lembro.cli import INTEGRATIONS, main


def test_help_names_the_command_and_its_one_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lembro ")
    assert "info" in out
    assert "make demo" in out  # where the demo went


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"lembro {lembro.__version__}"


def test_no_command_prints_the_help_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: lembro ")
    assert "info" in captured.out
    assert captured.err == ""


def test_info_reports_every_integration_ready_where_all_extras_are_installed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"lembro {lembro.__version__} on Python ")
    for module, _, _ in INTEGRATIONS:
        (line,) = [line for line in out if line.strip().startswith(f"{module}:")]
        assert ": ready (" in line, line


def _info_without(*modules: str) -> dict[str, str]:
    """``lembro info``'s line for each integration, in a process where ``modules`` are missing."""
    code = (
        "import sys\n"
        f"for name in {modules!r}: sys.modules[name] = None\n"
        "from lembro.cli import main\n"
        "sys.exit(main(['info']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [line.strip().split(": ", 1) for line in done.stdout.splitlines()[2:]]
    return {module: rest for module, rest in lines}


def test_info_reports_starlette_ready_without_itsdangerous() -> None:
    # lembro signs its own cookies; only Flask itself imports itsdangerous.
    lines = _info_without("itsdangerous")
    assert lines["lembro.starlette"].startswith("ready (starlette ")
    assert lines["lembro.flask"] == "needs itsdangerous: pip install 'lembro[flask]'"


def test_info_reports_redis_store_ready_with_valkey_alone() -> None:
    lines = _info_without("redis")
    assert lines["lembro.RedisStore"].startswith("ready (valkey ")


def test_info_names_the_missing_framework_and_its_extra() -> None:
    lines = _info_without("litestar", "django", "redis", "valkey")
    assert lines["lembro.litestar"] == "needs litestar: pip install 'lembro[litestar]'"
    assert lines["lembro.django"] == "needs django: pip install 'lembro[django]'"
    assert lines["lembro.RedisStore"] == "needs redis-py or valkey-py: pip install 'lembro[redis]'"
    assert lines["lembro.flask"].startswith("ready (flask ")


def test_info_names_the_extras_of_quart_and_aiohttp() -> None:
    lines = _info_without("quart", "aiohttp_session")
    assert lines["lembro.quart"] == "needs quart: pip install 'lembro[quart]'"
    assert lines["lembro.aiohttp"] == "needs aiohttp_session: pip install 'lembro[aiohttp]'"
    ready = _info_without()
    assert ready["lembro.quart"].startswith("ready (quart ")
    assert ready["lembro.aiohttp"].startswith("ready (aiohttp_session ")


def test_info_names_the_prometheus_extra_for_the_metrics() -> None:
    lines = _info_without("prometheus_client")
    assert lines["lembro.metrics"] == "needs prometheus_client: pip install 'lembro[prometheus]'"
