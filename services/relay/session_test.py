"""Unit tests for relay.session's shared state (the integration suites drive whole sessions)."""

from __future__ import annotations

from typing import Any

from relay.metrics import RelayMetrics
from relay.session import OpenSessions


class Busy:
    """A stand-in session with or without a transaction under way."""

    def __init__(self, in_transaction: bool) -> None:
        self.in_transaction = in_transaction


def test_open_sessions_count_once_and_drain() -> None:
    """Sessions are counted in the gauge once each; draining is a one-way switch."""
    metrics = RelayMetrics()
    sessions = OpenSessions(metrics.sessions)
    idle: Any = Busy(False)
    busy: Any = Busy(True)
    sessions.add(idle)
    sessions.add(busy)
    assert len(sessions) == 2 and sessions.in_transaction() == [busy]
    sessions.discard(idle)
    sessions.discard(idle)
    assert metrics.registry.get_sample_value("relay_sessions") == 1.0
    assert not sessions.draining
    sessions.start_draining()
    assert sessions.draining
    assert list(sessions) == [busy]
