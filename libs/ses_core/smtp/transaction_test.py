"""Tests for preparing a message body for the wire (line endings, dot-stuffing, SIZE) and for
the pipelining protocol's reply buffering (the pipelined dialogue itself is tested against the
real stand-in in smtp_client_test)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from ses_core.smtp._pool import PipeliningProtocol
from ses_core.smtp._transaction import Payload


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
    assert Payload.from_message_data(data).wire == wire


def test_lines_starting_with_a_dot_are_stuffed() -> None:
    """A leading '.' is doubled on every line, including the first, and a lone '.' line."""
    payload = Payload.from_message_data(b".first\n.\n..two\nmid.dle\n")
    assert payload.wire == b"..first\r\n..\r\n...two\r\nmid.dle\r\n.\r\n"


def test_crlf_body_with_leading_dots_is_still_stuffed() -> None:
    """The no-copy path for CRLF bodies still doubles a leading '.' (first line and later)."""
    assert Payload.from_message_data(b".a\r\nb\r\n.\r\n").wire == b"..a\r\nb\r\n..\r\n.\r\n"
    assert Payload.from_message_data(b"a.\r\nb\r\n").wire == b"a.\r\nb\r\n.\r\n"


def test_size_counts_the_normalised_body_without_stuffing() -> None:
    """SIZE= declares the CRLF-normalised octets, as RFC 1870 asks."""
    payload = Payload.from_message_data(b".a\nb")
    assert payload.size == len(b".a\r\nb\r\n")


class _Transport(asyncio.Transport):
    """Just enough of a transport for driving a protocol by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        self.closed = True


async def test_pipelined_replies_buffered_before_a_close_are_still_read() -> None:
    """Replies that arrived before the server closed are handed out in order, then the loss."""
    protocol = PipeliningProtocol(loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    protocol.expect(3)
    protocol.data_received(b"250 a\r\n554 b\r\n")
    protocol.connection_lost(None)
    first = await protocol.read_response(timeout=1)
    second = await protocol.read_response(timeout=1)
    assert [(first.code, first.message), (second.code, second.message)] == [
        (250, "a"),
        (554, "b"),
    ]
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await protocol.read_response(timeout=1)


async def test_unsolicited_data_outside_a_pipeline_is_still_dropped() -> None:
    """Without expect(), aiosmtplib's rule holds: bytes nobody asked for are not kept."""
    protocol = PipeliningProtocol(loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    protocol.data_received(b"220 hi\r\n")  # the greeting is expected from the start
    assert (await protocol.read_response(timeout=1)).code == 220
    protocol.data_received(b"421 idle timeout\r\n")
    protocol.expect(1)
    protocol.data_received(b"250 ok\r\n")
    reply = await protocol.read_response(timeout=1)
    assert (reply.code, reply.message) == (250, "ok")


async def test_an_oversized_pipelined_reply_fails_the_read() -> None:
    """More unread reply bytes than the bound fail the pending read instead of growing."""
    protocol = PipeliningProtocol(loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    protocol.expect(1)
    protocol.data_received(b"250-" + b"x" * (300 * 1024))
    with pytest.raises(aiosmtplib.SMTPResponseException):
        await protocol.read_response(timeout=1)
