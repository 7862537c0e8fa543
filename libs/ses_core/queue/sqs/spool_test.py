"""SqsSpool against moto's server: accept, lease, settle, dead-letter, release, and replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs
import pytest

from ses_core.queue import QueuedMessage, RecipientState, SpooledRecipient
from ses_core.queue.sqs import PENDING_TAG_KEY, SqsSpool
from ses_core.testing.moto_sqs import (
    SettableClock,
    SpoolResources,
    aws_client,
    lease_within,
    new_message,
    object_keys,
    queue_depth,
)

MakeSpool = Callable[..., SqsSpool]


def accept(message: QueuedMessage, *addresses: str) -> tuple[SpooledRecipient, ...]:
    """The message's recipients with `addresses` ACCEPTED."""
    return tuple(
        attrs.evolve(r, state=RecipientState.ACCEPTED, attempts=r.attempts + 1, code=250)
        if r.address in addresses
        else attrs.evolve(r, attempts=r.attempts + 1, code=451, text="try later")
        for r in message.envelope.recipients
    )


async def test_put_stores_an_encrypted_committed_body_and_a_leasable_envelope(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """A put message is leased with its envelope as given, its body comes from S3, encrypted
    (SSE-S3) and no longer tagged pending."""
    spool = make_spool()
    message = new_message("a@example.net", "b@example.net", data=b"Subject: x\r\n\r\nbody\r\n")
    message_id = await spool.put(message)

    (leased,) = await lease_within(spool, 1, timeout=10)
    assert leased.id == message_id
    assert leased.envelope == message.envelope
    assert (leased.attempts, leased.last_error) == (0, "")
    assert await spool.body(leased) == message.data
    s3 = aws_client("s3", endpoint)
    key = f"bodies/{message_id}"
    assert s3.head_object(Bucket=resources.bucket, Key=key)["ServerSideEncryption"] == "AES256"
    assert s3.get_object_tagging(Bucket=resources.bucket, Key=key)["TagSet"] == []
    assert spool.leased == 1


async def test_settle_with_nothing_pending_removes_envelope_and_body(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """Once every recipient has an outcome, the envelope and the body are gone."""
    spool = make_spool()
    await spool.put(new_message())
    (leased,) = await lease_within(spool, 1, timeout=10)
    done = leased.envelope.with_recipients(accept(leased, "rcpt@example.net"))

    await spool.settle(leased, done, next_attempt_at=None)

    assert queue_depth(endpoint, resources.queue_url) == 0
    assert object_keys(endpoint, resources.bucket) == []
    assert spool.leased == 0


async def test_settle_with_a_deferred_recipient_republishes_the_new_states_later(
    make_spool: MakeSpool, spool_clock: SettableClock
) -> None:
    """A deferred recipient comes back at next_attempt_at, not before, with the accepted one
    still ACCEPTED (never sent again) and the attempt counted."""
    spool = make_spool()
    await spool.put(new_message("ok@example.net", "later@example.net"))
    (leased,) = await lease_within(spool, 1, timeout=10)
    envelope = leased.envelope.with_recipients(accept(leased, "ok@example.net"))

    await spool.settle(
        leased, envelope, next_attempt_at=spool_clock() + 2, last_error="451 try later"
    )

    assert await spool.lease(10, spool_clock()) == ()  # delayed by SQS
    (again,) = await lease_within(spool, 1, timeout=10)
    assert again.id == leased.id
    assert [r.state for r in again.envelope.recipients] == [
        RecipientState.ACCEPTED,
        RecipientState.PENDING,
    ]
    assert (again.attempts, again.last_error) == (1, "451 try later")
    assert await spool.body(again) == b"Subject: hi\r\n\r\nhello\r\n"


async def test_a_backoff_longer_than_the_sqs_delay_chains_and_is_never_early(
    make_spool: MakeSpool, spool_clock: SettableClock, endpoint: str, resources: SpoolResources
) -> None:
    """With delays capped (here at 1 s instead of 900 s), an envelope due in 2000 s is received
    and re-published again and again, never handed out, until the clock reaches its due time."""
    spool = make_spool(max_delay=1)
    await spool.put(new_message())
    (leased,) = await lease_within(spool, 1, timeout=10)
    due = spool_clock() + 2000
    await spool.settle(leased, leased.envelope, next_attempt_at=due, last_error="deferred")

    early = await lease_within(spool, 1, timeout=4, now=spool_clock)
    assert early == []
    assert queue_depth(endpoint, resources.queue_url) == 1  # one copy, re-published

    spool_clock.offset += 2000
    (due_now,) = await lease_within(spool, 1, timeout=10, now=spool_clock)
    assert due_now.id == leased.id
    assert due_now.next_attempt_at == due


async def test_settle_queues_the_notices_before_removing_the_message(
    make_spool: MakeSpool,
) -> None:
    """A DSN given to settle is queued like any message, and the settled message is gone."""
    spool = make_spool()
    await spool.put(new_message("gone@example.net"))
    (leased,) = await lease_within(spool, 1, timeout=10)
    failed = tuple(attrs.evolve(r, state=RecipientState.FAILED) for r in leased.envelope.recipients)
    dsn = new_message("sender@example.com", sender="", data=b"Subject: DSN\r\n\r\nfailed\r\n")

    await spool.settle(
        leased, leased.envelope.with_recipients(failed), next_attempt_at=None, notices=(dsn,)
    )

    (notice,) = await lease_within(spool, 1, timeout=10)
    assert notice.id != leased.id
    assert notice.envelope.sender == ""
    assert await spool.body(notice) == dsn.data


async def test_dead_letter_moves_the_envelope_with_its_reason_and_keeps_the_body(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """A dead-lettered envelope leaves the queue for the dead-letter queue, with the reason as
    a message attribute; its body stays for a redrive; stats count it."""
    spool = make_spool()
    message_id = await spool.put(new_message())
    (leased,) = await lease_within(spool, 1, timeout=10)

    await spool.dead_letter(leased, leased.envelope, "no bounce sender")

    assert queue_depth(endpoint, resources.queue_url) == 0
    assert object_keys(endpoint, resources.bucket) == [f"bodies/{message_id}"]
    sqs = aws_client("sqs", endpoint)
    (dead,) = sqs.receive_message(
        QueueUrl=resources.dead_letter_queue_url, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "no bounce sender"
    assert '"last_error":"no bounce sender"' in dead["Body"]
    stats = await spool.stats()
    assert stats.dead_letters == 1


async def test_two_replicas_never_lease_the_same_message_while_visibility_holds(
    make_spool: MakeSpool,
) -> None:
    """Two spools leasing a backlog at the same time get disjoint sets that cover it."""
    first, second = make_spool(), make_spool()
    ids = {await first.put(new_message(f"r{n}@example.net")) for n in range(20)}

    leases = await asyncio.gather(
        lease_within(first, 20, timeout=15), lease_within(second, 20, timeout=15)
    )

    got_first = [m.id for m in leases[0]]
    got_second = [m.id for m in leases[1]]
    assert not set(got_first) & set(got_second)
    assert len(got_first) + len(got_second) == 20
    assert set(got_first) | set(got_second) == ids


async def test_release_makes_the_message_visible_to_another_replica_at_once(
    make_spool: MakeSpool,
) -> None:
    """A released lease (shutdown) is received by another replica without waiting for the
    30 s visibility timeout, even while the keeper extends leases every 50 ms."""
    first, second = make_spool(heartbeat_interval=0.05), make_spool()
    message_id = await first.put(new_message())
    (leased,) = await lease_within(first, 1, timeout=10)
    assert await second.lease(10, leased.next_attempt_at + 1) == ()

    await first.release(leased)

    (taken,) = await lease_within(second, 1, timeout=10)
    assert taken.id == message_id
    assert first.leased == 0


async def test_aclose_returns_the_leases_still_held_and_refuses_puts(
    make_spool: MakeSpool,
) -> None:
    """Closing a spool makes its leased messages visible at once; a put afterwards fails."""
    first, second = make_spool(heartbeat_interval=0.05), make_spool()
    await first.put(new_message())
    (leased,) = await lease_within(first, 1, timeout=10)

    await first.aclose()

    (taken,) = await lease_within(second, 1, timeout=10)
    assert taken.id == leased.id
    assert await first.lease(10, 0) == ()
    assert await first.next_due() is None
    with pytest.raises(Exception, match="closed"):
        await first.put(new_message())


async def test_the_keeper_extends_leases_past_the_visibility_timeout(
    make_spool: MakeSpool,
) -> None:
    """With a 2 s visibility timeout, a message leased for 5 s stays hidden from the other
    replica because the spool extends it in the background."""
    first = make_spool(visibility_timeout=2, heartbeat_interval=0.5)
    second = make_spool(visibility_timeout=2)
    await first.put(new_message())
    (leased,) = await lease_within(first, 1, timeout=10)

    assert await lease_within(second, 1, timeout=5) == []
    await first.settle(
        leased,
        leased.envelope.with_recipients(accept(leased, "rcpt@example.net")),
        next_attempt_at=None,
    )
    assert first.lease_extension_failures == 0


async def test_without_extensions_the_short_visibility_timeout_lapses(
    make_spool: MakeSpool,
) -> None:
    """The counter-proof: with no extension within 5 s, the 2 s visibility lapses and the other
    replica receives the message, so the previous test would catch a missing heartbeat."""
    first = make_spool(visibility_timeout=2, heartbeat_interval=60)
    second = make_spool(visibility_timeout=2)
    message_id = await first.put(new_message())
    await lease_within(first, 1, timeout=10)

    (taken,) = await lease_within(second, 1, timeout=8)
    assert taken.id == message_id


async def test_heartbeat_extends_one_lease_at_once(make_spool: MakeSpool) -> None:
    """An explicit heartbeat keeps a 2 s lease hidden (the keeper is set not to run)."""
    first = make_spool(visibility_timeout=2, heartbeat_interval=60)
    second = make_spool(visibility_timeout=2)
    await first.put(new_message())
    (leased,) = await lease_within(first, 1, timeout=10)
    for _ in range(3):
        await asyncio.sleep(1)
        await first.heartbeat(leased)
    assert await second.lease(10, leased.next_attempt_at + 1) == ()


async def test_a_body_larger_than_an_sqs_message_works(make_spool: MakeSpool) -> None:
    """A 300 KB body (above SQS's classic 256 KB limit) goes through S3 unchanged."""
    spool = make_spool()
    data = b"Subject: big\r\n\r\n" + b"x" * 300_000 + b"\r\n"
    await spool.put(new_message(data=data))
    (leased,) = await lease_within(spool, 1, timeout=10)
    assert await spool.body(leased) == data


async def test_a_not_before_delays_the_first_lease(
    make_spool: MakeSpool, spool_clock: SettableClock
) -> None:
    """not_before (direct mode's deferred recipients) makes the message due later."""
    spool = make_spool()
    await spool.put(new_message(not_before=spool_clock() + 2))
    assert await spool.lease(10, spool_clock()) == ()
    (leased,) = await lease_within(spool, 1, timeout=10)
    assert leased.next_attempt_at > leased.envelope.received_at


async def test_stats_count_queued_and_dead_messages(
    make_spool: MakeSpool, spool_clock: SettableClock
) -> None:
    """Stats are SQS's approximate counts: queued (visible, in flight, delayed) and dead."""
    spool = make_spool()
    for _ in range(3):
        await spool.put(new_message())
    await spool.put(new_message(not_before=spool_clock() + 600))
    stats = await spool.stats()
    assert (stats.messages, stats.recipients, stats.dead_letters) == (4, 4, 0)
    assert stats.oldest_received_at is None
    assert (await spool.next_due() or 0) >= spool_clock() - 1


async def test_settle_needs_a_due_time_while_recipients_are_pending(make_spool: MakeSpool) -> None:
    """A pending recipient without next_attempt_at is a caller bug, refused before any call."""
    spool = make_spool()
    await spool.put(new_message())
    (leased,) = await lease_within(spool, 1, timeout=10)
    with pytest.raises(ValueError, match="next_attempt_at"):
        await spool.settle(leased, leased.envelope, next_attempt_at=None)


async def test_a_message_leased_elsewhere_is_refused(make_spool: MakeSpool) -> None:
    """A QueuedMessage that did not come from an SqsSpool lease is a TypeError, not a call."""
    spool = make_spool()
    stranger = QueuedMessage("m1", new_message().envelope)
    with pytest.raises(TypeError, match="not leased from an SqsSpool"):
        await spool.body(stranger)


async def test_the_pending_tag_is_the_only_one_a_body_gets(
    make_spool: MakeSpool, resources: SpoolResources, endpoint: str
) -> None:
    """put tags the body pending and removes the tag after SendMessage: no other tag is left."""
    spool = make_spool()
    message_id = await spool.put(new_message())
    s3 = aws_client("s3", endpoint)
    tags = s3.get_object_tagging(Bucket=resources.bucket, Key=f"bodies/{message_id}")["TagSet"]
    assert PENDING_TAG_KEY not in {tag["Key"] for tag in tags}


async def test_a_lease_of_more_than_ten_receives_until_a_batch_comes_back_short(
    make_spool: MakeSpool,
) -> None:
    """SQS returns 10 messages per receive at most; a lease for 25 keeps receiving (without
    waiting) while batches come back full, so a runner with many free workers fills them."""
    spool = make_spool()
    ids = {await spool.put(new_message()) for _ in range(25)}
    await asyncio.sleep(0.2)
    first = await spool.lease(25, 2e9)
    assert len(first) > 10
    rest = await lease_within(spool, 25 - len(first), timeout=10)
    assert {m.id for m in first} | {m.id for m in rest} == ids
