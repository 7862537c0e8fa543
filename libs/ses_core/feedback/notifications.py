"""SES feedback documents (bounces, complaints, deliveries, every event-publishing type) as values.

Classic notifications (`notificationType`) and event publishing (`eventType`) both parse into one
`SesNotification`. Bounces, complaints and deliveries get typed values because the suppression
decision needs them; other event types keep their raw detail object, and a type SES adds later
parses as `NotificationKind.UNKNOWN`, never as an error. A value of the wrong JSON type raises
`MalformedNotification` naming its path; a recipient string that is not an address is kept in
`invalid_recipients` instead, because the other recipients still matter. The fields are listed
in docs/ses-facts.md ("Notifications").
"""

from __future__ import annotations

import enum
import logging
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ses_core.addresses import EmailAddress
from ses_core.errors import MalformedNotification
from ses_core.feedback._json import (
    MAX_MESSAGE_CHARS,
    JsonObject,
    as_object,
    load_json,
    opt_int,
    opt_object,
    opt_str,
    parse_timestamp,
    req_list,
    req_object,
    req_str,
    req_timestamp,
    str_list,
)
from ses_core.feedback._recipients import InvalidRecipient, parse_recipient
from ses_core.feedback.mail import Mail

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


class NotificationKind(enum.StrEnum):
    """What an SES feedback document reports; values are SES's own type names."""

    BOUNCE = "Bounce"
    COMPLAINT = "Complaint"
    DELIVERY = "Delivery"
    SEND = "Send"
    REJECT = "Reject"
    DELIVERY_DELAY = "DeliveryDelay"
    OPEN = "Open"
    CLICK = "Click"
    RENDERING_FAILURE = "Rendering Failure"
    SUBSCRIPTION = "Subscription"
    UNKNOWN = "unknown"


class NotificationFormat(enum.StrEnum):
    """Which dialect the document was written in (which key named its type)."""

    NOTIFICATION = "notificationType"
    EVENT = "eventType"


#: The key holding each kind's detail object.
_DETAIL_KEYS = {
    NotificationKind.BOUNCE: "bounce",
    NotificationKind.COMPLAINT: "complaint",
    NotificationKind.DELIVERY: "delivery",
    NotificationKind.SEND: "send",
    NotificationKind.REJECT: "reject",
    NotificationKind.DELIVERY_DELAY: "deliveryDelay",
    NotificationKind.OPEN: "open",
    NotificationKind.CLICK: "click",
    NotificationKind.RENDERING_FAILURE: "failure",
    NotificationKind.SUBSCRIPTION: "subscription",
}
_KINDS = {kind.value: kind for kind in _DETAIL_KEYS}


def _recipient_objects(
    obj: JsonObject, key: str, path: str
) -> tuple[list[tuple[EmailAddress, JsonObject, str]], tuple[InvalidRecipient, ...]]:
    """Read an array of `{"emailAddress": ...}` objects, splitting valid from invalid addresses."""
    items = req_list(obj, key, path)
    valid: list[tuple[EmailAddress, JsonObject, str]] = []
    invalid: list[InvalidRecipient] = []
    for i, item in enumerate(items):
        item_path = f"{path}.{key}[{i}]"
        entry = as_object(item, item_path)
        parsed = parse_recipient(
            req_str(entry, "emailAddress", item_path), f"{item_path}.emailAddress"
        )
        if isinstance(parsed, InvalidRecipient):
            invalid.append(parsed)
        else:
            valid.append((parsed, entry, item_path))
    return valid, tuple(invalid)


@attrs.frozen
class BouncedRecipient:
    """One bounced recipient; the DSN fields are present only when the receiver sent a DSN.

    Attributes:
        address: the recipient.
        action: DSN action (e.g. "failed"). status: DSN status ("5.1.1").
        diagnostic_code: the receiver's reply ("smtp; 550 5.1.1 user unknown").
    """

    address: EmailAddress
    action: str | None = None
    status: str | None = None
    diagnostic_code: str | None = None


