"""An SES account that cannot send, seen by a queueing relay process with SES_RATE_LIMIT=auto.

The `auto` poller reads `GetAccount` from a loopback SES v2 stub (`SesV2Stub`, reached through
`AWS_ENDPOINT_URL_SESV2`) that reports the account paused (`SendingEnabled` false,
`EnforcementStatus` SHUTDOWN). The relay must keep accepting (the queue holds the mail), stay
ready, and say why nothing leaves: a `ses_account` line in `/readyz` and the
`relay_ses_sending_enabled` / `relay_ses_daily_quota_used_ratio` gauges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ses_core.testing.certs import TestCertificates
from ses_core.testing.sesv2_stub import SesV2Stub
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.queue_e2e_support import get, metric, queue_environ, send_batch
from tests.support.relay_harness import RelayProcess


@pytest.fixture
def paused_account() -> Iterator[SesV2Stub]:
    with SesV2Stub(max_send_rate=14.0) as stub:
        stub.account = {
            "SendingEnabled": False,
            "EnforcementStatus": "SHUTDOWN",
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 12500},
        }
        yield stub


async def test_paused_account_is_reported_while_the_relay_keeps_queueing(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    paused_account: SesV2Stub,
    tmp_path: Path,
) -> None:
    """Paused account: 250 (queued, not sent), /readyz 200 with the `ses_account` line, and
    the account gauges at 0 and 0.25."""
    environ = queue_environ(
        upstream,
        certificates,
        tmp_path / "spool",
        SES_RATE_LIMIT="auto",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_ENDPOINT_URL_SESV2=paused_account.url,
        AWS_ENDPOINT_URL_SES=paused_account.url,
    )
    relay = RelayProcess(environ, log_path=tmp_path / "relay.log", ops_endpoint=True)
    await asyncio.to_thread(relay.start, 30.0)
    try:
        assert await send_batch(relay.port, ["held"]) == {"held": 250}, relay.log_tail()
        status, text = await get(relay.metrics_port, "/readyz")
        enabled = await metric(relay.metrics_port, "relay_ses_sending_enabled")
        ratio = await metric(relay.metrics_port, "relay_ses_daily_quota_used_ratio")
        await asyncio.sleep(0.5)  # a delivery, were one allowed, would reach the upstream now
    finally:
        await relay.astop()
    assert status == 200, text
    assert "ses_account: NotReady (sending paused, EnforcementStatus=SHUTDOWN)" in text
    assert (enabled, ratio) == (0.0, 0.25)
    assert upstream.messages == []
