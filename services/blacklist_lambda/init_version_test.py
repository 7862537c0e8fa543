"""The Lambda names the release version in its init log line."""

from __future__ import annotations

import logging

import boto3
import pytest
from moto import mock_aws

from blacklist_lambda.handler import build_from_environ
from ses_core.testing.moto_dynamodb import create_blacklist_table
from ses_core.version import VERSION

REGION = "us-east-1"


def test_init_line_names_the_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Wiring logs `blacklist Lambda <version> ready: ...`, so CloudWatch says what runs."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    environ = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config = {
        "SES_REGION": REGION,
        "EMAIL_FROM": "alerts@example.com",
        "EMAIL_TO": "ops@example.com",
        "DYNAMODB_TABLE": "blacklist",
    }
    with mock_aws(), caplog.at_level(logging.INFO, logger="blacklist_lambda.handler"):
        create_blacklist_table(boto3.client("dynamodb", region_name=REGION), "blacklist")
        build_from_environ(config)
    assert f"blacklist Lambda {VERSION} ready: table blacklist" in caplog.text
