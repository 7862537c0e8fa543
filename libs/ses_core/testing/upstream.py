"""A real SMTP server on 127.0.0.1 that behaves like the SES SMTP interface, for tests.

`SmtpUpstream` is built on aiosmtpd and speaks the same protocol as SES: STARTTLS (or implicit
TLS), AUTH PLAIN/LOGIN required before MAIL, SMTPUTF8 and 8BITMIME offered, replies in SES's
wording. It records every accepted message (with its Message-ID), and a small fault script makes
it answer like SES on a bad day: throttling, daily quota, auth hiccups, 421, permanent refusals,
per-recipient refusals, or a connection dropped at any step (EHLO and AUTH included), including
the ambiguous moment after the final '.' (the message is kept, the reply never sent). Faults can be
changed while it runs:

    async with SmtpUpstream(certificates.server_context()) as upstream:
        upstream.faults.set(Fault.reply(Stage.MAIL, *SES_THROTTLED), times=2)
        upstream.faults.set(Fault.drop(Stage.END_OF_DATA))
        ...
        assert upstream.messages[0].message_id == "<1@example.com>"

With `record=False` it is a counting sink for benchmarks; with `eightbitmime=False` it stands for
a 7-bit-only server (see `SmtpUpstream`).

EHLO faults count every EHLO command: a STARTTLS session says EHLO twice (before STARTTLS, and
again after it, as RFC 3207 requires), an implicit-TLS session once. So with STARTTLS `times=1`
strikes the next EHLO, the clear-text one of the next session to open. To strike the EHLO under
TLS, let the first one pass with a zero-second stall set before the fault (earlier rules win):

    upstream.faults.set(Fault.stall(Stage.EHLO, 0.0))  # the clear-text EHLO, unchanged
    upstream.faults.set(Fault.drop(Stage.EHLO))  # the EHLO under TLS

Two aiosmtpd pitfalls are handled here (see ses-facts.md): with implicit TLS aiosmtpd does not
count the session as encrypted and so neither offers nor accepts AUTH; the subclass marks an
implicit-TLS session as secure instead of dropping the TLS requirement. And aiosmtpd's default
exception answer is a permanent `500` that leaks internals; this server answers `451`.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import ssl
import threading
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from typing import Any

import attrs
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

log = logging.getLogger(__name__)

SES_THROTTLED = (454, "Throttling failure: Maximum sending rate exceeded.")
SES_DAILY_QUOTA = (454, "Throttling failure: Daily message quota exceeded.")
SES_TEMPORARY_AUTH = (454, "Temporary authentication failure")
SES_TEMPORARY_FAILURE = (451, "Temporary service failure")
SES_TEMPORARY_FAILURE_454 = (454, "Temporary service failure")
SES_MAX_MESSAGES = (421, "Maximum message count per session reached")
SES_TOO_MANY_CONNECTIONS = (421, "Too many concurrent SMTP connections")
SES_BAD_CREDENTIALS = (535, "Authentication Credentials Invalid")
SES_TOO_LONG = (552, "Message is too long")
SES_NOT_VERIFIED = (554, "Message rejected: Email address is not verified.")
SES_INVALID_ADDRESS = (553, "5.1.3 Invalid email address")
SES_ACCESS_DENIED = (
    554,
    "Access denied: User `arn:aws:iam::123456789012:user/ses-smtp-user' is not authorized to "
    "perform `ses:SendRawEmail' on resource "
    "`arn:aws:ses:eu-west-1:123456789012:identity/example.com'",
)

#: SES accepts at most 40 MB after encoding.
SES_MAX_SIZE = 40 * 1024 * 1024
#: How long a hung-up session waits for its own cancellation (it comes on the next loop turn).
_HANG_UP_GRACE = 5.0


class Stage(enum.Enum):
    """Where in a session a fault strikes."""

    CONNECT = "connect"  # instead of the 220 greeting
    EHLO = "ehlo"  # instead of the EHLO reply; every EHLO counts (see the module docstring)
    STARTTLS = "starttls"  # the TLS handshake fails (any fault)
    AUTH = "auth"  # instead of 235 (or 535), once the credentials have arrived
    MAIL = "mail"  # instead of the MAIL reply ("drop before MAIL" answers nothing)
    RCPT = "rcpt"  # instead of a RCPT reply, optionally for one recipient only
    DATA = "data"  # instead of 354 (the body has not been sent)
    BODY = "body"  # while the body arrives (drop only)
    END_OF_DATA = "end_of_data"  # after the final '.'; a drop keeps the message first


class TlsMode(enum.Enum):
    """How the upstream offers TLS."""

    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"  # plain text, AUTH offered in clear: only to prove clients refuse it


class Action(enum.Enum):
    """What a fault does."""

    REPLY = "reply"  # answer `code text` instead of the normal reply
    DROP = "drop"  # close the connection without replying
    STALL = "stall"  # wait `delay` seconds, then behave normally


@attrs.frozen
class Fault:
    """One scripted misbehaviour at one stage of a session.

    Attributes:
        stage: where it strikes.
        action: reply, drop or stall.
        code: the reply code (REPLY only).
        text: the reply text (REPLY only).
        recipient: for RCPT faults, the only recipient it applies to (None: any).
        delay: seconds to wait before acting (ignored at STARTTLS).
    """

    stage: Stage
    action: Action
    code: int = 0
    text: str = ""
    recipient: str | None = None
    delay: float = 0.0

    @classmethod
    def reply(
        cls, stage: Stage, code: int, text: str, *, recipient: str | None = None, delay: float = 0.0
    ) -> Fault:
        """Answer `code text` at `stage`."""
        return cls(stage, Action.REPLY, code, text, recipient, delay)

    @classmethod
    def drop(cls, stage: Stage, *, recipient: str | None = None, delay: float = 0.0) -> Fault:
        """Close the connection at `stage` without replying."""
        return cls(stage, Action.DROP, recipient=recipient, delay=delay)

    @classmethod
    def stall(cls, stage: Stage, seconds: float, *, recipient: str | None = None) -> Fault:
        """Wait `seconds` at `stage`, then go on normally (a slow upstream)."""
        return cls(stage, Action.STALL, recipient=recipient, delay=seconds)

    @classmethod
    def tls_failure(cls) -> Fault:
        """Accept STARTTLS, then fail the handshake."""
        return cls(Stage.STARTTLS, Action.DROP)

    @property
    def drops(self) -> bool:
        """Whether the fault drops the connection."""
        return self.action is Action.DROP

    @property
    def line(self) -> str:
        """The reply line to send."""
        return f"{self.code} {self.text}"

    def matches(self, stage: Stage, recipient: str | None) -> bool:
        """Whether the fault applies at `stage` (for `recipient`, at RCPT)."""
        if stage is not self.stage:
            return False
        return self.recipient is None or (
            recipient is not None and recipient.lower() == self.recipient.lower()
        )


@attrs.define
class _Rule:
    fault: Fault
    remaining: int | None
    expires_at: float | None


class FaultScript:
    """The faults an upstream applies, changeable while it runs (thread-safe).

    `set(fault, times=1)` applies a fault to the next matching event; `times=None` keeps it until
    `clear()` or until `duration` seconds have passed. Earlier rules win.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.applied: list[Fault] = []

    def set(self, fault: Fault, *, times: int | None = 1, duration: float | None = None) -> None:
        """Apply `fault` to the next `times` matching events (None: all) for `duration` seconds."""
        if times is not None and times < 1:
            message = f"times must be at least 1 or None, got {times}"
            raise ValueError(message)
        expires_at = None if duration is None else self._clock() + duration
        with self._lock:
            self._rules.append(_Rule(fault, times, expires_at))

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._rules.clear()

    def take(self, stage: Stage, recipient: str | None = None) -> Fault | None:
        """The fault to apply now at `stage`, if any, counting it."""
        now = self._clock()
        with self._lock:
            self._rules = [r for r in self._rules if r.expires_at is None or r.expires_at > now]
            for rule in self._rules:
                if rule.fault.matches(stage, recipient):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._rules.remove(rule)
                    self.applied.append(rule.fault)
                    return rule.fault
        return None


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
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    message_id: str | None
    username: str | None
    encrypted: bool

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
        )


class _ImplicitTls:
    """Stands for the TLS layer of an implicit-TLS session (aiosmtpd only checks it is set)."""


class _QuietSession(Session):
    """aiosmtpd logs a deprecation warning each time it sets the legacy `login_data` itself."""

    login_data: Any = None


class _UpstreamSession(SMTP):
    """aiosmtpd's SMTP protocol with the fault hooks that need more than a handler hook."""

    def __init__(self, upstream: SmtpUpstream, **kwargs: Any) -> None:
        super().__init__(_Handler(upstream), **kwargs)
        self.upstream = upstream
        # Set by the (synchronous) authenticator, acted on by `_scripted_auth`. The name must not
        # start with "auth_": aiosmtpd takes every such attribute for an AUTH mechanism.
        self._pending_auth_fault: Fault | None = None

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_upgrade = self._original_transport is not None
        super().connection_made(transport)
        if not starttls_upgrade:
            self.upstream._sessions.add(self)
            self.upstream.connections_opened += 1
            if transport.get_extra_info("sslcontext") is not None:
                # Implicit TLS: aiosmtpd only counts STARTTLS as TLS (issues #274/#281) and
                # would refuse AUTH; this session is encrypted, so say so.
                self._tls_protocol = _ImplicitTls()  # type: ignore[assignment]

    def connection_lost(self, error: Exception | None) -> None:
        self.upstream._sessions.discard(self)
        super().connection_lost(error)

    @property
    def encrypted(self) -> bool:
        """Whether this session runs under TLS (STARTTLS or implicit)."""
        return self._tls_protocol is not None

    async def apply(self, stage: Stage, recipient: str | None = None) -> Fault | None:
        """The fault to act on at `stage` after its delay; None to behave normally."""
        fault = self.upstream.faults.take(stage, recipient)
        if fault is None:
            return None
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        return None if fault.action is Action.STALL else fault

    async def hang_up(self) -> None:
        """Drop the connection without a reply; the session task is cancelled meanwhile."""
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]
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
        fault, self._pending_auth_fault = self._pending_auth_fault, None
        if fault is None:
            return result
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.drops:
            await self.hang_up()
        return result

    async def smtp_STARTTLS(self, arg: str) -> None:
        fault = self.upstream.faults.take(Stage.STARTTLS)
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
    """aiosmtpd handler hooks: faults at MAIL/RCPT/end of DATA, AUTH, recording."""

    def __init__(self, upstream: SmtpUpstream) -> None:
        self.upstream = upstream

    async def handle_MAIL(
        self,
        server: _UpstreamSession,
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
        server: _UpstreamSession,
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
        self, server: _UpstreamSession, session: Session, envelope: Envelope
    ) -> str:
        fault = await server.apply(Stage.END_OF_DATA)
        if fault is not None and not fault.drops:
            return fault.line
        reply = self.upstream._accept(envelope, session, server.encrypted)
        if fault is not None:
            await server.hang_up()
        return reply

    async def handle_exception(self, error: Exception) -> str:
        # The default answer is a permanent 500 echoing the exception; a stand-in for SES must
        # not turn its own bug into a bounce.
        log.error("test upstream failed", exc_info=error)
        return "451 4.3.0 Temporary service failure"


