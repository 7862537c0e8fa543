"""The relay's DATA outcomes against the scripted SES stand-in (STARTTLS + AUTH upstream).

Each test runs the relay in-process with the pooled `SesSmtpClient` pointed at `SmtpUpstream`,
sends with aiosmtplib, and checks both the client's reply and what reached the upstream.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiosmtplib
import pytest

from relay.outbox import OutboxSender
from relay.wiring import Components
from ses_core.ratelimit import LocalRateLimiter
from ses_core.smtp import OutboundMessage, SendResult
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import (
    SES_NOT_VERIFIED,
    SES_THROTTLED,
    Fault,
    SmtpUpstream,
    Stage,
)
from tests.integration.relay_queue_support import http_get, send
from tests.integration.relay_support import base_config, message, relay_client, ses_client
from tests.support.relay_harness import InProcessRelay


async def test_accepted_message_reaches_upstream_once(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A message is relayed over the pooled TLS session and answered 250 with SES's text."""
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        code, text = await send(relay, recipients=["a@example.org", "b@example.org"])
        code2, _ = await send(relay, recipients=["c@example.org"], number=2)
    assert (code, code2) == (250, 250)
    assert text.startswith("Ok ")
    assert [m.message_id for m in upstream.messages] == ["<1@example.com>", "<2@example.com>"]
    assert upstream.messages[0].recipients == ("a@example.org", "b@example.org")
    assert all(m.encrypted and m.username == "AKIATESTUSER" for m in upstream.messages)
    assert upstream.connections_opened == 1  # the second message reused the pooled session


