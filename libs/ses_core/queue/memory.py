"""`MemorySpool`: the queue ports kept in a dict, for tests and tools.

It keeps the whole contract but durability: leases, oldest-due-first order, settle with notices,
dead letters, operator actions and counters. Delivery is tested against it and against the real
backends alike, so it ships with the library, not inside a test file.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import attrs

from ses_core.errors import SpoolCorrupt, SpoolFull, SpoolUnavailable
from ses_core.queue._model import (
    MessageState,
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
    QueuedMessage,
    QueueFilter,
    RecipientState,
    SpoolStats,
)


@attrs.define
class _Stored:
    id: str
    envelope: QueuedEnvelope
    data: bytes
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    state: MessageState = MessageState.QUEUED
    leased: bool = False

    def summary(self) -> MessageSummary:
        return MessageSummary(
            self.id, self.state, self.envelope, self.attempts, self.next_attempt_at, self.last_error
        )


def _domain(sender: str) -> str:
    return sender.rpartition("@")[2].lower()


class MemorySpool:
    """A `Spool` and `SpoolAdmin` in memory; `max_messages` makes `admission`/`put` say full."""

    def __init__(
        self, *, max_messages: int | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._messages: dict[str, _Stored] = {}
        self._ids = itertools.count(1)
        self._max = max_messages
        self._clock = clock
        self._closed = False
        #: Bodies that `body` reports as corrupt (ids), to test that path.
        self.corrupt: set[str] = set()

    # --- Spool ---------------------------------------------------------------------------------

    def admission(self) -> str | None:
        """ "queue_full" at `max_messages` queued, else None."""
        if self._max is not None and self._queued_count() >= self._max:
            return "queue_full"
        return None

    async def put(self, message: NewMessage) -> str:
        """Store `message`; `SpoolFull` at the cap, `SpoolUnavailable` once closed."""
        if self._closed:
            raise SpoolUnavailable("the spool is closed")
        if self.admission() is not None:
            raise SpoolFull("the queue holds its maximum number of messages", "queue_full")
        return self._store(message)

    def _store(self, message: NewMessage) -> str:
        message_id = f"m{next(self._ids):08d}"
        self._messages[message_id] = _Stored(
            message_id,
            message.envelope,
            message.data,
            next_attempt_at=(
                message.not_before
                if message.not_before is not None
                else message.envelope.received_at
            ),
        )
        return message_id

    async def lease(self, limit: int, now: float) -> tuple[QueuedMessage, ...]:
        """Due, unleased, queued messages, oldest due first."""
        due = sorted(
            (
                m
                for m in self._messages.values()
                if m.state is MessageState.QUEUED and not m.leased and m.next_attempt_at <= now
            ),
            key=lambda m: (m.next_attempt_at, m.id),
        )[:limit]
        for stored in due:
            stored.leased = True
        return tuple(
            QueuedMessage(m.id, m.envelope, m.attempts, m.next_attempt_at, m.last_error)
            for m in due
        )

    async def body(self, message: QueuedMessage) -> bytes:
        """The stored bytes; `SpoolCorrupt` for ids in `corrupt`."""
        if message.id in self.corrupt:
            raise SpoolCorrupt(f"message {message.id}: body checksum mismatch")
        return self._messages[message.id].data

    async def heartbeat(self, message: QueuedMessage) -> None:
        """Nothing to extend in memory."""

    async def settle(
        self,
        message: QueuedMessage,
        envelope: QueuedEnvelope,
        *,
        next_attempt_at: float | None,
        last_error: str = "",
        notices: tuple[NewMessage, ...] = (),
    ) -> None:
        """Store the attempt's outcome and the notices; remove when nothing is pending."""
        stored = self._messages.get(message.id)
        for notice in notices:
            self._store(notice)
        if stored is None:  # deleted by an operator while it was being delivered
            return
        if not envelope.pending:
            del self._messages[message.id]
            return
        if next_attempt_at is None:
            raise ValueError("next_attempt_at is required while recipients are pending")
        stored.envelope = envelope
        stored.attempts += 1
        stored.next_attempt_at = next_attempt_at
        stored.last_error = last_error
        stored.leased = False

    async def dead_letter(
        self, message: QueuedMessage, envelope: QueuedEnvelope, reason: str
    ) -> None:
        """Set the message aside."""
        stored = self._messages.get(message.id)
        if stored is None:
            return
        stored.envelope = envelope
        stored.state = MessageState.DEAD
        stored.last_error = reason
        stored.next_attempt_at = self._clock()
        stored.leased = False

    async def release(self, message: QueuedMessage) -> None:
        """Unlease; due as it was."""
        stored = self._messages.get(message.id)
        if stored is not None:
            stored.leased = False

    async def next_due(self) -> float | None:
        """The earliest due time among unleased queued messages."""
        times = [
            m.next_attempt_at
            for m in self._messages.values()
            if m.state is MessageState.QUEUED and not m.leased
        ]
        return min(times, default=None)

    async def stats(self) -> SpoolStats:
        """Counts by scanning (fine for tests)."""
        return self.summary()

    async def aclose(self) -> None:
        """Refuse further puts."""
        self._closed = True

    # --- SpoolAdmin ----------------------------------------------------------------------------

    def list(self, where: QueueFilter) -> tuple[MessageSummary, ...]:
        """Matching messages, oldest first."""
        now = self._clock()
        found = []
        for stored in sorted(self._messages.values(), key=lambda m: m.envelope.received_at):
            if where.state is not None and stored.state is not where.state:
                continue
            if where.min_age is not None and now - stored.envelope.received_at < where.min_age:
                continue
            if where.sender_domain is not None and _domain(stored.envelope.sender) != (
                where.sender_domain.lower()
            ):
                continue
            found.append(stored.summary())
            if len(found) >= where.limit:
                break
        return tuple(found)

    def show(self, message_id: str) -> MessageSummary | None:
        """One message or None."""
        stored = self._messages.get(message_id)
        return stored.summary() if stored is not None else None

    def retry_now(self, message_id: str) -> bool:
        """Due now."""
        stored = self._messages.get(message_id)
        if stored is None or stored.state is not MessageState.QUEUED:
            return False
        stored.next_attempt_at = self._clock()
        return True

    def delete(self, message_id: str) -> bool:
        """Gone."""
        return self._messages.pop(message_id, None) is not None

    def requeue(self, message_id: str) -> bool:
        """Dead -> queued, FAILED recipients PENDING again, due now."""
        stored = self._messages.get(message_id)
        if stored is None or stored.state is not MessageState.DEAD:
            return False
        stored.envelope = stored.envelope.with_recipients(
            attrs.evolve(r, state=RecipientState.PENDING) if r.state is RecipientState.FAILED else r
            for r in stored.envelope.recipients
        )
        stored.state = MessageState.QUEUED
        stored.next_attempt_at = self._clock()
        return True

    def summary(self) -> SpoolStats:
        """Counts by scanning."""
        queued = [m for m in self._messages.values() if m.state is MessageState.QUEUED]
        return SpoolStats(
            messages=len(queued),
            recipients=sum(len(m.envelope.pending) for m in queued),
            oldest_received_at=min((m.envelope.received_at for m in queued), default=None),
            dead_letters=len(self._messages) - len(queued),
        )

    def _queued_count(self) -> int:
        return sum(1 for m in self._messages.values() if m.state is MessageState.QUEUED)
