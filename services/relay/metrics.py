"""Prometheus metrics of one relay, in its own `CollectorRegistry`.

A per-relay registry (never the global default) lets tests and benchmarks run several relays in
one process. Counters are updated on the hot path with pre-bound children where the label set is
known in advance; pool and cache figures are read from their owners at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.metrics_queue import MetricsDeliveryEvents, QueueMetrics
from ses_core.version import VERSION

_WAIT_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class RelayMetrics:
    """The relay's metrics; `registry` is what `/metrics` serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.transactions = Counter(
            "relay_transactions",
            "DATA transactions by outcome and reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.recipients = Counter(
            "relay_recipients",
            "Recipients by outcome (accepted, refused, deferred, blacklisted, "
            "dropped, invalid, denied, queued, undelivered)",
            ["outcome"],
            registry=r,
        )
        self.limiter_wait = Histogram(
            "relay_limiter_wait_seconds",
            "Time a message waited for send-rate tokens",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "relay_upstream_latency_seconds",
            "Time to hand a message to the upstream (incl. waits)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.blacklist_hits = Counter(
            "relay_blacklist_hits", "Recipients found on the blacklist", registry=r
        )
        self.blacklist_errors = Counter(
            "relay_blacklist_errors", "Blacklist lookups that failed (answered 451)", registry=r
        )
        self.auth_failures = Counter(
            "relay_auth_failures", "Failed AUTH attempts by reason", ["reason"], registry=r
        )
        self.sessions = Gauge("relay_sessions", "Open client sessions", registry=r)
        # Always 1; the label says which release runs (README "Releases").
        Gauge("relay_build_info", "The relay's version", ["version"], registry=r).labels(
            version=VERSION
        ).set(1)
        self.errors = Counter("relay_unexpected_errors", "Exceptions answered with 451", registry=r)
        self.junk_disconnects = Counter(
            "relay_junk_disconnects",
            "Sessions closed for too many commands without a message (RELAY_JUNK_COMMAND_LIMIT)",
            registry=r,
        )
        self.queue = QueueMetrics(r)

    def delivery_events(self) -> MetricsDeliveryEvents:
        """What the queue's delivery reports, counted here (its sends in the same latency and
        limiter-wait histograms as direct mode's)."""
        return MetricsDeliveryEvents(
            self.queue, upstream_latency=self.upstream_latency, limiter_wait=self.limiter_wait
        )

    def watch_pool(self, stats: Callable[[], Any]) -> None:
        """Export the sender pool's `stats` (size, idle, opened, recycled, failures)."""
        self.registry.register(_PoolCollector(stats))

    def watch_cache(self, stats: Callable[[], Any]) -> None:
        """Export the blacklist cache's hit/miss counts at scrape time."""
        self.registry.register(_CacheCollector(stats))


class _PoolCollector(Collector):
    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "relay_pool_size", "Upstream connections open", value=_num(stats, "size")
        )
        yield GaugeMetricFamily(
            "relay_pool_idle", "Upstream connections idle", value=_num(stats, "idle")
        )
        yield CounterMetricFamily(
            "relay_pool_opened", "Upstream connections opened", value=_num(stats, "opened")
        )
        yield CounterMetricFamily(
            "relay_pool_recycled",
            "Upstream connections recycled (age/count)",
            value=_num(stats, "recycled"),
        )
        yield CounterMetricFamily(
            "relay_pool_failures", "Upstream connection failures", value=_num(stats, "failures")
        )


class _CacheCollector(Collector):
    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        hits, misses = _num(stats, "hits"), _num(stats, "misses")
        yield CounterMetricFamily("relay_blacklist_cache_hits", "Blacklist cache hits", value=hits)
        yield CounterMetricFamily(
            "relay_blacklist_cache_misses", "Blacklist cache misses", value=misses
        )
        ratio = hits / (hits + misses) if hits + misses else 0.0
        yield GaugeMetricFamily("relay_blacklist_cache_hit_ratio", "Hits / lookups", value=ratio)


def _num(stats: Any, name: str) -> float:
    value = getattr(stats, name, 0)
    return float(value) if isinstance(value, int | float) else 0.0
