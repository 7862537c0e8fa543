"""A pool of persistent, authenticated TLS sessions to the SES SMTP endpoint.

Opening a session to SES costs a TCP handshake, a TLS handshake and an AUTH exchange, so the
pool keeps up to `pool_size` sessions open and lends each to one sender at a time.

- A session is recycled after `max_messages_per_connection` messages or `max_connection_age`
  seconds (SES sits behind recycled load-balancer hosts and answers `421 ... Maximum message
  count per session` otherwise; see `docs/ses-facts.md`), and whenever the borrower saw a 421 or
  a broken session.
- After a failed open, further opens wait an exponential backoff (bounded by
  `reconnect_backoff_max`); a borrower whose budget is shorter than the wait fails at once.
- Cancel-safe: a borrower that is cancelled hands its session back as broken, so it is closed,
  never reused mid-transaction, and its slot is freed.
- `open_spare` opens a session outside the slots for the readiness probe, which must not queue
  behind sends that hold every slot while they wait for rate tokens (see `_probe`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import aiosmtplib
import attrs

from ses_core.smtp._session import (
    ConnectFailure,
    abort_session,
    build_tls_context,
    open_session,
    quit_quietly,
)
from ses_core.smtp.results import PoolStats, ReplyClass
from ses_core.smtp.settings import SmtpSettings

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


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
        session to lend: a readiness probe reports it at once instead of sleeping until the next
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

    async def open_spare(self, budget: float | None) -> PooledConnection:
        """Open a session outside the send slots, never lent to a sender (the readiness probe's
        own), with the pool's backoff and failure accounting. Raises `ConnectFailure`."""
        if self._closed:
            raise ConnectFailure(421, "4.4.0 client closed", ReplyClass.CONNECTION)
        return await self._open(budget)

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
            await quit_quietly(connection.smtp)

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
            smtp = await open_session(self._settings, self._tls_context, self._local_hostname)
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
