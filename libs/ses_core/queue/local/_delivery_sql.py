"""The delivery workers' statements: find due messages, read a body, record an attempt.

Every read walks an index and stops early (oldest due first via `messages_due`, a body by its
rowid), so their cost does not grow with the queue's length. The due-order reads name their index
(`INDEXED BY messages_due`): left to itself the planner may prefer `messages_by_state` and sort
every queued row, which a test with 20,000 messages caught.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable

from ses_core.errors import SpoolCorrupt
from ses_core.queue._model import NewMessage, QueuedEnvelope, QueuedMessage
from ses_core.queue.local._schema import (
    COLUMNS,
    envelope_to_json,
    insert_message,
    queued_message,
)


def due_messages(
    connection: sqlite3.Connection, now: float, limit: int, skip: frozenset[int]
) -> tuple[tuple[QueuedMessage, ...], tuple[int, ...]]:
    """Up to `limit` queued messages due at `now`, oldest due first, leaving out `skip` (ids
    leased by this process: they are still due in the file, so read that many more); and the
    ids of due rows whose envelope does not parse (to set aside, so they cannot stall the queue).
    """
    rows = connection.execute(
        f"SELECT {COLUMNS} FROM messages INDEXED BY messages_due"
        " WHERE state = 'queued' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (now, limit + len(skip)),
    ).fetchall()
    found: list[QueuedMessage] = []
    unreadable: list[int] = []
    for row in rows:
        if row[0] in skip or len(found) >= limit:
            continue
        try:
            found.append(queued_message(row))
        except (ValueError, KeyError, TypeError):
            unreadable.append(row[0])
    return tuple(found), tuple(unreadable)


def set_aside_unreadable(tx: sqlite3.Connection, rowids: Iterable[int], now: float) -> None:
    """Dead-letter rows whose envelope does not parse, keeping the stored text for an operator."""
    for rowid in rowids:
        tx.execute(
            "UPDATE messages SET state = 'dead', last_error = 'unreadable envelope',"
            " next_attempt_at = ? WHERE id = ? AND state = 'queued'",
            (now, rowid),
        )


def earliest_due(connection: sqlite3.Connection, skip: frozenset[int]) -> float | None:
    """The due time of the earliest queued message not in `skip`."""
    rows = connection.execute(
        "SELECT id, next_attempt_at FROM messages INDEXED BY messages_due"
        " WHERE state = 'queued'"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (len(skip) + 1,),
    ).fetchall()
    return next((due for rowid, due in rows if rowid not in skip), None)


def read_body(connection: sqlite3.Connection, rowid: int) -> bytes:
    """The body as stored; `SpoolCorrupt` when it is missing or fails its CRC32."""
    row = connection.execute("SELECT crc, data FROM bodies WHERE id = ?", (rowid,)).fetchone()
    if row is None:
        message = f"message {rowid}: no body in the spool"
        raise SpoolCorrupt(message)
    crc, data = row
    data = bytes(data)
    if zlib.crc32(data) != crc:
        message = f"message {rowid}: body checksum mismatch (stored {crc}, read {zlib.crc32(data)})"
        raise SpoolCorrupt(message)
    return data


def settle(
    tx: sqlite3.Connection,
    rowid: int,
    envelope: QueuedEnvelope,
    next_attempt_at: float | None,
    last_error: str,
    notices: Iterable[NewMessage],
) -> None:
    """Record an attempt and queue its notices in the caller's transaction."""
    for notice in notices:
        insert_message(tx, notice)
    if not envelope.pending:
        tx.execute("DELETE FROM messages WHERE id = ?", (rowid,))
        return
    tx.execute(
        "UPDATE messages SET envelope = ?, pending = ?, attempts = attempts + 1,"
        " next_attempt_at = ?, last_error = ? WHERE id = ?",
        (envelope_to_json(envelope), len(envelope.pending), next_attempt_at, last_error, rowid),
    )


def dead_letter(
    tx: sqlite3.Connection, rowid: int, envelope: QueuedEnvelope, reason: str, now: float
) -> None:
    """Set the message aside (kept with its body) for an operator."""
    tx.execute(
        "UPDATE messages SET state = 'dead', envelope = ?, pending = ?, last_error = ?,"
        " next_attempt_at = ? WHERE id = ?",
        (envelope_to_json(envelope), len(envelope.pending), reason, now, rowid),
    )
