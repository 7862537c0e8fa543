"""Replies to a pipelined group go out in one write; a client that waits is never kept waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay._aiosmtpd import SmtpAdapter


class _Handler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


class _CountingAdapter(SmtpAdapter):
    """Records every chunk handed to the transport."""

    writes: list[bytes]

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.writes = []
        _CountingAdapter.last = self
        original = self._writer.write

        def write(data: bytes) -> None:
            self.writes.append(bytes(data))
            original(data)

        self._writer.write = write  # type: ignore[method-assign]

    last: _CountingAdapter


@pytest.fixture()
async def server() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: _CountingAdapter(_Handler(), hostname="relay.test"), "127.0.0.1", 0
    )
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


async def _reply(reader: asyncio.StreamReader) -> list[bytes]:
    """One whole (possibly multi-line) reply."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        lines.append(line)
        if line[3:4] != b"-":
            return lines


async def test_a_pipelined_group_is_answered_in_one_write(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    await _reply(reader)  # greeting
    writer.write(b"EHLO client\r\n")
    await _reply(reader)
    adapter = _CountingAdapter.last
    before = len(adapter.writes)
    writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
    writer.write(b"RCPT TO:<c@example.org>\r\nDATA\r\n")
    replies = [await _reply(reader) for _ in range(4)]
    assert [r[0][:3] for r in replies] == [b"250", b"250", b"250", b"354"]
    assert len(adapter.writes) - before == 1
    writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert (await _reply(reader))[0].startswith(b"250 2.0.0")
    assert (await _reply(reader))[0].startswith(b"221")
    writer.close()


async def test_a_client_waiting_for_each_reply_gets_it_at_once(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    await _reply(reader)
    for command in (b"EHLO client", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>"):
        writer.write(command + b"\r\n")
        assert (await _reply(reader))[-1][:3] == b"250"  # wait_for would time out if held
    writer.write(b"RSET\r\n")
    assert (await _reply(reader))[0][:3] == b"250"
    writer.close()


async def test_replies_held_before_a_closing_command_are_still_sent(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    await _reply(reader)
    writer.write(b"EHLO client\r\n")
    await _reply(reader)
    writer.write(b"MAIL FROM:<a@example.com>\r\nRSET\r\nQUIT\r\n")
    codes = [(await _reply(reader))[0][:3] for _ in range(3)]
    assert codes == [b"250", b"250", b"221"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
