"""The one place that touches aiosmtpd's private members, behind public-named hooks.

aiosmtpd (1.4) offers no public seam for what the relay's session needs: a step around every
command (draining, the junk budget), a refusal before the greeting, its own envelope class, the
idle timer paused while a message is relayed, the TLS state (implicit TLS counts as encrypted),
ending a session from outside, its MAIL/RCPT path parser, and replies written once per pipelined
group rather than once per reply. `SmtpAdapter` overrides the
private methods involved and calls the hooks below instead, so `relay.session` is written against
those hooks only, and an aiosmtpd upgrade is checked here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope

Command = Callable[[Any], Awaitable[None]]
ParsedPath = tuple[str | None, str | None]

#: Commands whose replies may wait for the rest of a pipelined group (RFC 2920 section 3.1: the
#: commands that "can appear anywhere in a pipelined command group"). Every other reply is written
#: at once, with whatever is held before it, since the client may be waiting for it (EHLO, DATA's
#: 354, STARTTLS, AUTH, QUIT, the message's final reply).
_GROUPABLE = frozenset({"MAIL", "RCPT", "RSET"})


class _ImplicitTls:
    """Marks an implicit-TLS session as encrypted (aiosmtpd only checks that one is set)."""


class SmtpAdapter(SMTP):
    """aiosmtpd's `SMTP` with hooks in place of the private members the relay must reach."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._relaying = False
        self._command: str | None = None
        self._held: list[bytes] = []
        super().__init__(handler, **kwargs)
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._around(name, method)

    # --- hooks for subclasses --------------------------------------------------------------------

    def new_envelope(self) -> Envelope:
        """The envelope of a new transaction."""
        return Envelope()

    def refusal(self) -> str | None:
        """A reply ending the session instead of the greeting, or None to greet."""
        return None

    async def run_command(self, name: str, method: Command, arg: Any) -> None:
        """Run one SMTP command (`name` is its verb, upper case)."""
        await method(arg)

    def message_relayed(self) -> None:
        """Called after the handler's DATA hook, whatever its outcome."""

    def parse_path(self, arg: str) -> ParsedPath:
        """Parse a MAIL FROM / RCPT TO / VRFY path: (address, parameters), (None, None) if bad."""
        return aiosmtpd_parse_path(arg)

    # --- state and actions for subclasses --------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        """Whether the session runs under TLS (STARTTLS, or implicit once marked)."""
        return self._tls_protocol is not None

    def mark_encrypted(self) -> None:
        """Count an implicit-TLS connection as encrypted, so AUTH is offered as under STARTTLS
        (aiosmtpd only counts STARTTLS as TLS, its issues #274/#281)."""
        self._tls_protocol = _ImplicitTls()  # type: ignore[assignment]

    def end(self) -> None:
        """Stop reading commands and close the connection, as QUIT does (after its reply)."""
        self.write_held_replies()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self.transport is not None:
            self.transport.close()

    async def push(self, status: str | bytes) -> None:
        """Send one reply line; a MAIL/RCPT/RSET reply is held while the client's next command is
        already buffered, and goes out with the next reply in one write.

        A pipelining client sends MAIL, RCPT... and DATA in one packet: written one by one, their
        replies cost a write system call each, the largest share of the relay's CPU at 20
        connections. Held replies never wait on the client: one is held only while a whole
        further command line is already read, whose own reply releases it."""
        response = (
            status
            if isinstance(status, bytes)
            else status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        )
        line = response + b"\r\n"
        if self._command in _GROUPABLE and self._next_command_buffered():
            self._held.append(line)
            return
        if self._held:
            self._held.append(line)
            line = b"".join(self._held)
            self._held.clear()
        self._writer.write(line)
        await self._writer.drain()

    def write_held_replies(self) -> None:
        """Hand held replies to the transport now (before closing the connection)."""
        if self._held and self.transport is not None and not self.transport.is_closing():
            self._writer.write(b"".join(self._held))
        self._held.clear()

    def _next_command_buffered(self) -> bool:
        buffered: bytearray | None = getattr(self._reader, "_buffer", None)
        return buffered is not None and b"\n" in buffered

    # --- the private overrides -------------------------------------------------------------------

    def _create_envelope(self) -> Envelope:
        return self.new_envelope()

    async def _handle_client(self) -> None:
        reply = self.refusal()
        if reply is not None:
            await self.push(reply)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _around(self, name: str, method: Command) -> Command:
        @functools.wraps(method)  # keeps the syntax strings aiosmtpd's HELP reads from it
        async def command(arg: Any) -> None:
            self._command = name
            try:
                await self.run_command(name, method, arg)
            finally:
                self._command = None

        return command

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        try:
            with self._idle_timer_paused():
                return await super()._call_handler_hook(command, *args)
        finally:
            self.message_relayed()

    @contextlib.contextmanager
    def _idle_timer_paused(self) -> Iterator[None]:
        # While the handler relays a message (up to RELAY_MAX_WAIT) the client waits for *us*:
        # cutting it off would make it retry a message SES may already have (a duplicate).
        self._relaying = True
        try:
            yield
        finally:
            self._relaying = False
            if self.transport is not None and not self.transport.is_closing():
                self._reset_timeout()

    def _timeout_cb(self) -> None:
        if self._relaying:
            self._reset_timeout()
            return
        super()._timeout_cb()

    def _getaddr(self, arg: str) -> ParsedPath:
        return self.parse_path(arg)


class _PathParserSettings:
    local_part_limit = 0


_PATH_PARSER_SETTINGS: Any = _PathParserSettings()


def aiosmtpd_parse_path(arg: str) -> ParsedPath:
    """aiosmtpd's own path parser (pure with no local-part limit), made total.

    aiosmtpd only catches `HeaderParseError`, but Python's email header parser also fails with
    IndexError (`a@` without angle brackets), AttributeError or UnboundLocalError (`"<0@0>"@[`)
    on malformed paths. Each is the client's syntax error (501), not an internal one (451).
    """
    try:
        return SMTP._getaddr(_PATH_PARSER_SETTINGS, arg)
    except Exception:  # noqa: BLE001 - any parser failure is a syntax error, see above
        return None, None
