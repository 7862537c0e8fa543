from __future__ import annotations

import pytest

from ses_core.sesapi._errors import reply_for_error
from ses_core.sesapi._headers import HeaderError, consume_ses_headers
from ses_core.smtp import ReplyClass

MESSAGE = (
    b"From: a@example.com\r\n"
    b"X-SES-CONFIGURATION-SET: marketing\r\n"
    b"Subject: hi\r\n"
    b"X-SES-MESSAGE-TAGS: campaign=spring,\r\n"
    b" team=sales-2\r\n"
    b"X-SES-SOURCE-ARN: arn:aws:ses:eu-west-1:1:identity/example.com\r\n"
    b"\r\n"
    b"X-SES-CONFIGURATION-SET: in the body stays\r\n"
)


def test_the_consumed_headers_are_read_and_removed_the_rest_is_kept_byte_for_byte() -> None:
    headers = consume_ses_headers(MESSAGE)
    assert headers.configuration_set == "marketing"
    assert headers.tags == (("campaign", "spring"), ("team", "sales-2"))
    assert headers.data == (
        b"From: a@example.com\r\n"
        b"Subject: hi\r\n"
        b"X-SES-SOURCE-ARN: arn:aws:ses:eu-west-1:1:identity/example.com\r\n"
        b"\r\n"
        b"X-SES-CONFIGURATION-SET: in the body stays\r\n"
    )


def test_a_message_without_the_headers_is_unchanged() -> None:
    data = b"From: a@example.com\nSubject: x\n\nbody\n"
    assert consume_ses_headers(data).data is data


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"X-SES-MESSAGE-TAGS: campaign\r\n", "X-SES-MESSAGE-TAGS"),
        (b"x-ses-message-tags: a=b c\r\n", "X-SES-MESSAGE-TAGS"),
        (b"X-SES-MESSAGE-TAGS: a=\r\n", "X-SES-MESSAGE-TAGS"),
        (b"X-SES-CONFIGURATION-SET: two words\r\n", "X-SES-CONFIGURATION-SET"),
    ],
)
def test_malformed_headers_are_named(header: bytes, name: str) -> None:
    with pytest.raises(HeaderError, match=name):
        consume_ses_headers(b"From: a@example.com\r\n" + header + b"\r\nbody\r\n")


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("TooManyRequestsException", "Maximum sending rate exceeded.", 429, ReplyClass.THROTTLED),
        ("LimitExceededException", "Daily message quota exceeded.", 400, ReplyClass.DAILY_QUOTA),
        ("TooManyRequestsException", "", 429, ReplyClass.THROTTLED),
        ("MessageRejected", "Email address is not verified.", 400, ReplyClass.PERMANENT),
        ("MailFromDomainNotVerifiedException", "x", 400, ReplyClass.PERMANENT),
        ("BadRequestException", "Invalid tag", 400, ReplyClass.PERMANENT),
        ("AccountSuspendedException", "suspended", 400, ReplyClass.AUTH),
        ("SendingPausedException", "paused", 400, ReplyClass.AUTH),
        ("ExpiredTokenException", "expired", 403, ReplyClass.AUTH),
        ("InternalFailure", "oops", 500, ReplyClass.TRANSIENT),
        ("SomethingNew", "?", 400, ReplyClass.TRANSIENT),
    ],
)
def test_api_errors_map_onto_the_smtp_reply_classes(
    code: str, message: str, status: int, expected: ReplyClass
) -> None:
    reply = reply_for_error(code, message, status)
    assert reply.reply_class is expected
    assert code in reply.text
    assert (reply.code >= 500) == (expected is ReplyClass.PERMANENT)


def test_only_the_header_block_is_read_whatever_the_line_endings() -> None:
    data = b"X-SES-MESSAGE-TAGS: a=b\nSubject: s\n\nX-SES-MESSAGE-TAGS: not read\n\nmore\n"
    headers = consume_ses_headers(data)
    assert headers.tags == (("a", "b"),)
    assert headers.data == b"Subject: s\n\nX-SES-MESSAGE-TAGS: not read\n\nmore\n"
    assert (
        consume_ses_headers(b"\r\nX-SES-MESSAGE-TAGS: x\r\n").data
        == b"\r\nX-SES-MESSAGE-TAGS: x\r\n"
    )
