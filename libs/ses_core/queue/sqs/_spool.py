"""`SqsSpool`: the `Spool` port on SQS (envelopes) and S3 (bodies), shared by every replica.

Accept: the body goes to S3 (encrypted, tagged pending), then the envelope to SQS with
DelaySeconds for `not_before`; `put` returns only when both succeeded, then commits the body
(removes the tag). Either write failing is `SpoolUnavailable` with nothing queued (a body
written before a failed send is deleted at once, or later by the sweeper).

Delivery: `lease` receives (a short long-poll); the lease is the receipt handle, kept alive by
a background `LeaseKeeper` (so delivery need not call `heartbeat`). SQS cannot change a
message, so `settle` with recipients still pending publishes the updated envelope (delayed until
`next_attempt_at`, at most 15 minutes) and deletes the old one; an envelope received before
its `next_attempt_at` (a backoff longer than 15 minutes) is re-published with the remaining
delay, never handed out early.
`settle` with nothing pending queues the DSNs first, then deletes the envelope and the body.

SQS standard queues deliver at least once: a message can (rarely) be received twice, and a
failure between a re-publish and the delete of the old envelope leaves two copies. Delivery is
exactly once per recipient in the normal case only; the spool never hands out a message to two
replicas while its visibility holds. Messages are not ordered: "oldest due first" holds within
one received batch only.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from ses_core.errors import SpoolCorrupt, SpoolUnavailable
from ses_core.queue._model import NewMessage, QueuedEnvelope, QueuedMessage, SpoolStats
from ses_core.queue.sqs._aws import AWS_ERRORS, Calls, describe, error_code, unavailable
from ses_core.queue.sqs._bodies import BodyStore
from ses_core.queue.sqs._envelope import EnvelopeRecord, decode, encode
from ses_core.queue.sqs._envelope_queue import EnvelopeQueue
from ses_core.queue.sqs._keeper import LeaseKeeper
from ses_core.queue.sqs._queues import Received
from ses_core.queue.sqs._settings import SqsSpoolSettings, aws_clients
from ses_core.queue.sqs._sweeper import DEFAULT_ORPHAN_AGE, SweepResult, sweep_orphan_bodies

log = logging.getLogger(__name__)


@attrs.define
class _Lease:
    """An SQS lease: the receipt handle, the envelope as received, and what a failed `settle`
    already wrote (notices queued, the successor published), so its retry does not again."""

    receipt: str
    record: EnvelopeRecord
    notices_queued: int = 0
    published: EnvelopeRecord | None = None
    dead_lettered: bool = False


class SqsSpool:
    """A `Spool` on an SQS standard queue and an S3 bucket (see the module docstring).

    `sqs_client` and `s3_client` are boto3 clients (thread-safe; `from_config` builds them);
    `clock` gives epoch seconds for delays and dead-letter times (tests inject one).
    """

    def __init__(
        self,
        sqs_client: Any,
        s3_client: Any,
        settings: SqsSpoolSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._bodies = BodyStore(
            s3_client, settings.bucket, settings.prefix, kms_key_id=settings.kms_key_id
        )
        self._clock = clock
        self._calls = Calls(settings.threads)
        self._queue = EnvelopeQueue(self._calls, sqs_client, settings, clock)
        self._keeper = LeaseKeeper(
            self._calls,
            sqs_client,
            settings.queue_url,
            timeout=settings.visibility_timeout,
            interval=settings.heartbeat_every,
        )
        self._failed_put_at: float | None = None
        self._closed = False

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
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> SqsSpool:
        """A spool with its own boto3 clients; `options` are further `SqsSpoolSettings` fields.
        Makes no call: a queue or bucket that does not exist shows at the first use."""
        settings = SqsSpoolSettings(queue_url=queue_url, bucket=bucket, prefix=prefix, **options)
        sqs, s3 = aws_clients(
            settings, region=region, endpoint_url=endpoint_url, credentials=credentials
        )
        return cls(sqs, s3, settings, clock=clock)

    @property
    def leased(self) -> int:
        """Envelopes this spool holds leases on."""
        return len(self._keeper.leased)

    @property
    def lease_extension_failures(self) -> int:
        """Background visibility extensions that failed or that SQS refused."""
        return self._keeper.failures

    # --- accepting -----------------------------------------------------------------------------

    def admission(self) -> str | None:
        """ "unavailable" for `unavailable_cooldown` seconds after a failed put, else None.

        SQS and S3 have no disk to fill and no cap worth enforcing, so the only reason to refuse
        before the body is that the last accept just failed: the client then gets its 4xx at
        MAIL instead of after uploading a body that could not be stored."""
        failed = self._failed_put_at
        if failed is not None and self._clock() - failed < self.settings.unavailable_cooldown:
            return "unavailable"
        return None

    async def put(self, message: NewMessage) -> str:
        """Body to S3, envelope to SQS, then commit the body; `SpoolUnavailable` if either write
        fails (nothing queued) or once closed."""
        if self._closed:
            raise SpoolUnavailable("the spool is closed")
        message_id = uuid.uuid4().hex
        key = self._bodies.key_for(message_id)
        envelope = message.envelope
        due = message.not_before if message.not_before is not None else envelope.received_at
        record = EnvelopeRecord(message_id, key, envelope, next_attempt_at=due)
        try:
            await self._calls.aws(
                "S3",
                "PutObject",
                self._bodies.put_pending,
                key=key,
                data=message.data,
                message_id=message_id,
            )
            await self._send_or_drop_body(record)
        except SpoolUnavailable:
            self._failed_put_at = self._clock()
            raise
        self._failed_put_at = None
        try:
            await self._calls.run(self._bodies.commit, key=key)
        except AWS_ERRORS as exc:  # accepted all the same: the first `body` read commits it
            log.warning("message %s: body not marked committed yet: %s", message_id, describe(exc))
        return message_id

    async def _send_or_drop_body(self, record: EnvelopeRecord) -> None:
        try:
            await self._queue.publish(record)
        except SpoolUnavailable:
            try:
                await self._calls.run(self._bodies.delete, key=record.key)
            except AWS_ERRORS as exc:
                log.warning("orphan body %s left for the sweeper: %s", record.key, describe(exc))
            raise

    # --- leasing -------------------------------------------------------------------------------

    async def lease(self, limit: int, now: float) -> tuple[QueuedMessage, ...]:
        """ReceiveMessage (long-polling `wait_time` s, then more calls without waiting while
        they come back full, up to `limit`): the envelopes due at `now`, oldest due first.
        Envelopes not yet due are re-published with the remaining delay; undecodable ones go to
        the dead-letter queue."""
        if self._closed or limit <= 0:
            return ()
        leased = []
        for message in await self._queue.receive(limit):
            try:
                record = decode(message.body)
            except SpoolCorrupt as exc:
                await self._set_aside_undecodable(message, str(exc))
                continue
            if record.next_attempt_at > now:
                await self._postpone(record, message.receipt)
                continue
            self._keeper.track(record.id, message.receipt)
            leased.append(
                QueuedMessage(
                    record.id,
                    record.envelope,
                    attempts=record.attempts,
                    next_attempt_at=record.next_attempt_at,
                    last_error=record.last_error,
                    lease=_Lease(message.receipt, record),
                )
            )
        leased.sort(key=lambda m: (m.next_attempt_at, m.id))
        return tuple(leased)

    async def _postpone(self, record: EnvelopeRecord, receipt: str) -> None:
        """Chain a backoff longer than SQS's delay: a new message for the rest of the wait."""
        try:
            await self._queue.publish(record)
            await self._queue.delete(receipt)
        except SpoolUnavailable as exc:  # it comes back after its visibility timeout
            log.warning("message %s: could not postpone: %s", record.id, exc)

    async def _set_aside_undecodable(self, message: Received, reason: str) -> None:
        log.error("undecodable envelope moved to the dead-letter queue: %s", reason)
        try:
            await self._queue.send_dead_letter(message.body, f"undecodable: {reason}")
            await self._queue.delete(message.receipt)
        except SpoolUnavailable as exc:  # the redrive policy moves it after maxReceiveCount
            log.warning("undecodable envelope left to the redrive policy: %s", exc)

    async def body(self, message: QueuedMessage) -> bytes:
        """The body from S3; `SpoolCorrupt` if it is gone or not the size the envelope says."""
        key = _lease_of(message).record.key
        try:
            stored = await self._calls.run(self._bodies.get, key=key)
        except AWS_ERRORS as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                text = f"message {message.id}: body {key} is missing"
                raise SpoolCorrupt(text) from None
            raise unavailable("S3", "GetObject", exc) from None
        size = message.envelope.size
        if size and len(stored.data) != size:
            text = f"message {message.id}: body is {len(stored.data)} bytes, envelope says {size}"
            raise SpoolCorrupt(text)
        if stored.pending:  # the tag removal after SendMessage failed: commit it now
            try:
                await self._calls.run(self._bodies.commit, key=key)
            except AWS_ERRORS as exc:
                log.warning("message %s: body still not committed: %s", message.id, describe(exc))
        return stored.data

    async def heartbeat(self, message: QueuedMessage) -> None:
        """Extend this lease now (the keeper also does, every `heartbeat_interval`); never
        raises: a lapsed lease only risks a second delivery, which SQS allows anyway."""
        try:
            await self._queue.hide(_lease_of(message).receipt, self.settings.visibility_timeout)
        except SpoolUnavailable as exc:
            log.warning("message %s: heartbeat failed: %s", message.id, exc)

    # --- ending a lease ------------------------------------------------------------------------

    async def settle(
        self,
        message: QueuedMessage,
        envelope: QueuedEnvelope,
        *,
        next_attempt_at: float | None,
        last_error: str = "",
        notices: tuple[NewMessage, ...] = (),
    ) -> None:
        """Queue `notices`, then publish the updated envelope (something pending) or delete the
        body (nothing pending), deleting the old envelope in both cases. On `SpoolUnavailable`
        the lease is still held (and extended): the caller retries the settle (notices already
        queued are not queued again) or releases it."""
        lease = _lease_of(message)
        if envelope.pending and next_attempt_at is None:
            raise ValueError("next_attempt_at is required while recipients are pending")
        for notice in notices[lease.notices_queued :]:
            await self.put(notice)
            lease.notices_queued += 1
        if envelope.pending:
            assert next_attempt_at is not None
            updated = attrs.evolve(
                lease.record,
                envelope=envelope,
                attempts=lease.record.attempts + 1,
                next_attempt_at=next_attempt_at,
                last_error=last_error,
            )
            if lease.published != updated:  # a retry after a failed delete sends no second copy
                await self._queue.publish(updated)
                lease.published = updated
            await self._end(message.id, lease)
            return
        await self._end(message.id, lease)
        try:
            await self._calls.run(self._bodies.delete, key=lease.record.key)
        except AWS_ERRORS as exc:  # committed, so only the lifecycle rule will remove it
            log.warning("message %s: body not deleted: %s", message.id, describe(exc))

    async def dead_letter(
        self, message: QueuedMessage, envelope: QueuedEnvelope, reason: str
    ) -> None:
        """Send the envelope (with `reason`) to the dead-letter queue, then delete it from the
        queue; the body stays for `SqsQueueAdmin.redrive`. On `SpoolUnavailable` the lease is
        still held, as with `settle`."""
        lease = _lease_of(message)
        record = attrs.evolve(
            lease.record, envelope=envelope, last_error=reason, dead_at=self._clock()
        )
        if not lease.dead_lettered:  # a retry after a failed delete sends no second copy
            await self._queue.send_dead_letter(encode(record), reason)
            lease.dead_lettered = True
        await self._end(message.id, lease)

    async def _end(self, message_id: str, lease: _Lease) -> None:
        """Delete the received envelope (its successor, if any, is already published)."""
        await self._queue.delete(lease.receipt)
        self._keeper.forget(message_id)

    async def release(self, message: QueuedMessage) -> None:
        """Visible again at once (ChangeMessageVisibility 0); never raises (if SQS fails, the
        envelope comes back after its visibility timeout)."""
        await self._keeper.forget_before_release(message.id)
        try:
            await self._queue.hide(_lease_of(message).receipt, 0)
        except SpoolUnavailable as exc:
            log.warning("message %s: release failed: %s", message.id, exc)

    # --- observing -----------------------------------------------------------------------------

    async def next_due(self) -> float | None:
        """Now: SQS schedules delayed envelopes itself, so there is always reason to receive
        (the receive's long poll paces an idle queue); None once closed."""
        return None if self._closed else self._clock()

    async def stats(self) -> SpoolStats:
        """Approximate depths from GetQueueAttributes: `messages` is SQS's visible + in flight +
        delayed count; `recipients` the same number (a lower bound: SQS cannot count inside
        messages); `oldest_received_at` None (SQS does not say; CloudWatch's
        ApproximateAgeOfOldestMessage does); `dead_letters` the dead-letter queue's depth."""
        messages, dead = await self._queue.depths()
        return SpoolStats(
            messages=messages, recipients=messages, oldest_received_at=None, dead_letters=dead
        )

    async def sweep_orphan_bodies(self, older_than: float = DEFAULT_ORPHAN_AGE) -> SweepResult:
        """Delete bodies whose envelope never reached SQS (see `_sweeper`)."""
        return await self._calls.run(
            sweep_orphan_bodies, store=self._bodies, older_than=older_than, now=self._clock()
        )

    async def aclose(self) -> None:
        """Refuse puts, release the leases still held (visible again at once), stop the
        keeper and the threads."""
        self._closed = True
        await self._keeper.aclose()
        for message_id, receipt in self._keeper.leased.items():
            await self._keeper.forget_before_release(message_id)
            try:
                await self._queue.hide(receipt, 0)
            except SpoolUnavailable as exc:
                log.warning("message %s: not released at close: %s", message_id, exc)
        self._calls.shutdown()


def _lease_of(message: QueuedMessage) -> _Lease:
    lease = message.lease
    if not isinstance(lease, _Lease):
        text = f"message {message.id} was not leased from an SqsSpool"
        raise TypeError(text)
    return lease
