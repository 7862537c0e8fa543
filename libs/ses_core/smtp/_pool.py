"""A pool of persistent, authenticated TLS connections to the SES SMTP endpoint.

Opening a connection to SES costs a TCP handshake, a TLS handshake and an AUTH exchange; the
original service paid that for every message. The pool keeps up to `pool_size` sessions open and
lends each to one sender at a time.

Connection policy:
- TLS is never optional: STARTTLS on 25/587/2587 (a server that does not offer it is refused
  before any credentials are sent), implicit TLS on 465/2465; TLS 1.2 minimum; the certificate and
  the host name are always verified (`ca_file` only replaces the trusted CAs, for tests).
- A connection is recycled after `max_messages_per_connection` messages or `max_connection_age`
  seconds (SES sits behind recycled load-balancer hosts and answers `421 ... Maximum message count
  per session` otherwise), and whenever the caller saw a 421 or a broken session.
- After a failed open, further opens wait an exponential backoff (bounded by
  `reconnect_backoff_max`); a caller whose budget is shorter than the wait fails at once.
- Cancel-safe: a lender that is cancelled hands its connection back as broken, so it is closed,
  never reused mid-transaction, and its slot is freed.
- Every session's protocol is a `PipeliningProtocol`, so transactions can pipeline their
  commands (RFC 2920) when the server offers it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiosmtplib
import attrs
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from ses_core.smtp.results import ReplyClass, classify_reply

if TYPE_CHECKING:
    from ses_core.smtp.client import SmtpSettings

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


@attrs.frozen
class PoolStats:
    """A snapshot of the pool's counters.

    Attributes:
        size: connections open now (idle + in use).
        idle: open connections waiting in the pool.
        opened: connections opened since start.
        recycled: connections closed on purpose (max messages, max age, 421).
        failures: failed opens plus connections found broken.
        in_use: connections lent out now.
        ambiguous: sends whose connection was lost after the final '.' (possible duplicates).
    """

    size: int
    idle: int
    opened: int
    recycled: int
    failures: int
    in_use: int = 0
    ambiguous: int = 0


class ConnectFailure(Exception):
    """Opening a session failed; carries a reply-like code/text and what it means.

    Internal to the client: `SesSmtpClient` turns it into DEFERRED results, `check()` into
    `UpstreamUnavailable`.
    """

    def __init__(self, code: int, text: str, reply_class: ReplyClass) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.reply_class = reply_class


@attrs.define(eq=False)
class PooledConnection:
    """One authenticated session and its usage counters."""

    smtp: aiosmtplib.SMTP
    opened_at: float
    number: int
    messages: int = 0
    reused: bool = False

    @property
    def alive(self) -> bool:
        """Whether the transport is still open (a closed peer is noticed here)."""
        return self.smtp.is_connected


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, made safe for RFC 2920 command pipelining.

    aiosmtplib expects one reply per command written: it parses one reply per `data_received`
    and drops bytes that arrive while no reply is awaited or the previous one is not collected
    yet. With several commands in flight, replies arrive together or back to back and would be
    lost. While `expect(n)` is in force this class keeps every byte and hands buffered replies
    out one by one, in order; otherwise it behaves exactly as aiosmtplib's.
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


#: Bound on unread pipelined replies (50 RCPT replies of a few hundred bytes fit easily).
_MAX_PIPELINED_BYTES = 256 * 1024


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


def build_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context: TLS 1.2+, certificate and host-name verification always on."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class ConnectionPool:
    """Lends authenticated SES sessions, at most `settings.pool_size` open at once."""

    def __init__(self, settings: SmtpSettings, *, clock: Clock, sleep: Sleep) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._tls_context = build_tls_context(settings.ca_file)
        self._local_hostname = settings.local_hostname or socket.gethostname() or "localhost"
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[PooledConnection] = []
        self._in_use: set[PooledConnection] = set()
        self._opened = 0
        self._recycled = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._next_open_at = 0.0
        self._last_failure: ConnectFailure | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    def stats(self, ambiguous: int = 0) -> PoolStats:
        """Current counters."""
        return PoolStats(
            size=len(self._idle) + len(self._in_use),
            idle=len(self._idle),
            opened=self._opened,
            recycled=self._recycled,
            failures=self._failures,
            in_use=len(self._in_use),
            ambiguous=ambiguous,
        )

    def pending_failure(self) -> ConnectFailure | None:
        """The last failure to open a session while the pool waits out its backoff with no idle
        session to lend: a health check reports it at once instead of sleeping until the next
        try (a probe that outlasts its own timeout says nothing about why)."""
        if self._idle or self._last_failure is None or self._next_open_at <= self._clock():
            return None
        return self._last_failure

    async def acquire(self, budget: float | None) -> PooledConnection:
        """Lend a session, opening one if none is idle; wait at most `budget` seconds for a slot.

        Raises `ConnectFailure` when no session can be had within the budget.
        """
        if self._closed:
            raise ConnectFailure(421, "4.4.0 client closed", ReplyClass.CONNECTION)
        try:
            if self._slots.locked():
                async with asyncio.timeout(budget):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # free slot: no timer to arm and cancel
        except TimeoutError:
            text = "4.4.5 all pooled upstream connections busy until the deadline"
            raise ConnectFailure(451, text, ReplyClass.TRANSIENT) from None
        try:
            connection = self._take_idle()
            if connection is None:
                connection = await self._open(budget)
            self._in_use.add(connection)
            return connection
        except BaseException:
            # Includes cancellation: the slot must come back whatever happened.
            self._slots.release()
            raise

    def release(
        self, connection: PooledConnection, *, reusable: bool, recycle: bool = False
    ) -> None:
        """Take a session back; close it if it is broken, worn out, or `recycle` is asked."""
        self._in_use.discard(connection)
        self._slots.release()
        worn_out = self._worn_out(connection)
        if self._closed or not reusable or not connection.alive or recycle or worn_out:
            if recycle or worn_out:
                self._recycled += 1
                connection.smtp.close()
            else:
                if not reusable or not connection.alive:
                    self._failures += 1
                abort_session(connection.smtp)
            return
        connection.reused = True
        self._idle.append(connection)

    async def aclose(self) -> None:
        """Close idle sessions (QUIT, bounded) and refuse new loans; lent ones close on return."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _quit_quietly(connection.smtp)

    def _worn_out(self, connection: PooledConnection) -> bool:
        age = self._clock() - connection.opened_at
        return (
            connection.messages >= self._settings.max_messages_per_connection
            or age >= self._settings.max_connection_age
        )

    def _take_idle(self) -> PooledConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.alive and not self._worn_out(connection):
                return connection
            if connection.alive:
                self._recycled += 1
            else:
                self._failures += 1
            connection.smtp.close()
        return None

    async def _open(self, budget: float | None) -> PooledConnection:
        wait = self._next_open_at - self._clock()
        if wait > 0:
            if budget is not None and wait > budget and self._last_failure is not None:
                raise self._last_failure
            await self._sleep(wait)
        try:
            smtp = await self._connect()
        except ConnectFailure as failure:
            self._record_failure(failure)
            raise
        self._consecutive_failures = 0
        self._next_open_at = 0.0
        self._last_failure = None
        self._opened += 1
        return PooledConnection(smtp=smtp, opened_at=self._clock(), number=self._opened)

    def _record_failure(self, failure: ConnectFailure) -> None:
        settings = self._settings
        self._failures += 1
        self._consecutive_failures += 1
        backoff = min(
            settings.reconnect_backoff * 2 ** (self._consecutive_failures - 1),
            settings.reconnect_backoff_max,
        )
        self._next_open_at = self._clock() + backoff
        self._last_failure = failure
        level = logging.ERROR if failure.reply_class is ReplyClass.AUTH else logging.WARNING
        log.log(
            level,
            "cannot open SMTP session to %s:%d (%s): %s %s; next try in %.2fs",
            settings.host,
            settings.port,
            failure.reply_class.value,
            failure.code,
            failure.text,
            backoff,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self._settings
        smtp = aiosmtplib.SMTP(
            local_hostname=self._local_hostname,
            timeout=settings.timeout,
            use_tls=settings.uses_implicit_tls,
            start_tls=False,
            tls_context=self._tls_context,
        )
        try:
            if settings.uses_implicit_tls:
                # aiosmtplib verifies the name it connects to; to verify `server_hostname` while
                # connecting to `host`, hand it a connected socket.
                sock = await _connect_socket(settings.host, settings.port, settings.timeout)
                await smtp.connect(hostname=settings.tls_server_name, sock=sock)
            else:
                await smtp.connect(hostname=settings.host, port=settings.port)
                await self._starttls(smtp)
            await self._login(smtp)
            enable_pipelining(smtp)
        except BaseException as exc:
            # Once handed over, the socket belongs to the transport, which closes it.
            smtp.close()
            if isinstance(exc, ConnectFailure | asyncio.CancelledError):
                raise
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                reply_class = _session_class(exc.code, exc.message)
                raise ConnectFailure(exc.code, exc.message, reply_class) from exc
            certificate_error = _find_cause(exc, ssl.SSLCertVerificationError)
            if certificate_error is not None:
                text = f"4.7.5 upstream certificate not trusted: {certificate_error.verify_message}"
                raise ConnectFailure(451, text, ReplyClass.AUTH) from exc
            if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                # OSError covers refused connections and ssl.SSLError (a failed handshake).
                text = f"4.4.1 cannot connect to upstream: {_describe(exc)}"
                raise ConnectFailure(451, text, ReplyClass.CONNECTION) from exc
            raise
        return smtp

    async def _starttls(self, smtp: aiosmtplib.SMTP) -> None:
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            text = "4.7.0 upstream does not offer STARTTLS; refusing to send credentials in clear"
            raise ConnectFailure(451, text, ReplyClass.AUTH)
        await smtp.starttls(server_hostname=self._settings.server_hostname)
        await smtp.ehlo()

    async def _login(self, smtp: aiosmtplib.SMTP) -> None:
        settings = self._settings
        if smtp.get_transport_info("sslcontext") is None:
            # Never reached with the settings allowed, but the credentials' safety must not
            # depend on the branches above staying right.
            raise ConnectFailure(451, "4.7.0 session not encrypted", ReplyClass.AUTH)
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
        if settings.username is None:
            return
        # One mechanism, one try: aiosmtplib's login() would try every advertised mechanism in
        # turn, a blind retry of a "454 Temporary authentication failure".
        if "plain" in smtp.server_auth_methods:
            await smtp.auth_plain(settings.username, settings.password or "")
        elif "login" in smtp.server_auth_methods:
            await smtp.auth_login(settings.username, settings.password or "")
        else:
            text = "4.7.0 upstream offers neither AUTH PLAIN nor AUTH LOGIN"
            raise ConnectFailure(451, text, ReplyClass.AUTH)


def abort_session(smtp: aiosmtplib.SMTP) -> None:
    """Drop a session at once, without flushing its buffer or a polite TLS close.

    A broken or interrupted session must not send what is still buffered: after a cancelled DATA
    that could be the final '.'.
    """
    transport = smtp.transport
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.abort()
    smtp.close()


def _session_class(code: int, text: str) -> ReplyClass:
    """Class of a reply received while opening a session: never PERMANENT for the message."""
    reply_class = classify_reply(code, text)
    if reply_class in (ReplyClass.PERMANENT, ReplyClass.SUCCESS, ReplyClass.TRANSIENT):
        return ReplyClass.CONNECTION
    return reply_class


def _find_cause(
    exc: BaseException, kind: type[ssl.SSLCertVerificationError]
) -> ssl.SSLCertVerificationError | None:
    """The first exception of `kind` in `exc`'s cause/context chain (aiosmtplib wraps them)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def _connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected non-blocking TCP socket to host:port (first address that answers)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last_error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, address)
        except (OSError, TimeoutError) as exc:
            sock.close()
            last_error = exc if isinstance(exc, OSError) else OSError(f"timed out: {address}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last_error or OSError(f"no address for {host}:{port}")


async def _quit_quietly(smtp: aiosmtplib.SMTP) -> None:
    """Say QUIT with a short timeout; the session is going away whatever the answer."""
    try:
        if smtp.is_connected:
            await smtp.quit(timeout=2.0)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        log.debug("QUIT failed while closing: %s", _describe(exc))
    finally:
        smtp.close()