@attrs.frozen
class Bounce:
    """The `bounce` object.

    Attributes:
        bounce_type: "Permanent", "Transient" or "Undetermined" (kept as text: SES may add types).
        bounce_subtype: e.g. "General", "NoEmail", "Suppressed", "MailboxFull".
        recipients: the bounced recipients with valid addresses.
        invalid_recipients: reported recipients that are not valid addresses.
        timestamp: when the bounce was sent. feedback_id: SES's id for this feedback.
        reporting_mta: the MTA that reported it. remote_mta_ip: the receiving MTA's address.
    """

    bounce_type: str
    bounce_subtype: str
    recipients: tuple[BouncedRecipient, ...]
    timestamp: datetime
    feedback_id: str
    invalid_recipients: tuple[InvalidRecipient, ...] = ()
    reporting_mta: str | None = None
    remote_mta_ip: str | None = None

    @property
    def detail(self) -> str:
        """ "Type/SubType", the blacklist's detail text for this bounce ("Permanent/General")."""
        return f"{self.bounce_type}/{self.bounce_subtype}"

    @classmethod
    def from_json(cls, obj: JsonObject, path: str = "$.bounce") -> Bounce:
        """Read an SES `bounce` object."""
        valid, invalid = _recipient_objects(obj, "bouncedRecipients", path)
        recipients = tuple(
            BouncedRecipient(
                address=address,
                action=opt_str(entry, "action", item_path),
                status=opt_str(entry, "status", item_path),
                diagnostic_code=opt_str(entry, "diagnosticCode", item_path),
            )
            for address, entry, item_path in valid
        )
        return cls(
            bounce_type=req_str(obj, "bounceType", path),
            bounce_subtype=req_str(obj, "bounceSubType", path),
            recipients=recipients,
            timestamp=req_timestamp(obj, "timestamp", path),
            feedback_id=req_str(obj, "feedbackId", path),
            invalid_recipients=invalid,
            reporting_mta=opt_str(obj, "reportingMTA", path),
            remote_mta_ip=opt_str(obj, "remoteMtaIp", path),
        )


@attrs.frozen
class Complaint:
    """The `complaint` object.

    Attributes:
        recipients: complaining recipients with valid addresses.
        invalid_recipients: reported recipients that are not valid addresses.
        timestamp: when ISP sent the complaint. feedback_id: SES's id for this feedback.
        feedback_type: `complaintFeedbackType` (abuse, auth-failure, fraud, not-spam, other,
            virus), only with a feedback report.
        subtype: `complaintSubType` (None or "OnAccountSuppressionList").
        user_agent: the reporting feedback loop. arrival_date: when the ISP got the message
            (None if absent or not an ISO 8601 timestamp: third parties write it).
    """

    recipients: tuple[EmailAddress, ...]
    timestamp: datetime
    feedback_id: str
    invalid_recipients: tuple[InvalidRecipient, ...] = ()
    feedback_type: str | None = None
    subtype: str | None = None
    user_agent: str | None = None
    arrival_date: datetime | None = None

    @property
    def detail(self) -> str:
        """The blacklist's detail text: "complaint:<feedback type>", or "complaint"."""
        return "complaint" if self.feedback_type is None else f"complaint:{self.feedback_type}"

    @classmethod
    def from_json(cls, obj: JsonObject, path: str = "$.complaint") -> Complaint:
        """Read an SES `complaint` object."""
        valid, invalid = _recipient_objects(obj, "complainedRecipients", path)
        return cls(
            recipients=tuple(address for address, _, _ in valid),
            timestamp=req_timestamp(obj, "timestamp", path),
            feedback_id=req_str(obj, "feedbackId", path),
            invalid_recipients=invalid,
            feedback_type=opt_str(obj, "complaintFeedbackType", path),
            subtype=opt_str(obj, "complaintSubType", path),
            user_agent=opt_str(obj, "userAgent", path),
            arrival_date=_lenient_timestamp(obj, "arrivalDate", path),
        )


def _lenient_timestamp(obj: JsonObject, key: str, path: str) -> datetime | None:
    text = opt_str(obj, key, path)
    if text is None:
        return None
    try:
        return parse_timestamp(text, f"{path}.{key}")
    except MalformedNotification:
        log.debug("ignoring unparseable %s.%s", path, key)
        return None


@attrs.frozen
class Delivery:
    """The `delivery` object.

    Attributes:
        recipients: delivered recipients with valid addresses.
        invalid_recipients: reported recipients that are not valid addresses.
        timestamp: when delivery happened. processing_time_ms: SES's processing time.
        smtp_response: the receiver's reply. reporting_mta, remote_mta_ip: as SES reports them.
    """

    recipients: tuple[EmailAddress, ...]
    timestamp: datetime
    invalid_recipients: tuple[InvalidRecipient, ...] = ()
    processing_time_ms: int | None = None
    smtp_response: str | None = None
    reporting_mta: str | None = None
    remote_mta_ip: str | None = None

    @classmethod
    def from_json(cls, obj: JsonObject, path: str = "$.delivery") -> Delivery:
        """Read an SES `delivery` object."""
        texts = str_list(obj, "recipients", path, required=True)
        valid: list[EmailAddress] = []
        invalid: list[InvalidRecipient] = []
        for i, text in enumerate(texts):
            parsed = parse_recipient(text, f"{path}.recipients[{i}]")
            if isinstance(parsed, InvalidRecipient):
                invalid.append(parsed)
            else:
                valid.append(parsed)
        return cls(
            recipients=tuple(valid),
            timestamp=req_timestamp(obj, "timestamp", path),
            invalid_recipients=tuple(invalid),
            processing_time_ms=opt_int(obj, "processingTimeMillis", path),
            smtp_response=opt_str(obj, "smtpResponse", path),
            reporting_mta=opt_str(obj, "reportingMTA", path),
            remote_mta_ip=opt_str(obj, "remoteMtaIp", path),
        )


