"""Tests for ses_core.feedback.transport: one entry point for every transport, batches by record."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ses_core.errors import MalformedNotification
from ses_core.feedback.notifications import NotificationKind
from ses_core.feedback.suppression import decide_suppression
from ses_core.feedback.transport import (
    EnvelopeOrigin,
    FeedbackRecord,
    RecordFailure,
    iter_feedback,
    parse_feedback,
)
from ses_core.testing import feedback_docs as fx


def _only(payload: Any) -> FeedbackRecord:
    [record] = parse_feedback(payload)
    return record


@pytest.mark.parametrize("encode", [lambda d: d, json.dumps, lambda d: json.dumps(d).encode()])
def test_lambda_sns_event_as_mapping_text_or_bytes(encode: Any) -> None:
    """A whole Lambda SNS event parses from a dict, JSON text or bytes, with envelope metadata."""
    record = _only(encode(fx.lambda_sns_event(fx.bounce_with_dsn())))
    env = record.envelope
    assert env.origin is EnvelopeOrigin.LAMBDA_SNS
    assert (env.sns_type, env.sns_message_id, env.topic_arn) == (
        "Notification",
        "sns-0",
        fx.TOPIC_ARN,
    )
    assert env.timestamp is not None and env.timestamp.year == 2023
    assert env.signing_cert_url == fx.CERT_URL  # read from the Lambda spelling SigningCertUrl
    assert env.unsubscribe_url is not None and env.sqs_message_id is None and env.subject is None
    assert record.notification is not None and record.notification.kind is NotificationKind.BOUNCE
    assert not record.is_confirmation


def test_single_lambda_sns_record() -> None:
    """One Records[] entry given alone parses like the whole event."""
    record = _only(fx.lambda_sns_record(fx.complaint_with_feedback()))
    assert record.envelope.origin is EnvelopeOrigin.LAMBDA_SNS
    assert record.notification is not None and record.notification.complaint is not None


def test_lambda_sns_event_with_several_records() -> None:
    """Every record of an event becomes one FeedbackRecord, in order."""
    records = parse_feedback(fx.lambda_sns_event(fx.bounce_with_dsn(), fx.delivery()))
    kinds = [r.notification.kind for r in records if r.notification is not None]
    assert kinds == [NotificationKind.BOUNCE, NotificationKind.DELIVERY]
    assert [r.envelope.sns_message_id for r in records] == ["sns-0", "sns-1"]


@pytest.mark.parametrize("cert_key", ["SigningCertURL", "SigningCertUrl"])
def test_sns_http_notification_body_either_cert_url_spelling(cert_key: str) -> None:
    """An SNS HTTP(S) Notification body parses, whichever SigningCert key spelling it uses."""
    body = json.dumps(fx.sns_envelope(fx.complaint_with_feedback(), cert_key=cert_key))
    record = _only(body)
    assert record.envelope.origin is EnvelopeOrigin.SNS
    assert record.envelope.signing_cert_url == fx.CERT_URL
    assert record.envelope.signature_version == "1"
    assert record.notification is not None and record.notification.complaint is not None


@pytest.mark.parametrize("sns_type", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_confirmations_have_no_notification(sns_type: str) -> None:
    """(Un)subscription confirmations give their URL and token and no notification."""
    record = _only(json.dumps(fx.subscription_confirmation(sns_type)))
    assert record.is_confirmation and record.notification is None
    assert record.envelope.sns_type == sns_type
    assert record.envelope.subscribe_url is not None
    assert record.envelope.subscribe_url.startswith("https://sns.us-east-1.amazonaws.com/")
    assert record.envelope.token is not None


def test_sqs_event_with_sns_envelope_bodies_keeps_sqs_ids() -> None:
    """SQS records holding SNS envelopes keep both the SQS and the SNS message ids."""
    event = fx.sqs_event(
        fx.sns_envelope(fx.bounce_with_dsn()), fx.sns_envelope(fx.event_complaint())
    )
    records = parse_feedback(json.dumps(event))
    assert [r.envelope.sqs_message_id for r in records] == ["sqs-0", "sqs-1"]
    assert all(r.envelope.origin is EnvelopeOrigin.SQS for r in records)
    assert all(r.envelope.topic_arn == fx.TOPIC_ARN for r in records)


def test_sqs_event_with_raw_message_delivery() -> None:
    """An SQS body that is the SES JSON itself (raw delivery) parses, without SNS metadata."""
    record = _only(fx.sqs_event(fx.bounce_without_dsn()))
    assert record.envelope.sqs_message_id == "sqs-0"
    assert record.envelope.sns_message_id is None
    assert record.notification is not None and record.notification.bounce is not None


def test_single_sqs_record() -> None:
    """One SQS record given alone parses."""
    record = _only(fx.sqs_record(fx.sns_envelope(fx.delivery()), message_id="m-1"))
    assert record.envelope.sqs_message_id == "m-1"


def test_sqs_body_text_given_alone() -> None:
    """An SQS body (SNS JSON text) handed over alone parses as an SNS envelope."""
    record = _only(json.dumps(fx.sns_envelope(fx.bounce_with_dsn())))
    assert record.notification is not None and record.notification.bounce is not None


def test_bare_ses_json() -> None:
    """Bare SES JSON (classic or event) parses with a BARE envelope."""
    for doc in (fx.bounce_with_dsn(), fx.event_bounce(), fx.other_event("Open")):
        record = _only(json.dumps(doc))
        assert record.envelope.origin is EnvelopeOrigin.BARE
        assert record.notification is not None


def test_sns_message_given_as_decoded_object() -> None:
    """A Message that was already decoded into an object is accepted too."""
    envelope = fx.sns_envelope(fx.bounce_with_dsn())
    envelope["Message"] = fx.bounce_with_dsn()
    assert _only(envelope).notification is not None


def test_iter_feedback_isolates_a_bad_record() -> None:
    """One malformed SQS record yields a RecordFailure with its id; the valid ones still parse."""
    bad = fx.bounce_with_dsn()
    bad["bounce"]["bouncedRecipients"][0]["emailAddress"] = ["x"]
    event = fx.sqs_event(fx.sns_envelope(fx.bounce_with_dsn()), fx.sns_envelope(bad), "{oops")
    items = list(iter_feedback(event))
    assert isinstance(items[0], FeedbackRecord)
    assert isinstance(items[1], RecordFailure) and isinstance(items[2], RecordFailure)
    assert (items[1].index, items[1].sqs_message_id) == (1, "sqs-1")
    assert (
        items[1].error.path == "$.Records[1].body.Message.bounce.bouncedRecipients[0].emailAddress"
    )
    assert (items[2].sqs_message_id, items[2].error.path) == ("sqs-2", "$.Records[2].body")


def test_iter_feedback_reports_sns_message_id_of_bad_sns_record() -> None:
    """A bad Lambda SNS record's failure names its SNS MessageId."""
    event = fx.lambda_sns_event("not json")
    [failure] = list(iter_feedback(event))
    assert isinstance(failure, RecordFailure)
    assert (failure.sns_message_id, failure.sqs_message_id) == ("sns-0", None)
    assert failure.error.path == "$.Records[0].Sns.Message"


