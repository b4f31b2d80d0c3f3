"""``lembro``: what a user of the library runs from a shell.

``lembro info`` prints lembro's version and, for each integration, whether it imports: it
imports each one as a user's code would, and names what is missing, with the ``pip install``
line, for each one that does not. The demo and the soak are repository tools (``make demo``,
``make soak``), not part of the package.
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

#: Each integration, the extra that installs what it needs, and the framework whose version
#: ``info`` shows (for RedisStore, whichever of redis-py and valkey-py it found).
INTEGRATIONS: tuple[tuple[str, str, str | None], ...] = (
    ("lembro.flask", "flask", "flask"),
    ("lembro.starlette", "starlette", "starlette"),
    ("lembro.django", "django", "django"),
    ("lembro.litestar", "litestar", "litestar"),
    ("lembro.quart", "quart", "quart"),
    ("lembro.aiohttp", "aiohttp", "aiohttp_session"),
    ("lembro.RedisStore", "redis", None),
    ("lembro.metrics", "prometheus", "prometheus_client"),
)


def _installed(name: str) -> str | None:
    """The installed version of the distribution imported as ``name``, or None."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return "installed"


def _load(integration: str) -> str:
    """Import what ``integration`` imports, as a user's code would; the client library it uses.

    Raises whatever the import raises: ``ImportError`` when something it needs is missing.
    """
    if integration == "lembro.RedisStore":
        # `import lembro` defers the client library to the first store; load it now.
        from .redis.core import _client_library

        return _client_library().__name__
    importlib.import_module(integration)
    return ""


def _missing(integration: str, error: ImportError) -> str:
    """What ``error``, raised loading ``integration``, says is missing."""
    if integration == "lembro.RedisStore":
        return "redis-py or valkey-py"
    cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
    # A submodule's name where the package itself is missing: the package is what to install.
    return cause.name.partition(".")[0] if cause.name else str(cause)


def _info(args: argparse.Namespace) -> int:
    print(f"lembro {__version__} on Python {platform.python_version()}")
    print(f"  msgspec {_installed('msgspec')}")
    for integration, extra, framework in INTEGRATIONS:
        try:
            found = _load(integration)
        except ImportError as e:
            print(
                f"  {integration}: needs {_missing(integration, e)}: pip install 'lembro[{extra}]'"
            )
            continue
        except Exception as e:  # info reports a broken install, it does not crash on one
            print(f"  {integration}: fails to import: {type(e).__name__}: {e}")
            continue
        name = framework or found
        print(f"  {integration}: ready ({name} {_installed(name)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="lembro",
        description="lembro: server-side sessions that do not leak. "
        "The demo and the soak live in the repository: make demo, make soak.",
    )
    parser.add_argument("--version", action="version", version=f"lembro {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="lembro's version, and which integrations import",
        description="Print lembro's version and, for each integration, whether it imports, "
        "with what is missing and the pip line for each one that does not.",
    )
    info.set_defaults(func=_info)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
