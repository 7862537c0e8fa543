"""DynamoDBBlacklist occurrence counting: pending items, their cost, the threshold write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from ses_core.blacklist import BlacklistEvent, BlacklistReason
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.blacklist.dynamodb._items import PENDING_PREFIX, RECENT_FEEDBACK_IDS
from ses_core.errors import BlacklistUnavailable
from ses_core.testing.moto_dynamodb import offline_client

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TABLE = "blacklist"


def soft(feedback_id: str | None = "soft-1", **kw: Any) -> Any:
    values: dict[str, Any] = {
        "reason": BlacklistReason.BOUNCE,
        "detail": "Transient/General",
        "message_id": "msg-1",
        "timestamp": T0,
    }
    values.update(kw)
    return BlacklistEvent(address="ooto@example.com", feedback_id=feedback_id, **values)


def test_counts_live_under_a_key_no_address_can_have(
    client: Any, blacklist: DynamoDBBlacklist
) -> None:
    """A count is one item keyed `<pending>` + address; the address's own key stays absent."""
    blacklist.record_occurrence(soft(), threshold=3)
    blacklist.record_occurrence(soft("soft-2", timestamp=T0 + timedelta(1)), threshold=3)
    items = client.scan(TableName=TABLE)["Items"]
    assert items == [
        {
            "email": {"S": PENDING_PREFIX + "ooto@example.com"},
            "event_count": {"N": "2"},
            "first_seen": {"S": "2026-03-01T12:00:00.000000+00:00"},
            "last_seen": {"S": "2026-03-02T12:00:00.000000+00:00"},
            "recent_feedback_ids": {"L": [{"S": "soft-1"}, {"S": "soft-2"}]},
        }
    ]
    # What the original service's relays do: GetItem of the recipient's own address.
    original = client.get_item(TableName=TABLE, Key={"email": {"S": "ooto@example.com"}})
    assert "Item" not in original
    assert blacklist.lookup_many(["ooto@example.com"]) == {}
    assert blacklist.list_page().entries == ()


def test_counting_costs_one_update_and_a_duplicate_one_read(
    blacklist: DynamoDBBlacklist, calls: dict[str, int]
) -> None:
    """A new soft event is one UpdateItem; a redelivered one a refused UpdateItem and a read."""
    blacklist.record_occurrence(soft(), threshold=3)
    assert calls == {"UpdateItem": 1}
    calls.clear()
    assert blacklist.record_occurrence(soft(), threshold=3).duplicate
    assert calls == {"UpdateItem": 1, "GetItem": 1}


def test_older_soft_event_is_counted_through_the_slow_path(blacklist: DynamoDBBlacklist) -> None:
    """A late older event counts once and moves first_seen back."""
    blacklist.record_occurrence(soft(), threshold=3)
    older = soft("soft-0", timestamp=T0 - timedelta(days=1))
    assert blacklist.record_occurrence(older, threshold=3).count == 2
    assert blacklist.record_occurrence(older, threshold=3).duplicate
    entry = blacklist.record_occurrence(soft("soft-2"), threshold=3).entry
    assert entry is not None
    assert (entry.count, entry.first_seen, entry.last_seen) == (3, T0 - timedelta(days=1), T0)


def test_redelivery_after_a_failed_threshold_write_blacklists(
    blacklist: DynamoDBBlacklist,
) -> None:
    """A count that reached the threshold without its entry (a failure in between) is completed
    by the redelivery: a duplicate for the count, then the entry is written."""
    blacklist.record_occurrence(soft(), threshold=5)
    blacklist.record_occurrence(soft("soft-2"), threshold=5)  # counted; "blacklisting failed"
    result = blacklist.record_occurrence(soft("soft-2"), threshold=2)
    assert (result.duplicate, result.count) == (True, 2)
    assert result.entry is not None and blacklist.get("ooto@example.com") == result.entry


