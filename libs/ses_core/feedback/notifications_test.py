"""Tests for ses_core.feedback.notifications: SES documents of every type parse into values."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from ses_core.errors import MalformedNotification
from ses_core.feedback.notifications import (
    Bounce,
    Complaint,
    Delivery,
    NotificationFormat,
    NotificationKind,
    SesNotification,
)
from ses_core.testing import feedback_docs as fx


def test_classic_bounce_with_dsn_keeps_every_field() -> None:
    """A classic bounce with a DSN exposes type, subtype, DSN fields, feedback id and MTA data."""
    n = SesNotification.from_json(fx.bounce_with_dsn())
    assert n.kind is NotificationKind.BOUNCE
    assert n.format is NotificationFormat.NOTIFICATION
    assert n.bounce is not None and n.complaint is None and n.delivery is None
    b = n.bounce
    assert (b.bounce_type, b.bounce_subtype, b.detail) == (
        "Permanent",
        "General",
        "Permanent/General",
    )
    assert b.feedback_id == fx.BOUNCE_FEEDBACK_ID
    assert b.timestamp == datetime(2023, 12, 14, 14, 59, 38, 237000, tzinfo=UTC)
    assert (b.reporting_mta, b.remote_mta_ip) == ("dns; email.example.com", "127.0.2.0")
    [r] = b.recipients
    assert r.address.key == "jane@example.com"
    assert (r.action, r.status) == ("failed", "5.1.1")
    assert r.diagnostic_code is not None and r.diagnostic_code.startswith("smtp; 550")


def test_bounce_without_dsn_has_no_dsn_fields_or_headers() -> None:
    """Without a DSN the recipient's action/status/diagnostic code are None; headers absent."""
    n = SesNotification.from_json(fx.bounce_without_dsn())
    assert n.bounce is not None and n.mail is not None
    assert [r.address.key for r in n.bounce.recipients] == [
        "jane@example.com",
        "richard@example.com",
    ]
    assert all(r.action is None and r.status is None for r in n.bounce.recipients)
    assert n.bounce.remote_mta_ip is None
    assert n.mail.common_headers is None and n.mail.headers_truncated is None


def test_complaint_with_feedback_report() -> None:
    """A complaint with a feedback report exposes its type, user agent and arrival date."""
    n = SesNotification.from_json(fx.complaint_with_feedback())
    assert n.kind is NotificationKind.COMPLAINT and n.complaint is not None
    c = n.complaint
    assert [a.key for a in c.recipients] == ["richard@example.com"]
    assert (c.feedback_type, c.detail) == ("abuse", "complaint:abuse")
    assert c.user_agent == "AnyCompany Feedback Loop (V0.01)"
    assert c.arrival_date == datetime(2023, 12, 14, 15, 1, 2, tzinfo=UTC)
    assert c.feedback_id == fx.COMPLAINT_FEEDBACK_ID


def test_complaint_without_feedback_report() -> None:
    """A null complaintSubType and a missing feedback type give None and the detail "complaint"."""
    c = Complaint.from_json(fx.complaint_without_feedback()["complaint"])
    assert (c.feedback_type, c.subtype, c.user_agent, c.arrival_date) == (None, None, None, None)
    assert c.detail == "complaint"


def test_unparseable_arrival_date_is_dropped_not_fatal() -> None:
    """A third-party arrivalDate that is not ISO 8601 becomes None; the complaint still parses."""
    doc = fx.complaint_with_feedback()
    doc["complaint"]["arrivalDate"] = "Thu, 14 Dec 2023 15:01:02 +0000"
    c = Complaint.from_json(doc["complaint"])
    assert c.arrival_date is None and c.recipients


def test_delivery_notification() -> None:
    """A delivery notification gives recipients, processing time and the SMTP response."""
    n = SesNotification.from_json(fx.delivery())
    assert n.kind is NotificationKind.DELIVERY and n.delivery is not None
    d = n.delivery
    assert [a.key for a in d.recipients] == ["success@simulator.amazonses.com"]
    assert d.processing_time_ms == 546
    assert d.smtp_response == "250 ok:  Message 64111812 accepted"


