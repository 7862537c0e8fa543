"""The local spool keeps the `Spool` and `SpoolAdmin` contract on its SQLite file."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from ses_core.errors import SpoolUnavailable
from ses_core.queue import (
    MessageState,
    NewMessage,
    QueuedEnvelope,
    QueuedMessage,
    QueueFilter,
    RecipientState,
    SpoolAdmin,
    SpooledRecipient,
)
from ses_core.queue.local import LocalSpool, _writer
from ses_core.queue.local._disk import FileLock

NOW = 10_000.0


def envelope(sender: str = "a@example.org", *rcpts: str, at: float = NOW) -> QueuedEnvelope:
    return QueuedEnvelope(sender, rcpts or ("r@example.net",), received_at=at)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[LocalSpool]:
    opened = LocalSpool.open(tmp_path / "spool", clock=lambda: NOW, free_bytes=lambda: 1 << 40)
    yield opened
    opened.close()


async def test_put_then_lease_body_and_stats(spool: LocalSpool) -> None:
    """A put message is leased with its envelope, its body reads back, and counters follow."""
    env = envelope("a@example.org", "x@example.net", "y@example.net")
    message_id = await spool.put(NewMessage(env, b"Subject: hi\r\n\r\nbody\r\n"))
    stats = await spool.stats()
    assert (stats.messages, stats.recipients, stats.dead_letters) == (1, 2, 0)
    assert stats.oldest_received_at == NOW and stats.free_bytes == 1 << 40
    (leased,) = await spool.lease(10, NOW)
    assert leased.id == message_id and leased.envelope == env and leased.attempts == 0
    assert await spool.body(leased) == b"Subject: hi\r\n\r\nbody\r\n"


async def test_oldest_due_first_and_not_before(spool: LocalSpool) -> None:
    """Leases come oldest due first; a not_before in the future is not due before it."""
    late = await spool.put(NewMessage(envelope(at=NOW - 10), b"late", not_before=NOW + 50))
    second = await spool.put(NewMessage(envelope(at=NOW - 5), b"2"))
    first = await spool.put(NewMessage(envelope(at=NOW - 9), b"1"))
    assert [m.id for m in await spool.lease(10, NOW)] == [first, second]
    assert await spool.next_due() == NOW + 50
    assert [m.id for m in await spool.lease(10, NOW + 50)] == [late]


async def test_a_leased_message_is_not_leased_twice(spool: LocalSpool) -> None:
    """Concurrent and repeated leases never hand the same message out twice."""
    ids = {await spool.put(NewMessage(envelope(), b"%d" % i)) for i in range(7)}
    batches = await asyncio.gather(*(spool.lease(2, NOW) for _ in range(5)))
    handed = [m.id for batch in batches for m in batch]
    assert sorted(handed) == sorted(ids)
    assert await spool.lease(5, NOW) == ()
    assert await spool.next_due() is None
    assert spool.leased_count == 7


async def test_settle_reschedules_or_removes(spool: LocalSpool) -> None:
    """Settle with a pending recipient reschedules (attempts+1); with none removes the message."""
    env = envelope("a@example.org", "x@example.net", "y@example.net")
    await spool.put(NewMessage(env, b"m"))
    (leased,) = await spool.lease(1, NOW)
    accepted = SpooledRecipient("x@example.net", RecipientState.ACCEPTED, 1, 250)
    deferred = SpooledRecipient("y@example.net", RecipientState.PENDING, 1, 454, "throttled")
    after = env.with_recipients((accepted, deferred))
    await spool.settle(leased, after, next_attempt_at=NOW + 60, last_error="454 throttled")
    assert await spool.lease(1, NOW) == ()
    (again,) = await spool.lease(1, NOW + 60)
    assert (again.envelope, again.attempts, again.last_error) == (after, 1, "454 throttled")
    assert (await spool.stats()).recipients == 1
    done = after.with_recipients((accepted, attrs.evolve(deferred, state=RecipientState.ACCEPTED)))
    await spool.settle(again, done, next_attempt_at=None)
    assert spool.show(again.id) is None
    stats = await spool.stats()
    assert (stats.messages, stats.recipients, stats.oldest_received_at) == (0, 0, None)


async def test_settle_requires_a_due_time_while_pending(spool: LocalSpool) -> None:
    """A settle that leaves recipients pending without a due time is refused, nothing written."""
    await spool.put(NewMessage(envelope(), b"m"))
    (leased,) = await spool.lease(1, NOW)
    with pytest.raises(ValueError, match="next_attempt_at"):
        await spool.settle(leased, leased.envelope, next_attempt_at=None)


async def test_settle_stores_notices_in_the_same_step(spool: LocalSpool) -> None:
    """Notices (DSNs) given to settle are queued as new messages with their bodies."""
    env = envelope("a@example.org", "x@example.net")
    await spool.put(NewMessage(env, b"m"))
    (leased,) = await spool.lease(1, NOW)
    failed = env.with_recipients([SpooledRecipient("x@example.net", RecipientState.FAILED)])
    dsn = NewMessage(QueuedEnvelope("", ("a@example.org",), received_at=NOW), b"DSN")
    await spool.settle(leased, failed, next_attempt_at=None, notices=(dsn,))
    (notice,) = await spool.lease(5, NOW)
    assert notice.envelope.sender == "" and await spool.body(notice) == b"DSN"
    assert (await spool.stats()).messages == 1


async def test_dead_letter_release_and_requeue(spool: LocalSpool) -> None:
    """Dead letters leave the queue but keep their body; requeue brings FAILED back PENDING."""
    env = envelope("a@example.org", "x@example.net", "y@example.net")
    await spool.put(NewMessage(env, b"keep me"))
    (leased,) = await spool.lease(1, NOW)
    await spool.release(leased)
    (leased,) = await spool.lease(1, NOW)
    after = env.with_recipients(
        (
            SpooledRecipient("x@example.net", RecipientState.ACCEPTED),
            SpooledRecipient("y@example.net", RecipientState.FAILED, 2, 0, "ambiguous"),
        )
    )
    await spool.dead_letter(leased, after, "ambiguous")
    stats = await spool.stats()
    assert (stats.messages, stats.dead_letters, stats.recipients) == (0, 1, 0)
    shown = spool.show(leased.id)
    assert shown is not None and shown.state is MessageState.DEAD
    assert shown.last_error == "ambiguous" and shown.next_attempt_at == NOW
    assert spool.requeue(leased.id) and not spool.requeue(leased.id)
    (back,) = await spool.lease(1, NOW)
    assert [r.state for r in back.envelope.recipients] == [
        RecipientState.ACCEPTED,
        RecipientState.PENDING,
    ]
    assert await spool.body(back) == b"keep me"
    assert (await spool.stats()).recipients == 1


async def test_admin_from_a_second_instance_sees_and_changes_the_same_data(
    spool: LocalSpool, tmp_path: Path
) -> None:
    """Another opener (as the `queue` command in another process) lists, deletes, retries, and
    the relay's instance sees its changes, counters included."""
    early = await spool.put(NewMessage(envelope("a@one.example", at=NOW - 100), b"1"))
    late = await spool.put(NewMessage(envelope("b@Two.Example", at=NOW - 10), b"2"))
    later = await spool.put(NewMessage(envelope("c@two.example"), b"3", not_before=NOW + 999))
    with LocalSpool.open(tmp_path / "spool", clock=lambda: NOW) as admin:
        assert isinstance(admin, SpoolAdmin)
        assert not admin.recovery.checked  # the relay had it open: nothing checked or moved
        assert [m.id for m in admin.list(QueueFilter())] == [early, late, later]
        assert [m.id for m in admin.list(QueueFilter(sender_domain="TWO.example"))] == [
            late,
            later,
        ]
        assert [m.id for m in admin.list(QueueFilter(min_age=50))] == [early]
        assert [m.id for m in admin.list(QueueFilter(limit=1))] == [early]
        assert admin.list(QueueFilter(state=MessageState.DEAD)) == ()
        assert admin.delete(early) and not admin.delete(early) and not admin.delete("nonsense")
        assert admin.retry_now(later) and not admin.retry_now("42")
        assert admin.summary().messages == 2
    assert (await spool.stats()).messages == 2
    assert [m.id for m in await spool.lease(5, NOW)] == [late, later]


