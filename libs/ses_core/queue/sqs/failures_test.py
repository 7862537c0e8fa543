"""SqsSpool when S3 or SQS fail, and with poisoned envelopes and damaged bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs
import pytest

from ses_core.errors import SpoolCorrupt, SpoolUnavailable
from ses_core.queue import RecipientState
from ses_core.queue.sqs import PENDING_TAG_KEY, PENDING_TAG_VALUE, SqsSpool
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
from ses_core.testing.ports import free_port

MakeSpool = Callable[..., SqsSpool]


async def test_s3_failing_at_put_is_unavailable_and_queues_nothing(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str, spool_clock: SettableClock
) -> None:
    """A body that cannot be written (no such bucket) gives SpoolUnavailable, no envelope is
    sent, and admission says "unavailable" for the cooldown, then None again."""
    spool = make_spool(bucket="no-such-bucket-here", unavailable_cooldown=5.0)
    assert spool.admission() is None

    with pytest.raises(SpoolUnavailable, match=r"^S3 PutObject failed: NoSuchBucket"):
        await spool.put(new_message())

    assert queue_depth(endpoint, resources.queue_url) == 0
    assert spool.admission() == "unavailable"
    spool_clock.offset += 6
    assert spool.admission() is None


async def test_sqs_failing_at_put_is_unavailable_and_removes_the_body(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """An envelope that cannot be sent (no such queue) gives SpoolUnavailable and the body
    written just before is deleted."""
    missing = resources.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    spool = make_spool(queue_url=missing)

    with pytest.raises(SpoolUnavailable, match=r"^SQS SendMessage failed: "):
        await spool.put(new_message())

    assert object_keys(endpoint, resources.bucket) == []


async def test_an_unreachable_endpoint_is_one_line_without_a_traceback(
    make_spool: MakeSpool,
) -> None:
    """A connection refused at SQS and S3 is SpoolUnavailable with one line saying so."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    spool = make_spool(sqs=aws_client("sqs", nowhere), s3=aws_client("s3", nowhere))

    with pytest.raises(SpoolUnavailable) as caught:
        await spool.put(new_message())

    text = str(caught.value)
    assert text.startswith("S3 PutObject failed: endpoint unreachable")
    assert "\n" not in text and "Traceback" not in text
    assert caught.value.__cause__ is None
    with pytest.raises(SpoolUnavailable, match="^SQS ReceiveMessage failed: endpoint"):
        await spool.lease(10, 0)
    with pytest.raises(SpoolUnavailable, match="^SQS GetQueueAttributes failed: endpoint"):
        await spool.stats()