def test_iter_feedback_survives_records_that_are_not_objects() -> None:
    """A record that is not an object, or has unreadable ids, still gives a RecordFailure."""
    event = {"Records": [17, {"messageId": 5, "body": 3}, {"Sns": "x"}]}
    items = list(iter_feedback(event))
    assert all(isinstance(item, RecordFailure) for item in items)
    assert [item.error.path for item in items if isinstance(item, RecordFailure)] == [
        "$.Records[0]",
        "$.Records[1].messageId",
        "$.Records[2].Sns",
    ]


def test_parse_feedback_raises_for_any_bad_record() -> None:
    """parse_feedback is all-or-nothing: one bad record raises its error."""
    event = fx.lambda_sns_event(fx.bounce_with_dsn(), "{}")
    with pytest.raises(MalformedNotification) as info:
        parse_feedback(event)
    assert info.value.path == "$.Records[1].Sns.Message.notificationType"


def test_the_documented_deep_path() -> None:
    """A mistyped third recipient address is reported at its full path through the envelope."""
    doc = fx.bounce_without_dsn()
    doc["bounce"]["bouncedRecipients"].append({"emailAddress": 12})
    with pytest.raises(MalformedNotification) as info:
        parse_feedback(json.dumps(fx.lambda_sns_event(doc)))
    assert info.value.path == "$.Records[0].Sns.Message.bounce.bouncedRecipients[2].emailAddress"


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ("{not json", "$"),
        (b"\xff\xfe\xfa", "$"),
        ("[]", "$"),
        ("null", "$"),
        ({"hello": "world"}, "$"),
        ({"Records": "nope"}, "$.Records"),
        ({"Records": [{"what": 1}]}, "$.Records[0]"),
        ({"Records": [{"Sns": {"Type": "Notification"}}]}, "$.Records[0].Sns.MessageId"),
        ({"Type": "Surprise", "TopicArn": "t"}, "$.Type"),
        ({"Type": "Notification", "MessageId": "m"}, "$.TopicArn"),
        ({"Records": [{"messageId": "m", "body": {"a": 1}}]}, "$.Records[0].body"),
        ({"Records": [{"messageId": "m", "body": "[1]"}]}, "$.Records[0].body"),
        ("1" * 5000, "$"),
    ],
)
def test_bad_payloads_raise_malformed_with_path(payload: Any, path: str) -> None:
    """Each kind of bad input raises MalformedNotification naming where it went wrong."""
    with pytest.raises(MalformedNotification) as info:
        parse_feedback(payload)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: s.update(Message=5), "$.Message"),
        (lambda s: s.pop("Message"), "$.Message"),
        (lambda s: s.update(Message="Hello"), "$.Message"),
        (lambda s: s.update(Timestamp="then"), "$.Timestamp"),
        (lambda s: s.update(TopicArn=None), "$.TopicArn"),
        (lambda s: s.update(Subject=["x"]), "$.Subject"),
        (lambda s: s.update(SigningCertURL=1), "$.SigningCertURL"),
    ],
)
def test_bad_sns_envelope_fields(mutate: Any, path: str) -> None:
    """Bad SNS envelope fields, including a Message that is not JSON, are reported by path."""
    envelope = fx.sns_envelope(fx.bounce_with_dsn())
    mutate(envelope)
    with pytest.raises(MalformedNotification) as info:
        parse_feedback(envelope)
    assert info.value.path == path


