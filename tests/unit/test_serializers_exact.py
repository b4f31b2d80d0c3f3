"""msgpack and json through their own API: exact types back, or a refusal naming the path."""

from __future__ import annotations

import enum
import json
from collections import Counter, OrderedDict, defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from lembro import SerializationError
from lembro.serializers import (
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    SessionDict,
    dumps_session,
    fingerprint,
)

SERIALIZERS = [MsgpackSerializer(), JsonSerializer()]
IDS = ["msgpack", "json"]


class Level(enum.IntEnum):
    HIGH = 1


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_refusal_names_the_type_and_the_whole_key_path(serializer: Serializer) -> None:
    data = {"orders": [{"id": 1}, {"id": 2, "level": Level.HIGH}]}
    with pytest.raises(SerializationError, match=r"session\['orders'\]\[1\]\['level'\]: Level"):
        serializer.dumps(data)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"big": [2**64]}, r"\['big'\]\[0\]"),
        ({"big": -(2**63) - 1}, r"\['big'\]"),
        ({"deep": {"pair": (1, 2**70)}}, r"\['deep'\]\['pair'\]\[1\]"),
        ({"keys": {2**64: "x"}}, r"\['keys'\]\[18446744073709551616\]"),
    ],
)
def test_msgpack_refuses_an_int_it_cannot_hold_naming_where(data: Any, where: str) -> None:
    with pytest.raises(SerializationError, match=rf"session{where}: int outside"):
        MsgpackSerializer().dumps(data)


def test_msgpack_carries_the_ints_at_both_ends_of_its_64_bits() -> None:
    data = {"low": -(2**63), "high": 2**64 - 1, "list": [2**64 - 1, -(2**63)]}
    serializer = MsgpackSerializer()
    assert serializer.loads(serializer.dumps(data)) == data


def test_json_refuses_nan_naming_where() -> None:
    with pytest.raises(SerializationError, match=r"session\['x'\]: float nan"):
        JsonSerializer().dumps({"x": float("nan")})


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_users_own_marker_key_is_not_taken_for_a_tag(serializer: Serializer) -> None:
    data: dict[str, Any] = {"\ue000": [1, "x"], "nested": {"\ue000": [3, "2024-01-01"]}}
    assert serializer.loads(serializer.dumps(data)) == data


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_an_aware_datetime_keeps_its_offset(serializer: Serializer) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    back = serializer.loads(serializer.dumps({"when": when}))["when"]
    assert back == when
    assert back.utcoffset() == timedelta(hours=-5)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_bytearray_is_refused_not_turned_into_bytes(serializer: Serializer) -> None:
    with pytest.raises(SerializationError, match=r"session\['raw'\]: bytearray"):
        serializer.dumps({"raw": bytearray(b"x")})


def test_equal_sets_have_equal_fingerprints_whatever_their_insertion_order() -> None:
    first = {"tags": {3, "a", 1.5, None}}
    second = {"tags": {None, 1.5, "a", 3}}
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint({"tags": {3, "a", 1.5}})


def test_json_tags_a_value_as_a_one_key_object_under_the_marker() -> None:
    blob = JsonSerializer().dumps({"day": date(2024, 1, 2)})
    assert json.loads(blob) == {"day": {"\ue000": [2, "2024-01-02"]}}


def test_msgpack_carries_a_value_as_an_extension_type() -> None:
    blob = MsgpackSerializer().dumps({"day": date(2024, 1, 2)})
    raw = msgspec.msgpack.decode(blob)
    assert isinstance(raw["day"], msgspec.msgpack.Ext)
    assert raw["day"].data == b"2024-01-02"


class _Tracked(SessionDict):
    """A SessionDict with state of its own, as an integration's session is."""

    __slots__ = ("reads",)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.reads = 0

    def items(self) -> Any:  # read through dict's methods, never these
        self.reads += 1
        return super().items()


@pytest.mark.parametrize("serializer", [*SERIALIZERS, PickleSerializer()], ids=[*IDS, "pickle"])
def test_a_session_dict_comes_back_as_a_plain_dict(serializer: Serializer) -> None:
    session = _Tracked({"a": 1, "when": date(2026, 12, 2), "nested": {"b": [1, 2]}})
    back = serializer.loads(dumps_session(serializer, session))
    assert type(back) is dict
    assert back == {"a": 1, "when": date(2026, 12, 2), "nested": {"b": [1, 2]}}
    assert session.reads == 0


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_session_dict_inside_a_session_is_still_refused(serializer: Serializer) -> None:
    with pytest.raises(SerializationError, match=r"session\['inner'\]: _Tracked"):
        serializer.dumps({"inner": _Tracked({"a": 1})})


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
@pytest.mark.parametrize("kind", [OrderedDict, lambda data: defaultdict(list, data), Counter])
def test_any_other_dict_subclass_is_refused_even_as_the_whole_session(
    serializer: Serializer, kind: Any
) -> None:
    """It would come back as a plain dict, without its order, default or counting."""
    with pytest.raises(SerializationError, match=r"session: (OrderedDict|defaultdict|Counter)"):
        dumps_session(serializer, kind({"a": 1}))


def test_pickle_keeps_a_dict_subclass_it_is_given() -> None:
    serializer = PickleSerializer()
    back = serializer.loads(dumps_session(serializer, defaultdict(list, {"a": [1]})))
    assert type(back) is defaultdict
    assert back["missing"] == []