async def test_an_undecodable_envelope_goes_to_the_dead_letter_queue(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """A poisoned envelope (not JSON) is never handed out: it moves to the dead-letter queue
    at once, with the reason, instead of looping."""
    spool = make_spool()
    sqs = aws_client("sqs", endpoint)
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody="{not json")
    message_id = await spool.put(new_message())

    leased = await lease_within(spool, 2, timeout=4)

    assert [m.id for m in leased] == [message_id]
    (dead,) = sqs.receive_message(
        QueueUrl=resources.dead_letter_queue_url, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["Body"] == "{not json"
    assert dead["MessageAttributes"]["reason"]["StringValue"].startswith(
        "undecodable: envelope is not JSON"
    )


async def test_an_envelope_that_keeps_failing_ends_in_the_dead_letter_queue_by_redrive(
    endpoint: str, make_spool: MakeSpool
) -> None:
    """A message whose processing never ends (received, then released, again and again) is
    moved by SQS's redrive policy after maxReceiveCount receives instead of looping forever."""
    resources = create_spool_resources(endpoint, max_receive_count=2)
    spool = make_spool(queue_url=resources.queue_url, bucket=resources.bucket)
    await spool.put(new_message())

    for _ in range(2):
        (leased,) = await lease_within(spool, 1, timeout=5)
        await spool.release(leased)

    assert await lease_within(spool, 1, timeout=3) == []
    assert queue_depth(endpoint, resources.dead_letter_queue_url) == 1
    assert (await spool.stats()).dead_letters == 1


async def test_a_missing_body_is_corrupt(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """A body deleted behind the spool's back is SpoolCorrupt (delivery dead-letters it)."""
    spool = make_spool()
    message_id = await spool.put(new_message())
    aws_client("s3", endpoint).delete_object(Bucket=resources.bucket, Key=f"bodies/{message_id}")
    (leased,) = await lease_within(spool, 1, timeout=10)
    with pytest.raises(SpoolCorrupt, match="is missing"):
        await spool.body(leased)


async def test_a_body_of_the_wrong_size_is_corrupt(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """A body whose length differs from the envelope's size is never delivered half-read."""
    spool = make_spool()
    message_id = await spool.put(new_message())
    aws_client("s3", endpoint).put_object(
        Bucket=resources.bucket, Key=f"bodies/{message_id}", Body=b"short"
    )
    (leased,) = await lease_within(spool, 1, timeout=10)
    with pytest.raises(SpoolCorrupt, match="body is 5 bytes"):
        await spool.body(leased)


async def test_a_body_left_pending_is_committed_at_its_first_read(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """If removing the pending tag failed after the envelope was sent, the first body read
    removes it, so the sweeper never takes a live message's body."""
    spool = make_spool()
    message_id = await spool.put(new_message())
    s3 = aws_client("s3", endpoint)
    key = f"bodies/{message_id}"
    pending = {"TagSet": [{"Key": PENDING_TAG_KEY, "Value": PENDING_TAG_VALUE}]}
    s3.put_object_tagging(Bucket=resources.bucket, Key=key, Tagging=pending)

    (leased,) = await lease_within(spool, 1, timeout=10)
    await spool.body(leased)

    assert s3.get_object_tagging(Bucket=resources.bucket, Key=key)["TagSet"] == []


async def test_a_failed_settle_keeps_the_lease_for_a_retry_without_repeating_notices(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """When the delete of the old envelope fails, settle raises SpoolUnavailable and the lease
    stays held (and extended past its 2 s visibility); the retried settle succeeds and queues
    neither the DSN nor the new envelope a second time."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    first = make_spool(sqs=sqs.client, visibility_timeout=2, heartbeat_interval=0.5)
    second = make_spool(visibility_timeout=2)
    await first.put(new_message("a@example.net", "b@example.net"))
    (leased,) = await lease_within(first, 1, timeout=10)
    dsn = new_message("sender@example.com", sender="")
    due = leased.next_attempt_at + 3600
    sqs.failing = {"DeleteMessage"}  # the DSN and the new envelope go out, the delete fails

    with pytest.raises(SpoolUnavailable, match="DeleteMessage"):
        await first.settle(leased, leased.envelope, next_attempt_at=due, notices=(dsn,))
    assert first.leased == 1
    sqs.failing = set()
    await asyncio.sleep(1)  # the keeper extends the lease meanwhile
    await first.settle(leased, leased.envelope, next_attempt_at=due, notices=(dsn,))

    assert first.leased == 0
    notices = await lease_within(second, 3, timeout=4)
    assert [m.envelope.sender for m in notices] == [""]  # the DSN, once
    await second.settle(
        notices[0],
        notices[0].envelope.with_recipients(
            attrs.evolve(r, state=RecipientState.ACCEPTED) for r in notices[0].envelope.recipients
        ),
        next_attempt_at=None,
    )
    assert queue_depth(endpoint, resources.queue_url) == 1  # the envelope, once, delayed


async def test_release_after_a_failed_settle_returns_the_message(
    make_spool: MakeSpool, endpoint: str
) -> None:
    """After a settle that failed for good, the runner releases: another replica gets it."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    first = make_spool(sqs=sqs.client)
    second = make_spool()
    await first.put(new_message())
    (leased,) = await lease_within(first, 1, timeout=10)
    sqs.failing = {"SendMessage"}
    with pytest.raises(SpoolUnavailable):
        await first.settle(leased, leased.envelope, next_attempt_at=leased.next_attempt_at)
    sqs.failing = set()

    await first.release(leased)

    (again,) = await lease_within(second, 1, timeout=10)
    assert (again.id, again.attempts) == (leased.id, 0)


async def test_dead_letter_without_a_dead_letter_queue_is_unavailable(
    endpoint: str, make_spool: MakeSpool
) -> None:
    """A queue without a redrive policy, and no dead-letter URL given, cannot dead-letter:
    SpoolUnavailable names the cause; heartbeat and release never raise."""
    resources = create_spool_resources(endpoint, redrive=False)
    sqs = CallFailures(aws_client("sqs", endpoint))
    spool = make_spool(sqs=sqs.client, queue_url=resources.queue_url, bucket=resources.bucket)
    await spool.put(new_message())
    (leased,) = await lease_within(spool, 1, timeout=10)

    with pytest.raises(SpoolUnavailable, match="no RedrivePolicy"):
        await spool.dead_letter(leased, leased.envelope, "refused")
    sqs.failing = {"*"}
    await spool.heartbeat(leased)
    await spool.release(leased)
    assert sqs.failed == 2


async def test_background_extension_failures_are_counted_not_raised(
    make_spool: MakeSpool, endpoint: str
) -> None:
    """When SQS cannot be reached, the keeper logs and counts the failed extensions."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    spool = make_spool(sqs=sqs.client, heartbeat_interval=0.2)
    await spool.put(new_message())
    await lease_within(spool, 1, timeout=10)
    sqs.failing = {"ChangeMessageVisibilityBatch"}
    for _ in range(50):
        if spool.lease_extension_failures:
            break
        await asyncio.sleep(0.1)
    assert spool.lease_extension_failures >= 1


async def test_a_retried_dead_letter_sends_one_copy(
    make_spool: MakeSpool, endpoint: str, resources: SpoolResources
) -> None:
    """A dead_letter whose delete failed, retried, leaves one envelope in the dead-letter queue
    and none in the queue."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    spool = make_spool(sqs=sqs.client)
    await spool.put(new_message())
    (leased,) = await lease_within(spool, 1, timeout=10)
    sqs.failing = {"DeleteMessage"}
    with pytest.raises(SpoolUnavailable, match="DeleteMessage"):
        await spool.dead_letter(leased, leased.envelope, "refused")
    sqs.failing = set()

    await spool.dead_letter(leased, leased.envelope, "refused")

    assert queue_depth(endpoint, resources.dead_letter_queue_url) == 1
    assert queue_depth(endpoint, resources.queue_url) == 0


async def test_a_receive_failing_after_a_full_batch_hands_out_that_batch(
    make_spool: MakeSpool, endpoint: str
) -> None:
    """When the second ReceiveMessage of a large lease fails, the first batch is still leased
    (not left hidden until its visibility lapses); the next lease fails with SpoolUnavailable."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    spool = make_spool(sqs=sqs.client)
    for _ in range(15):
        await spool.put(new_message())
    await asyncio.sleep(0.2)
    sqs.failing, sqs.spare = {"ReceiveMessage"}, 1

    leased = await spool.lease(20, 2e9)

    assert len(leased) == 10
    with pytest.raises(SpoolUnavailable, match="^SQS ReceiveMessage failed"):
        await spool.lease(20, 2e9)


async def test_an_envelope_that_cannot_be_postponed_or_set_aside_stays_queued(
    make_spool: MakeSpool, endpoint: str, resources: SpoolResources, spool_clock: SettableClock
) -> None:
    """If re-publishing a not-yet-due envelope, or moving an undecodable one, fails, lease
    still answers (nothing handed out) and the envelope stays in the queue for later."""
    sqs = CallFailures(aws_client("sqs", endpoint))
    spool = make_spool(sqs=sqs.client, max_delay=1)
    await spool.put(new_message(not_before=spool_clock() + 5000))
    aws_client("sqs", endpoint).send_message(QueueUrl=resources.queue_url, MessageBody="junk")
    sqs.failing = {"SendMessage"}

    assert await lease_within(spool, 1, timeout=4) == []

    assert sqs.failed >= 2
    assert queue_depth(endpoint, resources.queue_url) == 2
    assert queue_depth(endpoint, resources.dead_letter_queue_url) == 0
