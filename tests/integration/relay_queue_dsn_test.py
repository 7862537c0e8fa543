"""What a queueing relay process tells senders after its 250, and what it refuses before one.

- a recipient SES keeps deferring outlives RELAY_QUEUE_LIFETIME: a DSN (RFC 3464) reaches the
  original sender through SES, sent as RELAY_BOUNCE_FROM; parsed with `email`, it says
  `Action: failed`, `Status: 4.4.7`, and names the recipient and the reporting MTA;
- a permanent refusal at delivery: a DSN with the 5.x.x status and SES's reply as
  `Diagnostic-Code`, about the refused recipient only (the other one is delivered);
- a message with a null sender never causes a DSN; without RELAY_BOUNCE_FROM a refused message
  is dead-lettered, which `relay queue list --state dead` shows;
- a disk below RELAY_SPOOL_MIN_FREE: `452 4.3.1` at MAIL, never a 250, nothing sent upstream.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
from contextlib import redirect_stdout
from email.message import EmailMessage, Message
from pathlib import Path
from typing import cast

import aiosmtplib
import pytest

from relay.main import main as relay_main
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SES_THROTTLED, Fault, ReceivedMessage, SmtpUpstream, Stage
from tests.integration.queue_e2e_support import (
    get,
    message_id,
    metric,
    queue_environ,
    send_batch,
    wait_for,
)
from tests.support.relay_harness import RelayProcess

BOUNCES = "bounces@example.com"
FQDN = "relay.test"
GONE = (550, "5.1.1 <gone@example.org>: Mailbox does not exist")


def relay_for(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path, **extra: str
) -> RelayProcess:
    environ = queue_environ(
        upstream, certificates, tmp_path / "spool", SERVER_FQDN=FQDN, RELAY_GRACE_PERIOD="5"
    )
    environ.update(extra)
    return RelayProcess(environ, log_path=tmp_path / "relay.log", ops_endpoint=True)


def dsns(upstream: SmtpUpstream) -> list[ReceivedMessage]:
    """Messages the upstream got from the bounce address (the relay's DSNs)."""
    return [m for m in upstream.messages if m.sender == BOUNCES]


def report_of(received: ReceivedMessage) -> tuple[EmailMessage, Message, list[Message]]:
    """(the DSN, its per-message status block, its per-recipient blocks), checked for shape."""
    report = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(report, EmailMessage)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list) and all(isinstance(b, Message) for b in blocks)
    return report, cast(Message, blocks[0]), [cast(Message, b) for b in blocks[1:]]


