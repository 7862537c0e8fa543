"""The contract every `Blacklist` adapter must honour (see `_ports.py`).

The tests run against each adapter: in-memory, SQLite (a real file), DynamoDB (moto, a table
with the original schema) and the cache in front of the in-memory store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from moto import mock_aws

from ses_core.blacklist import (
    Blacklist,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    BlacklistReason,
    CachedBlacklist,
    InMemoryBlacklist,
)
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.errors import InvalidAddress
from ses_core.testing.moto_dynamodb import create_blacklist_table, dynamodb_client

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


@pytest.fixture
def dynamodb(aws_credentials: None) -> Iterator[Any]:
    """A boto3 DynamoDB client inside moto, with a table of the original schema."""
    with mock_aws():
        client = dynamodb_client()
        create_blacklist_table(client, "blacklist")
        yield client


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> Blacklist:
    return InMemoryBlacklist()


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> Blacklist:
    store = SqliteBlacklist(tmp_path / "blacklist.db")
    request.addfinalizer(store.close)
    return store


def _dynamodb(tmp_path: Path, request: pytest.FixtureRequest) -> Blacklist:
    client = request.getfixturevalue("dynamodb")
    return DynamoDBBlacklist("blacklist", client=client)


def _cached(tmp_path: Path, request: pytest.FixtureRequest) -> Blacklist:
    return CachedBlacklist(InMemoryBlacklist(), positive_ttl=60, negative_ttl=60, max_entries=10)


ADAPTERS: dict[str, Callable[[Path, pytest.FixtureRequest], Blacklist]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "dynamodb": _dynamodb,
    "cached": _cached,
}


@pytest.fixture(params=list(ADAPTERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Blacklist:
    """Each adapter in turn, empty."""
    return ADAPTERS[request.param](tmp_path, request)


def test_lookup_many_returns_only_blacklisted_by_key(store: Blacklist) -> None:
    """Only blacklisted addresses come back, keyed by normalised key, whatever form was asked."""
    store.record(bounce("bob@example.com"))
    store.record(bounce("ann@bücher.de", "fb-2"))
    found = store.lookup_many(
        ['"Bob" <Bob@EXAMPLE.com>', "ann@xn--bcher-kva.de", "carol@example.com"]
    )
    assert set(found) == {"bob@example.com", "ann@xn--bcher-kva.de"}
    assert found["bob@example.com"].detail == "Permanent/General"


def test_lookup_many_of_nothing_is_empty(store: Blacklist) -> None:
    """No addresses, no answer (and no error)."""
    assert store.lookup_many([]) == {}


def test_lookup_many_refuses_invalid_address(store: Blacklist) -> None:
    """One bad address fails the whole lookup with InvalidAddress."""
    store.record(bounce())
    with pytest.raises(InvalidAddress):
        store.lookup_many(["bob@example.com", "bob@"])


def test_lookup_many_refuses_a_bare_string(store: Blacklist) -> None:
    """Passing one string (an iterable of characters) is a TypeError, not a silent miss."""
    with pytest.raises(TypeError):
        store.lookup_many("bob@example.com")


def test_get_finds_any_form(store: Blacklist) -> None:
    """get normalises its argument and answers None when not blacklisted."""
    recorded = store.record(bounce())
    assert store.get("<BOB@example.com>") == recorded
    assert store.get("nobody@example.com") is None
    with pytest.raises(InvalidAddress):
        store.get("nobody")


def test_record_creates_entry(store: Blacklist) -> None:
    """The first event creates an entry with count 1 and both times equal."""
    entry = store.record(bounce())
    assert entry == BlacklistEntry(
        "bob@example.com",
        BlacklistReason.BOUNCE,
        "Permanent/General",
        "fb-1",
        "msg-1",
        T0,
        T0,
        1,
    )
    assert store.get("bob@example.com") == entry


def test_record_is_idempotent_per_feedback_id(store: Blacklist) -> None:
    """The same notification delivered twice leaves the entry as after one delivery."""
    first = store.record(bounce())
    assert store.record(bounce()) == first
    assert store.get("bob@example.com") == first


def test_record_newer_event_updates(store: Blacklist) -> None:
    """A distinct newer event adds one and becomes the entry's latest event."""
    store.record(bounce())
    later = bounce(
        feedback_id="fb-2",
        at=T0 + timedelta(hours=1),
        reason=BlacklistReason.COMPLAINT,
        detail="complaint:abuse",
        message_id="msg-2",
    )
    entry = store.record(later)
    assert (entry.reason, entry.feedback_id, entry.count) == (BlacklistReason.COMPLAINT, "fb-2", 2)
    assert (entry.first_seen, entry.last_seen) == (T0, T0 + timedelta(hours=1))
    assert store.get("bob@example.com") == entry


