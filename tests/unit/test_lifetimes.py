"""Device, SessionInfo and Loaded (lembro.lifetimes) and the option checks stores share."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

import lembro
from lembro import Device, InvalidOption, Loaded, SessionInfo
from lembro.lifetimes import (
    MAX_IP,
    MAX_USER_AGENT,
    check_device,
    check_grace,
    check_max_sessions,
)

NOW = datetime(2026, 12, 7, 14, 0, tzinfo=timezone.utc)


def info(**changes: Any) -> SessionInfo:
    fields: dict[str, Any] = {
        "id": "s" * 43,
        "owner": "ana",
        "created": NOW,
        "renewed": NOW,
        "last_seen": NOW,
        "expires": NOW,
        "absolute_expires": None,
        "ip": None,
        "user_agent": None,
    }
    fields.update(changes)
    return SessionInfo(**fields)


def test_the_new_names_are_lembros_own() -> None:
    for name in ("Device", "SessionInfo", "Loaded"):
        assert name in lembro.__all__
        assert getattr(lembro, name) is getattr(lembro.lifetimes, name)


def test_a_device_is_frozen_and_defaults_to_unknown() -> None:
    device = Device()
    assert (device.ip, device.user_agent) == (None, None)
    with pytest.raises(AttributeError):
        device.ip = "198.51.100.7"  # type: ignore[misc]
    assert Device("198.51.100.7", "ua") == Device(ip="198.51.100.7", user_agent="ua")
    assert hash(Device("a", "b")) == hash(Device("a", "b"))  # usable as a key


def test_session_info_is_frozen_and_encodes_as_json() -> None:
    one = info(ip="198.51.100.7")
    with pytest.raises(AttributeError):
        one.owner = "bob"  # type: ignore[misc]
    decoded = msgspec.json.decode(msgspec.json.encode(one), type=SessionInfo)
    assert decoded == one  # a devices page can hand it to the browser as it is
    assert decoded.created.tzinfo is not None


def test_loaded_is_a_named_tuple_of_id_data_and_the_time_left() -> None:
    loaded = Loaded("new-id", {"n": 1}, 12.5)
    sid, data, left = loaded
    assert (sid, data, left) == ("new-id", {"n": 1}, 12.5)
    assert loaded.absolute_left == 12.5


def test_check_device_keeps_a_good_device_as_it_is() -> None:
    device = Device("2001:db8::1", "Mozilla/5.0")
    assert check_device(device) is device
    assert check_device(None) is None
    assert check_device(Device()) == Device()


def test_check_device_cuts_a_long_user_agent_rather_than_refuse_it() -> None:
    cut = check_device(Device("198.51.100.7", "é" * (MAX_USER_AGENT + 5)))
    assert cut == Device("198.51.100.7", "é" * MAX_USER_AGENT)


@pytest.mark.parametrize(
    "bad",
    [
        "198.51.100.7",
        ("198.51.100.7", "ua"),
        {"ip": "198.51.100.7"},
        Device(ip=7),  # type: ignore[arg-type]
        Device(ip="1" * (MAX_IP + 1)),
        Device(user_agent=b"curl"),  # type: ignore[arg-type]
    ],
)
def test_check_device_refuses_what_is_not_a_device(bad: Any) -> None:
    with pytest.raises(InvalidOption):
        check_device(bad)


@pytest.mark.parametrize("good", [0, 0.0, 10, 2.5])
def test_a_grace_is_zero_or_more_finite_seconds(good: float) -> None:
    assert check_grace(good) == float(good)


@pytest.mark.parametrize("bad", [-1, -0.1, math.inf, math.nan, "10", None, True])
def test_a_bad_grace_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidOption, match="renew_grace"):
        check_grace(bad, "renew_grace")


def test_max_sessions_is_a_positive_int_and_needs_an_owner_key() -> None:
    assert check_max_sessions(None, None) is None
    assert check_max_sessions(3, "user") == 3
    for bad in (0, -1, 1.0, True, "3"):
        with pytest.raises(InvalidOption):
            check_max_sessions(bad, "user")
    with pytest.raises(InvalidOption, match="owner_key"):
        check_max_sessions(3, None)
