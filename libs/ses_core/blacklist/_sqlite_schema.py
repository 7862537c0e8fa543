"""The tables of the SQLite blacklist file, their versions, and how rows map to entries.

Schema versions (`PRAGMA user_version`): 1 = the blacklist and its feedback ids; 2 adds the
pending tables of `record_occurrence`. Opening a version-1 file migrates it in place (tables
added, nothing rewritten); a file of a newer version than this code knows is refused.
"""

from __future__ import annotations

import logging
import sqlite3

from ses_core.blacklist._model import BlacklistEntry
from ses_core.blacklist._private import format_time, parse_time

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
COLUMNS = "address, reason, detail, feedback_id, message_id, first_seen, last_seen, count"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blacklist (
    address     TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    detail      TEXT,
    feedback_id TEXT,
    message_id  TEXT,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    count       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist_feedback (
    address     TEXT NOT NULL,
    feedback_id TEXT NOT NULL,
    PRIMARY KEY (address, feedback_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist_pending (
    address     TEXT PRIMARY KEY,
    count       INTEGER NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist_pending_feedback (
    address     TEXT NOT NULL,
    feedback_id TEXT NOT NULL,
    PRIMARY KEY (address, feedback_id)
) WITHOUT ROWID;
"""

Row = tuple[str, str, str | None, str | None, str | None, str, str, int]


def migrate(tx: sqlite3.Connection, path: str) -> None:
    """Create or upgrade the schema inside the caller's transaction."""
    version = tx.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        message = f"schema version {version}, this code knows {SCHEMA_VERSION}"
        raise sqlite3.DatabaseError(message)
    # Every table is CREATE IF NOT EXISTS, so the same script creates a new file and migrates an
    # older one (version 1 lacks only the pending tables).
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            tx.execute(statement)
    if version != SCHEMA_VERSION:
        if version:
            log.info("SQLite blacklist %s: migrated schema %d -> %d", path, version, SCHEMA_VERSION)
        tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def entry_from_row(row: Row) -> BlacklistEntry:
    """Read a `blacklist` row selected as `COLUMNS`."""
    address, reason, detail, feedback_id, message_id, first_seen, last_seen, count = row
    return BlacklistEntry(
        address=address,
        reason=reason,
        detail=detail,
        feedback_id=feedback_id,
        message_id=message_id,
        first_seen=parse_time(first_seen),
        last_seen=parse_time(last_seen),
        count=count,
    )


def row_from_entry(entry: BlacklistEntry) -> Row:
    """The `blacklist` row, in `COLUMNS` order, that stores `entry`."""
    return (
        entry.address,
        str(entry.reason),
        entry.detail,
        entry.feedback_id,
        entry.message_id,
        format_time(entry.first_seen),
        format_time(entry.last_seen),
        entry.count,
    )


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether the error means "locked by another connection", not a broken file."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)
