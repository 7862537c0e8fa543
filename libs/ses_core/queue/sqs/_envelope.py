"""The SQS message of a queued message: its envelope and delivery bookkeeping as JSON.

An SQS message cannot be changed in place, so the envelope travels whole: every settle with a
recipient still pending publishes a new message carrying the recipients' states (an ACCEPTED
recipient is never sent again, whatever replica receives the next copy) and deletes the old
one. The body never travels here: it stays in S3 under `key`. Field names are spelled out (SQS
bills per 64 KB chunk, so a few bytes buy nothing) and `v` is the schema version, so a relay
meeting a version it does not know says so instead of misreading it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from ses_core.errors import SpoolCorrupt
from ses_core.queue._model import QueuedEnvelope, RecipientState, SpooledRecipient

#: The schema version this module writes and reads.
SCHEMA_VERSION = 1


@attrs.frozen
class EnvelopeRecord:
    """One queued message as its SQS message says it.

    Attributes:
        id: the queue's id of the message (stable across re-publishes, shown to operators).
        key: the S3 key of the body.
        envelope: sender, recipients with their states, wire flags.
        attempts: delivery attempts so far.
        next_attempt_at: when it is due (epoch seconds); never handed out before.
        last_error: why the last attempt did not finish it, or why it was dead-lettered.
        dead_at: when it was dead-lettered (epoch seconds), None while queued.
    """

    id: str
    key: str
    envelope: QueuedEnvelope
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    dead_at: float | None = None


def encode(record: EnvelopeRecord) -> str:
    """The SQS message body of `record` (compact JSON, non-ASCII addresses kept as they are)."""
    envelope = record.envelope
    document: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": record.id,
        "key": record.key,
        "sender": envelope.sender,
        "recipients": [
            {
                "address": r.address,
                "state": r.state.value,
                "attempts": r.attempts,
                "code": r.code,
                "text": r.text,
                "ambiguous_resends": r.ambiguous_resends,
            }
            for r in envelope.recipients
        ],
        "received_at": envelope.received_at,
        "smtputf8": envelope.smtputf8,
        "eightbit": envelope.eightbit,
        "transaction_id": envelope.transaction_id,
        "size": envelope.size,
        "attempts": record.attempts,
        "next_attempt_at": record.next_attempt_at,
        "last_error": record.last_error,
    }
    if record.dead_at is not None:
        document["dead_at"] = record.dead_at
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def decode(text: str) -> EnvelopeRecord:
    """The record in an SQS message body; `SpoolCorrupt` (one line, saying what is wrong) for
    anything this version did not write: bad JSON, a missing or mistyped field, another
    schema version."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        message = f"envelope is not JSON ({exc})"
        raise SpoolCorrupt(message) from None
    if not isinstance(document, dict):
        raise SpoolCorrupt("envelope is not a JSON object")
    if document.get("v") != SCHEMA_VERSION:
        message = f"envelope schema version {document.get('v')!r} is not {SCHEMA_VERSION}"
        raise SpoolCorrupt(message)
    try:
        return _record(document)
    except (KeyError, TypeError, ValueError) as exc:
        message = f"envelope {document.get('id', '?')!r} is malformed ({type(exc).__name__}: {exc})"
        raise SpoolCorrupt(message) from None


def _record(document: dict[str, Any]) -> EnvelopeRecord:
    recipients = tuple(
        SpooledRecipient(
            address=_text(r["address"]),
            state=RecipientState(r["state"]),
            attempts=_count(r["attempts"]),
            code=_count(r["code"]),
            text=_text(r["text"]),
            ambiguous_resends=_count(r["ambiguous_resends"]),
        )
        for r in document["recipients"]
    )
    envelope = QueuedEnvelope(
        sender=_text(document["sender"]),
        recipients=recipients,
        received_at=_time(document["received_at"]),
        smtputf8=_flag(document["smtputf8"]),
        eightbit=_flag(document["eightbit"]),
        transaction_id=_text(document["transaction_id"]),
        size=_count(document["size"]),
    )
    dead_at = document.get("dead_at")
    return EnvelopeRecord(
        id=_text(document["id"]),
        key=_text(document["key"]),
        envelope=envelope,
        attempts=_count(document["attempts"]),
        next_attempt_at=_time(document["next_attempt_at"]),
        last_error=_text(document["last_error"]),
        dead_at=None if dead_at is None else _time(dead_at),
    )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected epoch seconds, got {value!r}")
    return float(value)
