"""The SES SMTP client: send a message, get one verdict per recipient, never lose mail.

`SesSmtpClient.send` turns every SES answer into ACCEPTED, REFUSED (a real permanent reply,
carried with SES's code and text) or DEFERRED (retry later; the relay answers 4xx so the sender
keeps the mail). It never raises for an SMTP outcome. On the way it:

- splits more than 50 recipients (SES's limit) into several transactions of at most 50;
- takes send-rate tokens for every attempt, one per recipient SES accepted at RCPT (SES counts
  recipients), as late as possible: after DATA's `354`, right before the body, so the moment SES
  accepts follows the grant closely (see `_LateCharge`: the wait is bounded by the deadline and
  the upstream timeout; a refused charge drops the session without the final '.');
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

The ambiguous case
------------------
If the session is lost after the body and its final '.' were sent and before SES replied, SES may
have accepted the message, or not. The client cannot know, and resending on its own could deliver
twice without anyone deciding so. Those recipients are reported DEFERRED with
`SendResult.ambiguous` set, and `stats.ambiguous` counts such sends. The relay then answers 4xx:
the sending MTA retries, which may duplicate the message (at-least-once delivery, the SMTP norm)
but never loses it. A loss while the body is still being received looks identical from the client
side once the body has left the socket, and is reported the same way.

SMTPUTF8 without server support
-------------------------------
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
from typing import Protocol

import aiosmtplib
import attrs

from ses_core.errors import (
    DailyQuotaExhausted,
    RateLimiterUnavailable,
    RateLimitTimeout,
    UpstreamUnavailable,
)
from ses_core.ratelimit.local import RateLimiter
from ses_core.smtp._pool import Clock, ConnectFailure, ConnectionPool, PoolStats, Sleep
from ses_core.smtp._transaction import (
    Charge,
    Envelope,
    Loss,
    Payload,
    Reply,
    TransactionOutcome,
    run_transaction,
)
from ses_core.smtp.results import (
    Outcome,
    RecipientResult,
    ReplyClass,
    SendResult,
    outcome_for,
)

__all__ = [
    "MessageSender",
    "OutboundMessage",
    "Outcome",
    "PoolStats",
    "RecipientResult",
    "ReplyClass",
    "SendResult",
    "SesSmtpClient",
    "SmtpSettings",
]

log = logging.getLogger(__name__)

#: SES refuses a message with more recipients (To+Cc+Bcc) than this.
SES_MAX_RECIPIENTS = 50
IMPLICIT_TLS_PORTS = frozenset({465, 2465})

AMBIGUOUS_TEXT = (
    "4.4.2 connection to SES lost after the message was sent and before SES replied; "
    "it may have been accepted"
)
_LOST_TEXT = "4.4.2 connection to SES lost before the message was sent"


def _delays(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def _addresses(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _schedule(
    instance: object, attribute: attrs.Attribute[tuple[float, ...]], value: tuple[float, ...]
) -> None:
    if not value or any(delay < 0 for delay in value):
        message = f"{attribute.name} must be a non-empty tuple of delays >= 0, got {value!r}"
        raise ValueError(message)


_positive = attrs.validators.gt(0)
_positive_float = attrs.validators.gt(0.0)


@attrs.frozen
class SmtpSettings:
    """How to reach and use the SES SMTP endpoint.

    Attributes:
        host: e.g. `email-smtp.eu-west-1.amazonaws.com`.
        port: 587, 25, 2587 (STARTTLS) or 465, 2465 (implicit TLS).
        username: SMTP user name (the IAM access key id).
        password: SMTP password (never logged, not in repr).
        implicit_tls: None chooses by port (465 and 2465 are implicit TLS).
        pool_size: sessions kept open at most.
        max_messages_per_connection: a session is recycled after this many messages.
        max_connection_age: a session is recycled after this many seconds.
        timeout: seconds allowed for each SMTP command and for opening a session.
        ca_file: trusted CAs instead of the system's (tests only; verification stays on).
        server_hostname: name to verify in the certificate when `host` is an address.
        local_hostname: name sent in EHLO (default: this machine's host name).
        max_recipients_per_message: recipients per transaction (SES allows 50).
        max_attempts: transactions tried per chunk at most.
        default_deadline: seconds allowed per send when the caller gives no deadline.
        throttle_backoff: waits before retrying a throttled send (the last one repeats).
        transient_backoff: waits before retrying a transient failure (the last one repeats).
        reconnect_backoff: first wait after a failed connection attempt (doubles each time).
        reconnect_backoff_max: longest wait between connection attempts.
    """

    host: str
    port: int = attrs.field(default=587)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    implicit_tls: bool | None = None
    pool_size: int = attrs.field(default=4, validator=_positive)
    max_messages_per_connection: int = attrs.field(default=100, validator=_positive)
    max_connection_age: float = attrs.field(default=300.0, validator=_positive_float)
    timeout: float = attrs.field(default=30.0, validator=_positive_float)
    ca_file: str | None = None
    server_hostname: str | None = None
    local_hostname: str | None = None
    max_recipients_per_message: int = attrs.field(default=SES_MAX_RECIPIENTS)
    max_attempts: int = attrs.field(default=8, validator=_positive)
    default_deadline: float = attrs.field(default=120.0, validator=_positive_float)
    throttle_backoff: tuple[float, ...] = attrs.field(
        default=(5.0, 10.0, 30.0), converter=_delays, validator=_schedule
    )
    transient_backoff: tuple[float, ...] = attrs.field(
        default=(1.0, 2.0, 5.0), converter=_delays, validator=_schedule
    )
    reconnect_backoff: float = attrs.field(default=0.1, validator=_positive_float)
    reconnect_backoff_max: float = attrs.field(default=5.0, validator=_positive_float)

    def __attrs_post_init__(self) -> None:
        if not 0 < self.port < 65536:
            message = f"port out of range: {self.port}"
            raise ValueError(message)
        if (self.username is None) != (self.password is None):
            message = "give both username and password, or neither"
            raise ValueError(message)
        if not 0 < self.max_recipients_per_message <= SES_MAX_RECIPIENTS:
            message = f"max_recipients_per_message must be 1..{SES_MAX_RECIPIENTS}"
            raise ValueError(message)

    @classmethod
    def for_region(
        cls, region: str, username: str, password: str, **options: object
    ) -> SmtpSettings:
        """Settings for the SES SMTP endpoint of an AWS region (STARTTLS on 587)."""
        host = f"email-smtp.{region}.amazonaws.com"
        return cls(host, username=username, password=password, **options)  # type: ignore[arg-type]

    @property
    def uses_implicit_tls(self) -> bool:
        """Whether the session starts with TLS (else STARTTLS)."""
        if self.implicit_tls is None:
            return self.port in IMPLICIT_TLS_PORTS
        return self.implicit_tls

    @property
    def tls_server_name(self) -> str:
        """The name the server certificate must match."""
        return self.server_hostname or self.host


@attrs.frozen
class OutboundMessage:
    """A message to send, as it will go on the wire.

    Attributes:
        sender: envelope sender (MAIL FROM).
        recipients: envelope recipients (RCPT TO), any number.
        data: the RFC 5322 message; any line endings (sent as CRLF).
        smtputf8: the message needs SMTPUTF8 (also implied by non-ASCII addresses).
        eightbit: the body is 8-bit MIME.
    """

    sender: str
    recipients: tuple[str, ...] = attrs.field(converter=_addresses)
    data: bytes
    smtputf8: bool = False
    eightbit: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.recipients:
            message = "a message needs at least one recipient"
            raise ValueError(message)


class MessageSender(Protocol):
    """Anything that delivers mail: the SES client, or a relay's local outbox."""

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Deliver `message`; one result per recipient; never raises for SMTP outcomes."""
        ...

    async def check(self) -> None:
        """Raise `UpstreamUnavailable` unless mail can be delivered now."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


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
        self._limiter = limiter
        self._clock = clock
        self._sleep = sleep
        self._pool = ConnectionPool(settings, clock=clock, sleep=sleep)
        self._ambiguous = 0
        # Set after the limiter refused a late charge: charge before taking a session until it
        # grants without a wait, so an overload or outage does not cost a session per message.
        self._charge_early = False

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
        """Close the pooled sessions."""
        await self._pool.aclose()

    async def check(self) -> None:
        """NOOP on a pooled session (opening one if needed); raise `UpstreamUnavailable` if bad.

        While the pool is backing off after a failed open, the check fails at once with that
        failure rather than waiting for the next try."""
        pending = self._pool.pending_failure()
        if pending is not None:
            message = f"SES SMTP endpoint unavailable: {pending.code} {pending.text}"
            raise UpstreamUnavailable(message) from pending
        for _ in range(2):
            try:
                connection = await self._pool.acquire(self._settings.timeout)
            except ConnectFailure as failure:
                message = f"SES SMTP endpoint unavailable: {failure.code} {failure.text}"
                raise UpstreamUnavailable(message) from failure
            healthy = False
            try:
                reply = await connection.smtp.noop(timeout=self._settings.timeout)
                healthy = reply.code == 250
            except aiosmtplib.SMTPResponseException as exc:
                message = f"SES SMTP endpoint answered NOOP with {exc.code} {exc.message}"
                raise UpstreamUnavailable(message) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                if not connection.reused:
                    message = f"SES SMTP session broke during NOOP: {exc}"
                    raise UpstreamUnavailable(message) from exc
                # A stale pooled session says nothing about SES: try once on a fresh one.
                continue
            finally:
                self._pool.release(connection, reusable=healthy)
            return
        message = "SES SMTP sessions keep breaking"
        raise UpstreamUnavailable(message)

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Deliver `message`; see the module docstring for the guarantees."""
        if deadline is None:
            deadline = self._clock() + self._settings.default_deadline
        payload = Payload.from_message_data(message.data)
        size = self._settings.max_recipients_per_message
        chunks = [message.recipients[i : i + size] for i in range(0, len(message.recipients), size)]
        results = []
        for chunk in chunks:
            envelope = Envelope(
                sender=message.sender,
                recipients=chunk,
                payload=payload,
                smtputf8=message.smtputf8,
                eightbit=message.eightbit,
            )
            results.append(await self._send_chunk(envelope, deadline))
        return results[0] if len(results) == 1 else SendResult.combine(tuple(results))

    async def _send_chunk(self, envelope: Envelope, deadline: float) -> SendResult:
        pending = envelope.recipients
        final: dict[str, RecipientResult] = {}
        last: dict[str, Reply] = {}
        backoff = _Backoff()
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
            if self._charge_early:
                limited = await self._take_tokens(len(pending), remaining)
                if isinstance(limited, Reply):
                    last = {r: limited for r in pending}
                    break
                waited += limited
                prepaid = True
            attempts += 1
            charge = _LateCharge(self, deadline, prepaid=prepaid)
            outcome = await self._attempt(
                attrs.evolve(envelope, recipients=pending),
                deadline,
                None if self._limiter is None else charge,
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
                        final[recipient] = _result(recipient, held)
                    continue
                if reply is None and outcome.loss is Loss.AFTER_BODY:
                    final[recipient] = RecipientResult.deferred(
                        recipient, 451, AMBIGUOUS_TEXT, ReplyClass.CONNECTION
                    )
                    unknown += 1
                    continue
                if reply is None:
                    reply = Reply(451, _LOST_TEXT, ReplyClass.CONNECTION)
                if reply.reply_class.retryable_soon:
                    last[recipient] = reply
                    retry.append(recipient)
                else:
                    final[recipient] = _result(recipient, reply)
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
            final[recipient] = _result(recipient, last[recipient])
        results = tuple(final[r] for r in envelope.recipients)
        _log_failures(envelope.sender, results)
        return SendResult(results, limiter_wait=waited, attempts=attempts, ambiguous=ambiguous)

    async def _take_tokens(self, cost: int, remaining: float) -> float | Reply:
        """Seconds waited for send-rate capacity, or the reply to defer with when there is none."""
        if self._limiter is None:
            return 0.0
        try:
            waited = await self._limiter.acquire(cost, max_wait=remaining)
        except (RateLimitTimeout, RateLimiterUnavailable, DailyQuotaExhausted) as exc:
            return _limiter_reply(exc)
        if waited <= 0.0:
            self._charge_early = False  # capacity to spare again: back to charging late
        return waited

    async def _attempt(
        self, envelope: Envelope, deadline: float, charge: Charge | None = None
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


class _LateCharge:
    """Takes one attempt's send-rate tokens right before the body is written.

    The upstream counts a message when it accepts the final '.', so taking the tokens there
    (rather than before MAIL) keeps the round trips of MAIL/RCPT/DATA from bunching arrivals
    together, and only the recipients the upstream accepted at RCPT are charged. The session
    waits mid-DATA for at most min(deadline, upstream timeout). When the limiter refuses:
    - no capacity before the deadline: the recipients are DEFERRED with the limiter's reply;
    - capacity within the deadline but after the upstream timeout (`retry_early`): the session
      is given up and the next attempt pays before taking a session;
    - limiter unavailable or daily quota exhausted: DEFERRED.
    After any refusal the client pays before taking a session (as it did before late charging)
    until the limiter grants without making it wait, so an overload, an outage or an exhausted
    quota does not cost a dropped session (and a new TLS + AUTH) per message.
    A retried attempt is charged again, as before.
    """

    def __init__(self, client: SesSmtpClient, deadline: float, *, prepaid: bool) -> None:
        self._client = client
        self._deadline = deadline
        self._prepaid = prepaid
        self.waited = 0.0
        self.refusal: Reply | None = None
        self.retry_early = False

    async def __call__(self, cost: int) -> Reply | None:
        client = self._client
        if self._prepaid or client._limiter is None:
            return None
        remaining = self._deadline - client._clock()
        bound = min(remaining, client._settings.timeout)
        try:
            self.waited = await client._limiter.acquire(cost, max_wait=max(bound, 0.0))
        except RateLimitTimeout as exc:
            self.retry_early = bound < remaining and exc.wait_seconds <= remaining
            client._charge_early = True
            self.refusal = _limiter_reply(exc)
        except (RateLimiterUnavailable, DailyQuotaExhausted) as exc:
            client._charge_early = True
            self.refusal = _limiter_reply(exc)
        return self.refusal


def _limiter_reply(exc: Exception) -> Reply:
    """The deferral for a limiter that gave no tokens."""
    if isinstance(exc, RateLimitTimeout):
        text = (
            "4.7.0 send rate limit: no capacity before the message deadline "
            f"(would wait {exc.wait_seconds:.1f}s)"
        )
        return Reply(451, text, ReplyClass.THROTTLED)
    if isinstance(exc, DailyQuotaExhausted):
        log.warning("SES daily sending quota exhausted: %s", exc)
        return Reply(454, "4.7.0 daily sending quota exhausted", ReplyClass.DAILY_QUOTA)
    log.warning("send-rate limiter unavailable: %s", exc)
    return Reply(451, f"4.3.0 send-rate limiter unavailable: {exc}", ReplyClass.TRANSIENT)


def _result(recipient: str, reply: Reply) -> RecipientResult:
    """The final result for a recipient from its last reply (REFUSED only when permanent)."""
    outcome = outcome_for(reply.reply_class)
    return RecipientResult(recipient, outcome, reply.code, reply.text, reply.reply_class)


def _log_failures(sender: str, results: tuple[RecipientResult, ...]) -> None:
    # Of the sender only its domain is logged (as the relay's transaction log does): the refused
    # or deferred recipient is what an operator needs, the sender's mailbox is just personal data.
    sender = "*@" + sender.rpartition("@")[2] if "@" in sender else "<>"
    for result in results:
        if result.outcome is Outcome.ACCEPTED:
            continue
        level = logging.ERROR if result.reply_class is ReplyClass.AUTH else logging.WARNING
        log.log(
            level,
            "SES %s %s -> %s: %d %s (%s)",
            result.outcome.value,
            sender,
            result.recipient,
            result.code,
            result.text,
            result.reply_class.value,
        )
