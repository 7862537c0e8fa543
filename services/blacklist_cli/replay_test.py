"""Tests for `blacklist-cli replay-failed` against moto's SQS and DynamoDB (`mock_aws`).

The queue holds what Lambda's on-failure destination sends: an invocation record whose
`requestPayload` is the SNS event the function failed on.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cfnlint.decode import decode
from moto import mock_aws

from blacklist_cli.commands import ExitCode
from blacklist_cli.main import main
from blacklist_cli.replay import FailedInvocation, UnreadableMessage, queue_region
from ses_core.blacklist import BlacklistReason
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.testing import feedback_docs as fx
from ses_core.testing.moto_dynamodb import create_blacklist_table

REGION = "us-east-1"
TABLE = "blacklist"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:ses-relay-blacklist:$LATEST"
TEMPLATE = Path(__file__).parents[1] / "blacklist_lambda" / "template.yaml"


def destination_record(event: Mapping[str, Any] | str) -> str:
    """The SQS body Lambda sends its on-failure destination after the retries (AWS's format)."""
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": "2024-03-01T12:03:25.651Z",
            "requestContext": {
                "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                "functionArn": FUNCTION_ARN,
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {
                "errorMessage": "blacklist table not found",
                "errorType": "BlacklistUnavailable",
                "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                "stackTrace": ['  File "/var/task/blacklist_lambda/handler.py", line 99'],
            },
        }
    )


class Aws:
    """moto clients, the failed-invocation queue and the blacklist table."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_blacklist_table(self.dynamodb, TABLE)
        self.queue_url = self.sqs.create_queue(
            QueueName="ses-relay-FailedInvocationQueue-1",
            Attributes={"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": "1209600"},
        )["QueueUrl"]
        self.regions: list[tuple[str, str | None]] = []
        self.queue_client: Any = self.sqs

    def client(self, service: str, region: str | None) -> Any:
        """The `AwsClients` seam: hand out the moto clients, noting the regions asked for."""
        self.regions.append((service, region))
        return {"sqs": self.queue_client, "dynamodb": self.dynamodb}[service]

    def send(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages in the queue."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def blacklist(self) -> DynamoDBBlacklist:
        return DynamoDBBlacklist(TABLE, client=self.dynamodb)


class DeleteFails:
    """The real moto SQS client, except that DeleteMessage fails as during an SQS outage."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete_message(self, **kwargs: Any) -> Any:
        error = {"Error": {"Code": "ServiceUnavailable", "Message": "try again later"}}
        raise ClientError(error, "DeleteMessage")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Dummy credentials and region, and moto's SQS and DynamoDB; nothing reaches real AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield Aws()


class Run:
    """The outcome of one CLI run."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err


def replay(aws: Aws, *options: str, table: str = TABLE) -> Run:
    """Run `replay-failed` against the moto queue and table (no long polling)."""
    argv = ["replay-failed", "--table", table, "--queue-url", aws.queue_url, "--wait-seconds", "0"]
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, *options], clients=aws, stdout=out, stderr=err, sleep=lambda s: None)
    return Run(code, out.getvalue(), err.getvalue())


def test_replay_blacklists_the_failed_notifications_and_deletes_them(aws: Aws) -> None:
    """Each destination record's SNS-wrapped bounce or complaint is written to the table through
    the Lambda's processor, then its message is deleted."""
    aws.send(
        destination_record(fx.lambda_sns_event(fx.bounce_with_dsn("Jane@Example.com"))),
        destination_record(fx.lambda_sns_event(fx.complaint_with_feedback())),
    )
    run = replay(aws)
    assert run.code == ExitCode.OK, run.err
    assert run.err == ""
    jane = aws.blacklist().get("jane@example.com")
    assert jane is not None
    assert jane.reason is BlacklistReason.BOUNCE and jane.detail == "Permanent/General"
    assert jane.feedback_id == fx.BOUNCE_FEEDBACK_ID
    complainer = aws.blacklist().get("richard@example.com")
    assert complainer is not None and complainer.reason is BlacklistReason.COMPLAINT
    assert "blacklisted jane@example.com (bounce, Permanent/General)" in run.out
    assert run.out.splitlines()[-1] == (
        "replay-failed: 2 received, 2 replayed and deleted, 0 kept (0 unreadable, 0 failed)"
    )
    assert aws.depth() == (0, 0)
    # The queue's region comes from its URL, the table's from --region (here: the default).
    assert ("sqs", REGION) in aws.regions


