"""Unit tests for relay.metrics_queue: delivery events and spool readings become the fixed
metric names alerts and dashboards use."""

from __future__ import annotations

from relay.metrics import RelayMetrics
from relay.metrics_queue import MetricsDeliveryEvents
from ses_core.queue import SpoolStats


def test_delivery_events_are_counted_under_their_names() -> None:
    metrics = RelayMetrics()
    events = MetricsDeliveryEvents(metrics.queue)
    events.recipients_done("accepted", 3)
    events.recipients_done("deferred", 1)
    events.retry_scheduled("throttled")
    events.dsn("queued")
    events.dead_lettered("no_bounce_sender")
    events.possible_duplicate(2)
    value = metrics.registry.get_sample_value
    assert value("relay_queue_deliveries_total", {"outcome": "accepted"}) == 3
    assert value("relay_queue_deliveries_total", {"outcome": "deferred"}) == 1
    assert value("relay_queue_deliveries_total", {"outcome": "refused"}) == 0  # shown from start
    assert value("relay_queue_retries_total", {"reason": "throttled"}) == 1
    assert value("relay_queue_dsn_total", {"result": "queued"}) == 1
    assert value("relay_queue_dead_lettered_total", {"reason": "no_bounce_sender"}) == 1
    assert value("relay_queue_possible_duplicates_total") == 2
    assert value("relay_spool_refusals_total", {"reason": "disk_full"}) == 0


def test_queue_sends_fill_the_latency_histograms_direct_mode_fills() -> None:
    """The dashboards' upstream-latency and limiter-wait panels read the same series in both
    modes: the queue's sends are observed there too."""
    metrics = RelayMetrics()
    events = metrics.delivery_events()
    events.sent(0.2, 0.05)
    events.sent(0.4, 0.0)
    value = metrics.registry.get_sample_value
    assert value("relay_upstream_latency_seconds_count") == 2
    assert value("relay_upstream_latency_seconds_sum") == 0.2 + 0.4
    assert value("relay_limiter_wait_seconds_count") == 2
    assert value("relay_limiter_wait_seconds_sum") == 0.05
    MetricsDeliveryEvents(metrics.queue).sent(1.0, 1.0)  # without histograms: nothing, no error
    assert value("relay_upstream_latency_seconds_count") == 2


def test_spool_readings_set_the_depth_gauges() -> None:
    metrics = RelayMetrics()
    metrics.queue.show(SpoolStats(4, 9, 100.0, 2, free_bytes=1234), now=160.0)
    value = metrics.registry.get_sample_value
    assert value("relay_queue_messages") == 4 and value("relay_queue_recipients") == 9
    assert value("relay_queue_oldest_age_seconds") == 60.0
    assert value("relay_queue_dead_letters") == 2 and value("relay_spool_free_bytes") == 1234
    metrics.queue.show(SpoolStats(0, 0, None, 0), now=200.0)
    assert value("relay_queue_oldest_age_seconds") == 0.0
    assert value("relay_spool_free_bytes") == 1234  # a remote spool reports none: kept
