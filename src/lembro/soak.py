"""The soak: placeholder until the soak lands (issue 4)."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the soak's options to ``parser``."""
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per store")


def run(args: argparse.Namespace) -> int:
    """Run the soak; return the exit status."""
    raise SystemExit("the soak is not written yet")