async def test_more_than_50_recipients_are_split(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """120 recipients are accepted at RCPT and delivered in transactions of at most 50."""
    sender = await ses_client(upstream, certificates)
    recipients = [f"r{i}@example.org" for i in range(120)]
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        code, _ = await send(relay, recipients=recipients)
    assert code == 250
    assert [len(m.recipients) for m in upstream.messages] == [50, 50, 20]


async def test_recipient_limit_answers_452(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """Past RELAY_MAX_RECIPIENTS a RCPT gets 452 4.5.3 and the accepted ones still go out."""
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(max_recipients=2), Components(sender=sender)) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail("app@example.com")
        await client.rcpt("a@example.org")
        await client.rcpt("b@example.org")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            await client.rcpt("c@example.org")
        assert caught.value.code == 452 and "4.5.3" in caught.value.message
        assert (await client.data(message())).code == 250
        client.close()
    assert upstream.messages[0].recipients == ("a@example.org", "b@example.org")


async def test_throttled_after_retries_is_451(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """An upstream that keeps throttling is retried, then the client gets 451 4.7.0 (not 5xx)."""
    upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=None)
    sender = await ses_client(upstream, certificates, max_attempts=3)
    async with InProcessRelay(base_config(max_wait=2.0), Components(sender=sender)) as relay:
        code, text = await send(relay, recipients=["a@example.org"])
    assert code == 451
    assert text.startswith("4.7.0 Upstream throttled")
    assert upstream.messages == []


async def test_throttled_once_then_accepted(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A single throttle is retried within the deadline and the client sees 250."""
    upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=1)
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        code, _ = await send(relay, recipients=["a@example.org"])
    assert code == 250
    assert len(upstream.messages) == 1


async def test_rate_wait_exceeded_is_451_at_once(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """When the limiter cannot admit the recipients within RELAY_MAX_WAIT the answer is 451."""
    limiter = LocalRateLimiter(0.01, 1)
    # The client takes the tokens; this limiter refills one every 100 s.
    sender = await ses_client(upstream, certificates, limiter=limiter)
    async with InProcessRelay(base_config(max_wait=0.5), Components(sender=sender)) as relay:
        first, _ = await send(relay, recipients=["a@example.org"])
        code, text = await send(relay, recipients=["b@example.org", "c@example.org"], number=2)
    assert first == 250
    assert code == 451 and text.startswith("4.7.0 Send rate limit: wait exceeded")
    assert len(upstream.messages) == 1


async def test_permanent_refusal_passes_upstream_text(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A real permanent refusal of every recipient is answered with the upstream's 5xx and text."""
    upstream.faults.set(Fault.reply(Stage.END_OF_DATA, *SES_NOT_VERIFIED), times=1)
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        code, text = await send(relay, recipients=["a@example.org"])
    assert code == 554
    assert text == SES_NOT_VERIFIED[1]


async def test_partial_refusal_is_250_and_logged(
    upstream: SmtpUpstream, certificates: TestCertificates, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted plus permanently refused recipients: 250, the refused one in the transaction log."""
    upstream.faults.set(
        Fault.reply(Stage.RCPT, 553, "5.1.3 Invalid email address", recipient="bad@example.org"),
        times=None,
    )
    sender = await ses_client(upstream, certificates)
    with caplog.at_level(logging.INFO, logger="relay.transactions"):
        async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
            code, _ = await send(relay, recipients=["good@example.org", "bad@example.org"])
    assert code == 250
    assert upstream.messages[0].recipients == ("good@example.org",)
    record = next(r for r in caplog.records if r.name == "relay.transactions")
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["outcome"] == "partial" and fields["reason"] == "partial_refused"
    assert fields["refused"] == [{"rcpt": "bad@example.org", "reason": "upstream:553"}]
    assert fields["sender_domain"] == "example.com"
    assert "app@example.com" not in record.getMessage()


async def test_partial_deferral_retried_then_250(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A recipient deferred while another was accepted is resent alone; the client gets 250."""
    upstream.faults.set(
        Fault.reply(Stage.RCPT, 451, "Temporary service failure", recipient="slow@example.org"),
        times=2,
    )
    sender = await ses_client(upstream, certificates, max_attempts=2)
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        code, _ = await send(relay, recipients=["fast@example.org", "slow@example.org"])
    assert code == 250
    delivered = [r for m in upstream.messages for r in m.recipients]
    assert sorted(delivered) == ["fast@example.org", "slow@example.org"]  # each exactly once


async def test_partial_deferral_past_deadline_is_logged_as_undelivered(
    upstream: SmtpUpstream, certificates: TestCertificates, caplog: pytest.LogCaptureFixture
) -> None:
    """A recipient still deferred at the deadline after others were accepted: 250 and an ERROR."""
    upstream.faults.set(
        Fault.reply(Stage.RCPT, 451, "Temporary service failure", recipient="slow@example.org"),
        times=None,
    )
    sender = await ses_client(upstream, certificates, max_attempts=2)
    with caplog.at_level(logging.ERROR, logger="relay.handler"):
        async with InProcessRelay(base_config(max_wait=0.6), Components(sender=sender)) as relay:
            code, _ = await send(relay, recipients=["fast@example.org", "slow@example.org"])
    assert code == 250
    assert [m.recipients for m in upstream.messages] == [("fast@example.org",)]
    assert "slow@example.org" in caplog.text and "still deferred" in caplog.text


async def test_all_deferred_is_451(upstream: SmtpUpstream, certificates: TestCertificates) -> None:
    """A transient failure for every recipient past the deadline: 451, nothing accepted."""
    upstream.faults.set(
        Fault.reply(Stage.END_OF_DATA, 451, "Temporary service failure"), times=None
    )
    sender = await ses_client(upstream, certificates, max_attempts=2)
    async with InProcessRelay(base_config(max_wait=1.0), Components(sender=sender)) as relay:
        code, text = await send(relay, recipients=["a@example.org"])
    assert code == 451 and text.startswith("4.3.0")


async def test_ambiguous_loss_is_451(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A connection lost after the final '.' is answered 451 (at-least-once, never lost)."""
    upstream.faults.set(Fault.drop(Stage.END_OF_DATA), times=1)
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        code, _ = await send(relay, recipients=["a@example.org"])
    assert code == 451
    assert len(upstream.messages) == 1  # the upstream kept it: the client's retry may duplicate


async def test_upstream_down_is_451(certificates: TestCertificates) -> None:
    """With the upstream unreachable the relay answers 451, and /readyz reports it."""
    async with SmtpUpstream(certificates.server_context()) as upstream:
        sender = await ses_client(upstream, certificates, timeout=1.0)
    config = base_config(max_wait=1.0, metrics_port=0)
    components = Components(sender=sender, probes={"upstream": sender.probe})
    async with InProcessRelay(config, components) as relay:
        code, text = await send(relay, recipients=["a@example.org"])
        status = await http_get(relay.metrics_port, "/readyz")
    assert code == 451 and text.startswith("4.4.1")
    assert status.startswith("HTTP/1.1 503") and "upstream: UpstreamUnavailable" in status


async def test_unexpected_error_is_451_without_internals(tmp_path: Path) -> None:
    """An exception inside the relay becomes 451 4.3.0; its class and text stay out of the reply."""

    class Exploding:
        async def send(
            self, message: OutboundMessage, *, deadline: float | None = None
        ) -> SendResult:
            raise RuntimeError("secret internals /etc/passwd")

        async def probe(self) -> None:
            return None

        async def aclose(self) -> None:
            return None

    components = Components(sender=Exploding())
    async with InProcessRelay(base_config(), components) as relay:
        code, text = await send(relay, recipients=["a@example.org"])
    assert code == 451 and text.startswith("4.3.0")
    assert "secret" not in text and "RuntimeError" not in text and "Error:" not in text


async def test_metrics_and_health_endpoints(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """/metrics counts transactions, /healthz answers ok and /readyz NOOPs the upstream."""
    sender = await ses_client(upstream, certificates)
    config = base_config(metrics_port=0)
    components = Components(sender=sender, probes={"upstream": sender.probe})
    components.metrics.watch_pool(lambda: sender.stats)
    async with InProcessRelay(config, components) as relay:
        await send(relay, recipients=["a@example.org"])
        metrics = await http_get(relay.metrics_port, "/metrics")
        health = await http_get(relay.metrics_port, "/healthz")
        ready = await http_get(relay.metrics_port, "/readyz")
        missing = await http_get(relay.metrics_port, "/nope")
    assert 'relay_transactions_total{outcome="accepted",reason=""} 1.0' in metrics
    assert 'relay_recipients_total{outcome="accepted"} 1.0' in metrics
    assert "relay_pool_opened_total" in metrics and "relay_limiter_wait_seconds_bucket" in metrics
    assert health.startswith("HTTP/1.1 200") and health.endswith("ok\n")
    assert ready.startswith("HTTP/1.1 200") and ready.endswith("ready\n")
    assert missing.startswith("HTTP/1.1 404")


async def test_smtputf8_and_8bitmime_pass_through(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """SMTPUTF8 and BODY=8BITMIME reach the upstream; a non-ASCII address is not stripped."""
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(), Components(sender=sender)) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail(
            "app@example.com", options=["SMTPUTF8", "BODY=8BITMIME"], encoding="utf-8"
        )
        await client.rcpt("jörg@example.org", encoding="utf-8")
        reply = await client.data("Subject: grüße\r\n\r\nhé\r\n".encode())
        client.close()
    assert reply.code == 250
    [received] = upstream.messages
    assert received.recipients == ("jörg@example.org",)
    assert "SMTPUTF8" in received.mail_options and "BODY=8BITMIME" in received.mail_options
    assert "grüße".encode() in received.data


async def test_slow_upstream_does_not_time_the_client_out(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """The client's idle timer is paused while the relay waits for SES, so no cut-off (and no
    duplicate on the client's retry) happens even when relaying outlasts the session timeout."""
    upstream.faults.set(Fault.stall(Stage.END_OF_DATA, 2.5), times=1)
    sender = await ses_client(upstream, certificates)
    async with InProcessRelay(base_config(session_timeout=1.0), Components(sender=sender)) as relay:
        code, _ = await send(relay, recipients=["a@example.org"])
    assert code == 250
    assert [m.message_id for m in upstream.messages] == ["<1@example.com>"]


async def test_idle_client_is_still_timed_out(tmp_path: Path) -> None:
    """Outside a relayed DATA the session timeout still closes idle clients."""
    import asyncio

    async with InProcessRelay(
        base_config(session_timeout=1.0), Components(sender=OutboxSender(tmp_path))
    ) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        greeting = await reader.readline()
        closed = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert greeting.startswith(b"220") and closed == b""


async def test_readyz_is_503_while_draining(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """Once shutdown starts, /readyz says not ready so load balancers stop sending clients."""
    import asyncio

    upstream.faults.set(Fault.stall(Stage.END_OF_DATA, 1.5), times=1)
    sender = await ses_client(upstream, certificates)
    config = base_config(metrics_port=0, grace_period=5.0)
    async with InProcessRelay(config, Components(sender=sender)) as relay:
        before = await http_get(relay.metrics_port, "/readyz")
        in_flight = asyncio.create_task(send(relay, recipients=["a@example.org"]))
        await asyncio.sleep(0.5)  # the message is now waiting at the upstream
        shutdown = asyncio.create_task(relay.shutdown())
        await asyncio.sleep(0.1)
        during = await http_get(relay.metrics_port, "/readyz")
        code, _ = await in_flight
        await shutdown
    assert before.startswith("HTTP/1.1 200")
    assert during.startswith("HTTP/1.1 503") and "accepting" in during
    assert code == 250