def test_deeply_nested_junk_is_malformed_not_recursion_error() -> None:
    """JSON nested far beyond the decoder's recursion limit becomes MalformedNotification."""
    junk = "[" * 100_000 + "]" * 100_000
    with pytest.raises(MalformedNotification, match="nested too deeply"):
        parse_feedback(junk)
    envelope = fx.sns_envelope(junk)
    with pytest.raises(MalformedNotification) as info:
        parse_feedback(json.dumps(envelope))
    assert info.value.path == "$.Message"


def test_oversized_message_is_refused_by_size() -> None:
    """A Message over the 1 MiB nested-document cap is refused before decoding."""
    envelope = fx.sns_envelope(" " * (1024 * 1024 + 1))
    with pytest.raises(MalformedNotification, match="at most") as info:
        parse_feedback(envelope)
    assert info.value.path == "$.Message"


def test_oversized_payload_is_refused_by_size() -> None:
    """A payload over the 6 MiB cap is refused before decoding."""
    with pytest.raises(MalformedNotification, match="at most"):
        parse_feedback(b" " * (6 * 1024 * 1024 + 1))


def test_megabyte_document_within_limits_parses() -> None:
    """A notification padded to nearly a megabyte with unknown fields and headers still parses."""
    doc = fx.bounce_with_dsn()
    doc["mail"]["headers"] = [{"name": f"X-Pad-{i}", "value": "v" * 900} for i in range(1000)]
    record = _only(fx.lambda_sns_event(doc))
    assert record.notification is not None and record.notification.bounce is not None


def test_megabyte_recipient_address_is_invalid_not_fatal() -> None:
    """A 500 KB 'address' is kept as an invalid recipient, quickly, without failing the parse."""
    doc = fx.bounce_with_dsn()
    doc["bounce"]["bouncedRecipients"].append({"emailAddress": "a" * 500_000 + "@example.com"})
    record = _only(doc)
    assert record.notification is not None and record.notification.bounce is not None
    assert len(record.notification.bounce.invalid_recipients) == 1


