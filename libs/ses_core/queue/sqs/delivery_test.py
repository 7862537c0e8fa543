"""Two replicas on one shared spool: `QueueRunner`s with their own SqsSpool and SesSmtpClient
drain one SQS queue (moto's server) into the SES stand-in (STARTTLS, AUTH) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from ses_core.queue.delivery import QueueRunner
from ses_core.queue.sqs import SqsSpool
from ses_core.smtp.client import SesSmtpClient
from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_sqs import (
    SettableClock,
    SpoolResources,
    new_message,
    object_keys,
    queue_depth,
)
from ses_core.testing.queue_doubles import stand_in_client_settings, stand_in_delivery
from ses_core.testing.upstream import (
    SES_DAILY_QUOTA,
    Fault,
    SmtpUpstream,
    Stage,
)

MakeSpool = Callable[..., SqsSpool]


@pytest.fixture
async def replicas(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    make_spool: MakeSpool,
    spool_clock: SettableClock,
) -> AsyncIterator[list[SqsSpool]]:
    """Two replicas (spool + runner + SES client each) delivering from one queue; a 4 s
    visibility timeout, about twice one delivery here, so a missing extension would show."""
    settings = stand_in_client_settings(upstream, certificates)
    delivery = stand_in_delivery(workers=4, idle_poll=0.05)
    spools = [make_spool(visibility_timeout=4, heartbeat_interval=1, max_delay=1) for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        runners = []
        for spool in spools:
            client = await stack.enter_async_context(SesSmtpClient(settings))
            runner = QueueRunner(spool, client, settings=delivery, clock=spool_clock)
            await runner.start()
            runners.append(runner)
        yield spools
        for runner in runners:
            await runner.stop(5.0)
    await asyncio.sleep(0.05)  # let TLS transports closed by the peer finish closing


async def eventually(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait until `condition()` holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_two_replicas_deliver_a_shared_backlog_exactly_once_per_recipient(
    replicas: list[SqsSpool], upstream: SmtpUpstream, endpoint: str, resources: SpoolResources
) -> None:
    """40 messages of two recipients each, put through one replica: every recipient reaches
    SES once, and the queue and the bucket end empty."""
    expected = Counter[str]()
    for n in range(40):
        recipients = (f"a{n}@example.net", f"b{n}@example.org")
        expected.update(recipients)
        await replicas[n % 2].put(new_message(*recipients))

    await eventually(lambda: sum(len(m.recipients) for m in upstream.messages) >= 80)
    await eventually(lambda: queue_depth(endpoint, resources.queue_url) == 0)

    delivered = Counter(r for m in upstream.messages for r in m.recipients)
    assert delivered == expected
    assert max(delivered.values()) == 1
    await eventually(lambda: not object_keys(endpoint, resources.bucket))


async def test_a_deferred_recipient_comes_back_alone_after_a_chained_backoff(
    replicas: list[SqsSpool],
    upstream: SmtpUpstream,
    spool_clock: SettableClock,
    endpoint: str,
    resources: SpoolResources,
) -> None:
    """Carol hits the daily quota (about 30 minutes of backoff, chained through 1 s SQS delays
    here); Bob is accepted and never sent again; Carol goes out once her time has come."""
    upstream.faults.set(
        Fault.reply(Stage.RCPT, *SES_DAILY_QUOTA, recipient="carol@example.org"), times=1
    )
    await replicas[0].put(new_message("bob@example.net", "carol@example.org"))
    await eventually(lambda: len(upstream.messages) == 1)
    await asyncio.sleep(3)  # a few receive-and-re-publish rounds: nothing goes out early
    assert [m.recipients for m in upstream.messages] == [("bob@example.net",)]

    spool_clock.offset += 3600
    await eventually(lambda: len(upstream.messages) == 2)
    await eventually(lambda: queue_depth(endpoint, resources.queue_url) == 0)
    assert [m.recipients for m in upstream.messages] == [
        ("bob@example.net",),
        ("carol@example.org",),
    ]
