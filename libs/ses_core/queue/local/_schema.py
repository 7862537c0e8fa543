"""The tables of the spool file and how rows map to the queue's values.

Two tables hold the messages: `messages` (envelope as JSON, state, due time, counters used by
the indexes) and `bodies` (the RFC 5322 bytes as a BLOB with their CRC32, checked on every read:
SQLite checksums nothing, so a flipped bit would otherwise be delivered). Bodies live apart so
that leasing, listing and counting never page a body in.

`spool_stats` is one row of counters (queued messages, their PENDING recipients, dead letters)
kept by triggers in the same transaction as the change that moves them. Whoever writes (the
relay, or the `queue` command in another process) keeps them right, and reading them is one row,
never a scan of a queue that may hold a million messages.

Indexes: `messages_due` (next_attempt_at, then rowid) over QUEUED rows only, so the oldest due
message is an index seek; `messages_by_state` (state, received_at) for the oldest queued message
and operator listings of one state; `messages_by_age` (received_at) for listings of both.

Schema versions (`PRAGMA user_version` and the envelope's "v" key): 1 is this layout. A file of a
newer version is refused rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from typing import Any

from ses_core.queue._model import (
    MessageState,
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
    QueuedMessage,
    RecipientState,
    SpooledRecipient,
)

SCHEMA_VERSION = 1
ENVELOPE_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    state           TEXT NOT NULL,
    envelope        TEXT NOT NULL,
    sender_domain   TEXT NOT NULL,
    received_at     REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    pending         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bodies (
    id   INTEGER PRIMARY KEY,
    crc  INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_stats (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    messages    INTEGER NOT NULL,
    recipients  INTEGER NOT NULL,
    dead        INTEGER NOT NULL
);
INSERT OR IGNORE INTO spool_stats VALUES (1, 0, 0, 0);
CREATE INDEX IF NOT EXISTS messages_due ON messages (next_attempt_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS messages_by_state ON messages (state, received_at);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (received_at);
CREATE TRIGGER IF NOT EXISTS messages_counted_in AFTER INSERT ON messages BEGIN
    UPDATE spool_stats SET
        messages = messages + (NEW.state = 'queued'),
        recipients = recipients + (NEW.state = 'queued') * NEW.pending,
        dead = dead + (NEW.state = 'dead');
END;
CREATE TRIGGER IF NOT EXISTS messages_counted_out AFTER DELETE ON messages BEGIN
    UPDATE spool_stats SET
        messages = messages - (OLD.state = 'queued'),
        recipients = recipients - (OLD.state = 'queued') * OLD.pending,
        dead = dead - (OLD.state = 'dead');
    DELETE FROM bodies WHERE id = OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS messages_recounted AFTER UPDATE OF state, pending ON messages BEGIN
    UPDATE spool_stats SET
        messages = messages - (OLD.state = 'queued') + (NEW.state = 'queued'),
        recipients = recipients - (OLD.state = 'queued') * OLD.pending
            + (NEW.state = 'queued') * NEW.pending,
        dead = dead - (OLD.state = 'dead') + (NEW.state = 'dead');
END;
"""

COLUMNS = "id, state, envelope, attempts, next_attempt_at, last_error"
Row = tuple[int, str, str, int, float, str]


def create_schema(tx: sqlite3.Connection, now: float) -> None:
    """Create the tables (idempotent) inside the caller's transaction; refuse newer files.

    A new file's ids start at `now` (seconds) times a million, so a spool recreated after its
    file was moved aside never reuses an id that logs and DSNs already mention.
    """
    version = tx.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        message = f"spool schema version {version}; this code knows up to {SCHEMA_VERSION}"
        raise sqlite3.DatabaseError(message)
    for statement in _statements(_DDL):
        tx.execute(statement)
    if version == 0:
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', ? WHERE NOT EXISTS"
            " (SELECT 1 FROM sqlite_sequence WHERE name = 'messages')",
            (int(now) * 1_000_000,),
        )
    if version < SCHEMA_VERSION:
        tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _statements(script: str) -> list[str]:
    # Split on the ends of complete statements (a trigger body holds semicolons of its own).
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements


def sender_domain(sender: str) -> str:
    """The lower-cased domain of an envelope sender ("" for the null sender)."""
    return sender.rpartition("@")[2].lower() if "@" in sender else ""


def envelope_to_json(envelope: QueuedEnvelope) -> str:
    """The stored form of an envelope (versioned, so a later layout can still read it)."""
    return json.dumps(
        {
            "v": ENVELOPE_VERSION,
            "sender": envelope.sender,
            "recipients": [
                [r.address, r.state.value, r.attempts, r.code, r.text, r.ambiguous_resends]
                for r in envelope.recipients
            ],
            "received_at": envelope.received_at,
            "smtputf8": envelope.smtputf8,
            "eightbit": envelope.eightbit,
            "transaction_id": envelope.transaction_id,
            "size": envelope.size,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def envelope_from_json(text: str) -> QueuedEnvelope:
    """Inverse of `envelope_to_json`."""
    data: dict[str, Any] = json.loads(text)
    if data.get("v") != ENVELOPE_VERSION:
        message = f"envelope version {data.get('v')!r} is not {ENVELOPE_VERSION}"
        raise ValueError(message)
    return QueuedEnvelope(
        sender=data["sender"],
        recipients=tuple(
            SpooledRecipient(address, RecipientState(state), attempts, code, text, resends)
            for address, state, attempts, code, text, resends in data["recipients"]
        ),
        received_at=data["received_at"],
        smtputf8=data["smtputf8"],
        eightbit=data["eightbit"],
        transaction_id=data["transaction_id"],
        size=data["size"],
    )


def insert_message(tx: sqlite3.Connection, message: NewMessage) -> str:
    """Store a new QUEUED message and its body; returns its id."""
    envelope = message.envelope
    due = message.not_before if message.not_before is not None else envelope.received_at
    cursor = tx.execute(
        "INSERT INTO messages (state, envelope, sender_domain, received_at, next_attempt_at,"
        " pending) VALUES ('queued', ?, ?, ?, ?, ?)",
        (
            envelope_to_json(envelope),
            sender_domain(envelope.sender),
            envelope.received_at,
            due,
            len(envelope.pending),
        ),
    )
    rowid = cursor.lastrowid
    assert rowid is not None  # an INSERT into a rowid table always sets it
    tx.execute(
        "INSERT INTO bodies (id, crc, data) VALUES (?, ?, ?)",
        (rowid, zlib.crc32(message.data), message.data),
    )
    return str(rowid)


def parse_id(message_id: str) -> int | None:
    """The rowid behind a message id, None for text that is no id of this spool."""
    try:
        value = int(message_id)
    except ValueError:
        return None
    return value if value > 0 and str(value) == message_id else None


def queued_message(row: Row) -> QueuedMessage:
    """A leased message from a `COLUMNS` row."""
    rowid, _state, envelope, attempts, next_attempt_at, last_error = row
    return QueuedMessage(
        str(rowid), envelope_from_json(envelope), attempts, next_attempt_at, last_error
    )


def summary(row: Row) -> MessageSummary:
    """An operator's view of a `COLUMNS` row."""
    rowid, state, envelope, attempts, next_attempt_at, last_error = row
    return MessageSummary(
        str(rowid),
        MessageState(state),
        envelope_from_json(envelope),
        attempts,
        next_attempt_at,
        last_error,
    )
