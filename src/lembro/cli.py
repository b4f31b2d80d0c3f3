"""``python -m lembro demo | soak``: the demo server, and the soak under real HTTP load."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .size import parse_size

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from .demo import create_app
    from .memory import MemoryStore
    from .serving import serve_until_stopped

    store = MemoryStore(
        args.max_size,
        5.0,
        ttl=args.ttl,
        snapshot=args.snapshot or None,
        snapshot_interval=args.snapshot_interval if args.snapshot else None,
    )
    app = create_app(store, secret_key=args.secret_key)
    server = make_server(args.host, args.port, app, threaded=True)
    return serve_until_stopped(
        server, f"lembro demo on http://{args.host}:{{port}}/  (Ctrl-C stops)", store.close
    )


def _soak(args: argparse.Namespace) -> int:
    from .soak import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lembro", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="serve the demo app (default http://127.0.0.1:8000)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--max-size", type=parse_size, default="4M", help="the cap, e.g. 4M")
    demo.add_argument("--ttl", type=float, default=1800.0, help="session lifetime, seconds")
    demo.add_argument("--secret-key", default="lembro demo: not a secret")
    demo.add_argument(
        "--snapshot",
        default="lembro-demo.snapshot",
        help="file that keeps sessions across restarts (written on exit); '' for none",
    )
    demo.add_argument(
        "--snapshot-interval",
        type=float,
        default=None,
        help="also write the snapshot every this many seconds (survives a crash)",
    )
    demo.set_defaults(func=_demo)

    soak = commands.add_parser("soak", help="drive real servers with real traffic; plot memory")
    from .soak import add_arguments

    add_arguments(soak)
    soak.set_defaults(func=_soak)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
