"""Helpers every blacklist adapter shares: stored time text, address keys, argument checks.

They live in one place so that every store validates arguments, normalises addresses and writes
times the same way, and the contract tests see one behaviour whatever store is behind the port.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from ses_core.addresses import normalize_address

#: Largest page `list_page` accepts.
MAX_PAGE_SIZE = 1000


def as_utc(value: datetime) -> datetime:
    """Accept only aware datetimes and store them in UTC, so comparisons and text forms agree."""
    if not isinstance(value, datetime):
        message = f"expected a datetime, got {type(value).__name__}"
        raise TypeError(message)
    if value.tzinfo is None or value.utcoffset() is None:
        message = f"naive datetime {value.isoformat()} has no time zone; pass an aware datetime"
        raise ValueError(message)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """The fixed-width text form stored by SQLite and DynamoDB; sorts in time order."""
    return as_utc(value).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """Inverse of `format_time`; also accepts other ISO-8601 forms (`Z`, no fraction)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def normalize_all(addresses: Iterable[str]) -> dict[str, list[str]]:
    """Map normalised key -> distinct texts given for it; raises `InvalidAddress` for any bad one.

    Validates everything first, so a bad address anywhere means no store access at all. The
    texts matter to adapters that also look up legacy, non-normalised keys.
    """
    if isinstance(addresses, str):
        raise TypeError("lookup_many takes an iterable of addresses, not one string")
    keys: dict[str, list[str]] = {}
    for text in addresses:
        texts = keys.setdefault(normalize_address(text), [])
        if text not in texts:
            texts.append(text)
    return keys


def require_threshold(threshold: int) -> None:
    """Refuse a `record_occurrence` threshold that is not an integer of at least 1."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        message = f"threshold must be an integer of at least 1, got {threshold!r}"
        raise ValueError(message)


def require_page_args(limit: int, cursor: str | None) -> None:
    """Refuse a `list_page` limit outside 1..`MAX_PAGE_SIZE` or an empty cursor."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        message = f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        raise ValueError(message)
    if cursor is not None and not cursor:
        raise ValueError("cursor must be None or a cursor returned by list_page")
