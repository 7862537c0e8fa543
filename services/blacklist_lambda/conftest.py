"""Shared fixtures of the Lambda's tests: moto with the blacklist table and a verified alert sender.

The handler and processor tests both run the real DynamoDB adapter and SES client against moto;
their constants live here so both files agree on the table, region and sender. The template
tests (template*_test.py) share the decoded template.yaml, `template`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from moto import mock_aws

from ses_core.testing import feedback_docs as fx
from ses_core.testing.moto_dynamodb import create_blacklist_table

REGION = "us-east-1"
TABLE = "blacklist"
SENDER = "alerts@example.com"


class FakeContext:
    """The two attributes of Lambda's context object the handler reads."""

    function_name = "blacklist-test"
    aws_request_id = "req-1234"


CONTEXT = FakeContext()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a fixed region, so nothing can reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def aws(aws_env: None) -> Iterator[dict[str, Any]]:
    """moto with the blacklist table and a verified alert sender."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_blacklist_table(dynamodb, TABLE)
        ses = boto3.client("ses", region_name=REGION)
        ses.verify_email_identity(EmailAddress=SENDER)
        yield {"dynamodb": dynamodb, "ses": ses}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """template.yaml as cfn-lint decodes it (short-form tags become Fn:: mappings)."""
    decoded, matches = decode(str(Path(__file__).with_name("template.yaml")))
    assert not matches, [str(match) for match in matches]
    assert decoded is not None
    return dict(decoded)


def soft_bounce(feedback_id: str, recipient: str = "ooto@example.com") -> dict[str, Any]:
    """A Transient/General bounce with its own feedback id."""
    document = fx.transient_bounce(recipient=recipient)
    document["bounce"]["feedbackId"] = feedback_id
    return document
