"""The local spool under failure: full disk, I/O errors, damaged files and bodies.

Each case checks the promise that matters for a 250: a refused put stored nothing of its batch,
the spool keeps working afterwards, and a damaged file is set aside instead of crashing the relay.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import attrs
import pytest

from ses_core.errors import SpoolCorrupt, SpoolFull, SpoolUnavailable
from ses_core.queue import NewMessage, QueuedEnvelope, QueueFilter, RecipientState
from ses_core.queue.local import LocalSpool

NOW = 10_000.0


def message(data: bytes = b"m") -> NewMessage:
    return NewMessage(QueuedEnvelope("a@example.org", ("r@example.net",), received_at=NOW), data)


def open_spool(directory: Path, **options: object) -> LocalSpool:
    options.setdefault("free_bytes", lambda: 1 << 40)
    return LocalSpool.open(directory, clock=lambda: NOW, **options)  # type: ignore[arg-type]


async def put_together(spool: LocalSpool, *messages: NewMessage) -> list[object]:
    """Put `messages` so that they land in one group-commit batch; results or exceptions."""
    gate = threading.Event()
    blocker = spool._writer.submit(lambda tx: gate.wait(10))
    puts = [asyncio.ensure_future(spool.put(m)) for m in messages]
    await asyncio.sleep(0)
    gate.set()
    results: list[object] = list(await asyncio.gather(*puts, return_exceptions=True))
    await asyncio.gather(
        asyncio.wrap_future(blocker), return_exceptions=True
    )  # may share the batch
    return results


async def test_sqlite_full_refuses_the_whole_batch_then_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL (max_page_count) fails every put of the batch with SpoolFull("disk_full"),
    stores none of them, and puts succeed once there is room again."""
    with open_spool(tmp_path / "s") as spool:
        pages = await spool._write(lambda tx: tx.execute("PRAGMA page_count").fetchone()[0])
        await spool._write(lambda tx: tx.execute(f"PRAGMA max_page_count = {pages + 2}").fetchall())
        results = await put_together(spool, message(b"small"), message(b"x" * 200_000))
        assert all(isinstance(r, SpoolFull) and r.reason == "disk_full" for r in results)
        assert (await spool.stats()).messages == 0 and spool.list(QueueFilter()) == ()
        assert spool.io_stats.refusals == {"disk_full": 2} and spool.io_stats.failed_batches == 1
        await spool._write(lambda tx: tx.execute("PRAGMA max_page_count = 1073741823").fetchall())
        message_id = await spool.put(message(b"x" * 200_000))
        (leased,) = await spool.lease(5, NOW)
        assert leased.id == message_id and await spool.body(leased) == b"x" * 200_000


async def test_io_error_at_commit_is_unavailable_and_the_writer_survives(tmp_path: Path) -> None:
    """A disk I/O error at commit fails the batch with SpoolUnavailable, stores nothing, and
    the next batch commits normally."""

    def fail(tx: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with open_spool(tmp_path / "s") as spool:
        spool._writer.before_commit = fail
        results = await put_together(spool, message(b"1"), message(b"2"))
        assert all(isinstance(r, SpoolUnavailable) for r in results)
        assert (await spool.stats()).messages == 0
        assert spool.io_stats.refusals == {"unavailable": 2}
        spool._writer.before_commit = None
        await spool.put(message(b"3"))
        assert (await spool.stats()).messages == 1


async def test_an_unexpected_error_at_commit_fails_the_batch_only(tmp_path: Path) -> None:
    """A non-SQLite error around the commit fails its batch with SpoolUnavailable, no more."""

    def bug(tx: sqlite3.Connection) -> None:
        raise KeyError("bug")

    with open_spool(tmp_path / "s") as spool:
        spool._writer.before_commit = bug
        with pytest.raises(SpoolUnavailable):
            await spool.put(message())
        spool._writer.before_commit = None
        await spool.put(message())
        assert (await spool.stats()).messages == 1


def test_a_directory_that_cannot_be_used_is_unavailable(tmp_path: Path) -> None:
    """A spool path that is a file is refused with SpoolUnavailable, not a bare OSError."""
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolUnavailable, match="cannot be used"):
        open_spool(tmp_path / "file")


async def test_a_failing_job_fails_alone(tmp_path: Path) -> None:
    """A job failing for its own reason (not the storage) is undone alone; its batch commits."""

    def broken(tx: sqlite3.Connection) -> None:
        tx.execute("DELETE FROM spool_stats")
        raise RuntimeError("bug")

    with open_spool(tmp_path / "s") as spool:
        gate = threading.Event()
        spool._writer.submit(lambda tx: gate.wait(10))
        bad = spool._writer.submit(broken)
        good = asyncio.ensure_future(spool.put(message()))
        await asyncio.sleep(0)
        gate.set()
        await good
        with pytest.raises(RuntimeError):
            bad.result(10)
        assert (await spool.stats()).messages == 1


async def test_admission_low_disk_and_queue_cap(tmp_path: Path) -> None:
    """Admission says disk_full below the floor and queue_full at the cap; put refuses both."""
    free = [10 << 30]
    with open_spool(
        tmp_path / "s", free_bytes=lambda: free[0], free_space_interval=0.0, max_messages=2
    ) as spool:
        assert spool.admission() is None
        await spool.put(message())
        await spool.put(message())
        assert spool.admission() == "queue_full"
        with pytest.raises(SpoolFull) as refused:
            await spool.put(message())
        assert refused.value.reason == "queue_full"
        free[0] = 1 << 20
        assert spool.admission() == "disk_full"
        with pytest.raises(SpoolFull):
            await spool.put(message())
        (leased, _other) = await spool.lease(2, NOW)
        delivered = [
            attrs.evolve(r, state=RecipientState.ACCEPTED) for r in leased.envelope.recipients
        ]
        await spool.settle(leased, leased.envelope.with_recipients(delivered), next_attempt_at=None)
        free[0] = 10 << 30
        assert spool.admission() is None
        assert spool.io_stats.refusals == {"queue_full": 1, "disk_full": 1}


