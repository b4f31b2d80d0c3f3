"""The wheel as a user gets it: built from this tree, installed into a fresh virtualenv that
holds nothing but msgspec, then imported and run.

msgspec is lent to the new environment from the one running the tests (a ``.pth`` line
naming a directory that holds only msgspec), so the test needs no package index.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import msgspec
import pytest

import lembro
from tests.servers import ROOT

pytestmark = pytest.mark.e2e

# What the wheel may hold besides the package's modules.
_METADATA = {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("lembro-*.whl")
    return built


@pytest.fixture(scope="module")
def bare_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed and msgspec beside it, nothing else."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    lent = tmp_path_factory.mktemp("msgspec-only")
    (lent / "msgspec").symlink_to(Path(msgspec.__file__).parent)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "lent-msgspec.pth").write_text(f"{lent}\n", encoding="utf-8")
    install = ["install", "--quiet", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *install],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return python


def bare_env() -> dict[str, str]:
    """The environment without PYTHONPATH: the wheel's lembro, not this tree's."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
        env=bare_env(),
    )


def test_the_wheel_holds_the_library_its_license_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    package = {name for name in names if name.startswith("lembro/")}
    metadata = {name.split("/", 1)[1] for name in names if ".dist-info/" in name}
    assert set(names) == package | {n for n in names if ".dist-info/" in n}
    assert metadata == _METADATA
    assert "lembro/py.typed" in package
    assert set(ROOT.glob("src/lembro/**/*.py")), "the source tree moved"
    expected = {
        path.relative_to(ROOT / "src").as_posix()
        for path in (ROOT / "src" / "lembro").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert package == expected
    assert not any(part in name for name in names for part in ("demo", "soak", "serving"))


def test_the_wheels_metadata_names_the_license_and_the_project_urls(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    assert "License-Expression: MIT" in metadata
    assert f"\nVersion: {lembro.__version__}\n" in metadata  # pyproject and __version__ agree
    assert "Project-URL: Source, https://github.com/lembro/lembro" in metadata
    assert "Requires-Dist: msgspec" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [line for line in requires if "extra ==" not in line] == ["Requires-Dist: msgspec>=0.18"]
    lines = metadata.splitlines()
    extras = {line.split(": ", 1)[1] for line in lines if line.startswith("Provides-Extra")}
    assert extras == {
        "flask",
        "quart",
        "starlette",
        "fastapi",
        "django",
        "litestar",
        "aiohttp",
        "redis",
        "prometheus",
    }


def test_import_lembro_needs_nothing_but_msgspec(bare_python: Path) -> None:
    done = run(
        bare_python,
        "-c",
        "import lembro, sys; s = lembro.MemoryStore('1M', None); s.set('a' * 43, {'n': 1}); "
        "print(s.get('a' * 43)); s.close(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) "
        "- {'__main__'})); print(lembro.__file__)",
    )
    assert done.returncode == 0, done.stderr
    loaded, imported, where = done.stdout.splitlines()
    assert loaded == "{'n': 1}"
    assert imported == "['lembro', 'msgspec']"
    assert Path(where).is_relative_to(bare_python.parent.parent), where


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("lembro.flask", "flask"),
        ("lembro.starlette", "starlette"),
        ("lembro.django", "django"),
        ("lembro.litestar", "litestar"),
        ("lembro.quart", "quart"),
        ("lembro.aiohttp", "aiohttp"),
    ],
)
def test_each_integration_without_its_framework_names_the_extra_to_install(
    bare_python: Path, module: str, extra: str
) -> None:
    done = run(bare_python, "-c", f"import {module}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), done.stderr
    assert f"lembro[{extra}]" in last, last


def test_the_redis_store_without_redis_py_names_the_extra_to_install(bare_python: Path) -> None:
    done = run(bare_python, "-c", "import lembro; lembro.RedisStore('redis://127.0.0.1:1/0')")
    assert done.returncode == 1
    assert "lembro[redis]" in done.stderr.strip().splitlines()[-1], done.stderr


def test_the_lembro_command_helps_and_says_which_extras_are_missing(bare_python: Path) -> None:
    command = bare_python.parent / "lembro"
    helped = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, check=False, env=bare_env()
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: lembro ")
    assert "info" in helped.stdout
    info = subprocess.run(
        [str(command), "info"], capture_output=True, text=True, check=False, env=bare_env()
    )
    assert info.returncode == 0, info.stderr
    assert "lembro.flask: needs flask: pip install 'lembro[flask]'" in info.stdout
    assert (
        "lembro.RedisStore: needs redis-py or valkey-py: pip install 'lembro[redis]'" in info.stdout
    )
    gone = run(bare_python, "-m", "lembro", "demo")
    assert gone.returncode == 2
    assert "invalid choice: 'demo'" in gone.stderr
