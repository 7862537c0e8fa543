"""Tests for the pipelining protocol's reply buffering (the pipelined and lockstep dialogues
are tested against the SES stand-in in client_test)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from ses_core.smtp._pipelining import PipeliningProtocol


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


async def test_replies_arriving_together_are_all_read_in_order() -> None:
    """Several replies in one segment, and one arriving before the last is read, are kept."""
    protocol = PipeliningProtocol(loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    protocol.expect(3)
    protocol.data_received(b"250 one\r\n250-two\r\n250 two")
    protocol.data_received(b"\r\n354 three\r\n")
    replies = [await protocol.read_response(timeout=1) for _ in range(3)]
    protocol.expect(0)
    assert [(r.code, r.message) for r in replies] == [
        (250, "one"),
        (250, "two\ntwo"),
        (354, "three"),
    ]
