"""Tests for the SES stand-in upstream and its fault script, driven by plain aiosmtplib."""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from ses_core.testing.certs import TestCertificates
from ses_core.testing.clock import VirtualClock
from ses_core.testing.upstream import (
    DEFAULT_CREDENTIALS,
    SES_THROTTLED,
    Action,
    Fault,
    FaultScript,
    ReceivedMessage,
    SmtpUpstream,
    Stage,
    ThreadedUpstream,
    TlsMode,
)

USER, PASSWORD = DEFAULT_CREDENTIALS
MESSAGE = b"Message-ID: <u1@example.com>\r\nSubject: s\r\n\r\nbody\r\n"


def client_context(certificates: TestCertificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificates.ca_file)


def test_fault_applies_the_given_number_of_times() -> None:
    """A fault set with times=2 is taken twice, then no more."""
    script = FaultScript()
    script.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=2)
    taken = [script.take(Stage.MAIL) for _ in range(3)]
    assert [f is not None for f in taken] == [True, True, False]
    assert len(script.applied) == 2


async def test_fault_without_count_lasts_until_cleared_or_expired(clock: VirtualClock) -> None:
    """times=None keeps a fault until clear(); duration ends it on the script's clock."""
    script = FaultScript(clock)
    script.set(Fault.drop(Stage.DATA), times=None)
    assert all(script.take(Stage.DATA) is not None for _ in range(5))
    script.clear()
    assert script.take(Stage.DATA) is None
    script.set(Fault.drop(Stage.DATA), times=None, duration=10.0)
    await clock.advance(9.0)
    assert script.take(Stage.DATA) is not None
    await clock.advance(1.5)
    assert script.take(Stage.DATA) is None


def test_fault_matching_by_stage_and_recipient() -> None:
    """A recipient-specific RCPT fault ignores other stages and recipients; case is ignored."""
    script = FaultScript()
    script.set(Fault.reply(Stage.RCPT, 550, "no", recipient="Bad@Example.com"))
    assert script.take(Stage.MAIL) is None
    assert script.take(Stage.RCPT, "good@example.com") is None
    fault = script.take(Stage.RCPT, "bad@example.com")
    assert fault is not None and fault.line == "550 no"


def test_fault_constructors_and_validation() -> None:
    """Constructors set the action; times below 1 is rejected."""
    assert Fault.drop(Stage.MAIL).drops
    assert Fault.stall(Stage.MAIL, 2.0) == Fault(Stage.MAIL, Action.STALL, delay=2.0)
    assert Fault.tls_failure().stage is Stage.STARTTLS
    with pytest.raises(ValueError):
        FaultScript().set(Fault.drop(Stage.MAIL), times=0)


async def test_starttls_upstream_records_messages_with_their_message_id(
    certificates: TestCertificates,
) -> None:
    """A plain aiosmtplib client with STARTTLS and AUTH delivers; the upstream records it."""
    async with SmtpUpstream(certificates.server_context()) as upstream:
        reply = await aiosmtplib.send(
            MESSAGE,
            sender="s@example.com",
            recipients=["r@example.com"],
            hostname="localhost",
            port=upstream.port,
            username=USER,
            password=PASSWORD,
            start_tls=True,
            tls_context=client_context(certificates),
        )
    assert reply[1].startswith("Ok ")
    [received] = upstream.messages
    assert received.message_id == "<u1@example.com>"
    assert received.username == USER
    assert received.encrypted


async def test_starttls_upstream_requires_tls_and_auth(certificates: TestCertificates) -> None:
    """Before STARTTLS MAIL is refused (530); after STARTTLS without AUTH too."""
    async with SmtpUpstream(certificates.server_context()) as upstream:
        smtp = aiosmtplib.SMTP(hostname="localhost", port=upstream.port, start_tls=False)
        async with smtp:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as before:
                await smtp.mail("s@example.com")
            assert before.value.code == 530
            await smtp.starttls(tls_context=client_context(certificates))
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as unauthenticated:
                await smtp.mail("s@example.com")
            assert unauthenticated.value.code == 530


