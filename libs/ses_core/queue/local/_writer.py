"""Group commit: one thread owns the write connection and commits many writers' work at once.

A durable commit costs one fsync of the WAL (milliseconds on most disks), and the SMTP client
waits for it before its 250. Committing each message alone would cap the relay at one message
per fsync. Instead every write (`put`, `settle`, an operator's `delete`...) is a job on a queue;
the writer thread takes every job waiting, runs them in ONE transaction, commits (one fsync),
then resolves each job's future. Under load the jobs that arrive during one fsync share the
next, so fsyncs per accepted message fall below one; alone, a put waits for just its own.

The fsync happens after the write lock is released: the connection runs `synchronous=NORMAL`
(COMMIT writes the WAL frames, no fsync) and the writer then fdatasyncs the WAL file itself,
before it resolves any future. A caller is told "stored" only after that fsync, exactly as with
`synchronous=FULL`; but the lock is not held across the disk's latency, so the relay's puts never
wait for the delivery process's fsync. A crash between COMMIT and the fsync loses only
transactions whose callers were never told they were stored. An fsync that fails makes the
batch fail (`SpoolUnavailable`): SQLite has it, but the disk may not.

Writers of different processes (the relay, its delivery process, the `queue` command) also take
`write.lock` (a `flock`) around each transaction. SQLite's own lock has no wait queue: a writer
that finds it taken sleeps in the busy handler, a whole millisecond or more, however soon the
holder finishes. The flock is retried within tens of microseconds (`FileLock.exclusive_within`),
so the SMTP front's puts are not slowed by the delivery process's commits. SQLite's lock stays
underneath, with its busy timeout, for any writer that does not take the flock.

Delivery outcomes (`settle`, `dead_letter`) are submitted with `durable=False`: the writer
gathers them for up to `LAZY_GATHER_SECONDS` (a durable job ends the wait), commits them and
answers at once, and fsyncs the WAL within `LAZY_SYNC_SECONDS` (or with the next durable batch,
whichever comes first). Gathering turns one commit per delivery into a few dozen a second, so
the delivery process takes the write lock from the SMTP front far less often. A process killed
at any instant loses nothing (the page cache outlives it); a power cut may lose the outcomes of
the last fraction of a second, so those deliveries are made again: the same trade Postfix makes
when it removes a delivered queue file without an fsync. A `put` is never answered before its
fsync.

Failure is all or nothing per batch: if SQLite fails (disk full, I/O error, lock timeout) the
transaction is rolled back and every job of the batch gets the error, so nobody is told "stored"
for something that is not. A job failing for its own reason (a bug, bad input) is rolled back to
its savepoint and fails alone. The thread survives both and serves the next batch.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ses_core.errors import SpoolFull, SpoolUnavailable
from ses_core.queue.local._disk import FileLock

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]

_SQLITE_FULL = 13

#: Longest time a non-durable commit (a delivery outcome) waits for its fsync.
LAZY_SYNC_SECONDS = 0.1

#: Longest time a non-durable job (a delivery outcome) waits for others to share its commit.
#: Measured with one client connection while delivering: 0.42x of the direct ceiling with one
#: commit per outcome and no `write.lock`, 0.45x with the lock alone, 0.51x with both.
LAZY_GATHER_SECONDS = 0.01


def spool_error(exc: sqlite3.Error) -> SpoolFull | SpoolUnavailable:
    """The spool error for a failed write: the disk full -> `SpoolFull`, the rest unavailable."""
    code = getattr(exc, "sqlite_errorcode", None)
    full = (code is not None and code & 0xFF == _SQLITE_FULL) or "is full" in str(exc).lower()
    if full:
        return SpoolFull(f"the spool's disk is full: {exc}", "disk_full")
    return SpoolUnavailable(f"the spool cannot write: {exc}")


@attrs.frozen
class SpoolIoStats:
    """What this process's spool did to the disk, for metrics.

    Attributes:
        puts: messages stored by `put` (each committed).
        commits: fsyncs of the spool's WAL by the group-commit writer, each making one or more
            transactions durable (puts / commits = messages per fsync).
        failed_batches: transactions rolled back because SQLite failed (full, I/O error).
        refusals: puts refused, by reason (disk_full, queue_full, unavailable).
    """

    puts: int
    commits: int
    failed_batches: int
    refusals: Mapping[str, int]


class GroupCommitWriter:
    """Runs write jobs on its own connection, many per transaction (see the module docstring).

    `after_write(connection)` runs inside every transaction just before the commit (the spool
    reads its counters there); `before_commit` is a seam for fault-injection tests.
    `write_lock`, when given, is held around each transaction (waiting at most `lock_timeout`
    seconds for another process's transaction; the batch fails `SpoolUnavailable` after that).
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        after_write: Callable[[sqlite3.Connection], None] | None = None,
        wal_path: Path | None = None,
        write_lock: FileLock | None = None,
        lock_timeout: float = 5.0,
    ) -> None:
        self._connection = connection
        self._write_lock = write_lock
        self._lock_timeout = lock_timeout
        self._after_write = after_write
        # With the WAL's path, the writer syncs it itself, outside the lock (module docstring).
        self._wal_path = wal_path
        self._wal_fd: int | None = None
        if wal_path is not None:
            connection.execute("PRAGMA synchronous = NORMAL")
        self._jobs: list[tuple[Work, concurrent.futures.Future[Any]]] = []
        self._first_job_at = 0.0  # monotonic time the oldest job in `_jobs` was submitted
        self._durable_jobs = 0  # jobs waiting in `_jobs` that need their fsync before an answer
        self._unsynced_since: float | None = None  # monotonic time of the oldest unsynced commit
        self._condition = threading.Condition()
        self._closing = False
        self.commits = 0
        self.failed_batches = 0
        #: Test seam: called with the connection after the batch's work, before COMMIT.
        self.before_commit: Callable[[sqlite3.Connection], None] | None = None
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def submit(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> concurrent.futures.Future[T]:
        """Queue `work(connection)` for the next batch; the future holds its result once the
        batch has committed and, if `durable`, once the WAL is fsynced (or the batch's error)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._condition:
            if self._closing:
                raise SpoolUnavailable("the spool is closed")
            if not self._jobs:
                self._first_job_at = time.monotonic()
            self._jobs.append((work, future))
            self._durable_jobs += durable
            self._condition.notify()
        return future

    def close(self) -> None:
        """Commit what is queued, stop the thread and close the connection."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                with self._condition:
                    while not self._jobs and not self._closing:
                        if self._unsynced_since is None:
                            self._condition.wait()
                            continue
                        left = self._unsynced_since + LAZY_SYNC_SECONDS - time.monotonic()
                        if left <= 0:
                            break
                        self._condition.wait(left)
                    self._gather_lazy_jobs()
                    taken, self._jobs = self._jobs, []
                    durable = self._durable_jobs > 0 or self._closing
                    self._durable_jobs = 0
                if not taken:
                    if self._unsynced_since is not None:
                        self._lazy_sync()
                    if self._closing:
                        return
                    continue
                # A job cancelled before it started is dropped (its caller gave up and was told
                # nothing); once running it can no longer be cancelled, so its future is set.
                batch = [job for job in taken if job[1].set_running_or_notify_cancel()]
                if batch:
                    self._commit_or_fail(batch, durable=durable)
        finally:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
            self._connection.close()
            if self._write_lock is not None:
                self._write_lock.close()

    def _gather_lazy_jobs(self) -> None:
        """With only non-durable jobs waiting, wait (holding the condition's lock, as `_run`
        does) until the oldest is `LAZY_GATHER_SECONDS` old, a durable job comes, or close."""
        while self._jobs and not self._durable_jobs and not self._closing:
            left = self._first_job_at + LAZY_GATHER_SECONDS - time.monotonic()
            if left <= 0:
                return
            self._condition.wait(left)

    def _sync_wal(self) -> None:
        """fdatasync the WAL file (re-opened if SQLite replaced it since)."""
        assert self._wal_path is not None
        if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != (
            os.stat(self._wal_path).st_ino
        ):
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._wal_fd is None:
            self._wal_fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._wal_fd)
        self.commits += 1

    def _lazy_sync(self) -> None:
        """The fsync owed to non-durable commits; a failure is logged (their callers were
        answered already; the next durable batch tries again)."""
        try:
            self._sync_wal()
        except OSError as exc:
            log.error("spool fsync of delivery outcomes failed: %s", exc)
            return
        self._unsynced_since = None

    def _commit_or_fail(
        self, batch: list[tuple[Work, concurrent.futures.Future[Any]]], *, durable: bool = True
    ) -> None:
        # Whatever goes wrong, the thread lives on and no caller is left waiting forever.
        try:
            self._commit(batch, durable=durable)
        except Exception as exc:
            log.exception("spool writer failed on a batch of %d job(s)", len(batch))
            for _work, future in batch:
                if not future.done():
                    future.set_exception(SpoolUnavailable(f"the spool cannot write: {exc!r}"))

    def _commit(
        self, batch: list[tuple[Work, concurrent.futures.Future[Any]]], *, durable: bool = True
    ) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        locked = False
        try:
            self._rollback()  # a transaction left open by an earlier failure would block BEGIN
            locked = self._lock()
            self._transaction(batch, outcomes)
        except sqlite3.Error as exc:
            self._rollback()
            self.failed_batches += 1
            log.error("spool write of %d job(s) failed, nothing stored: %s", len(batch), exc)
            for _work, future in batch:
                future.set_exception(spool_error(exc))
            return
        except BaseException as exc:  # a bug in after_write: nothing committed, say so
            self._rollback()
            self.failed_batches += 1
            log.exception("spool write of %d job(s) failed, nothing stored", len(batch))
            for _work, future in batch:
                future.set_exception(SpoolUnavailable(f"the spool cannot write: {exc!r}"))
            return
        finally:
            if locked:
                self._unlock()
        if self._wal_path is not None and not durable:
            if self._unsynced_since is None:
                self._unsynced_since = time.monotonic()
        elif self._wal_path is not None:
            try:
                self._sync_wal()
                self._unsynced_since = None
            except OSError as exc:
                self.failed_batches += 1
                log.error("spool fsync of %d job(s) failed: %s", len(batch), exc)
                for _work, future in batch:
                    future.set_exception(SpoolUnavailable(f"the spool cannot sync: {exc}"))
                return
        if self._wal_path is None:
            self.commits += 1  # synchronous=FULL: the commit was the fsync
        for (_work, future), (result, error) in zip(batch, outcomes, strict=True):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _transaction(
        self,
        batch: list[tuple[Work, concurrent.futures.Future[Any]]],
        outcomes: list[tuple[Any, BaseException | None]],
    ) -> None:
        """Run `batch` in one transaction, appending each job's outcome; COMMIT."""
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        for work, _future in batch:
            outcomes.append(self._run_job(connection, work))
        if self._after_write is not None:
            self._after_write(connection)
        if self.before_commit is not None:
            self.before_commit(connection)
        connection.execute("COMMIT")

    def _lock(self) -> bool:
        """Take `write_lock` if there is one (True); `sqlite3.OperationalError` if it stays
        taken for `lock_timeout` (the batch then fails like any SQLite lock timeout)."""
        if self._write_lock is None:
            return False
        if not self._write_lock.exclusive_within(self._lock_timeout):
            message = (
                f"database is locked: another process held the spool's write lock for "
                f"{self._lock_timeout:g} s"
            )
            raise sqlite3.OperationalError(message)
        return True

    def _unlock(self) -> None:
        assert self._write_lock is not None
        try:
            self._write_lock.unlock()
        except OSError as exc:  # cannot happen on an open flock; never leave a batch unanswered
            log.error("spool write lock could not be released: %s", exc)

    @staticmethod
    def _run_job(connection: sqlite3.Connection, work: Work) -> tuple[Any, BaseException | None]:
        connection.execute("SAVEPOINT job")
        try:
            result = work(connection)
        except sqlite3.Error:
            raise  # the storage failed: the whole batch goes
        except Exception as exc:  # this job's own problem: undo it alone
            connection.execute("ROLLBACK TO job")
            connection.execute("RELEASE job")
            return None, exc
        connection.execute("RELEASE job")
        return result, None

    def _rollback(self) -> None:
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        except sqlite3.Error as exc:  # SQLite may already have rolled back (SQLITE_FULL)
            log.warning("spool rollback after a failed write: %s", exc)
