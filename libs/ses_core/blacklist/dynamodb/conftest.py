"""Fixtures of the DynamoDB blacklist tests: a moto table of the original schema, and a call
counter, since how many calls an operation costs is part of what these tests pin down."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.testing.moto_dynamodb import create_blacklist_table, dynamodb_client

TABLE = "blacklist"


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
