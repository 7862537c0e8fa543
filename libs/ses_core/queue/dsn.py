"""Delivery status notifications (RFC 3464): telling a sender which recipients will not get mail.

A queueing relay has already answered 250, so a recipient SES refuses later, one whose message
outlived the queue, or one blacklisted by the time it was sent, can only be reported by mail: a
`multipart/report; report-type=delivery-status` with

1. a `text/plain` part for people: which recipients failed, and why;
2. a `message/delivery-status` part for programs: `Reporting-MTA`, `Arrival-Date`, then per
   recipient `Final-Recipient`, `Action: failed`, `Status` (RFC 3463), `Diagnostic-Code` (SES's
   reply, when there was one) and `Last-Attempt-Date`;
3. the original's header section only (`text/rfc822-headers`): enough for the sender to know
   which message it was, without sending its body (personal data, size) around again.

A non-ASCII recipient is written with the `utf-8` address type of RFC 6533 in its `xtext` form
(`\\x{HEX}`), which keeps the status part 7-bit; an original with non-ASCII headers is attached as
`message/global-headers` (RFC 6533, base64-encoded as RFC 6532 allows, so the DSN stays 7-bit
unless the sender's own address is not ASCII, which needs SMTPUTF8 anyway).

The DSN goes into the queue with the null envelope sender, so a DSN that cannot be delivered never
causes another (RFC 5321 section 4.5.5).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message, MIMEPart
from email.utils import format_datetime, make_msgid

import attrs

from ses_core.queue._model import NewMessage, QueuedEnvelope

SUBJECT = "Undelivered Mail Returned to Sender"

#: Long SES replies stay on one line (no RFC 2047 folding inside a status field); 998 is
#: RFC 5322's line limit.
_POLICY = policy.SMTP.clone(max_line_length=998)
_UTF8_POLICY = policy.SMTPUTF8.clone(max_line_length=998)
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_MAX_DIAGNOSTIC = 900


@attrs.frozen
class FailedRecipient:
    """One recipient a DSN reports as failed.

    Attributes:
        address: the envelope recipient.
        status: the RFC 3463 status, e.g. "5.1.1", or "4.4.7" for a message that expired.
        reason: one line for people: why it failed.
        reply_code: SES's last reply code, 0 when no upstream reply was involved.
        reply_text: SES's last reply text.
        last_attempt_at: when it was last tried (epoch seconds), None when never.
    """

    address: str
    status: str
    reason: str
    reply_code: int = 0
    reply_text: str = ""
    last_attempt_at: float | None = None


def status_of(code: int, text: str, *, default: str = "5.0.0") -> str:
    """The RFC 3463 status of a failure: the enhanced code the reply text starts with (when it
    agrees with the reply code's class), else `default`."""
    found = _ENHANCED.match(text)
    if found is not None and (code == 0 or str(code)[0] == found.group(1)):
        return ".".join(found.groups())
    return default


def header_section(data: bytes) -> bytes:
    """The header section of an RFC 5322 message (everything before the first empty line)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = data.find(separator)
        if end >= 0:
            return data[:end]
    return data


def dsn_notice(
    *,
    original: QueuedEnvelope,
    original_data: bytes,
    failed: tuple[FailedRecipient, ...],
    bounce_from: str,
    reporting_mta: str,
    now: float,
    queue_id: str = "",
) -> NewMessage:
    """The DSN for `failed`, as a message to queue: null envelope sender (never a DSN about a
    DSN), the original sender as its only recipient, due now."""
    data = build_dsn(
        original=original,
        original_headers=header_section(original_data),
        failed=failed,
        bounce_from=bounce_from,
        reporting_mta=reporting_mta,
        now=now,
        queue_id=queue_id,
    )
    envelope = QueuedEnvelope(
        sender="",
        recipients=(original.sender,),
        received_at=now,
        smtputf8=_needs_utf8(original, bounce_from) or not header_section(data).isascii(),
        eightbit=not data.isascii(),
        transaction_id=f"dsn-{queue_id or original.transaction_id}",
        size=len(data),
    )
    return NewMessage(envelope, data)


def build_dsn(
    *,
    original: QueuedEnvelope,
    original_headers: bytes,
    failed: tuple[FailedRecipient, ...],
    bounce_from: str,
    reporting_mta: str,
    now: float,
    queue_id: str = "",
) -> bytes:
    """The RFC 3464 report on `failed` recipients of `original`, as bytes to send (CRLF)."""
    if not failed:
        message = "a DSN needs at least one failed recipient"
        raise ValueError(message)
    utf8 = _needs_utf8(original, bounce_from) or not original_headers.isascii()
    report = EmailMessage(policy=_UTF8_POLICY if utf8 else _POLICY)
    report["From"] = f"Mail Delivery System <{bounce_from}>"
    report["To"] = original.sender
    report["Subject"] = SUBJECT
    report["Date"] = _date(now)
    report["Message-ID"] = make_msgid(domain=_ascii(reporting_mta) or "localhost")
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=delivery-status"
    report.set_payload(
        [
            _human_part(failed, reporting_mta),
            _status_part(original, failed, reporting_mta, queue_id),
            _headers_part(original_headers),
        ]
    )
    return report.as_bytes()


def _human_part(failed: tuple[FailedRecipient, ...], reporting_mta: str) -> MIMEPart:
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients. It was accepted for",
        "delivery, but the recipients below will not receive it; no further attempts will be made.",
        "The headers of your message are attached.",
        "",
    ]
    for recipient in failed:
        lines.append(f"<{recipient.address}>: {recipient.reason}")
        if recipient.reply_code:
            lines.append(f"    the mail server said: {recipient.reply_code} {recipient.reply_text}")
    text = "\n".join(lines) + "\n"
    part = MIMEPart(policy=_POLICY)
    part.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    part["Content-Description"] = "Notification"
    return part


def _status_part(
    original: QueuedEnvelope,
    failed: tuple[FailedRecipient, ...],
    reporting_mta: str,
    queue_id: str,
) -> Message:
    per_message = Message(policy=_POLICY)
    per_message["Reporting-MTA"] = f"dns; {_ascii(reporting_mta)}"
    if queue_id:
        per_message["X-Ses-Relay-Queue-ID"] = _ascii(queue_id)
    per_message["Arrival-Date"] = _date(original.received_at)
    blocks: list[Message | str] = [per_message]
    for recipient in failed:
        block = Message(policy=_POLICY)
        block["Final-Recipient"] = _address_field(recipient.address)
        block["Action"] = "failed"
        block["Status"] = recipient.status
        if recipient.reply_code:
            diagnostic = _ascii(f"{recipient.reply_code} {recipient.reply_text}")
            block["Diagnostic-Code"] = f"smtp; {diagnostic[:_MAX_DIAGNOSTIC]}"
        if recipient.last_attempt_at is not None:
            block["Last-Attempt-Date"] = _date(recipient.last_attempt_at)
        blocks.append(block)
    part = Message(policy=_POLICY)
    part["Content-Type"] = "message/delivery-status"
    part["Content-Description"] = "Delivery report"
    part.set_payload(blocks)
    return part


def _headers_part(original_headers: bytes) -> MIMEPart:
    lines = original_headers.replace(b"\r\n", b"\n").split(b"\n")
    part = MIMEPart(policy=_POLICY)
    if original_headers.isascii():
        text = "\n".join(line.decode("ascii") for line in lines) + "\n"
        part.set_content(text, subtype="rfc822-headers", cte="7bit")
        del part["Content-Type"]  # the charset parameter means nothing for headers
        part["Content-Type"] = "text/rfc822-headers"
    else:
        # RFC 6532 lets message/global* be base64-encoded: the DSN itself stays 7-bit.
        part.set_content(b"\r\n".join(lines) + b"\r\n", "message", "global-headers")
    part["Content-Description"] = "Undelivered message headers"
    return part


def _address_field(address: str) -> str:
    """`rfc822; addr`, or RFC 6533's `utf-8; addr` in the 7-bit xtext form."""
    if address.isascii():
        return f"rfc822; {address}"
    return "utf-8; " + "".join(
        ch if 0x21 <= ord(ch) <= 0x7E and ch not in "+=\\" else f"\\x{{{ord(ch):X}}}"
        for ch in address
    )


def _needs_utf8(original: QueuedEnvelope, bounce_from: str) -> bool:
    return not original.sender.isascii() or not bounce_from.isascii()


def _date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


def _ascii(text: str) -> str:
    """`text` on one line with anything not printable ASCII replaced (status fields are 7-bit)."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in " ".join(text.split()))
