"""msgpack and json through their own API: exact types back, or a refusal naming the path."""

from __future__ import annotations

import enum
import json
from collections import Counter, OrderedDict, defaultdict
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from importlib import resources
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


class _Guarded(SessionDict):
    """A SessionDict whose own ways of reading itself all fail: never to be called."""

    __slots__ = ()

    def _refuse(self, *args: Any) -> Any:
        raise AssertionError("read through the SessionDict's own methods")

    __iter__ = keys = values = items = __getitem__ = get = _refuse


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_session_dict_with_values_to_tag_is_read_through_dicts_own_methods(
    serializer: Serializer,
) -> None:
    session = _Guarded({"when": date(2026, 12, 2), "pair": (1, 2), "n": 1})
    back = serializer.loads(dumps_session(serializer, session))
    assert back == {"when": date(2026, 12, 2), "pair": (1, 2), "n": 1}


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


# ---- datetimes and times: fold and zone come back, or are refused ---------------------------

LISBON = ZoneInfo("Europe/Lisbon")


def zone_of(value: datetime | time) -> object:
    """What makes two zones the same zone: a ZoneInfo's key, a fixed offset and its name."""
    zone = value.tzinfo
    if zone is None:
        return None
    if type(zone) is ZoneInfo:
        return ("zone", zone.key)
    return ("fixed", zone.utcoffset(None), zone.tzname(None))


def assert_same_moment(back: Any, sent: datetime | time) -> None:
    """Same type, same wall time, same fold, same zone: all a datetime or time holds."""
    assert type(back) is type(sent)
    assert back.replace(tzinfo=None, fold=0) == sent.replace(tzinfo=None, fold=0)
    assert back.fold == sent.fold
    assert zone_of(back) == zone_of(sent)