def test_replaying_twice_counts_a_notification_once(aws: Aws) -> None:
    """A notification the Lambda half-wrote, or one replayed again, is counted once."""
    body = destination_record(fx.lambda_sns_event(fx.bounce_with_dsn()))
    aws.send(body)
    assert replay(aws).code == ExitCode.OK
    aws.send(body)
    assert replay(aws).code == ExitCode.OK
    entry = aws.blacklist().get("jane@example.com")
    assert entry is not None and entry.count == 1


def test_unreadable_messages_are_kept_and_reported(aws: Aws) -> None:
    """A body that is not JSON, a record without requestPayload and an event with a malformed
    record are reported (exit 1) and stay in the queue, visible again; the good one is replayed."""
    broken_event = fx.lambda_sns_event(fx.bounce_with_dsn())
    broken_event["Records"][0]["Sns"]["Message"] = "{not json"
    aws.send(
        "this is not JSON",
        json.dumps({"Records": []}),
        destination_record(broken_event),
        destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())),
    )
    run = replay(aws)
    assert run.code == ExitCode.NEGATIVE
    kept = [line for line in run.err.splitlines() if ": kept, unreadable: " in line]
    assert len(kept) == 3, run.err
    assert any("body is not JSON" in line for line in kept)
    assert any("no requestPayload" in line for line in kept)
    assert any("record 0" in line for line in kept)
    assert "Traceback" not in run.err
    assert run.out.splitlines()[-1] == (
        "replay-failed: 4 received, 1 replayed and deleted, 3 kept (3 unreadable, 0 failed)"
    )
    assert aws.blacklist().get("jane@example.com") is not None
    assert aws.depth() == (3, 0)


def test_store_failure_keeps_the_message_and_stops(aws: Aws) -> None:
    """When the blacklist cannot be written the message stays (visible again), the run stops
    instead of failing every later message too, and exits 4."""
    aws.send(
        destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())),
        destination_record(fx.lambda_sns_event(fx.bounce_with_dsn("ann@example.com"))),
    )
    run = replay(aws, table="missing-table")
    assert run.code == ExitCode.UNAVAILABLE
    assert ": kept, failed: BlacklistUnavailable: " in run.err
    assert ": kept, not attempted: the blacklist store failed earlier in this run" in run.err
    assert run.out.splitlines()[-1] == (
        "replay-failed: 2 received, 0 replayed and deleted, 2 kept "
        "(0 unreadable, 1 failed, 1 not attempted)"
    )
    assert "error: blacklist unavailable" in run.err
    assert "Traceback" not in run.err
    assert aws.depth() == (2, 0)
    assert replay(aws).code == ExitCode.OK  # once the store is back, both are replayed
    assert aws.depth() == (0, 0)


def test_a_failed_delete_is_reported_and_the_message_stays(aws: Aws) -> None:
    """A message whose event was written but which could not be deleted is reported (exit 1)
    and stays in the queue; the next replay of it changes nothing (idempotent writes)."""
    aws.send(destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())))
    aws.queue_client = DeleteFails(aws.sqs)
    run = replay(aws)
    assert run.code == ExitCode.NEGATIVE
    assert ": replayed, NOT deleted: blacklisted jane@example.com" in run.err
    assert "delete failed: ClientError" in run.err
    assert "(0 unreadable, 0 failed, 1 not deleted)" in run.out
    assert aws.blacklist().get("jane@example.com") is not None
    assert aws.depth() == (1, 0)
    aws.queue_client = aws.sqs
    assert replay(aws).code == ExitCode.OK
    entry = aws.blacklist().get("jane@example.com")
    assert entry is not None and entry.count == 1
    assert aws.depth() == (0, 0)


def test_dry_run_writes_nothing_and_deletes_nothing(aws: Aws) -> None:
    """--dry-run says what would be written and leaves the table and the queue as they were."""
    aws.send(destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())))
    run = replay(aws, "--dry-run")
    assert run.code == ExitCode.OK, run.err
    assert "would blacklist jane@example.com (bounce, Permanent/General)" in run.out
    assert run.out.splitlines()[-1] == (
        "replay-failed (dry run): 1 received, 1 replayable, 0 kept (0 unreadable, 0 failed); "
        "nothing written or deleted"
    )
    assert aws.blacklist().get("jane@example.com") is None
    assert aws.depth() == (1, 0)


