"""Session ids: 256 bits from ``secrets``, as 43 URL-safe characters."""

from __future__ import annotations

import re
import secrets

__all__ = ["SESSION_ID_BYTES", "is_session_id", "new_session_id", "redact"]

SESSION_ID_BYTES = 32  # 256 bits
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """Return a new session id: 256 random bits, URL-safe base64 without padding."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_session_id(value: object) -> bool:
    """Whether ``value`` has the shape of an id :func:`new_session_id` makes."""
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def redact(sid: str) -> str:
    """A session id shortened for log lines, so logs never hold a usable id."""
    return sid[:6] + "…" if len(sid) > 6 else "…"
