"""Tests for the stand-in's EHLO and AUTH fault stages and its 7-bit mode, driven by aiosmtplib.

The SES client's reaction to these faults is tested beside the client (`ses_core.smtp`); here a
plain client checks what the upstream puts on the wire: a drop sends nothing, a delay delays, and
which EHLO of a STARTTLS session a fault strikes.
"""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import (
    DEFAULT_CREDENTIALS,
    SES_TEMPORARY_AUTH,
    SES_TOO_MANY_CONNECTIONS,
    Fault,
    SmtpUpstream,
    Stage,
)

USER, PASSWORD = DEFAULT_CREDENTIALS
DELAY = 0.2


def connection(upstream: SmtpUpstream, certificates: TestCertificates) -> aiosmtplib.SMTP:
    """A client that connects in clear text; the test says EHLO and STARTTLS itself."""
    return aiosmtplib.SMTP(
        hostname="localhost",
        port=upstream.port,
        start_tls=False,
        tls_context=ssl.create_default_context(cafile=certificates.ca_file),
        timeout=5.0,
    )


async def under_tls(smtp: aiosmtplib.SMTP) -> None:
    """EHLO, STARTTLS, EHLO again: the opening of an SES session on port 587."""
    await smtp.ehlo()
    await smtp.starttls()
    await smtp.ehlo()


async def test_drop_at_auth_ends_the_connection_without_a_reply(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """After the credentials arrive the connection is closed; no reply line is sent."""
    upstream.faults.set(Fault.drop(Stage.AUTH))
    async with connection(upstream, certificates) as smtp:
        await under_tls(smtp)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.auth_plain(USER, PASSWORD)
    assert upstream.auth_attempts == 1
    assert upstream.faults.applied == [Fault.drop(Stage.AUTH)]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.drop(Stage.AUTH, delay=DELAY), aiosmtplib.SMTPServerDisconnected),
        (
            Fault.reply(Stage.AUTH, *SES_TEMPORARY_AUTH, delay=DELAY),
            aiosmtplib.SMTPAuthenticationError,
        ),
        (Fault.stall(Stage.AUTH, DELAY), 235),
    ],
    ids=["drop", "reply", "stall"],
)
async def test_auth_faults_wait_their_delay(
    upstream: SmtpUpstream, certificates: TestCertificates, fault: Fault, expected: object
) -> None:
    """At AUTH, as at the other stages, a fault acts only after its delay; a stall then logs in."""
    upstream.faults.set(fault)
    loop = asyncio.get_running_loop()
    async with connection(upstream, certificates) as smtp:
        await under_tls(smtp)
        started = loop.time()
        try:
            response = await smtp.auth_plain(USER, PASSWORD)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPAuthenticationError) as exc:
            outcome: object = type(exc)
        else:
            outcome = response.code
        elapsed = loop.time() - started
    assert outcome == expected
    assert elapsed >= DELAY


async def test_drop_at_ehlo_ends_the_connection_without_a_reply(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A drop at EHLO closes the connection instead of the EHLO reply."""
    upstream.faults.set(Fault.drop(Stage.EHLO))
    async with connection(upstream, certificates) as smtp:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.ehlo()
    assert upstream.auth_attempts == 0


async def test_reply_at_ehlo_replaces_the_ehlo_answer_after_its_delay(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A reply fault at EHLO answers its own line, after the fault's delay."""
    upstream.faults.set(Fault.reply(Stage.EHLO, *SES_TOO_MANY_CONNECTIONS, delay=DELAY))
    loop = asyncio.get_running_loop()
    async with connection(upstream, certificates) as smtp:
        started = loop.time()
        with pytest.raises(aiosmtplib.SMTPHeloError) as caught:
            await smtp.ehlo()
        elapsed = loop.time() - started
    assert (caught.value.code, caught.value.message) == SES_TOO_MANY_CONNECTIONS
    assert elapsed >= DELAY


async def test_every_ehlo_counts_so_a_passed_first_one_aims_at_the_one_under_tls(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """Each EHLO is one event: with the clear-text EHLO let through by a zero stall, the drop
    strikes the EHLO said after STARTTLS."""
    upstream.faults.set(Fault.stall(Stage.EHLO, 0.0))
    upstream.faults.set(Fault.drop(Stage.EHLO))
    async with connection(upstream, certificates) as smtp:
        await smtp.ehlo()
        await smtp.starttls()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.ehlo()
    assert [fault.action.value for fault in upstream.faults.applied] == ["stall", "drop"]


async def test_without_a_fault_the_session_opens_as_before(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """Without an EHLO fault the EHLO reply is aiosmtpd's, STARTTLS and AUTH included."""
    async with connection(upstream, certificates) as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        await smtp.starttls()
        await smtp.ehlo()
        assert "plain" in smtp.server_auth_methods
        assert (await smtp.auth_plain(USER, PASSWORD)).code == 235


async def test_7bit_mode_neither_offers_nor_accepts_8bitmime(
    certificates: TestCertificates,
) -> None:
    """With eightbitmime=False the server leaves 8BITMIME out of EHLO and answers BODY=8BITMIME
    with 555, like a 7-bit-only server; by default it offers 8BITMIME, as SES does."""
    async with SmtpUpstream(certificates.server_context()) as default:
        async with connection(default, certificates) as smtp:
            await under_tls(smtp)
            assert smtp.supports_extension("8bitmime")
    async with SmtpUpstream(certificates.server_context(), eightbitmime=False) as seven_bit:
        async with connection(seven_bit, certificates) as smtp:
            await under_tls(smtp)
            assert not smtp.supports_extension("8bitmime")
            await smtp.auth_plain(USER, PASSWORD)
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await smtp.mail("s@example.com", options=["BODY=8BITMIME"])
    assert caught.value.code == 555


async def test_pipelining_is_advertised_only_when_asked(certificates: TestCertificates) -> None:
    """pipelining=True adds PIPELINING to the EHLO reply, as SES's has; by default it is absent
    (aiosmtpd does not advertise it), and the rest of the reply stays aiosmtpd's."""
    for pipelining in (False, True):
        upstream = SmtpUpstream(certificates.server_context(), pipelining=pipelining)
        async with upstream, connection(upstream, certificates) as smtp:
            await under_tls(smtp)
            assert smtp.supports_extension("pipelining") is pipelining
            assert smtp.supports_extension("8bitmime")
            assert "plain" in smtp.server_auth_methods
