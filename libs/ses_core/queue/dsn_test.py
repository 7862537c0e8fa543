"""Tests for the RFC 3464 DSN: every part and field, read back with the stdlib parser."""

from __future__ import annotations

import base64
import email
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from ses_core.queue import QueuedEnvelope
from ses_core.queue.dsn import (
    SUBJECT,
    FailedRecipient,
    build_dsn,
    dsn_notice,
    header_section,
    status_of,
)

ARRIVAL = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
NOW = ARRIVAL + 3600.0
ORIGINAL = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: quarterly report\r\n"
    b"Message-ID: <q1@example.com>\r\n"
    b"\r\n"
    b"the secret body\r\n"
)
REFUSED = FailedRecipient(
    "bob@example.net",
    "5.0.0",
    "the mail server refused it permanently",
    554,
    "Message rejected: Email address is not verified.",
    NOW - 60,
)
EXPIRED = FailedRecipient(
    "carol@example.org",
    "4.4.7",
    "delivery was given up after 5 days of retrying",
    454,
    "Throttling failure: Daily message quota exceeded.",
    NOW - 30,
)
SUPPRESSED = FailedRecipient("dave@example.org", "5.1.1", "blacklisted (bounce)", 0, "", NOW)


def envelope(sender: str = "alice@example.com", *recipients: str) -> QueuedEnvelope:
    return QueuedEnvelope(
        sender, recipients or ("bob@example.net", "carol@example.org"), received_at=ARRIVAL
    )


def parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(report: EmailMessage) -> list[Any]:
    """The parts of a multipart message."""
    payload: Any = report.get_payload()
    assert isinstance(payload, list)
    return payload


def blocks(report: EmailMessage) -> list[Any]:
    """The blocks of the delivery-status part: per-message fields, then one per recipient."""
    status = parts(report)[1]
    assert status.get_content_type() == "message/delivery-status"
    found = status.get_payload()
    assert isinstance(found, list)
    return found


def make(*failed: FailedRecipient, original: QueuedEnvelope | None = None) -> EmailMessage:
    return parse(
        build_dsn(
            original=original or envelope(),
            original_headers=header_section(ORIGINAL),
            failed=failed,
            bounce_from="bounces@example.com",
            reporting_mta="relay.example.com",
            now=NOW,
            queue_id="m00000007",
        )
    )


def test_the_report_is_a_multipart_report_of_three_parts() -> None:
    """multipart/report; report-type=delivery-status: text, delivery-status, headers."""
    report = make(REFUSED)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(report)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_the_report_headers_name_the_bounce_sender_and_mark_it_automatic() -> None:
    """From the Mail Delivery System at bounce_from, to the original sender, auto-replied."""
    report = make(REFUSED)
    assert report["From"] == "Mail Delivery System <bounces@example.com>"
    assert report["To"] == "alice@example.com"
    assert report["Subject"] == SUBJECT == "Undelivered Mail Returned to Sender"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Date"] == "Tue, 14 Nov 2023 23:13:20 +0000"
    assert report["Message-ID"].endswith("@relay.example.com>")
    assert report["MIME-Version"] == "1.0"


def test_the_per_message_fields_name_the_reporting_mta_and_arrival() -> None:
    """Reporting-MTA (dns type), the queue id, and when the message arrived."""
    per_message = blocks(make(REFUSED))[0]
    assert per_message["Reporting-MTA"] == "dns; relay.example.com"
    assert per_message["Arrival-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert per_message["X-Ses-Relay-Queue-ID"] == "m00000007"


def test_every_failed_recipient_gets_its_own_block() -> None:
    """Final-Recipient, Action, Status, Diagnostic-Code with SES's reply, Last-Attempt-Date."""
    found = blocks(make(REFUSED, EXPIRED, SUPPRESSED))[1:]
    assert [dict(block.items()) for block in found] == [
        {
            "Final-Recipient": "rfc822; bob@example.net",
            "Action": "failed",
            "Status": "5.0.0",
            "Diagnostic-Code": "smtp; 554 Message rejected: Email address is not verified.",
            "Last-Attempt-Date": "Tue, 14 Nov 2023 23:12:20 +0000",
        },
        {
            "Final-Recipient": "rfc822; carol@example.org",
            "Action": "failed",
            "Status": "4.4.7",
            "Diagnostic-Code": "smtp; 454 Throttling failure: Daily message quota exceeded.",
            "Last-Attempt-Date": "Tue, 14 Nov 2023 23:12:50 +0000",
        },
        {
            # No upstream reply: no Diagnostic-Code (SES never saw it).
            "Final-Recipient": "rfc822; dave@example.org",
            "Action": "failed",
            "Status": "5.1.1",
            "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
        },
    ]


def test_the_human_part_names_each_recipient_and_why() -> None:
    """People read the first part: recipients, reasons and the server's words."""
    text = parts(make(REFUSED, SUPPRESSED))[0].get_content()
    assert "relay.example.com" in text
    assert "<bob@example.net>: the mail server refused it permanently" in text
    assert "554 Message rejected: Email address is not verified." in text
    assert "<dave@example.org>: blacklisted (bounce)" in text


def test_only_the_original_headers_are_attached_never_the_body() -> None:
    """The third part holds the header section, so the sender can tell which message it was."""
    attached = parts(make(REFUSED))[2]
    content = attached.get_payload(decode=True).decode()
    assert "Subject: quarterly report" in content
    assert "Message-ID: <q1@example.com>" in content
    assert "secret body" not in content


def test_a_non_ascii_recipient_uses_the_utf8_address_type() -> None:
    """RFC 6533: `utf-8;` with the xtext form keeps the status part 7-bit and exact."""
    failed = FailedRecipient("jörg+x@exämple.de", "5.1.1", "refused", 550, "5.1.1 no such user")
    data = build_dsn(
        original=envelope("alice@example.com", "jörg+x@exämple.de"),
        original_headers=header_section(ORIGINAL),
        failed=(failed,),
        bounce_from="bounces@example.com",
        reporting_mta="relay.example.com",
        now=NOW,
    )
    assert data.isascii()
    block = blocks(parse(data))[1]
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}rg\\x{2B}x@ex\\x{E4}mple.de"
    assert block["Status"] == "5.1.1"
    text = parts(parse(data))[0].get_content()
    assert "<jörg+x@exämple.de>: refused" in text