def round_trip(serializer: Serializer, value: Any) -> Any:
    return serializer.loads(serializer.dumps({"value": value}))["value"]


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_fold_comes_back_on_a_naive_datetime_and_a_time(serializer: Serializer) -> None:
    for sent in (datetime(2024, 10, 27, 1, 30, fold=1), time(1, 30, fold=1)):
        assert_same_moment(round_trip(serializer, sent), sent)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_the_second_of_two_equal_wall_times_keeps_its_offset(serializer: Serializer) -> None:
    """Lisbon's clocks went back at 02:00 on 2024-10-27: 01:30 happened twice."""
    second = datetime(2024, 10, 27, 1, 30, tzinfo=LISBON, fold=1)
    back = round_trip(serializer, second)
    assert_same_moment(back, second)
    assert back.utcoffset() == timedelta(0)
    assert back.astimezone(timezone.utc) == datetime(2024, 10, 27, 1, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_zoneinfo_datetime_keeps_its_zone_across_a_change_of_offset(
    serializer: Serializer,
) -> None:
    """A day after noon on 2024-03-30 (WET, +00:00) is noon on the 31st in summer time."""
    noon = datetime(2024, 3, 30, 12, tzinfo=LISBON)
    back = round_trip(serializer, noon)
    assert_same_moment(back, noon)
    assert isinstance(back.tzinfo, ZoneInfo)
    assert back.tzinfo.key == "Europe/Lisbon"
    assert (back + timedelta(days=1)).utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_an_aware_time_keeps_its_zone(serializer: Serializer) -> None:
    for sent in (
        time(9, 15, tzinfo=LISBON),
        time(9, 15, tzinfo=timezone(timedelta(hours=-3))),
        time(9, 15, tzinfo=timezone.utc, fold=1),
    ):
        assert_same_moment(round_trip(serializer, sent), sent)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_fixed_offset_keeps_the_name_it_was_given(serializer: Serializer) -> None:
    sent = datetime(2024, 7, 1, 12, tzinfo=timezone(timedelta(hours=2), "CEST"))
    back = round_trip(serializer, sent)
    assert_same_moment(back, sent)
    assert back.tzname() == "CEST"


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
@pytest.mark.parametrize(
    "offset", [timedelta(microseconds=1), timedelta(microseconds=-1), timedelta(seconds=-59)]
)
def test_an_offset_below_a_minute_comes_back_to_the_microsecond(
    serializer: Serializer, offset: timedelta
) -> None:
    """fromisoformat reads "+00:00:00.000001" as +00:00: such offsets are not left to it."""
    for sent in (datetime(2000, 1, 1, tzinfo=timezone(offset)), time(1, tzinfo=timezone(offset))):
        back = round_trip(serializer, sent)
        assert_same_moment(back, sent)
        assert back.utcoffset() == offset


class _Paris(tzinfo):
    """A hand-written tzinfo: nothing to look it up by where the session is read."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "CET"


def _keyless_zone() -> ZoneInfo:
    """Lisbon's rules read from a file: a ZoneInfo with no key to look it up by."""
    with resources.files("tzdata.zoneinfo").joinpath("Europe/Lisbon").open("rb") as file:
        return ZoneInfo.from_file(file)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
@pytest.mark.parametrize(
    ("value", "what"),
    [
        (datetime(2024, 1, 1, tzinfo=_Paris()), "datetime with tzinfo _Paris"),
        (time(8, tzinfo=_Paris()), "time with tzinfo _Paris"),
        (datetime(2024, 1, 1, tzinfo=_keyless_zone()), "datetime with tzinfo ZoneInfo"),
    ],
)
def test_a_tzinfo_that_would_not_come_back_is_refused_naming_the_path(
    serializer: Serializer, value: Any, what: str
) -> None:
    with pytest.raises(SerializationError, match=rf"session\['log'\]\[1\]: {what}"):
        serializer.dumps({"log": [None, value]})


def test_a_datetime_that_its_iso_form_holds_is_written_as_before() -> None:
    """Sessions written by earlier versions, and by this one, read the same: a naive or
    fixed-offset datetime (fold 0) is still its ISO form under the datetime tag."""
    sent = {"naive": datetime(2024, 1, 2, 3, 4), "utc": datetime(2024, 1, 2, tzinfo=timezone.utc)}
    raw = msgspec.msgpack.decode(MsgpackSerializer().dumps(sent))
    assert raw["naive"] == msgspec.msgpack.Ext(1, b"2024-01-02T03:04:00")
    assert raw["utc"] == msgspec.msgpack.Ext(1, b"2024-01-02T00:00:00+00:00")


fixed_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
) | st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
)
zones = st.none() | st.timezones() | fixed_offsets
folds = st.integers(0, 1)
moments = st.one_of(
    st.builds(lambda when, fold: when.replace(fold=fold), st.datetimes(timezones=zones), folds),
    st.builds(lambda when, fold: when.replace(fold=fold), st.times(timezones=zones), folds),
)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
@settings(max_examples=200, deadline=None)
@given(sent=moments)
def test_every_datetime_and_time_comes_back_with_its_fold_and_zone(
    serializer: Serializer, sent: datetime | time
) -> None:
    back = round_trip(serializer, sent)
    assert_same_moment(back, sent)
    if isinstance(sent, datetime):
        assert back.utcoffset() == sent.utcoffset()
        assert back.tzname() == sent.tzname()
        if sent.year < 9999:  # a day later still exists
            day_later = timedelta(days=1)
            assert (back + day_later).utcoffset() == (sent + day_later).utcoffset()


# ---- a plain session goes to msgspec untouched; anything else is still found, however deep --


def realistic_session(inner: Any = "member") -> dict[str, Any]:
    """A login: a list of roles, cookie settings, preferences nested two deep; ``inner``
    is the third role of the innermost list."""
    return {
        "user_id": 1042,
        "email": "ada@example.org",
        "roles": ["admin", "billing"],
        "cookie": {"secure": True, "samesite": "Lax", "max_age": 1209600, "domain": None},
        "preferences": {"theme": "dark", "alerts": {"channels": ["email", "sms", inner]}},
        "last_seen": 1732790400.75,
    }


INNER = r"session\['preferences'\]\['alerts'\]\['channels'\]\[2\]"


class Tier(str, enum.Enum):
    GOLD = "gold"


class Label(str):
    """A str subclass: msgspec writes it as a str, and it would come back as one."""


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
def test_a_plain_session_is_written_as_msgspec_writes_it(serializer: Serializer) -> None:
    plain = realistic_session()
    bare = msgspec.msgpack if isinstance(serializer, MsgpackSerializer) else msgspec.json
    assert serializer.dumps(plain) == bare.encode(plain)
    assert serializer.dumps(SessionDict(plain)) == bare.encode(plain)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {3},
        frozenset({4}),
        datetime(2024, 1, 1, tzinfo=LISBON),
        date(2024, 1, 1),
        time(12, 0),
        timedelta(seconds=5),
        UUID(int=7),
        Decimal("1.10"),
        {"\ue000": [1, "2024-01-01"]},
        b"\x00",
        2**63 - 1,
        -0.0,
        True,
        None,
    ],
    ids=repr,
)
def test_a_value_that_needs_a_tag_deep_inside_comes_back_as_it_was(
    serializer: Serializer, value: Any
) -> None:
    data = realistic_session(value)
    back = serializer.loads(serializer.dumps(data))
    found = back["preferences"]["alerts"]["channels"][2]
    assert back == data
    assert type(found) is type(value)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=IDS)
