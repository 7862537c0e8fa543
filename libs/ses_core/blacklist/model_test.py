"""The blacklist's values: events normalise what they are given, entries merge events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from ses_core.blacklist import BlacklistEntry, BlacklistEvent, BlacklistPage, BlacklistReason
from ses_core.errors import InvalidAddress

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def bounce(
    address: str = "bob@example.com",
    feedback_id: str | None = "fb-1",
    *,
    at: datetime = T0,
    reason: BlacklistReason = BlacklistReason.BOUNCE,
    detail: str | None = "Permanent/General",
    message_id: str | None = "msg-1",
) -> BlacklistEvent:
    return BlacklistEvent(
        address=address,
        reason=reason,
        detail=detail,
        feedback_id=feedback_id,
        message_id=message_id,
        timestamp=at,
    )


def test_event_normalises_address_and_time() -> None:
    """An event stores the normalised key and its timestamp in UTC."""
    tz = datetime(2026, 3, 1, 14, 0).astimezone().tzinfo
    event = bounce('"Bob" <Bob@BÜCHER.de>', at=datetime(2026, 3, 1, 14, 0, tzinfo=tz))
    assert event.address == "bob@xn--bcher-kva.de"
    assert event.timestamp.tzinfo is UTC


def test_event_rejects_invalid_address() -> None:
    """A bad address fails when the event is built, not in the store."""
    with pytest.raises(InvalidAddress):
        bounce("not an address")


def test_event_rejects_naive_timestamp() -> None:
    """A naive datetime is ambiguous, so it is refused."""
    with pytest.raises(ValueError, match="naive"):
        bounce(at=datetime(2026, 3, 1, 12, 0))


def test_event_rejects_non_datetime_timestamp() -> None:
    """A timestamp must be a datetime, not text."""
    with pytest.raises(TypeError):
        when: Any = "2026-03-01"
        BlacklistEvent("a@example.com", "bounce", None, None, None, when)


def test_reason_accepts_its_text_value() -> None:
    """Reasons given as text become the enum; unknown ones are refused."""
    assert bounce(reason="complaint").reason is BlacklistReason.COMPLAINT  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bounce(reason="spam")  # type: ignore[arg-type]


def test_entry_merge_newer_event_takes_its_fields() -> None:
    """A newer event replaces reason, detail and ids, keeps first_seen and adds one."""
    entry = BlacklistEntry.from_event(bounce())
    later = bounce(
        feedback_id="fb-2",
        at=T0 + timedelta(days=1),
        reason=BlacklistReason.COMPLAINT,
        detail="complaint:abuse",
        message_id="msg-2",
    )
    merged = entry.merged_with(later)
    assert (merged.reason, merged.detail, merged.feedback_id, merged.message_id) == (
        BlacklistReason.COMPLAINT,
        "complaint:abuse",
        "fb-2",
        "msg-2",
    )
    assert (merged.first_seen, merged.last_seen, merged.count) == (T0, T0 + timedelta(days=1), 2)


def test_entry_merge_older_event_only_counts() -> None:
    """A late older event adds one and moves first_seen back, nothing else."""
    entry = BlacklistEntry.from_event(bounce())
    merged = entry.merged_with(bounce(feedback_id="fb-0", at=T0 - timedelta(days=1)))
    assert merged == attrs.evolve(entry, first_seen=T0 - timedelta(days=1), count=2)


def test_entry_merge_refuses_another_address() -> None:
    """Merging an event of another address is a programming error."""
    with pytest.raises(ValueError, match="cannot update"):
        BlacklistEntry.from_event(bounce()).merged_with(bounce("eve@example.com"))


def test_manual_entry_defaults() -> None:
    """An operator's entry is MANUAL, seen once, without ids."""
    entry = BlacklistEntry.manual("<Eve@Example.com>", detail="asked by legal", now=T0)
    assert entry == BlacklistEntry(
        "eve@example.com", BlacklistReason.MANUAL, "asked by legal", None, None, T0, T0, 1
    )
    assert BlacklistEntry.manual("eve@example.com").last_seen.tzinfo is UTC


def test_page_defaults_to_last() -> None:
    """A page without a cursor is the last one."""
    assert BlacklistPage(entries=()).next_cursor is None
