"""Which store kinds the contract tests that wait out real lifetimes run on.

A test marked ``lifetimes`` writes sessions of a short lifetime and waits them out: on
Redis, real time passes (the server expires them). It runs on the memory store and on
the Redis kinds whose server or store code differs (redis-server and Valkey, one node and
a Cluster, the sync and the async store). The kinds that differ from those only in how
they connect (TLS, Sentinel, valkey-py's async client, a Valkey URL through redis-py)
run every other contract test, and these are left out for them: a lifetime is the
server's, reached through the same commands. A wait (``ShortLives``) refuses to start on
such a kind, so a test that waits without the mark fails there.
"""

from __future__ import annotations

import pytest

from .lifetimes import CONNECTION_ONLY


def kind_of(item: pytest.Item) -> str | None:
    """The store kind ``item`` runs on (its ``backend`` or ``binding`` parameter)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    params = callspec.params
    kind = params.get("backend", params.get("binding"))
    return kind if isinstance(kind, str) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = [
        item
        for item in items
        if item.get_closest_marker("lifetimes") is not None and kind_of(item) in CONNECTION_ONLY
    ]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        kept = set(map(id, left_out))
        items[:] = [item for item in items if id(item) not in kept]
