"""The admin alert: one plain-text e-mail through SES when the Lambda cannot do its job.

When the blacklist table cannot be written, bounces and complaints are not blacklisted until the
cause is fixed (Lambda retries an SNS event twice, then parks it in the failed-invocation queue
for `blacklist-cli replay-failed`), so a human must learn which addresses and messages were
affected and why. The alert is best effort by design: failing to send it is logged with its own
traceback, and the caller still fails the invocation with the original error.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

log = logging.getLogger(__name__)

#: Tracebacks beyond this many failures are summarised, so a batch of ten identical DynamoDB
#: errors yields a readable mail rather than ten copies of the same stack.
MAX_TRACEBACKS = 3
#: Failures listed one by one; more are counted. SQS batches hold at most 10 000 records.
MAX_LISTED_FAILURES = 200


class SesSendEmailClient(Protocol):
    """The one call of boto3's `ses` client the alert needs."""

    def send_email(self, **kwargs: Any) -> Mapping[str, Any]:
        """SES v1 SendEmail; returns the response (with `MessageId`)."""
        ...


@attrs.frozen(eq=False)
class UnprocessedRecord:
    """One record the Lambda could not process for a reason other than its own content.

    Attributes:
        message_id: the SNS or SQS message id of the record.
        addresses: the recipients the record wanted blacklisted (may be empty).
        error: the exception, with its traceback.
        stage: what was being done: "write" (the blacklist), or "processing" (anything else).
        ses_message_id: SES's id of the mail the notification is about, if it was readable.
    """

    message_id: str
    addresses: tuple[str, ...]
    error: BaseException
    stage: str = "write"
    ses_message_id: str | None = None


@attrs.frozen
class AlertMessage:
    """A rendered alert.

    Attributes:
        subject: one line naming the function and what failed.
        body: addresses, message ids and tracebacks, as plain text.
    """

    subject: str
    body: str

    @classmethod
    def from_failures(
        cls,
        failures: Sequence[UnprocessedRecord],
        *,
        function_name: str,
        request_id: str,
        table: str,
    ) -> AlertMessage:
        """Render the failures of one invocation."""
        kinds = sorted({type(failure.error).__name__ for failure in failures})
        subject = (
            f"[{function_name}] {len(failures)} SES notification(s) not processed: "
            + ", ".join(kinds)
        )
        lines = [
            f"The Lambda function {function_name} (request {request_id}) could not process",
            f"{len(failures)} SES notification record(s); blacklist table: {table}.",
            "The invocation is reported as failed, so Lambda (SNS) or SQS will redeliver it.",
            "If the failure persists, the addresses below are NOT blacklisted yet; after its",
            "retries an SNS event waits in the stack's failed-invocation queue (14 days): fix",
            "the cause, then run blacklist-cli replay-failed --queue-url (the stack's",
            "FailedInvocationQueueUrl output).",
            "",
        ]
        for failure in failures[:MAX_LISTED_FAILURES]:
            addresses = ", ".join(failure.addresses) or "(none)"
            lines.append(f"- message id {failure.message_id}: {failure.stage} failed: {addresses}")
            if failure.ses_message_id:
                lines.append(f"  SES message id: {failure.ses_message_id}")
            lines.append(f"  error: {type(failure.error).__name__}: {failure.error}")
        if len(failures) > MAX_LISTED_FAILURES:
            lines.append(f"- ... and {len(failures) - MAX_LISTED_FAILURES} more")
        lines.append("")
        for failure in failures[:MAX_TRACEBACKS]:
            lines.append(f"Traceback for message id {failure.message_id}:")
            lines.append("".join(traceback.format_exception(failure.error)).rstrip())
            lines.append("")
        if len(failures) > MAX_TRACEBACKS:
            lines.append(f"({len(failures) - MAX_TRACEBACKS} further traceback(s) omitted.)")
        return cls(subject=subject[:200], body="\n".join(lines))


class AdminAlerter:
    """Sends alerts from one SES identity to a fixed list of recipients."""

    def __init__(
        self, client: SesSendEmailClient, *, sender: str, recipients: Sequence[str]
    ) -> None:
        self._client = client
        self._sender = sender
        self._recipients = list(recipients)

    def send(self, message: AlertMessage) -> bool:
        """Send the alert; return whether SES accepted it. Never raises for SES errors."""
        # botocore is always present where this runs (the Lambda runtime provides it); importing it
        # here keeps the handler's cold import free of it until an alert is actually needed.
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.send_email(
                Source=self._sender,
                Destination={"ToAddresses": self._recipients},
                Message={
                    "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": message.body, "Charset": "UTF-8"}},
                },
            )
        except (BotoCoreError, ClientError):
            # The alert is best effort: its failure is logged here and the caller goes on to fail
            # the invocation with the original error.
            log.exception("could not send the admin alert %r", message.subject)
            return False
        log.info("admin alert sent: %s (SES message id %s)", message.subject, response["MessageId"])
        return True