def test_record_late_older_event_counts_without_taking_over(store: Blacklist) -> None:
    """An older distinct event arriving late adds one and moves first_seen back only."""
    store.record(bounce())
    entry = store.record(bounce(feedback_id="fb-0", at=T0 - timedelta(hours=1), message_id="m0"))
    assert (entry.feedback_id, entry.message_id, entry.count) == ("fb-1", "msg-1", 2)
    assert (entry.first_seen, entry.last_seen) == (T0 - timedelta(hours=1), T0)
    assert store.get("bob@example.com") == entry


def test_duplicate_of_older_event_after_newer_changes_nothing(store: Blacklist) -> None:
    """A re-delivered older notification, arriving after a newer one, is still a duplicate."""
    store.record(bounce())
    newest = store.record(bounce(feedback_id="fb-2", at=T0 + timedelta(hours=1)))
    assert store.record(bounce()) == newest
    assert store.get("bob@example.com") == newest


def test_record_without_feedback_id_always_counts(store: Blacklist) -> None:
    """Events without a feedback id cannot be recognised as duplicates, so each counts."""
    store.record(bounce(feedback_id=None))
    entry = store.record(bounce(feedback_id=None))
    assert entry.count == 2
    assert entry.feedback_id is None


def test_put_overwrites_and_remembers_its_feedback_id(store: Blacklist) -> None:
    """put stores the entry as given; recording its feedback id again is a duplicate."""
    store.record(bounce(feedback_id="fb-old"))
    entry = attrs.evolve(BlacklistEntry.from_event(bounce()), count=5)
    store.put(entry)
    assert store.get("bob@example.com") == entry
    assert store.record(bounce()) == entry


def test_put_manual_entry(store: Blacklist) -> None:
    """A manual entry is found by lookups; a later event updates it."""
    manual = BlacklistEntry.manual("eve@example.com", now=T0 - timedelta(days=1))
    store.put(manual)
    assert store.lookup_many(["Eve@example.com"]) == {"eve@example.com": manual}
    entry = store.record(bounce("eve@example.com"))
    assert (entry.reason, entry.count, entry.first_seen) == (
        BlacklistReason.BOUNCE,
        2,
        T0 - timedelta(days=1),
    )


def test_remove(store: Blacklist) -> None:
    """remove answers whether there was an entry, and the address is no longer found."""
    store.record(bounce())
    assert store.remove("<Bob@Example.com>") is True
    assert store.get("bob@example.com") is None
    assert store.remove("bob@example.com") is False
    with pytest.raises(InvalidAddress):
        store.remove("bob")


def test_record_after_remove_starts_over(store: Blacklist) -> None:
    """After removal, the same event (e.g. a late re-delivery) creates a fresh entry."""
    store.record(bounce())
    store.remove("bob@example.com")
    assert store.record(bounce()).count == 1


