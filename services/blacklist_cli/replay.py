"""Replay the notifications the Lambda gave up on, from its failed-invocation queue.

SNS invokes the Lambda asynchronously; after Lambda's retries, the stack's on-failure destination
puts an invocation record in an SQS queue (`requestContext`, `requestPayload`,
`responseContext`, `responsePayload`), where `requestPayload` is the SNS event the function
failed on. A replay runs that event through the Lambda's own `NotificationProcessor` (same
parsing, same suppression policy, same writes) against the store the operator names, so it
blacklists exactly what the Lambda would have. Writes are idempotent per feedback id: a record
the Lambda half-wrote, or one replayed twice, counts once.

Rules:
- a message is deleted only after its event was processed without error;
- a message that cannot be read (not JSON, not an invocation record, an event with a malformed
  record) is reported and kept: replaying it can never succeed, a person must look at it;
- a message whose processing fails is reported and kept; when the store is unavailable the run
  stops there, since every later message would wait for the same timeouts and fail too;
- a received message stays hidden (`VISIBILITY_TIMEOUT`) while the run goes on, so a run never
  sees one twice; kept messages are made visible again at the end, so the queue's depth alarm
  keeps firing for them and the next run finds them at once;
- the run ends after `max_messages` messages or at the first empty receive;
- `dry_run` decides and reports, and writes and deletes nothing.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from blacklist_lambda.processor import NotificationProcessor
from ses_core.blacklist import BlacklistEntry, BlacklistEvent, BlacklistWriter, OccurrenceResult
from ses_core.errors import BlacklistUnavailable, MalformedNotification
from ses_core.feedback import RecordFailure, SuppressionPolicy, iter_feedback

log = logging.getLogger(__name__)

#: SQS hands out at most 10 messages per ReceiveMessage.
RECEIVE_BATCH = 10
#: Seconds a received message stays hidden: longer than one batch can take, even when each
#: write waits for the DynamoDB client's timeouts and retries.
VISIBILITY_TIMEOUT = 600
#: Reasons and errors are cut to this many characters in the report.
MAX_TEXT = 300

# sqs.<region>.amazonaws.com[.cn] and the legacy <region>.queue.amazonaws.com.
_QUEUE_HOST_RE = re.compile(
    r"^https?://(?:sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|([a-z0-9-]+)\.queue\.amazonaws\.com)/"
)


class QueueClient(Protocol):
    """The calls of boto3's `sqs` client a replay uses."""

    def receive_message(self, **kwargs: Any) -> Mapping[str, Any]:
        """SQS ReceiveMessage (up to 10 messages, hidden for `VisibilityTimeout`)."""
        ...

    def delete_message(self, **kwargs: Any) -> Mapping[str, Any]:
        """SQS DeleteMessage (by receipt handle)."""
        ...

    def change_message_visibility(self, **kwargs: Any) -> Mapping[str, Any]:
        """SQS ChangeMessageVisibility (0: visible again at once)."""
        ...


class UnreadableMessage(ValueError):
    """A queue message that is not an invocation record carrying a readable SES event."""


def queue_region(queue_url: str) -> str | None:
    """The region an SQS queue URL names, or None (a custom endpoint, e.g. moto's server)."""
    match = _QUEUE_HOST_RE.match(queue_url)
    return None if match is None else match.group(1) or match.group(2)


