"""The queue's metrics: depth and age (gauges read from the spool), what delivery did (counters
fed through `DeliveryEvents`), and what the spool refused or committed.

Apart from `relay.metrics` to keep each module small; `RelayMetrics.queue` holds one
`QueueMetrics` on the relay's registry. Names are fixed (alerts and dashboards use them):
relay_queue_*, relay_spool_*.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ses_core.queue import SpoolStats

#: Label values created at start, so that a dashboard shows 0 rather than "no data".
DELIVERY_OUTCOMES = ("accepted", "refused", "expired", "suppressed", "ambiguous", "deferred")
SPOOL_REFUSALS = ("disk_full", "queue_full", "unavailable")


class QueueMetrics:
    """Queue and spool metrics registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.messages = Gauge(
            "relay_queue_messages", "Messages queued (dead-letters excluded)", registry=r
        )
        self.recipients = Gauge(
            "relay_queue_recipients", "Recipients still to deliver in the queue", registry=r
        )
        self.oldest_age = Gauge(
            "relay_queue_oldest_age_seconds",
            "Age of the oldest queued message (0 when empty)",
            registry=r,
        )
        self.dead_letters = Gauge(
            "relay_queue_dead_letters", "Messages set aside for an operator", registry=r
        )
        self.free_bytes = Gauge(
            "relay_spool_free_bytes", "Free bytes on the spool's file system", registry=r
        )
        self.deliveries = Counter(
            "relay_queue_deliveries",
            "Recipients delivered from the queue, by outcome",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "relay_queue_retries",
            "Messages rescheduled, by the reply class that deferred them",
            ["reason"],
            registry=r,
        )
        self.dsn = Counter(
            "relay_queue_dsn",
            "Delivery status notifications: queued, or not sent (null_sender, no_bounce_sender, "
            "failed)",
            ["result"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "relay_queue_dead_lettered", "Messages dead-lettered, by reason", ["reason"], registry=r
        )
        self.possible_duplicates = Counter(
            "relay_queue_possible_duplicates",
            "Recipients resent after an ambiguous loss (SES may have them twice)",
            registry=r,
        )
        self.spool_refusals = Counter(
            "relay_spool_refusals",
            "Messages the spool refused (answered 452 or 451), by reason",
            ["reason"],
            registry=r,
        )
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries.labels(outcome)
        for reason in SPOOL_REFUSALS:
            self.spool_refusals.labels(reason)

    def show(self, stats: SpoolStats, now: float | None = None) -> None:
        """Set the depth gauges from `stats` (read every few seconds by the relay)."""
        now = time.time() if now is None else now
        self.messages.set(stats.messages)
        self.recipients.set(stats.recipients)
        oldest = stats.oldest_received_at
        self.oldest_age.set(max(0.0, now - oldest) if oldest is not None else 0.0)
        self.dead_letters.set(stats.dead_letters)
        if stats.free_bytes is not None:
            self.free_bytes.set(stats.free_bytes)

    def watch_io(self, registry: CollectorRegistry, io_stats: Callable[[], Any]) -> None:
        """Export the local spool's `io_stats` (puts, fsync'd commits) at scrape time."""
        registry.register(_SpoolIoCollector(io_stats))


class MetricsDeliveryEvents:
    """`DeliveryEvents` counted in `QueueMetrics`; each send observed in the relay's
    `relay_upstream_latency_seconds` and `relay_limiter_wait_seconds` when given them (as direct
    mode's handler does for its sends), so the dashboards read the same series in both modes."""

    def __init__(
        self,
        metrics: QueueMetrics,
        *,
        upstream_latency: Histogram | None = None,
        limiter_wait: Histogram | None = None,
    ) -> None:
        self._metrics = metrics
        self._upstream_latency = upstream_latency
        self._limiter_wait = limiter_wait

    def recipients_done(self, outcome: str, count: int) -> None:
        """relay_queue_deliveries_total{outcome} += count."""
        self._metrics.deliveries.labels(outcome).inc(count)

    def retry_scheduled(self, reason: str) -> None:
        """relay_queue_retries_total{reason} += 1."""
        self._metrics.retries.labels(reason).inc()

    def dsn(self, result: str) -> None:
        """relay_queue_dsn_total{result} += 1."""
        self._metrics.dsn.labels(result).inc()

    def dead_lettered(self, reason: str) -> None:
        """relay_queue_dead_lettered_total{reason} += 1."""
        self._metrics.dead_lettered.labels(reason).inc()

    def possible_duplicate(self, count: int) -> None:
        """relay_queue_possible_duplicates_total += count."""
        self._metrics.possible_duplicates.inc(count)

    def sent(self, seconds: float, limiter_wait: float) -> None:
        """relay_upstream_latency_seconds and relay_limiter_wait_seconds observe one send."""
        if self._upstream_latency is not None:
            self._upstream_latency.observe(seconds)
        if self._limiter_wait is not None:
            self._limiter_wait.observe(limiter_wait)


class _SpoolIoCollector(Collector):
    def __init__(self, io_stats: Callable[[], Any]) -> None:
        self._io_stats = io_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._io_stats()
        yield CounterMetricFamily(
            "relay_spool_accepted",
            "Messages the spool stored durably",
            value=_count(stats, "puts"),
        )
        yield CounterMetricFamily(
            "relay_spool_commits",
            "Durable commits of the spool (one fsync'd group commit each)",
            value=_count(stats, "commits"),
        )


def _count(stats: Any, name: str) -> float:
    value = getattr(stats, name, 0)
    return float(value) if isinstance(value, int | float) else 0.0
