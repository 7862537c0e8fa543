"""SNS bodies, SQS records and Lambda events around SES feedback, as Python values.

Shaped like AWS's examples (docs/ses-facts.md, "Envelopes around a notification"), including the
Lambda spelling `SigningCertUrl` next to the HTTP/SQS `SigningCertURL`. The SES documents they
carry come from `feedback_docs`, which re-exports everything here. Every function returns a fresh
object, so callers may mutate what they get.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:ses-feedback"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0000000000000000.pem"

#: Placeholder values shaped like SNS's (base64 signature, hex token); they verify nothing.
_EXAMPLE_SIGNATURE = (
    "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N"
    "858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9"
    "b5+gLPoBc1Q="
)
_EXAMPLE_TOKEN = (
    "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3"
    "beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6f"
    "db82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736"
)


def sns_envelope(
    ses_document: Mapping[str, Any] | str,
    *,
    message_id: str = "2f1a5ce7-4b8b-5c4e-9a53-bc1f2a3d4e5f",
    cert_key: str = "SigningCertURL",
) -> dict[str, Any]:
    """An SNS Notification JSON body (what HTTP(S) subscribers and SQS queues receive)."""
    message = ses_document if isinstance(ses_document, str) else json.dumps(ses_document)
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC_ARN,
        "Message": message,
        "Timestamp": "2023-12-14T14:59:39.012Z",
        "SignatureVersion": "1",
        "Signature": _EXAMPLE_SIGNATURE,
        cert_key: CERT_URL,
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC_ARN}:a1b2c3d4",
    }


def subscription_confirmation(sns_type: str = "SubscriptionConfirmation") -> dict[str, Any]:
    """An SNS SubscriptionConfirmation (or UnsubscribeConfirmation) HTTP body."""
    return {
        "Type": sns_type,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": _EXAMPLE_TOKEN,
        "TopicArn": TOPIC_ARN,
        "Message": f"You have chosen to subscribe to the topic {TOPIC_ARN}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC_ARN}&Token=2336412f37",
        "Timestamp": "2023-12-14T14:58:00.000Z",
        "SignatureVersion": "1",
        "Signature": _EXAMPLE_SIGNATURE,
        "SigningCertURL": CERT_URL,
    }


def lambda_sns_record(ses_document: Mapping[str, Any] | str, **kwargs: Any) -> dict[str, Any]:
    """One record of a Lambda event from an SNS subscription (note `SigningCertUrl`)."""
    sns = sns_envelope(ses_document, cert_key="SigningCertUrl", **kwargs)
    sns["UnsubscribeUrl"] = sns.pop("UnsubscribeURL")
    sns["Subject"] = None
    sns["MessageAttributes"] = {}
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{TOPIC_ARN}:a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        "Sns": sns,
    }


def lambda_sns_event(*ses_documents: Mapping[str, Any] | str) -> dict[str, Any]:
    """A Lambda event from SNS (SNS delivers one record per invocation; more are allowed here)."""
    return {
        "Records": [
            lambda_sns_record(doc, message_id=f"sns-{i}") for i, doc in enumerate(ses_documents)
        ]
    }


def sqs_record(body: Mapping[str, Any] | str, *, message_id: str = "sqs-0") -> dict[str, Any]:
    """One record of a Lambda event from SQS; `body` is the SQS message body."""
    return {
        "messageId": message_id,
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1702565979012",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1702565979020",
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:ses-feedback",
        "awsRegion": REGION,
    }


def sqs_event(*bodies: Mapping[str, Any] | str) -> dict[str, Any]:
    """A Lambda event from SQS with one record per body (ids sqs-0, sqs-1, ...)."""
    return {"Records": [sqs_record(body, message_id=f"sqs-{i}") for i, body in enumerate(bodies)]}
