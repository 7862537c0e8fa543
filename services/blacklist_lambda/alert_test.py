"""Tests for the admin alert: what it says, what it sends to SES, and that it never raises."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import ANY, Stubber

from blacklist_lambda.alert import (
    MAX_LISTED_FAILURES,
    MAX_TRACEBACKS,
    AdminAlerter,
    AlertMessage,
    UnprocessedRecord,
)
from ses_core.errors import BlacklistUnavailable


def raised(error: BaseException) -> BaseException:
    """The error after a real raise, so it carries a traceback."""
    try:
        raise error
    except BaseException as exc:  # noqa: BLE001 - returned to the caller, not swallowed
        return exc


def failure(index: int = 0, error: BaseException | None = None) -> UnprocessedRecord:
    """A write failure for one message."""
    return UnprocessedRecord(
        message_id=f"msg-{index}",
        addresses=(f"user{index}@example.com",),
        error=raised(error or BlacklistUnavailable("DynamoDB table 'bl': throttled")),
        ses_message_id=f"ses-{index}",
    )


def render(failures: list[UnprocessedRecord]) -> AlertMessage:
    """Render with fixed invocation details."""
    return AlertMessage.from_failures(failures, function_name="fn", request_id="req-1", table="bl")


@pytest.fixture
def ses() -> Iterator[tuple[Any, Stubber]]:
    """A real SES v1 client with a Stubber (validates SendEmail against the API model)."""
    client = boto3.client(
        "ses", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_message_names_function_addresses_ids_and_traceback() -> None:
    """The alert says what failed, for which addresses and message ids, with the traceback."""
    message = render([failure(0)])
    assert message.subject == "[fn] 1 SES notification(s) not processed: BlacklistUnavailable"
    assert "request req-1" in message.body and "blacklist table: bl" in message.body
    assert "- message id msg-0: write failed: user0@example.com" in message.body
    assert "SES message id: ses-0" in message.body
    assert "Traceback (most recent call last)" in message.body
    assert "ses_core.errors.BlacklistUnavailable: DynamoDB table 'bl': throttled" in message.body


def test_chained_cause_appears_in_the_traceback() -> None:
    """The underlying botocore error (the cause) is part of the traceback text."""
    try:
        try:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.example")
        except EndpointConnectionError as exc:
            raise BlacklistUnavailable("endpoint unreachable") from exc
    except BlacklistUnavailable as exc:
        error = exc
    body = render([UnprocessedRecord("m", ("a@example.com",), error)]).body
    assert "EndpointConnectionError" in body
    assert "direct cause of the following exception" in body


def test_large_batches_are_summarised() -> None:
    """Beyond the limits, failures are counted and tracebacks omitted, keeping the mail small."""
    failures = [failure(i) for i in range(MAX_LISTED_FAILURES + 5)]
    body = render(failures).body
    assert "- ... and 5 more" in body
    assert body.count("Traceback (most recent call last)") == MAX_TRACEBACKS
    assert f"({len(failures) - MAX_TRACEBACKS} further traceback(s) omitted.)" in body


def test_record_without_addresses_says_none() -> None:
    """A failure before any address was known still renders."""
    error = raised(KeyError("x"))
    message = render([UnprocessedRecord("m-1", (), error, "processing")])
    assert "- message id m-1: processing failed: (none)" in message.body
    assert message.subject.endswith("KeyError")


def test_subject_is_bounded() -> None:
    """Many distinct error types never make an overlong subject."""
    errors = [type(f"Error{i}" * 5, (Exception,), {})(str(i)) for i in range(20)]
    failures = [UnprocessedRecord(f"m{i}", (), raised(e)) for i, e in enumerate(errors)]
    assert len(render(failures).subject) <= 200


def test_send_calls_ses_send_email(ses: tuple[Any, Stubber]) -> None:
    """The alert goes out with SendEmail from the sender to every recipient, as UTF-8 text."""
    client, stubber = ses
    message = render([failure()])
    stubber.add_response(
        "send_email",
        {"MessageId": "ses-alert-1"},
        {
            "Source": "alerts@example.com",
            "Destination": {"ToAddresses": ["ops@example.com", "oncall@example.org"]},
            "Message": {
                "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": ANY, "Charset": "UTF-8"}},
            },
        },
    )
    alerter = AdminAlerter(
        client, sender="alerts@example.com", recipients=["ops@example.com", "oncall@example.org"]
    )
    assert alerter.send(message) is True


def test_send_failure_is_logged_not_raised(
    ses: tuple[Any, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    """An SES error is logged with its traceback and reported as False."""
    client, stubber = ses
    stubber.add_client_error("send_email", "MessageRejected", "Email address is not verified.")
    alerter = AdminAlerter(client, sender="alerts@example.com", recipients=["ops@example.com"])
    with caplog.at_level(logging.ERROR):
        assert alerter.send(render([failure()])) is False
    (record,) = caplog.records
    assert record.getMessage().startswith("could not send the admin alert")
    assert record.exc_info is not None


def test_transport_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A botocore transport error (SES unreachable) is also contained."""

    class Unreachable:
        def send_email(self, **kwargs: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://email.eu-west-1.amazonaws.com")

    alerter = AdminAlerter(Unreachable(), sender="a@example.com", recipients=["b@example.com"])
    assert alerter.send(render([failure()])) is False
    assert "could not send the admin alert" in caplog.text