@pytest.mark.parametrize(
    ("value", "what"),
    [
        (Tier.GOLD, "Tier"),
        (Label("x"), "Label"),
        (Level.HIGH, "Level"),
        (bytearray(b"x"), "bytearray"),
        (OrderedDict(a=1), "OrderedDict"),
        (SessionDict(a=1), "SessionDict"),
        (datetime(2024, 1, 1, tzinfo=_Paris()), "datetime with tzinfo _Paris"),
        ({(1, 2): "pair"}, "key of type tuple"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,  # the same in every process
)
def test_a_value_that_would_change_deep_inside_is_refused_naming_the_path(
    serializer: Serializer, value: Any, what: str
) -> None:
    with pytest.raises(SerializationError, match=rf"{INNER}: {what}"):
        serializer.dumps(realistic_session(value))


@pytest.mark.parametrize(
    ("serializer", "value", "what"),
    [
        (MsgpackSerializer(), 2**64, "int outside the 64 bits"),
        (JsonSerializer(), float("inf"), "float inf"),
        (JsonSerializer(), {1: "one"}, "key of type int"),
    ],
    ids=["msgpack-big-int", "json-infinity", "json-int-key"],
)
def test_what_one_format_cannot_carry_deep_inside_is_refused_naming_the_path(
    serializer: Serializer, value: Any, what: str
) -> None:
    with pytest.raises(SerializationError, match=rf"{INNER}: {what}"):
        serializer.dumps(realistic_session(value))


# ---- msgpack's update of encoded bytes --------------------------------------------------

TAGGED: dict[Any, Any] = {
    "when": datetime(2024, 3, 31, 1, 30, tzinfo=ZoneInfo("Europe/Lisbon")),
    "day": date(2024, 1, 2),
    "tags": {"a", "b"},
    "pair": (1, "x"),
    "id": UUID(int=7),
    "price": Decimal("1.10"),
    "raw": b"\x00\xff",
    "nested": {"at": [time(1, 2, fold=1), frozenset({1})], 3: None},
    7: "int key",
    "plain": "text",
}


def test_an_update_of_msgpack_bytes_writes_what_the_whole_session_would() -> None:
    serializer = MsgpackSerializer()
    changes = {"plain": "other", "new": [timedelta(seconds=5)], "tags": {"c"}}
    blob, _ = serializer.updated(serializer.dumps(TAGGED), changes, ["day"])
    merged = {**TAGGED, **changes}
    del merged["day"]
    assert blob == serializer.dumps(merged)
    assert serializer.loads(blob) == merged


def test_an_update_of_msgpack_bytes_leaves_the_values_kept_exactly_as_they_were() -> None:
    serializer = MsgpackSerializer()
    blob, _ = serializer.updated(serializer.dumps(TAGGED), {"visits": 2})
    back = serializer.loads(blob)
    assert back == {**TAGGED, "visits": 2}
    assert back["when"].tzinfo == ZoneInfo("Europe/Lisbon")
    assert type(back["pair"]) is tuple


@pytest.mark.parametrize(
    ("change", "what"),
    [({"level": Level.HIGH}, r"\['level'\]: Level"), ({"big": [2**64]}, r"\['big'\]\[0\]: int")],
    ids=["enum", "big-int"],
)
def test_an_update_of_msgpack_bytes_refuses_a_change_naming_its_path(
    change: dict[str, Any], what: str
) -> None:
    serializer = MsgpackSerializer()
    with pytest.raises(SerializationError, match=rf"session{what}"):
        serializer.updated(serializer.dumps({"a": 1}), change)


def test_an_update_of_bytes_that_hold_no_session_raises() -> None:
    with pytest.raises(SerializationError):
        MsgpackSerializer().updated(msgspec.msgpack.encode([1, 2]), {"a": 1})
