"""The relay's SMTP transaction logic: MAIL, RCPT and DATA hooks for aiosmtpd.

What the client is told, and why:

- MAIL: the sender address is parsed (`501 5.1.7` with the reason when invalid) and its domain
  checked against `RELAY_ALLOWED_SENDER_DOMAINS` (`550 5.7.1`). The null sender `<>` (bounces,
  auto-replies) is not subject to that list: SES needs a verified identity as envelope sender,
  so it goes upstream as `null_sender` (`RELAY_BOUNCE_FROM`, validated at start; `""` keeps `<>`,
  as the local outbox does), and without one it is refused with `550 5.7.1` naming the setting.
- RCPT: syntax (`501 5.1.3` with the reason), then the blacklist, at RCPT time so that the client
  learns which recipient was refused: `550 5.1.1 <addr>: recipient is blacklisted (<reason>)`, or
  with `RELAY_BLACKLIST_MODE=drop` a silent drop (`250`, but the address is not sent to). A
  blacklist that cannot answer gives `451 4.3.0`: never an accept. Beyond `max_recipients` the
  answer is `452 4.5.3` (the client retries the rest in a second message); batches above SES's
  50-recipient limit are split by the SMTP client.
- Queue mode (RELAY_DELIVERY=queue, `relay.handler_queue`): `452 4.3.1` at MAIL and RCPT while
  the spool cannot take a message (`451 4.3.0` while it is unavailable); DATA answers `250 2.0.0 Ok:
  queued as <id>` once the message
  is durable in the spool (`452 4.3.1` / `451 4.3.0` when it could not be stored), and SES's
  verdicts reach the sender as DSNs. What follows describes direct mode.
- DATA: the message goes to the `MessageSender` with a deadline of now + `RELAY_MAX_WAIT` (the
  sender waits for rate tokens, counted per recipient, and retries transient upstream failures
  within it, resending to deferred recipients alone once others were accepted). The one result it
  returns becomes one reply that tells the truth:
  * every recipient accepted: `250` with the upstream's text;
  * nothing accepted, something deferred (throttled, transient, connection, auth, quota): `451`
    with an enhanced code saying which (`4.7.0` throttled / rate wait exceeded / quota,
    `4.4.x` upstream unreachable, `4.3.0` other), so the client keeps the message and retries;
    what failed locally is named, not blamed on the upstream: `451 4.3.0 Rate limiter
    unavailable` (the shared limiter cannot answer and fails closed), `451 4.3.0 Local outbox
    write failed`;
  * every recipient refused permanently by the upstream: the upstream's own `5xx` and text;
  * partial acceptance: `250`. SMTP has one reply per DATA, and a 4xx after some recipients were
    accepted upstream would make the client resend to all of them (duplicates). Recipients still
    deferred after the sender's own retries are put into the spool for the delivery workers
    (`relay.handler_queue`); only when that fails are they logged at ERROR level with the
    transaction id and counted in `relay_recipients{outcome="undelivered"}`;
    permanently refused recipients alongside accepted ones are likewise logged (`refused`), as
    a bounce would report them.
  * the ambiguous case (connection lost after the final '.'; the upstream may have the message)
    is DEFERRED by the client; with nothing known to be accepted the relay answers 451, so the
    message may arrive twice but is never lost.
- Any unexpected exception: a logged traceback and `451 4.3.0`; aiosmtpd's default
  `500 Error: (...)` (permanent, leaking internals) is never sent.

One JSON log line is written per DATA transaction (id, peer, sender domain, recipient count,
refused recipients with reasons, outcome, reply and upstream codes, the upstream's accepting
reply (`Ok <SES message id>`, which bounce notifications refer to), limiter wait, latency), just
after the reply is sent; no message body, no secret, and of the sender only its domain.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import attrs
from aiosmtpd.smtp import Envelope, Session

from relay.access import AccessPolicy
from relay.handler_queue import admission_reply, put_message, queued_envelope, spool_deferred
from relay.metrics import RelayMetrics
from relay.rcpt_lookup import blacklisted
from relay.replies import NULL_SENDER_REFUSED, deferred_reply, permanent_reply, short
from relay.wiring_queue import Delivery
from ses_core.addresses import EmailAddress
from ses_core.blacklist import AsyncLookup, BlacklistReader, InstantLookup
from ses_core.errors import BlacklistUnavailable, InvalidAddress
from ses_core.queue import NewMessage
from ses_core.smtp import MessageSender, OutboundMessage, ReplyClass, SendResult

log = logging.getLogger(__name__)
transaction_log = logging.getLogger("relay.transactions")

INTERNAL_ERROR = "451 4.3.0 Internal error, please try again later"


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope plus the relay's per-transaction bookkeeping."""

    def __init__(self) -> None:
        super().__init__()
        self.started: float | None = None
        self.sender_domain: str | None = None
        self.refused: list[dict[str, str]] = []
        self.dropped: set[str] = set()