def _tolerant_mail(obj: JsonObject, path: str) -> Mail | None:
    """The `mail` of an UNKNOWN-kind document, or None if it is absent or shaped differently.

    A type we do not know may well carry a `mail` we do not know: that is news about SES, not a
    broken document, and unknown types are never an error (the raw object stays in `details`).
    """
    try:
        mail_obj = opt_object(obj, "mail", path)
        return None if mail_obj is None else Mail.from_json(mail_obj, f"{path}.mail")
    except MalformedNotification as exc:
        log.info("ignoring unreadable mail of an unknown SES notification type: %s", exc)
        return None


@attrs.frozen
class SesNotification:
    """One SES feedback document of any type.

    Attributes:
        kind: what it reports; UNKNOWN for a type this library does not know.
        type_name: the type exactly as SES wrote it (useful when kind is UNKNOWN).
        format: whether `notificationType` or `eventType` named the type.
        mail: the message the feedback is about; None only for UNKNOWN kinds that have none
            (SES's "AmazonSnsSubscriptionSucceeded" test notification, for instance) or whose
            `mail` is not shaped like the mail objects we know.
        bounce / complaint / delivery: the typed detail for those kinds, else None.
        details: the raw detail object of the other known kinds (`send`, `reject`, `open`,
            `click`, `failure`, `deliveryDelay`, `subscription`); empty when absent. For UNKNOWN
            kinds we cannot tell which key holds the detail, so it is the whole raw document
            (the raw `mail` included, even when it could not be parsed). Read-only at the top
            level only: nested objects and arrays are SES's decoded JSON, shared, not copied or
            frozen (copying every event's nested detail would cost parsing time for nothing);
            treat them as read-only too.
    """

    kind: NotificationKind
    type_name: str
    format: NotificationFormat
    mail: Mail | None
    bounce: Bounce | None = None
    complaint: Complaint | None = None
    delivery: Delivery | None = None
    details: Mapping[str, Any] = attrs.field(default=_EMPTY, hash=False)

    @classmethod
    def from_json(cls, obj: JsonObject, path: str = "$") -> SesNotification:
        """Read a decoded SES document (classic notification or event record)."""
        if "eventType" in obj:
            fmt = NotificationFormat.EVENT
        elif "notificationType" in obj:
            fmt = NotificationFormat.NOTIFICATION
        else:
            message = "neither notificationType nor eventType is present"
            raise MalformedNotification(message, f"{path}.notificationType")
        type_name = req_str(obj, fmt.value, path)
        kind = _KINDS.get(type_name, NotificationKind.UNKNOWN)
        if kind is NotificationKind.UNKNOWN:
            log.info("unknown SES notification type %r", type_name[:100])
            return cls(
                kind=kind,
                type_name=type_name,
                format=fmt,
                mail=_tolerant_mail(obj, path),
                details=types.MappingProxyType(dict(obj)),
            )
        mail = Mail.from_json(req_object(obj, "mail", path), f"{path}.mail")
        key = _DETAIL_KEYS[kind]
        detail_path = f"{path}.{key}"
        if kind is NotificationKind.BOUNCE:
            bounce = Bounce.from_json(req_object(obj, key, path), detail_path)
            return cls(kind=kind, type_name=type_name, format=fmt, mail=mail, bounce=bounce)
        if kind is NotificationKind.COMPLAINT:
            complaint = Complaint.from_json(req_object(obj, key, path), detail_path)
            return cls(kind=kind, type_name=type_name, format=fmt, mail=mail, complaint=complaint)
        if kind is NotificationKind.DELIVERY:
            delivery = Delivery.from_json(req_object(obj, key, path), detail_path)
            return cls(kind=kind, type_name=type_name, format=fmt, mail=mail, delivery=delivery)
        raw = opt_object(obj, key, path)
        details = _EMPTY if not raw else types.MappingProxyType(dict(raw))
        return cls(kind=kind, type_name=type_name, format=fmt, mail=mail, details=details)

    @classmethod
    def from_message(
        cls, message: str | bytes | Mapping[str, Any], path: str = "$"
    ) -> SesNotification:
        """Read an SES document given as JSON text (an SNS `Message`, an SQS body) or decoded."""
        decoded: object = message
        if isinstance(message, str | bytes | bytearray):
            decoded = load_json(message, path, max_chars=MAX_MESSAGE_CHARS)
        return cls.from_json(as_object(decoded, path), path)
