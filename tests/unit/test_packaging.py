"""What pyproject.toml and the Makefile promise: extras for users only, development tools
in dependency groups, a demo that installs only what it needs."""

from __future__ import annotations

import re

import tomllib

from tests.servers import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def test_the_published_extras_are_the_frameworks_and_redis_only() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert set(extras) == {"flask", "starlette", "django", "litestar", "redis"}


def test_the_library_depends_on_msgspec_alone() -> None:
    assert [re.split(r"[<>=!~ ]", dep)[0] for dep in PROJECT["project"]["dependencies"]] == [
        "msgspec"
    ]


def test_development_tools_are_dependency_groups() -> None:
    groups = PROJECT["dependency-groups"]
    assert {"demo", "soak", "test", "lint", "bench", "package", "dev"} <= set(groups)
    names = {dep for dep in groups["lint"] if isinstance(dep, str)}
    assert {name.split(">")[0] for name in names} == {"mypy", "ruff"}


def test_make_demo_installs_only_the_demo_group_and_msgspec() -> None:
    demo = [dep.split(">")[0] for dep in PROJECT["dependency-groups"]["demo"]]
    assert demo == ["flask", "itsdangerous"]
    recipe = MAKEFILE.split("$(VENV)/.demo:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if " install " in line]
    assert installs[-1].endswith("install --quiet --group demo msgspec"), installs
    assert "demo: $(VENV)/.demo\n" in MAKEFILE


def test_the_project_urls_point_at_the_repository() -> None:
    urls = PROJECT["project"]["urls"]
    assert urls["Source"] == "https://github.com/lembro/lembro"
    assert all(url.startswith("https://github.com/lembro/lembro") for url in urls.values())
