"""Helpers for the queue-mode integration tests: a relay configured from the environment as
deployed (pooled SES client, local spool) against the scripted SES stand-in, and waits.

The delivery workers get short backoffs (`fast_runner`), so that a retry after an outage happens
within a test; everything else is the production wiring. `send` and `http_get` serve the
direct-mode tests (relay_delivery_test.py) too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import attrs

from relay.config import RelayConfig
from relay.server import RelayServer
from relay.wiring_queue import delivery_settings
from ses_core.blacklist import BlacklistReader
from ses_core.queue import DeliveryEvents, Spool
from ses_core.queue.backoff import Backoff
from ses_core.queue.delivery import QueueRunner
from ses_core.smtp import MessageSender
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.relay_support import message
from tests.support.relay_harness import upstream_environ

#: Retry after a tenth of a second to half a second, whatever deferred the message.
FAST_BACKOFF = Backoff(soon=0.1, soon_cap=0.2, base=0.2, cap=0.5, daily_quota=0.5)


def queue_environ(
    upstream: SmtpUpstream, certificates: TestCertificates, spool: Path, **extra: str
) -> dict[str, str]:
    """A loopback relay in queue mode delivering to `upstream`, its spool in `spool`."""
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "0",
        "SERVER_FQDN": "relay.test",
        **upstream_environ(upstream, certificates.ca_file),
        "SES_RATE_LIMIT": "1000",
        "RELAY_RATE_BURST": "50",
        "RELAY_MAX_WAIT": "2",
        "RELAY_UPSTREAM_TIMEOUT": "2",
        "RELAY_QUEUE_ATTEMPT_TIMEOUT": "3",
        "RELAY_GRACE_PERIOD": "3",
        "RELAY_METRICS_PORT": "off",
        "RELAY_DELIVERY": "queue",
        "RELAY_SPOOL_DIR": str(spool),
        **extra,
    }


def queue_config(environ: dict[str, str], **queue: Any) -> RelayConfig:
    """`RelayConfig.from_environ(environ)` with the ops endpoint on an ephemeral port and the
    queue settings in `queue` changed (`retry_delay`, ...)."""
    config = RelayConfig.from_environ(environ)
    return attrs.evolve(config, metrics_port=0, queue=attrs.evolve(config.queue, **queue))


def fast_runner(
    spool: Spool,
    sender: MessageSender,
    config: RelayConfig,
    blacklist: BlacklistReader | None,
    events: DeliveryEvents,
) -> QueueRunner:
    """The production workers with `FAST_BACKOFF` and a short idle poll."""
    settings = attrs.evolve(delivery_settings(config), backoff=FAST_BACKOFF, idle_poll=0.1)
    return QueueRunner(spool, sender, settings=settings, blacklist=blacklist, events=events)


async def send(
    relay: RelayServer | int,
    recipients: list[str],
    number: int | str = 1,
    sender: str = "app@example.com",
) -> tuple[int, str]:
    """One message through the relay; the DATA reply (or the first refusal) as (code, text)."""
    port = relay if isinstance(relay, int) else relay.port
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail(sender)
        for rcpt in recipients:
            await client.rcpt(rcpt)
        reply = await client.data(message(number))
        return reply.code, reply.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        client.close()


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait (bounded) until `condition()` holds; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            message = f"condition not met within {timeout} s"
            raise AssertionError(message)
        await asyncio.sleep(0.05)


async def http_get(port: int | None, path: str) -> str:
    """GET `path` from the ops endpoint; the raw response."""
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data.decode()