def test_event_publishing_bounce_with_display_name_source_and_tags() -> None:
    """An eventType record parses like a classic one; the display name and tags are kept."""
    n = SesNotification.from_json(fx.event_bounce())
    assert (n.kind, n.format) == (NotificationKind.BOUNCE, NotificationFormat.EVENT)
    assert n.mail is not None and n.mail.source is not None
    assert n.mail.source.display_name == "Sender Name"
    assert n.mail.source.key == "sender@example.com"
    assert n.mail.source_text == "Sender Name <sender@example.com>"
    assert n.mail.tags["ses:configuration-set"] == ("ConfigSet",)


def test_event_publishing_complaint_and_delivery() -> None:
    """eventType Complaint and Delivery give typed complaint/delivery values."""
    complaint = SesNotification.from_json(fx.event_complaint())
    delivery = SesNotification.from_json(fx.event_delivery())
    assert complaint.complaint is not None and complaint.complaint.feedback_type == "abuse"
    assert delivery.delivery is not None and delivery.delivery.processing_time_ms == 1028


@pytest.mark.parametrize("event_type", sorted(fx.OTHER_EVENTS))
def test_other_event_types_parse_with_their_details(event_type: str) -> None:
    """Send, Reject, Open, Click, Rendering Failure, DeliveryDelay, Subscription are values."""
    n = SesNotification.from_json(fx.other_event(event_type))
    assert n.kind == NotificationKind(event_type)
    assert n.type_name == event_type
    assert n.bounce is None and n.complaint is None and n.delivery is None
    key, detail = fx.OTHER_EVENTS[event_type]
    assert dict(n.details) == detail


def test_unknown_type_parses_as_unknown_with_its_name() -> None:
    """A type SES may add later parses as UNKNOWN and keeps its name and mail part."""
    doc = fx.event("Teleported", "teleport", {"where": "moon"})
    n = SesNotification.from_json(doc)
    assert (n.kind, n.type_name) == (NotificationKind.UNKNOWN, "Teleported")
    assert n.mail is not None and n.mail.message_id == fx.SES_MESSAGE_ID


def test_subscription_succeeded_test_notification_has_no_mail() -> None:
    """SES's AmazonSnsSubscriptionSucceeded message (no mail object) parses as UNKNOWN."""
    n = SesNotification.from_json(fx.subscription_succeeded())
    assert (n.kind, n.type_name, n.mail) == (
        NotificationKind.UNKNOWN,
        "AmazonSnsSubscriptionSucceeded",
        None,
    )


@pytest.mark.parametrize(
    "mail",
    [
        "not an object",
        ["a", "list"],
        42,
        {},
        {"messageId": 7, "source": "a@example.com"},
        {"messageId": "m", "source": "a@example.com", "timestamp": "whenever"},
        {"somethingNew": {"nested": True}},
    ],
)
def test_unknown_type_with_a_malformed_mail_is_not_an_error(mail: object) -> None:
    """An UNKNOWN kind whose mail is not an object or oddly shaped parses with mail None."""
    doc = fx.event("Teleported", "teleport", {"where": "moon"})
    doc["mail"] = mail
    n = SesNotification.from_json(doc)
    assert (n.kind, n.type_name, n.mail) == (NotificationKind.UNKNOWN, "Teleported", None)
    assert n.details["mail"] == mail
    assert n.details["teleport"] == {"where": "moon"}


def test_unknown_type_keeps_the_raw_document_as_details() -> None:
    """An UNKNOWN kind's details are its raw document, since its detail key is unknown."""
    doc = fx.event("Teleported", "teleport", {"where": "moon"})
    n = SesNotification.from_json(doc)
    assert dict(n.details) == doc
    with pytest.raises(TypeError):
        n.details["teleport"] = {}  # type: ignore[index]


@pytest.mark.parametrize(
    "document", [fx.bounce_with_dsn, fx.delivery, lambda: fx.other_event("Open")]
)
@pytest.mark.parametrize(("mail", "path"), [("oops", "$.mail"), ({}, "$.mail.source")])
def test_known_kinds_with_a_malformed_mail_still_raise(
    document: Callable[[], dict[str, Any]], mail: object, path: str
) -> None:
    """Only UNKNOWN kinds tolerate a malformed mail: known kinds raise naming its path."""
    doc = document()
    doc["mail"] = mail
    with pytest.raises(MalformedNotification) as info:
        SesNotification.from_json(doc)
    assert info.value.path == path


