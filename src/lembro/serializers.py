"""Serializers turn a session dict into bytes and back: msgpack (default), json, pickle.

msgpack and json give back exactly what they were given, type for type, or refuse it with
:class:`SerializationError` naming the type and where it is (``session['cart'][2]: Color``).
Beyond the JSON types (dict with str keys, list, str, int, float, bool, None) they carry
``bytes``, ``tuple``, ``set``, ``frozenset``, ``datetime``, ``date``, ``time``,
``timedelta``, ``UUID`` and ``Decimal``: as msgpack extension types, or in JSON as a one-key
object ``{"\ue000": [tag, value]}``. A ``datetime`` or ``time`` comes back with its ``fold``
and its zone: none, a ``datetime.timezone`` (its offset, and its name if it was given one),
or a ``zoneinfo.ZoneInfo`` (its key, such as ``"Europe/Lisbon"``: the zone is looked up
again where the session is read, so a day added later lands on the right side of a change
of offset). Any other ``tzinfo`` is refused, as is anything else (an ``Enum``, a dataclass,
a subclass of any of these such as ``OrderedDict``): it would come back as something else.
"""

from __future__ import annotations

import base64
import math
import pickle
import sys
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import msgspec

from .errors import InvalidOption, SerializationError

__all__ = [
    "BUILTIN_SERIALIZERS",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "SessionDict",
    "dumps_session",
    "fingerprint",
    "get_serializer",
    "loads_session",
    "require_safe_serializer",
    "serializer_name",
]


class SessionDict(dict[str, Any]):
    """A dict that an integration hands a store as one session's data: stored, and loaded
    back, as a plain dict (its own state and methods are not the session's)."""

    __slots__ = ()


