"""Command-line option types the tools share: lembro's own checks, lembro's own messages."""

from __future__ import annotations

import argparse

from lembro import LembroError, parse_size

__all__ = ["size_option", "size_text_option"]


def size_option(text: str) -> int:
    """Parse a ``--max-size`` value ("4M", "512K", a number of bytes) into bytes; a bad value
    is reported with lembro's ``InvalidSize`` message rather than argparse's generic one."""
    try:
        return parse_size(text)
    except LembroError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def size_text_option(text: str) -> str:
    """Check a ``--max-size`` value as :func:`size_option` does, and keep it as written
    ("4M"), for tools that pass it on to a server process or print it in a report."""
    size_option(text)
    return text
