"""Serializers turn a session dict into bytes and back: msgpack (default), json, pickle."""

from __future__ import annotations

import math
import pickle
import threading
from typing import Any, Protocol, runtime_checkable

import msgspec

from .errors import InvalidOption, SerializationError

__all__ = [
    "BUILTIN_SERIALIZERS",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "dumps_session",
    "get_serializer",
    "loads_session",
    "serializer_name",
]


@runtime_checkable
class Serializer(Protocol):
    """Anything with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class _MsgspecSerializer:
    """Encodes into a per-thread buffer, then copies out exactly ``len`` bytes.

    msgspec's ``encode`` returns bytes whose allocation is up to 1.5 times their length;
    a store that counts its memory needs the bytes it holds to cost what they say.
    """

    def __init__(
        self, encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder, decoder: Any
    ) -> None:
        self._encode_into = encoder.encode_into
        self._local = threading.local()
        self.loads = decoder.decode

    def dumps(self, obj: Any) -> bytes:
        try:
            buffer = self._local.buffer
        except AttributeError:
            buffer = self._local.buffer = bytearray(1024)
        self._encode_into(obj, buffer)
        blob = bytes(buffer)
        # A thread keeps at most 8 KiB of scratch between writes: a store's cap does not
        # see these buffers, so one large session must not pin its size for the thread's life.
        if len(buffer) > 8192:
            self._local.buffer = bytearray(1024)
        return blob


class MsgpackSerializer(_MsgspecSerializer):
    """MessagePack through msgspec: compact and fast; tuples come back as lists."""

    def __init__(self) -> None:
        super().__init__(msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder())


class JsonSerializer(_MsgspecSerializer):
    """JSON through msgspec: readable; tuples and sets come back as lists.

    Refuses (``TypeError``/``ValueError``) what JSON would silently change into something
    else: keys that are not strings, bytes, and NaN or infinite floats.
    """

    def __init__(self) -> None:
        super().__init__(msgspec.json.Encoder(), msgspec.json.Decoder())

    def dumps(self, obj: Any) -> bytes:
        _check_json(obj)
        return super().dumps(obj)


def _check_json(obj: Any) -> None:
    """Raise where msgspec's JSON would not give ``obj`` back: it encodes bytes as base64
    text, NaN and infinities as null, and number keys as strings, all without a word."""
    stack = [obj]
    seen: set[int] = set()  # containers walked: shared ones once, and cycles end here
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"JSON has no {item!r}")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            raise TypeError("JSON has no bytes: use the msgpack or pickle serializer")
        elif isinstance(item, (dict, list, tuple, set, frozenset)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        raise TypeError(f"JSON keys are strings, not {type(key).__name__}")
                stack.extend(item.values())
            else:
                stack.extend(item)


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


def serializer_name(serializer: Serializer) -> str:
    """A stable name for ``serializer``: "msgpack", "json", "pickle", or its class's path."""
    for name, kind in _BY_NAME.items():
        if type(serializer) is kind:
            return name
    kind = type(serializer)
    return f"{kind.__module__}.{kind.__qualname__}"


def dumps_session(serializer: Serializer, data: Any) -> bytes:
    """Serialize one session's ``data`` (a dict), raising :class:`SerializationError` on failure."""
    if not isinstance(data, dict):
        raise SerializationError(f"session data must be a dict, not {type(data).__name__}")
    try:
        blob = serializer.dumps(data)
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
