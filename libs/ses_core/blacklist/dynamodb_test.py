"""DynamoDBBlacklist: cost per lookup, original-table compatibility, idempotency, failures.

moto (`mock_aws`) plays DynamoDB for behaviour; botocore's `Stubber` scripts the answers moto
cannot produce (throttling, unprocessed keys); a closed or silent loopback port gives real
transport failures; one test runs against moto's HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from ses_core.blacklist.dynamodb import (
    PENDING_PREFIX,
    RECENT_FEEDBACK_IDS,
    DynamoDBBlacklist,
)
from ses_core.blacklist.model import UNKNOWN_TIME, BlacklistEntry, BlacklistEvent, BlacklistReason
from ses_core.errors import BlacklistUnavailable, InvalidAddress
from ses_core.testing.moto_dynamodb import (
    TEST_REGION,
    MotoServer,
    create_blacklist_table,
    dynamodb_client,
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


@pytest.fixture
def client(aws_credentials: None) -> Iterator[Any]:
    """A boto3 DynamoDB client inside moto with the original table schema."""
    with mock_aws():
        dynamodb = dynamodb_client()
        create_blacklist_table(dynamodb, TABLE)
        yield dynamodb


@pytest.fixture
def calls(client: Any) -> dict[str, int]:
    """Counts of API calls made through `client`, by operation name."""
    counts: dict[str, int] = {}

    def count(model: Any, **_: Any) -> None:
        counts[model.name] = counts.get(model.name, 0) + 1

    client.meta.events.register("before-call.dynamodb.*", count)
    return counts


@pytest.fixture
def blacklist(client: Any) -> DynamoDBBlacklist:
    """A DynamoDBBlacklist on the moto table."""
    return DynamoDBBlacklist(TABLE, client=client)


def offline_client() -> Any:
    """A real client that never sends anything by itself (for Stubber)."""
    return boto3.client(
        "dynamodb",
        region_name=TEST_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


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
    assert item == manual.to_item()


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("ProvisionedThroughputExceededException", "throttled"),
        ("ThrottlingException", "throttled"),
        ("RequestLimitExceeded", "throttled"),
        ("ResourceNotFoundException", "table not found"),
        ("UnrecognizedClientException", "credentials or permissions rejected"),
        ("AccessDeniedException", "credentials or permissions rejected"),
        ("InternalServerError", "service error"),
    ],
)
def test_client_errors_raise_unavailable(code: str, words: str) -> None:
    """Every service error of a lookup is a retryable BlacklistUnavailable naming the cause."""
    client = offline_client()
    with Stubber(client) as stub:
        stub.add_client_error("batch_get_item", service_error_code=code, http_status_code=400)
        with pytest.raises(BlacklistUnavailable, match=words) as info:
            DynamoDBBlacklist(TABLE, client=client).lookup_many(["a@example.com"])
    assert info.value.retryable is True
    assert code in str(info.value)


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("update_item", lambda b: b.record(event())),
        ("put_item", lambda b: b.put(BlacklistEntry.manual("a@example.com"))),
        ("delete_item", lambda b: b.remove("a@example.com")),
        ("scan", lambda b: b.list_page()),
    ],
)
def test_write_and_list_errors_raise_unavailable(method: str, call: Any) -> None:
    """Throttling on any operation is BlacklistUnavailable, never a silent success."""
    client = offline_client()
    with Stubber(client) as stub:
        stub.add_client_error(method, service_error_code="ThrottlingException")
        with pytest.raises(BlacklistUnavailable, match="throttled"):
            call(DynamoDBBlacklist(TABLE, client=client))


def test_missing_table_in_moto(client: Any) -> None:
    """A table that does not exist is BlacklistUnavailable, not "not blacklisted"."""
    with pytest.raises(BlacklistUnavailable, match="table not found"):
        DynamoDBBlacklist("no-such-table", client=client).lookup_many(["a@example.com"])


def _unprocessed(keys: list[str]) -> dict[str, Any]:
    return {
        "Responses": {TABLE: []},
        "UnprocessedKeys": {TABLE: {"Keys": [{"email": {"S": k}} for k in keys]}},
    }


def test_unprocessed_keys_are_retried_with_backoff() -> None:
    """Unprocessed keys are asked again, after growing delays, and their items returned."""
    client = offline_client()
    sleeps: list[float] = []
    item = BlacklistEntry.manual("b@example.com", now=T0).to_item()
    with Stubber(client) as stub:
        stub.add_response("batch_get_item", _unprocessed(["b@example.com"]))
        stub.add_response("batch_get_item", _unprocessed(["b@example.com"]))
        stub.add_response(
            "batch_get_item",
            {"Responses": {TABLE: [item]}, "UnprocessedKeys": {}},
            {"RequestItems": {TABLE: {"Keys": [{"email": {"S": "b@example.com"}}]}}},
        )
        blacklist = DynamoDBBlacklist(TABLE, client=client, sleep=sleeps.append)
        found = blacklist.lookup_many(["a@example.com", "b@example.com"])
    assert list(found) == ["b@example.com"]
    assert len(sleeps) == 2
    assert 0.025 <= sleeps[0] <= 0.05 and 0.05 <= sleeps[1] <= 0.1


def test_keys_still_unprocessed_raise_unavailable() -> None:
    """After the bounded retries, leftover keys are an error, never "not blacklisted"."""
    client = offline_client()
    sleeps: list[float] = []
    with Stubber(client) as stub:
        for _ in range(4):
            stub.add_response("batch_get_item", _unprocessed(["a@example.com"]))
        blacklist = DynamoDBBlacklist(
            TABLE, client=client, sleep=sleeps.append, max_unprocessed_retries=3, backoff_cap=0.08
        )
        with pytest.raises(BlacklistUnavailable, match="unprocessed"):
            blacklist.lookup_many(["a@example.com"])
    assert len(sleeps) == 3
    assert max(sleeps) <= 0.08


def test_contended_item_gives_up_after_bounded_attempts() -> None:
    """If the item keeps changing under the optimistic write, record fails as unavailable."""
    client = offline_client()
    item = BlacklistEntry.from_event(event(feedback_id="fb-9")).to_item()
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code="ConditionalCheckFailedException")
        for _ in range(5):
            stub.add_response("get_item", {"Item": item})
            stub.add_client_error("put_item", service_error_code="ConditionalCheckFailedException")
        older = event(feedback_id="fb-0", timestamp=T0 - timedelta(days=1))
        with pytest.raises(BlacklistUnavailable, match="kept changing"):
            DynamoDBBlacklist(TABLE, client=client).record(older)
        stub.assert_no_pending_responses()


def test_item_removed_during_slow_path_is_recreated() -> None:
    """If the item vanishes between the conditional update and the read, the event is written."""
    client = offline_client()
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code="ConditionalCheckFailedException")
        stub.add_response("get_item", {})
        stub.add_response("put_item", {})
        entry = DynamoDBBlacklist(TABLE, client=client).record(event())
    assert entry == BlacklistEntry.from_event(event())


def test_trim_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """The event is recorded even if keeping the feedback-id list short fails."""
    client = offline_client()
    item = BlacklistEntry.from_event(event()).to_item()
    item["recent_feedback_ids"] = {"L": [{"S": f"fb-{n}"} for n in range(RECENT_FEEDBACK_IDS + 1)]}
    with Stubber(client) as stub:
        stub.add_response("update_item", {"Attributes": item})
        stub.add_client_error("update_item", service_error_code="ThrottlingException")
        with caplog.at_level(logging.WARNING):
            entry = DynamoDBBlacklist(TABLE, client=client).record(event())
    assert entry == BlacklistEntry.from_item(item)
    assert "could not trim" in caplog.text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _fast_client(endpoint_url: str) -> Any:
    config = Config(connect_timeout=0.5, read_timeout=0.3, retries={"total_max_attempts": 1})
    return boto3.client(
        "dynamodb",
        region_name=TEST_REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def test_unreachable_endpoint_raises_unavailable() -> None:
    """Nothing listening on the endpoint is BlacklistUnavailable ("unreachable")."""
    client = _fast_client(f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(BlacklistUnavailable, match="unreachable"):
        DynamoDBBlacklist(TABLE, client=client).lookup_many(["a@example.com"])


def test_silent_endpoint_times_out_as_unavailable() -> None:
    """An endpoint that accepts but never answers is a read timeout, BlacklistUnavailable."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # connections complete in the backlog; nobody ever answers
        client = _fast_client(f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(BlacklistUnavailable, match="timed out"):
            DynamoDBBlacklist(TABLE, client=client).lookup_many(["a@example.com"])


def test_missing_credentials_raise_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No credentials anywhere is BlacklistUnavailable with a message that says so."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    client = boto3.session.Session().client(
        "dynamodb", region_name=TEST_REGION, endpoint_url=f"http://127.0.0.1:{_closed_port()}"
    )
    with pytest.raises(BlacklistUnavailable, match="no usable AWS credentials"):
        DynamoDBBlacklist(TABLE, client=client).lookup_many(["a@example.com"])


