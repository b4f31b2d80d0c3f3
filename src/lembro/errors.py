"""The errors lembro raises: one root, each child also the builtin a user would catch."""

from __future__ import annotations

from typing import Any

__all__ = [
    "InvalidOption",
    "InvalidSize",
    "LembroError",
    "SerializationError",
    "SessionTooLarge",
    "SeveralProcesses",
    "StoreUnavailable",
]


class LembroError(Exception):
    """The root of every error lembro raises."""


class InvalidSize(LembroError, ValueError):
    """A size that is not a positive number of bytes; ``value`` is what was given."""

    def __init__(self, value: Any, reason: str = "") -> None:
        self.value = value
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"invalid size {value!r}{detail}; expected a positive int of bytes "
            f"or a string such as '512K', '4M', '1.5G' (powers of 1024)"
        )


class InvalidOption(LembroError, ValueError):
    """An option or argument outside what it accepts; ``name`` and ``value`` say which."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}")


class SessionTooLarge(LembroError, ValueError):
    """One session's accounted size (``size`` bytes) cannot fit in ``max_size`` bytes."""

    def __init__(self, size: int, max_size: int) -> None:
        self.size = size
        self.max_size = max_size
        super().__init__(
            f"session of {size} bytes (as accounted) cannot fit in max_size {max_size} bytes"
        )


class SerializationError(LembroError, TypeError):
    """Session data that the store's serializer cannot turn into bytes or back.

    ``path`` says where in the session the refused value is (``"['cart'][2]"``), when known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoreUnavailable(LembroError, ConnectionError):
    """A store's backing service (Redis) did not answer in time or refused the connection."""


class SeveralProcesses(LembroError, RuntimeError):
    """Other processes (``others``, pids) serve this app with their own MemoryStore, and
    ``LEMBRO_SEVERAL_PROCESSES=refuse`` says not to start (``pid``: this process)."""

    def __init__(self, pid: int, others: list[int]) -> None:
        self.pid = pid
        self.others = others
        super().__init__(
            f"process {pid}: {len(others)} other processes ({', '.join(map(str, others))}) "
            "serve this app with their own MemoryStore, and LEMBRO_SEVERAL_PROCESSES=refuse; "
            "run one worker process, or use lembro.RedisStore to share sessions"
        )