async def test_group_commit_puts_share_fsyncs(spool: LocalSpool) -> None:
    """Puts waiting while the writer is busy are committed together: fewer commits than puts."""
    gate = threading.Event()
    blocker = spool._writer.submit(lambda tx: gate.wait(10))
    puts = [asyncio.ensure_future(spool.put(NewMessage(envelope(), b"%d" % i))) for i in range(40)]
    await asyncio.sleep(0)  # every put has queued its job
    gate.set()
    ids = await asyncio.gather(*puts)
    await asyncio.wrap_future(blocker)
    stats = spool.io_stats
    assert len(set(ids)) == 40 and stats.puts == 40
    assert stats.commits < stats.puts and stats.commits <= 2


async def test_put_after_close_is_unavailable(tmp_path: Path) -> None:
    """A closed spool refuses puts and reads with SpoolUnavailable; data survives a reopen."""
    spool = LocalSpool.open(tmp_path / "s", free_bytes=lambda: 1 << 40)
    message_id = await spool.put(NewMessage(envelope(), b"kept"))
    await spool.aclose()
    with pytest.raises(SpoolUnavailable):
        await spool.put(NewMessage(envelope(), b"late"))
    with pytest.raises(SpoolUnavailable):
        await spool.lease(1, NOW)
    assert spool.io_stats.refusals == {"unavailable": 1}
    with LocalSpool.open(tmp_path / "s") as again:
        shown = again.show(message_id)
        assert shown is not None and shown.envelope.sender == "a@example.org"


