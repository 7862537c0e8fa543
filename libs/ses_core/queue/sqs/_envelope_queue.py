"""The spool's asynchronous view of its two SQS queues: publish, receive, delete, hide, count.

Each method runs one blocking call on the spool's thread pool and turns a botocore failure into
`SpoolUnavailable`, so `SqsSpool` reads as the protocol it implements.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ses_core.errors import SpoolUnavailable
from ses_core.queue.sqs import _queues
from ses_core.queue.sqs._aws import Calls
from ses_core.queue.sqs._envelope import EnvelopeRecord, encode
from ses_core.queue.sqs._settings import SqsSpoolSettings


class EnvelopeQueue:
    """The envelope queue of `settings` and its dead-letter queue."""

    def __init__(
        self,
        calls: Calls,
        client: Any,
        settings: SqsSpoolSettings,
        clock: Callable[[], float],
    ) -> None:
        self._calls = calls
        self._client = client
        self._settings = settings
        self._url = settings.queue_url
        self._clock = clock
        self._dead_letter_url = settings.dead_letter_queue_url

    async def publish(self, record: EnvelopeRecord) -> None:
        """SendMessage of `record`, delayed until its due time as far as SQS allows."""
        remaining = record.next_attempt_at - self._clock()
        delay = max(0, min(self._settings.max_delay, math.ceil(remaining)))
        await self._calls.aws(
            "SQS",
            "SendMessage",
            _queues.send,
            client=self._client,
            queue_url=self._url,
            body=encode(record),
            delay=delay,
        )

    async def receive(self, limit: int) -> list[_queues.Received]:
        """Up to `limit` envelopes: one ReceiveMessage long-polling `wait_time`, then more (10
        each, not waiting) while the previous one came back full."""
        received: list[_queues.Received] = []
        wait_time = self._settings.wait_time
        while len(received) < limit:
            wanted = min(10, limit - len(received))
            try:
                batch = await self._calls.aws(
                    "SQS",
                    "ReceiveMessage",
                    _queues.receive,
                    client=self._client,
                    queue_url=self._url,
                    limit=wanted,
                    wait_time=wait_time,
                    visibility_timeout=self._settings.visibility_timeout,
                )
            except SpoolUnavailable:
                if not received:
                    raise
                break  # hand out what came; SQS is asked again at the next lease
            received.extend(batch)
            if len(batch) < wanted:
                break
            wait_time = 0
        return received

    async def delete(self, receipt: str) -> None:
        """DeleteMessage of a received envelope."""
        await self._calls.aws(
            "SQS",
            "DeleteMessage",
            _queues.delete,
            client=self._client,
            queue_url=self._url,
            receipt=receipt,
        )

    async def hide(self, receipt: str, timeout: int) -> None:
        """ChangeMessageVisibility: hidden `timeout` more seconds (0: visible at once)."""
        await self._calls.aws(
            "SQS",
            "ChangeMessageVisibility",
            _queues.change_visibility,
            client=self._client,
            queue_url=self._url,
            receipt=receipt,
            timeout=timeout,
        )

    async def send_dead_letter(self, body: str, reason: str) -> None:
        """SendMessage of `body` to the dead-letter queue with a `reason` attribute."""
        await self._calls.aws(
            "SQS",
            "SendMessage",
            _queues.send,
            client=self._client,
            queue_url=await self.dead_letter_url(),
            body=body,
            reason=reason,
        )

    async def depths(self) -> tuple[int, int]:
        """(queue, dead-letter queue) approximate depths."""
        depths = []
        for url in (self._url, await self.dead_letter_url()):
            depths.append(
                await self._calls.aws(
                    "SQS", "GetQueueAttributes", _queues.depth, client=self._client, queue_url=url
                )
            )
        return depths[0], depths[1]

    async def dead_letter_url(self) -> str:
        """The configured dead-letter queue, else the queue's redrive target (looked up once)."""
        if self._dead_letter_url is None:
            url = await self._calls.aws(
                "SQS",
                "GetQueueAttributes",
                _queues.dead_letter_queue_url,
                client=self._client,
                queue_url=self._url,
            )
            if url is None:
                message = "the SQS queue has no RedrivePolicy and no dead-letter queue was given"
                raise SpoolUnavailable(message)
            self._dead_letter_url = url
        return self._dead_letter_url
