"""DynamoDBBlacklist: cost per lookup, original-table compatibility, idempotency, construction.

moto (`mock_aws`) plays DynamoDB; one test runs against moto's HTTP server on 127.0.0.1.
Failures are in `errors_test.py`, occurrence counting in `pending_test.py`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ses_core.blacklist import (
    UNKNOWN_TIME,
    BatchingLookup,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistReason,
)
from ses_core.blacklist.dynamodb import DynamoDBBlacklist, entry_to_item
from ses_core.blacklist.dynamodb._items import RECENT_FEEDBACK_IDS
from ses_core.errors import BlacklistUnavailable, InvalidAddress
from ses_core.testing.moto_dynamodb import (
    TEST_REGION,
    MotoServer,
    create_blacklist_table,
    offline_client,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TABLE = "blacklist"


def event(address: str = "bob@example.com", feedback_id: str | None = "fb-1", **kw: Any) -> Any:
    values: dict[str, Any] = {
        "reason": BlacklistReason.BOUNCE,
        "detail": "Permanent/General",
        "message_id": "msg-1",
        "timestamp": T0,
    }
    values.update(kw)
    return BlacklistEvent(address=address, feedback_id=feedback_id, **values)


# -- cost ----------------------------------------------------------------------------------------


def test_one_message_costs_one_batch_get(
    blacklist: DynamoDBBlacklist, calls: dict[str, int]
) -> None:
    """50 recipients (the SES maximum), some repeated, are one BatchGetItem and no GetItem."""
    blacklist.record(event("user7@example.com"))
    calls.clear()
    recipients = [f"user{n}@example.com" for n in range(50)] + ["USER7@example.com"]
    found = blacklist.lookup_many(recipients)
    assert list(found) == ["user7@example.com"]
    assert calls == {"BatchGetItem": 1}


def test_keys_are_deduplicated_and_chunked_by_100(client: Any, calls: dict[str, int]) -> None:
    """250 distinct addresses (each asked twice) take 3 calls of at most 100 distinct keys."""
    sizes: list[int] = []

    def size(params: dict[str, Any], **_: Any) -> None:
        keys = params["RequestItems"][TABLE]["Keys"]
        assert len(keys) == len({k["email"]["S"] for k in keys})
        sizes.append(len(keys))

    client.meta.events.register("provide-client-params.dynamodb.BatchGetItem", size)
    addresses = [f"user{n}@example.com" for n in range(250)]
    assert DynamoDBBlacklist(TABLE, client=client).lookup_many(addresses * 2) == {}
    assert sizes == [100, 100, 50]
    assert calls == {"BatchGetItem": 3}


def test_store_keys_name_the_keys_a_lookup_reads(blacklist: DynamoDBBlacklist) -> None:
    """A lookup reads the normalised key, and the address as written when that differs."""
    assert blacklist.store_keys("bob@example.com") == ("bob@example.com",)
    assert blacklist.store_keys("Bob <Bob@Example.com>") == ("bob@example.com", "Bob@Example.com")


async def test_batched_lookups_are_one_batch_get_each(
    client: Any, blacklist: DynamoDBBlacklist
) -> None:
    """Through a `BatchingLookup` told the keys of each address, 150 concurrent lookups of
    mixed-case addresses (two keys each) are batches of one BatchGetItem of at most 100 keys."""
    sizes: list[int] = []

    def size(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["RequestItems"][TABLE]["Keys"]))

    client.meta.events.register("provide-client-params.dynamodb.BatchGetItem", size)
    client.put_item(TableName=TABLE, Item={"email": {"S": "User7@Example.com"}})
    batches: list[int] = []

    def lookup_many(texts: list[str]) -> dict[str, BlacklistEntry]:
        batches.append(len(texts))
        return blacklist.lookup_many(texts)

    batcher = BatchingLookup(lookup_many, store_keys=blacklist.store_keys)
    try:
        lookups = [batcher.lookup_async([f"User{n}@Example.com"]) for n in range(150)]
        found = await asyncio.wait_for(asyncio.gather(*lookups), 30)
    finally:
        await batcher.aclose()
    assert [list(answer) for answer in found if answer] == [["user7@example.com"]]
    assert sorted(batches) == [50, 50, 50]
    assert sorted(sizes) == [100, 100, 100]  # one BatchGetItem per batch


def test_invalid_address_touches_nothing(
    blacklist: DynamoDBBlacklist, calls: dict[str, int]
) -> None:
    """A bad address raises before any call to DynamoDB."""
    with pytest.raises(InvalidAddress):
        blacklist.lookup_many(["ok@example.com", "broken@@example.com"])
    assert calls == {}


# -- original tables -----------------------------------------------------------------------------


def test_legacy_mixed_case_item_found_in_the_same_call(
    client: Any, blacklist: DynamoDBBlacklist, calls: dict[str, int]
) -> None:
    """A key stored as written by the original service is found by its exact text, same call."""
    client.put_item(TableName=TABLE, Item={"email": {"S": "Bob@Example.com"}})
    calls.clear()
    found = blacklist.lookup_many(["<Bob@Example.com>", "ann@example.com"])
    assert found == {
        "bob@example.com": BlacklistEntry(
            "bob@example.com", "imported", None, None, None, UNKNOWN_TIME, UNKNOWN_TIME, 1
        )
    }
    assert calls == {"BatchGetItem": 1}
    assert blacklist.get("bob@example.com") is None  # another case: documented limitation


def test_normalised_item_wins_over_legacy_one(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """When both forms exist, the entry under the normalised key answers."""
    client.put_item(TableName=TABLE, Item={"email": {"S": "Bob@Example.com"}})
    recorded = blacklist.record(event())
    assert blacklist.get("Bob@Example.com") == recorded


def test_remove_deletes_both_forms(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """remove deletes the legacy mixed-case item as well as the normalised one."""
    client.put_item(TableName=TABLE, Item={"email": {"S": "Bob@Example.com"}})
    blacklist.record(event())
    assert blacklist.remove("Bob@Example.com") is True
    assert blacklist.get("Bob@Example.com") is None
    assert client.scan(TableName=TABLE)["Count"] == 0


def test_legacy_item_is_upgraded_by_an_event(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """An event for a key-only item counts the legacy sighting and keeps unknown attributes."""
    client.put_item(
        TableName=TABLE, Item={"email": {"S": "bob@example.com"}, "note": {"S": "kept"}}
    )
    entry = blacklist.record(event())
    assert (entry.reason, entry.count, entry.first_seen, entry.last_seen) == (
        BlacklistReason.BOUNCE,
        2,
        UNKNOWN_TIME,
        T0,
    )
    item = client.get_item(TableName=TABLE, Key={"email": {"S": "bob@example.com"}})["Item"]
    assert item["note"] == {"S": "kept"}
    assert blacklist.record(event()) == entry


def test_unreadable_legacy_key_is_skipped_with_a_warning(
    client: Any, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """A junk key left by the original service is logged and left out of listings."""
    client.put_item(TableName=TABLE, Item={"email": {"S": "not-an-address"}})
    blacklist.record(event())
    with caplog.at_level(logging.WARNING):
        page = blacklist.list_page()
    assert [e.address for e in page.entries] == ["bob@example.com"]
    assert "not-an-address" in caplog.text


def test_damaged_item_still_blacklists(
    client: Any, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """An item with unreadable attributes is read as imported, never as "not blacklisted"."""
    client.put_item(
        TableName=TABLE,
        Item={"email": {"S": "bob@example.com"}, "last_seen": {"S": "yesterday"}},
    )
    with caplog.at_level(logging.WARNING):
        found = blacklist.lookup_many(["Bob@example.com"])
        listed = blacklist.list_page().entries
    assert found["bob@example.com"].reason is BlacklistReason.IMPORTED
    assert listed == (found["bob@example.com"],)
    assert "damaged blacklist item" in caplog.text
    repaired = blacklist.record(event())
    assert (repaired.reason, repaired.count, repaired.last_seen) == (BlacklistReason.BOUNCE, 2, T0)


# -- idempotency ---------------------------------------------------------------------------------


def test_duplicate_costs_one_conditional_failure_and_one_read(
    blacklist: DynamoDBBlacklist, calls: dict[str, int]
) -> None:
    """A re-delivered event is refused by the condition, then confirmed by one read."""
    first = blacklist.record(event())
    calls.clear()
    assert blacklist.record(event()) == first
    assert calls == {"UpdateItem": 1, "GetItem": 1}


def test_recent_feedback_ids_stay_bounded(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """After many events the item remembers only the most recent feedback ids."""
    total = RECENT_FEEDBACK_IDS + 8
    for n in range(total):
        entry = blacklist.record(event(feedback_id=f"fb-{n}", timestamp=T0 + timedelta(n)))
    assert entry.count == total
    item = client.get_item(TableName=TABLE, Key={"email": {"S": "bob@example.com"}})["Item"]
    recent = [v["S"] for v in item["recent_feedback_ids"]["L"]]
    assert recent == [f"fb-{n}" for n in range(total - RECENT_FEEDBACK_IDS, total)]
    assert blacklist.record(event(feedback_id="fb-20", timestamp=T0 + timedelta(20))) == entry


def test_put_replaces_the_idempotency_memory(client: Any, blacklist: DynamoDBBlacklist) -> None:
    """put writes exactly the entry's item (the operator's word is final)."""
    blacklist.record(event())
    manual = BlacklistEntry.manual("bob@example.com", now=T0)
    blacklist.put(manual)
    item = client.get_item(TableName=TABLE, Key={"email": {"S": "bob@example.com"}})["Item"]
    assert item == entry_to_item(manual)


# -- construction --------------------------------------------------------------------------------


def test_from_table_name_builds_a_configured_client(client: Any) -> None:
    """from_table_name makes a client with short timeouts and standard retries."""
    blacklist = DynamoDBBlacklist.from_table_name(TABLE, region=TEST_REGION, read_timeout=4.0)
    config = blacklist.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 4.0)
    assert config.retries["mode"] == "standard"
    assert blacklist.lookup_many(["a@example.com"]) == {}


def test_from_table_name_uses_the_given_client(client: Any) -> None:
    """An injected client is used as is."""
    assert DynamoDBBlacklist.from_table_name(TABLE, client=client).client is client


def test_from_table_name_without_region_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No region anywhere gives a ValueError that says how to fix it."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ValueError, match="region"):
        DynamoDBBlacklist.from_table_name(TABLE)


def test_empty_table_name_is_refused() -> None:
    """A blank table name is a configuration error at construction."""
    with pytest.raises(ValueError):
        DynamoDBBlacklist("", client=offline_client())


# -- server mode ---------------------------------------------------------------------------------


def test_over_http_against_moto_server() -> None:
    """Record, duplicate, look up, list and remove through real HTTP on 127.0.0.1."""
    with MotoServer() as server:
        client = server.client()
        create_blacklist_table(client, "server-blacklist")
        blacklist = DynamoDBBlacklist.from_table_name(
            "server-blacklist", region=TEST_REGION, client=client
        )
        first = blacklist.record(event())
        assert blacklist.record(event()) == first
        assert blacklist.lookup_many(["Bob@example.com", "x@example.com"]) == {
            "bob@example.com": first
        }
        assert blacklist.list_page().entries == (first,)
        assert blacklist.remove("bob@example.com") is True
        server.reset()
        with pytest.raises(BlacklistUnavailable, match="table not found"):
            blacklist.get("bob@example.com")
