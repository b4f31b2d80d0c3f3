"""The ``lembro`` command: its help names it and its command, ``info`` reports the extras."""

from __future__ import annotations

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


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_info_reports_every_integration_ready_where_all_extras_are_installed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"lembro {lembro.__version__} on Python ")
    for module, _, _ in INTEGRATIONS:
        (line,) = [line for line in out if line.strip().startswith(f"{module}:")]
        assert ": ready (" in line, line
