"""Tests for the CLI's entry rendering: JSON Lines fields and the aligned table."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from blacklist_cli.output import MAX_DETAIL_WIDTH, entry_to_json, write_json_lines, write_table
from ses_core.blacklist import BlacklistEntry, BlacklistReason

T1 = datetime(2024, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)


def entry(
    address: str = "a@example.com", detail: str | None = "Permanent/General"
) -> BlacklistEntry:
    """A bounce entry seen twice."""
    return BlacklistEntry(
        address=address,
        reason=BlacklistReason.BOUNCE,
        detail=detail,
        feedback_id="fb-1",
        message_id="m-1",
        first_seen=T1,
        last_seen=T1,
        count=2,
    )


def test_json_fields_are_stable_and_complete() -> None:
    """Every entry field appears under a stable name, times as ISO-8601 UTC."""
    assert entry_to_json(entry()) == {
        "address": "a@example.com",
        "reason": "bounce",
        "detail": "Permanent/General",
        "feedback_id": "fb-1",
        "message_id": "m-1",
        "first_seen": "2024-03-01T12:00:05.123456+00:00",
        "last_seen": "2024-03-01T12:00:05.123456+00:00",
        "count": 2,
    }


def test_json_lines_writes_one_object_per_line() -> None:
    """Each entry is one line of JSON, and the count written is returned."""
    out = io.StringIO()
    assert write_json_lines(iter([entry("a@example.com"), entry("b@example.com")]), out) == 2
    assert [json.loads(line)["address"] for line in out.getvalue().splitlines()] == [
        "a@example.com",
        "b@example.com",
    ]


def test_table_aligns_columns_and_cuts_long_details() -> None:
    """Columns line up across rows, missing details show as '-', long ones are shortened."""
    out = io.StringIO()
    write_table([entry("a@example.com", None), entry("long.name@example.com", "x" * 100)], out)
    header, first, second = out.getvalue().splitlines()
    assert header.index("REASON") == first.index("bounce") == second.index("bounce")
    assert first.split()[2] == "-"
    assert ("x" * (MAX_DETAIL_WIDTH - 1) + "…") in second
    assert "2024-03-01 12:00:05" in first
