"""One client's SMTP session: aiosmtpd's protocol with the relay's access, AUTH and drain rules.

What `RelaySession` adds to aiosmtpd's `SMTP`:

- clients outside `RELAY_ALLOWED_NETWORKS` are answered `554 5.7.1` instead of the greeting;
- AUTH is offered and accepted only over TLS, implicit TLS included, and verified by
  `relay.session_auth`;
- a recipient address aiosmtpd cannot parse gets `501` with the reason (`relay.paths`);
- commands that carry no mail spend a budget that ends slow-loris sessions (`relay.junk`);
- reply lines never carry control characters or undecodable client bytes;
- while the relay drains (shutting down), a new command is answered `421 4.3.2` and ends the
  session, unless it continues a transaction already under way.

A session knows the relay only through its `SessionPolicy`, a frozen value made by
`relay.wiring`; aiosmtpd's private members are reached only in `relay._aiosmtpd`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Iterator
from typing import Any, cast

import attrs
from aiosmtpd.smtp import AuthResult, TLSSetupException, syntax
from prometheus_client import Gauge

from relay._aiosmtpd import Command, ParsedPath, SmtpAdapter
from relay.access import AccessPolicy
from relay.handler import RelayEnvelope, RelayHandler
from relay.junk import JUNK_COMMANDS, JUNK_REPLY, JunkBudget, is_junk_reply
from relay.metrics import RelayMetrics
from relay.paths import PathParser, path_problem, strip_keyword
from relay.session_auth import SessionAuth

log = logging.getLogger(__name__)

SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, try again later"
ACCESS_DENIED_REPLY = "554 5.7.1 Access denied"
#: Never sent to a client: RFC 5321 reply text is printable (a tab is allowed), and lone
#: surrogates (undecodable client bytes that aiosmtpd echoes) cannot even be encoded.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
#: Commands that may continue a transaction already in flight while draining.
_IN_TRANSACTION_COMMANDS = frozenset({"RCPT", "DATA", "NOOP"})


class OpenSessions:
    """The relay's open client sessions and its draining flag, shared by server and sessions."""

    def __init__(self, gauge: Gauge) -> None:
        self._sessions: set[RelaySession] = set()
        self._gauge = gauge
        self._draining = False

    @property
    def draining(self) -> bool:
        """Whether the relay is shutting down (no new transactions)."""
        return self._draining

    def start_draining(self) -> None:
        """From now on, sessions refuse new transactions."""
        self._draining = True

    def add(self, session: RelaySession) -> None:
        """Count a new session."""
        self._sessions.add(session)
        self._gauge.inc()

    def discard(self, session: RelaySession) -> None:
        """Forget a closed session (once)."""
        if session in self._sessions:
            self._sessions.discard(session)
            self._gauge.dec()

    def in_transaction(self) -> list[RelaySession]:
        """The sessions with a mail transaction under way."""
        return [session for session in self._sessions if session.in_transaction]

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[RelaySession]:
        return iter(list(self._sessions))


@attrs.frozen
class SessionPolicy:
    """What every client session runs with, fixed for the relay's life.

    Attributes:
        hostname: the name in the greeting and the EHLO reply.
        starttls_context: the certificate offered with STARTTLS (None: no STARTTLS; also
            None with implicit TLS, where the listener does TLS).
        max_message_size: SIZE, in bytes.
        idle_timeout: seconds without a command before the session is closed.
        auth_required: whether mail needs AUTH first.
        junk_command_limit: commands without mail allowed between two messages.
        access: which client networks may connect.
        auth: AUTH verification and throttling, shared by all sessions.
        metrics: the relay's metrics.
        sessions: the open sessions and the draining flag.
    """

    hostname: str
    starttls_context: ssl.SSLContext | None
    max_message_size: int
    idle_timeout: float
    auth_required: bool
    junk_command_limit: int
    access: AccessPolicy
    auth: SessionAuth
    metrics: RelayMetrics
    sessions: OpenSessions


