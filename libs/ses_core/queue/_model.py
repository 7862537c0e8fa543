"""The values the queue stores and hands out: envelopes, recipients with their own state, leases.

A queued message is its body (bytes, stored once) plus an envelope whose recipients each carry a
state. Delivery changes recipient states, never the body: a recipient ACCEPTED by SES is never
sent again, whatever happens to the others, which is what makes a retry after a partial
acceptance safe. Times that outlive the process (`received_at`, `next_attempt_at`) are wall-clock
seconds since the epoch, so they mean the same after a restart or on another replica.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs


class RecipientState(enum.Enum):
    """Where one recipient of a queued message stands.

    PENDING: still to deliver (new, or deferred and rescheduled).
    ACCEPTED: SES took it; never sent again.
    FAILED: a permanent refusal, expiry, suppression at delivery time, or an ambiguous loss seen
        twice; reported to the sender (DSN) or dead-lettered, never retried.
    """

    PENDING = "pending"
    ACCEPTED = "accepted"
    FAILED = "failed"


@attrs.frozen
class SpooledRecipient:
    """One envelope recipient and what happened to it so far.

    Attributes:
        address: the RCPT TO address as the client gave it.
        state: PENDING, ACCEPTED or FAILED.
        attempts: transactions that tried this recipient.
        code: the last reply code (the upstream's, or a local one), 0 before any attempt.
        text: the last reply text, or why the recipient FAILED (for the DSN and operators).
        ambiguous_resends: resends after a connection loss between the final '.' and SES's reply
            (SES may have delivered): one is allowed, and counted as a possible duplicate.
    """

    address: str
    state: RecipientState = RecipientState.PENDING
    attempts: int = 0
    code: int = 0
    text: str = ""
    ambiguous_resends: int = 0

    @property
    def pending(self) -> bool:
        """Still to deliver."""
        return self.state is RecipientState.PENDING


def _recipients(value: Iterable[SpooledRecipient | str]) -> tuple[SpooledRecipient, ...]:
    return tuple(r if isinstance(r, SpooledRecipient) else SpooledRecipient(r) for r in value)


@attrs.frozen
class QueuedEnvelope:
    """Everything but the body: who sent it, to whom, and how it must go on the wire.

    Attributes:
        sender: the MAIL FROM address as received; "" for the null sender (bounces, and the
            DSNs the queue makes itself), which is never sent a DSN.
        recipients: the envelope recipients with their state (strings become PENDING ones).
        received_at: when the 250 was given (epoch seconds); the queue lifetime counts from it.
        smtputf8: the message needs SMTPUTF8.
        eightbit: the body is 8-bit MIME.
        transaction_id: the relay's id of the accepting transaction (log correlation).
        size: the body's length in bytes.
    """

    sender: str
    recipients: tuple[SpooledRecipient, ...] = attrs.field(converter=_recipients)
    received_at: float
    smtputf8: bool = False
    eightbit: bool = False
    transaction_id: str = ""
    size: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.recipients:
            message = "a queued message needs at least one recipient"
            raise ValueError(message)

    @property
    def pending(self) -> tuple[SpooledRecipient, ...]:
        """The recipients still to deliver, in envelope order."""
        return tuple(r for r in self.recipients if r.pending)

    def with_recipients(self, recipients: Iterable[SpooledRecipient]) -> QueuedEnvelope:
        """This envelope with its recipients replaced (same order, same addresses)."""
        return attrs.evolve(self, recipients=tuple(recipients))


@attrs.frozen
class NewMessage:
    """A message to put in the queue: an envelope and its body.

    Attributes:
        envelope: sender, recipients (usually all PENDING) and wire flags.
        data: the RFC 5322 message, exactly as received.
        not_before: first due time (epoch seconds); None means at once (`received_at`). The
            direct mode uses it for recipients SES already deferred.
    """

    envelope: QueuedEnvelope
    data: bytes
    not_before: float | None = None


@attrs.frozen
class QueuedMessage:
    """A leased message: its envelope as stored and the delivery bookkeeping.

    Attributes:
        id: the queue's id of the message (stable for its life, shown to operators).
        envelope: sender, recipients with their states, and wire flags.
        attempts: delivery attempts so far (any recipient).
        next_attempt_at: when it was due (epoch seconds).
        last_error: why the last attempt did not finish it ("" before any).
        lease: the backend's handle on this lease (an SQS receipt handle, or nothing).
    """

    id: str
    envelope: QueuedEnvelope
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    lease: object = attrs.field(default=None, eq=False, repr=False)


class MessageState(enum.Enum):
    """Where a message is, for operators: waiting or being delivered, or set aside."""

    QUEUED = "queued"
    DEAD = "dead"


@attrs.frozen
class MessageSummary:
    """One line of `queue list`, and the whole of `queue show` with `envelope`.

    Attributes:
        id: the queue's id.
        state: QUEUED or DEAD (dead-letter).
        envelope: the envelope as stored.
        attempts: delivery attempts so far.
        next_attempt_at: when it is due (epoch seconds); for DEAD, when it was set aside.
        last_error: the last attempt's error, or why it was dead-lettered.
    """

    id: str
    state: MessageState
    envelope: QueuedEnvelope
    attempts: int
    next_attempt_at: float
    last_error: str


@attrs.frozen
class QueueFilter:
    """Which messages `list` shows; every field set must match.

    Attributes:
        state: QUEUED or DEAD; None for both.
        min_age: at least this many seconds since `received_at`.
        sender_domain: the envelope sender's domain (case-insensitive).
        limit: at most this many, oldest first.
    """

    state: MessageState | None = None
    min_age: float | None = None
    sender_domain: str | None = None
    limit: int = 100


@attrs.frozen
class SpoolStats:
    """Queue depth for metrics and `queue stats`.

    Attributes:
        messages: messages queued (dead-letters excluded).
        recipients: their PENDING recipients.
        oldest_received_at: `received_at` of the oldest queued message, None when empty.
        dead_letters: messages set aside in the dead-letter store.
        free_bytes: free space where the spool lives (None for a remote backend).
    """

    messages: int
    recipients: int
    oldest_received_at: float | None
    dead_letters: int
    free_bytes: int | None = None
