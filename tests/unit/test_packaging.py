"""What pyproject.toml and the Makefile promise: extras for users only, development tools
in dependency groups, a demo that installs only what it needs."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version

import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from trove_classifiers import classifiers as KNOWN_CLASSIFIERS

from tests.servers import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def test_the_published_extras_are_the_frameworks_redis_and_prometheus_only() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert set(extras) == {
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


def test_every_extra_is_installed_by_the_test_group_at_a_version_it_allows() -> None:
    # So the suite runs against what each extra installs.
    for extra, requirements in PROJECT["project"]["optional-dependencies"].items():
        for line in requirements:
            requirement = Requirement(line)
            assert requirement.specifier.contains(version(requirement.name)), (extra, line)


def test_every_classifier_is_a_trove_classifier() -> None:
    unknown = set(PROJECT["project"]["classifiers"]) - KNOWN_CLASSIFIERS
    assert not unknown


def test_classifiers_name_every_framework_and_every_python_version_supported() -> None:
    classifiers = PROJECT["project"]["classifiers"]
    for framework in ("Django", "FastAPI", "Flask", "Litestar", "aiohttp"):
        assert f"Framework :: {framework}" in classifiers
    minors = sorted(
        int(c.rsplit(".", 1)[1])
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert minors == list(range(minors[0], minors[-1] + 1))  # no gap
    requires = SpecifierSet(PROJECT["project"]["requires-python"])
    assert not requires.contains(f"3.{minors[0] - 1}")
    assert requires.contains(f"3.{minors[0]}")
    assert sys.version_info.minor in minors


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
    assert demo == ["flask", "itsdangerous", "prometheus-client"]
    recipe = MAKEFILE.split("$(VENV)/.demo:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if " install " in line]
    assert installs[-1].endswith("install --quiet --group demo msgspec"), installs
    assert "demo: $(VENV)/.demo\n" in MAKEFILE


def test_the_project_urls_point_at_the_repository() -> None:
    urls = PROJECT["project"]["urls"]
    assert urls["Source"] == "https://github.com/lembro/lembro"
    assert all(url.startswith("https://github.com/lembro/lembro") for url in urls.values())