# --- property tests: nothing but a parse result or MalformedNotification, ever -----------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_KEYS = [
    "Records",
    "Sns",
    "body",
    "Type",
    "TopicArn",
    "Message",
    "MessageId",
    "Timestamp",
    "notificationType",
    "eventType",
    "mail",
    "bounce",
    "complaint",
    "messageId",
]
_shaped = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=25,
)
_DOCUMENTS: list[Callable[[], dict[str, Any]]] = [
    fx.bounce_with_dsn,
    fx.bounce_without_dsn,
    fx.complaint_with_feedback,
    fx.complaint_without_feedback,
    fx.delivery,
    fx.event_bounce,
    fx.event_complaint,
    lambda: fx.other_event("Click"),
]
_WRAPPERS: list[Callable[[dict[str, Any]], Any]] = [
    lambda d: d,
    lambda d: fx.lambda_sns_event(d),
    lambda d: json.dumps(fx.sns_envelope(d)),
    lambda d: fx.sqs_event(fx.sns_envelope(d)),
    lambda d: fx.sqs_event(d),
]


def _assert_names_its_path(error: MalformedNotification, prefix: str = "$") -> None:
    """The error's path is `prefix` or a JSON path below it, and its message starts with it."""
    assert isinstance(error, MalformedNotification)
    assert isinstance(error.path, str), error.path
    rest = error.path.removeprefix(prefix)
    assert rest != error.path and rest[:1] in ("", ".", "["), (prefix, error.path)
    assert str(error).startswith(f"{error.path}: "), str(error)
    assert error.reason and error.reason in str(error)


def _parse_anything(payload: Any) -> None:
    """Parse and decide; only MalformedNotification naming the bad field's path may escape."""
    try:
        records = parse_feedback(payload)
    except MalformedNotification as exc:
        _assert_names_its_path(exc)
    else:
        for record in records:
            decide_suppression(record.notification)
    try:
        for item in iter_feedback(payload):
            if isinstance(item, FeedbackRecord):
                decide_suppression(item.notification)
            else:
                # A record's failure is blamed on that record, not on the batch around it.
                _assert_names_its_path(item.error, f"$.Records[{item.index}]")
    except MalformedNotification as exc:
        _assert_names_its_path(exc)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], action: str, junk: Any) -> None:
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "junk":
        parent[last] = junk
    else:  # change the type while keeping the "content"
        value = parent[last]
        parent[last] = [value] if not isinstance(value, list) else {"x": value}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values)
def test_property_arbitrary_json_values(value: Any) -> None:
    """Any JSON value, decoded or as text, parses or raises MalformedNotification."""
    _parse_anything(value)
    _parse_anything(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(_shaped)
def test_property_envelope_shaped_junk(value: Any) -> None:
    """Junk built from the envelope's own keys parses or raises MalformedNotification."""
    _parse_anything(value)
    _parse_anything({"Records": [value]})
    _parse_anything({"Records": [{"Sns": value}, {"messageId": "m", "body": json.dumps(value)}]})


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(range(len(_DOCUMENTS))),
    st.sampled_from(range(len(_WRAPPERS))),
    st.data(),
    st.sampled_from(["delete", "junk", "retype"]),
    _json_values,
)
def test_property_mutated_valid_documents(
    doc_index: int, wrapper_index: int, data: st.DataObject, action: str, junk: Any
) -> None:
    """A valid document with one key deleted, retyped or replaced by junk never escapes typed."""
    doc = _DOCUMENTS[doc_index]()
    path = data.draw(st.sampled_from(_paths(doc)))
    _mutate(doc, path, action, junk)
    _parse_anything(_WRAPPERS[wrapper_index](doc))


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(["delete", "junk", "retype"]), _json_values)
def test_property_mutated_envelopes(data: st.DataObject, action: str, junk: Any) -> None:
    """Mutating the Lambda/SQS/SNS envelope itself gives a result or MalformedNotification."""
    event = data.draw(
        st.sampled_from(
            [
                fx.lambda_sns_event(fx.bounce_with_dsn()),
                fx.sqs_event(fx.sns_envelope(fx.complaint_with_feedback())),
                fx.subscription_confirmation(),
            ]
        )
    )
    path = data.draw(st.sampled_from(_paths(event)))
    _mutate(event, path, action, junk)
    _parse_anything(event)
    _parse_anything(json.dumps(event))
