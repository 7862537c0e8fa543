"""The text form stored for times sorts in time order and parses back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ses_core.blacklist._private import format_time, parse_time

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_time_text_form_sorts_in_time_order() -> None:
    """Stored times have a fixed width, so text order is time order; parsing inverts them."""
    texts = [format_time(T0 + timedelta(microseconds=n)) for n in (0, 1, 999_999)]
    assert texts == sorted(texts)
    assert {len(text) for text in texts} == {32}
    assert parse_time(texts[1]) == T0 + timedelta(microseconds=1)
    assert parse_time("2026-03-01T12:00:00") == T0