async def test_implicit_tls_upstream_offers_and_accepts_auth(
    certificates: TestCertificates,
) -> None:
    """In implicit-TLS mode AUTH is advertised and works (aiosmtpd alone would refuse it)."""
    async with SmtpUpstream(certificates.server_context(), mode=TlsMode.IMPLICIT) as upstream:
        smtp = aiosmtplib.SMTP(
            hostname="localhost",
            port=upstream.port,
            use_tls=True,
            tls_context=client_context(certificates),
        )
        async with smtp:
            await smtp.ehlo()
            assert "plain" in smtp.server_auth_methods
            assert not smtp.supports_extension("starttls")
            await smtp.login(USER, PASSWORD)
            await smtp.sendmail("s@example.com", ["r@example.com"], MESSAGE)
    assert upstream.messages[0].encrypted


async def test_wrong_credentials_get_ses_535(certificates: TestCertificates) -> None:
    """Bad credentials are answered like SES: 535 Authentication Credentials Invalid."""
    async with SmtpUpstream(certificates.server_context()) as upstream:
        smtp = aiosmtplib.SMTP(
            hostname="localhost",
            port=upstream.port,
            start_tls=True,
            tls_context=client_context(certificates),
        )
        async with smtp:
            await smtp.ehlo()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
                await smtp.auth_plain(USER, "wrong")
    assert caught.value.code == 535
    assert "Credentials Invalid" in caught.value.message


async def test_sink_mode_counts_without_keeping_messages(certificates: TestCertificates) -> None:
    """With record=False the upstream counts accepted messages but stores none."""
    async with SmtpUpstream(certificates.server_context(), record=False) as upstream:
        await aiosmtplib.send(
            MESSAGE,
            sender="s@example.com",
            recipients=["r@example.com"],
            hostname="localhost",
            port=upstream.port,
            username=USER,
            password=PASSWORD,
            start_tls=True,
            tls_context=client_context(certificates),
        )
    assert upstream.accepted == 1
    assert upstream.messages == []


async def test_handler_errors_are_answered_451_not_500(
    certificates: TestCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception inside the upstream is a temporary 451, never aiosmtpd's permanent 500."""

    def broken(*args: object) -> ReceivedMessage:
        raise RuntimeError("a bug in the stand-in")

    async with SmtpUpstream(certificates.server_context()) as upstream:
        monkeypatch.setattr(ReceivedMessage, "from_envelope", broken)
        smtp = aiosmtplib.SMTP(
            hostname="localhost",
            port=upstream.port,
            start_tls=True,
            tls_context=client_context(certificates),
            username=USER,
            password=PASSWORD,
        )
        async with smtp:
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await smtp.sendmail("s@example.com", ["r@example.com"], MESSAGE)
    assert caught.value.code == 451


async def test_restarted_upstream_listens_on_the_same_port(
    certificates: TestCertificates,
) -> None:
    """stop() then start() keeps the port, so clients reconnect after a simulated outage."""
    upstream = SmtpUpstream(certificates.server_context())
    await upstream.start()
    port = upstream.port
    await upstream.stop()
    await upstream.start()
    try:
        assert upstream.port == port
    finally:
        await upstream.stop()


def test_upstream_refuses_tls_modes_without_a_context() -> None:
    """STARTTLS or implicit TLS without a server context is a configuration error."""
    with pytest.raises(ValueError):
        SmtpUpstream(None, mode=TlsMode.STARTTLS)


async def test_threaded_upstream_serves_from_its_own_loop(certificates: TestCertificates) -> None:
    """ThreadedUpstream runs the server on another thread; faults set here apply there."""
    with ThreadedUpstream(SmtpUpstream(certificates.server_context())) as upstream:
        upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED))
        send = aiosmtplib.send(
            MESSAGE,
            sender="s@example.com",
            recipients=["r@example.com"],
            hostname="localhost",
            port=upstream.port,
            username=USER,
            password=PASSWORD,
            start_tls=True,
            tls_context=client_context(certificates),
        )
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await send
        assert caught.value.code == 454
        await aiosmtplib.send(
            MESSAGE,
            sender="s@example.com",
            recipients=["r@example.com"],
            hostname="localhost",
            port=upstream.port,
            username=USER,
            password=PASSWORD,
            start_tls=True,
            tls_context=client_context(certificates),
        )
    assert upstream.accepted == 1
