"""Queue mode's delivery process on a real relay (`python -m relay.main`): the parent's
`/metrics` shows what the child delivered, a killed child is restarted, and a killed parent
leaves no orphan delivering."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

from relay.delivery_main import NICENESS
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.queue_e2e_support import get, metric, queue_environ, send_batch, wait_for
from tests.support.relay_harness import RelayProcess

ACCEPTED = 'relay_queue_deliveries_total{outcome="accepted"}'


def worker_pids(relay: RelayProcess) -> list[int]:
    """The relay's delivery worker processes (its children running relay.delivery_main)."""
    return [
        child.pid
        for child in psutil.Process(relay.pid).children()
        if "relay.delivery_main" in " ".join(child.cmdline())
    ]


async def test_the_relay_metrics_show_the_workers_deliveries_and_a_killed_worker_restarts(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    relay = RelayProcess(
        queue_environ(upstream, certificates, tmp_path / "spool"),
        log_path=tmp_path / "relay.log",
        ops_endpoint=True,
    )
    await asyncio.to_thread(relay.start, 30.0)
    try:
        codes = await send_batch(relay.port, [f"w{n}" for n in range(5)])
        assert set(codes.values()) == {250}
        await wait_for(lambda: upstream.accepted >= 5, timeout=30, what="delivery")
        await wait_for_metric(relay, ACCEPTED, 5)
        # The worker's sends fill the same latency histograms as direct mode's, on the relay.
        await wait_for_metric(relay, "relay_upstream_latency_seconds_count", 5)
        await wait_for_metric(relay, "relay_limiter_wait_seconds_count", 5)
        assert await metric(relay.metrics_port, "relay_queue_worker_up") == 1
        assert await metric(relay.metrics_port, "relay_spool_accepted_total") == 5

        [worker] = worker_pids(relay)
        os.kill(worker, signal.SIGKILL)
        await wait_for_metric(relay, "relay_queue_worker_restarts_total", 1)
        status, body = await get(relay.metrics_port, "/readyz")
        assert status == 200, body  # advisory: the queue absorbs it
        codes = await send_batch(relay.port, [f"after{n}" for n in range(3)])
        assert set(codes.values()) == {250}
        await wait_for(lambda: upstream.accepted >= 8, timeout=30, what="delivery after restart")
        await wait_for_metric(relay, ACCEPTED, 3)  # the new worker's own count
        assert worker_pids(relay) != [worker]
    finally:
        assert await relay.astop() == 0, relay.log_tail()
    assert "exited unexpectedly" in relay.log_text()


async def test_a_killed_relay_leaves_no_worker_behind(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """kill -9 of the relay: its worker sees the wake pipe's EOF and stops on its own."""
    async with relay_with_worker(upstream, certificates, tmp_path) as (relay, worker):
        os.kill(relay.pid, signal.SIGKILL)
        await relay.wait_exit(10)
        await wait_for(lambda: not psutil.pid_exists(worker), timeout=30, what="the orphan")


async def test_the_worker_loop_yields_to_accepting_its_spool_writer_does_not(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """The worker's event loop runs at nice +19 (accepting goes first when the CPU is short),
    while its spool writer thread keeps the relay's priority: a transaction holding the spool's
    write lock must never be starved while the relay's puts wait for it."""
    async with relay_with_worker(upstream, certificates, tmp_path) as (relay, worker):
        base = thread_nice(relay.pid, relay.pid)
        await wait_for(
            lambda: thread_nice(worker, worker) == min(base + NICENESS, 19),
            timeout=30,
            what="the worker loop's priority",
        )
        threads = [t.id for t in psutil.Process(worker).threads()]
        assert base in [thread_nice(worker, t) for t in threads if t != worker]  # the writer
        assert thread_nice(relay.pid, relay.pid) == base


@contextlib.asynccontextmanager
async def relay_with_worker(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> AsyncIterator[tuple[RelayProcess, int]]:
    """A queueing relay and the pid of its one delivery worker; the relay is stopped after."""
    relay = RelayProcess(
        queue_environ(upstream, certificates, tmp_path / "spool"), log_path=tmp_path / "relay.log"
    )
    await asyncio.to_thread(relay.start, 30.0)
    try:
        await wait_for(lambda: len(worker_pids(relay)) == 1, timeout=30, what="the worker")
        [worker] = worker_pids(relay)
        yield relay, worker
    finally:
        await relay.astop()


def thread_nice(pid: int, tid: int) -> int:
    """A thread's nice value (field 19 of /proc/<pid>/task/<tid>/stat)."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])


async def wait_for_metric(relay: RelayProcess, sample: str, at_least: float) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while (value := await metric(relay.metrics_port, sample)) < at_least:
        assert asyncio.get_running_loop().time() < deadline, f"{sample} = {value}"
        await asyncio.sleep(0.1)
