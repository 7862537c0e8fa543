"""The operator's statements (`queue list/show/retry/delete/requeue/stats`) as functions of a
connection, so the spool runs them on its reader or as jobs of its group-commit writer.

They may run in another process than the relay's (the `queue` command opens the same file):
SQLite's locking serialises the two writers, WAL lets each read while the other writes, and the
counters live in the file (kept by triggers), so an operator's delete is reflected in the
relay's `stats()` at once. A message the relay has leased may be deleted or retried meanwhile;
the relay's later `settle` then finds no row (nothing to update) or overwrites the due time.
"""

from __future__ import annotations

import sqlite3

import attrs

from ses_core.queue._model import (
    MessageSummary,
    QueueFilter,
    RecipientState,
    SpoolStats,
)
from ses_core.queue.local._schema import (
    COLUMNS,
    envelope_from_json,
    envelope_to_json,
    parse_id,
    summary,
)


def list_messages(
    connection: sqlite3.Connection, where: QueueFilter, now: float
) -> tuple[MessageSummary, ...]:
    """Messages matching `where`, oldest first (walks an index in age order, stops at limit)."""
    clauses: list[str] = []
    parameters: list[object] = []
    if where.state is not None:
        clauses.append("state = ?")
        parameters.append(where.state.value)
    if where.min_age is not None:
        clauses.append("received_at <= ?")
        parameters.append(now - where.min_age)
    if where.sender_domain is not None:
        clauses.append("sender_domain = ?")
        parameters.append(where.sender_domain.lower())
    condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(
        f"SELECT {COLUMNS} FROM messages {condition} ORDER BY received_at, id LIMIT ?",
        (*parameters, max(where.limit, 0)),
    ).fetchall()
    return tuple(summary(row) for row in rows)


def show(connection: sqlite3.Connection, message_id: str) -> MessageSummary | None:
    """One message, queued or dead, or None."""
    rowid = parse_id(message_id)
    if rowid is None:
        return None
    row = connection.execute(f"SELECT {COLUMNS} FROM messages WHERE id = ?", (rowid,)).fetchone()
    return summary(row) if row is not None else None


def retry_now(connection: sqlite3.Connection, message_id: str, now: float) -> bool:
    """Make a queued message due at `now`."""
    rowid = parse_id(message_id)
    if rowid is None:
        return False
    cursor = connection.execute(
        "UPDATE messages SET next_attempt_at = ? WHERE id = ? AND state = 'queued'", (now, rowid)
    )
    return cursor.rowcount > 0


def delete(connection: sqlite3.Connection, message_id: str) -> bool:
    """Remove a message and (by trigger) its body and its share of the counters."""
    rowid = parse_id(message_id)
    if rowid is None:
        return False
    return connection.execute("DELETE FROM messages WHERE id = ?", (rowid,)).rowcount > 0


def requeue(connection: sqlite3.Connection, message_id: str, now: float) -> bool:
    """Dead -> queued, its FAILED recipients PENDING again, due at `now`."""
    rowid = parse_id(message_id)
    if rowid is None:
        return False
    row = connection.execute(
        "SELECT envelope FROM messages WHERE id = ? AND state = 'dead'", (rowid,)
    ).fetchone()
    if row is None:
        return False
    envelope = envelope_from_json(row[0])
    envelope = envelope.with_recipients(
        attrs.evolve(r, state=RecipientState.PENDING) if r.state is RecipientState.FAILED else r
        for r in envelope.recipients
    )
    connection.execute(
        "UPDATE messages SET state = 'queued', envelope = ?, pending = ?, next_attempt_at = ?"
        " WHERE id = ?",
        (envelope_to_json(envelope), len(envelope.pending), now, rowid),
    )
    return True


def read_stats(connection: sqlite3.Connection, free_bytes: int | None) -> SpoolStats:
    """The counters row and the oldest queued message: two index seeks, one statement."""
    messages, recipients, dead, oldest = connection.execute(
        "SELECT messages, recipients, dead, (SELECT received_at FROM messages"
        " WHERE state = 'queued' ORDER BY received_at LIMIT 1) FROM spool_stats"
    ).fetchone()
    return SpoolStats(
        messages=messages,
        recipients=recipients,
        oldest_received_at=oldest,
        dead_letters=dead,
        free_bytes=free_bytes,
    )


def queued_count(connection: sqlite3.Connection) -> int:
    """Queued messages, from the counters row."""
    return int(connection.execute("SELECT messages FROM spool_stats").fetchone()[0])
