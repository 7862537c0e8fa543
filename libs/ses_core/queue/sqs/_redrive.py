"""Redrive: move envelopes from the dead-letter queue back to the queue, due at once.

SQS has no "move this message": each envelope is received from the dead-letter queue, sent to
the queue, then deleted from the dead-letter queue (a failure in between leaves a copy in both,
never none). As `SpoolAdmin.requeue` does, FAILED recipients become PENDING again and ACCEPTED
ones stay accepted, so nobody who already has the message gets it again. Envelopes this version
cannot decode are left in the dead-letter queue for an operator and counted as skipped.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from ses_core.errors import SpoolCorrupt
from ses_core.queue._model import RecipientState
from ses_core.queue.sqs import _queues
from ses_core.queue.sqs._aws import AWS_ERRORS, unavailable
from ses_core.queue.sqs._envelope import decode, encode

log = logging.getLogger(__name__)

#: How long a received dead letter stays hidden while a redrive runs (skipped ones are made
#: visible again at the end, so one redrive never receives them twice).
_REDRIVE_VISIBILITY = 300


@attrs.frozen
class RedriveResult:
    """What one redrive did.

    Attributes:
        moved: envelopes sent back to the queue and deleted from the dead-letter queue.
        skipped: undecodable envelopes left in the dead-letter queue.
    """

    moved: int
    skipped: int


def redrive(
    client: Any,
    *,
    dead_letter_url: str,
    queue_url: str,
    limit: int,
    now: float,
    reset_failed: bool = True,
) -> RedriveResult:
    """Move up to `limit` envelopes (blocking); `SpoolUnavailable` if SQS fails (the ones moved
    so far stay moved)."""
    moved = 0
    skipped: list[str] = []
    try:
        while moved + len(skipped) < limit:
            batch = _queues.receive(
                client,
                dead_letter_url,
                limit=min(10, limit - moved - len(skipped)),
                wait_time=0,
                visibility_timeout=_REDRIVE_VISIBILITY,
            )
            if not batch:
                break
            for message in batch:
                try:
                    record = decode(message.body)
                except SpoolCorrupt as exc:
                    log.warning("dead letter left in place: %s", exc)
                    skipped.append(message.receipt)
                    continue
                envelope = record.envelope
                if reset_failed:
                    envelope = envelope.with_recipients(
                        attrs.evolve(r, state=RecipientState.PENDING)
                        if r.state is RecipientState.FAILED
                        else r
                        for r in envelope.recipients
                    )
                revived = attrs.evolve(
                    record, envelope=envelope, next_attempt_at=now, last_error="", dead_at=None
                )
                _queues.send(client, queue_url, encode(revived))
                _queues.delete(client, dead_letter_url, message.receipt)
                moved += 1
        for receipt in skipped:
            _queues.change_visibility(client, dead_letter_url, receipt, 0)
    except AWS_ERRORS as exc:
        raise unavailable("SQS", "redrive", exc) from None
    return RedriveResult(moved=moved, skipped=len(skipped))