@runtime_checkable
class Serializer(Protocol):
    """Anything with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class MsgpackSerializer:
    """MessagePack through msgspec: compact and fast, and exact (see the module's docstring)."""

    def __init__(self) -> None:
        self._encode_into = msgspec.msgpack.Encoder().encode_into
        self.loads = msgspec.msgpack.Decoder(ext_hook=_from_ext).decode
        # Extension values (the tagged ones: a datetime, a set...) stay as they were
        # encoded, and are written back so.
        self._loads_tagged = msgspec.msgpack.Decoder().decode

    def dumps(self, obj: Any) -> bytes:
        try:
            return _exact_length(self._encode_into, _exact(obj, _to_ext, _MSGPACK_KEYS))
        except OverflowError:
            _name_big_int(obj)
            raise

    def updated(
        self, blob: bytes, changes: dict[str, Any], deleted: Iterable[Any] = ()
    ) -> tuple[bytes, dict[Any, Any]]:
        """The session ``blob`` holds, with ``changes`` (top-level keys) set and then
        ``deleted`` removed: its bytes, and its top level as they encode it (a tagged
        value stays a ``msgspec.msgpack.Ext``; plain values are as ``loads`` gives them).

        Only the values changed are checked and tagged: those kept are written back as
        they were read, so an update costs what its changes do, not a walk of the whole
        session. Raises :class:`SerializationError` for a change it cannot carry, or
        bytes that do not hold a session."""
        try:
            data = self._loads_tagged(blob)
        except Exception as e:
            raise SerializationError(f"stored session does not deserialize: {e}") from e
        if type(data) is not dict:
            raise SerializationError("stored session is not a dict")
        # A dict subclass of changes is read as the plain dict of its items.
        plain = changes if type(changes) is dict else dict(changes.items())
        for key, value in plain.items():
            if type(key) is not str or type(value) not in _MSGPACK_LEAVES:
                plain = _exact(plain, _to_ext, _MSGPACK_KEYS)  # something to tag or refuse
                break
        data.update(plain)
        for key in deleted:
            data.pop(key, None)
        try:
            return _exact_length(self._encode_into, data), data
        except OverflowError:
            _name_big_int(changes)
            raise


def _name_big_int(obj: Any) -> None:
    """Raise :class:`SerializationError` naming where in ``obj`` an int lies outside the
    64 bits msgpack holds, if one does (msgspec raised ``OverflowError``)."""
    path = _big_int_path(obj)
    if path is not None:
        raise SerializationError(
            f"session{path}: int outside the 64 bits msgpack holds", path=path
        ) from None


class JsonSerializer:
    """JSON through msgspec: readable, and exact (see the module's docstring).

    Refuses what JSON cannot carry: keys that are not strings, NaN and infinite floats.
    """

    def __init__(self) -> None:
        self._encode_into = msgspec.json.Encoder().encode_into
        self._decode = msgspec.json.Decoder().decode

    def dumps(self, obj: Any) -> bytes:
        return _exact_length(self._encode_into, _exact(obj, _to_json_tag, _JSON_KEYS))

    def loads(self, data: bytes) -> Any:
        obj = self._decode(data)
        # Tags are rare: only a document that holds the marker needs a walk. A scan for
        # its first byte (which starts only U+E000 to U+EFFF) spares most documents the
        # slower search for all three.
        if _JSON_MARK_FIRST_BYTE in data and _JSON_MARK_BYTES in data:
            return _untag_json(obj)
        return obj


def _exact_length(encode_into: Any, obj: Any) -> bytes:
    """``obj`` encoded, as bytes that hold exactly their length.

    msgspec's ``encode`` returns bytes whose allocation is up to 1.5 times their length,
    and a store that counts its memory needs the bytes it holds to cost what they say:
    encoding into a fresh bytearray and copying it out costs as much, and leaves no
    scratch buffer behind (a buffer kept per thread would hold a large session's size
    for the thread's life, unseen by the store's cap). The bytearray starts at
    ``_FIRST_BUFFER`` bytes, so a typical session is written without growing it; msgspec
    cuts it to what it wrote.
    """
    buffer = bytearray(_FIRST_BUFFER)
    encode_into(obj, buffer)
    return bytes(buffer)


# Bytes of the buffer a session is first encoded into (a logged-in user's session of
# a dozen fields takes about 250); a larger one grows it as it is written.
_FIRST_BUFFER = 512


# ---- exact types ----------------------------------------------------------------------

_MSGPACK_KEYS: frozenset[type] = frozenset({str, int, float, bool, bytes, type(None)})
_JSON_KEYS: frozenset[type] = frozenset({str})
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack's ints hold
# Values each format carries as they are, whatever their value (JSON's floats need a look
# at the value; an int msgpack cannot hold makes msgspec raise, and is named then).
_MSGPACK_SAFE: frozenset[type] = frozenset({str, bool, int, float, type(None)})
_JSON_SAFE: frozenset[type] = frozenset({str, bool, int, type(None)})
_MSGPACK_LEAVES: frozenset[type] = _MSGPACK_SAFE | {bytes}  # msgpack keeps bytes as bytes
_JSON_MARK = "\ue000"  # a private-use character: the one key of a tagged JSON object
_JSON_MARK_BYTES = _JSON_MARK.encode()
_JSON_MARK_FIRST_BYTE = _JSON_MARK_BYTES[:1]

# Tags, shared by both formats (msgpack extension codes; the first item of a JSON tag).
_DATETIME, _DATE, _TIME, _TIMEDELTA, _UUID, _DECIMAL, _TUPLE, _SET, _FROZENSET = range(1, 10)
_BYTES, _DICT = 10, 11  # JSON only: msgpack has bytes, and no marker to escape
# A datetime or time whose ISO form would lose something (its fold, its zone's key, its
# fixed offset's name): see _moment.
_DATETIME_FULL, _TIME_FULL = 12, 13


# ---- the common case: nothing to tag -------------------------------------------------------
#
# Most of a session is what msgpack and JSON carry as they are. The walk below asks these
# about each dict and list it meets: one that holds nothing else is kept as it is, seen
# with a check of each value's type and no call per value; anything else (a value to tag
# or to refuse) makes them answer False, and the walk goes in, refusals included.


def _msgpack_plain(value: dict[Any, Any]) -> bool:
    """Whether msgpack gives the dict ``value`` back as it is, with no tag: keys of a type
    msgpack keeps, and nothing inside but dicts, lists, str, int, float, bool, bytes and
    None (an int beyond msgpack's 64 bits makes msgspec raise, and is named then)."""
    for key, item in dict.items(value):
        if type(key) is not str and type(key) not in _MSGPACK_KEYS:
            return False
        kind = type(item)
        if kind in _MSGPACK_LEAVES:
            continue
        if kind is dict:
            if not _msgpack_plain(item):
                return False
        elif kind is not list or not _msgpack_plain_list(item):
            return False
    return True


def _msgpack_plain_list(value: list[Any]) -> bool:
    for item in value:
        kind = type(item)
        if kind in _MSGPACK_LEAVES:
            continue
        if kind is dict:
            if not _msgpack_plain(item):
                return False
        elif kind is not list or not _msgpack_plain_list(item):
            return False
    return True


def _json_plain(value: dict[Any, Any]) -> bool:
    """Whether JSON gives the dict ``value`` back as it is, with no tag: str keys (none
    the marker of a tag), and nothing inside but dicts, lists, str, int, finite floats,
    bool and None."""
    if dict.__contains__(value, _JSON_MARK):
        return False
    for key, item in dict.items(value):
        if type(key) is not str:
            return False
        kind = type(item)
        if kind in _JSON_SAFE:
            continue
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict:
            if not _json_plain(item):
                return False
        elif kind is not list or not _json_plain_list(item):
            return False
    return True


def _json_plain_list(value: list[Any]) -> bool:
    for item in value:
        kind = type(item)
        if kind in _JSON_SAFE:
            continue
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict:
            if not _json_plain(item):
                return False
        elif kind is not list or not _json_plain_list(item):
            return False
    return True


class _Refused(Exception):
    """Internal: a value that would not come back as it went in; ``path`` grows outward."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.path: list[str] = []


def _exact(obj: Any, tag: Any, key_types: frozenset[type]) -> Any:
    """``obj`` with every value JSON or msgpack would change replaced by ``tag(code,
    payload)``; raises :class:`SerializationError` for a value it cannot carry.

    The session itself may be a :class:`SessionDict` (an integration's session, read
    through ``dict``'s methods, not its own): its top level is stored, and comes back, as
    a dict. Any other dict subclass is refused, as anywhere else.
    """
    try:
        if type(obj) is dict or isinstance(obj, SessionDict):
            return _walk_dict(obj, tag, key_types)
        return _walk(obj, tag, key_types)
    except _Refused as e:
        path = "".join(reversed(e.path))
        raise SerializationError(f"session{path}: {e.what}", path=path) from None


def _walk(value: Any, tag: Any, key_types: frozenset[type]) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value
    if kind is float:
        if tag is _to_json_tag and not math.isfinite(value):
            raise _Refused(f"float {value!r} (JSON has no NaN or infinity)")
        return value
    if kind is dict:
        return _walk_dict(value, tag, key_types)
    if kind is list:
        if _msgpack_plain_list(value) if tag is _to_ext else _json_plain_list(value):
            return value
        safe = _MSGPACK_SAFE if tag is _to_ext else _JSON_SAFE
        out_list = None
        for index, item in enumerate(value):
            if type(item) in safe:
                continue
            new = _walk_inside(item, index, tag, key_types)
            if new is not item:
                if out_list is None:
                    out_list = list(value)
                out_list[index] = new
        return value if out_list is None else out_list
    if kind is bytes:
        return tag(_BYTES, value) if tag is _to_json_tag else value
    if kind is tuple or kind is set or kind is frozenset:
        code = _TUPLE if kind is tuple else _SET if kind is set else _FROZENSET
        items = value if kind is tuple else sorted(value, key=_sort_key)
        return tag(code, _walk(list(items), tag, key_types))
    if kind is datetime:
        return _moment(value, _DATETIME, _DATETIME_FULL, tag)
    if kind is date:
        return tag(_DATE, value.isoformat())
    if kind is time:
        return _moment(value, _TIME, _TIME_FULL, tag)
    if kind is timedelta:
        return tag(_TIMEDELTA, [value.days, value.seconds, value.microseconds])
    if kind is UUID:
        return tag(_UUID, value)
    if kind is Decimal:
        return tag(_DECIMAL, str(value))
    raise _Refused(f"{kind.__qualname__} (refused: it would come back as another type)")


def _moment(value: datetime | time, code: int, full_code: int, tag: Any) -> Any:
    """``value`` tagged: as its ISO form when that holds all of it (fold 0, and no zone
    or an unnamed offset of whole seconds: what earlier versions wrote too), else as
    ``[wall-clock ISO form, fold, zone]``, the zone a ZoneInfo's key, or ``[seconds,
    microseconds, name or None]`` of a fixed offset."""
    zone = value.tzinfo
    fold = value.fold
    if zone is None or zone is timezone.utc:
        if not fold:
            return tag(code, value.isoformat())
        if zone is None:
            return tag(full_code, [value.isoformat(), fold, None])
    if type(zone) is timezone:
        offset: timedelta = zone.utcoffset(None)
        name: str | None = zone.tzname(None)
        if name == timezone(offset).tzname(None):
            # fromisoformat reads an offset with microseconds but no seconds as 0
            if not fold and not offset.microseconds:
                return tag(code, value.isoformat())
            name = None
        seconds = offset.days * 86_400 + offset.seconds
        zone_tag: Any = [seconds, offset.microseconds, name]
    elif (key := _zone_key(zone)) is not None:
        zone_tag = key
    else:
        raise _Refused(
            f"{type(value).__name__} with tzinfo {type(zone).__qualname__} (refused: only "
            "datetime.timezone and a ZoneInfo made from a key come back as they went in)"
        )
    return tag(full_code, [value.replace(tzinfo=None).isoformat(), fold, zone_tag])


def _zone_key(zone: Any) -> str | None:
    """The key of ``zone`` if it is a ``zoneinfo.ZoneInfo`` made from one, else ``None``.
    No ZoneInfo exists before the app imports zoneinfo, so lembro does not import it (it
    reads the system's configuration when imported)."""
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is None or type(zone) is not zoneinfo.ZoneInfo:
        return None
    key: str | None = zone.key
    return key


def _moment_back(kind: type[datetime] | type[time], payload: list[Any]) -> datetime | time:
    """What :func:`_moment` tagged with ``_DATETIME_FULL`` or ``_TIME_FULL``, back."""
    iso, fold, zone = payload
    value = kind.fromisoformat(iso)
    if type(zone) is str:
        from zoneinfo import ZoneInfo  # imported only once a session holds a zone

        return value.replace(tzinfo=ZoneInfo(zone), fold=fold)
    if zone is not None:
        seconds, microseconds, name = zone
        offset = timedelta(seconds=seconds, microseconds=microseconds)
        fixed = timezone(offset) if name is None else timezone(offset, name)
        return value.replace(tzinfo=fixed, fold=fold)
    return value.replace(fold=fold)


def _walk_dict(value: dict[Any, Any], tag: Any, key_types: frozenset[type]) -> Any:
    out = None
    msgpack = tag is _to_ext
    leaves = _MSGPACK_LEAVES if msgpack else _JSON_SAFE
    for key, item in dict.items(value):
        if type(key) is not str and type(key) not in key_types:
            raise _Refused(f"key of type {type(key).__name__}")
        kind = type(item)
        if kind in leaves:
            continue  # the common cases, without a call
        if kind is dict:
            if _msgpack_plain(item) if msgpack else _json_plain(item):
                continue
        elif kind is list:
            if _msgpack_plain_list(item) if msgpack else _json_plain_list(item):
                continue
        elif kind is float and math.isfinite(item):
            continue  # in JSON (msgpack's floats are leaves)
        new = _walk_inside(item, key, tag, key_types)
        if new is not item:
            if out is None:
                # dict.copy would read a SessionDict through its own __iter__ and keys
                out = dict.copy(value) if type(value) is dict else dict(dict.items(value))
            out[key] = new
    if tag is _to_json_tag and dict.__contains__(value, _JSON_MARK):
        return tag(_DICT, value if out is None else out)
    return value if out is None else out


def _big_int_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` an int lies outside the 64 bits msgpack holds, as a refusal
    names it (``['orders'][2]``), or ``None``; only walked once msgspec refused one."""
    if type(value) is int:
        return None if _INT_MIN <= value <= _INT_MAX else path
    if isinstance(value, dict):
        pairs: Any = dict.items(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        pairs = enumerate(value)
    else:
        return None
    keyed = isinstance(value, dict)
    for key, item in pairs:
        where = f"{path}[{key!r}]"
        found = _big_int_path(item, where) or (_big_int_path(key, where) if keyed else None)
        if found is not None:
            return found
    return None


def _walk_inside(item: Any, key: Any, tag: Any, key_types: frozenset[type]) -> Any:
    """``_walk(item)``, where ``item`` is under ``key`` (a dict's key, a list's index):
    a refusal adds ``[key]`` to the path it names."""
    try:
        return _walk(item, tag, key_types)
    except _Refused as e:
        e.path.append(f"[{key!r}]")
        raise


def _sort_key(item: Any) -> tuple[str, str]:
    """A set's items in a stable order, so equal sets serialize to equal bytes."""
    return type(item).__name__, repr(item)


def _to_ext(code: int, payload: Any) -> msgspec.msgpack.Ext:
    if code == _UUID:
        return msgspec.msgpack.Ext(code, payload.bytes)
    if isinstance(payload, str):
        return msgspec.msgpack.Ext(code, payload.encode())
    return msgspec.msgpack.Ext(code, msgspec.msgpack.encode(payload))


def _from_ext(code: int, data: memoryview) -> Any:
    if code == _UUID:
        return UUID(bytes=bytes(data))
    if code == _DATETIME:
        return datetime.fromisoformat(bytes(data).decode())
    if code == _DATE:
        return date.fromisoformat(bytes(data).decode())
    if code == _TIME:
        return time.fromisoformat(bytes(data).decode())
    if code == _DECIMAL:
        return Decimal(bytes(data).decode())
    items = msgspec.msgpack.decode(data, ext_hook=_from_ext)
    if code == _DATETIME_FULL:
        return _moment_back(datetime, items)
    if code == _TIME_FULL:
        return _moment_back(time, items)
    if code == _TIMEDELTA:
        return timedelta(*items)
    if code == _TUPLE:
        return tuple(items)
    if code == _SET:
        return set(items)
    if code == _FROZENSET:
        return frozenset(items)
    raise ValueError(f"unknown msgpack extension type {code}")


def _to_json_tag(code: int, payload: Any) -> dict[str, Any]:
    if code == _UUID:
        payload = str(payload)
    elif code == _BYTES:
        payload = base64.b64encode(payload).decode("ascii")
    return {_JSON_MARK: [code, payload]}


def _untag_json(value: Any) -> Any:
    if type(value) is list:
        return [_untag_json(item) for item in value]
    if type(value) is not dict:
        return value
    if len(value) == 1 and _JSON_MARK in value:
        code, payload = value[_JSON_MARK]
        if code == _DICT:
            return {key: _untag_json(item) for key, item in payload.items()}
        if code == _BYTES:
            return base64.b64decode(payload)
        if code == _UUID:
            return UUID(payload)
        if code == _DATETIME:
            return datetime.fromisoformat(payload)
        if code == _DATE:
            return date.fromisoformat(payload)
        if code == _TIME:
            return time.fromisoformat(payload)
        if code == _DECIMAL:
            return Decimal(payload)
        if code == _TIMEDELTA:
            return timedelta(*payload)
        if code == _DATETIME_FULL:
            return _moment_back(datetime, payload)
        if code == _TIME_FULL:
            return _moment_back(time, payload)
        items = [_untag_json(item) for item in payload]
        if code == _TUPLE:
            return tuple(items)
        if code == _SET:
            return set(items)
        if code == _FROZENSET:
            return frozenset(items)
        raise ValueError(f"unknown JSON tag {code!r}")
    return {key: _untag_json(item) for key, item in value.items()}


_FINGERPRINT = msgspec.msgpack.Encoder()


def fingerprint(data: dict[str, Any]) -> object:
    """Bytes that are equal for two sessions exactly when their data is: what an
    integration keeps of a loaded session to tell later whether it changed, without a
    deep copy. Data msgpack cannot carry gets a value equal to nothing."""
    try:
        return _FINGERPRINT.encode(_walk(data, _to_ext, _MSGPACK_KEYS))
    except (_Refused, TypeError, ValueError, OverflowError, RecursionError):
        return object()


class PickleSerializer:
    """Pickle: any picklable object. Only for data you trust: never load a foreign snapshot."""

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # noqa: S301 - bytes only ever come from this process's store


_BY_NAME: dict[str, type[Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
    "pickle": PickleSerializer,
}


# The serializers that always give exact-length bytes and decode a dict back to a dict.
BUILTIN_SERIALIZERS: frozenset[type] = frozenset({MsgpackSerializer, JsonSerializer})


def get_serializer(serializer: str | Serializer) -> Serializer:
    """Return the serializer named "msgpack", "json" or "pickle", or ``serializer`` itself."""
    if isinstance(serializer, str):
        try:
            return _BY_NAME[serializer]()
        except KeyError:
            raise InvalidOption(
                "serializer", serializer, f"one of {sorted(_BY_NAME)} or an object with dumps/loads"
            ) from None
    if callable(getattr(serializer, "dumps", None)) and callable(
        getattr(serializer, "loads", None)
    ):
        return serializer
    raise InvalidOption(
        "serializer", serializer, f"one of {sorted(_BY_NAME)} or an object with dumps/loads"
    )


def require_safe_serializer(serializer: Serializer, where: str, trust_pickle: bool) -> None:
    """Raise :class:`InvalidOption` when ``serializer`` is pickle, its bytes come from
    ``where`` (a file, a Redis server: anything another party might write), and the app
    did not say ``trust_pickle=True``: unpickling bytes someone else wrote runs their code."""
    if isinstance(serializer, PickleSerializer) and trust_pickle is not True:
        raise InvalidOption(
            "serializer",
            "pickle",
            f"msgpack or json with {where}: whoever can write {where} could run code in "
            "this app through pickle; pass trust_pickle=True only if no one else can",
        )


def serializer_name(serializer: Serializer) -> str:
    """A stable name for ``serializer``: "msgpack", "json", "pickle", or its class's path."""
    for name, kind in _BY_NAME.items():
        if type(serializer) is kind:
            return name
    kind = type(serializer)
    return f"{kind.__module__}.{kind.__qualname__}"


def dumps_session(serializer: Serializer, data: Any) -> bytes:
    """Serialize one session's ``data`` (a dict), raising :class:`SerializationError` on
    failure. A :class:`SessionDict` is serialized as a plain dict: its top level comes
    back as one."""
    if not isinstance(data, dict):
        raise SerializationError(f"session data must be a dict, not {type(data).__name__}")
    if isinstance(data, SessionDict) and type(serializer) not in BUILTIN_SERIALIZERS:
        data = dict(dict.items(data))  # others (pickle) would keep the subclass and its state
    try:
        blob = serializer.dumps(data)
    except SerializationError:
        raise
    except Exception as e:
        raise SerializationError(f"session data does not serialize: {e}") from e
    if not isinstance(blob, bytes):
        raise SerializationError(f"serializer returned {type(blob).__name__}, expected bytes")
    return blob


def loads_session(serializer: Serializer, blob: bytes) -> dict[str, Any]:
    """Deserialize bytes the store holds back into a session dict."""
    try:
        data = serializer.loads(blob)
    except Exception as e:
        raise SerializationError(f"stored session does not deserialize: {e}") from e
    if not isinstance(data, dict):
        raise SerializationError(f"stored session is a {type(data).__name__}, not a dict")
    return data
