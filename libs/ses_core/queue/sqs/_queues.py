"""The SQS side of the spool: the envelope queue, its dead-letter queue, and their depths.

Blocking (boto3): the spool calls these from its thread pool, the admin class directly.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

#: The message attribute that says why an envelope was dead-lettered.
REASON_ATTRIBUTE = "reason"

_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@attrs.frozen
class Received:
    """One received SQS message: its body and receipt handle."""

    body: str
    receipt: str


def send(client: Any, queue_url: str, body: str, *, delay: int = 0, reason: str = "") -> None:
    """SendMessage with `delay` seconds (0-900) and, for dead letters, a `reason` attribute."""
    extra: dict[str, Any] = {}
    if reason:
        value = {"DataType": "String", "StringValue": reason[:1000]}
        extra["MessageAttributes"] = {REASON_ATTRIBUTE: value}
    client.send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay, **extra)


def receive(
    client: Any, queue_url: str, *, limit: int, wait_time: int, visibility_timeout: int
) -> list[Received]:
    """Up to `limit` (<= 10) messages, hidden from other receivers for `visibility_timeout`."""
    response = client.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max(1, min(limit, 10)),
        WaitTimeSeconds=wait_time,
        VisibilityTimeout=visibility_timeout,
    )
    return [Received(m["Body"], m["ReceiptHandle"]) for m in response.get("Messages", ())]


def delete(client: Any, queue_url: str, receipt: str) -> None:
    """DeleteMessage."""
    client.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt)


def change_visibility(client: Any, queue_url: str, receipt: str, timeout: int) -> None:
    """ChangeMessageVisibility: hide for `timeout` more seconds (0: visible at once)."""
    client.change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=timeout
    )


def extend_all(client: Any, queue_url: str, receipts: list[str], timeout: int) -> int:
    """ChangeMessageVisibilityBatch over `receipts` (10 per call); how many SQS refused (a
    message settled meanwhile, or a stale handle)."""
    refused = 0
    for start in range(0, len(receipts), 10):
        entries = [
            {"Id": str(n), "ReceiptHandle": receipt, "VisibilityTimeout": timeout}
            for n, receipt in enumerate(receipts[start : start + 10])
        ]
        response = client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        refused += len(response.get("Failed", ()))
    return refused


def depth(client: Any, queue_url: str) -> int:
    """Messages in the queue, visible, in flight and delayed (approximate, as SQS counts)."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES)
    )["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in _DEPTH_ATTRIBUTES)


def dead_letter_queue_url(client: Any, queue_url: str) -> str | None:
    """The URL of the queue's redrive target (from its RedrivePolicy), None without one."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
    ).get("Attributes", {})
    policy = attributes.get("RedrivePolicy")
    if not policy:
        return None
    arn = str(json.loads(policy)["deadLetterTargetArn"])
    *_, account, name = arn.split(":")
    url: str = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return url
