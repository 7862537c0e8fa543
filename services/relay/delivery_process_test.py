"""The parent's side of the delivery process: wake pipe, supervision with backoff, stop, and the
merged `/metrics` (with stand-in children: small Python scripts given as the command)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.delivery_process import (
    CHILD_FAMILIES,
    DeliveryProcess,
    child_owned,
    merged_exposition,
    worker_command,
    worker_environ,
)
from relay.metrics import RelayMetrics
from relay.ops_http import NotReady

#: A stand-in child: reports `ready <port>` (port 1: nothing to fetch), then counts wake bytes
#: until EOF and writes what it read into the file named by its first argument.
READING_CHILD = """
import os, sys
out = sys.argv[1]
args = sys.argv[2:]
wake_fd = int(args[args.index("--wake-fd") + 1])
report_fd = int(args[args.index("--report-fd") + 1])
os.write(report_fd, b"ready 1\\n")
seen = b""
while chunk := os.read(wake_fd, 65536):
    seen += chunk
with open(out, "wb") as f:
    f.write(seen)
"""

#: A stand-in child that exits at once with status 3.
FAILING_CHILD = "import sys; sys.exit(3)"


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


async def eventually(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_child_families_come_from_the_child_the_others_from_the_parent() -> None:
    """The merged exposition takes deliveries and pool figures from the child, sessions and the
    spool's figures from the parent; the `_created` samples follow their family."""
    parent, child = RelayMetrics(), RelayMetrics()
    parent.sessions.set(4)
    parent.queue.deliveries.labels("accepted").inc(99)  # never shown: the child owns it
    child.queue.deliveries.labels("accepted").inc(7)
    child.sessions.set(123)  # never shown: the parent owns it
    merged = samples(merged_exposition(parent.registry, generate_latest(child.registry).decode()))
    assert merged[("relay_queue_deliveries_total", (("outcome", "accepted"),))] == 7
    assert merged[("relay_sessions", ())] == 4
    assert ("relay_queue_deliveries_created", (("outcome", "accepted"),)) in merged
    assert ("relay_limiter_wait_seconds_count", ()) in merged


def test_child_families_are_absent_while_the_child_is_down() -> None:
    """No child exposition: its families are left out, not shown as the parent's zeros."""
    parent = RelayMetrics()
    names = {name for name, _ in samples(merged_exposition(parent.registry, None))}
    assert "relay_sessions" in names
    assert not {name for name in names if child_owned(name.removesuffix("_total"))}


def test_an_unreadable_child_exposition_leaves_its_families_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = RelayMetrics()
    with caplog.at_level(logging.WARNING):
        text = merged_exposition(parent.registry, "relay_queue_deliveries_total{ nonsense\n")
    assert b"relay_sessions" in text and b"relay_queue_deliveries" not in text
    assert "unreadable" in caplog.text


def test_child_owned_names() -> None:
    assert all(child_owned(name) for name in CHILD_FAMILIES)
    assert child_owned("relay_queue_deliveries_created")
    assert not child_owned("relay_queue_dead_letters")  # the parent's depth gauge
    assert not child_owned("relay_spool_accepted")


def test_the_worker_runs_this_interpreter_with_this_path() -> None:
    """`python -m relay.delivery_main` with the parent's sys.path (a PEX's wheels included)."""
    assert worker_command() == [sys.executable, "-m", "relay.delivery_main"]
    env = worker_environ({"RELAY_DELIVERY": "queue"})
    assert env["RELAY_DELIVERY"] == "queue"
    assert env["PYTHONPATH"].split(os.pathsep) == [p for p in sys.path if p]


async def test_wakes_coalesce_in_a_full_pipe_and_stop_sends_the_grace(tmp_path: Path) -> None:
    """More wakes than the pipe holds never block nor fail; the child reads them, then the stop
    line with the grace in milliseconds, then EOF."""
    out = tmp_path / "seen"
    command = [sys.executable, "-c", READING_CHILD, str(out)]
    process = DeliveryProcess(CollectorRegistry(), command=command, environ=os.environ)
    await process.start()
    await eventually(lambda: process.up, "the child's ready line")
    await process.probe()
    for _ in range(200_000):  # more than a pipe's 64 KiB
        process.wake()
    await process.stop(2.5)
    seen = out.read_bytes()
    assert seen.endswith(b"s2500\n")
    assert 0 < seen.count(b".") <= 200_000
    assert not process.up and process.restarts_count == 0


async def test_an_exiting_child_is_restarted_with_a_growing_pause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each unexpected exit is logged as an error and counted; the pauses double up to the cap;
    while down, the (advisory) probe says so and /metrics says relay_queue_worker_up 0."""
    registry = CollectorRegistry()
    process = DeliveryProcess(
        registry,
        command=[sys.executable, "-c", FAILING_CHILD],
        environ=os.environ,
        first_backoff=0.05,
        max_backoff=0.2,
    )
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="relay.delivery_process"):
        await process.start()
        await eventually(lambda: process.restarts_count >= 4, "four restarts")
        with pytest.raises(NotReady, match="delivery worker down"):
            await process.probe()
        text = await process.exposition()
        await process.stop(1.0)
    # 0.05 + 0.1 + 0.2 + 0.2 at least: the pauses doubled and were capped.
    assert time.monotonic() - started >= 0.5
    errors = [r for r in caplog.records if "exited unexpectedly (status 3)" in r.getMessage()]
    assert len(errors) >= 4
    assert "restarting in 0 s" in errors[0].getMessage()
    assert samples(text)[("relay_queue_worker_up", ())] == 0
    assert samples(text)[("relay_queue_worker_restarts_total", ())] >= 4
    count = process.restarts_count
    await asyncio.sleep(0.3)
    assert process.restarts_count == count, "restarted after stop"


async def test_a_child_that_ignores_the_stop_is_killed_after_the_grace(tmp_path: Path) -> None:
    """A worker still running `CLOSE_MARGIN` s after its grace is killed; stop returns."""
    stubborn = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "args = sys.argv[1:]\n"
        "os.write(int(args[args.index('--report-fd') + 1]), b'ready 1\\n')\n"
        "time.sleep(60)\n"
    )
    process = DeliveryProcess(
        CollectorRegistry(), command=[sys.executable, "-c", stubborn], environ=os.environ
    )
    await process.start()
    await eventually(lambda: process.up, "the child's ready line")
    pid = process.pid
    await process.stop(0.0)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped
