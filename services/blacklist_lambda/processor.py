"""What the Lambda does with one event: parse, decide, write, log, and fail loudly when it must.

- A malformed record is logged with its message id and skipped: retrying it can never succeed.
- An infrastructure failure (`BlacklistUnavailable`), or any unexpected error, fails the record:
  the admin alert is sent, then an SNS-triggered invocation raises (Lambda retries it twice) and
  an SQS-triggered one lists the record in `batchItemFailures` (SQS redelivers just those).
  Swallowing the error instead would disable those retries.
- Once the store has failed in an invocation, later records that need a write fail at once
  instead of waiting for more timeouts; they are redelivered with the rest.
- After Lambda's retries an SNS event goes to the stack's failed-invocation queue (the on-failure
  destination); `blacklist-cli replay-failed` runs it through this same class later.
The per-record work (policy, writes, log lines) is `ses_core.blacklist.feedback_writer`, shared
with the relay's SNS endpoint. Writes and occurrence counts (`COUNT_DEPENDENT` bounces, from
`SOFT_BOUNCE_THRESHOLDS`) are idempotent per feedback id, so redeliveries are harmless.
Everything not written (transient bounces, deliveries, other event types, invalid recipient
strings) is logged as one JSON object per line, so CloudWatch Logs Insights can query it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from blacklist_lambda.alert import AdminAlerter, AlertMessage, UnprocessedRecord
from ses_core.blacklist import BlacklistWriter
from ses_core.blacklist.feedback_writer import MAX_LOGGED_RECIPIENTS, FeedbackWriter
from ses_core.errors import BlacklistUnavailable, MalformedNotification
from ses_core.feedback import (
    DEFAULT_POLICY,
    FeedbackRecord,
    RecordFailure,
    SuppressionPolicy,
    decide_suppression,
    iter_feedback,
)

__all__ = ["MAX_LOGGED_RECIPIENTS", "NotificationProcessor"]

log = logging.getLogger(__name__)


def _log_json(level: int, event: str, **fields: Any) -> None:
    """Log one structured line: a JSON object with `event` and the given fields."""
    if log.isEnabledFor(level):
        document = {"event": event, **fields}
        log.log(level, "%s", json.dumps(document, default=str, ensure_ascii=False, sort_keys=True))


class NotificationProcessor:
    """Handles Lambda events from SNS or SQS; see the module docstring for the semantics.

    Call it as the Lambda handler: `processor(event, context)`. Without an `alerter` failures
    are not mailed: the CLI's replay reports them to the operator running it.
    """

    def __init__(
        self,
        blacklist: BlacklistWriter,
        alerter: AdminAlerter | None,
        *,
        table: str,
        policy: SuppressionPolicy = DEFAULT_POLICY,
    ) -> None:
        self._writer = FeedbackWriter(blacklist, policy=policy, logger=log)
        self._policy = policy
        self._alerter = alerter
        self._table = table

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any] | None:
        """Process every record; SQS events get `batchItemFailures`, SNS ones raise on failure."""
        sqs = _is_sqs_event(event)
        failures: list[UnprocessedRecord] = []
        item_ids: list[str | None] = []  # SQS messageId of each failure, for batchItemFailures
        store_error: BlacklistUnavailable | None = None
        try:
            items = list(iter_feedback(event))
        except MalformedNotification as exc:
            # Not even a recognisable event: there is no record to retry or to report.
            _log_json(logging.ERROR, "malformed_event", error=str(exc), path=exc.path)
            return {"batchItemFailures": []} if sqs else None
        for item in items:
            if isinstance(item, RecordFailure):
                _log_json(
                    logging.ERROR,
                    "malformed_record",
                    message_id=item.sqs_message_id or item.sns_message_id,
                    index=item.index,
                    path=item.error.path,
                    error=item.error.reason,
                )
                continue
            failure, store_error = self._process(item, store_error)
            if failure is not None:
                failures.append(failure)
                item_ids.append(item.envelope.sqs_message_id)
        if failures:
            self._alert(failures, context)
        if not sqs:
            if failures:
                raise failures[0].error
            return None
        for failure, item_id in zip(failures, item_ids, strict=True):
            if not item_id:
                # A failed SQS record without a messageId cannot be listed: fail the whole batch.
                raise failure.error
        return {"batchItemFailures": [{"itemIdentifier": item_id} for item_id in item_ids]}

    def _process(
        self, record: FeedbackRecord, store_error: BlacklistUnavailable | None
    ) -> tuple[UnprocessedRecord | None, BlacklistUnavailable | None]:
        """Handle one parsed record; return (its failure or None, the store error so far)."""
        envelope = record.envelope
        message_id = envelope.sqs_message_id or envelope.sns_message_id or ""
        notification = record.notification
        if notification is None:
            self._writer.apply(record, message_id)  # an SNS control message: logged only
            return None, store_error
        ses_message_id = None if notification.mail is None else notification.mail.message_id
        decision = decide_suppression(notification, self._policy)
        writes = (*decision.to_blacklist, *decision.count_dependent)
        addresses = tuple(decided.address.key for decided in writes)
        try:
            self._writer.log_unwritten(record, decision, message_id)
            if writes and store_error is not None:
                error = BlacklistUnavailable(
                    f"not attempted: the store failed earlier ({store_error})"
                )
                raise error from store_error
            self._writer.write(record, decision, message_id)
        except BlacklistUnavailable as exc:
            log.error(
                "blacklist write failed for message %s (%s)",
                message_id,
                ", ".join(addresses),
                exc_info=True,
            )
            failure = UnprocessedRecord(message_id, addresses, exc, "write", ses_message_id)
            return failure, store_error or exc
        except Exception as exc:  # noqa: BLE001
            # A bug or an unforeseen value: never report success for this record. It is logged
            # with its traceback here, alerted, and the invocation fails with it (raised for SNS,
            # listed in batchItemFailures for SQS).
            log.exception("unexpected error processing message %s", message_id)
            failure = UnprocessedRecord(message_id, addresses, exc, "processing", ses_message_id)
            return failure, store_error
        return None, store_error

    def _alert(self, failures: Sequence[UnprocessedRecord], context: Any) -> None:
        if self._alerter is None:
            return
        try:
            message = AlertMessage.from_failures(
                failures,
                function_name=str(getattr(context, "function_name", "blacklist-lambda")),
                request_id=str(getattr(context, "aws_request_id", "unknown")),
                table=self._table,
            )
            self._alerter.send(message)
        except Exception:  # noqa: BLE001
            # The alert must never hide the original error: this one is logged with its
            # traceback, and the caller fails the invocation with the original failures next.
            log.exception("could not build or send the admin alert")


def _is_sqs_event(event: Mapping[str, Any]) -> bool:
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list) or not records:
        return False
    return any(
        isinstance(record, Mapping) and record.get("eventSource") == "aws:sqs" for record in records
    )
