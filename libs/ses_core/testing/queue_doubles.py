"""Test doubles for the queue's delivery: a scripted `MessageSender` and recording events.

`ScriptedSender` answers each `send` from a script of steps (a function of the message, or an
exception to raise), and accepts everything once the script is used up; `answer` builds a step
from per-recipient replies. `RecordingEvents` is a `DeliveryEvents` that keeps every call, so a
test asserts what delivery reported to the metrics. `stand_in_delivery` and
`stand_in_client_settings` give the runner and SES client of tests that deliver over real SMTP
to the stand-in `SmtpUpstream`.

    sender = ScriptedSender(answer({"b@example.net": (454, "Throttling failure: ...")}))
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping

from ses_core.queue.backoff import Backoff
from ses_core.queue.delivery import DeliverySettings
from ses_core.smtp import SmtpSettings
from ses_core.smtp.results import AMBIGUOUS_TEXT, RecipientResult, ReplyClass, SendResult
from ses_core.smtp.sender import OutboundMessage
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import DEFAULT_CREDENTIALS, SmtpUpstream

Step = Callable[[OutboundMessage], SendResult]

#: A reply meaning "the session was lost after the final '.'": SES may have the message.
AMBIGUOUS = (0, "ambiguous")


def answer(replies: Mapping[str, tuple[int, str]]) -> Step:
    """A step answering each recipient with its (code, text) from `replies`, 250 otherwise;
    `AMBIGUOUS` makes the recipient's result the ambiguous deferral."""

    def step(message: OutboundMessage) -> SendResult:
        results = []
        for recipient in message.recipients:
            code, text = replies.get(recipient, (250, "Ok 0100-accepted"))
            if (code, text) == AMBIGUOUS:
                results.append(
                    RecipientResult.deferred(
                        recipient, 451, AMBIGUOUS_TEXT, ReplyClass.CONNECTION, ambiguous=True
                    )
                )
            else:
                results.append(RecipientResult.from_reply(recipient, code, text))
        ambiguous = any(r.ambiguous for r in results)
        return SendResult(tuple(results), ambiguous=ambiguous)

    return step


ACCEPT_ALL = answer({})


class ScriptedSender:
    """A `MessageSender` answering from a script, one step per `send`; then accepting all.

    Attributes:
        sent: every message given to `send`, in order.
        deadlines: the deadline of each `send`.
        gate: when set, `send` waits for it first (to hold deliveries in flight).
    """

    def __init__(self, *script: Step | BaseException) -> None:
        self.script = list(script)
        self.sent: list[OutboundMessage] = []
        self.deadlines: list[float | None] = []
        self.gate: asyncio.Event | None = None
        self.started = 0

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Record `message`, wait for the gate if any, then play the next step."""
        self.started += 1
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(message)
        self.deadlines.append(deadline)
        step = self.script.pop(0) if self.script else ACCEPT_ALL
        if isinstance(step, BaseException):
            raise step
        return step(message)

    async def probe(self) -> None:
        """Always ready."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def recipients_sent(self) -> list[tuple[str, ...]]:
        """The recipients of each send, in order."""
        return [m.recipients for m in self.sent]


class RecordingEvents:
    """`DeliveryEvents` that records every call (a `Counter` per kind)."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.dsns: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.duplicates = 0
        #: (seconds, limiter_wait) of each send.
        self.sends: list[tuple[float, float]] = []

    def recipients_done(self, outcome: str, count: int) -> None:
        """Counted."""
        self.outcomes[outcome] += count

    def retry_scheduled(self, reason: str) -> None:
        """Counted."""
        self.retries[reason] += 1

    def dsn(self, result: str) -> None:
        """Counted."""
        self.dsns[result] += 1

    def dead_lettered(self, reason: str) -> None:
        """Counted."""
        self.dead[reason] += 1

    def possible_duplicate(self, count: int) -> None:
        """Counted."""
        self.duplicates += count

    def sent(self, seconds: float, limiter_wait: float) -> None:
        """Recorded."""
        self.sends.append((seconds, limiter_wait))


def stand_in_client_settings(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> SmtpSettings:
    """The SES client's settings for the stand-in `upstream`: STARTTLS trusting the test CA,
    AUTH with the stand-in's default credentials."""
    user, password = DEFAULT_CREDENTIALS
    return SmtpSettings(
        "127.0.0.1",
        port=upstream.port,
        username=user,
        password=password,
        ca_file=certificates.ca_file,
        server_hostname="localhost",
        timeout=5.0,
        local_hostname="relay.test",
    )


def stand_in_delivery(*, workers: int, idle_poll: float) -> DeliverySettings:
    """A runner's settings for delivering to the stand-in: DSNs from bounces@example.com, and
    retry delays without jitter (nominal), so a test can move its clock to the next attempt."""
    return DeliverySettings(
        workers=workers,
        attempt_timeout=10.0,
        bounce_from="bounces@example.com",
        null_sender="bounces@example.com",
        backoff=Backoff(random=lambda: 0.5),
        idle_poll=idle_poll,
    )