class RelaySession(SmtpAdapter):
    """One client session (see the module docstring)."""

    def __init__(self, handler: RelayHandler, policy: SessionPolicy) -> None:
        self._policy = policy
        self._connected = False
        self._denied = False
        self._in_data = False
        self._junk = JunkBudget(policy.junk_command_limit)
        self._paths = PathParser()
        auth_on = policy.auth.enabled
        super().__init__(
            handler,
            hostname=policy.hostname,
            ident="ses-relay",
            tls_context=policy.starttls_context,
            data_size_limit=policy.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=policy.idle_timeout,
            auth_required=auth_on and policy.auth_required,
            auth_require_tls=True,
            auth_exclude_mechanism=[] if auth_on else ["PLAIN", "LOGIN"],
            loop=asyncio.get_running_loop(),
        )

    # --- connection lifecycle ------------------------------------------------------------------

    def new_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._connected:
            return  # the same connection again, now under STARTTLS
        self._connected = True
        self._policy.sessions.add(self)
        if transport.get_extra_info("sslcontext") is not None:
            self.mark_encrypted()
        host = self.peer_host
        if not self._policy.access.client_allowed(host):
            self._denied = True
            log.warning("connection from %s refused: not in RELAY_ALLOWED_NETWORKS", host)

    def connection_lost(self, error: Exception | None) -> None:
        self._policy.sessions.discard(self)
        super().connection_lost(error)

    def refusal(self) -> str | None:
        if self._denied:
            return ACCESS_DENIED_REPLY
        if self._policy.sessions.draining:
            return SHUTDOWN_REPLY
        return None

    @property
    def peer_host(self) -> str | None:
        """The client's IP address."""
        peer = self.session.peer if self.session is not None else None
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return None

    @property
    def in_transaction(self) -> bool:
        """Whether a mail transaction is under way (MAIL accepted, or DATA being relayed)."""
        return self._in_data or bool(self.envelope is not None and self.envelope.mail_from)

    def disconnect(self) -> None:
        """Close the connection (its reply already sent)."""
        self.write_held_replies()
        if self.transport is not None:
            self.transport.close()

    # --- every command: draining and the junk budget --------------------------------------------

    async def run_command(self, name: str, method: Command, arg: Any) -> None:
        if self._policy.sessions.draining and name != "QUIT":
            if not (name in _IN_TRANSACTION_COMMANDS and self.in_transaction):
                await self.close_for_shutdown()
                return
        if name in JUNK_COMMANDS and not self._junk.spend():
            await self._close_for_junk()
            return
        if name != "DATA":
            await method(arg)
            return
        self._in_data = True
        try:
            await method(arg)
        finally:
            self._in_data = False

    def message_relayed(self) -> None:
        self._junk.refill()

    async def close_for_shutdown(self) -> None:
        """Answer 421 and end the session (as QUIT does)."""
        await self.push(SHUTDOWN_REPLY)
        self.end()

    async def _close_for_junk(self) -> None:
        """Answer 421 and end a session that spent its budget of junk commands."""
        log.warning("closing session from %s: too many commands without a message", self.peer_host)
        self._policy.metrics.junk_disconnects.inc()
        await super().push(JUNK_REPLY)
        self.disconnect()

    def abort_idle(self) -> None:
        """Send an unsolicited 421 and close (after the grace period; RFC 5321 section 3.8)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            cast(asyncio.WriteTransport, transport).write(SHUTDOWN_REPLY.encode() + b"\r\n")
        except (RuntimeError, ConnectionError):
            pass  # the peer is gone: nothing to tell it
        transport.close()

    # --- replies, STARTTLS and errors -----------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Send a reply line; control characters and lone surrogates are replaced by `?`.

        aiosmtpd echoes client text back (`500 Error: command "..." not recognized`,
        `502 Could not VRFY ...`), so a client could otherwise make the relay send a bare CR or
        a NUL inside a reply, or fail encoding it (an internal error, answered 451).
        """
        if isinstance(status, str):
            await super().push(_UNSENDABLE.sub("?", status))
        else:
            await super().push(status)
            status = status.decode("ascii", "replace")
        if is_junk_reply(status) and not self._junk.spend():
            await self._close_for_junk()

    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd answers 220 to a second STARTTLS and then fails the nested handshake inside
        # asyncio; RFC 3207 forbids a second TLS negotiation, so refuse it.
        if self.encrypted:
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client failed its own TLS handshake (garbage after 220, wrong protocol): not
            # a relay error, so no traceback at ERROR and no unexpected-error count, which any
            # client could otherwise inflate. aiosmtpd closes the connection and sends nothing.
            log.info("TLS handshake with %s failed: %r", self.peer_host, error.__cause__)
            return "421 4.7.0 TLS handshake failed"
        status: str = await super().handle_exception(error)
        return status

    # --- paths ----------------------------------------------------------------------------------

    def parse_path(self, arg: str) -> ParsedPath:
        return self._paths(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg is not None and self.envelope is not None and self.envelope.mail_from:
            path = strip_keyword("TO:", arg)
            if path is not None and self.parse_path(path)[0] is None:
                await self.push(f"501 5.1.3 Bad recipient address syntax: {path_problem(path)}")
                return
        await super().smtp_RCPT(arg)

    # --- AUTH -----------------------------------------------------------------------------------

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if await self._policy.auth.refuse_banned(self):
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._policy.auth.plain(self, args)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._policy.auth.login(self, args)
