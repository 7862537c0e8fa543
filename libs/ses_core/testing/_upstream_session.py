"""One SMTP session of the SES stand-in: aiosmtpd's protocol with the fault script applied.

`UpstreamSession` acts on the faults that need more than a handler hook (CONNECT, EHLO,
STARTTLS, AUTH, DATA and BODY); `_Handler` acts on MAIL, RCPT and the end of DATA and records
what was accepted. Every session of one upstream shares an `UpstreamState`: the fault script,
the credentials, the counters and the received messages.

Two aiosmtpd pitfalls are handled here (see docs/ses-facts.md): with implicit TLS aiosmtpd does
not count the session as encrypted and so neither offers nor accepts AUTH; the session marks an
implicit-TLS session as secure instead of dropping the TLS requirement. And aiosmtpd's default
exception answer is a permanent `500` that leaks internals; the stand-in answers `451`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from email.parser import BytesHeaderParser
from typing import Any

import attrs
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from ses_core.testing._upstream_faults import SES_BAD_CREDENTIALS, Action, Fault, FaultScript, Stage

log = logging.getLogger(__name__)

#: How long a hung-up session waits for its own cancellation (it comes on the next loop turn).
_HANG_UP_GRACE = 5.0


@attrs.frozen
class ReceivedMessage:
    """A message the upstream accepted.

    Attributes:
        sender: MAIL FROM address.
        recipients: RCPT TO addresses accepted.
        data: the message as received (dot-stuffing removed, CRLF line ends as sent).
        mail_options: MAIL FROM parameters (upper-cased), e.g. ("SMTPUTF8", "BODY=8BITMIME").
        message_id: the Message-ID header, if any.
        username: the AUTH login of the session, if any.
        encrypted: whether the session was under TLS.
        received_at: when the message was accepted (`time.monotonic()`).
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    message_id: str | None
    username: str | None
    encrypted: bool
    received_at: float = 0.0

    @classmethod
    def from_envelope(
        cls, envelope: Envelope, session: Session, encrypted: bool
    ) -> ReceivedMessage:
        """Build from an aiosmtpd envelope after DATA."""
        data = envelope.original_content or b""
        headers = BytesHeaderParser().parsebytes(data)
        message_id = headers.get("Message-ID")
        auth_data: Any = session.auth_data
        login = auth_data.login if isinstance(auth_data, LoginPassword) else None
        return cls(
            sender=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            data=data,
            mail_options=tuple(envelope.mail_options),
            message_id=None if message_id is None else str(message_id).strip(),
            username=login.decode() if login is not None else None,
            encrypted=encrypted,
            received_at=time.monotonic(),
        )


@attrs.define(eq=False)
class UpstreamState:
    """What the sessions of one upstream share (see `SmtpUpstream` for the counters)."""

    faults: FaultScript
    credentials: tuple[str, str] | None
    record: bool
    messages: list[ReceivedMessage] = attrs.field(factory=list)
    sessions: set[UpstreamSession] = attrs.field(factory=set)
    accepted: int = 0
    connections_opened: int = 0
    auth_attempts: int = 0
    auth_in_clear: int = 0
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    def authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """aiosmtpd's authenticator: check the credentials, or answer as the AUTH fault says.

        A fault's delay and drop are acted on by the session afterwards (`_scripted_auth`).
        """
        assert isinstance(server, UpstreamSession)
        self.auth_attempts += 1
        if not server.encrypted:
            self.auth_in_clear += 1
        fault = self.faults.take(Stage.AUTH)
        server.pending_auth_fault = fault
        if fault is not None and fault.drops:
            return AuthResult(success=False, handled=True)  # handled: aiosmtpd sends no reply
        if fault is not None and fault.action is Action.REPLY:
            return AuthResult(success=False, handled=False, message=fault.line)
        if self.credentials is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username, password = self.credentials
        if auth_data.login == username.encode() and auth_data.password == password.encode():
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False, message="535 " + SES_BAD_CREDENTIALS[1])

    def accept(self, envelope: Envelope, session: Session, encrypted: bool) -> str:
        """Count (and record) an accepted message; the 250 reply with an SES-like message id."""
        number = next(self._ids)
        self.accepted += 1
        if self.record:
            self.messages.append(ReceivedMessage.from_envelope(envelope, session, encrypted))
        return f"250 Ok 0100018c{number:08x}-test-000000"


class _ImplicitTls:
    """Stands for the TLS layer of an implicit-TLS session (aiosmtpd only checks it is set)."""


class _QuietSession(Session):
    """aiosmtpd logs a deprecation warning each time it sets the legacy `login_data` itself."""

    login_data: Any = None


