"""`SqsSpoolSettings`: where the shared spool lives and how it uses SQS, and its boto3 clients.

The limits come from SQS: a visibility timeout of at most 12 hours, a long poll of at most 20 s,
a message delay of at most 15 minutes (longer backoffs chain: see `SqsSpool.lease`).
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

#: SQS's longest DelaySeconds; a later due time is reached by re-publishing.
SQS_MAX_DELAY = 900


@attrs.frozen
class SqsSpoolSettings:
    """Where the queue and bodies are, and the timings of leases.

    Attributes:
        queue_url: the SQS standard queue of envelopes (needs a redrive policy to a DLQ).
        bucket: the S3 bucket of bodies.
        prefix: key prefix of bodies in the bucket (may be shared with other data: only
            objects under it, and of those only ones tagged pending, are ever swept).
        dead_letter_queue_url: where `dead_letter` sends envelopes; None: the queue's own
            redrive target, read from its RedrivePolicy on first use.
        visibility_timeout: seconds a received envelope stays hidden from other replicas; the
            spool extends it every `heartbeat_interval` while the message is leased, so it
            only bounds how late a crashed replica's messages come back.
        wait_time: long-poll seconds of one ReceiveMessage (0-20): short, so a stopping runner
            is not held up, yet an idle queue costs few requests.
        heartbeat_interval: seconds between visibility extensions of leased messages; None
            means a third of `visibility_timeout`.
        max_delay: the longest DelaySeconds used (SQS allows 900); lower only in tests.
        kms_key_id: encrypt bodies with this KMS key (SSE-KMS); None: SSE-S3 (AES256).
        threads: threads that run the blocking boto3 calls (and the HTTP connections kept).
        unavailable_cooldown: seconds `admission` answers "unavailable" after a failed put, so a
            down S3 or SQS costs one failed upload, not one per client.
    """

    queue_url: str = attrs.field(validator=v.min_len(1))
    bucket: str = attrs.field(validator=v.min_len(1))
    prefix: str = "ses-relay/"
    dead_letter_queue_url: str | None = None
    visibility_timeout: int = attrs.field(default=60, validator=[v.ge(1), v.le(43200)])
    wait_time: int = attrs.field(default=2, validator=[v.ge(0), v.le(20)])
    heartbeat_interval: float | None = None
    max_delay: int = attrs.field(default=SQS_MAX_DELAY, validator=[v.ge(1), v.le(SQS_MAX_DELAY)])
    kms_key_id: str | None = None
    threads: int = attrs.field(default=16, validator=v.ge(1))
    unavailable_cooldown: float = attrs.field(default=5.0, validator=v.ge(0))

    @property
    def heartbeat_every(self) -> float:
        """Seconds between visibility extensions."""
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return self.visibility_timeout / 3


def aws_clients(
    settings: SqsSpoolSettings,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    credentials: dict[str, str] | None = None,
) -> tuple[Any, Any]:
    """(sqs, s3) boto3 clients for `settings`: timeouts above the long poll, a connection per
    thread, botocore's standard retries (3 attempts) for throttling and 5xx. Credentials come
    from the default chain (instance or pod role) unless given (tests pass dummy ones)."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        connect_timeout=5,
        read_timeout=settings.wait_time + 10,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=settings.threads,
    )
    session = boto3.session.Session(**(credentials or {}))
    sqs = session.client("sqs", endpoint_url=endpoint_url, config=config)
    s3 = session.client("s3", endpoint_url=endpoint_url, config=config)
    return sqs, s3