def test_max_bounds_the_run(aws: Aws) -> None:
    """--max N replays at most N messages; the rest wait for the next run."""
    aws.send(
        *(
            destination_record(fx.lambda_sns_event(fx.bounce_with_dsn(f"user{i}@example.com")))
            for i in range(3)
        )
    )
    run = replay(aws, "--max", "2")
    assert run.code == ExitCode.OK, run.err
    assert "2 received, 2 replayed and deleted" in run.out
    assert aws.depth() == (1, 0)


def test_replay_applies_the_soft_bounce_thresholds_given(aws: Aws) -> None:
    """--soft-bounce-thresholds gives the replay the Lambda's policy: transient bounces are
    counted and blacklisted at the threshold, and only reported without it."""
    aws.send(destination_record(fx.lambda_sns_event(fx.transient_bounce())))
    run = replay(aws)
    assert run.code == ExitCode.OK
    assert "no blacklist change" in run.out
    assert aws.blacklist().get("ooto@example.com") is None
    for feedback_id in ("soft-1", "soft-2"):
        document = fx.transient_bounce()
        document["bounce"]["feedbackId"] = feedback_id
        aws.send(destination_record(fx.lambda_sns_event(document)))
    run = replay(aws, "--soft-bounce-thresholds", "Transient/General=2")
    assert run.code == ExitCode.OK, run.err
    assert "counted ooto@example.com (Transient/General, 1 of 2)" in run.out
    assert "blacklisted ooto@example.com (Transient/General, 2 of 2)" in run.out
    assert aws.blacklist().get("ooto@example.com") is not None


def test_bad_soft_bounce_thresholds_are_a_usage_error(aws: Aws) -> None:
    """A threshold the Lambda would refuse is refused before the queue is touched."""
    aws.send(destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())))
    run = replay(aws, "--soft-bounce-thresholds", "Transient/Genral=2")
    assert run.code == ExitCode.USAGE
    assert "SOFT_BOUNCE_THRESHOLDS" not in run.err and "Genral" in run.err
    assert aws.depth() == (1, 0)


def test_replay_needs_only_what_the_operator_policy_grants(aws: Aws) -> None:
    """Every SQS and DynamoDB call of a replay, a failed one and a dry run is allowed by the
    OperatorPolicy statements of template.yaml."""
    calls: list[str] = []
    for client, service in ((aws.sqs, "sqs"), (aws.dynamodb, "dynamodb")):

        def before_call(model: Any, service: str = service, **kwargs: Any) -> None:
            calls.append(f"{service}:{model.name}")

        client.meta.events.register(f"before-call.{service}.*", before_call)
    aws.send(
        "not JSON",
        destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())),
        destination_record(fx.lambda_sns_event(fx.bounce_with_dsn())),  # a duplicate
    )
    calls.clear()
    replay(aws, "--dry-run")
    replay(aws)
    mark = len(calls)
    aws.send(destination_record(fx.lambda_sns_event(fx.bounce_with_dsn("x@example.com"))))
    del calls[mark:]  # the test's own SendMessage
    replay(aws, table="missing-table")
    template, _ = decode(str(TEMPLATE))
    assert template is not None
    document = template["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]
    granted = {action for statement in document["Statement"] for action in statement["Action"]}
    assert calls and set(calls) <= granted, sorted(set(calls) - granted)


def test_failed_invocation_reads_the_destination_record() -> None:
    """The record's requestPayload is the event; condition and the function's error are kept."""
    event = fx.lambda_sns_event(fx.bounce_with_dsn())
    invocation = FailedInvocation.from_body(destination_record(event))
    assert invocation.request_payload == event
    assert invocation.condition == "RetriesExhausted"
    assert invocation.error == "BlacklistUnavailable: blacklist table not found"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "body is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"requestPayload": "text"}', "no requestPayload object"),
        (destination_record({"Records": []}), "no SES notification"),
        (destination_record({"hello": "world"}), "not an SES feedback event"),
    ],
)
def test_unreadable_bodies_say_why(body: str, reason: str) -> None:
    """Each kind of unreadable message raises UnreadableMessage naming what is wrong."""
    with pytest.raises(UnreadableMessage, match=reason):
        FailedInvocation.from_body(body)


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        ("https://eu-central-1.queue.amazonaws.com/123456789012/q", "eu-central-1"),
        ("http://127.0.0.1:5000/123456789012/q", None),
    ],
)
def test_queue_region_comes_from_the_url(url: str, region: str | None) -> None:
    """The queue's region is read from its URL when the URL names one."""
    assert queue_region(url) == region
