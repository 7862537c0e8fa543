"""How entries are shown: JSON Lines for scripts, an aligned table for people.

JSON output is one object per line (JSON Lines), written as pages arrive, so listing a large
table never holds it in memory and pipes straight into `jq`. Times are ISO-8601 UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from ses_core.blacklist import BlacklistEntry

#: Table columns: header and how to read the cell from an entry.
COLUMNS: tuple[str, ...] = ("ADDRESS", "REASON", "DETAIL", "COUNT", "FIRST_SEEN", "LAST_SEEN")
#: Long details (diagnostic texts, imported reasons) are cut so rows stay on one line.
MAX_DETAIL_WIDTH = 40


def entry_to_json(entry: BlacklistEntry) -> dict[str, Any]:
    """The entry as a JSON-ready dict (stable key names; `null` for unknown values)."""
    return {
        "address": entry.address,
        "reason": str(entry.reason),
        "detail": entry.detail,
        "feedback_id": entry.feedback_id,
        "message_id": entry.message_id,
        "first_seen": entry.first_seen.isoformat(),
        "last_seen": entry.last_seen.isoformat(),
        "count": entry.count,
    }


def write_json_lines(entries: Iterable[BlacklistEntry], out: TextIO) -> int:
    """Write one JSON object per entry; return how many were written."""
    written = 0
    for entry in entries:
        out.write(json.dumps(entry_to_json(entry), ensure_ascii=False, sort_keys=True) + "\n")
        written += 1
    return written


def _cells(entry: BlacklistEntry) -> tuple[str, ...]:
    detail = entry.detail or "-"
    if len(detail) > MAX_DETAIL_WIDTH:
        detail = detail[: MAX_DETAIL_WIDTH - 1] + "…"
    return (
        entry.address,
        str(entry.reason),
        detail,
        str(entry.count),
        entry.first_seen.strftime("%Y-%m-%d %H:%M:%S"),
        entry.last_seen.strftime("%Y-%m-%d %H:%M:%S"),
    )


def write_table(entries: Sequence[BlacklistEntry], out: TextIO) -> None:
    """Write an aligned table with a header row (times in UTC, to the second)."""
    rows = [COLUMNS, *(_cells(entry) for entry in entries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
