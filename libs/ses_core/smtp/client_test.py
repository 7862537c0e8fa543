"""Tests for SesSmtpClient against a real SES stand-in on 127.0.0.1 (STARTTLS, AUTH, trustme).

Time is faked (clock and sleep injected), so retry schedules are checked without waiting; the
sockets, TLS handshakes and SMTP dialogues are real.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ses_core.errors import (
    DailyQuotaExhausted,
    RateLimiterUnavailable,
    RateLimitTimeout,
    UpstreamUnavailable,
)
from ses_core.smtp import MessageSender, OutboundMessage, Outcome, ReplyClass, SmtpSettings
from ses_core.smtp._pipelining import PipeliningProtocol
from ses_core.smtp.client import AMBIGUOUS_TEXT, PARTIAL_RETRY_ROUNDS, SesSmtpClient
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import (
    SES_ACCESS_DENIED,
    SES_BAD_CREDENTIALS,
    SES_DAILY_QUOTA,
    SES_INVALID_ADDRESS,
    SES_MAX_MESSAGES,
    SES_NOT_VERIFIED,
    SES_TEMPORARY_AUTH,
    SES_TEMPORARY_FAILURE,
    SES_TEMPORARY_FAILURE_454,
    SES_THROTTLED,
    SES_TOO_LONG,
    SES_TOO_MANY_CONNECTIONS,
    Fault,
    SmtpUpstream,
    Stage,
    TlsMode,
)

USER = "AKIATESTUSER"
PASSWORD = "test-smtp-password"
BODY = b"Message-ID: <m1@example.com>\r\nSubject: test\r\n\r\nhello\r\n"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class FakeLimiter:
    """Records each acquire; answers 0.25 s waited or raises the error it was given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[int, float | None]] = []
        self.error = error

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        self.calls.append((cost, max_wait))
        if self.error is not None:
            raise self.error
        return 0.25


@pytest.fixture(params=["lockstep", "pipelining"])
async def upstream(
    certificates: TestCertificates, request: pytest.FixtureRequest
) -> AsyncIterator[SmtpUpstream]:
    """The stand-in, without and with PIPELINING: every client test runs on both paths."""
    pipelining = request.param == "pipelining"
    async with SmtpUpstream(certificates.server_context(), pipelining=pipelining) as server:
        yield server
    # Sessions closed by the peer finish their TLS close a few loop turns later; let them, so
    # the test's loop does not end with transports half-closed.
    await asyncio.sleep(0.05)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def settings_for(
    upstream: SmtpUpstream, certificates: TestCertificates, **overrides: Any
) -> SmtpSettings:
    options: dict[str, Any] = {
        "port": upstream.port,
        "username": USER,
        "password": PASSWORD,
        "ca_file": certificates.ca_file,
        "server_hostname": "localhost",
        "timeout": 5.0,
        "local_hostname": "relay.test",
    }
    options.update(overrides)
    return SmtpSettings("127.0.0.1", **options)


def make_client(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    fake_time: FakeTime,
    *,
    limiter: FakeLimiter | None = None,
    **overrides: Any,
) -> SesSmtpClient:
    return SesSmtpClient(
        settings_for(upstream, certificates, **overrides),
        limiter=limiter,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )


