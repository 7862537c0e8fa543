"""How `relay queue` prints: a table or JSON lines for `list`, a block for `show` and `stats`.

The human forms are for an operator at a terminal (ages, not epoch seconds; long errors cut to
the table's width); `--json` gives every field, one object per line, for `jq` and scripts. Both
are built from the queue's values (`MessageSummary`, `SpoolStats`) alone, so any backend prints
the same way.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any

from ses_core.queue import MessageSummary, SpooledRecipient, SpoolStats

#: Width of the table's last column (the last error); the full text is in `show` and `--json`.
_ERROR_WIDTH = 60
_SENDER_WIDTH = 32


def age(seconds: float) -> str:
    """A short human age: `45s`, `12m`, `3h05m`, `2d04h` (negative ages read as `0s`)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def timestamp(epoch: float) -> str:
    """`epoch` as an ISO 8601 UTC time to the second."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(epoch: float, now: float) -> str:
    """A due time relative to `now`: `now` when due, else `in 5m`."""
    return "now" if epoch <= now else f"in {age(epoch - now)}"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _sender(address: str) -> str:
    return address or "<>"


def list_table(messages: Iterable[MessageSummary], now: float, limit: int | None = None) -> str:
    """`list`'s table: one line per message, a header, and a count line (saying so when
    `limit` cut the list)."""
    header = ("ID", "STATE", "AGE", "SIZE", "TRIES", "NEXT", "RCPTS", "SENDER", "LAST ERROR")
    rows = [header]
    count = 0
    for message in messages:
        envelope = message.envelope
        pending = len(envelope.pending)
        due = "-" if message.state.value == "dead" else _when(message.next_attempt_at, now)
        rows.append(
            (
                message.id,
                message.state.value,
                age(now - envelope.received_at),
                str(envelope.size),
                str(message.attempts),
                due,
                f"{pending}/{len(envelope.recipients)}",
                _cut(_sender(envelope.sender), _SENDER_WIDTH),
                _cut(message.last_error, _ERROR_WIDTH) or "-",
            )
        )
        count += 1
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]
    more = " (the limit: --limit N shows more)" if limit is not None and count >= limit else ""
    lines.append(f"{count} message{'' if count == 1 else 's'}{more}")
    return "\n".join(lines) + "\n"


def _recipient(recipient: SpooledRecipient) -> dict[str, Any]:
    return {
        "address": recipient.address,
        "state": recipient.state.value,
        "attempts": recipient.attempts,
        "code": recipient.code,
        "text": recipient.text,
        "ambiguous_resends": recipient.ambiguous_resends,
    }


def message_object(message: MessageSummary, now: float) -> dict[str, Any]:
    """Every field of `message`, JSON-ready (times as epoch seconds and ISO strings)."""
    envelope = message.envelope
    return {
        "id": message.id,
        "state": message.state.value,
        "sender": envelope.sender,
        "recipients": [_recipient(r) for r in envelope.recipients],
        "pending_recipients": len(envelope.pending),
        "received_at": envelope.received_at,
        "received": timestamp(envelope.received_at),
        "age_seconds": round(max(0.0, now - envelope.received_at), 3),
        "size": envelope.size,
        "smtputf8": envelope.smtputf8,
        "eightbit": envelope.eightbit,
        "transaction_id": envelope.transaction_id,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at,
        "last_error": message.last_error,
    }


def json_line(value: dict[str, Any]) -> str:
    """One compact JSON object and a newline."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True) + "\n"


def show_block(message: MessageSummary, now: float) -> str:
    """`show`'s block: the envelope, each recipient's state, the attempts and the last error."""
    envelope = message.envelope
    dead = message.state.value == "dead"
    lines = [
        f"id:            {message.id}",
        f"state:         {message.state.value}",
        f"sender:        {_sender(envelope.sender)}",
        f"received:      {timestamp(envelope.received_at)} ({age(now - envelope.received_at)} ago)",
        f"size:          {envelope.size} bytes"
        + (" smtputf8" if envelope.smtputf8 else "")
        + (" 8bitmime" if envelope.eightbit else ""),
        f"transaction:   {envelope.transaction_id or '-'}",
        f"attempts:      {message.attempts}",
    ]
    if dead:
        lines.append(f"dead-lettered: {timestamp(message.next_attempt_at)}")
    else:
        due = _when(message.next_attempt_at, now)
        lines.append(f"next attempt:  {timestamp(message.next_attempt_at)} ({due})")
    lines.append(f"last error:    {message.last_error or '-'}")
    lines.append(f"recipients:    {len(envelope.pending)} pending of {len(envelope.recipients)}")
    for recipient in envelope.recipients:
        reply = f"{recipient.code} {recipient.text}".strip() if recipient.code else "-"
        resends = (
            f", {recipient.ambiguous_resends} ambiguous resend(s)"
            if recipient.ambiguous_resends
            else ""
        )
        lines.append(
            f"  {recipient.address}  {recipient.state.value}, {recipient.attempts} attempt(s)"
            f"{resends}, last reply: {reply}"
        )
    return "\n".join(lines) + "\n"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{count} B"
        size /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def stats_object(stats: SpoolStats, now: float) -> dict[str, Any]:
    """`stats` as a JSON-ready object (`oldest_age_seconds` is null on an empty queue)."""
    oldest = stats.oldest_received_at
    return {
        "messages": stats.messages,
        "pending_recipients": stats.recipients,
        "oldest_received_at": oldest,
        "oldest_age_seconds": None if oldest is None else round(max(0.0, now - oldest), 3),
        "dead_letters": stats.dead_letters,
        "free_bytes": stats.free_bytes,
    }


def stats_block(stats: SpoolStats, now: float) -> str:
    """`stats` for a terminal."""
    oldest = stats.oldest_received_at
    if oldest is not None:
        oldest_text = f"{age(now - oldest)} (received {timestamp(oldest)})"
    else:
        oldest_text = "- (empty)" if stats.messages == 0 else "- (not reported by this spool)"
    free = "- (not local)" if stats.free_bytes is None else _bytes(stats.free_bytes)
    if stats.free_bytes is not None:
        free += f" ({stats.free_bytes})"
    return (
        f"messages:           {stats.messages}\n"
        f"pending recipients: {stats.recipients}\n"
        f"oldest age:         {oldest_text}\n"
        f"dead letters:       {stats.dead_letters}\n"
        f"free bytes:         {free}\n"
    )