def test_list_page_walks_every_entry_once(store: Blacklist) -> None:
    """Following cursors lists each entry exactly once."""
    addresses = {f"user{n:02d}@example.com" for n in range(23)}
    for n, address in enumerate(sorted(addresses)):
        store.record(bounce(address, f"fb-{n}"))
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):  # bounded: 23 entries need at most 5 pages of 5 (+ short pages)
        page = store.list_page(limit=5, cursor=cursor)
        assert len(page.entries) <= 5
        seen.extend(entry.address for entry in page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(addresses)


def test_list_page_of_empty_store(store: Blacklist) -> None:
    """An empty store lists one empty, final page."""
    assert store.list_page() == BlacklistPage(entries=(), next_cursor=None)


@pytest.mark.parametrize(("limit", "cursor"), [(0, None), (1001, None), (10, "")])
def test_list_page_refuses_bad_arguments(store: Blacklist, limit: int, cursor: str | None) -> None:
    """A limit outside 1..1000 or an empty cursor is a ValueError."""
    with pytest.raises(ValueError):
        store.list_page(limit=limit, cursor=cursor)


@pytest.mark.parametrize("adapter", ["memory", "sqlite", "cached"])
def test_concurrent_records_from_threads(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Threads re-delivering the same events concurrently leave each counted exactly once."""
    store = ADAPTERS[adapter](tmp_path, request)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            for n in range(30):
                store.record(bounce(feedback_id=f"fb-{n}", at=T0 + timedelta(seconds=n)))
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    entry = store.get("bob@example.com")
    assert entry is not None
    assert (entry.count, entry.feedback_id, entry.last_seen) == (
        30,
        "fb-29",
        T0 + timedelta(seconds=29),
    )


# -- occurrence counting (soft events with a threshold) ----------------------------------------


def soft(
    address: str = "bob@example.com",
    feedback_id: str | None = "soft-1",
    *,
    at: datetime = T0,
    detail: str = "Transient/General",
) -> BlacklistEvent:
    return bounce(address, feedback_id, at=at, detail=detail, message_id=f"msg-{feedback_id}")


def test_occurrences_below_threshold_do_not_blacklist(store: Blacklist) -> None:
    """Counts below the threshold return no entry and are invisible to lookups and listings."""
    result = store.record_occurrence(soft(), threshold=3)
    assert (result.address, result.count, result.threshold) == ("bob@example.com", 1, 3)
    assert (result.duplicate, result.entry, result.blacklisted) == (False, None, False)
    second = store.record_occurrence(soft(feedback_id="soft-2"), threshold=3)
    assert (second.count, second.entry) == (2, None)
    assert store.get("bob@example.com") is None
    assert store.lookup_many(["bob@example.com", "Bob@Example.com"]) == {}
    assert store.list_page() == BlacklistPage(entries=(), next_cursor=None)


def test_occurrence_reaching_threshold_blacklists(store: Blacklist) -> None:
    """The event that reaches the threshold writes an entry with count = occurrences."""
    store.record_occurrence(soft(at=T0 + timedelta(hours=1)), threshold=3)
    store.record_occurrence(soft(feedback_id="soft-2", at=T0), threshold=3)
    result = store.record_occurrence(
        soft(feedback_id="soft-3", at=T0 + timedelta(hours=2)), threshold=3
    )
    expected = BlacklistEntry(
        "bob@example.com",
        BlacklistReason.BOUNCE,
        "Transient/General",
        "soft-3",
        "msg-soft-3",
        T0,
        T0 + timedelta(hours=2),
        3,
    )
    assert (result.count, result.duplicate, result.entry) == (3, False, expected)
    assert result.blacklisted
    assert store.get("bob@example.com") == expected
    assert store.lookup_many(["bob@example.com"]) == {"bob@example.com": expected}
    assert store.list_page().entries == (expected,)


def test_redelivered_occurrence_is_not_counted_twice(store: Blacklist) -> None:
    """A redelivered soft event (same feedback id) leaves the count as it was."""
    store.record_occurrence(soft(), threshold=2)
    again = store.record_occurrence(soft(), threshold=2)
    assert (again.count, again.duplicate, again.entry) == (1, True, None)
    assert store.get("bob@example.com") is None
    crossed = store.record_occurrence(soft(feedback_id="soft-2"), threshold=2)
    assert crossed.count == 2 and crossed.entry is not None


def test_redelivery_after_threshold_changes_nothing(store: Blacklist) -> None:
    """Redelivering any counted event after blacklisting returns the entry unchanged."""
    store.record_occurrence(soft(), threshold=2)
    entry = store.record_occurrence(soft(feedback_id="soft-2"), threshold=2).entry
    for fid in ("soft-1", "soft-2"):
        again = store.record_occurrence(soft(feedback_id=fid), threshold=2)
        assert (again.count, again.duplicate, again.entry) == (2, True, entry)
    assert store.get("bob@example.com") == entry


def test_occurrence_beyond_threshold_merges_into_entry(store: Blacklist) -> None:
    """A distinct event after the threshold updates the entry like `record`."""
    store.record_occurrence(soft(), threshold=2)
    store.record_occurrence(soft(feedback_id="soft-2"), threshold=2)
    later = soft(feedback_id="soft-3", at=T0 + timedelta(hours=1), detail="Transient/MailboxFull")
    result = store.record_occurrence(later, threshold=2)
    assert result.count == 3 and result.entry is not None
    assert (result.entry.count, result.entry.detail, result.entry.feedback_id) == (
        3,
        "Transient/MailboxFull",
        "soft-3",
    )
    assert store.get("bob@example.com") == result.entry


def test_occurrences_without_feedback_id_always_count(store: Blacklist) -> None:
    """Soft events without a feedback id cannot be recognised as duplicates, so each counts."""
    store.record_occurrence(soft(feedback_id=None), threshold=2)
    result = store.record_occurrence(soft(feedback_id=None), threshold=2)
    assert result.count == 2 and result.entry is not None and result.entry.feedback_id is None


def test_threshold_of_one_blacklists_at_once(store: Blacklist) -> None:
    """Threshold 1 blacklists on the first occurrence."""
    result = store.record_occurrence(soft(), threshold=1)
    assert result.entry is not None and result.entry.count == 1
    assert store.get("bob@example.com") == result.entry


@pytest.mark.parametrize("threshold", [0, -1, True, 2.0])
def test_bad_threshold_is_refused(store: Blacklist, threshold: Any) -> None:
    """A threshold that is not an integer >= 1 is a ValueError and counts nothing."""
    with pytest.raises(ValueError, match="threshold"):
        store.record_occurrence(soft(), threshold=threshold)
    assert store.record_occurrence(soft(), threshold=5).count == 1


def test_occurrences_are_counted_per_normalised_address(store: Blacklist) -> None:
    """Forms of one address share a count; other addresses have their own."""
    store.record_occurrence(soft('"Bob" <Bob@Example.com>'), threshold=2)
    other = store.record_occurrence(soft("ann@example.com", "soft-2"), threshold=2)
    assert other.count == 1
    result = store.record_occurrence(soft("BOB@example.com", "soft-3"), threshold=2)
    assert result.count == 2 and result.entry is not None
    assert set(store.lookup_many(["bob@example.com", "ann@example.com"])) == {"bob@example.com"}


def test_occurrence_leaves_an_existing_entry_alone_below_threshold(store: Blacklist) -> None:
    """An address blacklisted for another reason keeps its entry while soft events are counted."""
    permanent = store.record(bounce())
    result = store.record_occurrence(soft(), threshold=3)
    assert (result.count, result.entry) == (1, None)
    assert store.get("bob@example.com") == permanent


def test_occurrence_reaching_threshold_merges_into_an_existing_entry(store: Blacklist) -> None:
    """Reaching the threshold on an already blacklisted address merges the event into it."""
    store.record(bounce())
    store.record_occurrence(soft(), threshold=2)
    result = store.record_occurrence(
        soft(feedback_id="soft-2", at=T0 + timedelta(hours=1)), threshold=2
    )
    assert result.entry is not None
    assert (result.entry.count, result.entry.detail, result.entry.first_seen) == (
        2,
        "Transient/General",
        T0,
    )


def test_remove_forgets_the_occurrence_count(store: Blacklist) -> None:
    """After an operator removes the address, counting starts from zero."""
    store.record_occurrence(soft(), threshold=2)
    store.record_occurrence(soft(feedback_id="soft-2"), threshold=2)
    assert store.remove("bob@example.com") is True
    result = store.record_occurrence(soft(feedback_id="soft-3"), threshold=2)
    assert (result.count, result.entry) == (1, None)
    assert store.get("bob@example.com") is None


def test_remove_of_a_counted_but_not_blacklisted_address(store: Blacklist) -> None:
    """Removing an address that only has a count answers False and resets the count."""
    store.record_occurrence(soft(), threshold=3)
    assert store.remove("bob@example.com") is False
    assert store.record_occurrence(soft(feedback_id="soft-2"), threshold=3).count == 1


def test_listing_skips_counts_among_entries(store: Blacklist) -> None:
    """Walking every page lists entries only, never the counts stored beside them."""
    for n in range(7):
        store.record(bounce(f"hard{n}@example.com", f"fb-{n}"))
        store.record_occurrence(soft(f"soft{n}@example.com", f"soft-{n}"), threshold=2)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):  # bounded: 14 items in pages of 3
        page = store.list_page(limit=3, cursor=cursor)
        seen.extend(entry.address for entry in page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == [f"hard{n}@example.com" for n in range(7)]


@pytest.mark.parametrize("adapter", ["memory", "sqlite", "cached"])
def test_concurrent_occurrences_from_threads(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Threads re-delivering the same soft events concurrently count each exactly once."""
    store = ADAPTERS[adapter](tmp_path, request)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            for n in range(10):
                store.record_occurrence(soft(feedback_id=f"soft-{n}"), threshold=10)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    entry = store.get("bob@example.com")
    assert entry is not None and entry.count == 10
    assert store.record_occurrence(soft(feedback_id="soft-0"), threshold=10).duplicate