@attrs.frozen
class FailedInvocation:
    """One record Lambda's on-failure destination sent to the queue.

    Attributes:
        request_payload: the event the function failed on (the SNS event), replayed as is.
        condition: why Lambda gave up (`RetriesExhausted`, `EventAgeExceeded`), if given.
        error: the function's last error (`errorType: errorMessage`), if given.
    """

    request_payload: Mapping[str, Any]
    condition: str | None = None
    error: str | None = None

    @classmethod
    def from_body(cls, body: str) -> FailedInvocation:
        """Read an SQS message body; raise `UnreadableMessage` unless its event can be replayed."""
        try:
            record = json.loads(body)
        except ValueError as exc:
            message = f"body is not JSON ({exc})"
            raise UnreadableMessage(message) from None
        if not isinstance(record, dict):
            raise UnreadableMessage("body is not a JSON object")
        payload = record.get("requestPayload")
        if not isinstance(payload, dict):
            message = "no requestPayload object: not a Lambda on-failure destination record"
            raise UnreadableMessage(message)
        _check_payload(payload)
        context = record.get("requestContext")
        condition = context.get("condition") if isinstance(context, dict) else None
        response = record.get("responsePayload")
        error = None
        if isinstance(response, dict) and response.get("errorType"):
            error = f"{response['errorType']}: {response.get('errorMessage', '')}".strip()
        return cls(
            request_payload=payload,
            condition=str(condition)[:100] if condition else None,
            error=error[:MAX_TEXT] if error else None,
        )


def _check_payload(payload: Mapping[str, Any]) -> None:
    """Refuse an event the processor would log and skip: replaying it would only lose it."""
    try:
        items = list(iter_feedback(payload))
    except MalformedNotification as exc:
        message = f"requestPayload is not an SES feedback event ({exc})"
        raise UnreadableMessage(message) from None
    if not items:
        raise UnreadableMessage("requestPayload holds no SES notification")
    for item in items:
        if isinstance(item, RecordFailure):
            message = f"record {item.index} of requestPayload is malformed ({item.error})"
            raise UnreadableMessage(message)


class Status(enum.StrEnum):
    """What happened to one message."""

    REPLAYED = "replayed, deleted"
    REPLAYABLE = "replayable"  # dry run
    UNREADABLE = "kept, unreadable"
    FAILED = "kept, failed"
    NOT_ATTEMPTED = "kept, not attempted"  # the store had failed earlier in the run
    NOT_DELETED = "replayed, NOT deleted"


@attrs.frozen
class MessageOutcome:
    """One message's fate.

    Attributes:
        message_id: the SQS message id. status: what happened.
        detail: the blacklist changes (replayed), or why the message was kept.
    """

    message_id: str
    status: Status
    detail: str

    @property
    def kept(self) -> bool:
        """Whether the message is still in the queue (after a real, not a dry, run)."""
        return self.status not in (Status.REPLAYED, Status.REPLAYABLE)


@attrs.define
class ReplayReport:
    """What a run did.

    Attributes:
        dry_run: nothing was written or deleted.
        outcomes: one per message received, in order.
        store_error: the store failure that stopped the run, if one did.
    """

    dry_run: bool
    outcomes: list[MessageOutcome] = attrs.Factory(list)
    store_error: BlacklistUnavailable | None = None

    def count(self, *statuses: Status) -> int:
        """How many messages ended in one of `statuses`."""
        return sum(1 for outcome in self.outcomes if outcome.status in statuses)


class _ReportingWriter:
    """The processor's writer during a replay: forwards to the store (nowhere in a dry run) and
    notes each change, so the operator sees what the replay did."""

    def __init__(self, store: BlacklistWriter | None) -> None:
        self._store = store
        self.notes: list[str] = []

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        what = f"{event.address} ({event.reason}, {event.detail or '-'})"
        if self._store is None:
            self.notes.append(f"would blacklist {what}")
            return BlacklistEntry.from_event(event)
        entry = self._store.record(event)
        self.notes.append(f"blacklisted {what}")
        return entry

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        if self._store is None:
            self.notes.append(
                f"would count {event.address} ({event.detail or '-'}, blacklisted at {threshold})"
            )
            return OccurrenceResult(event.address, 0, threshold, duplicate=False, entry=None)
        result = self._store.record_occurrence(event, threshold=threshold)
        verb = "blacklisted" if result.blacklisted else "counted"
        self.notes.append(
            f"{verb} {result.address} ({event.detail or '-'}, {result.count} of {threshold})"
        )
        return result


