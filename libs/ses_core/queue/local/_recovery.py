"""Opening the spool file: SQLite's own crash recovery, a cheap sanity check, and what to do with
a file that is not a usable spool.

A crash (kill -9, power cut) needs nothing from us: SQLite replays the committed transactions of
the WAL on the next open and ignores the torn tail of one that never committed.

A damaged file (overwritten, truncated, "database disk image is malformed") must neither crash
the relay at every restart nor be deleted: it may hold mail an operator can still salvage. So it
is moved aside into `<dir>/corrupt/<UTC time>/`, logged at ERROR, reported in `RecoveryReport`,
and the relay starts on a fresh file. The check is cheap on purpose (O(log n), not SQLite's
`integrity_check`, which reads every page and would make a restart with a deep queue slow): the
file header, the schema, the counters row and the ends of each table and index, after folding
the WAL into the main file (SQLite itself refuses a file shorter than the page count in its
header, i.e. a truncated one). Damage deeper inside is met at read time: an unreadable page
fails that read (SpoolUnavailable), an unreadable envelope raises SpoolCorrupt, a body failing
its CRC32 raises SpoolCorrupt from `body()` and delivery dead-letters the message.

To salvage a file set aside: `sqlite3 corrupt/<time>/spool.sqlite3 .recover | sqlite3 out.db`
keeps every row SQLite can still read; rows of `messages`/`bodies` with the same id belong
together, and a body is intact when its CRC32 matches the `crc` column.

Only a process that has the spool to itself (an exclusive lock on `spool.lock`) checks or moves
anything: the `queue` command opening the spool next to a running relay must never move the
relay's file away.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from ses_core.errors import SpoolUnavailable
from ses_core.queue.local._disk import create_private_file, fsync_directory, prepare_directory
from ses_core.queue.local._schema import create_schema

log = logging.getLogger(__name__)

DB_NAME = "spool.sqlite3"
_SUFFIXES = ("", "-wal", "-shm")
_MAGIC = b"SQLite format 3\x00"
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_PROBES = (
    "SELECT count(*) FROM sqlite_master",
    "SELECT messages, recipients, dead FROM spool_stats",
    "SELECT max(id) FROM messages",
    "SELECT min(id) FROM messages",
    "SELECT max(id) FROM bodies",
    "SELECT min(id) FROM bodies",
    "SELECT id FROM messages INDEXED BY messages_due WHERE state = 'queued'"
    " ORDER BY next_attempt_at LIMIT 1",
    "SELECT id FROM messages INDEXED BY messages_due WHERE state = 'queued'"
    " ORDER BY next_attempt_at DESC LIMIT 1",
    "SELECT received_at FROM messages ORDER BY received_at LIMIT 1",
    "SELECT received_at FROM messages ORDER BY received_at DESC LIMIT 1",
    "SELECT state FROM messages ORDER BY state, received_at LIMIT 1",
    "SELECT state FROM messages ORDER BY state DESC, received_at DESC LIMIT 1",
)


@attrs.frozen
class RecoveryReport:
    """What opening the spool found.

    Attributes:
        checked: the file was checked (this process had the spool to itself); False when
            another process (a running relay) had it open, so nothing was checked or moved.
        moved_aside: the `corrupt/<time>` directory the damaged files were moved into, or None.
        reason: why they were moved ("" when nothing was).
    """

    checked: bool
    moved_aside: Path | None = None
    reason: str = ""

    @property
    def recovered(self) -> bool:
        """A damaged spool file was set aside and a fresh one started."""
        return self.moved_aside is not None


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode with `synchronous=FULL`: every commit fsyncs the WAL.

    NORMAL would sync only at checkpoints, and a power cut could then lose transactions that
    had already been answered 250. (The group-commit writer switches its own connection to
    NORMAL because it fdatasyncs the WAL itself after each commit: see `_writer`.) Autocommit mode
    (`isolation_level=None`): every write
    transaction is an explicit `BEGIN IMMEDIATE ... COMMIT`.
    """
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = OFF")
    except BaseException:
        connection.close()
        raise
    return connection


def is_corruption(exc: sqlite3.Error) -> bool:
    """The file is damaged or not a database (as opposed to busy, full or unreadable)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def open_spool_file(
    directory: Path, *, exclusive: bool, busy_timeout: float, clock: Callable[[], float]
) -> RecoveryReport:
    """Make `<directory>/spool.sqlite3` a usable spool file, recovering from damage if we may."""
    path = directory / DB_NAME
    if not exclusive:
        try:
            _initialise(path, busy_timeout, clock, check=False)
        except sqlite3.Error as exc:
            message = f"spool {path} cannot be opened: {exc}"
            raise SpoolUnavailable(message) from exc
        return RecoveryReport(checked=False)
    reason = _header_problem(path)
    if not reason:
        try:
            _initialise(path, busy_timeout, clock, check=True)
            return RecoveryReport(checked=True)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                message = f"spool {path} cannot be opened: {exc}"
                raise SpoolUnavailable(message) from exc
            reason = str(exc)
    moved_to = _move_aside(directory, clock)
    log.error(
        "spool file %s is damaged (%s); moved it to %s and started a fresh spool; the mail in it "
        "is NOT delivered until an operator salvages it",
        path,
        reason,
        moved_to,
    )
    try:
        _initialise(path, busy_timeout, clock, check=False)
    except sqlite3.Error as exc:
        message = f"fresh spool {path} cannot be created: {exc}"
        raise SpoolUnavailable(message) from exc
    return RecoveryReport(checked=True, moved_aside=moved_to, reason=reason)


def _header_problem(path: Path) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ""
    if size == 0:
        return ""  # an empty file is an empty database to SQLite
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "not an SQLite database (bad header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"bad page size {page_size} in the header"
    return ""


def _initialise(path: Path, busy_timeout: float, clock: Callable[[], float], check: bool) -> None:
    created = not path.exists()
    create_private_file(path)
    connection = connect(path, busy_timeout)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            create_schema(connection, clock())
            connection.execute("COMMIT")
        except BaseException:
            connection.rollback()
            raise
        if check:
            _check(connection)
    finally:
        connection.close()
    if created or check:
        # The db file (created above) and the WAL (created by the first write) now have
        # directory entries; make them durable once. SQLite also syncs the directory when it
        # creates a WAL later (unix VFS), so this is the only explicit directory sync needed.
        fsync_directory(path.parent)


def _check(connection: sqlite3.Connection) -> None:
    # Fold the WAL into the main file first: then SQLite's own check at the next read (a file
    # shorter than the page count in its header is SQLITE_CORRUPT) covers every page.
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    for probe in _PROBES:
        connection.execute(probe).fetchall()


def _move_aside(directory: Path, clock: Callable[[], float]) -> Path:
    corrupt = directory / "corrupt"
    prepare_directory(corrupt)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    target = corrupt / stamp
    counter = 1
    while target.exists():
        target = corrupt / f"{stamp}-{counter}"
        counter += 1
    prepare_directory(target)
    for suffix in _SUFFIXES:
        source = directory / (DB_NAME + suffix)
        if source.exists():
            source.rename(target / source.name)
    fsync_directory(target)
    fsync_directory(directory)
    return target
