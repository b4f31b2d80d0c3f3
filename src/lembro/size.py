"""Byte sizes: ``parse_size("4M") == 4 * 1024**2`` and ``format_size(4194304) == "4 MiB"``."""

from __future__ import annotations

import math
import re

from .errors import InvalidSize

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_NAMES = ("B", "KiB", "MiB", "GiB", "TiB")


def parse_size(value: int | str) -> int:
    """Return ``value`` as a number of bytes.

    An ``int`` passes through; a string is a number with an optional unit K, M, G or T
    (also KB, KiB, "4 MB", "1.5M", any case), each a power of 1024. Anything else, and any
    size that is not at least one byte, raises :class:`InvalidSize`, a ``ValueError``.
    """
    if isinstance(value, bool):
        raise InvalidSize(value, "a bool is not a size")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidSize(value, "must be at least 1 byte")
        return value
    if not isinstance(value, str):
        raise InvalidSize(value, f"a {type(value).__name__} is not a size")
    match = _PATTERN.match(value)
    if match is None:
        raise InvalidSize(value)
    number, unit = match.groups()
    size = float(number) * 1024 ** _UNITS[unit.lower()]
    if not math.isfinite(size) or size < 1:
        raise InvalidSize(value, "must be at least 1 byte")
    return int(size)


def format_size(size: int) -> str:
    """Return ``size`` bytes as a short string in powers of 1024: ``"4 MiB"``, ``"1.5 KiB"``."""
    amount = float(size)
    for name in _NAMES:
        if abs(amount) < 1024 or name == _NAMES[-1]:
            text = f"{amount:.1f}".rstrip("0").rstrip(".")
            return f"{text} {name}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
