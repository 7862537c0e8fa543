"""The readiness probe's own session: a NOOP to the upstream that never queues behind sends.

At peak traffic every pool slot is lent to a send that waits mid-DATA for its rate tokens (the
late charge, see `_charge`), for up to the SMTP timeout. A probe that borrowed a pooled session
queued behind them and ran out of time, so `/readyz` answered 503 exactly when traffic peaked,
with SES healthy, and a load balancer would have pulled every replica at once. So the probe keeps
one session of its own outside the send slots (opened by the pool: same TLS, login, reconnect
backoff and failure counts) and says NOOP on it. It stays an honest check:

- it passes only if SES answers an authenticated session within `probe_timeout` (at most the SMTP
  timeout): a closed listener, dropped sessions, a rejected login or TLS handshake, and an
  upstream that accepts connections but stays silent all fail it, idle or under load;
- while the pool waits out its backoff after a failed open with no idle session to lend, the
  probe reports that failure at once: the sends cannot get a new session either;
- a probe session that SES closed while idle (or ended with 421) is replaced once, so a stale
  session does not make the relay unready; a NOOP that gets no answer in time is never retried;
- concurrent probes take turns on the one session, within the same time bound; a probe
  cancelled mid-NOOP drops the session (its state is unknown);
- the session is recycled at `max_connection_age`, as pooled ones are.

The cost is one session more than `pool_size` per client.
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from ses_core.errors import UpstreamUnavailable
from ses_core.smtp._pool import Clock, ConnectionPool, PooledConnection
from ses_core.smtp._session import ConnectFailure, abort_session, quit_quietly
from ses_core.smtp.settings import SmtpSettings


class ProbeSession:
    """NOOP on a session outside the send slots; `check` raises `UpstreamUnavailable` if bad."""

    def __init__(self, pool: ConnectionPool, settings: SmtpSettings, *, clock: Clock) -> None:
        self._pool = pool
        self._max_age = settings.max_connection_age
        self._clock = clock
        self._bound = min(settings.probe_timeout, settings.timeout)
        self._lock = asyncio.Lock()
        self._connection: PooledConnection | None = None

    async def check(self) -> None:
        """Return if SES answers NOOP within the probe timeout; raise `UpstreamUnavailable`."""
        pending = self._pool.pending_failure()
        if pending is not None:
            message = f"SES SMTP endpoint unavailable: {pending.code} {pending.text}"
            raise UpstreamUnavailable(message) from pending
        try:
            async with asyncio.timeout(self._bound):
                async with self._lock:
                    await self._noop()
        except TimeoutError:
            # Only the bound above gets here: `_noop` turns aiosmtplib's timeouts into
            # UpstreamUnavailable itself, and dropped the session when it was cancelled.
            message = f"SES SMTP endpoint did not answer within {self._bound:g} s"
            raise UpstreamUnavailable(message) from None

    async def aclose(self) -> None:
        """Close the probe's session (QUIT, bounded, unless a probe is using it)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._lock.locked():
            abort_session(connection.smtp)
        else:
            await quit_quietly(connection.smtp)

    async def _noop(self) -> None:
        for _ in range(2):
            connection = await self._session()
            try:
                await connection.smtp.noop(timeout=self._bound)
            except aiosmtplib.SMTPResponseException as exc:
                self._drop()
                if exc.code == 421 and connection.reused:
                    continue  # SES ended this long-lived session: ask on a fresh one
                message = f"SES SMTP endpoint answered NOOP with {exc.code} {exc.message}"
                raise UpstreamUnavailable(message) from exc
            except aiosmtplib.SMTPTimeoutError as exc:
                self._drop()
                message = f"SES SMTP endpoint did not answer NOOP within {self._bound:g} s"
                raise UpstreamUnavailable(message) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                self._drop()
                if not connection.reused:
                    message = f"SES SMTP session broke during NOOP: {exc}"
                    raise UpstreamUnavailable(message) from exc
                continue  # a stale session says nothing about SES: once more on a fresh one
            except BaseException:
                self._drop()  # cancelled mid-NOOP: the session's state is unknown
                raise
            connection.reused = True
            return
        message = "SES SMTP sessions keep breaking"
        raise UpstreamUnavailable(message)

    async def _session(self) -> PooledConnection:
        connection = self._connection
        if connection is not None and (
            not connection.alive or self._clock() - connection.opened_at >= self._max_age
        ):
            self._drop()
            connection = None
        if connection is None:
            try:
                connection = await self._pool.open_spare(self._bound)
            except ConnectFailure as failure:
                message = f"SES SMTP endpoint unavailable: {failure.code} {failure.text}"
                raise UpstreamUnavailable(message) from failure
            self._connection = connection
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            abort_session(connection.smtp)