def _peer_host(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class RelayHandler:
    """aiosmtpd handler object: see the module docstring for the reply policy."""

    def __init__(
        self,
        *,
        sender: MessageSender,
        blacklist: BlacklistReader | None = None,
        policy: AccessPolicy | None = None,
        metrics: RelayMetrics | None = None,
        max_wait: float = 60.0,
        max_recipients: int = 1000,
        blacklist_drop: bool = False,
        null_sender: str | None = None,
        on_daily_quota: Callable[[], None] | None = None,
        lookup_executor: Executor | None = None,
        delivery: Delivery | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.blacklist = blacklist
        # Resolved once: a Protocol isinstance check is slow, and would be paid per RCPT.
        self._instant = blacklist if isinstance(blacklist, InstantLookup) else None
        self._batched = blacklist if isinstance(blacklist, AsyncLookup) else None
        self.policy = policy or AccessPolicy()
        self.metrics = metrics or RelayMetrics()
        self.max_wait = max_wait
        self.max_recipients = max_recipients
        self.blacklist_drop = blacklist_drop
        # The envelope sender `MAIL FROM:<>` is sent with ("" keeps it); None refuses it.
        self.null_sender = null_sender
        self._on_daily_quota = on_daily_quota
        # Blacklist lookups that block run here (None: the loop's default executor).
        self._lookup_executor = lookup_executor
        # The spool and its workers (None: direct delivery with deferred recipients only logged).
        self.delivery = delivery
        self._queue_mode = delivery is not None and delivery.queue_mode
        self._clock = clock
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(3).hex()

    # --- EHLO / MAIL / RCPT --------------------------------------------------------------------

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Advertise PIPELINING (aiosmtpd handles pipelined commands but does not say so) and
        drop an empty `AUTH` line (TLS on, no credential source) from aiosmtpd's EHLO reply."""
        session.host_name = hostname
        lines = [line for line in responses if line.rstrip() != "250-AUTH"]
        lines.insert(len(lines) - 1, "250-PIPELINING")
        return lines

    async def handle_MAIL(
        self,
        server: Any,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Check the sender's syntax and domain; start the transaction clock."""
        if (refusal := self._spool_refusal()) is not None:
            return refusal
        domain = None
        if address in ("<>", ""):
            if self.null_sender is None:
                return NULL_SENDER_REFUSED
        else:
            try:
                parsed = EmailAddress.parse(address)
            except InvalidAddress as exc:
                return f"501 5.1.7 Bad sender address syntax: {short(str(exc))}"
            domain = parsed.ascii_domain
            if not self.policy.sender_allowed(domain):
                log.info("sender domain %s refused for %s", domain, _peer_host(session))
                return "550 5.7.1 Sender domain not allowed on this relay"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        if isinstance(envelope, RelayEnvelope):
            envelope.started = self._clock()
            envelope.sender_domain = domain
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: Any,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Check syntax, count and blacklist; append accepted addresses to `rcpt_tos`."""
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        if (refusal := self._spool_refusal()) is not None:
            return refusal
        try:
            parsed = EmailAddress.parse(address)
        except InvalidAddress as exc:
            self.metrics.recipients.labels("invalid").inc()
            return f"501 5.1.3 Bad recipient address syntax: {short(str(exc))}"
        if parsed.requires_smtputf8 and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address requires MAIL FROM with SMTPUTF8"
        if self.blacklist is not None:
            try:
                entry = await blacklisted(
                    self.blacklist, self._instant, self._batched, self._lookup_executor, address
                )
            except BlacklistUnavailable as exc:
                self.metrics.blacklist_errors.inc()
                log.warning("blacklist unavailable at RCPT: %s", exc)
                return "451 4.3.0 Blacklist temporarily unavailable, try again later"
            if entry is not None:
                self.metrics.blacklist_hits.inc()
                reason = str(entry.reason.value)
                if isinstance(envelope, RelayEnvelope):
                    envelope.refused.append({"rcpt": parsed.key, "reason": f"blacklisted:{reason}"})
                if self.blacklist_drop:
                    self.metrics.recipients.labels("dropped").inc()
                    if isinstance(envelope, RelayEnvelope):
                        envelope.dropped.add(address)
                    envelope.rcpt_tos.append(address)
                    return "250 2.1.5 OK"
                self.metrics.recipients.labels("blacklisted").inc()
                return f"550 5.1.1 <{parsed.address}>: recipient is blacklisted ({reason})"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    # --- DATA ----------------------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        """Send the message and answer with the truth (see the module docstring)."""
        started = self._clock()
        relay_env = envelope if isinstance(envelope, RelayEnvelope) else None
        dropped = relay_env.dropped if relay_env is not None else set()
        recipients = tuple(r for r in envelope.rcpt_tos if r not in dropped)
        record = _Record(
            id=f"{self._id_prefix}-{next(self._ids)}",
            peer=_peer_host(session),
            sender_domain=relay_env.sender_domain if relay_env else None,
            recipients=len(envelope.rcpt_tos),
            refused=list(relay_env.refused) if relay_env else [],
            size=len(envelope.original_content or b""),
            started=relay_env.started if relay_env and relay_env.started is not None else started,
        )
        if not recipients:
            # Every recipient was a blacklisted address dropped silently (drop mode).
            return self._finish(record, "250 2.0.0 OK", "dropped", None)
        if self._queue_mode:
            return await self._enqueue(record, envelope, recipients)
        sender = envelope.mail_from or ""
        if sender in ("<>", "") and self.null_sender is not None:
            sender = self.null_sender  # the message itself is unchanged
        message = OutboundMessage(
            sender=sender,
            recipients=recipients,
            data=envelope.original_content or b"",
            smtputf8=bool(envelope.smtp_utf8),
            eightbit="BODY=8BITMIME" in envelope.mail_options,
        )
        # A sender never raises for a limiter's refusal (the `MessageSender` contract): it
        # defers, and `deferred_reply` names the class.
        result = await self.sender.send(message, deadline=started + self.max_wait)
        self.metrics.upstream_latency.observe(self._clock() - started)
        if result.accepted and result.deferred and self.delivery is not None:
            record.queue_id = await spool_deferred(
                self.delivery, self.metrics, envelope, result.deferred, transaction_id=record.id
            )
        return self._answer(record, result)

    def _spool_refusal(self) -> str | None:
        """Queue mode, and the spool cannot take a message now: the 4xx for MAIL/RCPT (counted
        per refused command), else None."""
        if not self._queue_mode or self.delivery is None:
            return None
        reason = self.delivery.admission()
        if reason is None:
            return None
        self.metrics.queue.spool_refusals.labels(reason).inc()
        return admission_reply(reason)

    async def _enqueue(
        self, record: _Record, envelope: Envelope, recipients: tuple[str, ...]
    ) -> str:
        """Queue mode's DATA: 250 only once `put` returned (`relay.handler_queue`)."""
        assert self.delivery is not None
        message = NewMessage(
            queued_envelope(
                envelope, recipients, transaction_id=record.id, received_at=time.time()
            ),
            envelope.original_content or b"",
        )
        queue_id, reply, reason = await put_message(self.delivery, self.metrics, message)
        if queue_id is None:
            return self._finish(record, reply, "deferred", reason)
        record.queue_id = queue_id
        self.metrics.recipients.labels("queued").inc(len(recipients))
        return self._finish(record, f"250 2.0.0 Ok: queued as {queue_id}", "queued", None)

    def _answer(self, record: _Record, result: SendResult) -> str:
        record.limiter_wait = result.limiter_wait
        record.attempts = result.attempts
        self.metrics.limiter_wait.observe(result.limiter_wait)
        accepted, refused, deferred = result.accepted, result.refused, result.deferred
        for item in refused:
            record.refused.append({"rcpt": item.recipient, "reason": f"upstream:{item.code}"})
        if accepted:
            self.metrics.recipients.labels("accepted").inc(len(accepted))
        if refused:
            self.metrics.recipients.labels("refused").inc(len(refused))
        if self._on_daily_quota is not None and any(
            r.reply_class is ReplyClass.DAILY_QUOTA for r in deferred
        ):
            # Tell the quota poller, so later messages are deferred before reaching SES.
            self._on_daily_quota()
        first = (deferred or refused or accepted)[0]
        record.upstream_code = first.code
        record.upstream_reply = short(accepted[0].text) if accepted else None
        if not deferred and not refused:
            return self._finish(record, f"250 {short(accepted[0].text) or 'OK'}", "accepted", None)
        if accepted:
            if deferred and record.queue_id is None:
                self.metrics.recipients.labels("undelivered").inc(len(deferred))
                log.error(
                    "transaction %s: %d recipient(s) still deferred after partial acceptance: %s",
                    record.id,
                    len(deferred),
                    ", ".join(f"{r.recipient} ({r.code})" for r in deferred),
                )
            reason = "partial_deferred" if deferred else "partial_refused"
            return self._finish(record, f"250 {short(accepted[0].text) or 'OK'}", "partial", reason)
        if deferred:
            self.metrics.recipients.labels("deferred").inc(len(deferred))
            line, reason = deferred_reply(deferred)
            if result.ambiguous:
                reason = "ambiguous"
            return self._finish(record, line, "deferred", reason)
        return self._finish(record, permanent_reply(refused[0]), "refused", "upstream_refused")

    def _finish(self, record: _Record, reply: str, outcome: str, reason: str | None) -> str:
        latency = self._clock() - record.started
        self.metrics.transactions.labels(outcome, reason or "").inc()
        if transaction_log.isEnabledFor(logging.INFO):
            fields = {
                "event": "transaction",
                "id": record.id,
                "peer": record.peer,
                "sender_domain": record.sender_domain,
                "recipients": record.recipients,
                "refused": record.refused,
                "outcome": outcome,
                "reason": reason,
                "code": int(reply[:3]),
                "upstream_code": record.upstream_code,
                "upstream_reply": record.upstream_reply,
                "limiter_wait": round(record.limiter_wait, 4),
                "attempts": record.attempts,
                "size": record.size,
                "latency": round(latency, 4),
                "queue_id": record.queue_id,
            }
            # Formatted and written right after the reply is sent (the next loop iteration), not
            # before, so that the client gets its answer sooner.
            line = functools.partial(
                transaction_log.info, "%s %s", record.id, outcome, extra={"fields": fields}
            )
            asyncio.get_running_loop().call_soon(line)
        return reply

    # --- errors --------------------------------------------------------------------------------

    async def handle_exception(self, error: Exception) -> str:
        """Log the traceback and answer 451 (never aiosmtpd's permanent `500 Error: (...)`)."""
        self.metrics.errors.inc()
        log.error("unexpected error in SMTP session", exc_info=error)
        return INTERNAL_ERROR


@attrs.define(kw_only=True)
class _Record:
    """Mutable facts about one transaction, gathered for its log line."""

    id: str
    peer: str
    sender_domain: str | None
    recipients: int
    refused: list[dict[str, str]]
    size: int
    started: float
    limiter_wait: float = 0.0
    attempts: int = 0
    upstream_code: int | None = None
    upstream_reply: str | None = None
    queue_id: str | None = None
