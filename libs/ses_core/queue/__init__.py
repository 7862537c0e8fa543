"""The queue part of ses_core: a durable spool, so that an accepted message is never dropped.

A 250 from a queueing relay means the message is on durable storage: it will be delivered at the
SES rate, retried through SES hiccups, or reported to its sender (a DSN), never silently dropped.
This front door holds the values and ports (`Spool`, `SpoolAdmin`, `DeliveryEvents`) and the
in-memory backend. The backends with storage are imported from their modules:
`ses_core.queue.local` (SQLite on a local disk) and `ses_core.queue.sqs` (SQS + S3, shared by
replicas); delivery workers live in `ses_core.queue.delivery`.
"""

from ses_core.queue._model import (
    MessageState,
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
    QueuedMessage,
    QueueFilter,
    RecipientState,
    SpooledRecipient,
    SpoolStats,
)
from ses_core.queue._ports import DeliveryEvents, NoEvents, Spool, SpoolAdmin
from ses_core.queue.memory import MemorySpool

__all__ = [
    "DeliveryEvents",
    "MemorySpool",
    "MessageState",
    "MessageSummary",
    "NewMessage",
    "NoEvents",
    "QueueFilter",
    "QueuedEnvelope",
    "QueuedMessage",
    "RecipientState",
    "Spool",
    "SpoolAdmin",
    "SpoolStats",
    "SpooledRecipient",
]
