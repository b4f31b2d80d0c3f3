"""Prometheus metrics for a lembro store: ``LembroCollector`` (``pip install lembro[prometheus]``).

The collector holds no counter of its own: at each scrape it reads the store's
:meth:`stats` (one source of truth, :class:`lembro.protocol.Stats`) and the process's
count of refused session cookies (:data:`lembro._cookies.REJECTED`), so a request pays
for nothing it did not already do. A scrape of a ``MemoryStore`` works in steps, as its
``stats()`` does, and never holds the store's lock for long; a scrape of a ``RedisStore``
SCANs the store's prefix (see ``RedisStore.stats``). docs/metrics.md shows a scrape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as e:  # pragma: no cover - exercised only without prometheus_client
    raise ImportError(
        "lembro.metrics needs prometheus_client: pip install lembro[prometheus]"
    ) from e

from ._cookies import REJECTED
from .errors import InvalidOption, StoreUnavailable
from .protocol import AsyncSessionStore, SessionStore, _InlineAsync

__all__ = ["LembroCollector"]

#: ``lembro_destroyed_total``'s ``reason`` label, and the ``Stats`` field counting it.
_DESTROYED_REASONS = (
    ("logout", "logouts"),
    ("regenerate", "regenerates"),
    ("logout_everywhere", "logouts_everywhere"),
)
#: ``lembro_cookies_rejected_total``'s ``reason`` label, and the ``REJECTED`` field.
_REJECTED_REASONS = (
    ("bad_signature", "bad_signature"),
    ("unknown_id", "unknown_id"),
    ("malformed", "malformed"),
)


class LembroCollector(Collector):
    """Exports ``store``'s counters to Prometheus, read at scrape time.

    ``store`` is a sync store (``MemoryStore``, ``RedisStore``, or one of the app's with
    ``stats()``) or a ``MemoryStore``'s async face; for an ASGI app on Redis, give the
    ``RedisStore`` whose ``as_async()`` the integration uses (the twin counts into it).
    The collector registers itself with ``registry`` (default: prometheus_client's
    global registry; ``None``: not registered). One collector per registry: the names
    are the same for every store. ``cookies=False`` leaves out the cookie counts (they
    are the process's, whichever store).

    Metrics: ``lembro_up`` (1 when the store answered the scrape; 0 when Redis did not,
    and then only the counts this process keeps follow), ``lembro_sessions``,
    ``lembro_bytes``, ``lembro_max_bytes`` (when the store has a cap),
    ``lembro_signed_in_users`` (with ``owner_key``),
    ``lembro_created_total``, ``lembro_destroyed_total{reason}``, ``lembro_hits_total``,
    ``lembro_misses_total``, ``lembro_expired_total`` and ``lembro_evicted_total`` (not
    on Redis, which does not count them per prefix), ``lembro_unavailable_total`` (on
    Redis) and ``lembro_cookies_rejected_total{reason}``. See docs/metrics.md.
    """

    def __init__(
        self,
        store: SessionStore | AsyncSessionStore,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        cookies: bool = True,
    ) -> None:
        if isinstance(store, _InlineAsync):
            store = store.sync
        if not isinstance(store, SessionStore):
            raise InvalidOption(
                "store",
                store,
                "a sync store (MemoryStore, RedisStore): an AsyncRedisStore's stats() is a "
                "coroutine; give the RedisStore whose as_async() the app uses",
            )
        self.store = store
        self.cookies = cookies
        self._redis = _is_redis(store)
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """The metrics' names, without reading the store (so registering costs nothing)."""
        return self._families(None, up=True)

    def collect(self) -> Iterator[Metric]:
        """The metrics now: one ``stats()`` of the store. While Redis does not answer,
        ``lembro_up`` is 0 and the counters this process keeps (``counters()``) follow."""
        try:
            values: dict[str, Any] = dataclasses.asdict(self.store.stats())
        except StoreUnavailable:
            counters = getattr(self.store, "counters", None)
            return self._families(counters() if callable(counters) else {}, up=False)
        return self._families(values, up=True)

    def _families(self, values: Mapping[str, Any] | None, up: bool) -> Iterator[Metric]:
        """The metric families for ``values`` (``Stats`` fields; a family whose field is
        missing or ``None`` is left out); for ``values=None``, every family, empty."""

        def value(field: str) -> Any:
            return None if values is None else values.get(field)

        def wanted(field: str) -> bool:
            return values is None or value(field) is not None

        yield GaugeMetricFamily(
            "lembro_up", "Whether the store answered this scrape (1) or not (0).", value=int(up)
        )
        for name, doc, field in (
            ("lembro_sessions", "Live sessions held.", "sessions"),
            ("lembro_bytes", "Bytes the sessions take.", "size"),
            ("lembro_max_bytes", "The cap on lembro_bytes (max_size, or maxmemory).", "max_size"),
            ("lembro_signed_in_users", "Owners (owner_key) with sessions.", "signed_in_users"),
        ):
            if wanted(field):
                yield GaugeMetricFamily(name, doc, value=value(field))
        counters = [
            ("lembro_created", "Sessions created.", "created"),
            ("lembro_hits", "Session reads that found the session.", "hits"),
            ("lembro_misses", "Session reads that found none.", "misses"),
        ]
        if self._redis:
            counters.append(
                (
                    "lembro_unavailable",
                    "Operations that failed: Redis did not answer.",
                    "unavailable",
                )
            )
        else:  # Redis expires and evicts keys itself, uncounted per prefix
            counters.append(("lembro_expired", "Sessions whose lifetime ended.", "expired"))
            counters.append(("lembro_evicted", "Live sessions evicted to fit the cap.", "evicted"))
        for name, doc, field in counters:
            if wanted(field):
                yield CounterMetricFamily(name, doc, value=value(field))
        destroyed = CounterMetricFamily(
            "lembro_destroyed", "Live sessions ended, by reason.", labels=["reason"]
        )
        for reason, field in _DESTROYED_REASONS:
            if value(field) is not None:
                destroyed.add_metric([reason], value(field))
        if values is None or destroyed.samples:
            yield destroyed
        if self.cookies:
            rejected = CounterMetricFamily(
                "lembro_cookies_rejected",
                "Session cookies refused in this process, by reason.",
                labels=["reason"],
            )
            for reason, field in _REJECTED_REASONS:
                rejected.add_metric([reason], getattr(REJECTED, field))
            yield rejected


def _is_redis(store: object) -> bool:
    """Whether ``store`` is one of lembro's Redis stores (which cannot count expiries)."""
    return type(store).__module__.startswith("lembro.redis.")
