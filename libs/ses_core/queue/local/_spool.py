"""`LocalSpool`: the `Spool` and `SpoolAdmin` ports on one SQLite file (see the package doc)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from ses_core.errors import SpoolFull, SpoolUnavailable
from ses_core.queue._model import (
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
    QueuedMessage,
    QueueFilter,
    SpoolStats,
)
from ses_core.queue.local import _admin, _delivery_sql
from ses_core.queue.local._disk import (
    FileLock,
    FreeSpace,
    prepare_directory,
    statvfs_free_bytes,
    tighten_files,
)
from ses_core.queue.local._reader import Reader
from ses_core.queue.local._recovery import DB_NAME, RecoveryReport, connect, open_spool_file
from ses_core.queue.local._schema import insert_message, parse_id
from ses_core.queue.local._writer import GroupCommitWriter, SpoolIoStats

log = logging.getLogger(__name__)

T = TypeVar("T")
GIB = 1 << 30


def _reraise_as_unavailable(exc: BaseException, directory: Path) -> NoReturn:
    if isinstance(exc, sqlite3.Error | OSError) and not isinstance(exc, SpoolUnavailable):
        message = f"spool {directory} cannot be opened: {exc}"
        raise SpoolUnavailable(message) from exc
    raise exc


class LocalSpool:
    """A durable spool in `<directory>/spool.sqlite3`; build it with `LocalSpool.open`."""

    def __init__(
        self,
        directory: Path,
        *,
        writer: GroupCommitWriter,
        reader: Reader,
        lock: FileLock,
        recovery: RecoveryReport,
        free_space: FreeSpace,
        min_free_bytes: int,
        max_messages: int,
        clock: Callable[[], float],
        queued: int,
    ) -> None:
        self.directory = directory
        self.recovery = recovery
        self._writer = writer
        self._reader = reader
        self._lock = lock
        self._lease_lock: FileLock | None = None
        self._free_space = free_space
        self._min_free_bytes = min_free_bytes
        self._max_messages = max_messages
        self._clock = clock
        self._queued = queued
        self._leased: set[int] = set()
        self._lease_guard = asyncio.Lock()
        self._puts = 0
        self._refusals: dict[str, int] = {}
        self._closed = False

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        min_free_bytes: int = GIB,
        max_messages: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        free_bytes: Callable[[], int] | None = None,
        free_space_interval: float = 1.0,
        busy_timeout: float = 5.0,
    ) -> LocalSpool:
        """Open (creating, checking, recovering) the spool in `directory`.

        `free_bytes` replaces the statvfs reading of the directory's filesystem (tests), which
        is cached for `free_space_interval` seconds. `busy_timeout` is how long a write waits
        for another process's write (the `queue` command) before failing.
        """
        directory = Path(directory)
        try:
            prepare_directory(directory)
            lock = FileLock(directory / "spool.lock")
        except OSError as exc:
            message = f"spool directory {directory} cannot be used: {exc}"
            raise SpoolUnavailable(message) from exc
        try:
            exclusive = lock.try_exclusive()
            if not exclusive:
                lock.shared()  # waits while another process recovers the file
            recovery = open_spool_file(
                directory, exclusive=exclusive, busy_timeout=busy_timeout, clock=clock
            )
            if exclusive:
                lock.shared()  # from now on, other processes may open it too
            db = directory / DB_NAME
            tighten_files([db, db.with_name(DB_NAME + "-wal"), db.with_name(DB_NAME + "-shm")])
            write_connection = connect(db, busy_timeout)
        except BaseException as exc:
            lock.close()
            _reraise_as_unavailable(exc, directory)
        try:
            queued = _admin.queued_count(write_connection)
            write_lock = FileLock(directory / "write.lock")
        except BaseException as exc:
            write_connection.close()
            lock.close()
            _reraise_as_unavailable(exc, directory)
        try:
            reader = Reader(db, busy_timeout)
        except BaseException as exc:
            write_connection.close()
            write_lock.close()
            lock.close()
            _reraise_as_unavailable(exc, directory)
        spool: LocalSpool
        writer = GroupCommitWriter(
            write_connection,
            after_write=lambda tx: spool._counted(tx),
            wal_path=directory / f"{DB_NAME}-wal",
            write_lock=write_lock,
            lock_timeout=busy_timeout,
        )
        spool = cls(
            directory,
            writer=writer,
            reader=reader,
            lock=lock,
            recovery=recovery,
            free_space=FreeSpace(free_bytes or statvfs_free_bytes(directory), free_space_interval),
            min_free_bytes=min_free_bytes,
            max_messages=max_messages,
            clock=clock,
            queued=queued,
        )
        log.info("spool %s opened: %d message(s) queued", directory, queued)
        return spool

    @property
    def io_stats(self) -> SpoolIoStats:
        """Counters for metrics (cheap, no I/O)."""
        return SpoolIoStats(
            puts=self._puts,
            commits=self._writer.commits,
            failed_batches=self._writer.failed_batches,
            refusals=dict(self._refusals),
        )

    @property
    def leased_count(self) -> int:
        """Messages this process has leased and not yet settled."""
        return len(self._leased)

    # --- Spool ---------------------------------------------------------------------------------

    def admission(self) -> str | None:
        """ "disk_full" below `min_free_bytes` free, "queue_full" at `max_messages`, else None
        (from a cached free-space reading and the count of the last commit: no I/O)."""
        if self._free_space.bytes() < self._min_free_bytes:
            return "disk_full"
        if self._queued >= self._max_messages:
            return "queue_full"
        return None

    async def put(self, message: NewMessage) -> str:
        """Store `message`; returns once its transaction is committed and fsync'd."""
        if self._closed:
            self._refused("unavailable")
            raise SpoolUnavailable("the spool is closed")
        reason = self.admission()
        if reason is not None:
            self._refused(reason)
            text = "low disk space" if reason == "disk_full" else "the queue is full"
            raise SpoolFull(f"the spool cannot take a message: {text}", reason)
        try:
            message_id = await self._write(lambda tx: insert_message(tx, message))
        except SpoolFull as exc:
            self._free_space.invalidate()
            self._refused(exc.reason)
            raise
        except SpoolUnavailable:
            self._refused("unavailable")
            raise
        self._puts += 1
        return message_id

    async def lease(self, limit: int, now: float) -> tuple[QueuedMessage, ...]:
        """Due messages not leased here, oldest due first; marks them leased (in memory).

        The read and the marking happen under one guard that `settle`/`release` also take to
        unlease, so a read that started before a settle committed can never hand the settled
        message out again (it is still marked leased until that read is done).
        """
        if limit <= 0:
            return ()
        self._take_lease_lock()
        async with self._lease_guard:
            skip = frozenset(self._leased)
            found, unreadable = await self._read(
                lambda c: _delivery_sql.due_messages(c, now, limit, skip)
            )
            self._leased.update(int(m.id) for m in found)
        if unreadable:
            log.error(
                "spool: dead-lettered message(s) %s, their envelope cannot be read", unreadable
            )
            when = self._clock()
            await self._write(lambda tx: _delivery_sql.set_aside_unreadable(tx, unreadable, when))
        return found

    async def body(self, message: QueuedMessage) -> bytes:
        """The body; `SpoolCorrupt` if it is missing or fails its CRC32."""
        rowid = self._rowid(message)
        return await self._read(lambda c: _delivery_sql.read_body(c, rowid))

    async def heartbeat(self, message: QueuedMessage) -> None:
        """Nothing to renew: leases live in this process and end with it."""

    async def settle(
        self,
        message: QueuedMessage,
        envelope: QueuedEnvelope,
        *,
        next_attempt_at: float | None,
        last_error: str = "",
        notices: tuple[NewMessage, ...] = (),
    ) -> None:
        """Record the attempt and the notices in one transaction, then end the lease.

        If the write fails (`SpoolFull`/`SpoolUnavailable`), nothing changed and the lease is
        kept: the caller may settle again or `release`.
        """
        if envelope.pending and next_attempt_at is None:
            raise ValueError("next_attempt_at is required while recipients are pending")
        rowid = self._rowid(message)
        # An outcome need not wait for its fsync (see `_writer`): a power cut repeats a delivery.
        await self._write(
            lambda tx: _delivery_sql.settle(
                tx, rowid, envelope, next_attempt_at, last_error, notices
            ),
            durable=False,
        )
        await self._unlease(rowid)

    async def dead_letter(
        self, message: QueuedMessage, envelope: QueuedEnvelope, reason: str
    ) -> None:
        """Set the message aside (with its body), then end the lease."""
        rowid = self._rowid(message)
        now = self._clock()
        await self._write(
            lambda tx: _delivery_sql.dead_letter(tx, rowid, envelope, reason, now), durable=False
        )
        await self._unlease(rowid)

    async def release(self, message: QueuedMessage) -> None:
        """End the lease; the file still says the message is due, so it is leased again."""
        await self._unlease(self._rowid(message))

    async def next_due(self) -> float | None:
        """The earliest due time among messages not leased here."""
        skip = frozenset(self._leased)
        return await self._read(lambda c: _delivery_sql.earliest_due(c, skip))

    async def stats(self) -> SpoolStats:
        """The counters row (kept by triggers) and the oldest queued message: no scan."""
        free = self._free_space.bytes()
        return await self._read(lambda c: _admin.read_stats(c, free))

    async def aclose(self) -> None:
        """Commit pending writes, stop the threads, release the locks."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """`aclose` for synchronous callers (the `queue` command)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._reader.close()
        if self._lease_lock is not None:
            self._lease_lock.close()
        self._lock.close()

    def __enter__(self) -> LocalSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- SpoolAdmin ----------------------------------------------------------------------------

    def list(self, where: QueueFilter) -> tuple[MessageSummary, ...]:
        """Matching messages, oldest first."""
        now = self._clock()
        return self._reader.submit(lambda c: _admin.list_messages(c, where, now)).result()

    def show(self, message_id: str) -> MessageSummary | None:
        """One message, or None."""
        return self._reader.submit(lambda c: _admin.show(c, message_id)).result()

    def retry_now(self, message_id: str) -> bool:
        """Due now."""
        now = self._clock()
        return self._submit(lambda tx: _admin.retry_now(tx, message_id, now)).result()

    def delete(self, message_id: str) -> bool:
        """Gone for good, body included."""
        return self._submit(lambda tx: _admin.delete(tx, message_id)).result()

    def requeue(self, message_id: str) -> bool:
        """Dead -> queued, FAILED recipients PENDING again, due now."""
        now = self._clock()
        return self._submit(lambda tx: _admin.requeue(tx, message_id, now)).result()

    def summary(self) -> SpoolStats:
        """As `stats`, synchronously."""
        free = self._free_space.bytes()
        return self._reader.submit(lambda c: _admin.read_stats(c, free)).result()

    # --- internals -----------------------------------------------------------------------------

    def _counted(self, tx: sqlite3.Connection) -> None:
        # Runs in the writer's transaction: the count admission() uses follows every commit,
        # operators' changes from other processes included.
        self._queued = _admin.queued_count(tx)

    def _submit(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise SpoolUnavailable("the spool is closed")
        return self._writer.submit(work, durable=durable)

    async def _write(self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        return await asyncio.wrap_future(self._submit(work, durable=durable))

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise SpoolUnavailable("the spool is closed")
        return await asyncio.wrap_future(self._reader.submit(read))

    async def _unlease(self, rowid: int) -> None:
        async with self._lease_guard:
            self._leased.discard(rowid)

    def _refused(self, reason: str) -> None:
        self._refusals[reason] = self._refusals.get(reason, 0) + 1

    @staticmethod
    def _rowid(message: QueuedMessage) -> int:
        rowid = parse_id(message.id)
        if rowid is None:
            message_text = f"{message.id!r} is not a message id of a local spool"
            raise ValueError(message_text)
        return rowid

    def _take_lease_lock(self) -> None:
        # Leases live in this process's memory: two processes delivering from one file would
        # both lease every message. The first to lease holds lease.lock until it closes or dies.
        if self._closed:
            raise SpoolUnavailable("the spool is closed")
        if self._lease_lock is not None:
            return
        lock = FileLock(self.directory / "lease.lock")
        if not lock.try_exclusive():
            lock.close()
            message = f"another process is delivering from the spool in {self.directory}"
            raise SpoolUnavailable(message)
        self._lease_lock = lock
