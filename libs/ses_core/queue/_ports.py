"""The queue's ports: `Spool` for the relay and its delivery workers, `SpoolAdmin` for operators,
`DeliveryEvents` for whoever counts what delivery did.

One interface, several backends (the local SQLite spool, the shared SQS+S3 one, `MemorySpool`
for tests): delivery, retries, DSNs and the queue command are written once against these ports.

The contract every backend keeps:
- `put` returns only once the message is on durable storage; an exception means nothing was
  stored (`SpoolFull` -> the client gets 452, `SpoolUnavailable` -> 451);
- `lease` hands each due message to one worker at a time, oldest due first; a lease ends with
  exactly one of `settle`, `dead_letter` or `release`; a crash ends every lease of the process,
  so the message comes back (at most the deliveries in flight at the crash are repeated);
- `settle` stores the recipients' new states and any notices (DSNs) in one step: the message is
  removed once no recipient is PENDING, rescheduled at `next_attempt_at` otherwise.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ses_core.queue._model import (
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
    QueuedMessage,
    QueueFilter,
    SpoolStats,
)


class Spool(Protocol):
    """Durable storage of accepted messages until every recipient has an outcome."""

    def admission(self) -> str | None:
        """Why a new message could not be taken now ("disk_full", "queue_full"), or None.

        Cheap and non-blocking (a cached reading), so the relay asks at MAIL and RCPT and
        answers 452 before the client sends a body that could not be stored."""
        ...

    async def put(self, message: NewMessage) -> str:
        """Store `message` durably and return its id; raises `SpoolFull` or `SpoolUnavailable`
        with nothing stored."""
        ...

    async def lease(self, limit: int, now: float) -> tuple[QueuedMessage, ...]:
        """Up to `limit` messages due at `now` (epoch seconds) and not leased, oldest due first."""
        ...

    async def body(self, message: QueuedMessage) -> bytes:
        """The leased message's body; raises `SpoolCorrupt` when it cannot be read as stored."""
        ...

    async def heartbeat(self, message: QueuedMessage) -> None:
        """Keep a lease alive during a long delivery (SQS visibility); may do nothing."""
        ...

    async def settle(
        self,
        message: QueuedMessage,
        envelope: QueuedEnvelope,
        *,
        next_attempt_at: float | None,
        last_error: str = "",
        notices: tuple[NewMessage, ...] = (),
    ) -> None:
        """End the lease: store `envelope` (recipient states after this attempt) and `notices`
        (DSNs to queue) together; remove the message when nothing is PENDING, else make it due
        again at `next_attempt_at` (required then)."""
        ...

    async def dead_letter(
        self, message: QueuedMessage, envelope: QueuedEnvelope, reason: str
    ) -> None:
        """End the lease by setting the message aside for an operator (`SpoolAdmin.requeue`)."""
        ...

    async def release(self, message: QueuedMessage) -> None:
        """End the lease without an attempt (shutdown): the message is due again at once."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest message not leased is due (epoch seconds), None when none is."""
        ...

    async def stats(self) -> SpoolStats:
        """Queue depth (cheap: kept as counters, not a scan)."""
        ...

    async def aclose(self) -> None:
        """Finish pending writes and close; `put` after this raises `SpoolUnavailable`."""
        ...


@runtime_checkable
class SpoolAdmin(Protocol):
    """What an operator does to a queue (the `queue` command), synchronous like a CLI."""

    def list(self, where: QueueFilter) -> tuple[MessageSummary, ...]:
        """Messages matching `where`, oldest first."""
        ...

    def show(self, message_id: str) -> MessageSummary | None:
        """One message, queued or dead, or None."""
        ...

    def retry_now(self, message_id: str) -> bool:
        """Make a queued message due at once; False if there is no such queued message."""
        ...

    def delete(self, message_id: str) -> bool:
        """Remove a message (queued or dead) for good; False if there is none."""
        ...

    def requeue(self, message_id: str) -> bool:
        """Move a dead-lettered message back to the queue, its FAILED recipients PENDING again,
        due at once; False if there is no such dead message."""
        ...

    def summary(self) -> SpoolStats:
        """Queue depth, as `Spool.stats`."""
        ...


class DeliveryEvents(Protocol):
    """What delivery reports, for metrics; every method is cheap and never raises."""

    def recipients_done(self, outcome: str, count: int) -> None:
        """`count` recipients reached `outcome` in one attempt: accepted, refused, expired,
        suppressed (blacklisted at delivery), ambiguous (lost twice), or deferred (retried)."""
        ...

    def retry_scheduled(self, reason: str) -> None:
        """A message was rescheduled; `reason` is the reply class that deferred it."""
        ...

    def dsn(self, result: str) -> None:
        """A DSN was queued ("queued"), or not: "null_sender", "no_bounce_sender", or "failed"
        (the spool refused it; the message it reports on is dead-lettered for an operator)."""
        ...

    def dead_lettered(self, reason: str) -> None:
        """A message was set aside for an operator."""
        ...

    def possible_duplicate(self, count: int) -> None:
        """`count` recipients were resent after an ambiguous loss (SES may have them twice)."""
        ...

    def sent(self, seconds: float, limiter_wait: float) -> None:
        """One send to the upstream ended after `seconds` (waits and retries included), of
        which `limiter_wait` waiting for send-rate tokens."""
        ...


class NoEvents:
    """`DeliveryEvents` that counts nothing (tools and tests that do not look)."""

    def recipients_done(self, outcome: str, count: int) -> None:
        """Ignored."""

    def retry_scheduled(self, reason: str) -> None:
        """Ignored."""

    def dsn(self, result: str) -> None:
        """Ignored."""

    def dead_lettered(self, reason: str) -> None:
        """Ignored."""

    def possible_duplicate(self, count: int) -> None:
        """Ignored."""

    def sent(self, seconds: float, limiter_wait: float) -> None:
        """Ignored."""