async def test_only_one_process_leases(spool: LocalSpool, tmp_path: Path) -> None:
    """A second opener that tries to lease is refused: leases live in one process's memory."""
    await spool.put(NewMessage(envelope(), b"m"))
    assert len(await spool.lease(1, NOW)) == 1
    with LocalSpool.open(tmp_path / "spool") as other:
        with pytest.raises(SpoolUnavailable, match="another process"):
            await other.lease(1, NOW)


async def test_private_modes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The directory is 0700 (tightened with a warning if looser), every file in it 0600."""
    directory = tmp_path / "loose"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with LocalSpool.open(directory, free_bytes=lambda: 1 << 40) as spool:
        await spool.put(NewMessage(envelope(), b"personal data"))
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        files = list(directory.iterdir())
        assert {f.name for f in files} >= {"spool.sqlite3", "spool.sqlite3-wal"}
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    assert "tightened" in caplog.text
    fresh = tmp_path / "a" / "b"
    LocalSpool.open(fresh).close()
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700


async def test_aclose_drains_pending_puts(tmp_path: Path) -> None:
    """Puts already waiting when the spool closes are committed and answered, not dropped."""
    spool = LocalSpool.open(tmp_path / "s", free_bytes=lambda: 1 << 40)
    puts = [asyncio.ensure_future(spool.put(NewMessage(envelope(), b"%d" % i))) for i in range(10)]
    await asyncio.sleep(0)
    await spool.aclose()
    ids = await asyncio.gather(*puts)
    with LocalSpool.open(tmp_path / "s") as again:
        assert [m.id for m in again.list(QueueFilter())] == sorted(ids)


async def test_two_writers_on_one_file_wait_for_each_other(
    spool: LocalSpool, tmp_path: Path
) -> None:
    """An operator's writes from a second opener interleave with the relay's puts (`write.lock`
    serialises them, SQLite's lock beneath); nothing is lost, counters stay exact."""
    first = [await spool.put(NewMessage(envelope(), b"%d" % i)) for i in range(20)]
    with LocalSpool.open(tmp_path / "spool", clock=lambda: NOW) as admin:
        deleting = asyncio.to_thread(lambda: [admin.delete(i) for i in first])
        putting = asyncio.gather(*(spool.put(NewMessage(envelope(), b"n")) for _ in range(20)))
        deleted, added = await asyncio.gather(deleting, putting)
        assert all(deleted) and len(set(added)) == 20
        assert admin.summary().messages == 20
    stats = await spool.stats()
    assert (stats.messages, stats.recipients) == (20, 20)
    assert spool.admission() is None


async def test_a_put_is_answered_after_its_fsync_an_outcome_before_its_own(
    spool: LocalSpool,
) -> None:
    """`put` waits for the WAL's fsync; `settle` is answered at commit and its fsync follows
    within LAZY_SYNC_SECONDS (a power cut may repeat a delivery, never lose a message)."""
    await spool.put(NewMessage(envelope(), b"body"))
    after_put = spool.io_stats.commits
    assert after_put >= 1  # counted once the fsync returned, before put() did
    (leased,) = await spool.lease(1, NOW)
    done = leased.envelope.with_recipients(
        attrs.evolve(r, state=RecipientState.ACCEPTED) for r in leased.envelope.recipients
    )
    await spool.settle(leased, done, next_attempt_at=None)
    assert (await spool.stats()).messages == 0
    for _ in range(200):  # the lazy fsync comes by itself (bounded: 200 x 10 ms)
        if spool.io_stats.commits > after_put:
            break
        await asyncio.sleep(0.01)
    assert spool.io_stats.commits == after_put + 1


async def test_a_write_waits_for_another_process_write_lock(
    spool: LocalSpool, tmp_path: Path
) -> None:
    """While another opener holds `write.lock` (as during its transaction) a put waits, and it
    is stored as soon as the lock is released: no busy-handler sleep, no error."""
    other = FileLock(tmp_path / "spool" / "write.lock")
    try:
        assert other.exclusive_within(0)
        put = asyncio.ensure_future(spool.put(NewMessage(envelope(), b"waits")))
        await asyncio.sleep(0.05)
        assert not put.done()
        other.unlock()
        message_id = await asyncio.wait_for(put, 5)
    finally:
        other.close()
    assert [m.id for m in spool.list(QueueFilter())] == [message_id]


async def test_a_write_lock_held_past_the_timeout_fails_the_batch_only(tmp_path: Path) -> None:
    """A write lock that stays taken (a stopped process) fails the put as unavailable after
    the busy timeout (a 4xx for the client, nothing stored), and the next put succeeds."""
    with LocalSpool.open(tmp_path / "s", clock=lambda: NOW, busy_timeout=0.05) as spool:
        other = FileLock(tmp_path / "s" / "write.lock")
        try:
            assert other.exclusive_within(0)
            with pytest.raises(SpoolUnavailable, match="write lock"):
                await spool.put(NewMessage(envelope(), b"refused"))
        finally:
            other.close()
        assert spool.list(QueueFilter()) == ()
        await spool.put(NewMessage(envelope(), b"stored"))
        assert len(spool.list(QueueFilter())) == 1


def accepted(message: QueuedMessage) -> QueuedEnvelope:
    return message.envelope.with_recipients(
        attrs.evolve(r, state=RecipientState.ACCEPTED) for r in message.envelope.recipients
    )


async def test_delivery_outcomes_are_gathered_into_one_transaction(spool: LocalSpool) -> None:
    """Outcomes (non-durable writes) submitted together share one transaction, so the delivery
    process takes the write lock once for many instead of once per delivery."""
    for i in range(3):
        await spool.put(NewMessage(envelope(), b"%d" % i))
    leased = await spool.lease(3, NOW)
    transactions: list[int] = []
    spool._writer.before_commit = lambda tx: transactions.append(1)
    await asyncio.gather(*(spool.settle(m, accepted(m), next_attempt_at=None) for m in leased))
    assert transactions == [1] and (await spool.stats()).messages == 0


async def test_a_put_ends_the_gathering_at_once(
    spool: LocalSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable write never waits for outcomes to gather: with a gathering time far longer
    than the test, a put made while an outcome waits commits both at once."""
    monkeypatch.setattr(_writer, "LAZY_GATHER_SECONDS", 3600.0)
    await spool.put(NewMessage(envelope(), b"first"))
    (leased,) = await spool.lease(1, NOW)
    settle = asyncio.ensure_future(spool.settle(leased, accepted(leased), next_attempt_at=None))
    await asyncio.sleep(0.05)
    assert not settle.done()  # gathering
    await asyncio.wait_for(spool.put(NewMessage(envelope(), b"second")), 10)
    await asyncio.wait_for(settle, 10)
    assert (await spool.stats()).messages == 1  # the first settled, the second queued
