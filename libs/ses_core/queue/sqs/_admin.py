"""`SqsQueueAdmin`: what the `queue` command can do to the shared spool, as far as SQS allows.

Not a `SpoolAdmin`: SQS cannot be searched or listed without receiving, and a receive raises each
message's receive count towards the redrive policy's maxReceiveCount (listing the queue a few
times would push healthy messages into the dead-letter queue). So there is no `list`, `show`,
`retry_now` or `delete`; there are the approximate counts, redrive from the dead-letter queue,
and the orphan-body sweep. Synchronous, like a CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ses_core.errors import SpoolUnavailable
from ses_core.queue._model import SpoolStats
from ses_core.queue.sqs import _queues
from ses_core.queue.sqs._aws import AWS_ERRORS, unavailable
from ses_core.queue.sqs._bodies import BodyStore
from ses_core.queue.sqs._redrive import RedriveResult, redrive
from ses_core.queue.sqs._settings import SqsSpoolSettings, aws_clients
from ses_core.queue.sqs._sweeper import DEFAULT_ORPHAN_AGE, SweepResult, sweep_orphan_bodies


class SqsQueueAdmin:
    """Operator actions on the queue and bucket of `settings` (the relay's own settings)."""

    def __init__(
        self,
        sqs_client: Any,
        s3_client: Any,
        settings: SqsSpoolSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._sqs = sqs_client
        self._bodies = BodyStore(s3_client, settings.bucket, settings.prefix)
        self._clock = clock
        self._dead_letter_url = settings.dead_letter_queue_url

    @classmethod
    def from_config(
        cls,
        *,
        queue_url: str,
        bucket: str,
        prefix: str = "ses-relay/",
        region: str | None = None,
        endpoint_url: str | None = None,
        credentials: dict[str, str] | None = None,
        **options: Any,
    ) -> SqsQueueAdmin:
        """An admin with its own boto3 clients (as `SqsSpool.from_config`)."""
        settings = SqsSpoolSettings(queue_url=queue_url, bucket=bucket, prefix=prefix, **options)
        sqs, s3 = aws_clients(
            settings, region=region, endpoint_url=endpoint_url, credentials=credentials
        )
        return cls(sqs, s3, settings)

    def dead_letter_queue_url(self) -> str:
        """The dead-letter queue: the configured one, else the queue's redrive target."""
        if self._dead_letter_url is None:
            try:
                url = _queues.dead_letter_queue_url(self._sqs, self.settings.queue_url)
            except AWS_ERRORS as exc:
                raise unavailable("SQS", "GetQueueAttributes", exc) from None
            if url is None:
                message = "the SQS queue has no RedrivePolicy and no dead-letter queue was given"
                raise SpoolUnavailable(message)
            self._dead_letter_url = url
        return self._dead_letter_url

    def summary(self) -> SpoolStats:
        """Approximate depths: `messages` (= `recipients`, a lower bound) is the queue's visible,
        in-flight and delayed count, `dead_letters` the dead-letter queue's;
        `oldest_received_at` is None (SQS does not say; CloudWatch's
        ApproximateAgeOfOldestMessage does)."""
        dead_letter_url = self.dead_letter_queue_url()
        try:
            messages = _queues.depth(self._sqs, self.settings.queue_url)
            dead = _queues.depth(self._sqs, dead_letter_url)
        except AWS_ERRORS as exc:
            raise unavailable("SQS", "GetQueueAttributes", exc) from None
        return SpoolStats(
            messages=messages, recipients=messages, oldest_received_at=None, dead_letters=dead
        )

    def redrive(self, limit: int = 100, *, reset_failed: bool = True) -> RedriveResult:
        """Move up to `limit` dead letters back to the queue, due at once, their FAILED
        recipients PENDING again unless `reset_failed` is false (see `_redrive`)."""
        return redrive(
            self._sqs,
            dead_letter_url=self.dead_letter_queue_url(),
            queue_url=self.settings.queue_url,
            limit=limit,
            now=self._clock(),
            reset_failed=reset_failed,
        )

    def sweep_orphan_bodies(self, older_than: float = DEFAULT_ORPHAN_AGE) -> SweepResult:
        """Delete bodies older than `older_than` seconds whose envelope never reached SQS."""
        return sweep_orphan_bodies(self._bodies, older_than=older_than, now=self._clock())
