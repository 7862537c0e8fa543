"""Tests for the NotificationProcessor: writes, logs, skips, failures, alerts, thresholds.

Most run the processor as `make_handler` wires it, over moto's DynamoDB and SES; the last section
drives it alone with the in-memory blacklist and a recording SES client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest
from cfnlint.decode import decode
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from blacklist_lambda import processor
from blacklist_lambda.alert import AdminAlerter
from blacklist_lambda.config import LambdaConfig
from blacklist_lambda.conftest import CONTEXT, REGION, SENDER, TABLE, soft_bounce
from blacklist_lambda.handler import Handler, make_handler
from blacklist_lambda.processor import MAX_LOGGED_RECIPIENTS, NotificationProcessor
from ses_core.blacklist import (
    Blacklist,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistReason,
    InMemoryBlacklist,
    OccurrenceResult,
)
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.errors import BlacklistUnavailable
from ses_core.feedback import BounceThreshold
from ses_core.testing import feedback_docs as fx
from ses_core.testing.blacklists import DelegatingBlacklist

CONFIG = LambdaConfig(
    ses_region=REGION,
    email_from=SENDER,
    email_to=("ops@example.com", "oncall@example.org"),
    dynamodb_table=TABLE,
)
TWICE = attrs.evolve(CONFIG, soft_bounce_thresholds=(BounceThreshold("Transient", "General", 2),))


@pytest.fixture
def blacklist(aws: dict[str, Any]) -> DynamoDBBlacklist:
    """The real DynamoDB adapter on the moto table."""
    return DynamoDBBlacklist(TABLE, client=aws["dynamodb"])


@pytest.fixture
def handle(aws: dict[str, Any], blacklist: DynamoDBBlacklist) -> Handler:
    """The handler wired to moto."""
    return make_handler(CONFIG, blacklist, aws["ses"])


def sent_alerts() -> list[Any]:
    """Mails moto's SES recorded (its documented internal API)."""
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def json_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structured log lines with the given `event` name."""
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("{"):
            document = json.loads(message)
            if document.get("event") == event:
                found.append(document)
    return found


class FailingBlacklist(DelegatingBlacklist):
    """Delegates to a real blacklist but fails writes for chosen addresses (or all)."""

    def __init__(
        self,
        inner: Blacklist,
        *,
        fail_for: Iterable[str] | None = None,
        error: Exception | None = None,
    ) -> None:
        super().__init__(inner)
        self.fail_for = None if fail_for is None else set(fail_for)
        self.error = error or BlacklistUnavailable("DynamoDB table 'blacklist': throttled")
        self.record_calls = 0

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        self.record_calls += 1
        if self.fail_for is None or event.address in self.fail_for:
            raise self.error
        return self.inner.record(event)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        self.record_calls += 1
        if self.fail_for is None or event.address in self.fail_for:
            raise self.error
        return self.inner.record_occurrence(event, threshold=threshold)


class ExplodingSes:
    """An SES client whose send fails with something no one expected."""

    def send_email(self, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("alert transport exploded")


# -- writes -------------------------------------------------------------------------------------


def test_sns_permanent_bounce_is_written_with_metadata(
    handle: Handler, blacklist: DynamoDBBlacklist
) -> None:
    """A Permanent bounce from SNS is blacklisted with reason, detail, ids and time."""
    assert handle(fx.lambda_sns_event(fx.bounce_with_dsn("Jane@Example.com")), CONTEXT) is None
    entry = blacklist.get("jane@example.com")
    assert entry is not None
    assert entry.reason is BlacklistReason.BOUNCE
    assert entry.detail == "Permanent/General"
    assert entry.feedback_id == fx.BOUNCE_FEEDBACK_ID
    assert entry.message_id == fx.SES_MESSAGE_ID
    assert entry.last_seen.isoformat().startswith("2023-12-14T14:59:38.237")
    assert entry.count == 1


def test_every_bounced_recipient_is_written(handle: Handler, blacklist: DynamoDBBlacklist) -> None:
    """A bounce naming two recipients blacklists both."""
    handle(fx.lambda_sns_event(fx.bounce_without_dsn()), CONTEXT)
    found = blacklist.lookup_many(["jane@example.com", "richard@example.com", "mary@example.com"])
    assert sorted(found) == ["jane@example.com", "richard@example.com"]
    assert found["jane@example.com"].detail == "Permanent/Suppressed"


def test_complaint_is_written_with_feedback_type(
    handle: Handler, blacklist: DynamoDBBlacklist
) -> None:
    """A complaint blacklists the recipient with the feedback type as detail."""
    handle(fx.lambda_sns_event(fx.complaint_with_feedback("abuse")), CONTEXT)
    entry = blacklist.get("richard@example.com")
    assert entry is not None
    assert entry.reason is BlacklistReason.COMPLAINT
    assert entry.detail == "complaint:abuse"
    assert entry.feedback_id == fx.COMPLAINT_FEEDBACK_ID


def test_event_publishing_records_are_handled(
    handle: Handler, blacklist: DynamoDBBlacklist
) -> None:
    """Configuration-set events (eventType) are written like classic notifications."""
    handle(fx.lambda_sns_event(fx.event_bounce(), fx.event_complaint()), CONTEXT)
    entry = blacklist.get("recipient@example.com")
    assert entry is not None
    # Both events are about the same recipient: two events, the newer (the complaint) describes it.
    assert entry.count == 2
    assert entry.reason is BlacklistReason.COMPLAINT
    assert entry.detail == "complaint:abuse"


def test_duplicate_delivery_is_idempotent(handle: Handler, blacklist: DynamoDBBlacklist) -> None:
    """The same notification delivered twice leaves count and times as after one delivery."""
    event = fx.lambda_sns_event(fx.bounce_with_dsn())
    handle(event, CONTEXT)
    first = blacklist.get("jane@example.com")
    handle(event, CONTEXT)
    assert blacklist.get("jane@example.com") == first
    assert first is not None and first.count == 1


def test_blacklisted_write_is_logged_as_json(
    handle: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    """Each write produces one structured `blacklisted` line naming address and ids."""
    caplog.set_level(logging.INFO)
    handle(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    (line,) = json_lines(caplog, "blacklisted")
    assert line["address"] == "jane@example.com"
    assert line["message_id"] == "sns-0"
    assert line["ses_message_id"] == fx.SES_MESSAGE_ID
    assert line["feedback_id"] == fx.BOUNCE_FEEDBACK_ID


# -- logged, not written ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Transient", "Undetermined"])
def test_non_permanent_bounce_is_logged_not_written(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Transient and Undetermined bounces are logged as JSON lines and not written."""
    caplog.set_level(logging.INFO)
    document = fx.transient_bounce()
    document["bounce"]["bounceType"] = kind
    handle(fx.lambda_sns_event(document), CONTEXT)
    assert blacklist.list_page().entries == ()
    (line,) = json_lines(caplog, "not_blacklisted")
    assert line["address"] == "ooto@example.com"
    assert line["detail"] == f"{kind}/General"
    assert line["verdict"] == "report"


