"""One delivery attempt of one leased message, from its body to the write that ends the lease.

The steps, in order:
1. read the body (`SpoolCorrupt` -> dead-letter "corrupt": it can never be sent as received);
2. look the PENDING recipients up in the blacklist: one blacklisted since it was accepted is
   FAILED ("suppressed", reported); a blacklist that cannot answer sends nothing and retries soon;
3. send to the PENDING recipients and take one verdict per recipient (`AttemptBook`): accepted,
   refused (reported), deferred (retried), or lost ambiguously (resent once, then dead-lettered);
4. when the lifetime is over, FAIL what is still PENDING (4.4.7, reported). A message is always
   tried once more at or after its expiry time before that (as Postfix does), which also gives an
   operator's `requeue` of an old message one real attempt;
5. report the failed recipients in one DSN, queued in the same spool write that records the
   attempt (none for a null-sender message; none possible without `bounce_from`: the message is
   then dead-lettered when it finishes, so an operator sees it);
6. end the lease: removed when nothing is PENDING, else rescheduled by the backoff of the slowest
   deferral, never later than the expiry time.

`Lease` tells the runner whether the lease was ended, so a cancelled or crashed attempt is
released (due again) and a finished one never is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs

from ses_core.blacklist import BlacklistReader
from ses_core.errors import SpoolCorrupt
from ses_core.queue._attempt import AttemptBook, AttemptResult, is_ambiguous_failure
from ses_core.queue._lookup import blacklisted
from ses_core.queue._model import NewMessage, QueuedEnvelope, QueuedMessage, RecipientState
from ses_core.queue._ports import DeliveryEvents, Spool
from ses_core.queue._settings import DeliverySettings
from ses_core.queue.backoff import RetryReason
from ses_core.queue.dsn import dsn_notice
from ses_core.smtp.results import RecipientResult, ReplyClass, SendResult
from ses_core.smtp.sender import MessageSender, OutboundMessage

log = logging.getLogger("ses_core.queue.delivery")

T = TypeVar("T")

_WRITE_TRIES = 5


@attrs.define
class Lease:
    """Where a leased message's lease stands: `ended` once a write ended it."""

    message: QueuedMessage
    ended: bool = False


@attrs.frozen
class _Plan:
    """The write that ends an attempt's lease, and what to report once it is done."""

    result: AttemptResult
    next_attempt_at: float | None
    notices: tuple[NewMessage, ...]
    dead_reason: str | None
    retry_reason: RetryReason | None
    dsn: str | None


