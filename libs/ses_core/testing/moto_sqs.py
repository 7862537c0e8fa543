"""moto helpers for the shared (SQS + S3) spool: its queue, dead-letter queue and bucket.

Tests and benchmarks run them against `MotoServer` (moto's HTTP server on 127.0.0.1), so the
spool's boto3 calls make real HTTP round trips from several threads, as on AWS. Every resource
name is unique per call, so tests can share one server without resetting it.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import attrs

from ses_core.queue import NewMessage, QueuedEnvelope, QueuedMessage, Spool
from ses_core.testing.moto_dynamodb import TEST_REGION

#: Dummy credentials for moto (never real ones).
DUMMY_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": TEST_REGION,
}

_names = itertools.count(1)


@attrs.frozen
class SpoolResources:
    """A queue with its dead-letter queue, and a bucket, as the template creates them.

    Attributes:
        queue_url: the envelope queue (RedrivePolicy to `dead_letter_queue_url`).
        dead_letter_queue_url: its dead-letter queue.
        bucket: the bodies' bucket.
        max_receive_count: receives before SQS moves an envelope to the dead-letter queue.
    """

    queue_url: str
    dead_letter_queue_url: str
    bucket: str
    max_receive_count: int


class SettableClock:
    """Wall-clock time plus an offset a test moves forward (SQS itself keeps real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def aws_client(service: str, endpoint_url: str, **config: Any) -> Any:
    """A boto3 client for moto with dummy credentials, short timeouts and no retries."""
    import boto3
    from botocore.config import Config

    settings = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=32,
        **config,
    )
    return boto3.client(service, endpoint_url=endpoint_url, config=settings, **DUMMY_CREDENTIALS)


def moto_environ(endpoint_url: str) -> dict[str, str]:
    """The environment that points boto3 (in this process or a child) at moto: endpoint, region,
    dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
    }


def create_spool_resources(
    endpoint_url: str,
    *,
    max_receive_count: int = 5,
    visibility_timeout: int = 30,
    redrive: bool = True,
) -> SpoolResources:
    """Create a fresh queue (14-day retention, like the template), its dead-letter queue with
    a redrive policy (unless `redrive` is false), and a bucket; names are unique."""
    sqs = aws_client("sqs", endpoint_url)
    s3 = aws_client("s3", endpoint_url)
    suffix = f"{os.getpid()}-{next(_names)}"
    dead = sqs.create_queue(
        QueueName=f"spool-dlq-{suffix}", Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = {
        "MessageRetentionPeriod": "1209600",
        "VisibilityTimeout": str(visibility_timeout),
    }
    if redrive:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dead_arn, "maxReceiveCount": max_receive_count}
        )
    queue = sqs.create_queue(QueueName=f"spool-{suffix}", Attributes=attributes)["QueueUrl"]
    bucket = f"spool-bodies-{suffix}"
    s3.create_bucket(Bucket=bucket)
    return SpoolResources(queue, dead, bucket, max_receive_count)


def queue_depth(endpoint_url: str, queue_url: str) -> int:
    """Visible + in-flight + delayed messages of a queue (what the spool's stats read)."""
    sqs = aws_client("sqs", endpoint_url)
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def object_keys(endpoint_url: str, bucket: str, prefix: str = "") -> list[str]:
    """The keys under `prefix` in `bucket`, sorted."""
    s3 = aws_client("s3", endpoint_url)
    response = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", ()))


def new_message(
    *recipients: str,
    data: bytes = b"Subject: hi\r\n\r\nhello\r\n",
    sender: str = "sender@example.com",
    received_at: float | None = None,
    not_before: float | None = None,
) -> NewMessage:
    """A `NewMessage` from `sender` to `recipients` (default one), received now."""
    envelope = QueuedEnvelope(
        sender=sender,
        recipients=recipients or ("rcpt@example.net",),
        received_at=time.time() if received_at is None else received_at,
        size=len(data),
    )
    return NewMessage(envelope, data, not_before=not_before)


async def lease_within(
    spool: Spool,
    count: int,
    *,
    timeout: float,
    now: Callable[[], float] | None = None,
    limit: int = 10,
) -> list[QueuedMessage]:
    """Lease until `count` messages came or `timeout` seconds passed (bounded: SQS may return
    fewer than there are); `now()` gives the `now` of each lease (default: wall clock)."""
    leased: list[QueuedMessage] = []
    deadline = time.monotonic() + timeout
    while len(leased) < count and time.monotonic() < deadline:
        moment = time.time() if now is None else now()
        leased.extend(await spool.lease(min(limit, count - len(leased)), moment))
    return leased


class CallFailures:
    """Makes a real boto3 client fail chosen operations as an unreachable endpoint would.

    The client stays real (moto answers every other call); a botocore `before-call` hook raises
    `EndpointConnectionError` for the operations in `failing`, which tests change at will:
    `failures.failing = {"SendMessage"}`, or `{"*"}` for every operation; `spare` lets that
    many matching calls through first.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.failing: set[str] = set()
        self.spare = 0
        self.failed = 0
        client.meta.events.register("before-call.*.*", self._before_call)

    def _before_call(self, model: Any, **_: Any) -> None:
        from botocore.exceptions import EndpointConnectionError

        if model.name in self.failing or "*" in self.failing:
            if self.spare > 0:
                self.spare -= 1
                return
            self.failed += 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/(broken-by-test)")
