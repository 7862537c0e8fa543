"""Realistic SES feedback documents (every notification and event type) as Python values.

Written from the AWS pages "Amazon SNS notification examples for Amazon SES", "Examples of event
data that Amazon SES publishes to Amazon SNS" and the field lists in "Amazon SNS notification
contents" (summarised in docs/ses-facts.md), including the odd cases: no DSN fields, null
complaintSubType, a display name in `mail.source`, several recipients, unknown extra fields.
The SNS/SQS/Lambda wrappers live in `feedback_transport_docs` and are re-exported here, so tests
use one namespace (`from ses_core.testing import feedback_docs as fx`). Every function returns a
fresh object, so callers may mutate what they get.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ses_core.testing.feedback_transport_docs import (
    ACCOUNT,
    CERT_URL,
    REGION,
    TOPIC_ARN,
    lambda_sns_event,
    lambda_sns_record,
    sns_envelope,
    sqs_event,
    sqs_record,
    subscription_confirmation,
)

SES_MESSAGE_ID = "0100018c6e1c8e0a-5b8c1d2e-3f4a-4b5c-8d9e-0f1a2b3c4d5e-000000"
BOUNCE_FEEDBACK_ID = "0100018c6e1c9f11-aa11bb22-cc33-dd44-ee55-ff6677889900-000000"
COMPLAINT_FEEDBACK_ID = "0100018c6e1d0a22-11aa22bb-33cc-44dd-55ee-66ff77889900-000000"

__all__ = [
    "ACCOUNT",
    "BOUNCE_FEEDBACK_ID",
    "CERT_URL",
    "COMPLAINT_FEEDBACK_ID",
    "OTHER_EVENTS",
    "REGION",
    "SES_MESSAGE_ID",
    "TOPIC_ARN",
    "bounce_with_dsn",
    "bounce_without_dsn",
    "complaint_with_feedback",
    "complaint_without_feedback",
    "delivery",
    "event",
    "event_bounce",
    "event_complaint",
    "event_delivery",
    "lambda_sns_event",
    "lambda_sns_record",
    "mail",
    "other_event",
    "sns_envelope",
    "sqs_event",
    "sqs_record",
    "subscription_confirmation",
    "subscription_succeeded",
    "transient_bounce",
]


def _headers() -> list[dict[str, str]]:
    return [
        {"name": "From", "value": '"John Doe" <john@example.com>'},
        {"name": "To", "value": '"Jane Doe" <jane@example.com>, "Mary Doe" <mary@example.com>'},
        {"name": "Message-ID", "value": "custom-message-ID"},
        {"name": "Subject", "value": "Hello"},
        {"name": "Content-Type", "value": 'text/plain; charset="UTF-8"'},
    ]


def mail(
    *,
    destination: Sequence[str] = ("jane@example.com", "mary@example.com", "richard@example.com"),
    source: str = "john@example.com",
    headers: bool = True,
    tags: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """An SES `mail` object (with original headers unless `headers` is False)."""
    value: dict[str, Any] = {
        "timestamp": "2023-12-14T14:59:37.123Z",
        "source": source,
        "sourceArn": f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/example.com",
        "sourceIp": "192.0.2.10",
        "callerIdentity": "ses-relay",
        "sendingAccountId": ACCOUNT,
        "messageId": SES_MESSAGE_ID,
        "destination": list(destination),
    }
    if headers:
        value["headersTruncated"] = False
        value["headers"] = _headers()
        value["commonHeaders"] = {
            "from": ['"John Doe" <john@example.com>'],
            "date": "Thu, 14 Dec 2023 14:59:37 +0000",
            "to": ['"Jane Doe" <jane@example.com>', '"Mary Doe" <mary@example.com>'],
            "messageId": "custom-message-ID",
            "subject": "Hello",
        }
    if tags is not None:
        value["tags"] = {name: list(values) for name, values in tags.items()}
    return value


def bounce_with_dsn(recipient: str = "jane@example.com") -> dict[str, Any]:
    """Classic Permanent/General bounce carrying a DSN (action, status, diagnosticCode)."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "reportingMTA": "dns; email.example.com",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "status": "5.1.1",
                    "action": "failed",
                    "diagnosticCode": f"smtp; 550 5.1.1 <{recipient}>... User unknown",
                }
            ],
            "bounceSubType": "General",
            "timestamp": "2023-12-14T14:59:38.237Z",
            "feedbackId": BOUNCE_FEEDBACK_ID,
            "remoteMtaIp": "127.0.2.0",
        },
        "mail": mail(destination=(recipient, "mary@example.com", "richard@example.com")),
    }


