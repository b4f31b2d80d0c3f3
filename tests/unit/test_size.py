"""parse_size and format_size."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lembro import InvalidSize, LembroError, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4M", 4 * 1024**2),
        ("4m", 4 * 1024**2),
        ("4MB", 4 * 1024**2),
        ("4 MB", 4 * 1024**2),
        ("4MiB", 4 * 1024**2),
        ("4 mib", 4 * 1024**2),
        ("512K", 512 * 1024),
        ("512kb", 512 * 1024),
        ("1.5M", int(1.5 * 1024**2)),
        ("2G", 2 * 1024**3),
        ("1T", 1024**4),
        ("100", 100),
        ("100B", 100),
        (" 7 k ", 7 * 1024),
        (".5K", 512),
        (4096, 4096),
    ],
)
def test_parse_size_accepts_units_as_powers_of_1024(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        "-4M",
        "0",
        "0M",
        "0.0001",
        "4X",
        "M",
        "4MM",
        "nan",
        "NaN",
        "inf",
        "1e3",
        "4 M B",
        True,
        False,
        0,
        -1,
        1.5,
        None,
        math.nan,
        b"4M",
        [4],
    ],
)
def test_parse_size_rejects_anything_else_naming_the_value(bad: object) -> None:
    with pytest.raises(InvalidSize) as info:
        parse_size(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, LembroError)
    assert repr(bad) in str(info.value)
    assert info.value.value is bad


@given(st.integers(min_value=1, max_value=2**62))
def test_parse_size_passes_positive_ints_through(n: int) -> None:
    assert parse_size(n) == n


@given(st.text(max_size=30))
def test_parse_size_either_returns_positive_int_or_raises_invalid_size(text: str) -> None:
    try:
        result = parse_size(text)
    except InvalidSize:
        return
    assert isinstance(result, int)
    assert result >= 1


@given(st.integers(min_value=1, max_value=1023), st.sampled_from(["K", "M", "G"]))
def test_parse_size_round_trips_whole_units(n: int, unit: str) -> None:
    size = parse_size(f"{n}{unit}")
    assert format_size(size) == f"{n} {unit}iB"


@pytest.mark.parametrize(
    ("size", "text"),
    [(4194304, "4 MiB"), (1536, "1.5 KiB"), (100, "100 B"), (0, "0 B"), (3 * 1024**3, "3 GiB")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
