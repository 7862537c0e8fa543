"""Tests for preparing a message body for the wire (line endings, dot-stuffing, SIZE)."""

from __future__ import annotations

import pytest

from ses_core.smtp_transaction import Payload


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\n\rb\r\n\n", b"a\r\n\r\nb\r\n\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_every_line_ending_becomes_crlf(data: bytes, wire: bytes) -> None:
    """Bare LF, bare CR and a missing final line end are all sent as CRLF."""
    assert Payload.from_message_data(data).wire == wire


def test_lines_starting_with_a_dot_are_stuffed() -> None:
    """A leading '.' is doubled on every line, including the first, and a lone '.' line."""
    payload = Payload.from_message_data(b".first\n.\n..two\nmid.dle\n")
    assert payload.wire == b"..first\r\n..\r\n...two\r\nmid.dle\r\n.\r\n"


def test_size_counts_the_normalised_body_without_stuffing() -> None:
    """SIZE= declares the CRLF-normalised octets, as RFC 1870 asks."""
    payload = Payload.from_message_data(b".a\nb")
    assert payload.size == len(b".a\r\nb\r\n")
