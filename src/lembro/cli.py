"""``lembro``: what a user of the library runs from a shell.

``lembro info`` prints lembro's version and, for each integration, whether the framework it
needs is installed, with the ``pip install`` line for each one that is not. The demo and the
soak are repository tools (``make demo``, ``make soak``), not part of the package.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from . import __version__

__all__ = ["INTEGRATIONS", "main"]

#: Each integration module, the extra that installs what it needs, and the distributions
#: (import names) it imports.
INTEGRATIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("lembro.flask", "flask", ("flask", "itsdangerous")),
    ("lembro.starlette", "starlette", ("starlette", "itsdangerous")),
    ("lembro.django", "django", ("django",)),
    ("lembro.litestar", "litestar", ("litestar",)),
    ("lembro.RedisStore", "redis", ("redis",)),
)


def _installed(name: str) -> str | None:
    """The installed version of the distribution imported as ``name``, or None."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return "installed"


def _info(args: argparse.Namespace) -> int:
    print(f"lembro {__version__} on Python {platform.python_version()}")
    print(f"  msgspec {_installed('msgspec')}")
    for module, extra, needs in INTEGRATIONS:
        missing = [name for name in needs if _installed(name) is None]
        if missing:
            print(f"  {module}: needs {', '.join(missing)}: pip install 'lembro[{extra}]'")
        else:
            found = ", ".join(f"{name} {_installed(name)}" for name in needs)
            print(f"  {module}: ready ({found})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="lembro",
        description="lembro: server-side sessions that do not leak. "
        "The demo and the soak live in the repository: make demo, make soak.",
    )
    parser.add_argument("--version", action="version", version=f"lembro {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="lembro's version, and which integrations' extras are installed",
        description="Print lembro's version and, for each integration, whether its framework "
        "is installed, with the pip line for each one that is not.",
    )
    info.set_defaults(func=_info)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
