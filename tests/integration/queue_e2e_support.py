"""Helpers for H4's queue-mode end-to-end tests against a relay *process*: its environment in
queue mode, a load client that records which messages got a 250, and bounded waits.

The relay runs as `python -m relay.main` (`RelayProcess`) with RELAY_DELIVERY=queue set
explicitly (the harness pins `direct` otherwise) and its spool in the test's own directory, so
it can be killed, restarted on the same spool, or run under strace. (`relay_queue_support` holds
the helpers of the in-process queue tests.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import aiosmtplib

from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.support.relay_harness import upstream_environ

SENDER = "app@example.com"
#: Refusals after which a batch goes on with its next message (RSET), rather than stopping.
_TRANSACTION_REFUSALS = frozenset({421, 450, 451, 452, 454, 550, 552, 553, 554})


def queue_environ(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    spool_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """A queueing relay delivering to `upstream` at a high rate, its spool in `spool_dir`; the
    free-disk floor off (the test box's disk is not the point) unless `extra` sets it."""
    return {
        **upstream_environ(upstream, certificates.ca_file),
        "RELAY_DELIVERY": "queue",
        "RELAY_SPOOL_DIR": str(spool_dir),
        "RELAY_SPOOL_MIN_FREE": "0",
        "SES_RATE_LIMIT": "1000",
        "RELAY_ALLOWED_SENDER_DOMAINS": "example.com",
        **extra,
    }


def body(tag: str, *, sender: str = SENDER, to: str = "you@example.org") -> bytes:
    """A small message whose Message-ID is `<tag@example.com>`."""
    return (
        f"From: App <{sender}>\r\nTo: {to}\r\nSubject: queue test {tag}\r\n"
        f"Message-ID: <{tag}@example.com>\r\n\r\nHello {tag}.\r\n"
    ).encode()


def message_id(tag: str) -> str:
    """The Message-ID header `body(tag)` carries."""
    return f"<{tag}@example.com>"


async def send_batch(
    port: int,
    tags: Iterable[str],
    *,
    acked: set[str] | None = None,
    sender: str = SENDER,
    recipients: tuple[str, ...] = ("you@example.org",),
    timeout: float = 10.0,
) -> dict[str, int]:
    """Send one message per tag over one connection; each tag's reply code (DATA's, or the
    refusal at MAIL/RCPT). Tags answered 250 are added to `acked` as soon as the reply arrives,
    so a caller killing the relay mid-batch knows exactly what was acknowledged. A connection
    that breaks ends the batch (the remaining tags are absent from the result)."""
    codes: dict[str, int] = {}
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=timeout)
    try:
        await client.connect()
        await client.ehlo()
        for tag in tags:
            try:
                await client.mail(sender)
                for recipient in recipients:
                    await client.rcpt(recipient)
                reply = await client.data(body(tag, sender=sender or SENDER))
                codes[tag] = reply.code
            except aiosmtplib.SMTPResponseException as exc:
                codes[tag] = exc.code
                if exc.code not in _TRANSACTION_REFUSALS:
                    raise
                await client.rset()
                continue
            if codes[tag] == 250 and acked is not None:
                acked.add(tag)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        pass
    finally:
        client.close()
    return codes


async def wait_for(
    condition: Callable[[], bool], *, timeout: float, step: float = 0.05, what: str = ""
) -> None:
    """Wait (without blocking the loop) until `condition()`; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            message = f"timed out after {timeout} s waiting for {what or condition}"
            raise AssertionError(message)
        await asyncio.sleep(step)


def delivered_ids(upstream: SmtpUpstream) -> list[str]:
    """Message-IDs the upstream accepted, in order, with repeats."""
    return [m.message_id or "" for m in upstream.messages]


def count_by_id(ids: Iterable[str]) -> Mapping[str, int]:
    """How many times each Message-ID arrived."""
    counts: dict[str, int] = {}
    for value in ids:
        counts[value] = counts.get(value, 0) + 1
    return counts


async def get(port: int | None, path: str) -> tuple[int, str]:
    """GET `path` on the relay's ops endpoint: (status, body)."""
    assert port is not None, "start the RelayProcess with ops_endpoint=True"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, content = response.decode().partition("\r\n\r\n")
    return int(head.split()[1]), content


async def metric(port: int | None, sample: str) -> float:
    """The value of one /metrics sample line (name with labels, as exposed); 0 when absent."""
    _, text = await get(port, "/metrics")
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0
