"""Unit tests for relay.session_auth: PLAIN and LOGIN decoding, verification, throttling."""

from __future__ import annotations

import asyncio
import base64

from relay.auth import AuthThrottle, CredentialVerifier, hash_password
from relay.metrics import RelayMetrics
from relay.session_auth import BANNED_REPLY, INVALID_REPLY, SessionAuth
from ses_core.testing.clock import VirtualClock


class FakeSession:
    """A client session that records replies and answers challenges from a list."""

    def __init__(self, *answers: bytes | None) -> None:
        self.peer_host = "192.0.2.7"
        self.answers = list(answers)
        self.replies: list[str] = []
        self.disconnected = False

    async def push(self, status: str, /) -> None:
        self.replies.append(status)

    async def challenge_auth(self, challenge: str, /) -> object:
        answer = self.answers.pop(0)
        return answer if answer is not None else object()

    def disconnect(self) -> None:
        self.disconnected = True


def plain(user: str, password: str) -> str:
    """An AUTH PLAIN initial response."""
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def auth(**throttle: float) -> tuple[SessionAuth, VirtualClock]:
    """SessionAuth for the user `app` (password `pw`) with a virtual sleep."""
    clock = VirtualClock()
    verifier = CredentialVerifier(users=[("app", hash_password("pw", n=16))])
    limits = AuthThrottle(clock=clock, **throttle)  # type: ignore[arg-type]
    return SessionAuth(verifier, limits, RelayMetrics(), sleep=clock.sleep), clock


async def asleep(clock: VirtualClock) -> None:
    """Wait (really, briefly) until a task sleeps on `clock`: verification runs in a thread."""
    async with asyncio.timeout(5):
        while not clock.sleeping:
            await asyncio.sleep(0.001)


async def test_plain_and_login_accept_the_right_password() -> None:
    """PLAIN with an initial response and LOGIN through two challenges both authenticate."""
    session_auth, _ = auth()
    result = await session_auth.plain(FakeSession(), ["PLAIN", plain("app", "pw")])
    assert result.success and result.auth_data == "app"
    result = await session_auth.login(FakeSession(b"app", b"pw"), ["LOGIN"])
    assert result.success


async def test_undecodable_answers_are_501() -> None:
    """Bad base64 or a PLAIN blob without two NULs is answered 501 and handled."""
    session_auth, _ = auth()
    session = FakeSession()
    result = await session_auth.plain(session, ["PLAIN", "not base64!"])
    assert not result.success and result.handled
    result = await session_auth.plain(session, ["PLAIN", base64.b64encode(b"x").decode()])
    assert not result.success and result.handled
    assert session.replies == ["501 5.5.2 Can't decode base64", "501 5.5.2 Can't split auth value"]


async def test_failures_are_delayed_then_banned() -> None:
    """A wrong password waits the throttle's delay; the last allowed failure bans and closes."""
    session_auth, clock = auth(max_failures=2, base_delay=0.5)
    first = FakeSession()
    attempt = asyncio.create_task(session_auth.plain(first, ["PLAIN", plain("app", "nope")]))
    await asleep(clock)
    await clock.advance(0.4)
    assert not attempt.done()
    await clock.advance(0.1)
    result = await attempt
    assert not result.success and not result.handled  # aiosmtpd answers 535
    assert clock.sleeps == [0.5] and not first.disconnected
    second = FakeSession()
    attempt = asyncio.create_task(session_auth.plain(second, ["PLAIN", plain("app", "nope")]))
    await asleep(clock)
    await clock.advance(1.0)
    result = await attempt
    assert result.handled and second.replies == [INVALID_REPLY, BANNED_REPLY]
    assert second.disconnected
    third = FakeSession()
    assert await session_auth.refuse_banned(third)
    assert third.replies == [BANNED_REPLY] and third.disconnected
