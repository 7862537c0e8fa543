"""DynamoDBBlacklist failures: every service or transport error is `BlacklistUnavailable`.

botocore's `Stubber` scripts the answers moto cannot produce (throttling, unprocessed keys,
contention); a closed or silent loopback port gives real transport failures.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from ses_core.blacklist import BlacklistEntry, BlacklistEvent, BlacklistReason
from ses_core.blacklist.dynamodb import DynamoDBBlacklist, entry_from_item, entry_to_item
from ses_core.blacklist.dynamodb._items import RECENT_FEEDBACK_IDS
from ses_core.errors import BlacklistUnavailable
from ses_core.testing.moto_dynamodb import TEST_REGION, offline_client

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
    item = entry_to_item(BlacklistEntry.manual("b@example.com", now=T0))
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
    item = entry_to_item(BlacklistEntry.from_event(event(feedback_id="fb-9")))
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
    item = entry_to_item(BlacklistEntry.from_event(event()))
    item["recent_feedback_ids"] = {"L": [{"S": f"fb-{n}"} for n in range(RECENT_FEEDBACK_IDS + 1)]}
    with Stubber(client) as stub:
        stub.add_response("update_item", {"Attributes": item})
        stub.add_client_error("update_item", service_error_code="ThrottlingException")
        with caplog.at_level(logging.WARNING):
            entry = DynamoDBBlacklist(TABLE, client=client).record(event())
    assert entry == entry_from_item(item)
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
