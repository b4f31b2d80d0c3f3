"""CookieSigner through its own API: ids in and out of cookie values, key rotation, and
the cache of values already verified."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from lembro._cookies import MAX_COOKIE_LENGTH, VERIFIED_CACHE_SIZE, CookieSigner, cookie_value
from lembro.ids import new_session_id


def _forge(value: str) -> str:
    """``value`` with the last character of its tag changed."""
    last = "A" if value[-1] != "A" else "B"
    return value[:-1] + last


def test_a_signed_id_comes_back_and_a_changed_tag_does_not() -> None:
    signer = CookieSigner("secret")
    sid = new_session_id()
    value = signer.sign(sid)
    assert len(value) == MAX_COOKIE_LENGTH
    assert signer.unsign(value) == (sid, False)
    assert signer.unsign(_forge(value)) == (None, False)


def test_a_value_verified_before_is_answered_the_same_and_its_forgeries_still_fail() -> None:
    signer = CookieSigner("secret")
    sid = new_session_id()
    value = signer.sign(sid)
    for _ in range(3):  # the second and third answers come from the cache
        assert signer.unsign(value) == (sid, False)
        assert signer.unsign(_forge(value)) == (None, False)
        assert signer.unsign(value[:43] + "." + value[:43]) == (None, False)


def test_a_value_signed_with_a_fallback_key_asks_for_re_signing_every_time() -> None:
    old = CookieSigner("old secret")
    signer = CookieSigner("new secret", ["old secret"])
    sid = new_session_id()
    value = old.sign(sid)
    assert signer.unsign(value) == (sid, True)
    assert signer.unsign(value) == (sid, True)  # remembered with its answer, not as current
    assert signer.unsign(signer.sign(sid)) == (sid, False)


def test_another_signer_does_not_share_what_one_verified() -> None:
    """A signer's keys never change; a rotated key is a new signer, which verifies anew."""
    first = CookieSigner("first secret")
    value = first.sign(new_session_id())
    assert first.unsign(value)[0] is not None
    assert CookieSigner("second secret").unsign(value) == (None, False)


@pytest.mark.parametrize(
    "value",
    ["", "x", "." * MAX_COOKIE_LENGTH, "é" * MAX_COOKIE_LENGTH, "a" * 10_000, "\x00" * 87],
)
def test_values_of_the_wrong_shape_are_refused_without_raising(value: str) -> None:
    assert CookieSigner("secret").unsign(value) == (None, False)


def test_the_cache_of_verified_values_stays_bounded_whatever_the_traffic() -> None:
    """Many distinct clients, and a flood of forged values: the signer's memory stays
    within what ``VERIFIED_CACHE_SIZE`` values cost, and every answer stays right."""
    signer = CookieSigner("secret")
    values = [signer.sign(new_session_id()) for _ in range(20 * VERIFIED_CACHE_SIZE)]
    forged = [_forge(value) for value in values]
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        for value, fake in zip(values, forged, strict=True):
            assert signer.unsign(value) == (value[:43], False)
            assert signer.unsign(fake) == (None, False)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The values themselves are held by the test; an entry adds its id and the answer.
    assert grown < VERIFIED_CACHE_SIZE * 300
    assert all(signer.unsign(value) == (value[:43], False) for value in values[-10:])


def test_cookie_value_finds_the_named_cookie_first_or_last() -> None:
    header = "a=1; session=first; b=2; session=second"
    assert cookie_value(header, "session") == "first"
    assert cookie_value(header, "session", last=True) == "second"
    assert cookie_value(header, "missing") is None


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize(
    ("header", "found"),
    [
        ("session=abc", "abc"),
        (" session = abc ", "abc"),
        ("session=", ""),
        ("session", ""),
        ("xsession=abc", None),
        ("sessionx=abc", None),
        ("other=abc", None),
        ("", None),
        ("session=a=b", "a=b"),
    ],
)
def test_a_header_of_one_cookie_is_read_as_one_of_several_would_be(
    header: str, found: str | None, last: bool
) -> None:
    assert cookie_value(header, "session", last=last) == found
    assert cookie_value(header + "; other=1", "session", last=last) == found
