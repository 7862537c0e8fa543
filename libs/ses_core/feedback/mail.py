"""The `mail` object of an SES feedback document: the message the feedback is about.

Every SES notification and event record carries one (SES's test notification aside). It is its
own module because both dialects share it and because it is read even for event types this
library does not know (see `SesNotification.mail`).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ses_core.addresses import EmailAddress
from ses_core.feedback._json import (
    JsonObject,
    opt_bool,
    opt_object,
    opt_str,
    req_str,
    req_timestamp,
    str_list,
)
from ses_core.feedback._recipients import InvalidRecipient, parse_recipient

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@attrs.frozen
class CommonHeaders:
    """The headers SES extracts from the original message (values as written, not parsed).

    Attributes:
        from_: `From` mailboxes. to, cc, bcc, reply_to: likewise.
        return_path, sender, date, message_id, subject: single header values, if present.
    """

    from_: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    return_path: str | None = None
    sender: str | None = None
    date: str | None = None
    message_id: str | None = None
    subject: str | None = None

    @classmethod
    def from_json(cls, obj: JsonObject, path: str) -> CommonHeaders:
        """Read `mail.commonHeaders`."""
        return cls(
            from_=str_list(obj, "from", path, required=False),
            to=str_list(obj, "to", path, required=False),
            cc=str_list(obj, "cc", path, required=False),
            bcc=str_list(obj, "bcc", path, required=False),
            reply_to=str_list(obj, "replyTo", path, required=False),
            return_path=opt_str(obj, "returnPath", path),
            sender=opt_str(obj, "sender", path),
            date=opt_str(obj, "date", path),
            message_id=opt_str(obj, "messageId", path),
            subject=opt_str(obj, "subject", path),
        )


def _read_tags(obj: JsonObject, path: str) -> Mapping[str, tuple[str, ...]]:
    raw = opt_object(obj, "tags", path)
    if not raw:
        return _EMPTY
    tags_path = f"{path}.tags"
    return types.MappingProxyType(
        {name: str_list(raw, name, tags_path, required=True) for name in raw}
    )


@attrs.frozen
class Mail:
    """The `mail` object: the message the feedback is about.

    `destination` is kept as the raw strings SES reports: the decision never needs it, and parsing
    up to 50 fresh addresses per notification would dominate parsing time. Use
    `destination_addresses()` when you need the values.

    Attributes:
        message_id: SES's message id (what SES answered to the send).
        timestamp: when the message was sent.
        source: the envelope sender; None if `source_text` is not a valid address.
        source_text: `source` as SES wrote it (it may carry a display name).
        destination: the envelope recipients as SES wrote them.
        sending_account_id, source_arn, source_ip, caller_identity: as SES reports them.
        tags: message tags (name to values); empty without event publishing.
        common_headers: parsed `commonHeaders`, when headers were included.
        headers_truncated: SES's `headersTruncated` flag, if present.
    """

    message_id: str
    timestamp: datetime
    source: EmailAddress | None
    source_text: str
    destination: tuple[str, ...]
    sending_account_id: str | None = None
    source_arn: str | None = None
    source_ip: str | None = None
    caller_identity: str | None = None
    tags: Mapping[str, tuple[str, ...]] = attrs.field(default=_EMPTY, hash=False)
    common_headers: CommonHeaders | None = None
    headers_truncated: bool | None = None

    @classmethod
    def from_json(cls, obj: JsonObject, path: str = "$.mail") -> Mail:
        """Read an SES `mail` object; `path` is where it sits, for error messages."""
        source_text = req_str(obj, "source", path)
        source = parse_recipient(source_text, f"{path}.source")
        headers = opt_object(obj, "commonHeaders", path)
        return cls(
            message_id=req_str(obj, "messageId", path),
            timestamp=req_timestamp(obj, "timestamp", path),
            source=source if isinstance(source, EmailAddress) else None,
            source_text=source_text,
            destination=str_list(obj, "destination", path, required=True),
            sending_account_id=opt_str(obj, "sendingAccountId", path),
            source_arn=opt_str(obj, "sourceArn", path),
            source_ip=opt_str(obj, "sourceIp", path),
            caller_identity=opt_str(obj, "callerIdentity", path),
            tags=_read_tags(obj, path),
            common_headers=(
                None
                if headers is None
                else CommonHeaders.from_json(headers, f"{path}.commonHeaders")
            ),
            headers_truncated=opt_bool(obj, "headersTruncated", path),
        )

    def destination_addresses(
        self,
    ) -> tuple[tuple[EmailAddress, ...], tuple[InvalidRecipient, ...]]:
        """Parse `destination`: (valid addresses, strings that are not addresses)."""
        valid: list[EmailAddress] = []
        invalid: list[InvalidRecipient] = []
        for i, text in enumerate(self.destination):
            parsed = parse_recipient(text, f"$.mail.destination[{i}]")
            if isinstance(parsed, EmailAddress):
                valid.append(parsed)
            else:
                invalid.append(parsed)
        return tuple(valid), tuple(invalid)