def replay_failed(
    queue: QueueClient,
    queue_url: str,
    store: BlacklistWriter,
    *,
    policy: SuppressionPolicy,
    store_name: str,
    max_messages: int,
    wait_seconds: int = 5,
    dry_run: bool = False,
    on_outcome: Callable[[MessageOutcome], None] | None = None,
) -> ReplayReport:
    """Replay up to `max_messages` messages of the queue into `store`; see the module docstring.

    Queue errors (receive) propagate; the messages already handled keep their outcome.
    """
    report = ReplayReport(dry_run=dry_run)
    show_again: list[str] = []  # receipt handles of messages left in the queue
    try:
        while len(report.outcomes) < max_messages and report.store_error is None:
            response = queue.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(RECEIVE_BATCH, max_messages - len(report.outcomes)),
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=VISIBILITY_TIMEOUT,
            )
            messages = response.get("Messages") or []
            if not messages:
                break
            for message in messages:
                receipt = message["ReceiptHandle"]
                if report.store_error is None:
                    outcome = _replay_one(
                        message, queue, queue_url, store, policy, store_name, report
                    )
                else:
                    message_id = str(message.get("MessageId", "?"))
                    detail = "the blacklist store failed earlier in this run"
                    outcome = MessageOutcome(message_id, Status.NOT_ATTEMPTED, detail)
                if outcome.kept or dry_run:
                    show_again.append(receipt)
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    finally:
        _show_again(queue, queue_url, show_again)
    return report


def _replay_one(
    message: Mapping[str, Any],
    queue: QueueClient,
    queue_url: str,
    store: BlacklistWriter,
    policy: SuppressionPolicy,
    store_name: str,
    report: ReplayReport,
) -> MessageOutcome:
    message_id = str(message.get("MessageId", "?"))
    try:
        invocation = FailedInvocation.from_body(str(message.get("Body", "")))
    except UnreadableMessage as exc:
        return MessageOutcome(message_id, Status.UNREADABLE, str(exc)[:MAX_TEXT])
    writer = _ReportingWriter(None if report.dry_run else store)
    # No alerter: the operator running the replay is told directly.
    processor = NotificationProcessor(writer, None, table=store_name, policy=policy)
    try:
        result = processor(invocation.request_payload, None)
    except BlacklistUnavailable as exc:
        report.store_error = exc
        return MessageOutcome(message_id, Status.FAILED, _error_text(exc))
    except Exception as exc:  # noqa: BLE001 - reported, and the message is kept
        log.debug("replaying message %s failed", message_id, exc_info=True)
        return MessageOutcome(message_id, Status.FAILED, _error_text(exc))
    if isinstance(result, Mapping) and result.get("batchItemFailures"):
        # An SQS-shaped payload whose records failed: kept, like an SNS one that raised.
        return MessageOutcome(message_id, Status.FAILED, "some records were not processed")
    changes = "; ".join(writer.notes) or "no blacklist change"
    if report.dry_run:
        return MessageOutcome(message_id, Status.REPLAYABLE, changes)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        queue.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    except (BotoCoreError, ClientError) as exc:
        # Written but still queued: a later replay repeats it harmlessly (idempotent writes).
        detail = f"{changes}; delete failed: {_error_text(exc)}"
        return MessageOutcome(message_id, Status.NOT_DELETED, detail)
    return MessageOutcome(message_id, Status.REPLAYED, changes)


def _show_again(queue: QueueClient, queue_url: str, receipts: list[str]) -> None:
    """Make the messages left in the queue visible again (best effort: they reappear anyway
    when their visibility timeout ends)."""
    from botocore.exceptions import BotoCoreError, ClientError

    for receipt in receipts:
        try:
            queue.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=0
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("a kept message stays hidden for up to %d s: %s", VISIBILITY_TIMEOUT, exc)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_TEXT]
