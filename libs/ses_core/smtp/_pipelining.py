"""Writing a transaction's commands, pipelined (RFC 2920) or one at a time, and reading replies.

aiosmtplib expects one reply per command written: it parses one reply per `data_received` and
drops bytes that arrive while no reply is awaited or the previous one is not collected yet. With
several commands in flight, replies arrive together or back to back and would be lost. Every
pooled session's protocol is switched to `PipeliningProtocol`, which keeps those bytes while a
transaction says how many replies it expects. `Commands` writes a transaction's MAIL, RCPT and
DATA lines either way and hands their replies back in order, so the transaction itself is one
state machine for both dialogues.
"""

from __future__ import annotations

import functools

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, SMTPProtocol
from aiosmtplib.response import SMTPResponse

#: Bound on unread pipelined replies (50 RCPT replies of a few hundred bytes fit easily).
_MAX_PIPELINED_BYTES = 256 * 1024


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, made safe for command pipelining.

    While `expect(n)` is in force this class keeps every byte and hands buffered replies out one
    by one, in order; otherwise it behaves exactly as aiosmtplib's.
    """

    _pipelined = 0

    def expect(self, replies: int) -> None:
        """The next `replies` reads answer pipelined commands (0 ends pipelined reading)."""
        self._pipelined = replies

    def data_received(self, data: bytes) -> None:
        if self._pipelined <= 0:
            super().data_received(data)
            return
        waiter = self._response_waiter
        if waiter is None:
            return
        self._buffer.extend(data)
        if len(self._buffer) > _MAX_PIPELINED_BYTES:
            del self._buffer[:]
            if not waiter.done():
                error = aiosmtplib.SMTPResponseException(500, "Response too long")
                self._set_response_exception(waiter, error)
            return
        if waiter.done():
            return  # the previous reply is not collected yet; this one waits in the buffer
        try:
            response = self._read_response_from_buffer()
        except aiosmtplib.SMTPResponseException as exc:
            self._set_response_exception(waiter, exc)
            return
        if response is not None:
            waiter.set_result(response)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        if self._pipelined <= 0:
            return await super().read_response(timeout)
        self._pipelined -= 1
        waiter = self._response_waiter
        if waiter is None or not waiter.done():
            # A reply that arrived while the previous one was uncollected is already buffered
            # (possibly with the connection closed since: it still counts, in order).
            buffered = self._read_response_from_buffer()
            if buffered is not None:
                return buffered
        return await super().read_response(timeout)


def enable_pipelining(smtp: aiosmtplib.SMTP) -> PipeliningProtocol | None:
    """Make a connected session's protocol a `PipeliningProtocol` (None if not connected).

    aiosmtplib creates its protocol itself; the subclass adds state only through a class
    attribute default, so switching the class of the live object is safe.
    """
    protocol = smtp.protocol
    if protocol is None:
        return None
    if not isinstance(protocol, PipeliningProtocol):
        protocol.__class__ = PipeliningProtocol
    return protocol  # type: ignore[return-value]


class Commands:
    """The session's side of one transaction: its MAIL, RCPT and DATA lines, then the body.

    With `pipelined` (the server offers PIPELINING and the protocol is a `PipeliningProtocol`)
    every line is written before the first reply is read; otherwise each line is written right
    before its reply is read. The transaction reads replies the same way in both.
    """

    def __init__(
        self, protocol: SMTPProtocol, lines: list[bytes], timeout: float, *, pipelined: bool
    ) -> None:
        self._protocol = protocol
        self._pipelining = protocol if isinstance(protocol, PipeliningProtocol) else None
        if not pipelined:
            self._pipelining = None
        self._lines = lines
        self._timeout = timeout
        self._written = 0
        self._read = 0

    @property
    def unanswered(self) -> int:
        """Lines written whose reply was not read yet."""
        return self._written - self._read

    async def next_reply(self) -> SMTPResponse:
        """The reply to the next line, writing it (or, pipelined, all of them) first if needed."""
        if self._written == self._read:
            if self._pipelining is not None:
                self._pipelining.expect(len(self._lines))
                self._protocol.write(b"".join(self._lines))
                self._written = len(self._lines)
            else:
                self._protocol.write(self._lines[self._written])
                self._written += 1
        self._read += 1
        return await self.read()

    async def skip_unanswered(self) -> bool:
        """Read and ignore the replies still due; False when the session broke meanwhile."""
        try:
            while self.unanswered:
                await self.next_reply()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    def write(self, data: bytes) -> None:
        """Write bytes outside the command lines (the body, or an empty message's '.')."""
        self._protocol.write(data)

    async def read(self) -> SMTPResponse:
        """Read one reply."""
        return await self._protocol.read_response(timeout=self._timeout)

    def finish(self) -> None:
        """End pipelined reading: later replies are read one per command again."""
        if self._pipelining is not None:
            self._pipelining.expect(0)


def command_line(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """One MAIL/RCPT line as aiosmtplib would send it (same address checks)."""
    parts = [verb + _quoted(address, encoding)]
    parts.extend(option.encode("ascii") for option in options)
    for part in parts:
        if COMMAND_INJECTION_REGEX.search(part):
            message = "command argument contains a control character"
            raise ValueError(message)
    return b" ".join(parts) + b"\r\n"


@functools.lru_cache(maxsize=4096)
def _quoted(address: str, encoding: str) -> bytes:
    """`<address>` as aiosmtplib quotes it (its parser is slow; senders and recipients repeat)."""
    return quote_address(address).encode(encoding)
