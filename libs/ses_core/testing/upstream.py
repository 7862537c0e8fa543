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
a 7-bit-only server (see `SmtpUpstream`). `ThreadedUpstream` runs one on its own thread.

This module is the front door of the stand-in: the fault script lives in `_upstream_faults`, one
SMTP session in `_upstream_session`; their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import threading

from ses_core.testing._upstream_faults import (
    SES_ACCESS_DENIED,
    SES_BAD_CREDENTIALS,
    SES_DAILY_QUOTA,
    SES_INVALID_ADDRESS,
    SES_MAX_MESSAGES,
    SES_MAX_SIZE,
    SES_NOT_VERIFIED,
    SES_TEMPORARY_AUTH,
    SES_TEMPORARY_FAILURE,
    SES_TEMPORARY_FAILURE_454,
    SES_THROTTLED,
    SES_TOO_LONG,
    SES_TOO_MANY_CONNECTIONS,
    Action,
    Fault,
    FaultScript,
    Stage,
)
from ses_core.testing._upstream_session import ReceivedMessage, UpstreamSession, UpstreamState
from ses_core.testing.ports import LOOPBACK

__all__ = [
    "DEFAULT_CREDENTIALS",
    "SES_ACCESS_DENIED",
    "SES_BAD_CREDENTIALS",
    "SES_DAILY_QUOTA",
    "SES_INVALID_ADDRESS",
    "SES_MAX_MESSAGES",
    "SES_MAX_SIZE",
    "SES_NOT_VERIFIED",
    "SES_TEMPORARY_AUTH",
    "SES_TEMPORARY_FAILURE",
    "SES_TEMPORARY_FAILURE_454",
    "SES_THROTTLED",
    "SES_TOO_LONG",
    "SES_TOO_MANY_CONNECTIONS",
    "Action",
    "Fault",
    "FaultScript",
    "ReceivedMessage",
    "SmtpUpstream",
    "Stage",
    "ThreadedUpstream",
    "TlsMode",
]

log = logging.getLogger(__name__)

#: The SMTP credentials an `SmtpUpstream` accepts unless told otherwise (SES style: an access
#: key id as the user name).
DEFAULT_CREDENTIALS = ("AKIATESTUSER", "test-smtp-password")


class TlsMode(enum.Enum):
    """How the upstream offers TLS."""

    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"  # plain text, AUTH offered in clear: only to prove clients refuse it


class SmtpUpstream:
    """An SES stand-in listening on 127.0.0.1 (an async context manager).

    Attributes:
        faults: the fault script, changeable while running.
        messages: accepted messages, in order (empty when `record` is False).
        accepted: number of messages accepted.
        connections_opened: TCP connections accepted so far.
        auth_attempts: AUTH exchanges seen (any outcome).
        auth_in_clear: AUTH exchanges seen on an unencrypted session (must stay 0).
        credentials: the (user name, password) it accepts, or None for no AUTH.

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
        credentials: tuple[str, str] | None = DEFAULT_CREDENTIALS,
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
        self.credentials = credentials
        self._state = UpstreamState(FaultScript(), credentials, record)
        self._tls_context = tls_context
        self._requested_port = port
        self._hostname = hostname
        self._smtputf8 = smtputf8
        self._data_size_limit = data_size_limit
        self._eightbitmime = eightbitmime
        self._pipelining = pipelining
        self._server: asyncio.Server | None = None

    @property
    def faults(self) -> FaultScript:
        """The fault script, changeable while running (from any thread)."""
        return self._state.faults

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages, in order (empty when `record` is False)."""
        return self._state.messages

    @property
    def accepted(self) -> int:
        """Number of messages accepted."""
        return self._state.accepted

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far."""
        return self._state.connections_opened

    @property
    def auth_attempts(self) -> int:
        """AUTH exchanges seen (any outcome)."""
        return self._state.auth_attempts

    @property
    def auth_in_clear(self) -> int:
        """AUTH exchanges seen on an unencrypted session (must stay 0)."""
        return self._state.auth_in_clear

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return LOOPBACK

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
        return len(self._state.sessions)

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
        for session in list(self._state.sessions):
            session.abort()

    def _make_session(self) -> UpstreamSession:
        plain = self.mode is TlsMode.NONE
        return UpstreamSession(
            self._state,
            pipelining=self._pipelining,
            hostname=self._hostname,
            ident="SES stand-in",
            tls_context=self._tls_context if self.mode is TlsMode.STARTTLS else None,
            require_starttls=self.mode is TlsMode.STARTTLS,
            enable_SMTPUTF8=self._smtputf8,
            # aiosmtpd's decode_data mode is its 7-bit server: no 8BITMIME in EHLO, and a MAIL
            # with BODY=8BITMIME answered 555. The raw octets are still recorded as received.
            decode_data=not self._eightbitmime,
            data_size_limit=self._data_size_limit,
            auth_required=self.credentials is not None and not plain,
            auth_require_tls=not plain,
            loop=asyncio.get_running_loop(),
        )


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
