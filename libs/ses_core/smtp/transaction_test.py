"""Tests for preparing a message body for the wire: line endings, dot-stuffing, SIZE (the
transaction itself is tested against the SES stand-in in client_test)."""

from __future__ import annotations

import pytest

from ses_core.smtp._transaction import MessageData


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\n\rb\r\n\n", b"a\r\n\r\nb\r\n\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),  # already CRLF: the fast path
        (b"a\r\n\r", b"a\r\n\r\n.\r\n"),  # one bare CR after CRLFs
        (b"a\r\r\n", b"a\r\n\r\n.\r\n"),
    ],
)
def test_every_line_ending_becomes_crlf(data: bytes, wire: bytes) -> None:
    """Bare LF, bare CR and a missing final line end are all sent as CRLF."""
    assert MessageData.from_bytes(data).wire == wire


def test_lines_starting_with_a_dot_are_stuffed() -> None:
    """A leading '.' is doubled on every line, including the first, and a lone '.' line."""
    data = MessageData.from_bytes(b".first\n.\n..two\nmid.dle\n")
    assert data.wire == b"..first\r\n..\r\n...two\r\nmid.dle\r\n.\r\n"


def test_crlf_body_with_leading_dots_is_still_stuffed() -> None:
    """The no-copy path for CRLF bodies still doubles a leading '.' (first line and later)."""
    assert MessageData.from_bytes(b".a\r\nb\r\n.\r\n").wire == b"..a\r\nb\r\n..\r\n.\r\n"
    assert MessageData.from_bytes(b"a.\r\nb\r\n").wire == b"a.\r\nb\r\n.\r\n"


def test_size_counts_the_normalised_body_without_stuffing() -> None:
    """SIZE= declares the CRLF-normalised octets, as RFC 1870 asks."""
    data = MessageData.from_bytes(b".a\nb")
    assert data.size == len(b".a\r\nb\r\n")