@pytest.fixture
async def client(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> AsyncIterator[SesSmtpClient]:
    async with make_client(upstream, certificates, fake_time) as smtp_client:
        yield smtp_client


def message(*recipients: str, data: bytes = BODY, **options: Any) -> OutboundMessage:
    return OutboundMessage("sender@example.com", recipients or ("to@example.com",), data, **options)


async def wait_until(condition: Any, *, rounds: int = 300) -> None:
    """Poll `condition` every 10 ms, at most `rounds` times."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# --- the happy paths ---------------------------------------------------------------------------


async def test_send_over_starttls_with_auth_is_accepted_and_recorded(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """A message goes through STARTTLS and AUTH; SES's 250 makes every recipient ACCEPTED."""
    result = await client.send(message("a@example.com", "b@example.com"))
    assert result.all_accepted
    assert [r.code for r in result.recipients] == [250, 250]
    assert result.attempts == 1
    [received] = upstream.messages
    assert received.recipients == ("a@example.com", "b@example.com")
    assert received.message_id == "<m1@example.com>"
    assert received.encrypted
    assert received.username == USER
    assert upstream.auth_in_clear == 0


async def test_implicit_tls_session_authenticates(
    certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """With implicit TLS the upstream offers AUTH and the client logs in and sends."""
    async with SmtpUpstream(certificates.server_context(), mode=TlsMode.IMPLICIT) as upstream:
        async with make_client(upstream, certificates, fake_time, implicit_tls=True) as client:
            result = await client.send(message())
    assert result.all_accepted
    assert upstream.messages[0].encrypted
    assert upstream.messages[0].username == USER


async def test_connections_are_reused_between_messages(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """Several messages share one pooled session: one TLS handshake and one login."""
    for _ in range(5):
        assert (await client.send(message())).all_accepted
    assert upstream.connections_opened == 1
    assert client.stats.opened == 1
    assert client.stats.idle == 1


async def test_concurrent_senders_never_exceed_the_pool_size(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Twenty concurrent sends with a pool of two use at most two sessions."""
    async with make_client(upstream, certificates, fake_time, pool_size=2) as client:
        results = await asyncio.gather(*(client.send(message()) for _ in range(20)))
        assert all(r.all_accepted for r in results)
        assert client.stats.opened <= 2
    assert upstream.connections_opened <= 2
    assert upstream.accepted == 20


async def test_probe_opens_a_session_of_its_own_and_says_noop(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """probe() succeeds against a healthy upstream on a session outside the send pool, and the
    next probe reuses that session."""
    sender: MessageSender = client  # SesSmtpClient is a MessageSender
    await sender.probe()
    await sender.probe()
    assert upstream.connections_opened == 1
    assert (client.stats.idle, client.stats.in_use, client.stats.opened) == (0, 0, 1)
    assert (await client.send(message())).all_accepted
    assert upstream.connections_opened == 2


async def test_probe_does_not_wait_for_the_send_slots(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Peak traffic: the pool's only slot is held by a send waiting for rate tokens after its
    354, another send waits for that slot; the probe answers without waiting for either."""
    limiter = BlockingLimiter()
    async with SesSmtpClient(
        settings_for(upstream, certificates, pool_size=1),
        limiter=limiter,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    ) as client:
        holding = asyncio.create_task(client.send(message()))
        await asyncio.wait_for(limiter.called.wait(), 5)
        queued = asyncio.create_task(client.send(message()))
        await client.probe()
        assert client.stats.in_use == 1 and not holding.done() and not queued.done()
        for task in (holding, queued):
            task.cancel()
        await asyncio.gather(holding, queued, return_exceptions=True)
    assert upstream.accepted == 0


async def test_probe_replaces_its_session_once_ses_closed_it(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """SES closing the idle probe session (load balancer recycling) does not fail the probe;
    the upstream going away does."""
    await client.probe()
    upstream.drop_all_connections()
    await wait_until(lambda: upstream.open_connections == 0)
    await client.probe()
    assert upstream.connections_opened == 2
    await upstream.stop()
    with pytest.raises(UpstreamUnavailable, match="4.4.1 cannot connect"):
        await client.probe()


# --- recycling ---------------------------------------------------------------------------------


async def test_sessions_are_recycled_after_max_messages(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """With two messages per session, five messages need three sessions."""
    async with make_client(
        upstream, certificates, fake_time, max_messages_per_connection=2
    ) as client:
        for _ in range(5):
            assert (await client.send(message())).all_accepted
        assert client.stats.opened == 3
        assert client.stats.recycled == 2
    assert upstream.connections_opened == 3


async def test_sessions_are_recycled_after_max_age(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A session older than max_connection_age is closed and replaced before use."""
    async with make_client(upstream, certificates, fake_time, max_connection_age=60.0) as client:
        assert (await client.send(message())).all_accepted
        fake_time.now += 61.0
        assert (await client.send(message())).all_accepted
        assert client.stats.opened == 2
        assert client.stats.recycled == 1


async def test_421_after_data_recycles_the_session_and_retries(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """SES's '421 Maximum message count per session' closes the session; a fresh one delivers."""
    upstream.faults.set(Fault.reply(Stage.END_OF_DATA, *SES_MAX_MESSAGES))
    result = await client.send(message())
    assert result.all_accepted
    assert result.attempts == 2
    assert client.stats.recycled == 1
    assert client.stats.opened == 2
    assert upstream.accepted == 1
    assert fake_time.sleeps == []


async def test_421_greeting_is_retried_on_a_new_connection(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """'421 Too many concurrent SMTP connections' at connect is retried after a short backoff."""
    upstream.faults.set(Fault.reply(Stage.CONNECT, *SES_TOO_MANY_CONNECTIONS))
    result = await client.send(message())
    assert result.all_accepted
    assert result.attempts == 2
    assert client.stats.failures == 1
    assert fake_time.sleeps == pytest.approx([0.1])


@pytest.mark.parametrize(
    ("stage", "recipient"), [(Stage.MAIL, None), (Stage.RCPT, "b@example.com")]
)
async def test_421_at_mail_or_rcpt_recycles_the_session_and_retries(
    client: SesSmtpClient,
    upstream: SmtpUpstream,
    fake_time: FakeTime,
    stage: Stage,
    recipient: str | None,
) -> None:
    """A 421 to MAIL, or to one RCPT after another was accepted, ends the session: the whole
    message goes once on a fresh one, at once, and no recipient is refused."""
    upstream.faults.set(Fault.reply(stage, *SES_MAX_MESSAGES, recipient=recipient))
    result = await client.send(message("a@example.com", "b@example.com"))
    assert result.all_accepted
    assert result.attempts == 2
    assert client.stats.recycled == 1
    assert client.stats.opened == 2
    assert upstream.connections_opened == 2
    assert [m.recipients for m in upstream.messages] == [("a@example.com", "b@example.com")]
    assert fake_time.sleeps == []


# --- reply classes -----------------------------------------------------------------------------


async def test_throttled_sends_are_retried_on_the_throttle_schedule(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """Two 'Maximum sending rate exceeded' answers are retried after 5 s and 10 s."""
    upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=2)
    result = await client.send(message())
    assert result.all_accepted
    assert result.attempts == 3
    assert fake_time.sleeps == [5.0, 10.0]
    assert upstream.accepted == 1


async def test_throttling_after_the_final_dot_is_retried(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """A throttle answered to the message itself is retried on the same (clean) session."""
    upstream.faults.set(Fault.reply(Stage.END_OF_DATA, *SES_THROTTLED))
    result = await client.send(message())
    assert result.all_accepted
    assert fake_time.sleeps == [5.0]
    assert upstream.connections_opened == 1


async def test_throttling_until_the_deadline_defers_and_never_refuses(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """When the next backoff would pass the deadline the recipient is DEFERRED with SES's 454."""
    upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=None)
    result = await client.send(message(), deadline=fake_time.now + 12.0)
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.THROTTLED
    assert (recipient.code, recipient.text) == SES_THROTTLED
    assert fake_time.sleeps == [5.0]
    assert result.attempts == 2


async def test_throttle_schedule_is_a_setting(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A custom throttle schedule is used, its last step repeating, within max_attempts."""
    async with make_client(
        upstream, certificates, fake_time, throttle_backoff=(1.0, 2.0), max_attempts=4
    ) as client:
        upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=None)
        result = await client.send(message(), deadline=fake_time.now + 100.0)
    assert result.recipients[0].outcome is Outcome.DEFERRED
    assert result.attempts == 4
    assert fake_time.sleeps == [1.0, 2.0, 2.0]


@pytest.mark.parametrize("reply", [SES_TEMPORARY_FAILURE, SES_TEMPORARY_FAILURE_454])
async def test_transient_failures_are_retried_with_the_short_backoff(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime, reply: tuple[int, str]
) -> None:
    """451/454 'Temporary service failure' is retried after 1 s, then 2 s."""
    upstream.faults.set(Fault.reply(Stage.END_OF_DATA, *reply), times=2)
    result = await client.send(message())
    assert result.all_accepted
    assert fake_time.sleeps == [1.0, 2.0]


async def test_daily_quota_defers_at_once(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """'Daily message quota exceeded' is not retried: DEFERRED after one attempt."""
    upstream.faults.set(Fault.reply(Stage.MAIL, *SES_DAILY_QUOTA), times=None)
    result = await client.send(message())
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.DAILY_QUOTA
    assert result.attempts == 1
    assert fake_time.sleeps == []


@pytest.mark.parametrize("reply", [SES_TEMPORARY_AUTH, SES_BAD_CREDENTIALS])
async def test_auth_failures_defer_at_once_and_log_an_error(
    client: SesSmtpClient,
    upstream: SmtpUpstream,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
    reply: tuple[int, str],
) -> None:
    """454 'Temporary authentication failure' and 535 defer, unretried, with an error log."""
    upstream.faults.set(Fault.reply(Stage.AUTH, *reply))
    with caplog.at_level(logging.INFO):
        result = await client.send(message())
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.AUTH
    assert recipient.code == reply[0]
    assert result.attempts == 1
    assert upstream.auth_attempts == 1
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert PASSWORD not in caplog.text


async def test_wrong_password_makes_probe_raise_and_is_never_logged(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Invalid credentials make probe() raise UpstreamUnavailable; the password stays secret."""
    secret = "wrong-secret-password"
    async with make_client(upstream, certificates, fake_time, password=secret) as client:
        with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamUnavailable) as caught:
            await client.probe()
        assert "535" in str(caught.value)
        assert secret not in repr(client)
        assert secret not in repr(settings_for(upstream, certificates, password=secret))
    assert secret not in caplog.text


async def test_probe_fails_at_once_while_the_pool_backs_off_after_a_failed_login(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """A readiness probe must answer within its own timeout: after a rejected login the next
    probe reports that failure without sleeping out the reconnect backoff or logging in again;
    once the backoff has passed, a probe tries again and sees the upstream healthy."""
    upstream.faults.set(Fault.reply(Stage.AUTH, *SES_BAD_CREDENTIALS))
    with pytest.raises(UpstreamUnavailable):
        await client.probe()
    attempts, sleeps = upstream.auth_attempts, list(fake_time.sleeps)
    with pytest.raises(UpstreamUnavailable, match="535"):
        await client.probe()
    assert upstream.auth_attempts == attempts
    assert fake_time.sleeps == sleeps
    upstream.faults.clear()
    fake_time.now += 60.0
    await client.probe()
    assert upstream.auth_attempts == attempts + 1


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        (Stage.END_OF_DATA, SES_TOO_LONG),
        (Stage.MAIL, SES_NOT_VERIFIED),
        (Stage.RCPT, SES_INVALID_ADDRESS),
    ],
)
async def test_permanent_replies_refuse_with_the_upstream_code_and_text(
    client: SesSmtpClient,
    upstream: SmtpUpstream,
    fake_time: FakeTime,
    stage: Stage,
    reply: tuple[int, str],
) -> None:
    """552, 554 and 553 make the recipient REFUSED, carrying SES's own code and text."""
    upstream.faults.set(Fault.reply(stage, *reply))
    result = await client.send(message())
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.REFUSED
    assert (recipient.code, recipient.text) == reply
    assert result.attempts == 1
    assert upstream.accepted == 0
    assert fake_time.sleeps == []
    assert client.stats.idle == 1  # the session stays usable after RSET


async def test_failure_logs_name_the_sender_domain_only(
    client: SesSmtpClient,
    upstream: SmtpUpstream,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused recipient is logged with SES's reply and the sender's domain, not its mailbox."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *SES_INVALID_ADDRESS))
    with caplog.at_level(logging.INFO):
        await client.send(message())
    # The upstream stand-in (aiosmtpd's mail.log) logs the envelope itself: read only ours.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name == "ses_core.smtp.client")
    assert "to@example.com" in ours and "*@example.com" in ours
    assert "sender@example.com" not in ours


async def test_refusals_are_per_recipient(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """One RCPT refused permanently, one deferred transiently: the rest are delivered."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *SES_INVALID_ADDRESS, recipient="bad@example.com"))
    upstream.faults.set(Fault.reply(Stage.RCPT, 451, "Try later", recipient="slow@example.com"))
    result = await client.send(message("ok@example.com", "bad@example.com", "slow@example.com"))
    outcomes = [(r.recipient, r.outcome) for r in result.recipients]
    assert outcomes == [
        ("ok@example.com", Outcome.ACCEPTED),
        ("bad@example.com", Outcome.REFUSED),
        ("slow@example.com", Outcome.ACCEPTED),
    ]
    assert [m.recipients for m in upstream.messages] == [
        ("ok@example.com",),
        ("slow@example.com",),
    ]
    assert fake_time.sleeps == [1.0]


async def test_partial_acceptance_resends_to_the_deferred_only(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Accepted + deferred after the chunk's attempts ran out: the deferred recipient alone is
    resent in a further round within the deadline, so each recipient gets exactly one copy."""
    upstream.faults.set(Fault.reply(Stage.RCPT, 451, "Try later", recipient="b@example.com"))
    async with make_client(upstream, certificates, fake_time, max_attempts=1) as client:
        result = await client.send(message("a@example.com", "b@example.com"))
    assert result.all_accepted
    assert result.attempts == 2
    assert [m.recipients for m in upstream.messages] == [("a@example.com",), ("b@example.com",)]
    assert fake_time.sleeps == []


async def test_partial_acceptance_stops_after_the_rounds_or_the_deadline(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A recipient that stays deferred is resent in at most PARTIAL_RETRY_ROUNDS rounds, and
    not at all once the deadline has passed; it ends DEFERRED with the upstream's reply."""

    class DeadlineEatingLimiter(FakeLimiter):
        async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
            fake_time.now += 2.0
            return 2.0

    upstream.faults.set(
        Fault.reply(Stage.RCPT, 451, "Try later", recipient="b@example.com"), times=None
    )
    async with make_client(upstream, certificates, fake_time, max_attempts=1) as client:
        rounds = await client.send(message("a@example.com", "b@example.com"))
    limiter = DeadlineEatingLimiter()
    async with make_client(
        upstream, certificates, fake_time, limiter=limiter, max_attempts=1
    ) as client:
        late = await client.send(
            message("a@example.com", "b@example.com"), deadline=fake_time.now + 2.0
        )
    assert rounds.attempts == 1 + PARTIAL_RETRY_ROUNDS
    assert late.attempts == 1
    for result in (rounds, late):
        assert [(r.outcome, r.code) for r in result.recipients] == [
            (Outcome.ACCEPTED, 250),
            (Outcome.DEFERRED, 451),
        ]
        assert result.recipients[1].text == "Try later"


async def test_rate_limited_recipients_are_not_resent_after_partial_acceptance(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A chunk deferred because the limiter has no capacity before the deadline stays DEFERRED
    as RATE_LIMITED even though another chunk was accepted: no further round asks again."""
    limiter = ScriptedLimiter(None, RateLimitTimeout("no capacity", wait_seconds=40.0))
    async with make_client(
        upstream, certificates, fake_time, limiter=limiter, max_recipients_per_message=1
    ) as client:
        result = await client.send(
            message("a@example.com", "b@example.com"), deadline=fake_time.now + 30.0
        )
    assert [(r.outcome, r.reply_class) for r in result.recipients] == [
        (Outcome.ACCEPTED, ReplyClass.SUCCESS),
        (Outcome.DEFERRED, ReplyClass.RATE_LIMITED),
    ]
    assert len(limiter.calls) == 2
    assert [m.recipients for m in upstream.messages] == [("a@example.com",)]


@pytest.mark.parametrize("stage", [Stage.MAIL, Stage.END_OF_DATA])
async def test_access_denied_defers_at_once_with_an_error_log(
    client: SesSmtpClient,
    upstream: SmtpUpstream,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
    stage: Stage,
) -> None:
    """SES's '554 Access denied' (an IAM policy problem) is DEFERRED unretried with an ERROR
    log carrying SES's text, never REFUSED: the mail is fine, the relay's setup is not."""
    upstream.faults.set(Fault.reply(stage, *SES_ACCESS_DENIED))
    with caplog.at_level(logging.INFO):
        result = await client.send(message())
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.AUTH
    assert (recipient.code, recipient.text) == SES_ACCESS_DENIED
    assert result.attempts == 1
    assert fake_time.sleeps == []
    assert upstream.accepted == 0
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "ses_core.smtp.client" and r.levelno == logging.ERROR
    ]
    assert len(errors) == 1
    assert "Access denied" in errors[0] and "to@example.com" in errors[0]


async def test_auth_required_at_mail_is_an_auth_failure(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """A 530 at MAIL is the relay's configuration problem: DEFERRED, not REFUSED."""
    upstream.faults.set(Fault.reply(Stage.MAIL, 530, "Authentication required"))
    result = await client.send(message())
    assert result.recipients[0].outcome is Outcome.DEFERRED
    assert result.recipients[0].reply_class is ReplyClass.AUTH


# --- PIPELINING (RFC 2920) ----------------------------------------------------------------------


@pytest.fixture
def protocol_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write the pooled sessions' protocols make once they can pipeline, in order."""
    writes: list[bytes] = []
    original = PipeliningProtocol.write

    def write(self: PipeliningProtocol, data: bytes) -> None:
        writes.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(PipeliningProtocol, "write", write)
    return writes


@pytest.fixture
async def pipelining_upstream(
    certificates: TestCertificates,
) -> AsyncIterator[SmtpUpstream]:
    async with SmtpUpstream(certificates.server_context(), pipelining=True) as server:
        yield server
    await asyncio.sleep(0.05)


@pytest.fixture
async def pipelining_client(
    pipelining_upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> AsyncIterator[SesSmtpClient]:
    async with make_client(pipelining_upstream, certificates, fake_time) as smtp_client:
        yield smtp_client


async def test_pipelining_sends_the_envelope_in_one_write_and_the_body_in_another(
    pipelining_client: SesSmtpClient,
    pipelining_upstream: SmtpUpstream,
    protocol_writes: list[bytes],
) -> None:
    """MAIL, both RCPTs and DATA leave in one write; the body follows the 354 in a second."""
    assert (await pipelining_client.send(message())).all_accepted
    protocol_writes.clear()
    result = await pipelining_client.send(message("a@example.com", "b@example.com"))
    assert result.all_accepted
    envelope, body = protocol_writes
    assert envelope.startswith(b"MAIL FROM:<sender@example.com>")
    assert envelope.count(b"RCPT TO:") == 2
    assert envelope.endswith(b"DATA\r\n")
    assert body.endswith(b"\r\n.\r\n")
    assert pipelining_upstream.messages[-1].recipients == ("a@example.com", "b@example.com")


async def test_without_pipelining_each_command_waits_for_the_previous_reply(
    certificates: TestCertificates, fake_time: FakeTime, protocol_writes: list[bytes]
) -> None:
    """A server that does not offer PIPELINING gets MAIL, each RCPT and DATA in writes of their
    own, then the body."""
    async with SmtpUpstream(certificates.server_context(), pipelining=False) as upstream:
        async with make_client(upstream, certificates, fake_time) as client:
            assert (await client.send(message())).all_accepted
            protocol_writes.clear()
            result = await client.send(message("a@example.com", "b@example.com"))
    assert result.all_accepted
    assert [w.split(b":")[0] for w in protocol_writes[:4]] == [
        b"MAIL FROM",
        b"RCPT TO",
        b"RCPT TO",
        b"DATA\r\n",
    ]
    assert protocol_writes[4].endswith(b"\r\n.\r\n")


async def test_pipelined_refused_rcpt_is_refused_alone(
    pipelining_client: SesSmtpClient, pipelining_upstream: SmtpUpstream
) -> None:
    """A 553 to the middle RCPT of a pipeline refuses that recipient only; the others go."""
    pipelining_upstream.faults.set(
        Fault.reply(Stage.RCPT, *SES_INVALID_ADDRESS, recipient="bad@example.com")
    )
    result = await pipelining_client.send(
        message("a@example.com", "bad@example.com", "c@example.com")
    )
    assert [(r.recipient, r.outcome, r.code) for r in result.recipients] == [
        ("a@example.com", Outcome.ACCEPTED, 250),
        ("bad@example.com", Outcome.REFUSED, SES_INVALID_ADDRESS[0]),
        ("c@example.com", Outcome.ACCEPTED, 250),
    ]
    assert [m.recipients for m in pipelining_upstream.messages] == [
        ("a@example.com", "c@example.com")
    ]
    assert pipelining_client.stats.idle == 1  # still in step with the server


async def test_pipelined_all_rcpts_refused_leaves_the_session_usable(
    pipelining_client: SesSmtpClient, pipelining_upstream: SmtpUpstream
) -> None:
    """Every RCPT refused: DATA's 503/554 is read and ignored, and the next message works."""
    pipelining_upstream.faults.set(Fault.reply(Stage.RCPT, *SES_INVALID_ADDRESS), times=2)
    result = await pipelining_client.send(message("a@example.com", "b@example.com"))
    assert [r.outcome for r in result.recipients] == [Outcome.REFUSED, Outcome.REFUSED]
    assert (await pipelining_client.send(message())).all_accepted
    assert pipelining_upstream.connections_opened == 1


async def test_pipelined_refused_mail_applies_to_every_recipient(
    pipelining_client: SesSmtpClient, pipelining_upstream: SmtpUpstream
) -> None:
    """A 554 to MAIL refuses all recipients (the RCPT/DATA 503s are not their verdicts)."""
    pipelining_upstream.faults.set(Fault.reply(Stage.MAIL, *SES_NOT_VERIFIED))
    result = await pipelining_client.send(message("a@example.com", "b@example.com"))
    assert [(r.outcome, r.code, r.text) for r in result.recipients] == [
        (Outcome.REFUSED, *SES_NOT_VERIFIED),
        (Outcome.REFUSED, *SES_NOT_VERIFIED),
    ]
    assert (await pipelining_client.send(message())).all_accepted
    assert pipelining_upstream.connections_opened == 1


async def test_pipelined_drop_between_rcpt_replies_is_not_sent_and_retried(
    pipelining_client: SesSmtpClient, pipelining_upstream: SmtpUpstream
) -> None:
    """The session dies after the first RCPT reply: nothing was sent, so all go on a new one."""
    pipelining_upstream.faults.set(Fault.drop(Stage.RCPT, recipient="b@example.com"))
    result = await pipelining_client.send(
        message("a@example.com", "b@example.com", "c@example.com")
    )
    assert result.all_accepted
    assert not result.ambiguous
    assert result.attempts == 2
    assert pipelining_upstream.connections_opened == 2
    assert [m.recipients for m in pipelining_upstream.messages] == [
        ("a@example.com", "b@example.com", "c@example.com")
    ]


async def test_pipelined_transient_rcpt_is_retried_alone(
    pipelining_client: SesSmtpClient, pipelining_upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """A 451 to one pipelined RCPT: the others are delivered, that one is resent later."""
    pipelining_upstream.faults.set(
        Fault.reply(Stage.RCPT, 451, "Try later", recipient="slow@example.com")
    )
    result = await pipelining_client.send(message("ok@example.com", "slow@example.com"))
    assert result.all_accepted
    assert [m.recipients for m in pipelining_upstream.messages] == [
        ("ok@example.com",),
        ("slow@example.com",),
    ]
    assert fake_time.sleeps == [1.0]


# --- connection drops --------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [Stage.MAIL, Stage.RCPT, Stage.DATA])
async def test_drops_before_the_body_are_retried_on_a_fresh_session(
    client: SesSmtpClient, upstream: SmtpUpstream, stage: Stage
) -> None:
    """A session lost before the body was sent is retried at once; SES gets exactly one copy."""
    assert (await client.send(message())).all_accepted
    upstream.faults.set(Fault.drop(stage))
    result = await client.send(message())
    assert result.all_accepted
    assert upstream.accepted == 2
    assert upstream.connections_opened == 2
    assert not result.ambiguous


@pytest.mark.parametrize(("stage", "kept"), [(Stage.BODY, 0), (Stage.END_OF_DATA, 1)])
async def test_drops_after_the_body_left_are_ambiguous_and_not_resent(
    client: SesSmtpClient, upstream: SmtpUpstream, stage: Stage, kept: int
) -> None:
    """A loss after the body was written is DEFERRED with ambiguous=True, counted, not resent."""
    upstream.faults.set(Fault.drop(stage))
    result = await client.send(message("a@example.com", "b@example.com"))
    assert result.ambiguous
    assert [r.outcome for r in result.recipients] == [Outcome.DEFERRED, Outcome.DEFERRED]
    assert result.recipients[0].text == AMBIGUOUS_TEXT
    assert result.attempts == 1
    assert client.stats.ambiguous == 1
    assert upstream.accepted == kept


async def test_an_ambiguous_chunk_is_not_resent_when_another_chunk_was_accepted(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """60 recipients go as 50 + 10; the first chunk's session is lost after its final '.'. The
    second chunk is delivered, and the send's partial-acceptance rounds must not resend the first
    one (SES kept it: a resend is a duplicate). Its recipients are reported ambiguous."""
    recipients = tuple(f"r{i}@example.com" for i in range(60))
    upstream.faults.set(Fault.drop(Stage.END_OF_DATA))
    result = await client.send(message(*recipients))
    assert [m.recipients for m in upstream.messages] == [recipients[:50], recipients[50:]]
    assert result.ambiguous
    assert client.stats.ambiguous == 1
    lost, delivered = result.recipients[:50], result.recipients[50:]
    assert all(r.outcome is Outcome.DEFERRED and r.ambiguous for r in lost)
    assert {(r.code, r.text, r.reply_class) for r in lost} == {
        (451, AMBIGUOUS_TEXT, ReplyClass.CONNECTION)
    }
    assert all(r.outcome is Outcome.ACCEPTED and not r.ambiguous for r in delivered)
    assert result.attempts == 2


async def test_an_ambiguous_recipient_is_not_resent_after_its_neighbour_was_retried(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """In one chunk, a@ gets a 451 at RCPT and b@'s message is lost after the final '.': a@ is
    retried and accepted, b@ stays ambiguous and is never sent a second copy."""
    upstream.faults.set(Fault.reply(Stage.RCPT, 451, "Try later", recipient="a@example.com"))
    upstream.faults.set(Fault.drop(Stage.END_OF_DATA))
    result = await client.send(message("a@example.com", "b@example.com"))
    assert [m.recipients for m in upstream.messages] == [("b@example.com",), ("a@example.com",)]
    assert [(r.outcome, r.ambiguous) for r in result.recipients] == [
        (Outcome.ACCEPTED, False),
        (Outcome.DEFERRED, True),
    ]
    assert result.recipients[1].text == AMBIGUOUS_TEXT
    assert result.ambiguous


async def test_a_pooled_session_closed_by_the_server_is_replaced(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """When SES has silently closed an idle pooled session, the message goes on a new one."""
    assert (await client.send(message())).all_accepted
    upstream.drop_all_connections()
    result = await client.send(message())
    assert result.all_accepted
    assert result.attempts == 1
    assert upstream.accepted == 2
    assert fake_time.sleeps == []


async def test_connection_dropped_before_the_greeting_is_retried(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """A connection closed before the 220 greeting is a connection failure, retried."""
    upstream.faults.set(Fault.drop(Stage.CONNECT))
    result = await client.send(message())
    assert result.all_accepted
    assert result.attempts == 2
    assert fake_time.sleeps == pytest.approx([0.1])


@pytest.mark.parametrize(
    "faults",
    [
        [Fault.drop(Stage.EHLO)],
        # The first EHLO passes unchanged: the drop strikes the EHLO after STARTTLS.
        [Fault.stall(Stage.EHLO, 0.0), Fault.drop(Stage.EHLO)],
        [Fault.drop(Stage.AUTH)],
    ],
    ids=["ehlo", "ehlo_under_tls", "auth"],
)
async def test_drops_while_opening_a_session_are_retried_after_backoff(
    client: SesSmtpClient,
    upstream: SmtpUpstream,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
    faults: list[Fault],
) -> None:
    """A connection dropped without a reply at EHLO or AUTH is a connection failure: retried on
    a fresh session after the reconnect backoff, delivered once, never refused."""
    for fault in faults:
        upstream.faults.set(fault)
    with caplog.at_level(logging.WARNING, logger="ses_core.smtp._pool"):
        result = await client.send(message())
    assert upstream.faults.applied == faults
    assert result.all_accepted
    assert not result.ambiguous
    assert result.attempts == 2
    assert fake_time.sleeps == pytest.approx([0.1])
    assert client.stats.failures == 1
    assert upstream.connections_opened == 2
    assert upstream.accepted == 1
    # The session really broke (no reply came): not a reply the client misread.
    assert "4.4.1 cannot connect to upstream" in caplog.text


async def test_tls_handshake_failure_is_retried_with_backoff(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """A failed STARTTLS handshake is a connection failure: retried after the reconnect backoff."""
    upstream.faults.set(Fault.tls_failure())
    result = await client.send(message())
    assert result.all_accepted
    assert fake_time.sleeps == pytest.approx([0.1])
    assert upstream.auth_attempts == 1


async def test_unreachable_upstream_backs_off_exponentially_then_defers(
    certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Refused connections are retried with doubling, capped waits, then DEFERRED."""
    upstream = SmtpUpstream(certificates.server_context())
    await upstream.start()
    closed = settings_for(upstream, certificates)
    await upstream.stop()
    settings = SmtpSettings(
        "127.0.0.1",
        port=closed.port,
        username=USER,
        password=PASSWORD,
        ca_file=certificates.ca_file,
        reconnect_backoff=0.1,
        reconnect_backoff_max=0.3,
        transient_backoff=(0.0,),
        max_attempts=5,
    )
    async with SesSmtpClient(settings, clock=fake_time.clock, sleep=fake_time.sleep) as client:
        result = await client.send(message(), deadline=fake_time.now + 60.0)
        sleeps = list(fake_time.sleeps)
        with pytest.raises(UpstreamUnavailable):
            await client.probe()
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.CONNECTION
    assert recipient.text.startswith("4.4.1 cannot connect")
    assert result.attempts == 5
    assert sleeps == pytest.approx([0.1, 0.2, 0.3, 0.3])


# --- TLS is never optional ---------------------------------------------------------------------


async def test_certificate_for_another_name_is_rejected(tmp_path: Any, fake_time: FakeTime) -> None:
    """A trusted certificate issued for another host name fails verification; no AUTH is sent."""
    other = TestCertificates.create(str(tmp_path), names=("other.example",))
    async with SmtpUpstream(other.server_context()) as upstream:
        async with make_client(upstream, other, fake_time) as client:
            result = await client.send(message(), deadline=fake_time.now + 5.0)
            with pytest.raises(UpstreamUnavailable, match="certificate"):
                await client.probe()
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.AUTH
    assert "certificate" in recipient.text
    assert upstream.auth_attempts == 0
    assert upstream.accepted == 0


async def test_certificate_from_an_untrusted_ca_is_rejected(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Without the test CA the system trust store does not trust the upstream."""
    async with make_client(upstream, certificates, fake_time, ca_file=None) as client:
        result = await client.send(message())
    assert result.recipients[0].reply_class is ReplyClass.AUTH
    assert upstream.auth_attempts == 0


async def test_implicit_tls_verifies_the_host_name(tmp_path: Any, fake_time: FakeTime) -> None:
    """Implicit TLS checks the certificate's name too."""
    other = TestCertificates.create(str(tmp_path), names=("other.example",))
    async with SmtpUpstream(other.server_context(), mode=TlsMode.IMPLICIT) as upstream:
        async with make_client(upstream, other, fake_time, implicit_tls=True) as client:
            result = await client.send(message())
    assert result.recipients[0].reply_class is ReplyClass.AUTH
    assert upstream.auth_attempts == 0


async def test_plain_text_server_is_refused_before_auth(
    certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A server that offers no STARTTLS never sees the credentials; mail is DEFERRED."""
    async with SmtpUpstream(None, mode=TlsMode.NONE) as upstream:
        async with make_client(upstream, certificates, fake_time) as client:
            result = await client.send(message())
            with pytest.raises(UpstreamUnavailable, match="STARTTLS"):
                await client.probe()
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.AUTH
    assert upstream.auth_attempts == 0
    assert upstream.auth_in_clear == 0


# --- recipients, encoding ----------------------------------------------------------------------


async def test_more_than_50_recipients_are_split_into_chunks(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """120 recipients go out as 50 + 50 + 20, each chunk taking its own limiter tokens."""
    limiter = FakeLimiter()
    recipients = tuple(f"r{i}@example.com" for i in range(120))
    async with make_client(upstream, certificates, fake_time, limiter=limiter) as client:
        result = await client.send(message(*recipients), deadline=fake_time.now + 30.0)
    assert result.all_accepted
    assert [r.recipient for r in result.recipients] == list(recipients)
    assert [len(m.recipients) for m in upstream.messages] == [50, 50, 20]
    assert [cost for cost, _ in limiter.calls] == [50, 50, 20]
    # Tokens are taken mid-DATA: the wait is bounded by the upstream timeout (5 s here).
    assert limiter.calls[0][1] == pytest.approx(5.0)
    assert result.limiter_wait == pytest.approx(0.75)
    assert result.attempts == 3


async def test_limiter_tokens_are_taken_before_the_body_of_every_attempt(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Each attempt pays for the recipients SES accepted at RCPT, right before the body."""
    limiter = FakeLimiter()
    upstream.faults.set(Fault.reply(Stage.RCPT, 451, "Try later", recipient="b@example.com"))
    async with make_client(upstream, certificates, fake_time, limiter=limiter) as client:
        result = await client.send(message("a@example.com", "b@example.com"), deadline=1100.0)
    assert result.all_accepted
    assert limiter.calls == [(1, pytest.approx(5.0)), (1, pytest.approx(5.0))]
    assert result.limiter_wait == pytest.approx(0.5)


class ScriptedLimiter(FakeLimiter):
    """Answers the first calls from a script (an error is raised, None grants), then grants
    without a wait."""

    def __init__(self, *steps: Exception | None) -> None:
        super().__init__()
        self.steps = list(steps)

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        self.calls.append((cost, max_wait))
        step = self.steps.pop(0) if self.steps else None
        if step is not None:
            raise step
        return 0.0


async def test_a_wait_longer_than_the_upstream_timeout_is_paid_before_a_new_session(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Capacity in 10 s, timeout 5 s, deadline 100 s: the held session is dropped without the
    final '.', the tokens are paid first, and the message goes out once on a new session."""
    limiter = ScriptedLimiter(RateLimitTimeout("later", wait_seconds=10.0))
    async with make_client(upstream, certificates, fake_time, limiter=limiter) as client:
        result = await client.send(message(), deadline=fake_time.now + 100.0)
        assert result.all_accepted
        assert limiter.calls == [(1, pytest.approx(5.0)), (1, pytest.approx(100.0))]
        assert upstream.accepted == 1
        assert upstream.connections_opened == 2
        assert result.attempts == 2  # the dropped transaction counts as an attempt
        # The limiter granted without a wait: the next message pays late again.
        await client.send(message())
        assert limiter.calls[-1] == (1, pytest.approx(5.0))
    assert client.stats.failures == 0


@pytest.mark.parametrize(
    ("error", "reply_class"),
    [
        (RateLimitTimeout("no capacity", wait_seconds=40.0), ReplyClass.RATE_LIMITED),
        (RateLimiterUnavailable("redis down"), ReplyClass.LIMITER_UNAVAILABLE),
        (DailyQuotaExhausted("quota used"), ReplyClass.DAILY_QUOTA),
    ],
)
async def test_limiter_errors_become_deferred_results(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    fake_time: FakeTime,
    error: Exception,
    reply_class: ReplyClass,
) -> None:
    """A limiter timeout, outage or exhausted quota defers the message without raising; the
    session that waited mid-DATA is dropped without the final '.', so nothing is delivered."""
    limiter = ScriptedLimiter(error, error)
    async with make_client(upstream, certificates, fake_time, limiter=limiter) as client:
        # 30 s to the deadline: the timeout's 40 s wait is beyond it, not only beyond the 5 s
        # the session may wait (that case is retried, see the test above).
        result = await client.send(message(), deadline=fake_time.now + 30.0)
        [recipient] = result.recipients
        assert recipient.outcome is Outcome.DEFERRED
        assert recipient.reply_class is reply_class
        assert recipient.code // 100 == 4
        assert upstream.accepted == 0
        assert upstream.connections_opened == 1
        # While the limiter refuses, messages pay before taking a session: no session each.
        again = await client.send(message(), deadline=fake_time.now + 30.0)
        assert again.recipients[0].outcome is Outcome.DEFERRED
        assert again.attempts == 0
        assert upstream.connections_opened == 1
        # Once it grants without a wait, tokens are taken late (mid-DATA) again.
        assert (await client.send(message())).all_accepted
        assert (await client.send(message())).all_accepted
        assert limiter.calls[-1][1] == pytest.approx(5.0)
        assert upstream.connections_opened == 2


async def test_deadline_already_passed_defers_without_sending(
    client: SesSmtpClient, upstream: SmtpUpstream, fake_time: FakeTime
) -> None:
    """A send whose deadline has passed is DEFERRED without touching the upstream."""
    result = await client.send(message(), deadline=fake_time.now - 1.0)
    assert result.recipients[0].outcome is Outcome.DEFERRED
    assert result.attempts == 0
    assert upstream.connections_opened == 0


async def test_bare_line_endings_are_sent_as_crlf_and_dots_survive(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """Bare LF and CR become CRLF on the wire; lines starting with '.' arrive unchanged."""
    data = (
        b"Message-ID: <crlf@example.com>\nSubject: x\n\nline one\rline two\r\n.\n..two dots\n.end"
    )
    assert (await client.send(message(data=data))).all_accepted
    received = upstream.messages[0].data
    assert received == (
        b"Message-ID: <crlf@example.com>\r\nSubject: x\r\n\r\nline one\r\nline two\r\n"
        b".\r\n..two dots\r\n.end\r\n"
    )


async def test_smtputf8_and_8bitmime_are_passed_through(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """A non-ASCII recipient is sent with SMTPUTF8, an 8-bit body with BODY=8BITMIME."""
    body = "Subject: grüße\r\n\r\nGrüße\r\n".encode()
    result = await client.send(message("jörg@bücher.example", data=body, eightbit=True))
    assert result.all_accepted
    [received] = upstream.messages
    assert received.recipients == ("jörg@bücher.example",)
    assert "SMTPUTF8" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options
    assert received.data == body


async def test_smtputf8_without_server_support_is_refused(
    certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A message needing SMTPUTF8 is REFUSED (553 5.6.7) by a server that lacks it."""
    async with SmtpUpstream(certificates.server_context(), smtputf8=False) as upstream:
        async with make_client(upstream, certificates, fake_time) as client:
            result = await client.send(message("to@example.com", smtputf8=True))
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.REFUSED
    assert recipient.code == 553
    assert "SMTPUTF8" in recipient.text
    assert upstream.accepted == 0


async def test_smtputf8_asked_with_ascii_addresses_is_sent_when_offered(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """smtputf8=True puts SMTPUTF8 on MAIL even when every address is ASCII (the headers may
    need it); without it an ASCII message goes without SMTPUTF8."""
    assert (await client.send(message("to@example.com", smtputf8=True))).all_accepted
    assert (await client.send(message("to@example.com"))).all_accepted
    asked, plain = upstream.messages
    assert asked.sender.isascii() and asked.recipients == ("to@example.com",)
    assert "SMTPUTF8" in asked.mail_options
    assert "SMTPUTF8" not in plain.mail_options


async def test_ascii_body_marked_8bit_goes_without_body_parameter_to_a_7bit_server(
    certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A message marked 8-bit whose body is ASCII is sent without BODY= to a server that does not
    offer 8BITMIME (which would answer BODY=8BITMIME with 555)."""
    async with SmtpUpstream(certificates.server_context(), eightbitmime=False) as upstream:
        async with make_client(upstream, certificates, fake_time) as client:
            result = await client.send(message(eightbit=True))
    assert result.all_accepted
    [received] = upstream.messages
    assert not any(option.startswith("BODY=") for option in received.mail_options)
    assert received.data == BODY


@pytest.mark.parametrize("eightbit", [True, False])
async def test_8bit_body_to_a_server_without_8bitmime_is_refused_unsent(
    certificates: TestCertificates, fake_time: FakeTime, eightbit: bool
) -> None:
    """RFC 6152: 8-bit octets never go to a server that does not offer 8BITMIME; the client does
    not convert them, so the recipients are REFUSED with 554 5.6.3 and nothing is sent."""
    body = "Subject: gruss\r\n\r\nGrüße\r\n".encode()
    async with SmtpUpstream(certificates.server_context(), eightbitmime=False) as upstream:
        async with make_client(upstream, certificates, fake_time) as client:
            result = await client.send(message(data=body, eightbit=eightbit))
            assert client.stats.idle == 1  # nothing was sent: the session stays usable
    [recipient] = result.recipients
    assert recipient.outcome is Outcome.REFUSED
    assert recipient.code == 554
    assert recipient.text.startswith("5.6.3") and "8BITMIME" in recipient.text
    assert result.attempts == 1
    assert upstream.accepted == 0


# --- cancellation ------------------------------------------------------------------------------


async def test_cancelled_send_closes_its_session_and_leaks_nothing(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """Cancelling a send mid-transaction closes that session and frees its pool slot."""
    upstream.faults.set(Fault.stall(Stage.END_OF_DATA, 3.0))
    task = asyncio.create_task(client.send(message()))
    await wait_until(lambda: upstream.faults.applied)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.stats.in_use == 0
    assert client.stats.size == 0
    await wait_until(lambda: upstream.open_connections == 0)
    assert (await client.send(message())).all_accepted
    assert upstream.accepted == 1


class BlockingLimiter:
    """A limiter whose acquire never returns until cancelled."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        self.called.set()
        await asyncio.Event().wait()
        return 0.0


async def test_cancelled_while_waiting_for_tokens_mid_data_delivers_nothing(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """Cancelled while the limiter holds the session after the 354: dropped without the '.'."""
    limiter = BlockingLimiter()
    async with SesSmtpClient(
        settings_for(upstream, certificates),
        limiter=limiter,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    ) as client:
        task = asyncio.create_task(client.send(message()))
        await asyncio.wait_for(limiter.called.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.stats.in_use == 0
        await wait_until(lambda: upstream.open_connections == 0)
    assert upstream.accepted == 0


async def test_cancelled_wait_for_a_pool_slot_leaks_nothing(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """A send cancelled while waiting for a busy pool's only slot takes nothing."""
    async with make_client(upstream, certificates, fake_time, pool_size=1) as client:
        upstream.faults.set(Fault.stall(Stage.END_OF_DATA, 0.3))
        first = asyncio.create_task(client.send(message()))
        await wait_until(lambda: upstream.faults.applied)
        second = asyncio.create_task(client.send(message()))
        await asyncio.sleep(0.05)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert (await first).all_accepted
        assert client.stats.in_use == 0
        assert (await client.send(message())).all_accepted
        assert client.stats.opened == 1


# --- pool edges --------------------------------------------------------------------------------


async def test_busy_pool_until_the_deadline_defers_transiently(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """When every session stays busy past the deadline the waiting send is DEFERRED, not lost."""
    async with make_client(upstream, certificates, fake_time, pool_size=1) as client:
        upstream.faults.set(Fault.stall(Stage.END_OF_DATA, 0.5))
        first = asyncio.create_task(client.send(message()))
        await wait_until(lambda: upstream.faults.applied)
        waiting = await client.send(message(), deadline=fake_time.now + 0.05)
        assert (await first).all_accepted
    [recipient] = waiting.recipients
    assert recipient.outcome is Outcome.DEFERRED
    assert recipient.reply_class is ReplyClass.TRANSIENT
    assert "busy" in recipient.text


async def test_closed_client_defers_and_said_quit(
    client: SesSmtpClient, upstream: SmtpUpstream
) -> None:
    """aclose() ends idle sessions with QUIT; a later send is DEFERRED, never raised."""
    assert (await client.send(message())).all_accepted
    await client.aclose()
    await wait_until(lambda: upstream.open_connections == 0)
    assert client.stats.size == 0
    result = await client.send(message())
    assert result.recipients[0].outcome is Outcome.DEFERRED
    assert result.recipients[0].reply_class is ReplyClass.CONNECTION
    assert result.attempts == 1


async def test_real_local_rate_limiter_is_charged_per_recipient(
    upstream: SmtpUpstream, certificates: TestCertificates, fake_time: FakeTime
) -> None:
    """With LocalRateLimiter at 1/s, a 3-recipient send makes the next send wait 2 s."""
    from ses_core.ratelimit import LocalRateLimiter

    limiter = LocalRateLimiter(1.0, clock=fake_time.clock, sleep=fake_time.sleep)
    async with SesSmtpClient(
        settings_for(upstream, certificates),
        limiter=limiter,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    ) as client:
        first = await client.send(message("a@example.com", "b@example.com", "c@example.com"))
        second = await client.send(message())
    assert first.all_accepted and second.all_accepted
    assert first.limiter_wait == 0.0
    assert second.limiter_wait == pytest.approx(2.0)