# -- construction --------------------------------------------------------------------------------


def test_from_table_name_builds_a_configured_client(client: Any) -> None:
    """from_table_name makes a client with short timeouts and standard retries."""
    blacklist = DynamoDBBlacklist.from_table_name(TABLE, region=TEST_REGION, read_timeout=4.0)
    config = blacklist._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 4.0)
    assert config.retries["mode"] == "standard"
    assert blacklist.lookup_many(["a@example.com"]) == {}


def test_from_table_name_uses_the_given_client(client: Any) -> None:
    """An injected client is used as is."""
    assert DynamoDBBlacklist.from_table_name(TABLE, client=client)._client is client


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


def test_check_reads_the_table(client: Any, calls: dict[str, int]) -> None:
    """check is one GetItem and passes on a readable table."""
    DynamoDBBlacklist(TABLE, client=client).check()
    assert calls == {"GetItem": 1}


def test_check_fails_on_missing_table(client: Any) -> None:
    """check raises BlacklistUnavailable when the table is missing."""
    with pytest.raises(BlacklistUnavailable, match="table not found"):
        DynamoDBBlacklist("no-such-table", client=client).check()


# -- occurrence counts ---------------------------------------------------------------------------


def soft(feedback_id: str | None = "soft-1", **kw: Any) -> Any:
    return event("ooto@example.com", feedback_id, detail="Transient/General", **kw)


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
