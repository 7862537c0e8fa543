"""SMTP AUTH (PLAIN and LOGIN) for the relay's sessions: verified off the loop, throttled per peer.

aiosmtpd's own mechanisms check credentials with a synchronous callback; the relay's take a
scrypt run or a DynamoDB read, so `SessionAuth` verifies them asynchronously through a
`CredentialVerifier` (cached). Failures from one peer are slowed down and then banned for a
while (`AuthThrottle`): a banned peer is answered 421 and disconnected. One peer's attempts are
verified one at a time, so guesses sent in parallel on many connections wait for each other and
see each other's failures and delays, and are cut off like sequential ones.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from relay.auth import AuthThrottle, CredentialsUnavailable, CredentialVerifier
from relay.metrics import RelayMetrics

log = logging.getLogger(__name__)

BANNED_REPLY = "421 4.7.0 Too many failed authentications, closing connection"
INVALID_REPLY = "535 5.7.8 Authentication credentials invalid"
UNAVAILABLE_REPLY = "454 4.7.0 Temporary authentication failure"
#: Peers whose AUTH lock is remembered; beyond, the locks nobody holds are forgotten.
_MAX_LOCKS = 10_000


class AuthSession(Protocol):
    """What AUTH needs from a client session."""

    @property
    def peer_host(self) -> str | None:
        """The client's IP address."""
        ...

    async def push(self, status: str, /) -> None:
        """Send one reply line."""
        ...

    async def challenge_auth(self, challenge: str, /) -> object:
        """Send a `334` challenge; the decoded answer (bytes), or something else on failure."""
        ...

    def disconnect(self) -> None:
        """Close the connection."""
        ...


class SessionAuth:
    """AUTH for every session of one relay (see the module docstring)."""

    def __init__(
        self,
        verifier: CredentialVerifier,
        throttle: AuthThrottle,
        metrics: RelayMetrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.verifier = verifier
        self.throttle = throttle
        self._metrics = metrics
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        """Whether any credential source is configured (AUTH is offered at all)."""
        return self.verifier.enabled

    async def refuse_banned(self, session: AuthSession) -> bool:
        """Answer 421 and disconnect when the session's peer is banned; whether it was."""
        if not self.throttle.banned(session.peer_host or "?"):
            return False
        self._metrics.auth_failures.labels("banned").inc()
        await session.push(BANNED_REPLY)
        session.disconnect()
        return True

    async def plain(self, session: AuthSession, args: list[str]) -> AuthResult:
        """`AUTH PLAIN [initial-response]` (RFC 4616)."""
        if len(args) == 1:
            blob = await session.challenge_auth("")
            if not isinstance(blob, bytes):
                return _handled()
        else:
            decoded = await _decode(session, args[1])
            if decoded is None:
                return _handled()
            blob = decoded
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await session.push("501 5.5.2 Can't split auth value")
            return _handled()
        return await self._verify(session, LoginPassword(parts[1], parts[2]))

    async def login(self, session: AuthSession, args: list[str]) -> AuthResult:
        """`AUTH LOGIN [user-name]`: user name and password each in answer to a challenge."""
        if len(args) == 1:
            login = await session.challenge_auth(SMTP.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return _handled()
        else:
            decoded = await _decode(session, args[1])
            if decoded is None:
                return _handled()
            login = decoded
        password = await session.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return _handled()
        return await self._verify(session, LoginPassword(login, password))

    def _lock(self, host: str) -> asyncio.Lock:
        lock = self._locks.get(host)
        if lock is None:
            if len(self._locks) >= _MAX_LOCKS:
                self._locks = {h: k for h, k in self._locks.items() if k.locked()}
            lock = self._locks[host] = asyncio.Lock()
        return lock

    async def _verify(self, session: AuthSession, credentials: LoginPassword) -> AuthResult:
        host = session.peer_host or "?"
        async with self._lock(host):
            if await self.refuse_banned(session):
                return _handled()
            return await self._verify_unlocked(session, host, credentials)

    async def _verify_unlocked(
        self, session: AuthSession, host: str, credentials: LoginPassword
    ) -> AuthResult:
        try:
            username = credentials.login.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            username, password = "", ""
        try:
            valid = bool(username or password) and await self.verifier.verify(username, password)
        except CredentialsUnavailable as exc:
            log.error("AUTH: credential store unavailable: %s", exc)
            self._metrics.auth_failures.labels("unavailable").inc()
            return AuthResult(success=False, handled=False, message=UNAVAILABLE_REPLY)
        if valid:
            self.throttle.record_success(host)
            return AuthResult(success=True, auth_data=username)
        self._metrics.auth_failures.labels("invalid").inc()
        delay = self.throttle.record_failure(host)
        log.warning("AUTH failed from %s (delaying %.1fs)", host, delay)
        await self._sleep(delay)
        if self.throttle.banned(host):
            await session.push(INVALID_REPLY)
            await session.push(BANNED_REPLY)
            session.disconnect()
            return _handled()
        return AuthResult(success=False, handled=False)


def _handled() -> AuthResult:
    """A failure already answered (or a closed connection): aiosmtpd sends nothing more."""
    return AuthResult(success=False, handled=True)


async def _decode(session: AuthSession, text: str) -> bytes | None:
    """The base64 initial response; None (after answering 501) when it is not base64."""
    try:
        return base64.b64decode(text.encode(), validate=True)
    except ValueError:
        await session.push("501 5.5.2 Can't decode base64")
        return None
