"""Direct mode (RELAY_DELIVERY=direct) with the queue: a 250 still means SES accepted, and the
recipients SES kept deferring after a partial acceptance are delivered later from the spool
instead of being only logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from relay.wiring import build_components
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SES_THROTTLED, Fault, SmtpUpstream, Stage
from tests.integration.relay_queue_support import (
    eventually,
    fast_runner,
    queue_config,
    queue_environ,
    send,
)
from tests.support.relay_harness import InProcessRelay


async def test_deferred_recipients_of_a_partial_acceptance_are_delivered_later(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # SES throttles one recipient for as long as the direct send lasts (RELAY_MAX_WAIT=1).
    upstream.faults.set(
        Fault.reply(Stage.RCPT, *SES_THROTTLED, recipient="late@example.org"), times=None
    )
    environ = queue_environ(upstream, certificates, tmp_path / "spool", RELAY_DELIVERY="direct")
    environ["RELAY_MAX_WAIT"] = "1"
    config = queue_config(environ, retry_delay=0.5)
    components = await build_components(config, make_runner=fast_runner)
    caplog.set_level(logging.INFO)
    async with InProcessRelay(config, components) as relay:
        code, text = await send(relay, ["early@example.org", "late@example.org"])
        assert code == 250 and text.startswith("Ok")  # SES's own reply: direct mode
        assert [m.recipients for m in upstream.messages] == [("early@example.org",)]
        queued = [r for r in caplog.records if "queued as" in r.getMessage()]
        assert queued and queued[0].levelno == logging.WARNING
        upstream.faults.clear()
        await eventually(lambda: len(upstream.messages) == 2)
        registry = relay.metrics.registry
        assert registry.get_sample_value("relay_recipients_total", {"outcome": "queued"}) == 1
        assert (
            registry.get_sample_value("relay_recipients_total", {"outcome": "undelivered"}) is None
        )
    assert [m.recipients for m in upstream.messages] == [
        ("early@example.org",),
        ("late@example.org",),
    ]
    assert upstream.messages[0].message_id == upstream.messages[1].message_id
    transaction = [r for r in caplog.records if r.name == "relay.transactions"]
    assert transaction and transaction[-1].fields["queue_id"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