def bounce_without_dsn() -> dict[str, Any]:
    """Classic Permanent/Suppressed bounce: no DSN fields, no original headers, two recipients."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "Suppressed",
            "bouncedRecipients": [
                {"emailAddress": "jane@example.com"},
                {"emailAddress": "richard@example.com"},
            ],
            "timestamp": "2023-12-14T14:59:38.237Z",
            "feedbackId": BOUNCE_FEEDBACK_ID,
            "reportingMTA": "dns; email.example.com",
        },
        "mail": mail(headers=False),
    }


def transient_bounce(
    subtype: str = "General", recipient: str = "ooto@example.com"
) -> dict[str, Any]:
    """Classic Transient bounce (General is what an out-of-office reply gives)."""
    document = bounce_with_dsn(recipient)
    document["bounce"]["bounceType"] = "Transient"
    document["bounce"]["bounceSubType"] = subtype
    document["bounce"]["bouncedRecipients"][0]["status"] = "4.2.2"
    return document


def complaint_with_feedback(feedback_type: str = "abuse") -> dict[str, Any]:
    """Classic complaint with a feedback report (userAgent, feedback type, arrival date)."""
    return {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": "richard@example.com"}],
            "complaintFeedbackType": feedback_type,
            "arrivalDate": "2023-12-14T15:01:02.000Z",
            "timestamp": "2023-12-14T15:01:03.456Z",
            "feedbackId": COMPLAINT_FEEDBACK_ID,
        },
        "mail": mail(),
    }


def complaint_without_feedback() -> dict[str, Any]:
    """Classic complaint without a feedback report: null complaintSubType, no feedback type."""
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "richard@example.com"}],
            "timestamp": "2023-12-14T15:01:03.456Z",
            "feedbackId": COMPLAINT_FEEDBACK_ID,
            "complaintSubType": None,
        },
        "mail": mail(headers=False),
    }


def delivery() -> dict[str, Any]:
    """Classic delivery notification."""
    return {
        "notificationType": "Delivery",
        "mail": mail(destination=("success@simulator.amazonses.com",), headers=False),
        "delivery": {
            "timestamp": "2023-12-14T14:59:38.500Z",
            "recipients": ["success@simulator.amazonses.com"],
            "processingTimeMillis": 546,
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "remoteMtaIp": "127.0.2.0",
        },
    }


_EVENT_TAGS = {
    "ses:configuration-set": ["ConfigSet"],
    "ses:source-ip": ["192.0.2.10"],
    "ses:from-domain": ["example.com"],
    "ses:caller-identity": ["ses-relay"],
}


def event(
    event_type: str, detail_key: str | None, detail: Mapping[str, Any] | None
) -> dict[str, Any]:
    """An event-publishing record; the mail source carries a display name, as SES writes it."""
    document: dict[str, Any] = {
        "eventType": event_type,
        "mail": mail(
            destination=("recipient@example.com",),
            source="Sender Name <sender@example.com>",
            tags=_EVENT_TAGS,
        ),
    }
    if detail_key is not None:
        document[detail_key] = copy.deepcopy(dict(detail or {}))
    return document


def event_bounce() -> dict[str, Any]:
    """Event-publishing Bounce record."""
    return event(
        "Bounce",
        "bounce",
        {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "recipient@example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2023-12-14T14:59:38.237Z",
            "feedbackId": BOUNCE_FEEDBACK_ID,
            "reportingMTA": "dsn; mta.example.com",
        },
    )


def event_complaint() -> dict[str, Any]:
    """Event-publishing Complaint record (complaintSubType null, feedback type abuse)."""
    return event(
        "Complaint",
        "complaint",
        {
            "complainedRecipients": [{"emailAddress": "recipient@example.com"}],
            "timestamp": "2023-12-14T15:01:03.456Z",
            "feedbackId": COMPLAINT_FEEDBACK_ID,
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2023-12-14T15:01:02.000Z",
            "complaintSubType": None,
        },
    )


def event_delivery() -> dict[str, Any]:
    """Event-publishing Delivery record."""
    return event(
        "Delivery",
        "delivery",
        {
            "timestamp": "2023-12-14T14:59:38.500Z",
            "processingTimeMillis": 1028,
            "recipients": ["recipient@example.com"],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "mta.example.com",
        },
    )


#: The remaining event types with detail objects shaped like AWS's examples.
OTHER_EVENTS: dict[str, tuple[str | None, dict[str, Any] | None]] = {
    "Send": ("send", {}),
    "Reject": ("reject", {"reason": "Bad content"}),
    "Open": (
        "open",
        {
            "ipAddress": "192.0.2.1",
            "timestamp": "2023-12-14T16:00:00.000Z",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
        },
    ),
    "Click": (
        "click",
        {
            "ipAddress": "192.0.2.1",
            "link": "https://docs.example.com/getting-started",
            "linkTags": {"samplekey0": ["samplevalue0"]},
            "timestamp": "2023-12-14T16:01:00.000Z",
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        },
    ),
    "Rendering Failure": (
        "failure",
        {"errorMessage": "Attribute 'attributeName' is not present", "templateName": "MyTemplate"},
    ),
    "DeliveryDelay": (
        "deliveryDelay",
        {
            "timestamp": "2023-12-14T15:30:00.000Z",
            "delayType": "TransientCommunicationFailure",
            "expirationTime": "2023-12-15T14:59:37.000Z",
            "delayedRecipients": [
                {
                    "emailAddress": "recipient@example.com",
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.0 Unable to lookup DNS for example.com",
                }
            ],
        },
    ),
    "Subscription": (
        "subscription",
        {
            "contactList": "ContactListName",
            "timestamp": "2023-12-14T15:00:00.000Z",
            "source": "UnsubscribeHeader",
            "newTopicPreferences": {
                "unsubscribeAll": True,
                "topicSubscriptionStatus": {"ExampleTopicName": "OptOut"},
            },
            "oldTopicPreferences": {
                "unsubscribeAll": False,
                "topicSubscriptionStatus": {"ExampleTopicName": "OptIn"},
            },
        },
    ),
}


def other_event(event_type: str) -> dict[str, Any]:
    """An event record of one of OTHER_EVENTS' types."""
    key, detail = OTHER_EVENTS[event_type]
    return event(event_type, key, detail)


def subscription_succeeded() -> dict[str, Any]:
    """The test notification SES sends when a topic is first attached (no `mail` object)."""
    return {
        "notificationType": "AmazonSnsSubscriptionSucceeded",
        "message": "You have successfully subscribed your Amazon SNS topic "
        f"'{TOPIC_ARN}' to receive 'Bounce' notifications from Amazon SES for identity "
        "'example.com'.",
    }
