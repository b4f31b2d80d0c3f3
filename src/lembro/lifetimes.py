"""What lembro keeps about a session's lifetime and the client it belongs to.

A placeholder holding only :class:`Device`, as the issue 29 design pins it, so the
integrations can be built before the stores' side lands (that side brings this module).
"""

from __future__ import annotations

import msgspec

__all__ = ["Device"]


class Device(msgspec.Struct, frozen=True):
    """What an integration saw of the client when a session was created or regenerated.

    ``ip``: the client's address (already truncated if the app asked), or ``None`` when
    unknown; ``user_agent``: its ``User-Agent`` header, at most 512 characters kept.
    """

    ip: str | None = None
    user_agent: str | None = None
