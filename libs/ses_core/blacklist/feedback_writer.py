"""Apply one parsed SES notification to a blacklist: the suppression policy, then the writes.

The Lambda (`blacklist_lambda.processor`), the CLI's replay and the relay's SNS endpoint all do
the same thing with a notification; it lives here once so that they cannot drift apart. Writes
and occurrence counts are idempotent per feedback id (the stores guarantee it), so a redelivered
notification is harmless. Everything not written (transient bounces, deliveries, other event
types, invalid recipient strings) is logged as one JSON object per line, so that log queries
(CloudWatch Logs Insights, jq) can find it. Errors are not caught here: the caller decides what
a failed write means (Lambda retry, SQS redelivery, an HTTP 5xx for SNS to retry).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ses_core.blacklist._model import BlacklistEvent
from ses_core.blacklist._ports import BlacklistWriter
from ses_core.feedback import (
    DEFAULT_POLICY,
    FeedbackRecord,
    NotificationKind,
    RecipientDecision,
    SuppressionDecision,
    SuppressionPolicy,
    decide_suppression,
)

#: Deliveries may name up to 50 recipients; the log line lists at most this many.
MAX_LOGGED_RECIPIENTS = 50


class FeedbackWriter:
    """Decides and writes what one notification means for the blacklist.

    `logger` is where the JSON lines go: each service passes its own so that its log
    configuration (and the CLI's silencing) applies.
    """

    def __init__(
        self,
        blacklist: BlacklistWriter,
        *,
        policy: SuppressionPolicy = DEFAULT_POLICY,
        logger: logging.Logger | None = None,
    ) -> None:
        self._blacklist = blacklist
        self._policy = policy
        self._log = logger or logging.getLogger(__name__)

    def decide(self, record: FeedbackRecord) -> SuppressionDecision | None:
        """The policy's decision for the record's notification; None for SNS control messages."""
        if record.notification is None:
            return None
        return decide_suppression(record.notification, self._policy)

    def apply(self, record: FeedbackRecord, message_id: str) -> None:
        """Log, decide and write one record (a control message is only logged)."""
        decision = self.decide(record)
        if decision is None:
            self.log_json(
                logging.INFO,
                "sns_control_message",
                message_id=message_id,
                sns_type=record.envelope.sns_type,
            )
            return
        self.log_unwritten(record, decision, message_id)
        self.write(record, decision, message_id)

    def write(self, record: FeedbackRecord, decision: SuppressionDecision, message_id: str) -> None:
        """Blacklist the decided recipients and count the count-dependent ones."""
        ses_message_id = _ses_message_id(record)
        for decided in decision.to_blacklist:
            entry = self._blacklist.record(_event(decided))
            self.log_json(
                logging.INFO,
                "blacklisted",
                message_id=message_id,
                ses_message_id=ses_message_id,
                address=entry.address,
                reason=str(decided.reason),
                detail=decided.detail,
                feedback_id=decided.feedback_id,
                count=entry.count,
            )
        for decided in decision.count_dependent:
            self._count(decided, message_id, ses_message_id)

    def _count(
        self, decided: RecipientDecision, message_id: str, ses_message_id: str | None
    ) -> None:
        """Count one COUNT_DEPENDENT recipient's bounce; the store blacklists at the threshold."""
        threshold = decided.threshold
        if threshold is None:
            # decide_suppression always sets it for COUNT_DEPENDENT; failing loudly (alert,
            # retry) beats guessing a threshold.
            message = f"count-dependent decision for {decided.address.key} has no threshold"
            raise ValueError(message)
        result = self._blacklist.record_occurrence(_event(decided), threshold=threshold)
        fields: dict[str, Any] = {
            "message_id": message_id,
            "ses_message_id": ses_message_id,
            "address": result.address,
            "reason": str(decided.reason),
            "detail": decided.detail,
            "feedback_id": decided.feedback_id,
            "occurrences": result.count,
            "threshold": threshold,
            "duplicate": result.duplicate,
        }
        if result.entry is None:
            self.log_json(logging.INFO, "occurrence_counted", **fields)
        else:
            self.log_json(logging.INFO, "blacklisted", count=result.entry.count, **fields)

    def log_unwritten(
        self, record: FeedbackRecord, decision: SuppressionDecision, message_id: str
    ) -> None:
        """Log each recipient not blacklisted, each invalid one, and non-bounce notifications."""
        notification = record.notification
        assert notification is not None
        ses_message_id = _ses_message_id(record)
        for decided in decision.not_blacklisted:
            self.log_json(
                logging.INFO,
                "not_blacklisted",
                message_id=message_id,
                ses_message_id=ses_message_id,
                address=decided.address.key,
                reason=str(decided.reason),
                detail=decided.detail,
                feedback_id=decided.feedback_id,
                verdict=str(decided.verdict),
            )
        for invalid in decision.invalid_recipients:
            self.log_json(
                logging.WARNING,
                "invalid_recipient",
                message_id=message_id,
                ses_message_id=ses_message_id,
                recipient=invalid.text[:320],
                error=invalid.error,
                path=invalid.path,
            )
        if notification.kind in (NotificationKind.BOUNCE, NotificationKind.COMPLAINT):
            return
        fields: dict[str, Any] = {"kind": notification.type_name[:100]}
        if notification.delivery is not None:
            recipients = notification.delivery.recipients
            fields["recipients"] = [address.key for address in recipients[:MAX_LOGGED_RECIPIENTS]]
            fields["smtp_response"] = notification.delivery.smtp_response
        self.log_json(
            logging.INFO,
            "not_written",
            message_id=message_id,
            ses_message_id=ses_message_id,
            **fields,
        )

    def log_json(self, level: int, event: str, **fields: Any) -> None:
        """Log one structured line: a JSON object with `event` and the given fields."""
        if self._log.isEnabledFor(level):
            document = {"event": event, **fields}
            text = json.dumps(document, default=str, ensure_ascii=False, sort_keys=True)
            self._log.log(level, "%s", text)


def _ses_message_id(record: FeedbackRecord) -> str | None:
    notification = record.notification
    if notification is None or notification.mail is None:
        return None
    return notification.mail.message_id


def _event(decided: RecipientDecision) -> BlacklistEvent:
    return BlacklistEvent(
        address=decided.address.key,
        reason=decided.reason,
        detail=decided.detail,
        feedback_id=decided.feedback_id,
        message_id=decided.message_id,
        timestamp=decided.timestamp,
    )
