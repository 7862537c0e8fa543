"""Queue mode against the scripted SES stand-in: mail accepted while SES is unreachable is
delivered once it is back, and the relay stays ready meanwhile (the queue absorbs the outage)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.server import RelayServer
from relay.wiring import build_components
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SES_NOT_VERIFIED, Fault, SmtpUpstream, Stage
from tests.integration.relay_queue_support import (
    eventually,
    fast_runner,
    http_get,
    queue_config,
    queue_environ,
    send,
)
from tests.support.relay_harness import InProcessRelay


async def test_mail_accepted_during_an_outage_is_delivered_when_ses_is_back(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    upstream.faults.set(Fault.drop(Stage.CONNECT), times=None)  # SES unreachable
    config = queue_config(queue_environ(upstream, certificates, tmp_path / "spool"))
    components = await build_components(config, make_runner=fast_runner)
    async with InProcessRelay(config, components) as relay:
        replies = [await send(relay, [f"r{n}@example.org"], number=n) for n in range(3)]
        assert [code for code, _ in replies] == [250, 250, 250]
        assert all(text.startswith("2.0.0 Ok: queued as ") for _, text in replies)
        ready = await http_get(relay.metrics_port, "/readyz")
        assert ready.startswith("HTTP/1.1 200"), ready
        assert "upstream: UpstreamUnavailable (not required)" in ready
        await eventually(
            lambda: sample(relay, "relay_queue_retries_total", reason="connection") > 0
        )
        assert upstream.messages == []
        upstream.faults.clear()  # SES is back
        await eventually(lambda: len(upstream.messages) == 3)
        await eventually(
            lambda: sample(relay, "relay_queue_deliveries_total", outcome="accepted") == 3
        )
        assert components.delivery is not None
        # The counter moves before the outcome's commit (gathered for up to 10 ms): poll, bounded.
        for _ in range(100):
            stats = await components.delivery.spool.stats()
            if stats.messages == 0:
                break
            await asyncio.sleep(0.05)
        assert stats.messages == 0 and stats.dead_letters == 0
        metrics = await http_get(relay.metrics_port, "/metrics")
    ids = sorted(m.message_id or "" for m in upstream.messages)
    assert ids == ["<0@example.com>", "<1@example.com>", "<2@example.com>"]
    assert all(m.sender == "app@example.com" for m in upstream.messages)
    assert "relay_spool_accepted_total 3.0" in metrics
    assert 'relay_transactions_total{outcome="queued",reason=""} 3.0' in metrics


async def test_a_refused_message_is_answered_250_and_reported_by_dsn(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """SES's 5xx reaches the sender as a DSN from RELAY_BOUNCE_FROM, not as the DATA reply."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *SES_NOT_VERIFIED, recipient="bad@example.org"))
    environ = queue_environ(
        upstream, certificates, tmp_path / "spool", RELAY_BOUNCE_FROM="bounces@example.com"
    )
    config = queue_config(environ)
    components = await build_components(config, make_runner=fast_runner)
    async with InProcessRelay(config, components) as relay:
        code, _ = await send(relay, ["bad@example.org"])
        assert code == 250
        await eventually(
            lambda: any(m.recipients == ("app@example.com",) for m in upstream.messages)
        )
    dsns = [m for m in upstream.messages if m.recipients == ("app@example.com",)]
    assert len(dsns) == 1
    dsn = dsns[0]
    assert dsn.sender == "bounces@example.com"
    assert b"multipart/report" in dsn.data and b"bad@example.org" in dsn.data


def sample(relay: RelayServer, name: str, **labels: str) -> float:
    """A metric's current value (0 before it was counted)."""
    return relay.metrics.registry.get_sample_value(name, labels or None) or 0.0