def test_unknown_extra_fields_are_ignored() -> None:
    """Fields SES adds later, at any level, do not disturb parsing."""
    doc = fx.bounce_with_dsn()
    doc["newTopLevel"] = {"x": [1, 2]}
    doc["mail"]["newMailField"] = 3
    doc["bounce"]["bouncedRecipients"][0]["newRecipientField"] = None
    n = SesNotification.from_json(doc)
    assert n.bounce is not None and n.bounce.recipients[0].address.key == "jane@example.com"


def test_invalid_recipient_is_kept_as_raw_text() -> None:
    """A recipient that is not an address lands in invalid_recipients; the others still parse."""
    doc = fx.bounce_without_dsn()
    doc["bounce"]["bouncedRecipients"].insert(1, {"emailAddress": "not an address"})
    b = Bounce.from_json(doc["bounce"], "$.bounce")
    assert [r.address.key for r in b.recipients] == ["jane@example.com", "richard@example.com"]
    [bad] = b.invalid_recipients
    assert bad.text == "not an address"
    assert bad.path == "$.bounce.bouncedRecipients[1].emailAddress"
    assert bad.error


def test_invalid_delivery_recipient_is_kept_as_raw_text() -> None:
    """Delivery recipients that are not addresses are kept apart, not fatal."""
    doc = fx.delivery()
    doc["delivery"]["recipients"].append("@@")
    d = Delivery.from_json(doc["delivery"])
    assert [r.text for r in d.invalid_recipients] == ["@@"]
    assert len(d.recipients) == 1


def test_from_message_accepts_json_text_and_bytes() -> None:
    """SesNotification.from_message decodes JSON text or bytes."""
    import json

    text = json.dumps(fx.complaint_with_feedback())
    assert SesNotification.from_message(text) == SesNotification.from_message(text.encode())


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.pop("notificationType"), "$.notificationType"),
        (lambda d: d.update(notificationType=7), "$.notificationType"),
        (lambda d: d.pop("mail"), "$.mail"),
        (lambda d: d["mail"].update(messageId=None), "$.mail.messageId"),
        (lambda d: d["mail"].update(timestamp="yesterday"), "$.mail.timestamp"),
        (lambda d: d["mail"].update(timestamp="0001-01-01T00:00:00+01:00"), "$.mail.timestamp"),
        (
            lambda d: d["mail"].update(timestamp="2023-12-14T14:59:37" + "0" * 100),
            "$.mail.timestamp",
        ),
        (lambda d: d["mail"].update(destination=["a@b.c", 5]), "$.mail.destination[1]"),
        (lambda d: d["mail"].update(tags={"t": "not-a-list"}), "$.mail.tags.t"),
        (lambda d: d["mail"].update(commonHeaders=[]), "$.mail.commonHeaders"),
        (lambda d: d["bounce"].update(bounceType=None), "$.bounce.bounceType"),
        (lambda d: d["bounce"].update(bouncedRecipients={}), "$.bounce.bouncedRecipients"),
        (
            lambda d: d["bounce"]["bouncedRecipients"].__setitem__(0, "jane@example.com"),
            "$.bounce.bouncedRecipients[0]",
        ),
        (
            lambda d: d["bounce"]["bouncedRecipients"][0].update(emailAddress=42),
            "$.bounce.bouncedRecipients[0].emailAddress",
        ),
        (
            lambda d: d["bounce"]["bouncedRecipients"][0].update(status=5.11),
            "$.bounce.bouncedRecipients[0].status",
        ),
        (lambda d: d["bounce"].pop("feedbackId"), "$.bounce.feedbackId"),
    ],
)
def test_malformed_fields_name_their_path(mutate: Callable[[Any], object], path: str) -> None:
    """Missing or mistyped fields raise MalformedNotification whose path names the field."""
    doc = fx.bounce_with_dsn()
    mutate(doc)
    with pytest.raises(MalformedNotification) as info:
        SesNotification.from_json(doc)
    assert info.value.path == path
    assert str(info.value).startswith(path)


def test_message_that_is_not_json_is_malformed() -> None:
    """A Message string that is not JSON raises MalformedNotification at its path."""
    with pytest.raises(MalformedNotification) as info:
        SesNotification.from_message("Hello, not JSON", "$.Message")
    assert info.value.path == "$.Message"


def test_message_that_is_a_json_array_is_malformed() -> None:
    """A Message that decodes to something other than an object is malformed."""
    with pytest.raises(MalformedNotification, match="expected an object"):
        SesNotification.from_message("[1, 2]")
