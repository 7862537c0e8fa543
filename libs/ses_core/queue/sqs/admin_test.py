"""SqsQueueAdmin and the sweeper: counts, redrive from the dead-letter queue, orphan bodies."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from ses_core.errors import SpoolUnavailable
from ses_core.queue import RecipientState
from ses_core.queue.sqs import RedriveResult, SqsQueueAdmin, SqsSpool, SweepResult
from ses_core.testing.moto_sqs import (
    CallFailures,
    SettableClock,
    SpoolResources,
    aws_client,
    create_spool_resources,
    lease_within,
    new_message,
    object_keys,
    queue_depth,
)

MakeSpool = Callable[..., SqsSpool]


@pytest.fixture
def admin(endpoint: str, make_spool: MakeSpool, spool_clock: SettableClock) -> SqsQueueAdmin:
    """An admin on the same queue and bucket as the spools of `make_spool`."""
    settings = make_spool().settings
    return SqsQueueAdmin(
        aws_client("sqs", endpoint), aws_client("s3", endpoint), settings, clock=spool_clock
    )


async def test_summary_counts_queued_and_dead_messages(
    make_spool: MakeSpool, admin: SqsQueueAdmin
) -> None:
    """The admin's summary is the spool's stats: approximate queued and dead counts."""
    spool = make_spool()
    for _ in range(2):
        await spool.put(new_message())
    (leased, _) = await lease_within(spool, 2, timeout=10)
    await spool.dead_letter(leased, leased.envelope, "refused")

    summary = admin.summary()
    assert (summary.messages, summary.dead_letters, summary.oldest_received_at) == (1, 1, None)
    assert summary == await spool.stats()


async def test_redrive_requeues_failed_recipients_and_keeps_accepted_ones(
    make_spool: MakeSpool, admin: SqsQueueAdmin, endpoint: str, resources: SpoolResources
) -> None:
    """A redriven envelope is due at once, its FAILED recipient PENDING again, its ACCEPTED
    recipient still accepted, and its body still there."""
    spool = make_spool()
    message = new_message("ok@example.net", "bad@example.net")
    message_id = await spool.put(message)
    (leased,) = await lease_within(spool, 1, timeout=10)
    ok, bad = leased.envelope.recipients
    envelope = leased.envelope.with_recipients(
        (
            attrs.evolve(ok, state=RecipientState.ACCEPTED),
            attrs.evolve(bad, state=RecipientState.FAILED),
        )
    )
    await spool.dead_letter(leased, envelope, "no bounce sender")
    aws_client("sqs", endpoint).send_message(
        QueueUrl=resources.dead_letter_queue_url, MessageBody="garbage"
    )

    assert admin.redrive(limit=10) == RedriveResult(moved=1, skipped=1)

    (again,) = await lease_within(spool, 1, timeout=10)
    assert again.id == message_id
    assert [r.state for r in again.envelope.recipients] == [
        RecipientState.ACCEPTED,
        RecipientState.PENDING,
    ]
    assert again.last_error == ""
    assert await spool.body(again) == message.data
    assert queue_depth(endpoint, resources.dead_letter_queue_url) == 1  # the garbage stays


async def test_redrive_moves_at_most_its_limit(
    make_spool: MakeSpool, admin: SqsQueueAdmin, endpoint: str, resources: SpoolResources
) -> None:
    """limit bounds the envelopes moved in one redrive; the rest wait for the next."""
    spool = make_spool()
    for _ in range(3):
        await spool.put(new_message())
    for leased in await lease_within(spool, 3, timeout=10):
        await spool.dead_letter(leased, leased.envelope, "refused")

    assert admin.redrive(limit=2) == RedriveResult(moved=2, skipped=0)
    assert queue_depth(endpoint, resources.dead_letter_queue_url) == 1
    assert admin.redrive(limit=2) == RedriveResult(moved=1, skipped=0)


async def test_redrive_without_a_dead_letter_queue_is_unavailable(
    endpoint: str, make_spool: MakeSpool
) -> None:
    """A queue with no redrive policy (and no URL given) has nothing to redrive from."""
    resources = create_spool_resources(endpoint, redrive=False)
    settings = make_spool(queue_url=resources.queue_url, bucket=resources.bucket).settings
    admin = SqsQueueAdmin(aws_client("sqs", endpoint), aws_client("s3", endpoint), settings)
    with pytest.raises(SpoolUnavailable, match="no RedrivePolicy"):
        admin.redrive()


async def test_the_sweeper_removes_an_orphan_body_and_keeps_committed_ones(
    make_spool: MakeSpool,
    admin: SqsQueueAdmin,
    endpoint: str,
    resources: SpoolResources,
    spool_clock: SettableClock,
) -> None:
    """A body whose envelope never reached SQS (the send and the cleanup both failed) is
    swept once older than the threshold; a committed body and a foreign object are kept."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    s3 = CallFailures(aws_client("s3", endpoint))
    spool = make_spool(sqs=sqs.client, s3=s3.client)
    kept_id = await spool.put(new_message())
    sqs.failing, s3.failing = {"SendMessage"}, {"DeleteObject"}
    with pytest.raises(SpoolUnavailable):
        await spool.put(new_message())
    sqs.failing = s3.failing = set()
    aws_client("s3", endpoint).put_object(Bucket=resources.bucket, Key="bodies/other", Body=b"x")
    assert len(object_keys(endpoint, resources.bucket)) == 3

    assert await spool.sweep_orphan_bodies(older_than=3600) == SweepResult(0, 0, 0)
    spool_clock.offset += 3601
    assert admin.sweep_orphan_bodies(older_than=3600) == SweepResult(checked=3, removed=1, kept=2)

    assert object_keys(endpoint, resources.bucket) == sorted(["bodies/other", f"bodies/{kept_id}"])


async def test_a_failed_commit_still_accepts_and_the_body_is_never_swept_after_a_read(
    make_spool: MakeSpool,
    admin: SqsQueueAdmin,
    endpoint: str,
    resources: SpoolResources,
    spool_clock: SettableClock,
) -> None:
    """If the tag removal fails after the envelope was sent, put still returns (the message is
    durable); the first body read commits it, so a later sweep keeps it."""
    s3 = CallFailures(aws_client("s3", endpoint))
    spool = make_spool(s3=s3.client)
    s3.failing = {"DeleteObjectTagging"}
    message_id = await spool.put(new_message())
    s3.failing = set()

    (leased,) = await lease_within(spool, 1, timeout=10)
    await spool.body(leased)
    spool_clock.offset += 7 * 3600

    assert admin.sweep_orphan_bodies() == SweepResult(checked=1, removed=0, kept=1)
    assert object_keys(endpoint, resources.bucket) == [f"bodies/{message_id}"]


async def test_the_sweeper_reports_s3_failures_as_unavailable(
    make_spool: MakeSpool, endpoint: str
) -> None:
    """A sweep that cannot list the bucket raises SpoolUnavailable (one line)."""
    s3 = CallFailures(aws_client("s3", endpoint))
    spool = make_spool(s3=s3.client)
    s3.failing = {"ListObjectsV2"}
    with pytest.raises(SpoolUnavailable, match="^S3 sweep failed: endpoint unreachable"):
        await spool.sweep_orphan_bodies()