async def _advertise_pipelining(
    server: Any, session: Session, envelope: Envelope, hostname: str, lines: list[str]
) -> list[str]:
    """aiosmtpd EHLO hook (its "new" signature) adding PIPELINING before the last line."""
    session.host_name = hostname
    return [*lines[:-1], "250-PIPELINING", lines[-1]]


class SmtpUpstream:
    """An SES stand-in listening on 127.0.0.1 (an async context manager).

    Attributes:
        faults: the fault script, changeable while running.
        messages: accepted messages, in order (empty when `record` is False).
        accepted: number of messages accepted.
        connections_opened: TCP connections accepted so far.
        auth_attempts: AUTH exchanges seen (any outcome).
        auth_in_clear: AUTH exchanges seen on an unencrypted session (must stay 0).

    With `eightbitmime=False` the server does not offer 8BITMIME and answers a MAIL with
    `BODY=8BITMIME` with 555, as a 7-bit-only server does (SES offers 8BITMIME).
    With `pipelining=True` it advertises PIPELINING, as SES does: aiosmtpd reads pipelined
    commands correctly but does not advertise the extension itself.
    """

    def __init__(
        self,
        tls_context: ssl.SSLContext | None,
        *,
        mode: TlsMode = TlsMode.STARTTLS,
        credentials: tuple[str, str] | None = ("AKIATESTUSER", "test-smtp-password"),
        port: int = 0,
        hostname: str = "email-smtp.test.local",
        smtputf8: bool = True,
        record: bool = True,
        data_size_limit: int = SES_MAX_SIZE,
        eightbitmime: bool = True,
        pipelining: bool = False,
    ) -> None:
        if mode is not TlsMode.NONE and tls_context is None:
            message = f"TLS mode {mode.value} needs a server tls_context"
            raise ValueError(message)
        self.mode = mode
        self.faults = FaultScript()
        self.messages: list[ReceivedMessage] = []
        self.accepted = 0
        self.connections_opened = 0
        self.auth_attempts = 0
        self.auth_in_clear = 0
        self._tls_context = tls_context
        self._credentials = credentials
        self._requested_port = port
        self._hostname = hostname
        self._smtputf8 = smtputf8
        self._record = record
        self._data_size_limit = data_size_limit
        self._eightbitmime = eightbitmime
        self._pipelining = pipelining
        self._server: asyncio.Server | None = None
        self._sessions: set[_UpstreamSession] = set()
        self._ids = itertools.count(1)

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after `start`)."""
        if self._server is None:
            message = "upstream not started"
            raise RuntimeError(message)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def open_connections(self) -> int:
        """Sessions currently connected."""
        return len(self._sessions)

    async def start(self) -> None:
        """Start listening on 127.0.0.1 (again on the same port after a `stop`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_session,
            host=self.host,
            port=self._requested_port,
            ssl=self._tls_context if self.mode is TlsMode.IMPLICIT else None,
        )
        # A restart (stop, then start) listens on the same port, so clients keep their settings.
        self._requested_port = self.port
        log.info("test upstream listening on %s:%d (%s)", self.host, self.port, self.mode.value)

    async def stop(self) -> None:
        """Stop listening and drop every session."""
        if self._server is None:
            return
        self._server.close()
        self.drop_all_connections()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> SmtpUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def drop_all_connections(self) -> None:
        """Abort every open session, as a load balancer recycling hosts would."""
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.abort()  # type: ignore[attr-defined]

    def _make_session(self) -> _UpstreamSession:
        plain = self.mode is TlsMode.NONE
        session = _UpstreamSession(
            self,
            hostname=self._hostname,
            ident="SES stand-in",
            tls_context=self._tls_context if self.mode is TlsMode.STARTTLS else None,
            require_starttls=self.mode is TlsMode.STARTTLS,
            enable_SMTPUTF8=self._smtputf8,
            # aiosmtpd's decode_data mode is its 7-bit server: no 8BITMIME in EHLO, and a MAIL
            # with BODY=8BITMIME answered 555. The raw octets are still recorded as received.
            decode_data=not self._eightbitmime,
            data_size_limit=self._data_size_limit,
            auth_required=self._credentials is not None and not plain,
            auth_require_tls=not plain,
            authenticator=self._authenticate,
            loop=asyncio.get_running_loop(),
        )
        if self._pipelining:
            session._handle_hooks["EHLO"] = _advertise_pipelining
            session._ehlo_hook_ver = "new"
        return session

    def _authenticate(
        self,
        server: _UpstreamSession,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        self.auth_attempts += 1
        if not server.encrypted:
            self.auth_in_clear += 1
        fault = self.faults.take(Stage.AUTH)
        # The session waits out the fault's delay and drops the connection (`_scripted_auth`).
        server._pending_auth_fault = fault
        if fault is not None and fault.drops:
            return AuthResult(success=False, handled=True)  # handled: aiosmtpd sends no reply
        if fault is not None and fault.action is Action.REPLY:
            return AuthResult(success=False, handled=False, message=fault.line)
        if self._credentials is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username, password = self._credentials
        if auth_data.login == username.encode() and auth_data.password == password.encode():
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False, message="535 " + SES_BAD_CREDENTIALS[1])

    def _accept(self, envelope: Envelope, session: Session, encrypted: bool) -> str:
        number = next(self._ids)
        self.accepted += 1
        if self._record:
            self.messages.append(ReceivedMessage.from_envelope(envelope, session, encrypted))
        return f"250 Ok 0100018c{number:08x}-test-000000"


class ThreadedUpstream:
    """Runs an `SmtpUpstream` on its own event loop in a daemon thread (a context manager).

    For tests and load generators whose own loop should not carry the server's work; the fault
    script is thread-safe, so `threaded.upstream.faults.set(...)` works from any thread.
    """

    def __init__(self, upstream: SmtpUpstream, *, start_timeout: float = 10.0) -> None:
        self.upstream = upstream
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> SmtpUpstream:
        self._thread = threading.Thread(target=self._run, name="smtp-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            message = "test upstream did not start in time"
            raise TimeoutError(message)
        if self._error is not None:
            raise self._error
        return self.upstream

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(self._start_timeout)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            try:
                await self.upstream.start()
            except BaseException as exc:  # reported to the starting thread, which re-raises
                self._error = exc
                self._ready.set()
                raise
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                await self.upstream.stop()

        asyncio.run(serve())
