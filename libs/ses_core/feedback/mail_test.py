"""Tests for ses_core.feedback.mail: the `mail` object, its headers, sender and destination."""

from __future__ import annotations

from ses_core.feedback.mail import Mail
from ses_core.feedback.notifications import SesNotification
from ses_core.testing import feedback_docs as fx


def test_mail_part_is_parsed() -> None:
    """The mail object gives message id, sender, destination, account, headers and timestamp."""
    n = SesNotification.from_json(fx.bounce_with_dsn())
    assert n.mail is not None
    m = n.mail
    assert m.message_id == fx.SES_MESSAGE_ID
    assert m.source is not None and m.source.key == "john@example.com"
    assert m.destination == ("jane@example.com", "mary@example.com", "richard@example.com")
    assert m.sending_account_id == fx.ACCOUNT
    assert m.timestamp.tzinfo is not None
    assert m.headers_truncated is False
    assert m.common_headers is not None
    assert m.common_headers.subject == "Hello"
    assert m.common_headers.from_ == ('"John Doe" <john@example.com>',)
    assert len(m.common_headers.to) == 2


def test_invalid_source_keeps_text_and_gives_none() -> None:
    """An unparseable mail.source keeps its text and leaves `source` None."""
    doc = fx.mail(source="MAILER-DAEMON")
    m = Mail.from_json(doc)
    assert (m.source, m.source_text) == (None, "MAILER-DAEMON")


def test_destination_addresses_splits_valid_and_invalid() -> None:
    """destination_addresses() parses the raw destination on demand."""
    m = Mail.from_json(fx.mail(destination=("a@example.com", "junk", "B@Example.COM")))
    valid, invalid = m.destination_addresses()
    assert [a.key for a in valid] == ["a@example.com", "b@example.com"]
    assert [(i.text, i.path) for i in invalid] == [("junk", "$.mail.destination[1]")]
