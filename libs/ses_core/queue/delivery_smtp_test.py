"""End to end through the real SES client: `QueueRunner` + `SesSmtpClient` + the SES stand-in
(STARTTLS, AUTH) on 127.0.0.1, with `MemorySpool`. Proves on real SMTP dialogues that a deferred
recipient is retried later, that a partial acceptance never resends the accepted recipient, and
that a reply lost after the final '.' is resent once, then dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from ses_core.queue import MemorySpool, MessageState, NewMessage, QueuedEnvelope, RecipientState
from ses_core.queue.delivery import QueueRunner
from ses_core.smtp.client import SesSmtpClient
from ses_core.testing.certs import TestCertificates
from ses_core.testing.queue_doubles import (
    RecordingEvents,
    stand_in_client_settings,
    stand_in_delivery,
)
from ses_core.testing.upstream import (
    SES_DAILY_QUOTA,
    Fault,
    SmtpUpstream,
    Stage,
)

T0 = 1_800_000_000.0
BODY = b"Message-ID: <q1@example.com>\r\nSubject: queued\r\n\r\nhello\r\n"


class Clock:
    """Wall-clock time that moves only when told (the spool's due times)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Relay:
    """The queue's delivery path as the relay runs it, over the real SES client."""

    def __init__(self, client: SesSmtpClient) -> None:
        self.clock = Clock()
        self.spool = MemorySpool(clock=self.clock)
        self.events = RecordingEvents()
        self.runner = QueueRunner(
            self.spool,
            client,
            settings=stand_in_delivery(workers=2, idle_poll=0.01),
            events=self.events,
            clock=self.clock,
        )

    async def put(self, *recipients: str) -> str:
        envelope = QueuedEnvelope("alice@example.com", recipients, received_at=self.clock.now)
        message_id = await self.spool.put(NewMessage(envelope, BODY))
        self.runner.wake()
        return message_id

    async def retry_due(self, message_id: str) -> None:
        """Move the clock to the message's next attempt and wake the dispatcher."""
        summary = self.spool.show(message_id)
        assert summary is not None
        self.clock.now = summary.next_attempt_at
        self.runner.wake()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def relay(upstream: SmtpUpstream, certificates: TestCertificates) -> AsyncIterator[Relay]:
    async with SesSmtpClient(stand_in_client_settings(upstream, certificates)) as client:
        made = Relay(client)
        await made.runner.start()
        yield made
        await made.runner.stop(5.0)
    await asyncio.sleep(0.05)  # let TLS transports closed by the peer finish closing


def attempted(relay: Relay, message_id: str, attempts: int = 1) -> Callable[[], bool]:
    """The message was attempted `attempts` times and no delivery is running any more."""

    def check() -> bool:
        summary = relay.spool.show(message_id)
        done = summary is not None and summary.attempts == attempts
        return done and relay.runner.in_flight == 0

    return check


async def test_a_deferred_recipient_is_retried_later_and_the_accepted_one_never_again(
    relay: Relay, upstream: SmtpUpstream
) -> None:
    """Carol hits the daily quota at RCPT, Bob is accepted; the retry carries Carol alone."""
    upstream.faults.set(Fault.reply(Stage.RCPT, *SES_DAILY_QUOTA, recipient="carol@example.org"))
    message_id = await relay.put("bob@example.net", "carol@example.org")
    await eventually(attempted(relay, message_id))
    summary = relay.spool.show(message_id)
    assert summary is not None
    assert [r.state for r in summary.envelope.recipients] == [
        RecipientState.ACCEPTED,
        RecipientState.PENDING,
    ]
    assert summary.next_attempt_at == T0 + 1800.0
    assert relay.events.retries == {"daily_quota": 1}

    await relay.retry_due(message_id)
    await eventually(lambda: relay.spool.show(message_id) is None and not relay.runner.in_flight)
    assert [m.recipients for m in upstream.messages] == [
        ("bob@example.net",),
        ("carol@example.org",),
    ]
    assert all(m.message_id == "<q1@example.com>" for m in upstream.messages)
    assert relay.events.outcomes == {"accepted": 2, "deferred": 1}


async def test_a_reply_lost_after_the_final_dot_is_resent_once(
    relay: Relay, upstream: SmtpUpstream
) -> None:
    """SES kept the message but its reply was lost: resent once, counted as a duplicate."""
    upstream.faults.set(Fault.drop(Stage.END_OF_DATA))
    message_id = await relay.put("bob@example.net")
    await eventually(attempted(relay, message_id))
    assert relay.events.duplicates == 1
    assert relay.events.retries == {"ambiguous": 1}

    await relay.retry_due(message_id)
    await eventually(lambda: relay.spool.show(message_id) is None and not relay.runner.in_flight)
    assert len(upstream.messages) == 2  # the possible duplicate, made on purpose once
    assert relay.events.outcomes == {"deferred": 1, "accepted": 1}


async def test_a_reply_lost_twice_is_dead_lettered_for_an_operator(
    relay: Relay, upstream: SmtpUpstream
) -> None:
    """Lost again on the resend: FAILED as ambiguous, dead-lettered, no DSN to the sender."""
    upstream.faults.set(Fault.drop(Stage.END_OF_DATA), times=2)
    message_id = await relay.put("bob@example.net")
    await eventually(attempted(relay, message_id))
    await relay.retry_due(message_id)

    def dead() -> bool:
        summary = relay.spool.show(message_id)
        is_dead = summary is not None and summary.state is MessageState.DEAD
        return is_dead and relay.runner.in_flight == 0

    await eventually(dead)
    summary = relay.spool.show(message_id)
    assert summary is not None
    assert summary.last_error == "ambiguous"
    assert relay.events.dead == {"ambiguous": 1}
    assert relay.events.outcomes == {"deferred": 1, "ambiguous": 1}
    assert not relay.events.dsns
    assert relay.spool.summary().messages == 0  # no DSN queued
