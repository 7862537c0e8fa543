"""The blacklist in one SQLite file: the relay's embedded default when there is no AWS.

Several relay processes may read the file while one writer (the operator CLI, a local
notification consumer) updates it:
- WAL journal mode, so readers never block the writer and the writer never blocks readers;
- a busy timeout, so a second writer waits for the lock instead of failing at once;
- one connection per thread (sqlite3 connections must not be shared between threads mid-use),
  all closed by `close()`;
- every write in a `BEGIN IMMEDIATE` transaction, so read-modify-write of an entry is atomic
  across processes.

Keep the file on a local filesystem: WAL needs shared memory between the processes, so readers
and the writer must run on the same host (a Docker volume is fine, NFS is not).

Idempotency is exact here: every feedback id recorded for an address is kept (table
`blacklist_feedback`), so a duplicate of any earlier event, older or newer, changes nothing.
`remove` and `put` forget the address's feedback ids with the entry.

Soft events counted by `record_occurrence` live in their own tables (`blacklist_pending` and
`blacklist_pending_feedback`), which lookups and listings never read; `remove` forgets them too.
The schema and its versions are in `_sqlite_schema.py`.

Every `sqlite3.Error` (locked past the busy timeout, unreadable or corrupt file, disk full)
raises `BlacklistUnavailable`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

from ses_core.addresses import normalize_address
from ses_core.blacklist._model import (
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    OccurrenceResult,
    OccurrenceTally,
)
from ses_core.blacklist._private import (
    format_time,
    normalize_all,
    parse_time,
    require_page_args,
    require_threshold,
)
from ses_core.blacklist._sqlite_schema import (
    COLUMNS,
    Row,
    entry_from_row,
    is_busy,
    migrate,
    row_from_entry,
)
from ses_core.errors import BlacklistUnavailable, LookupWouldBlock

log = logging.getLogger(__name__)

T = TypeVar("T")

# Well below SQLite's bound-parameter limit (999 on old builds).
_IN_CHUNK = 500


class SqliteBlacklist:
    """A `Blacklist` in the SQLite file at `path` (created with its schema if missing).

    `busy_timeout` is how long (seconds) a statement waits for another process's write lock
    before failing with `BlacklistUnavailable`. Use as a context manager or call `close()`.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            # Each thread's connection would see its own empty database.
            raise ValueError(
                "an in-memory SQLite blacklist is per-connection; use InMemoryBlacklist"
            )
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._guard("open", self._create_schema)

    # -- Blacklist -------------------------------------------------------------------------

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        keys = list(normalize_all(addresses))
        if not keys:
            return {}
        return self._guard("lookup", lambda: self._select_many(self._connection(), keys))

    def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """`lookup_many` without waiting: on a connection whose busy timeout is zero, so a
        database locked by another process raises `LookupWouldBlock` instead of waiting for it.
        In WAL mode readers are almost never locked out, and an indexed read of a file in the
        page cache is cheaper than a thread hop: safe on an event loop (`InstantLookup`)."""
        keys = list(normalize_all(addresses))
        if not keys:
            return {}
        try:
            return self._select_many(self._connection(instant=True), keys)
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                raise LookupWouldBlock(f"SQLite blacklist {self.path!r} is locked") from exc
            message = f"SQLite blacklist {self.path!r}: lookup failed: {exc}"
            raise BlacklistUnavailable(message) from exc

    def get(self, address: str) -> BlacklistEntry | None:
        key = normalize_address(address)
        return self._guard("get", lambda: self._select(self._connection(), key))

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        def write() -> BlacklistEntry:
            with self._transaction() as connection:
                return self._record_in(connection, event)

        return self._guard("record", write)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        require_threshold(threshold)
        key = event.address

        def write() -> OccurrenceResult:
            with self._transaction() as connection:
                duplicate = False
                if event.feedback_id is not None:
                    duplicate = (
                        connection.execute(
                            "INSERT OR IGNORE INTO blacklist_pending_feedback "
                            "(address, feedback_id) VALUES (?, ?)",
                            (key, event.feedback_id),
                        ).rowcount
                        == 0
                    )
                row = connection.execute(
                    "SELECT count, first_seen, last_seen FROM blacklist_pending WHERE address = ?",
                    (key,),
                ).fetchone()
                tally = (
                    None
                    if row is None
                    else OccurrenceTally(row[0], parse_time(row[1]), parse_time(row[2]))
                )
                if tally is None or not duplicate:
                    duplicate = False
                    tally = OccurrenceTally.first(event) if tally is None else tally.counted(event)
                    connection.execute(
                        "INSERT OR REPLACE INTO blacklist_pending "
                        "(address, count, first_seen, last_seen) VALUES (?, ?, ?, ?)",
                        (
                            key,
                            tally.count,
                            format_time(tally.first_seen),
                            format_time(tally.last_seen),
                        ),
                    )
                result = OccurrenceResult(key, tally.count, threshold, duplicate, entry=None)
                if tally.count < threshold:
                    return result
                current = self._select(connection, key)
                if current is None:
                    entry = tally.entry_for(event)
                    self._replace(connection, entry)
                elif duplicate:
                    entry = current
                else:
                    entry = self._record_in(connection, event)
                return OccurrenceResult(key, tally.count, threshold, duplicate, entry=entry)

        return self._guard("record_occurrence", write)

    def put(self, entry: BlacklistEntry) -> None:
        def write() -> None:
            with self._transaction() as connection:
                self._replace(connection, entry)

        self._guard("put", write)

    def remove(self, address: str) -> bool:
        key = normalize_address(address)

        def write() -> bool:
            with self._transaction() as connection:
                for table in (
                    "blacklist_feedback",
                    "blacklist_pending",
                    "blacklist_pending_feedback",
                ):
                    connection.execute(f"DELETE FROM {table} WHERE address = ?", (key,))
                cursor = connection.execute("DELETE FROM blacklist WHERE address = ?", (key,))
                return cursor.rowcount > 0

        return self._guard("remove", write)

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        """Entries in address order; the cursor is the last address of the previous page."""
        require_page_args(limit, cursor)

        def query() -> list[Row]:
            rows: list[Row] = (
                self._connection()
                .execute(
                    f"SELECT {COLUMNS} FROM blacklist WHERE address > ? "
                    "ORDER BY address LIMIT ?",
                    (cursor or "", limit + 1),
                )
                .fetchall()
            )
            return rows

        rows = self._guard("list", query)
        entries = tuple(entry_from_row(row) for row in rows[:limit])
        next_cursor = entries[-1].address if len(rows) > limit else None
        return BlacklistPage(entries=entries, next_cursor=next_cursor)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every thread's connection; later calls raise `BlacklistUnavailable`."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def __enter__(self) -> SqliteBlacklist:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _connection(self, *, instant: bool = False) -> sqlite3.Connection:
        """This thread's connection; `instant` ones never wait for a lock (busy timeout 0)."""
        name = "instant" if instant else "connection"
        connection: sqlite3.Connection | None = getattr(self._local, name, None)
        if connection is not None and not self._closed:
            return connection
        busy_timeout = 0.0 if instant else self._busy_timeout
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the blacklist was closed")
            # check_same_thread=False only so that close() may close it from another thread;
            # each connection is otherwise used by its own thread alone.
            connection = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            self._connections.append(connection)
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        setattr(self._local, name, connection)
        return connection

    def _create_schema(self) -> None:
        connection = self._connection()
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite blacklist %s: journal mode is %s, not WAL", self.path, mode)
        with self._transaction() as tx:
            migrate(tx, self.path)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @staticmethod
    def _select_many(connection: sqlite3.Connection, keys: list[str]) -> dict[str, BlacklistEntry]:
        found: dict[str, BlacklistEntry] = {}
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(
                f"SELECT {COLUMNS} FROM blacklist WHERE address IN ({marks})", chunk
            ).fetchall()
            for row in rows:
                entry = entry_from_row(row)
                found[entry.address] = entry
        return found

    @staticmethod
    def _select(connection: sqlite3.Connection, key: str) -> BlacklistEntry | None:
        row = connection.execute(
            f"SELECT {COLUMNS} FROM blacklist WHERE address = ?", (key,)
        ).fetchone()
        return None if row is None else entry_from_row(row)

    @classmethod
    def _record_in(cls, connection: sqlite3.Connection, event: BlacklistEvent) -> BlacklistEntry:
        """`record` inside the caller's transaction."""
        current = cls._select(connection, event.address)
        if event.feedback_id is not None:
            inserted = connection.execute(
                "INSERT OR IGNORE INTO blacklist_feedback (address, feedback_id) VALUES (?, ?)",
                (event.address, event.feedback_id),
            ).rowcount
            if inserted == 0 and current is not None:
                log.info(
                    "feedback %s for %s already recorded; ignoring duplicate",
                    event.feedback_id,
                    event.address,
                )
                return current
        entry = BlacklistEntry.from_event(event) if current is None else current.merged_with(event)
        cls._upsert(connection, entry)
        return entry

    @classmethod
    def _replace(cls, connection: sqlite3.Connection, entry: BlacklistEntry) -> None:
        """`put` inside the caller's transaction: the entry, remembering only its feedback id."""
        connection.execute("DELETE FROM blacklist_feedback WHERE address = ?", (entry.address,))
        if entry.feedback_id is not None:
            connection.execute(
                "INSERT INTO blacklist_feedback (address, feedback_id) VALUES (?, ?)",
                (entry.address, entry.feedback_id),
            )
        cls._upsert(connection, entry)

    @staticmethod
    def _upsert(connection: sqlite3.Connection, entry: BlacklistEntry) -> None:
        connection.execute(
            f"INSERT OR REPLACE INTO blacklist ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            row_from_entry(entry),
        )

    def _guard(self, operation: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except sqlite3.Error as exc:
            message = f"SQLite blacklist {self.path!r}: {operation} failed: {exc}"
            raise BlacklistUnavailable(message) from exc