class Deliverer:
    """Runs attempts for a `QueueRunner` (one instance shared by all its workers)."""

    def __init__(
        self,
        spool: Spool,
        sender: MessageSender,
        settings: DeliverySettings,
        blacklist: BlacklistReader | None,
        events: DeliveryEvents,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spool = spool
        self._sender = sender
        self._settings = settings
        self._blacklist = blacklist
        self._events = events
        self._clock = clock
        self._monotonic = monotonic

    async def attempt(self, lease: Lease) -> None:
        """One attempt; ends the lease unless cancelled or the spool keeps failing."""
        message = lease.message
        envelope = message.envelope
        book = AttemptBook.start(envelope.recipients, message.last_error)
        data: bytes | None = None
        try:
            data = await self._spool.body(message)
        except SpoolCorrupt as exc:
            log.error("queue %s: stored message is corrupt, dead-lettered: %s", message.id, exc)
            await self._write(lease, lambda: self._spool.dead_letter(message, envelope, "corrupt"))
            self._events.dead_lettered("corrupt")
            return
        except Exception as exc:
            log.warning("queue %s: could not read the body, retried later: %r", message.id, exc)
            book.defer_all(RetryReason.TRANSIENT, f"spool: could not read the message: {exc!r}")
        sendable = data is not None
        if sendable and self._blacklist is not None and book.pending():
            try:
                book.suppress(await blacklisted(self._blacklist, book.pending()), self._clock())
            except Exception as exc:
                log.warning("queue %s: blacklist unavailable, retried later: %r", message.id, exc)
                book.defer_all(RetryReason.BLACKLIST_UNAVAILABLE, f"blacklist unavailable: {exc}")
                sendable = False
        if data is not None and sendable and book.pending():
            book.record(await self._send(lease, data, book.pending()), self._clock())
        now = self._clock()
        expires_at = envelope.received_at + self._settings.lifetime
        if book.pending() and now >= expires_at:
            book.expire(_age(now - envelope.received_at), now)
        plan = self._plan(message, book.result(), data or b"", now, expires_at)
        await self._end(lease, plan)

    async def _send(self, lease: Lease, data: bytes, recipients: tuple[str, ...]) -> SendResult:
        envelope = lease.message.envelope
        sender = envelope.sender
        if _is_null(sender):
            sender = self._settings.null_sender or ""
        outbound = OutboundMessage(
            sender, recipients, data, smtputf8=envelope.smtputf8, eightbit=envelope.eightbit
        )
        started = self._monotonic()
        deadline = started + self._settings.attempt_timeout
        try:
            result = await self._with_heartbeat(
                lease, self._sender.send(outbound, deadline=deadline)
            )
        except Exception as exc:  # a sender must not raise; if one does, the mail is kept
            log.exception("queue %s: the sender failed unexpectedly", lease.message.id)
            text = f"4.3.0 local error while sending ({type(exc).__name__})"
            return SendResult(
                tuple(
                    RecipientResult.deferred(r, 451, text, ReplyClass.TRANSIENT) for r in recipients
                )
            )
        self._events.sent(self._monotonic() - started, result.limiter_wait)
        return result

    async def _with_heartbeat(self, lease: Lease, work: Awaitable[T]) -> T:
        """`work`, with `Spool.heartbeat` every `heartbeat_interval` while it runs."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._settings.heartbeat_interval)
                if done:
                    return task.result()
                try:
                    await self._spool.heartbeat(lease.message)
                except Exception as exc:
                    log.warning("queue %s: lease heartbeat failed: %r", lease.message.id, exc)
        finally:
            task.cancel()

    def _plan(
        self,
        message: QueuedMessage,
        result: AttemptResult,
        data: bytes,
        now: float,
        expires_at: float,
    ) -> _Plan:
        envelope = message.envelope.with_recipients(result.recipients)
        for outcome, count in sorted(result.outcomes.items()):
            self._events.recipients_done(outcome, count)
        if result.possible_duplicates:
            self._events.possible_duplicate(result.possible_duplicates)
        _log_failures(message, result)
        notices: tuple[NewMessage, ...] = ()
        dsn = None
        bounce_from = self._settings.bounce_from
        if result.failed:
            if _is_null(message.envelope.sender):
                dsn = "null_sender"
            elif bounce_from is None:
                dsn = "no_bounce_sender"
                log.warning(
                    "queue %s: no DSN can be sent (no bounce sender set) for %s; the message "
                    "will be dead-lettered",
                    message.id,
                    ", ".join(f.address for f in result.failed),
                )
            else:
                notices = self._dsn(message, result, data, bounce_from, now)
                dsn = "queued" if notices else None
        if result.finished:
            dead = _dead_reason(envelope, bounce_from)
            if dead is None and result.failed and dsn is None and not _is_null(envelope.sender):
                dead = "undeliverable"  # the DSN could not be made: an operator must see it
            return _Plan(result, None, notices, dead, None, dsn)
        attempt = message.attempts + 1
        backoff = self._settings.backoff
        reason = backoff.dominant(result.retry_reasons, attempt)
        next_attempt_at = min(now + backoff.delay(reason, attempt), max(expires_at, now))
        return _Plan(result, next_attempt_at, notices, None, reason, dsn)

    def _dsn(
        self,
        message: QueuedMessage,
        result: AttemptResult,
        data: bytes,
        bounce_from: str,
        now: float,
    ) -> tuple[NewMessage, ...]:
        """The DSN reporting `result.failed`, or nothing (logged) if it cannot be made."""
        try:
            notice = dsn_notice(
                original=message.envelope,
                original_data=data,
                failed=result.failed,
                bounce_from=bounce_from,
                reporting_mta=self._settings.reporting_mta,
                now=now,
                queue_id=message.id,
            )
        except Exception:
            log.exception(
                "queue %s: could not make the DSN for %s",
                message.id,
                ", ".join(f.address for f in result.failed),
            )
            return ()
        return (notice,)

    async def _end(self, lease: Lease, plan: _Plan) -> None:
        message = lease.message
        envelope = message.envelope.with_recipients(plan.result.recipients)
        dsn = plan.dsn
        if plan.dead_reason is not None:
            for notice in plan.notices:  # `dead_letter` takes no notices: queue the DSN first
                if not await self._put_notice(message, notice):
                    dsn = "failed"
            reason = plan.dead_reason
            await self._write(lease, lambda: self._spool.dead_letter(message, envelope, reason))
            log.warning("queue %s: dead-lettered (%s)", message.id, plan.dead_reason)
            self._events.dead_lettered(plan.dead_reason)
        else:
            await self._write(
                lease,
                lambda: self._spool.settle(
                    message,
                    envelope,
                    next_attempt_at=plan.next_attempt_at,
                    last_error=plan.result.last_error,
                    notices=plan.notices,
                ),
            )
        if dsn is not None:
            self._events.dsn(dsn)
        if plan.retry_reason is not None:
            self._events.retry_scheduled(plan.retry_reason.value)

    async def _put_notice(self, message: QueuedMessage, notice: NewMessage) -> bool:
        """Queue a DSN on its own; False (logged, counted as `failed`) if the spool refused."""
        try:
            await self._spool.put(notice)
        except Exception as exc:  # the message itself is dead-lettered: nothing is lost
            log.error("queue %s: could not queue its DSN: %r", message.id, exc)
            return False
        return True

    async def _write(self, lease: Lease, make_write: Callable[[], Awaitable[None]]) -> None:
        """Run a spool write; retried with a doubling pause while the spool fails (the last
        failure is raised). A cancel that lands during the write lets it finish first, so a
        lease is never both ended and released."""
        pause = self._settings.spool_retry
        for tries in range(1, _WRITE_TRIES + 1):
            task = asyncio.ensure_future(make_write())
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    await asyncio.wait({task})
                if not task.cancelled() and task.exception() is None:
                    lease.ended = True
                raise
            except Exception as exc:
                if tries == _WRITE_TRIES:
                    raise
                log.error(
                    "queue %s: the spool failed to store the attempt, trying again in %.2f s: %r",
                    lease.message.id,
                    pause,
                    exc,
                )
                await asyncio.sleep(pause)
                pause *= 2
                continue
            lease.ended = True
            return


def _dead_reason(envelope: QueuedEnvelope, bounce_from: str | None) -> str | None:
    """Why a finished message goes to the dead-letter store instead of away, if it does."""
    if any(is_ambiguous_failure(r) for r in envelope.recipients):
        return "ambiguous"
    failed = any(r.state is RecipientState.FAILED for r in envelope.recipients)
    if failed and bounce_from is None and not _is_null(envelope.sender):
        return "undeliverable"
    return None


def _is_null(sender: str) -> bool:
    return sender in ("", "<>")


def _age(seconds: float) -> str:
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count = round(seconds)
    return f"{count} second{'' if count == 1 else 's'}"


def _log_failures(message: QueuedMessage, result: AttemptResult) -> None:
    """One line per recipient FAILED in this attempt (the sender's domain only: personal data)."""
    sender = message.envelope.sender
    domain = "*@" + sender.rpartition("@")[2] if "@" in sender else "<>"
    for before, after in zip(message.envelope.recipients, result.recipients, strict=True):
        if before.pending and after.state is RecipientState.FAILED:
            log.warning(
                "queue %s: %s -> %s failed: %d %s",
                message.id,
                domain,
                after.address,
                after.code,
                after.text,
            )
