"""Two relay PROCESSES on one shared spool (SQS + S3 on moto's server, the limiter in a real
Redis), delivering to the scripted SES stand-in that takes `DELIVERY_SECONDS` per message, with a
visibility timeout of twice that:

- a backlog accepted through both is delivered exactly once per recipient, by both, although
  envelopes stay leased longer than the visibility timeout (waiting for a connection): their
  leases are kept alive;
- `kill -9` of one replica mid-drain loses nothing: the other delivers the rest once the
  killed replica's envelopes become visible again; duplicates only for deliveries in flight at
  the kill (at most the killed replica's workers);
- SIGTERM returns a replica's leased envelopes at once (visibility 0): the other replica
  delivers them long before the (here long) visibility timeout would have expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_sqs import (
    SpoolResources,
    create_spool_resources,
    object_keys,
    queue_depth,
)
from ses_core.testing.upstream import Fault, SmtpUpstream, Stage
from tests.integration.queue_e2e_support import (
    count_by_id,
    delivered_ids,
    message_id,
    metric,
    send_batch,
    wait_for,
)
from tests.integration.relay_sqs_support import (
    DELIVERY_SECONDS,
    VISIBILITY_TIMEOUT,
    moto_endpoint,
    redis_url,
    sqs_environ,
)
from tests.support.relay_harness import RelayProcess

__all__ = ["moto_endpoint", "redis_url"]  # fixtures

MESSAGES = 160
#: The backlog of the kill test (the survivor drains most of it alone).
KILL_MESSAGES = 100
#: Delivery workers per replica: each leases up to this many envelopes at once...
WORKERS = 12
#: ...but sends over this many connections, so an envelope can stay leased for
#: WORKERS / CONNECTIONS deliveries (4.5 s): longer than the visibility timeout (3 s). Only the
#: spool's lease keeper stops the other replica from receiving it meanwhile.
CONNECTIONS = 4
ACCEPTED = 'relay_queue_deliveries_total{outcome="accepted"}'


def replicas(environ: dict[str, str], tmp_path: Path) -> list[RelayProcess]:
    """Two relay processes with the same settings, each with its ops endpoint and log file."""
    return [
        RelayProcess(environ, log_path=tmp_path / f"relay-{n}.log", ops_endpoint=True)
        for n in range(2)
    ]


async def accept_backlog(processes: list[RelayProcess], tags: list[str]) -> set[str]:
    """Send `tags` through both replicas over four connections; the tags answered 250."""
    acked: set[str] = set()
    await asyncio.gather(
        *(send_batch(processes[k % 2].port, tags[k::4], acked=acked, timeout=30) for k in range(4))
    )
    return acked


async def start(stack: contextlib.AsyncExitStack, processes: list[RelayProcess]) -> None:
    """Start `processes`, each stopped when `stack` closes."""
    for process in processes:
        stack.push_async_callback(process.astop)
        await asyncio.to_thread(process.start)


async def all_delivered(
    upstream: SmtpUpstream, tags: list[str], *, timeout: float, what: str
) -> set[str]:
    """Wait until the messages tagged `tags` have all reached `upstream`; their Message-IDs."""
    expected = {message_id(tag) for tag in tags}
    await wait_for(
        lambda: expected <= set(delivered_ids(upstream)), timeout=timeout, step=0.2, what=what
    )
    return expected


@attrs.frozen
class SharedSpool:
    """Fresh SQS/S3 resources on moto's server, and the replicas' environment for them."""

    endpoint: str
    resources: SpoolResources
    environ: dict[str, str]

    async def drained(self, timeout: float) -> None:
        """Wait until the queue holds no envelope and the bucket no body."""
        queue_url, bucket = self.resources.queue_url, self.resources.bucket
        await wait_for(
            lambda: queue_depth(self.endpoint, queue_url) == 0
            and not object_keys(self.endpoint, bucket),
            timeout=timeout,
            step=0.5,
            what="an empty queue and bucket",
        )


#: The `shared_spool` fixture: a `SharedSpool` with the given visibility timeout.
MakeSharedSpool = Callable[..., SharedSpool]


@pytest.fixture
def shared_spool(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    moto_endpoint: str,
    redis_url: str,
    tmp_path: Path,
) -> MakeSharedSpool:
    """Makes a `SharedSpool` for replicas delivering to `upstream`, which it sets to take
    `DELIVERY_SECONDS` per message."""

    def make(visibility: int = VISIBILITY_TIMEOUT) -> SharedSpool:
        upstream.faults.set(Fault.stall(Stage.END_OF_DATA, DELIVERY_SECONDS), times=None)
        resources = create_spool_resources(moto_endpoint, visibility_timeout=visibility)
        environ = sqs_environ(
            upstream,
            certificates,
            resources,
            endpoint=moto_endpoint,
            redis_url=redis_url,
            scratch=tmp_path,
            RELAY_QUEUE_WORKERS=str(WORKERS),
            RELAY_POOL_SIZE=str(CONNECTIONS),
            RELAY_SQS_VISIBILITY_TIMEOUT=str(visibility),
        )
        return SharedSpool(moto_endpoint, resources, environ)

    return make


async def test_two_replicas_deliver_a_shared_backlog_exactly_once(
    upstream: SmtpUpstream, shared_spool: MakeSharedSpool, tmp_path: Path
) -> None:
    spool = shared_spool()
    processes = replicas(spool.environ, tmp_path)
    tags = [f"shared-{n}" for n in range(MESSAGES)]
    async with contextlib.AsyncExitStack() as stack:
        await start(stack, processes)
        acked = await accept_backlog(processes, tags)
        assert acked == set(tags), f"not accepted: {sorted(set(tags) - acked)[:5]}"
        await all_delivered(upstream, tags, timeout=120, what="every message delivered")
        # A lease that lapsed shows up as a second delivery at most one visibility timeout
        # later: wait that long (twice) before counting.
        await asyncio.sleep(2 * VISIBILITY_TIMEOUT + DELIVERY_SECONDS)
        await spool.drained(timeout=30)
        delivered = [await metric(p.metrics_port, ACCEPTED) for p in processes]
    counts = count_by_id(delivered_ids(upstream))
    assert {tag: n for tag, n in counts.items() if n != 1} == {}
    assert len(counts) == MESSAGES
    assert sum(delivered) == MESSAGES and min(delivered) > 0, delivered  # both took part
    assert [p.exit_codes for p in processes] == [[0], [0]], [p.log_tail() for p in processes]


async def test_kill_9_of_one_replica_mid_drain_loses_nothing(
    upstream: SmtpUpstream, shared_spool: MakeSharedSpool, tmp_path: Path
) -> None:
    spool = shared_spool()
    victim, survivor = replicas(spool.environ, tmp_path)
    tags = [f"kill-{n}" for n in range(KILL_MESSAGES)]
    async with contextlib.AsyncExitStack() as stack:
        await start(stack, [victim, survivor])
        acked = await accept_backlog([victim, survivor], tags)
        assert acked == set(tags)
        await wait_for(
            lambda: len(upstream.messages) >= KILL_MESSAGES // 5, timeout=60, what="the drain"
        )
        os.kill(victim.pid, signal.SIGKILL)
        assert await victim.wait_exit(10) == -signal.SIGKILL
        killed_at = len(upstream.messages)
        assert killed_at < KILL_MESSAGES, "the drain ended before the kill: nothing was tested"
        expected = await all_delivered(
            upstream, tags, timeout=120, what="every message delivered after the kill"
        )
        await asyncio.sleep(2 * VISIBILITY_TIMEOUT + DELIVERY_SECONDS)
        await spool.drained(timeout=30)
    counts = count_by_id(delivered_ids(upstream))
    duplicates = sum(n - 1 for n in counts.values())
    assert set(counts) == expected
    # Only a delivery the victim had in flight (SES accepted it, its envelope not yet deleted)
    # can arrive twice: at most one per worker of the killed replica.
    print(f"kill -9 after {killed_at} deliveries: {duplicates} duplicate(s)")  # shown with -s
    assert duplicates <= WORKERS, (duplicates, killed_at)
    assert survivor.exit_codes == [0], survivor.log_tail()


async def test_sigterm_returns_leased_envelopes_at_once(
    upstream: SmtpUpstream, shared_spool: MakeSharedSpool, tmp_path: Path
) -> None:
    """With a 60 s visibility timeout, the stopped replica's envelopes are delivered by the
    other one within seconds: released (visibility 0), not left to expire."""
    visibility = 60
    spool = shared_spool(visibility=visibility)
    spool.environ["RELAY_GRACE_PERIOD"] = "0.5"  # in-flight deliveries are cut short and released
    stopping, staying = replicas(spool.environ, tmp_path)
    tags = [f"term-{n}" for n in range(40)]
    async with contextlib.AsyncExitStack() as stack:
        await start(stack, [stopping, staying])
        acked = await accept_backlog([stopping, staying], tags)
        assert acked == set(tags)
        await wait_for(lambda: len(upstream.messages) >= 5, timeout=60, what="the drain")
        stopped_at = time.monotonic()
        assert await stopping.astop(timeout=20) == 0, stopping.log_tail()
        expected = await all_delivered(
            upstream,
            tags,
            timeout=visibility - 10,
            what="the stopped replica's messages delivered by the other one",
        )
        assert time.monotonic() - stopped_at < visibility - 10
        await spool.drained(timeout=30)
    counts = count_by_id(delivered_ids(upstream))
    assert set(counts) == expected
    assert sum(n - 1 for n in counts.values()) <= WORKERS
    assert "released" in stopping.log_text()
