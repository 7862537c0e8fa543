"""A raw SMTP client over a blocking socket that checks every byte the server sends back.

The hostile suites need what polite clients (smtplib, aiosmtplib) will not do: send bare LF, bare
CR, NUL bytes, 5,000-byte lines, commands after QUIT, garbage after STARTTLS. They also need to
see the server's replies exactly as sent, so this client does not parse leniently: every line the
server writes must be a well-formed SMTP reply line (RFC 5321 section 4.2: three digits, then a
space or a hyphen, then text without control characters, then CRLF), the lines of one multi-line
reply must share their code, and no line may carry traceback text or a Python exception name.
`ReplyViolation` (an AssertionError) says which rule a line broke.
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import attrs

#: One reply line: code (first digit 2-5), separator, text, CRLF; nothing else.
REPLY_LINE = re.compile(rb"\A([2-5][0-9][0-9])([ -])([^\r\n]*)\r\n\Z")
#: Control characters have no place in reply text (a CR or LF there would forge a reply).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: What leaked internals look like: a traceback, aiosmtpd's `500 Error: (Name) text`, a source
#: location, or a Python exception class name such as KeyError or UnicodeDecodeError.
LEAK = re.compile(
    r"Traceback|Error: \(|File \"|\bline \d+, in\b"
    r"|\b(?:[A-Z][a-z0-9]+)+(?:Error|Exception|Exhausted|Unavailable|Timeout)\b"
    r"|\b(?:StopIteration|StopAsyncIteration|CancelledError|InvalidAddress|"
    r"MalformedNotification|TLSSetupException|SSLError)\b"
)
#: Replies after which a server may close the connection.
CLOSING_CODES = frozenset({221, 421, 502, 554})


class ReplyViolation(AssertionError):
    """The server sent something that is not a clean, well-formed SMTP reply."""


class ConnectionClosed(ConnectionError):
    """The server closed the connection (the replies read so far are in `replies`)."""

    def __init__(self, message: str, replies: list[Reply]) -> None:
        super().__init__(message)
        self.replies = replies


@attrs.frozen
class Reply:
    """One complete SMTP reply.

    Attributes:
        code: the three-digit reply code.
        lines: the text of each line (without code, separator and CRLF).
    """

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """All lines' text, joined by newlines."""
        return "\n".join(self.lines)


def check_line(raw: bytes) -> tuple[int, bool, str]:
    """Validate one raw reply line; return (code, is_last_line, text) or raise ReplyViolation."""
    match = REPLY_LINE.match(raw)
    if match is None:
        raise ReplyViolation(f"not a well-formed SMTP reply line: {raw[:300]!r}")
    try:
        text = match.group(3).decode("utf-8")
    except UnicodeDecodeError:
        raise ReplyViolation(f"reply text is not UTF-8: {raw[:300]!r}") from None
    if CONTROL.search(text):
        raise ReplyViolation(f"control character in reply text: {raw[:300]!r}")
    leak = LEAK.search(text)
    if leak is not None:
        raise ReplyViolation(f"internal detail {leak.group(0)!r} reached the client: {raw[:300]!r}")
    return int(match.group(1)), match.group(2) == b" ", text


def parse_replies(stream: bytes) -> list[Reply]:
    """Split everything a server sent into replies, validating every line (and the ending)."""
    replies: list[Reply] = []
    lines: list[str] = []
    code: int | None = None
    for raw in stream.splitlines(keepends=True):
        line_code, last, text = check_line(raw)
        if code is not None and line_code != code:
            raise ReplyViolation(f"multi-line reply changes code {code} -> {line_code}: {raw!r}")
        code = line_code
        lines.append(text)
        if last:
            replies.append(Reply(line_code, tuple(lines)))
            lines, code = [], None
    if lines:
        raise ReplyViolation(f"stream ends inside a multi-line reply: {lines!r}")
    return replies


class WireClient:
    """One SMTP connection driven byte by byte (a context manager that closes the socket).

    Attributes:
        received: every byte the server sent, in order (for diagnostics).
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout
        )
        self.received = bytearray()
        self._buffer = bytearray()
        self.closed = False

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        try:
            self.sock.close()
        except OSError:
            pass  # already gone: nothing left to release

    def send(self, data: bytes) -> None:
        """Send raw bytes; a server that already hung up raises ConnectionClosed."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as exc:
            self.closed = True
            raise ConnectionClosed(f"send failed: {exc!r}", []) from exc

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply within {self.timeout}s: {bytes(self._buffer)!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(
                f"no complete reply within {self.timeout}s: {bytes(self._buffer)!r}"
            ) from None
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.received += chunk
        self._buffer += chunk
        return True

    def _line(self, deadline: float) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return raw
            if not self._fill(deadline):
                if self._buffer:
                    raise ReplyViolation(f"connection closed mid-line: {bytes(self._buffer)!r}")
                return None

    def read_reply(self) -> Reply:
        """Read one complete reply (validated); raise ConnectionClosed on EOF before it."""
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        code: int | None = None
        while True:
            raw = self._line(deadline)
            if raw is None:
                raise ConnectionClosed("server closed the connection", [])
            line_code, last, text = check_line(raw)
            if code is not None and line_code != code:
                raise ReplyViolation(f"multi-line reply changes code {code} -> {line_code}")
            code = line_code
            lines.append(text)
            if last:
                return Reply(line_code, tuple(lines))

    def command(self, line: bytes) -> Reply:
        """Send `line` + CRLF and read its reply."""
        self.send(line + b"\r\n")
        return self.read_reply()

    def read_until_closed(self, timeout: float | None = None) -> list[Reply]:
        """Read and validate everything until the server closes the connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self._fill(deadline):
            pass
        stream, self._buffer = bytes(self._buffer), bytearray()
        return parse_replies(stream)

    def starttls(self, ca_file: str, server_hostname: str = "localhost") -> None:
        """Upgrade the socket after a `220` to STARTTLS (verifying the relay's certificate)."""
        if self._buffer:
            raise ReplyViolation(f"server sent data after 220 to STARTTLS: {bytes(self._buffer)!r}")
        context = ssl.create_default_context(cafile=ca_file)
        assert isinstance(self.sock, socket.socket)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