def test_free_space_reading_is_cached(tmp_path: Path) -> None:
    """The free-space reading is taken once per interval, not at every admission."""
    readings = []

    def free() -> int:
        readings.append(1)
        return 1 << 40

    with open_spool(tmp_path / "s", free_bytes=free, free_space_interval=3600.0) as spool:
        for _ in range(100):
            assert spool.admission() is None
    assert len(readings) == 1


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "malformed"],
)
async def test_a_damaged_file_is_moved_aside_and_a_fresh_spool_starts(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, a truncated file or damaged pages: moved into corrupt/<time>/, logged, reported,
    and the fresh spool works."""
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        for index in range(300):
            await spool.put(message(b"%04d" % index * 256))
    db = directory / "spool.sqlite3"
    original = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(b"\x17not a database at all" * 200)
    elif damage == "truncated":
        db.write_bytes(original[: len(original) // 2])
    else:  # keep the header, wreck the schema page and the rest
        db.write_bytes(original[:100] + b"\xff" * (len(original) - 100))
    with open_spool(directory) as spool:
        report = spool.recovery
        assert report.recovered and report.moved_aside is not None and report.reason
        assert (report.moved_aside / "spool.sqlite3").exists()
        assert report.moved_aside.parent == directory / "corrupt"
        assert (await spool.stats()).messages == 0
        await spool.put(message(b"after"))
        (leased,) = await spool.lease(1, NOW)
        assert await spool.body(leased) == b"after"
    assert "moved it to" in caplog.text


async def test_a_healthy_file_is_not_moved(tmp_path: Path) -> None:
    """Reopening an intact spool keeps every message and reports nothing."""
    with open_spool(tmp_path / "s") as spool:
        await spool.put(message(b"stay"))
    with open_spool(tmp_path / "s") as spool:
        assert spool.recovery.checked and not spool.recovery.recovered
        assert (await spool.stats()).messages == 1
    assert not (tmp_path / "s" / "corrupt").exists()


async def test_a_newer_schema_is_refused_not_moved(tmp_path: Path) -> None:
    """A file written by a newer version is refused (SpoolUnavailable) and left in place."""
    open_spool(tmp_path / "s").close()
    with sqlite3.connect(tmp_path / "s" / "spool.sqlite3") as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(SpoolUnavailable, match="schema version 99"):
        open_spool(tmp_path / "s")
    assert not (tmp_path / "s" / "corrupt").exists()


async def test_a_body_failing_its_checksum_is_corrupt(tmp_path: Path) -> None:
    """A body changed on disk behind the spool's back raises SpoolCorrupt, never is delivered."""
    with open_spool(tmp_path / "s") as spool:
        message_id = await spool.put(message(b"original body"))
        raw = sqlite3.connect(tmp_path / "s" / "spool.sqlite3", isolation_level=None)
        raw.execute("UPDATE bodies SET data = ? WHERE id = ?", (b"flipped body!", int(message_id)))
        raw.close()
        (leased,) = await spool.lease(1, NOW)
        with pytest.raises(SpoolCorrupt, match="checksum"):
            await spool.body(leased)
        await spool.dead_letter(leased, leased.envelope, "corrupt body")
        assert (await spool.stats()).dead_letters == 1


async def test_an_envelope_that_does_not_parse_is_corrupt(tmp_path: Path) -> None:
    """An envelope that no longer parses: SpoolCorrupt for an operator's show, and leasing sets
    the message aside (dead letter) instead of stalling the queue on it."""
    with open_spool(tmp_path / "s") as spool:
        message_id = await spool.put(message())
        raw = sqlite3.connect(tmp_path / "s" / "spool.sqlite3", isolation_level=None)
        raw.execute("UPDATE messages SET envelope = '{\"v\": 7}' WHERE id = ?", (int(message_id),))
        raw.close()
        good = await spool.put(message(b"fine"))
        with pytest.raises(SpoolCorrupt, match="cannot be read"):
            spool.show(message_id)
        assert [m.id for m in await spool.lease(5, NOW)] == [good]  # the bad one is set aside
        stats = await spool.stats()
        assert (stats.messages, stats.dead_letters) == (1, 1)


async def test_a_failed_settle_keeps_the_lease(tmp_path: Path) -> None:
    """A settle that cannot be written changes nothing and keeps the lease; a retry succeeds."""

    def fail(tx: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with open_spool(tmp_path / "s") as spool:
        await spool.put(message())
        (leased,) = await spool.lease(1, NOW)
        spool._writer.before_commit = fail
        with pytest.raises(SpoolUnavailable):
            await spool.settle(leased, leased.envelope, next_attempt_at=NOW + 5, last_error="x")
        spool._writer.before_commit = None
        assert await spool.lease(1, NOW + 10) == () and spool.leased_count == 1
        await spool.settle(leased, leased.envelope, next_attempt_at=NOW + 5, last_error="x")
        (again,) = await spool.lease(1, NOW + 10)
        assert (again.attempts, again.last_error) == (1, "x")
