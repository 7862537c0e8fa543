"""Unwrap SES feedback from whatever transport carried it: one entry point for every delivery path.

SES feedback reaches us through SNS, directly (a Lambda `Records[].Sns` record, an HTTP(S) body)
or through SQS (the SNS body, or the SES JSON itself with raw message delivery, possibly in a
Lambda `Records[].body`). `parse_feedback` accepts all of these, plus bare SES JSON, and returns
one `FeedbackRecord` (a `TransportEnvelope` and the notification) per message, so callers need
not know the path. `iter_feedback` yields a `RecordFailure` for a malformed record instead of
raising, so one bad record cannot hide the valid ones of a batch. Signatures are not checked
here (see `ses_core.feedback.sns_signature`). docs/ses-facts.md ("Envelopes around a
notification") shows each shape.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import attrs

from ses_core.errors import MalformedNotification
from ses_core.feedback._json import (
    MAX_MESSAGE_CHARS,
    MAX_PAYLOAD_CHARS,
    JsonObject,
    as_object,
    fail,
    load_json,
    opt_str,
    req_list,
    req_str,
    req_timestamp,
)
from ses_core.feedback.notifications import SesNotification

SNS_NOTIFICATION = "Notification"
SNS_SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
SNS_UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
_SNS_TYPES = frozenset(
    {SNS_NOTIFICATION, SNS_SUBSCRIPTION_CONFIRMATION, SNS_UNSUBSCRIBE_CONFIRMATION}
)

#: What `parse_feedback` accepts: JSON text or bytes, or the decoded mapping.
FeedbackInput = str | bytes | bytearray | Mapping[str, Any]


class EnvelopeOrigin(enum.StrEnum):
    """How the SES document reached us."""

    LAMBDA_SNS = "lambda-sns"  # a Lambda event record from an SNS subscription
    SQS = "sqs"  # an SQS message (Lambda SQS record), body = SNS envelope or raw SES JSON
    SNS = "sns"  # an SNS JSON body (HTTP(S) subscription, or an SQS body handed over alone)
    BARE = "bare"  # the SES JSON itself (SQS raw delivery body handed over alone, tests)


@attrs.frozen
class TransportEnvelope:
    """What the transport says about a message; fields a transport lacks are None.

    Attributes:
        origin: the transport that carried it.
        sns_type: SNS `Type` (Notification, SubscriptionConfirmation, UnsubscribeConfirmation).
        sns_message_id: SNS `MessageId` (stable across SNS redeliveries).
        topic_arn: SNS `TopicArn`. timestamp: SNS `Timestamp`. subject: SNS `Subject`.
        sqs_message_id: the SQS `messageId` (Lambda's `itemIdentifier` for batch failures).
        signature_version, signing_cert_url: as SNS sent them (either spelling of the URL key).
        subscribe_url, token: for confirmations. unsubscribe_url: for notifications.
    """

    origin: EnvelopeOrigin
    sns_type: str | None = None
    sns_message_id: str | None = None
    topic_arn: str | None = None
    timestamp: datetime | None = None
    subject: str | None = None
    sqs_message_id: str | None = None
    signature_version: str | None = None
    signing_cert_url: str | None = None
    subscribe_url: str | None = None
    unsubscribe_url: str | None = None
    token: str | None = None


@attrs.frozen
class FeedbackRecord:
    """One message: its transport envelope and (unless an SNS confirmation) the SES notification.

    Attributes:
        envelope: transport metadata.
        notification: the SES document; None for SubscriptionConfirmation/UnsubscribeConfirmation.
    """

    envelope: TransportEnvelope
    notification: SesNotification | None

    @property
    def is_confirmation(self) -> bool:
        """Whether this is an SNS subscription/unsubscription confirmation."""
        return self.notification is None

    @classmethod
    def from_sns(
        cls,
        obj: JsonObject,
        path: str,
        *,
        origin: EnvelopeOrigin,
        sqs_message_id: str | None = None,
    ) -> FeedbackRecord:
        """Read an SNS envelope (HTTP body, SQS body, or a Lambda record's `Sns` object)."""
        sns_type = req_str(obj, "Type", path)
        if sns_type not in _SNS_TYPES:
            problem = f"unknown SNS message type {sns_type[:60]!r}"
            raise MalformedNotification(problem, f"{path}.Type")
        cert_key = "SigningCertURL" if "SigningCertURL" in obj else "SigningCertUrl"
        unsubscribe_key = "UnsubscribeURL" if "UnsubscribeURL" in obj else "UnsubscribeUrl"
        envelope = TransportEnvelope(
            origin=origin,
            sns_type=sns_type,
            sns_message_id=req_str(obj, "MessageId", path),
            topic_arn=req_str(obj, "TopicArn", path),
            timestamp=req_timestamp(obj, "Timestamp", path),
            subject=opt_str(obj, "Subject", path),
            sqs_message_id=sqs_message_id,
            signature_version=opt_str(obj, "SignatureVersion", path),
            signing_cert_url=opt_str(obj, cert_key, path),
            subscribe_url=opt_str(obj, "SubscribeURL", path),
            unsubscribe_url=opt_str(obj, unsubscribe_key, path),
            token=opt_str(obj, "Token", path),
        )
        message_path = f"{path}.Message"
        message = obj.get("Message")
        if sns_type != SNS_NOTIFICATION:
            return cls(envelope=envelope, notification=None)
        if not isinstance(message, str | Mapping):
            fail(path, "Message", "a string", message)
        return cls(
            envelope=envelope, notification=SesNotification.from_message(message, message_path)
        )

    @classmethod
    def from_sqs_body(
        cls, body: str | JsonObject, path: str, *, sqs_message_id: str | None
    ) -> FeedbackRecord:
        """Read an SQS body: an SNS envelope, or the SES JSON itself (raw message delivery)."""
        decoded = (
            load_json(body, path, max_chars=MAX_MESSAGE_CHARS) if isinstance(body, str) else body
        )
        obj = as_object(decoded, path)
        if _is_sns_envelope(obj):
            return cls.from_sns(obj, path, origin=EnvelopeOrigin.SQS, sqs_message_id=sqs_message_id)
        notification = SesNotification.from_json(obj, path)
        envelope = TransportEnvelope(origin=EnvelopeOrigin.SQS, sqs_message_id=sqs_message_id)
        return cls(envelope=envelope, notification=notification)


@attrs.frozen
class RecordFailure:
    """A record of a batch event that could not be parsed.

    Attributes:
        index: the record's position in `Records`.
        error: why it is malformed (its `path` names the bad field).
        sqs_message_id: the SQS `messageId`, if the record had a readable one (report it in
            `batchItemFailures`); None for SNS records or when the id itself is unreadable.
        sns_message_id: the SNS `MessageId`, if readable.
    """

    index: int
    error: MalformedNotification
    sqs_message_id: str | None = None
    sns_message_id: str | None = None


def parse_feedback(payload: FeedbackInput) -> tuple[FeedbackRecord, ...]:
    """Parse any supported document into its records; raise MalformedNotification if any is bad.

    Accepts (as JSON text, bytes, or a decoded mapping): a whole Lambda SNS or SQS event, one
    Lambda SNS or SQS record, an SNS HTTP(S) body of any type, an SQS body holding an SNS envelope,
    and bare SES JSON (an SQS body with raw message delivery). Use `iter_feedback` when one bad
    record must not reject the whole batch.
    """
    records: list[FeedbackRecord] = []
    for item in iter_feedback(payload):
        if isinstance(item, RecordFailure):
            raise item.error
        records.append(item)
    return tuple(records)


def iter_feedback(payload: FeedbackInput) -> Iterator[FeedbackRecord | RecordFailure]:
    """Parse record by record: yield a FeedbackRecord, or a RecordFailure for a bad record.

    A payload that is not even a recognisable document (bad JSON, no `Records` array, ...) raises
    MalformedNotification before anything is yielded: there is no record to blame.
    """
    decoded: object = payload
    if isinstance(payload, str | bytes | bytearray):
        decoded = load_json(payload, "$", max_chars=MAX_PAYLOAD_CHARS)
    obj = as_object(decoded, "$")
    if "Records" not in obj:
        yield _parse_single(obj)
        return
    for index, record in enumerate(req_list(obj, "Records", "$")):
        path = f"$.Records[{index}]"
        try:
            yield _parse_record(as_object(record, path), path)
        except MalformedNotification as exc:
            yield _failure(index, record, exc)


def _parse_single(obj: JsonObject) -> FeedbackRecord:
    if "Sns" in obj:
        return _parse_record(obj, "$")
    if "body" in obj and ("messageId" in obj or "eventSource" in obj):
        return _parse_record(obj, "$")
    if _is_sns_envelope(obj):
        return FeedbackRecord.from_sns(obj, "$", origin=EnvelopeOrigin.SNS)
    if "notificationType" in obj or "eventType" in obj:
        notification = SesNotification.from_json(obj, "$")
        return FeedbackRecord(
            envelope=TransportEnvelope(origin=EnvelopeOrigin.BARE), notification=notification
        )
    message = (
        "not a recognised SES, SNS or SQS document "
        "(expected Records, Sns, body, Type or notificationType/eventType)"
    )
    raise MalformedNotification(message, "$")


def _parse_record(record: JsonObject, path: str) -> FeedbackRecord:
    """One Lambda event record: SNS (`Sns` object) or SQS (`body` string)."""
    if "Sns" in record:
        sns_path = f"{path}.Sns"
        sns = as_object(record["Sns"], sns_path)
        return FeedbackRecord.from_sns(sns, sns_path, origin=EnvelopeOrigin.LAMBDA_SNS)
    if "body" in record:
        sqs_message_id = opt_str(record, "messageId", path)
        body = record["body"]
        if not isinstance(body, str):
            fail(path, "body", "a string", body)
        return FeedbackRecord.from_sqs_body(body, f"{path}.body", sqs_message_id=sqs_message_id)
    message = "not an SNS or SQS record (neither Sns nor body present)"
    raise MalformedNotification(message, path)


def _is_sns_envelope(obj: JsonObject) -> bool:
    # SES documents never have a top-level "Type"; SNS envelopes always do.
    return "Type" in obj


def _failure(index: int, record: object, error: MalformedNotification) -> RecordFailure:
    """Recover what ids we can from a bad record, without trusting its shape."""
    sqs_id: str | None = None
    sns_id: str | None = None
    if isinstance(record, Mapping):
        candidate = record.get("messageId")
        sqs_id = candidate if type(candidate) is str else None
        sns = record.get("Sns")
        if isinstance(sns, Mapping):
            candidate = sns.get("MessageId")
            sns_id = candidate if type(candidate) is str else None
    return RecordFailure(index=index, error=error, sqs_message_id=sqs_id, sns_message_id=sns_id)
