"""The SES SMTP client: send a message, get one verdict per recipient, never lose mail.

`SesSmtpClient.send` turns every SES answer into ACCEPTED, REFUSED (a real permanent reply,
carried with SES's code and text) or DEFERRED (retry later; the relay answers 4xx so the sender
keeps the mail). It never raises for an SMTP outcome. On the way it:

- splits more than 50 recipients (SES's limit) into several transactions of at most 50;
- takes send-rate tokens for every attempt, one per recipient SES accepted at RCPT, as late as
  possible: after DATA's `354`, right before the body (see `_charge`);
- retries throttled answers on the `throttle_backoff` schedule (AWS advises 5 s, 10 s, 30 s),
  transient ones (451/454) on the shorter `transient_backoff`, and connection failures (421, a
  session that broke before the body was sent) at once on a fresh session, always within the
  deadline; daily-quota and auth/config failures are deferred at once (auth logged as an error);
- replaces a pooled session that SES had silently closed (it breaks before MAIL gets any answer)
  without counting an attempt or taking new tokens: that attempt never reached SES;
- passes SMTPUTF8 and 8BITMIME through when the message asks and the server offers them (a
  message marked 8-bit whose body is all ASCII goes to a server without 8BITMIME without the BODY
  parameter; a body with 8-bit octets is REFUSED there with `554 5.6.3`, as RFC 6152 forbids
  sending it and the client does not convert to 7-bit; SES offers 8BITMIME).

Retries follow one rule: transient failures are retried only within the deadline the caller
passes, and what is still DEFERRED then is the caller's to decide (the relay answers 4xx).

Partial acceptance
------------------
SMTP has one reply per DATA: once some recipients were accepted, a 4xx would make the sending MTA
resend to all of them (duplicates), and a 250 makes it forget the deferred ones. So when a send
ends with some recipients accepted and others deferred for a reason that may pass (transient,
throttled, connection), the client resends to the deferred recipients only, in up to
`PARTIAL_RETRY_ROUNDS` further rounds, within the same deadline. Recipients of the ambiguous case
(below) are never among them, whichever 50-recipient chunk they were in.

The ambiguous case
------------------
If the session is lost after the body and its final '.' were sent and before SES replied, SES may
have accepted the message, or not. The client cannot know, and resending on its own could deliver
twice without anyone deciding so. Those recipients are reported DEFERRED (class CONNECTION,
text `AMBIGUOUS_TEXT`) with `RecipientResult.ambiguous` and `SendResult.ambiguous` set; they are
not resent within the send, not even after other recipients or chunks were accepted (the
message's other chunks still go), and `stats.ambiguous` counts such sends. The caller decides:
with nothing else accepted the relay answers 4xx, so the sending MTA retries, which may duplicate
the message (at-least-once delivery, the SMTP norm) but never loses it. A loss while the body is
still being received looks identical from the client side once the body has left the socket, and
is reported the same way.

A message that needs SMTPUTF8 (non-ASCII addresses, or the sender asked for it) cannot be
delivered through a server that does not offer it; retrying will not change that, so those
recipients are REFUSED with `553 5.6.7`. (SES offers SMTPUTF8.)

Cancellation
------------
Cancelling `send` is safe: a session in the middle of a transaction is aborted (what is still
buffered is not sent), never reused, and its pool slot is freed; tokens already taken from the
limiter are spent. A cancel while waiting for tokens after the `354` drops the session before
the body, so the upstream discards the transaction. A cancel that lands after the final '.' left
the socket is the ambiguous case again: SES may have the message, and the caller, having
cancelled, decides what to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import attrs

from ses_core.ratelimit import RateLimiter
from ses_core.smtp._charge import SendRateCharger
from ses_core.smtp._pool import Clock, ConnectionPool, Sleep
from ses_core.smtp._probe import ProbeSession
from ses_core.smtp._session import ConnectFailure
from ses_core.smtp._transaction import (
    Charge,
    Loss,
    MessageData,
    SmtpEnvelope,
    TransactionOutcome,
    run_transaction,
)
from ses_core.smtp.results import (
    AMBIGUOUS_TEXT,
    PoolStats,
    RecipientResult,
    Reply,
    ReplyClass,
    SendResult,
    log_recipient_failures,
)
from ses_core.smtp.sender import OutboundMessage, recipient_chunks
from ses_core.smtp.settings import SmtpSettings

__all__ = ["AMBIGUOUS_TEXT", "PARTIAL_RETRY_ROUNDS", "SesSmtpClient"]

log = logging.getLogger(__name__)

#: Further rounds to the deferred recipients after some were accepted (see the module docstring).
PARTIAL_RETRY_ROUNDS = 5

_LOST_TEXT = "4.4.2 connection to SES lost before the message was sent"


@attrs.define
class _Backoff:
    """Retry counters of one chunk."""

    throttled: int = 0
    transient: int = 0
    connection: int = 0

    def next_delay(self, classes: Iterable[ReplyClass], settings: SmtpSettings) -> float:
        delay = 0.0
        kinds = set(classes)
        if ReplyClass.THROTTLED in kinds:
            delay = max(delay, _nth(settings.throttle_backoff, self.throttled))
            self.throttled += 1
        if ReplyClass.TRANSIENT in kinds:
            delay = max(delay, _nth(settings.transient_backoff, self.transient))
            self.transient += 1
        if ReplyClass.CONNECTION in kinds:
            # The first retry goes straight to a fresh session; repeated trouble slows down.
            if self.connection > 0:
                delay = max(delay, _nth(settings.transient_backoff, self.connection - 1))
            self.connection += 1
        return delay


def _nth(schedule: tuple[float, ...], index: int) -> float:
    return schedule[min(index, len(schedule) - 1)]


class SesSmtpClient:
    """Sends mail through SES over a pool of persistent TLS sessions (an async context manager)."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        limiter: RateLimiter | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._charger = SendRateCharger(limiter, clock=clock, timeout=settings.timeout)
        self._clock = clock
        self._sleep = sleep
        self._pool = ConnectionPool(settings, clock=clock, sleep=sleep)
        self._probe = ProbeSession(self._pool, settings, clock=clock)
        self._ambiguous = 0

    def __repr__(self) -> str:
        s = self._settings
        return f"SesSmtpClient(host={s.host!r}, port={s.port}, username={s.username!r})"

    async def __aenter__(self) -> SesSmtpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def stats(self) -> PoolStats:
        """Pool counters, plus the number of ambiguous sends."""
        return self._pool.stats(ambiguous=self._ambiguous)

    async def aclose(self) -> None:
        """Close the pooled sessions and the probe's."""
        await self._pool.aclose()
        await self._probe.aclose()

    async def probe(self) -> None:
        """NOOP on the probe's own session, outside the send slots (see `_probe`): it never
        queues behind sends waiting for rate tokens. Raises `UpstreamUnavailable` if SES does not
        answer within `probe_timeout`, and at once while the pool backs off after a failed open."""
        await self._probe.check()

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Deliver `message`; see the module docstring for the guarantees."""
        if deadline is None:
            deadline = self._clock() + self._settings.default_deadline
        data = MessageData.from_bytes(message.data)
        result = await self._send_to(message, message.recipients, data, deadline)
        for _ in range(PARTIAL_RETRY_ROUNDS):
            if not result.accepted or self._clock() >= deadline:
                break
            retry = tuple(
                r.recipient
                for r in result.deferred
                if r.reply_class.retryable_soon and not r.ambiguous
            )
            if not retry:
                break
            result = result.with_retry(await self._send_to(message, retry, data, deadline))
        return result

    async def _send_to(
        self,
        message: OutboundMessage,
        recipients: tuple[str, ...],
        data: MessageData,
        deadline: float,
    ) -> SendResult:
        """One pass over `recipients`, in transactions of at most 50 recipients."""
        results = []
        for chunk in recipient_chunks(recipients, self._settings.max_recipients_per_message):
            envelope = SmtpEnvelope(
                sender=message.sender,
                recipients=chunk,
                data=data,
                smtputf8=message.smtputf8,
                eightbit=message.eightbit,
            )
            results.append(await self._send_chunk(envelope, deadline))
        return results[0] if len(results) == 1 else SendResult.combine(tuple(results))

    async def _send_chunk(self, envelope: SmtpEnvelope, deadline: float) -> SendResult:
        pending = envelope.recipients
        final: dict[str, RecipientResult] = {}
        last: dict[str, Reply] = {}
        backoff = _Backoff()
        charger = self._charger
        attempts = 0
        waited = 0.0
        ambiguous = False
        while pending:
            remaining = deadline - self._clock()
            if remaining <= 0:
                reason = Reply(
                    451, "4.4.7 message deadline passed before sending", ReplyClass.TRANSIENT
                )
                last = {r: last.get(r, reason) for r in pending}
                break
            prepaid = False
            if charger.charge_early:
                limited = await charger.take_early(len(pending), remaining)
                if isinstance(limited, Reply):
                    last = {r: limited for r in pending}
                    break
                waited += limited
                prepaid = True
            attempts += 1
            charge = charger.late(deadline, prepaid=prepaid)
            outcome = await self._attempt(
                attrs.evolve(envelope, recipients=pending),
                deadline,
                charge if charger.enabled else None,
            )
            waited += charge.waited
            held = charge.refusal if outcome.held_back else None
            retry: list[str] = []
            unknown = 0
            for recipient in pending:
                reply = outcome.replies.get(recipient)
                if held is not None and reply is held:
                    if charge.retry_early:
                        retry.append(recipient)
                        last.setdefault(recipient, held)
                    else:
                        final[recipient] = RecipientResult.for_reply(recipient, held)
                    continue
                if reply is None and outcome.loss is Loss.AFTER_BODY:
                    final[recipient] = RecipientResult.deferred(
                        recipient, 451, AMBIGUOUS_TEXT, ReplyClass.CONNECTION, ambiguous=True
                    )
                    unknown += 1
                    continue
                if reply is None:
                    reply = Reply(451, _LOST_TEXT, ReplyClass.CONNECTION)
                if reply.reply_class.retryable_soon:
                    last[recipient] = reply
                    retry.append(recipient)
                else:
                    final[recipient] = RecipientResult.for_reply(recipient, reply)
            if unknown:
                ambiguous = True
                self._ambiguous += 1
                log.warning(
                    "SES connection lost after the final '.' for a message from %s to %d "
                    "recipient(s): deferred, a retry may duplicate it",
                    envelope.sender,
                    unknown,
                )
            pending = tuple(retry)
            if not pending or attempts >= self._settings.max_attempts or self._pool.closed:
                break
            if held is not None:
                if not charge.retry_early:
                    break  # no tokens before the deadline: the rest is deferred as it stands
                continue  # the wait was too long to hold a session: pay first, then send
            delay = backoff.next_delay((last[r].reply_class for r in pending), self._settings)
            if self._clock() + delay >= deadline:
                break
            if delay > 0:
                await self._sleep(delay)
        for recipient in pending:
            final[recipient] = RecipientResult.for_reply(recipient, last[recipient])
        results = tuple(final[r] for r in envelope.recipients)
        log_recipient_failures(log, "SES", envelope.sender, results)
        return SendResult(results, limiter_wait=waited, attempts=attempts, ambiguous=ambiguous)

    async def _attempt(
        self, envelope: SmtpEnvelope, deadline: float, charge: Charge | None = None
    ) -> TransactionOutcome:
        """One transaction on a pooled session; stale pooled sessions are replaced for free."""
        for _ in range(self._settings.pool_size + 1):
            try:
                connection = await self._pool.acquire(max(deadline - self._clock(), 0.0))
            except ConnectFailure as failure:
                reply = Reply(failure.code, failure.text, failure.reply_class)
                if failure.reply_class is ReplyClass.AUTH:
                    log.error(
                        "SES SMTP login/TLS failure, mail deferred until fixed: %s %s",
                        failure.code,
                        failure.text,
                    )
                return TransactionOutcome({r: reply for r in envelope.recipients})
            try:
                outcome = await run_transaction(
                    connection, envelope, self._settings.timeout, charge
                )
            except BaseException:
                # Cancellation (or a bug): a session interrupted mid-transaction is closed.
                self._pool.release(connection, reusable=False)
                raise
            self._pool.release(connection, reusable=outcome.reusable, recycle=outcome.recycle)
            if not outcome.stale:
                return outcome
            log.info("pooled SES session was closed by the server; using a fresh one")
        return outcome
