"""Unit tests for `python -m relay.api_keys` against moto's DynamoDB (in-process mock)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from relay.api_keys import main
from relay.auth import DynamoDBApiKeys, api_key_digest
from ses_core.testing.moto_dynamodb import create_api_key_table


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto DynamoDB client with an API-key table, dummy credentials and a fixed region."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("dynamodb")
        create_api_key_table(client, "keys")
        yield client


def test_creates_hashed_key(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The printed key is stored only as its digest, bound to the user, and looks up as active."""
    assert main(["keys", "--user", "svc"], client=dynamodb) == 0
    key = capsys.readouterr().out.strip()
    [item] = dynamodb.scan(TableName="keys")["Items"]
    assert item["api_key"]["S"] == api_key_digest(key)
    record = DynamoDBApiKeys("keys", client=dynamodb).lookup(key)
    assert record is not None and record.active and record.username == "svc"


def test_missing_table_is_reported(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A table that does not exist gives status 1 and a one-line message."""
    assert main(["nope"], client=dynamodb) == 1
    assert "cannot create the key in nope" in capsys.readouterr().err


def test_lookup_failure_is_credentials_unavailable(dynamodb: Any) -> None:
    """A lookup on a missing table raises CredentialsUnavailable (AUTH answers 454, not 535)."""
    from relay.auth import CredentialsUnavailable

    with pytest.raises(CredentialsUnavailable):
        DynamoDBApiKeys("nope", client=dynamodb).lookup("k")
    with pytest.raises(CredentialsUnavailable):
        DynamoDBApiKeys("nope", client=dynamodb).probe()