def test_not_spam_complaint_is_logged_not_written(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """A not-spam complaint is exempt by the default policy, so only logged."""
    caplog.set_level(logging.INFO)
    handle(fx.lambda_sns_event(fx.complaint_with_feedback("not-spam")), CONTEXT)
    assert blacklist.list_page().entries == ()
    assert json_lines(caplog, "not_blacklisted")[0]["detail"] == "complaint:not-spam"


def test_delivery_is_logged_not_written(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery is logged as a `not_written` line with its recipients."""
    caplog.set_level(logging.INFO)
    handle(fx.lambda_sns_event(fx.delivery()), CONTEXT)
    assert blacklist.list_page().entries == ()
    (line,) = json_lines(caplog, "not_written")
    assert line["kind"] == "Delivery"
    assert line["recipients"] == ["success@simulator.amazonses.com"]


def test_other_event_types_and_test_notification_are_logged(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """Opens and SES's subscription test message are logged, not written, not failed."""
    caplog.set_level(logging.INFO)
    event = fx.lambda_sns_event(fx.other_event("Open"), fx.subscription_succeeded())
    assert handle(event, CONTEXT) is None
    kinds = [line["kind"] for line in json_lines(caplog, "not_written")]
    assert kinds == ["Open", "AmazonSnsSubscriptionSucceeded"]
    assert blacklist.list_page().entries == ()


def test_invalid_recipient_string_is_logged_and_others_written(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """A recipient that is not an address is logged; valid recipients are still written."""
    caplog.set_level(logging.INFO)
    document = fx.bounce_without_dsn()
    document["bounce"]["bouncedRecipients"].append({"emailAddress": "not an address"})
    handle(fx.lambda_sns_event(document), CONTEXT)
    assert len(blacklist.list_page().entries) == 2
    (line,) = json_lines(caplog, "invalid_recipient")
    assert line["recipient"] == "not an address"


# -- malformed input ----------------------------------------------------------------------------


def test_malformed_sns_record_is_logged_and_skipped(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed SNS message is logged with its message id; the invocation succeeds."""
    event = fx.lambda_sns_event("{not json")
    assert handle(event, CONTEXT) is None
    (line,) = json_lines(caplog, "malformed_record")
    assert line["message_id"] == "sns-0"
    assert line["path"].startswith("$.Records[0].Sns.Message")
    assert blacklist.list_page().entries == ()
    assert sent_alerts() == []


def test_sqs_batch_skips_malformed_and_writes_valid(
    handle: Handler, blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """In one SQS batch the malformed record is skipped (not retried) and the valid ones written."""
    bad = fx.bounce_with_dsn()
    del bad["bounce"]["feedbackId"]
    event = fx.sqs_event(
        fx.sns_envelope(fx.bounce_with_dsn("first@example.com")),
        fx.sns_envelope(bad),
        fx.complaint_with_feedback(),  # raw message delivery: the SES JSON is the body
    )
    assert handle(event, CONTEXT) == {"batchItemFailures": []}
    found = blacklist.lookup_many(["first@example.com", "jane@example.com", "richard@example.com"])
    assert sorted(found) == ["first@example.com", "richard@example.com"]
    (line,) = json_lines(caplog, "malformed_record")
    assert line["message_id"] == "sqs-1"
    assert "feedbackId" in line["path"]


@pytest.mark.parametrize("event", [{}, {"Records": "nope"}, {"something": "else"}])
def test_unrecognisable_event_is_logged_and_skipped(
    handle: Handler, caplog: pytest.LogCaptureFixture, event: dict[str, Any]
) -> None:
    """An event that is not an SNS/SQS event at all is logged; retrying it cannot help."""
    assert handle(event, CONTEXT) is None
    assert len(json_lines(caplog, "malformed_event")) == 1


# -- infrastructure failures --------------------------------------------------------------------


def test_sns_store_failure_alerts_then_raises(
    aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A missing table fails the SNS invocation (so Lambda retries) after mailing the admin."""
    handle = make_handler(
        CONFIG, DynamoDBBlacklist("no-such-table", client=aws["dynamodb"]), aws["ses"]
    )
    with pytest.raises(BlacklistUnavailable, match="table not found"):
        handle(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    (alert,) = sent_alerts()
    assert alert.source == SENDER
    assert alert.destinations["ToAddresses"] == ["ops@example.com", "oncall@example.org"]
    assert "blacklist-test" in alert.subject and "BlacklistUnavailable" in alert.subject
    assert "message id sns-0: write failed: jane@example.com" in alert.body
    assert f"SES message id: {fx.SES_MESSAGE_ID}" in alert.body
    assert "req-1234" in alert.body
    assert "Traceback (most recent call last)" in alert.body
    assert "ResourceNotFoundException" in alert.body


def test_sqs_store_failure_reports_only_failed_records(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist
) -> None:
    """Only the SQS record whose write failed is listed in batchItemFailures, and alerted."""
    failing = FailingBlacklist(blacklist, fail_for=["broken@example.com"])
    handle = make_handler(CONFIG, failing, aws["ses"])
    event = fx.sqs_event(
        fx.sns_envelope(fx.bounce_with_dsn("ok@example.com")),
        fx.sns_envelope(fx.bounce_with_dsn("broken@example.com")),
    )
    assert handle(event, CONTEXT) == {"batchItemFailures": [{"itemIdentifier": "sqs-1"}]}
    assert blacklist.get("ok@example.com") is not None
    (alert,) = sent_alerts()
    assert "sqs-1: write failed: broken@example.com" in alert.body
    assert "sqs-0" not in alert.body


def test_after_a_store_failure_later_writes_are_not_attempted(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist
) -> None:
    """Once the store failed, later records needing writes fail at once; others still succeed."""
    failing = FailingBlacklist(blacklist)
    handle = make_handler(CONFIG, failing, aws["ses"])
    event = fx.sqs_event(
        fx.sns_envelope(fx.bounce_with_dsn("a@example.com")),
        fx.sns_envelope(fx.delivery()),
        fx.sns_envelope(fx.bounce_with_dsn("b@example.com")),
    )
    result = handle(event, CONTEXT)
    assert result == {
        "batchItemFailures": [{"itemIdentifier": "sqs-0"}, {"itemIdentifier": "sqs-2"}]
    }
    assert failing.record_calls == 1
    (alert,) = sent_alerts()
    assert "2 SES notification(s)" in alert.subject


def test_alert_failure_does_not_hide_the_original_error(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """When SES rejects the alert, that is logged and the store error still fails the call."""
    unverified = attrs.evolve(CONFIG, email_from="nobody@example.net")
    handle = make_handler(unverified, FailingBlacklist(blacklist), aws["ses"])
    with pytest.raises(BlacklistUnavailable, match="throttled"):
        handle(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    assert sent_alerts() == []
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("could not send the admin alert") for message in messages)


def test_unexpected_alert_error_does_not_hide_the_original_error(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """Even an unforeseen exception from the alert path leaves the original error raised."""
    handle = make_handler(CONFIG, FailingBlacklist(blacklist), ExplodingSes())
    with pytest.raises(BlacklistUnavailable):
        handle(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    failed = [r for r in caplog.records if r.getMessage().startswith("could not build or send")]
    assert failed and failed[0].exc_info is not None


def test_unexpected_error_fails_the_invocation_and_alerts(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist
) -> None:
    """A bug (any other exception) is never reported as success: SNS raises it after alerting."""
    handle = make_handler(
        CONFIG, FailingBlacklist(blacklist, error=KeyError("surprise")), aws["ses"]
    )
    with pytest.raises(KeyError, match="surprise"):
        handle(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    (alert,) = sent_alerts()
    assert "processing failed" in alert.body


def test_sqs_failure_without_message_id_fails_the_whole_batch(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist
) -> None:
    """A failed SQS record that cannot be named in batchItemFailures fails the invocation."""
    handle = make_handler(CONFIG, FailingBlacklist(blacklist), aws["ses"])
    event = fx.sqs_event(fx.sns_envelope(fx.bounce_with_dsn()))
    del event["Records"][0]["messageId"]
    with pytest.raises(BlacklistUnavailable):
        handle(event, CONTEXT)


# -- soft bounce thresholds (SOFT_BOUNCE_THRESHOLDS) --------------------------------------------


def test_threshold_blacklists_at_the_second_transient_bounce(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """With Transient/General=2 the first bounce is only counted, a redelivery of it does not
    count, and the second distinct one blacklists with count 2."""
    caplog.set_level(logging.INFO)
    handle = make_handler(TWICE, blacklist, aws["ses"])
    first = fx.lambda_sns_event(soft_bounce("soft-1"))
    assert handle(first, CONTEXT) is None
    assert blacklist.get("ooto@example.com") is None
    assert handle(first, CONTEXT) is None  # SNS redelivery
    assert blacklist.get("ooto@example.com") is None
    assert blacklist.list_page().entries == ()
    counted = json_lines(caplog, "occurrence_counted")
    assert [(c["occurrences"], c["threshold"], c["duplicate"]) for c in counted] == [
        (1, 2, False),
        (1, 2, True),
    ]
    assert counted[0]["address"] == "ooto@example.com"
    assert counted[0]["detail"] == "Transient/General"
    assert handle(fx.lambda_sns_event(soft_bounce("soft-2")), CONTEXT) is None
    entry = blacklist.get("ooto@example.com")
    assert entry is not None
    assert (entry.reason, entry.detail, entry.feedback_id, entry.count) == (
        BlacklistReason.BOUNCE,
        "Transient/General",
        "soft-2",
        2,
    )
    (line,) = json_lines(caplog, "blacklisted")
    assert (line["occurrences"], line["threshold"], line["count"]) == (2, 2, 2)
    assert json_lines(caplog, "not_blacklisted") == []
    assert sent_alerts() == []


def test_threshold_counts_through_sqs_and_ignores_other_subtypes(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist, caplog: pytest.LogCaptureFixture
) -> None:
    """SQS records count the same way; a subtype without a threshold is only reported."""
    caplog.set_level(logging.INFO)
    handle = make_handler(TWICE, blacklist, aws["ses"])
    full = fx.transient_bounce("MailboxFull")
    event = fx.sqs_event(
        fx.sns_envelope(soft_bounce("soft-1")),
        fx.sns_envelope(soft_bounce("soft-1")),
        fx.sns_envelope(full),
    )
    assert handle(event, CONTEXT) == {"batchItemFailures": []}
    assert blacklist.get("ooto@example.com") is None
    (reported,) = json_lines(caplog, "not_blacklisted")
    assert (reported["detail"], reported["verdict"]) == ("Transient/MailboxFull", "report")
    again = fx.sqs_event(fx.sns_envelope(soft_bounce("soft-3")))
    assert handle(again, CONTEXT) == {"batchItemFailures": []}
    entry = blacklist.get("ooto@example.com")
    assert entry is not None and entry.count == 2


def test_default_config_only_reports_transient_bounces(
    handle: Handler, blacklist: DynamoDBBlacklist
) -> None:
    """Without thresholds, any number of transient bounces blacklists nobody and counts nothing."""
    for n in range(3):
        handle(fx.lambda_sns_event(soft_bounce(f"soft-{n}")), CONTEXT)
    assert blacklist.lookup_many(["ooto@example.com"]) == {}


def test_store_failure_while_counting_alerts_then_fails(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist
) -> None:
    """A store failure in record_occurrence alerts and fails: SNS raises, SQS lists the record."""
    failing = FailingBlacklist(blacklist, fail_for=["ooto@example.com"])
    handle = make_handler(TWICE, failing, aws["ses"])
    with pytest.raises(BlacklistUnavailable, match="throttled"):
        handle(fx.lambda_sns_event(soft_bounce("soft-1")), CONTEXT)
    event = fx.sqs_event(
        fx.sns_envelope(fx.bounce_with_dsn("ok@example.com")),
        fx.sns_envelope(soft_bounce("soft-1")),
    )
    assert handle(event, CONTEXT) == {"batchItemFailures": [{"itemIdentifier": "sqs-1"}]}
    first, second = sent_alerts()
    assert "write failed: ooto@example.com" in first.body
    assert "sqs-1: write failed: ooto@example.com" in second.body
    assert blacklist.get("ok@example.com") is not None


def test_after_a_store_failure_counting_is_not_attempted(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist
) -> None:
    """Once the store failed, a later count-dependent record fails at once, untried."""
    failing = FailingBlacklist(blacklist)
    handle = make_handler(TWICE, failing, aws["ses"])
    event = fx.sqs_event(
        fx.sns_envelope(fx.bounce_with_dsn("a@example.com")),
        fx.sns_envelope(soft_bounce("soft-1")),
    )
    result = handle(event, CONTEXT)
    assert result == {
        "batchItemFailures": [{"itemIdentifier": "sqs-0"}, {"itemIdentifier": "sqs-1"}]
    }
    assert failing.record_calls == 1


def test_count_dependent_decision_without_threshold_fails_loudly(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COUNT_DEPENDENT decision without a threshold is a bug: alerted and raised, not guessed."""
    real = processor.decide_suppression

    def without_threshold(*args: Any, **kwargs: Any) -> Any:
        decision = real(*args, **kwargs)
        broken = tuple(attrs.evolve(d, threshold=None) for d in decision.count_dependent)
        return attrs.evolve(decision, count_dependent=broken)

    monkeypatch.setattr(processor, "decide_suppression", without_threshold)
    handle = make_handler(TWICE, blacklist, aws["ses"])
    with pytest.raises(ValueError, match="has no threshold"):
        handle(fx.lambda_sns_event(soft_bounce("soft-1")), CONTEXT)
    (alert,) = sent_alerts()
    assert "processing failed: ooto@example.com" in alert.body
    assert blacklist.get("ooto@example.com") is None


# -- least privilege ----------------------------------------------------------------------------


def granted_actions(sid: str) -> set[str]:
    """The actions template.yaml grants the function's role in statement `sid`."""
    template, _ = decode(str(Path(__file__).with_name("template.yaml")))
    assert template is not None
    (policy,) = template["Resources"]["FunctionRole"]["Properties"]["Policies"]
    (statement,) = (s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == sid)
    return set(statement["Action"])


def record_operations(client: Any, service: str, calls: list[str]) -> None:
    """Append the API operation name of every call `client` makes to `calls`."""

    def before_call(model: Any, **kwargs: Any) -> None:
        calls.append(f"{service}:{model.name}")

    client.meta.events.register(f"before-call.{service}.*", before_call)


def test_handler_needs_only_the_actions_the_template_grants(aws: dict[str, Any]) -> None:
    """Every DynamoDB and SES call the handler makes (new, duplicate, older, legacy, alert) is
    allowed by the role's statements in template.yaml; the least-privilege role is enough."""
    calls: list[str] = []
    record_operations(aws["dynamodb"], "dynamodb", calls)
    record_operations(aws["ses"], "ses", calls)
    aws["dynamodb"].put_item(TableName=TABLE, Item={"email": {"S": "legacy@example.com"}})
    calls.clear()
    blacklist = DynamoDBBlacklist(TABLE, client=aws["dynamodb"])
    handle = make_handler(CONFIG, blacklist, aws["ses"])
    newer = fx.bounce_with_dsn()
    older = fx.bounce_with_dsn()
    older["bounce"]["feedbackId"] = "older-feedback"
    older["bounce"]["timestamp"] = "2023-01-01T00:00:00.000Z"
    handle(fx.lambda_sns_event(newer), CONTEXT)  # new item: UpdateItem
    handle(fx.lambda_sns_event(newer), CONTEXT)  # duplicate: refused UpdateItem, GetItem
    handle(fx.lambda_sns_event(older), CONTEXT)  # older event: GetItem, PutItem
    handle(fx.lambda_sns_event(fx.bounce_with_dsn("legacy@example.com")), CONTEXT)
    for i in range(40):  # enough distinct events to make the adapter trim its id memory
        later = fx.bounce_with_dsn("busy@example.com")
        later["bounce"]["feedbackId"] = f"feedback-{i}"
        later["bounce"]["timestamp"] = f"2024-01-01T00:00:{i:02d}.000Z"
        handle(fx.lambda_sns_event(later), CONTEXT)
    failing = make_handler(CONFIG, FailingBlacklist(blacklist), aws["ses"])
    with pytest.raises(BlacklistUnavailable):
        failing(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    used = set(calls)
    assert {"dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:PutItem"} <= used
    assert "ses:SendEmail" in used
    dynamodb = {call for call in used if call.startswith("dynamodb:")}
    assert dynamodb <= granted_actions("WriteBlacklistTable")
    assert used - dynamodb <= granted_actions("SendAdminAlert")


def test_counting_needs_only_the_actions_the_template_grants(aws: dict[str, Any]) -> None:
    """Counting, a duplicate, an older event, crossing the threshold and merging beyond it use
    only the DynamoDB actions the function's role is granted."""
    calls: list[str] = []
    record_operations(aws["dynamodb"], "dynamodb", calls)
    handle = make_handler(TWICE, DynamoDBBlacklist(TABLE, client=aws["dynamodb"]), aws["ses"])
    older = soft_bounce("soft-0")
    older["bounce"]["timestamp"] = "2023-01-01T00:00:00.000Z"
    for document in (soft_bounce("soft-1"), soft_bounce("soft-1"), older, soft_bounce("soft-3")):
        handle(fx.lambda_sns_event(document), CONTEXT)
    assert {"dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:PutItem"} <= set(calls)
    assert set(calls) <= granted_actions("WriteBlacklistTable")


# -- the processor alone: in-memory blacklist, recording SES client ----------------------------


class RecordingSes:
    """An SES client that accepts every SendEmail and keeps its arguments."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_email(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": f"alert-{len(self.sent)}"}


def in_memory(blacklist: Blacklist, ses: RecordingSes | None = None) -> NotificationProcessor:
    """A processor over `blacklist` with the default policy, alerting through `ses`."""
    alerter = AdminAlerter(ses or RecordingSes(), sender=SENDER, recipients=["ops@example.com"])
    return NotificationProcessor(blacklist, alerter, table=TABLE)


def test_sns_control_message_is_logged_and_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """An SNS SubscriptionConfirmation (here an SQS body) is logged as a control message only."""
    caplog.set_level(logging.INFO)
    blacklist = InMemoryBlacklist()
    result = in_memory(blacklist)(fx.sqs_event(fx.subscription_confirmation()), CONTEXT)
    assert result == {"batchItemFailures": []}
    (line,) = json_lines(caplog, "sns_control_message")
    assert (line["message_id"], line["sns_type"]) == ("sqs-0", "SubscriptionConfirmation")
    assert len(blacklist) == 0


def test_malformed_record_line_names_index_path_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The `malformed_record` line says which record of the batch was bad, where and why."""
    event = fx.sqs_event(fx.sns_envelope(fx.delivery()), "{broken")
    assert in_memory(InMemoryBlacklist())(event, CONTEXT) == {"batchItemFailures": []}
    (line,) = json_lines(caplog, "malformed_record")
    assert (line["message_id"], line["index"], line["path"]) == ("sqs-1", 1, "$.Records[1].body")
    assert "invalid JSON" in line["error"]


def test_delivery_line_lists_at_most_max_logged_recipients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delivery to many recipients logs only the first MAX_LOGGED_RECIPIENTS of them."""
    caplog.set_level(logging.INFO)
    document = fx.delivery()
    recipients = [f"user{i}@example.com" for i in range(MAX_LOGGED_RECIPIENTS + 10)]
    document["delivery"]["recipients"] = recipients
    in_memory(InMemoryBlacklist())(fx.lambda_sns_event(document), CONTEXT)
    (line,) = json_lines(caplog, "not_written")
    assert line["recipients"] == recipients[:MAX_LOGGED_RECIPIENTS]


def test_empty_records_list_succeeds_the_sns_way() -> None:
    """An event with an empty Records list has nothing to do: it succeeds and writes nothing."""
    blacklist = InMemoryBlacklist()
    assert in_memory(blacklist)({"Records": []}, CONTEXT) is None
    assert len(blacklist) == 0


def test_alert_without_a_lambda_context_uses_placeholders() -> None:
    """Without Lambda's context object the alert names a default function and request id."""
    ses = RecordingSes()
    process = in_memory(FailingBlacklist(InMemoryBlacklist()), ses)
    with pytest.raises(BlacklistUnavailable):
        process(fx.lambda_sns_event(fx.bounce_with_dsn()), None)
    (sent,) = ses.sent
    assert sent["Message"]["Subject"]["Data"].startswith("[blacklist-lambda] 1 SES notification")
    assert "(request unknown)" in sent["Message"]["Body"]["Text"]["Data"]