def test_threshold_entry_write_failure_is_unavailable() -> None:
    """Throttling while writing the entry at the threshold is BlacklistUnavailable."""
    client = offline_client()
    counted = {
        "email": {"S": PENDING_PREFIX + "ooto@example.com"},
        "event_count": {"N": "2"},
        "first_seen": {"S": "2026-03-01T12:00:00.000000+00:00"},
        "last_seen": {"S": "2026-03-01T12:00:00.000000+00:00"},
        "recent_feedback_ids": {"L": [{"S": "soft-0"}, {"S": "soft-1"}]},
    }
    with Stubber(client) as stub:
        stub.add_response("update_item", {"Attributes": counted})
        stub.add_client_error("put_item", service_error_code="ThrottlingException")
        with pytest.raises(BlacklistUnavailable, match="throttled"):
            DynamoDBBlacklist(TABLE, client=client).record_occurrence(soft(), threshold=2)
        stub.assert_no_pending_responses()


def test_counting_failure_is_unavailable() -> None:
    """Throttling while counting is BlacklistUnavailable, never a silent 'not counted'."""
    client = offline_client()
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code="ThrottlingException")
        with pytest.raises(BlacklistUnavailable, match="throttled"):
            DynamoDBBlacklist(TABLE, client=client).record_occurrence(soft(), threshold=2)


def test_contended_count_gives_up_after_bounded_attempts() -> None:
    """If the count keeps changing under the optimistic write, counting fails as unavailable."""
    client = offline_client()
    counted = {
        "email": {"S": PENDING_PREFIX + "ooto@example.com"},
        "event_count": {"N": "1"},
        "first_seen": {"S": "2026-03-02T12:00:00.000000+00:00"},
        "last_seen": {"S": "2026-03-02T12:00:00.000000+00:00"},
    }
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code="ConditionalCheckFailedException")
        for _ in range(5):
            stub.add_response("get_item", {"Item": counted})
            stub.add_client_error("put_item", service_error_code="ConditionalCheckFailedException")
        with pytest.raises(BlacklistUnavailable, match="kept changing"):
            DynamoDBBlacklist(TABLE, client=client).record_occurrence(soft(), threshold=3)
        stub.assert_no_pending_responses()


def test_count_removed_during_slow_path_starts_over() -> None:
    """If the count vanishes between the refused update and the read, the event counts as first."""
    client = offline_client()
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code="ConditionalCheckFailedException")
        stub.add_response("get_item", {})
        stub.add_response("put_item", {})
        result = DynamoDBBlacklist(TABLE, client=client).record_occurrence(soft(), threshold=3)
    assert (result.count, result.duplicate, result.entry) == (1, False, None)


def test_pending_count_ids_stay_bounded(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """A pending item remembers only the most recent feedback ids, like an entry."""
    total = RECENT_FEEDBACK_IDS + 4
    for n in range(total):
        blacklist.record_occurrence(
            soft(f"soft-{n}", timestamp=T0 + timedelta(n)), threshold=total + 1
        )
    key = {"email": {"S": PENDING_PREFIX + "ooto@example.com"}}
    item = client.get_item(TableName=TABLE, Key=key)["Item"]
    assert len(item["recent_feedback_ids"]["L"]) == RECENT_FEEDBACK_IDS
    assert item["event_count"] == {"N": str(total)}


def test_remove_deletes_the_pending_item(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """remove deletes the entry and the count, leaving the table empty."""
    blacklist.record_occurrence(soft(), threshold=1)
    assert client.scan(TableName=TABLE)["Count"] == 2
    assert blacklist.remove("ooto@example.com") is True
    assert client.scan(TableName=TABLE)["Count"] == 0


def test_stray_pending_item_in_a_scan_is_never_listed() -> None:
    """Even if the service returned a pending item despite the filter, listing drops it."""
    client = offline_client()
    pending = {"email": {"S": PENDING_PREFIX + "ooto@example.com"}, "event_count": {"N": "1"}}
    with Stubber(client) as stub:
        stub.add_response("scan", {"Items": [pending, {"email": {"S": "a@example.com"}}]})
        page = DynamoDBBlacklist(TABLE, client=client).list_page()
    assert [entry.address for entry in page.entries] == ["a@example.com"]
