"""`MAIL FROM:<>` (bounces, auto-replies) through a relay process in AWS mode.

SES needs a verified identity as the envelope sender, so the relay sends null-sender mail as
RELAY_BOUNCE_FROM, message bytes unchanged; without that setting it refuses `<>` at MAIL with a
550 that names it. The upstream is the scripted SES stand-in (STARTTLS + AUTH).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib

from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.relay_support import message
from tests.support.relay_harness import RelayProcess, upstream_environ


async def send_null_sender(port: int) -> tuple[int, str]:
    """MAIL FROM:<>, one RCPT, DATA; the first refusal or the DATA reply (code, text)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("")
        await client.rcpt("you@example.org")
        reply = await client.data(message("bounce"))
        return reply.code, reply.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        client.close()


async def run_relay(environ: dict[str, str], log_path: Path) -> tuple[RelayProcess, int]:
    relay = RelayProcess(environ, log_path=log_path)
    # Started off the loop: the upstream stand-in answers on this loop.
    await asyncio.to_thread(relay.start)
    return relay, relay.port


async def test_null_sender_goes_upstream_as_bounce_from(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """With RELAY_BOUNCE_FROM the upstream sees `MAIL FROM:<bounces@example.com>` and the
    message exactly as the client sent it."""
    environ = {
        **upstream_environ(upstream, certificates.ca_file),
        "SES_RATE_LIMIT": "100",
        "RELAY_ALLOWED_SENDER_DOMAINS": "example.com",
        "RELAY_BOUNCE_FROM": "bounces@example.com",
    }
    relay, port = await run_relay(environ, tmp_path / "relay.log")
    try:
        code, _ = await send_null_sender(port)
    finally:
        await relay.astop()
    assert code == 250, relay.log_tail()
    [received] = upstream.messages
    assert received.sender == "bounces@example.com"
    assert received.recipients == ("you@example.org",)
    assert received.data == message("bounce")


async def test_null_sender_refused_without_bounce_from(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """Without RELAY_BOUNCE_FROM: 550 5.7.1 at MAIL naming the setting; nothing goes upstream."""
    environ = {**upstream_environ(upstream, certificates.ca_file), "SES_RATE_LIMIT": "100"}
    relay, port = await run_relay(environ, tmp_path / "relay.log")
    try:
        code, text = await send_null_sender(port)
    finally:
        await relay.astop()
    assert (code, text) == (
        550,
        "5.7.1 Null sender not accepted: set RELAY_BOUNCE_FROM to a verified identity",
    )
    assert upstream.messages == []
