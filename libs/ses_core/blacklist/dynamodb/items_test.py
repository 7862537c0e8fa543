"""The DynamoDB item layout: entries round-trip, and items of the original service still read."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest

from ses_core.blacklist import UNKNOWN_TIME, BlacklistEntry, BlacklistEvent, BlacklistReason
from ses_core.blacklist.dynamodb import entry_from_item, entry_to_item

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def bounce() -> BlacklistEvent:
    return BlacklistEvent(
        address="bob@example.com",
        reason=BlacklistReason.BOUNCE,
        detail="Permanent/General",
        feedback_id="fb-1",
        message_id="msg-1",
        timestamp=T0,
    )


def test_item_round_trip() -> None:
    """entry_to_item and entry_from_item are inverse, including absent optional fields."""
    full = BlacklistEntry.from_event(bounce())
    bare = attrs.evolve(full, detail=None, feedback_id=None, message_id=None, count=7)
    for entry in (full, bare):
        assert entry_from_item(entry_to_item(entry)) == entry
    assert "detail" not in entry_to_item(bare)
    assert entry_to_item(full)["recent_feedback_ids"] == {"L": [{"S": "fb-1"}]}


def test_legacy_item_reads_as_imported() -> None:
    """An item of the original service (only a mixed-case `email`) reads with sane defaults."""
    entry = entry_from_item({"email": {"S": "Bob@Example.com"}})
    assert entry == BlacklistEntry(
        "bob@example.com", BlacklistReason.IMPORTED, None, None, None, UNKNOWN_TIME, UNKNOWN_TIME
    )


def test_item_with_unknown_reason_reads_as_imported() -> None:
    """A reason written by a newer version does not break reading."""
    item = entry_to_item(BlacklistEntry.from_event(bounce()))
    item["reason"] = {"S": "future-reason"}
    assert entry_from_item(item).reason is BlacklistReason.IMPORTED


def test_item_with_only_last_seen_uses_it_for_first_seen() -> None:
    """A partial item fills first_seen from last_seen."""
    item = {"email": {"S": "a@example.com"}, "last_seen": {"S": "2026-03-01T12:00:00Z"}}
    entry = entry_from_item(item)
    assert (entry.first_seen, entry.last_seen, entry.count) == (T0, T0, 1)


def test_item_without_email_is_refused() -> None:
    """An item without a string `email` is not an entry."""
    with pytest.raises(ValueError, match="email"):
        entry_from_item({"email": {"N": "1"}})