def test_a_non_ascii_sender_gets_an_smtputf8_dsn() -> None:
    """The DSN goes to an internationalised address: SMTPUTF8, its To header in UTF-8."""
    original = envelope("élodie@exämple.fr", "bob@example.net")
    notice = dsn_notice(
        original=original,
        original_data=ORIGINAL,
        failed=(REFUSED,),
        bounce_from="bounces@example.com",
        reporting_mta="relay.example.com",
        now=NOW,
    )
    assert notice.envelope.smtputf8
    assert notice.envelope.recipients[0].address == "élodie@exämple.fr"
    assert parse(notice.data)["To"] == "élodie@exämple.fr"


def test_non_ascii_original_headers_are_attached_as_global_headers() -> None:
    """RFC 6533: UTF-8 headers go in message/global-headers, base64 so the DSN stays 7-bit."""
    original = "Subject: résumé\r\nFrom: alice@example.com\r\n\r\nbody\r\n".encode()
    notice = dsn_notice(
        original=QueuedEnvelope("alice@example.com", ("bob@example.net",), ARRIVAL, smtputf8=True),
        original_data=original,
        failed=(REFUSED,),
        bounce_from="bounces@example.com",
        reporting_mta="relay.example.com",
        now=NOW,
    )
    assert notice.data.isascii()
    assert not notice.envelope.eightbit
    attached = parts(parse(notice.data))[2]
    assert attached.get_content_type() == "message/global-headers"
    assert attached["Content-Transfer-Encoding"] == "base64"
    encoded = notice.data.split(b"Undelivered message headers\r\n\r\n")[1].split(b"\r\n\r\n--")[0]
    assert base64.b64decode(encoded) == "Subject: résumé\r\nFrom: alice@example.com\r\n".encode()


def test_the_notice_has_the_null_sender_and_the_original_sender_as_recipient() -> None:
    """Never a DSN about a DSN: the notice's envelope sender is empty; it is due now."""
    notice = dsn_notice(
        original=envelope(),
        original_data=ORIGINAL,
        failed=(REFUSED,),
        bounce_from="bounces@example.com",
        reporting_mta="relay.example.com",
        now=NOW,
        queue_id="m1",
    )
    assert notice.envelope.sender == ""
    assert [r.address for r in notice.envelope.recipients] == ["alice@example.com"]
    assert notice.envelope.received_at == NOW
    assert notice.envelope.size == len(notice.data)
    assert notice.envelope.transaction_id == "dsn-m1"
    assert not notice.envelope.smtputf8
    assert notice.not_before is None


def test_a_long_reply_stays_one_unencoded_line() -> None:
    """SES's long replies are not folded into RFC 2047 words inside the status field."""
    long_text = "Message rejected: " + "very " * 60 + "long"
    failed = FailedRecipient("bob@example.net", "5.0.0", "refused", 554, long_text)
    block = blocks(make(failed))[1]
    assert block["Diagnostic-Code"] == f"smtp; 554 {long_text}"


def test_a_dsn_needs_a_failed_recipient() -> None:
    """An empty report is a programming error."""
    with pytest.raises(ValueError, match="at least one"):
        make()


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (553, "5.1.3 Invalid email address", "5.1.3"),
        (554, "Message rejected: Email address is not verified.", "5.0.0"),
        (550, "4.1.1 contradicts the code", "5.0.0"),
        (553, "5.6.7 SMTPUTF8 not offered", "5.6.7"),
    ],
)
def test_the_status_comes_from_the_enhanced_code_when_the_reply_has_one(
    code: int, text: str, expected: str
) -> None:
    """RFC 3463 status from the reply's enhanced code, else 5.0.0."""
    assert status_of(code, text) == expected


def test_the_header_section_ends_at_the_first_empty_line() -> None:
    """CRLF and bare-LF messages alike; a message without a body is all headers."""
    assert header_section(ORIGINAL).endswith(b"<q1@example.com>")
    assert header_section(b"A: 1\nB: 2\n\nbody") == b"A: 1\nB: 2"
    assert header_section(b"A: 1") == b"A: 1"
