"""The handler's way into the spool: queue mode's DATA, and direct mode's deferred recipients.

Queue mode (RELAY_DELIVERY=queue): DATA puts the message into the spool and the client gets
`250 2.0.0 Ok: queued as <id>` only once `put` has returned, that is once the message and its
envelope are durable; the delivery workers are then woken. A spool that cannot take it answers
`452 4.3.1 Insufficient system storage` (disk below RELAY_SPOOL_MIN_FREE, RELAY_QUEUE_MAX_MESSAGES
reached, ENOSPC) or `451 4.3.0` (the spool's storage failed, or anything unexpected): the client
keeps the message and retries; never a 250 without the bytes, never a traceback. The same 452 is
given at MAIL and RCPT while the spool says it cannot accept (451 4.3.0 while the shared spool
is `unavailable` after a failed accept), so a client does not send a body that could not be
stored.

Direct mode (RELAY_DELIVERY=direct): after a partial acceptance the client gets 250 (SMTP has one
reply per DATA), so the recipients SES still deferred are put into the spool with the message,
due after a short delay; those whose outcome is ambiguous (the connection was lost after the
final '.': SES may have them) are put with their one allowed resend already used, and counted as
possible duplicates. Only if that put fails are they logged as undelivered, as before the queue.
"""

from __future__ import annotations

import logging
import time

from aiosmtpd.smtp import Envelope

from relay.metrics import RelayMetrics
from relay.wiring_queue import Delivery
from ses_core.errors import SpoolFull, SpoolUnavailable
from ses_core.queue import NewMessage, QueuedEnvelope, SpooledRecipient
from ses_core.smtp import RecipientResult

log = logging.getLogger(__name__)

#: MAIL/RCPT/DATA while the spool cannot take a message (RFC 3463: 4.3.1 mail system full).
STORAGE_FULL = "452 4.3.1 Insufficient system storage"
#: DATA when the spool's storage failed: nothing stored, the client retries.
QUEUE_UNAVAILABLE = "451 4.3.0 Queue temporarily unavailable, try again later"


def admission_reply(reason: str) -> str:
    """MAIL/RCPT's answer while the spool refuses for `reason`: 451 4.3.0 when its storage is
    unavailable (the shared spool just failed an accept), else 452 4.3.1 (disk or queue full)."""
    return QUEUE_UNAVAILABLE if reason == "unavailable" else STORAGE_FULL


def queued_envelope(
    envelope: Envelope,
    recipients: tuple[str, ...] | tuple[SpooledRecipient, ...],
    *,
    transaction_id: str,
    received_at: float,
) -> QueuedEnvelope:
    """The envelope as the spool keeps it: MAIL FROM as received ("" for `<>`: the null sender
    is mapped to RELAY_BOUNCE_FROM at delivery, and never sent a DSN)."""
    sender = envelope.mail_from or ""
    data = envelope.original_content or b""
    return QueuedEnvelope(
        sender="" if sender == "<>" else sender,
        recipients=recipients,
        received_at=received_at,
        smtputf8=bool(envelope.smtp_utf8),
        eightbit="BODY=8BITMIME" in envelope.mail_options,
        transaction_id=transaction_id,
        size=len(data),
    )


async def put_message(
    delivery: Delivery, metrics: RelayMetrics, message: NewMessage
) -> tuple[str | None, str, str | None]:
    """Put `message`; (queue id, "", None) once durable, else (None, the reply, the reason)."""
    try:
        queue_id = await delivery.spool.put(message)
    except SpoolFull as exc:
        metrics.queue.spool_refusals.labels(exc.reason).inc()
        log.warning("spool full (%s): message refused with 452: %s", exc.reason, exc)
        return None, STORAGE_FULL, exc.reason
    except SpoolUnavailable as exc:
        metrics.queue.spool_refusals.labels("unavailable").inc()
        log.error("spool unavailable: message refused with 451: %s", exc)
        return None, QUEUE_UNAVAILABLE, "spool_unavailable"
    except Exception as exc:  # noqa: BLE001 - never a traceback (nor a 250) to the client
        metrics.queue.spool_refusals.labels("unavailable").inc()
        metrics.errors.inc()
        log.error("unexpected error while spooling a message", exc_info=exc)
        return None, QUEUE_UNAVAILABLE, "spool_error"
    delivery.wake()
    return queue_id, "", None


async def spool_deferred(
    delivery: Delivery,
    metrics: RelayMetrics,
    envelope: Envelope,
    deferred: tuple[RecipientResult, ...],
    *,
    transaction_id: str,
) -> str | None:
    """Direct mode: put the recipients SES still deferred after a partial acceptance into the
    spool; their queue id, or None when the spool could not take them (the caller logs them)."""
    now = time.time()
    recipients = tuple(
        SpooledRecipient(
            r.recipient,
            attempts=1,
            code=r.code,
            text=r.text,
            ambiguous_resends=1 if r.ambiguous else 0,
        )
        for r in deferred
    )
    message = NewMessage(
        queued_envelope(envelope, recipients, transaction_id=transaction_id, received_at=now),
        envelope.original_content or b"",
        not_before=now + delivery.retry_delay,
    )
    queue_id, _, reason = await put_message(delivery, metrics, message)
    if queue_id is None:
        log.error(
            "transaction %s: deferred recipients could not be queued (%s)", transaction_id, reason
        )
        return None
    ambiguous = sum(1 for r in deferred if r.ambiguous)
    if ambiguous:
        metrics.queue.possible_duplicates.inc(ambiguous)
    metrics.recipients.labels("queued").inc(len(deferred))
    log.warning(
        "transaction %s: %d recipient(s) still deferred after partial acceptance, queued as %s"
        " for retry: %s",
        transaction_id,
        len(deferred),
        queue_id,
        ", ".join(f"{r.recipient} ({r.code})" for r in deferred),
    )
    return queue_id
