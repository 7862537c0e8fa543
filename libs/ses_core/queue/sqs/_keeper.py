"""Keeps the leases of one spool alive: every leased envelope's visibility is extended in the
background, so delivery need not call `heartbeat` (it may; that extends one at once).

Why inside the spool: a delivery blocked in a slow SES transaction or a rate-limiter wait
cannot heartbeat, and an envelope whose visibility lapses is received by another replica and
delivered twice. The keeper runs as long as the process does, so a replica that dies stops
extending and its envelopes come back after one visibility timeout: the crash semantics of the
`Spool` contract. Extensions go ten per ChangeMessageVisibilityBatch call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ses_core.queue.sqs import _queues
from ses_core.queue.sqs._aws import AWS_ERRORS, Calls, describe

log = logging.getLogger(__name__)


class LeaseKeeper:
    """The receipt handles of leased envelopes, extended every `interval` seconds."""

    def __init__(
        self, calls: Calls, client: Any, queue_url: str, *, timeout: int, interval: float
    ) -> None:
        self._calls = calls
        self._client = client
        self._queue_url = queue_url
        self._timeout = timeout
        self._interval = interval
        self._receipts: dict[str, str] = {}
        self._round = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: Extensions SQS refused or that failed (for tests and logs).
        self.failures = 0

    @property
    def leased(self) -> dict[str, str]:
        """Receipt handles by message id (a copy)."""
        return dict(self._receipts)

    def track(self, message_id: str, receipt: str) -> None:
        """Keep `receipt` alive until `forget`; starts the background task if needed."""
        self._receipts[message_id] = receipt
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="sqs-spool-lease-keeper"
            )

    def forget(self, message_id: str) -> None:
        """Stop extending a lease (settled or dead-lettered: its envelope is gone)."""
        self._receipts.pop(message_id, None)

    async def forget_before_release(self, message_id: str) -> None:
        """Stop extending a lease about to be released, and wait for an extension round in
        flight, so that it cannot hide the message again right after the release."""
        self._receipts.pop(message_id, None)
        async with self._round:
            pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            async with self._round:
                receipts = list(self._receipts.values())
                if not receipts:
                    continue
                try:
                    refused = await self._calls.run(
                        _queues.extend_all,
                        client=self._client,
                        queue_url=self._queue_url,
                        receipts=receipts,
                        timeout=self._timeout,
                    )
                except AWS_ERRORS as exc:
                    self.failures += len(receipts)
                    log.warning(
                        "could not extend %d SQS leases (may be delivered twice): %s",
                        len(receipts),
                        describe(exc),
                    )
                    continue
                self.failures += refused

    async def aclose(self) -> None:
        """Stop extending (the leases lapse after their visibility timeout)."""
        if self._task is not None:
            async with self._round:  # let an extension in flight land first
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