async def test_expired_recipient_gets_a_dsn_with_status_4_4_7(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """A recipient throttled until RELAY_QUEUE_LIFETIME passes: the sender gets a DSN saying
    `Action: failed`, `Status: 4.4.7`, sent upstream from RELAY_BOUNCE_FROM."""
    upstream.faults.set(
        Fault.reply(Stage.RCPT, *SES_THROTTLED, recipient="slow@example.org"), times=None
    )
    relay = relay_for(
        upstream,
        certificates,
        tmp_path,
        RELAY_QUEUE_LIFETIME="2",
        RELAY_BOUNCE_FROM=BOUNCES,
    )
    await asyncio.to_thread(relay.start, 30.0)
    try:
        codes = await send_batch(relay.port, ["late"], recipients=("slow@example.org",))
        assert codes == {"late": 250}
        await wait_for(lambda: bool(dsns(upstream)), timeout=40, what="the DSN")
        expired = await metric(
            relay.metrics_port, 'relay_queue_deliveries_total{outcome="expired"}'
        )
    finally:
        await relay.astop()
    [dsn] = dsns(upstream)
    assert dsn.recipients == ("app@example.com",)
    report, per_message, [recipient] = report_of(dsn)
    assert report["To"] == "app@example.com" and BOUNCES in report["From"]
    assert per_message["Reporting-MTA"] == f"dns; {FQDN}"
    assert recipient["Final-Recipient"] == "rfc822; slow@example.org"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "4.4.7"
    assert message_id("late") in list(report.iter_parts())[2].get_content()
    assert expired == 1.0
    assert not any(m.message_id == message_id("late") for m in upstream.messages)


async def test_permanent_refusal_gets_a_dsn_with_the_diagnostic(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """SES refuses one of two recipients with 550: the other gets the message, the sender a DSN
    about the refused one with its 5.x.x status and SES's reply as `Diagnostic-Code`."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *GONE, recipient="gone@example.org"), times=None)
    relay = relay_for(upstream, certificates, tmp_path, RELAY_BOUNCE_FROM=BOUNCES)
    await asyncio.to_thread(relay.start, 30.0)
    try:
        recipients = ("gone@example.org", "here@example.org")
        assert await send_batch(relay.port, ["mixed"], recipients=recipients) == {"mixed": 250}
        await wait_for(lambda: bool(dsns(upstream)), timeout=30, what="the DSN")
    finally:
        await relay.astop()
    [original] = [m for m in upstream.messages if m.message_id == message_id("mixed")]
    assert original.recipients == ("here@example.org",)
    [dsn] = dsns(upstream)
    _, per_message, [recipient] = report_of(dsn)
    assert per_message["Reporting-MTA"] == f"dns; {FQDN}"
    assert recipient["Final-Recipient"] == "rfc822; gone@example.org"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Diagnostic-Code"] == f"smtp; {GONE[0]} {GONE[1]}"


async def test_null_sender_message_never_gets_a_dsn(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """A bounce (`MAIL FROM:<>`) refused by SES at delivery is counted, never answered with a
    DSN (RFC 5321 4.5.5)."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *GONE, recipient="gone@example.org"), times=None)
    relay = relay_for(upstream, certificates, tmp_path, RELAY_BOUNCE_FROM=BOUNCES)
    await asyncio.to_thread(relay.start, 30.0)
    sample = 'relay_queue_dsn_total{result="null_sender"}'
    try:
        codes = await send_batch(
            relay.port, ["bounce"], sender="", recipients=("gone@example.org",)
        )
        assert codes == {"bounce": 250}
        for _ in range(200):
            if await metric(relay.metrics_port, sample) >= 1:
                break
            await asyncio.sleep(0.1)
        counted = await metric(relay.metrics_port, sample)
        await asyncio.sleep(1.0)  # a DSN, if one were queued, would be delivered by now
    finally:
        await relay.astop()
    assert counted == 1.0
    assert upstream.messages == []


async def test_without_bounce_sender_a_refused_message_is_dead_lettered(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """No RELAY_BOUNCE_FROM: a refused message is set aside, counted, and listed by
    `relay queue list --state dead` while the relay runs."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *GONE, recipient="gone@example.org"), times=None)
    relay = relay_for(upstream, certificates, tmp_path)
    await asyncio.to_thread(relay.start, 30.0)
    sample = 'relay_queue_dsn_total{result="no_bounce_sender"}'
    try:
        assert await send_batch(relay.port, ["lost"], recipients=("gone@example.org",)) == {
            "lost": 250
        }
        for _ in range(200):
            if await metric(relay.metrics_port, sample) >= 1:
                break
            await asyncio.sleep(0.1)
        out = io.StringIO()
        argv = [
            "queue",
            "list",
            "--state",
            "dead",
            "--json",
            "--spool-dir",
            str(tmp_path / "spool"),
        ]
        with redirect_stdout(out):
            status = await asyncio.to_thread(relay_main, argv)
        counted = await metric(relay.metrics_port, sample)
    finally:
        await relay.astop()
    assert counted == 1.0
    assert status == 0
    [dead] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert dead["state"] == "dead" and dead["sender"] == "app@example.com"
    assert dead["recipients"][0]["address"] == "gone@example.org"
    assert dead["recipients"][0]["state"] == "failed"
    assert upstream.messages == []


async def test_disk_below_the_floor_answers_452_never_250(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """RELAY_SPOOL_MIN_FREE above the free disk: every transaction gets `452 4.3.1` before its
    body, nothing goes upstream, and /readyz says why (not ready to accept)."""
    relay = relay_for(upstream, certificates, tmp_path, RELAY_SPOOL_MIN_FREE=str(2**60))
    await asyncio.to_thread(relay.start, 30.0)
    try:
        codes = await send_batch(relay.port, ["full-1", "full-2", "full-3"])
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
        await client.connect()
        try:
            await client.ehlo()
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await client.mail("app@example.com")
        finally:
            client.close()
        status, text = await get(relay.metrics_port, "/readyz")
    finally:
        await relay.astop()
    assert codes == {"full-1": 452, "full-2": 452, "full-3": 452}
    assert (refused.value.code, refused.value.message) == (
        452,
        "4.3.1 Insufficient system storage",
    )
    assert status == 503 and "disk_full" in text, text
    assert upstream.messages == []