class UpstreamSession(SMTP):
    """aiosmtpd's SMTP protocol with the fault hooks that need more than a handler hook."""

    def __init__(self, state: UpstreamState, *, pipelining: bool, **kwargs: Any) -> None:
        handler = _PipeliningHandler(state) if pipelining else _Handler(state)
        super().__init__(handler, authenticator=state.authenticate, **kwargs)
        self.state = state
        # Set by the (synchronous) authenticator, acted on by `_scripted_auth`. The name must not
        # start with "auth_": aiosmtpd takes every such attribute for an AUTH mechanism.
        self.pending_auth_fault: Fault | None = None

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_upgrade = self._original_transport is not None
        super().connection_made(transport)
        if not starttls_upgrade:
            self.state.sessions.add(self)
            self.state.connections_opened += 1
            if transport.get_extra_info("sslcontext") is not None:
                # Implicit TLS: aiosmtpd only counts STARTTLS as TLS (issues #274/#281) and
                # would refuse AUTH; this session is encrypted, so say so.
                self._tls_protocol = _ImplicitTls()  # type: ignore[assignment]

    def connection_lost(self, error: Exception | None) -> None:
        self.state.sessions.discard(self)
        super().connection_lost(error)

    @property
    def encrypted(self) -> bool:
        """Whether this session runs under TLS (STARTTLS or implicit)."""
        return self._tls_protocol is not None

    def abort(self) -> None:
        """Close the connection at once, without a reply."""
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    async def apply(self, stage: Stage, recipient: str | None = None) -> Fault | None:
        """The fault to act on at `stage` after its delay; None to behave normally."""
        fault = self.state.faults.take(stage, recipient)
        if fault is None:
            return None
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        return None if fault.action is Action.STALL else fault

    async def hang_up(self) -> None:
        """Drop the connection without a reply; the session task is cancelled meanwhile."""
        self.abort()
        await asyncio.sleep(_HANG_UP_GRACE)

    async def _handle_client(self) -> None:
        fault = await self.apply(Stage.CONNECT)
        if fault is not None:
            if not fault.drops:
                await self.push(fault.line)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        fault = await self.apply(Stage.EHLO)
        if fault is None:
            await super().smtp_EHLO(hostname)
        elif fault.drops:
            await self.hang_up()
        else:
            await self.push(fault.line)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._scripted_auth(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._scripted_auth(await super().auth_LOGIN(_, args))

    async def _scripted_auth(self, result: AuthResult) -> AuthResult:
        """Act on the AUTH fault the authenticator took: wait its delay, then drop or answer.

        aiosmtpd calls the authenticator synchronously, between reading the credentials and
        sending the reply; it can only choose the reply. Waiting and hanging up happen here,
        after it has returned and before aiosmtpd replies, so a drop sends nothing at all.
        """
        fault, self.pending_auth_fault = self.pending_auth_fault, None
        if fault is None:
            return result
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.drops:
            await self.hang_up()
        return result

    async def smtp_STARTTLS(self, arg: str) -> None:
        fault = self.state.faults.take(Stage.STARTTLS)
        if fault is None:
            await super().smtp_STARTTLS(arg)
            return
        await self.push("220 Ready to start TLS")
        if self.transport is not None:
            self.transport.write(b"this is not a TLS handshake\r\n")  # type: ignore[attr-defined]
        await self.hang_up()

    async def smtp_DATA(self, arg: str) -> None:
        fault = await self.apply(Stage.DATA)
        if fault is not None:
            if fault.drops:
                await self.hang_up()
            else:
                await self.push(fault.line)
            return
        if await self.apply(Stage.BODY) is not None:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            await self.hang_up()
            return
        await super().smtp_DATA(arg)


class _Handler:
    """aiosmtpd handler hooks: faults at MAIL/RCPT/end of DATA, and recording."""

    def __init__(self, state: UpstreamState) -> None:
        self.state = state

    async def handle_MAIL(
        self,
        server: UpstreamSession,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        fault = await server.apply(Stage.MAIL)
        if fault is not None:
            if fault.drops:
                await server.hang_up()
            return fault.line
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 Ok"

    async def handle_RCPT(
        self,
        server: UpstreamSession,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = await server.apply(Stage.RCPT, address)
        if fault is not None:
            if fault.drops:
                await server.hang_up()
            return fault.line
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 Ok"

    async def handle_DATA(
        self, server: UpstreamSession, session: Session, envelope: Envelope
    ) -> str:
        fault = await server.apply(Stage.END_OF_DATA)
        if fault is not None and not fault.drops:
            return fault.line
        reply = self.state.accept(envelope, session, server.encrypted)
        if fault is not None:
            await server.hang_up()
        return reply

    async def handle_exception(self, error: Exception) -> str:
        # The default answer is a permanent 500 echoing the exception; a stand-in for SES must
        # not turn its own bug into a bounce.
        log.error("test upstream failed", exc_info=error)
        return "451 4.3.0 Temporary service failure"


class _PipeliningHandler(_Handler):
    """Also advertises PIPELINING, as SES does (aiosmtpd reads pipelined commands correctly but
    does not advertise the extension itself)."""

    async def handle_EHLO(
        self,
        server: UpstreamSession,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd's "new" EHLO hook (it has `responses`): it replaces the reply lines.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]
