"""Queue mode's promise, proven on a real relay process: a 250 means the message is on disk.

- fsync before 250: the relay runs under strace; for every `250 2.0.0 Ok: queued as` written to a
  client, an fsync/fdatasync of a spool file started after that message's DATA was read and
  finished before the reply was written (a `kill -9` alone cannot show this: the page cache
  survives it, a power cut does not);
- kill -9 under load, many times, restarting on the same spool: every Message-ID that got a 250
  arrives, duplicates only for deliveries in flight at a kill;
- a large backlog accepted while the upstream is down is delivered exactly once after a restart.

strace is required (`/usr/bin/strace`; CI installs it): without it the first test fails saying
so, it is never skipped.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import psutil

from relay.main import main as relay_main
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.queue_e2e_support import (
    count_by_id,
    delivered_ids,
    message_id,
    queue_environ,
    send_batch,
    wait_for,
)
from tests.integration.strace_log import parse, unsynced_replies
from tests.support.relay_harness import RelayProcess, relay_command

QUEUED = "250 2.0.0 Ok: queued as"
TRACED = (
    "fsync,fdatasync,rename,renameat,renameat2,"
    "read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg"
)


def strace_path() -> str:
    """strace's path; an assertion error saying how to get it when it is missing."""
    # A Pants sandbox may run tests without the usual PATH: look in the usual places too.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/bin", "/usr/bin", "/bin"])
    found = shutil.which("strace", path=path)
    assert found is not None, (
        "strace is required by the fsync-before-250 test: install it "
        "(apt-get install -y strace; .ci/run does)"
    )
    return found


async def stop_traced(relay: RelayProcess) -> None:
    """SIGTERM the relay itself (strace's child), then wait for strace to write its log."""
    for child in psutil.Process(relay.pid).children():
        child.send_signal(signal.SIGTERM)
    await relay.wait_exit(30)
    await relay.astop(5)


async def test_every_250_follows_an_fsync_of_the_spool(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """Each `250 ... queued as` written to a client comes after an fsync/fdatasync of a spool
    file that started after the message's DATA was read, over one and over several
    connections."""
    trace = tmp_path / "relay.strace"
    spool = tmp_path / "spool"
    command = [strace_path(), "-f", "-tt", "-yy", "-s", "256", "-e", f"trace={TRACED}"]
    command += ["-o", str(trace), *relay_command()]
    relay = RelayProcess(
        queue_environ(upstream, certificates, spool),
        log_path=tmp_path / "relay.log",
        command=command,
    )
    await asyncio.to_thread(relay.start, 60.0)
    acked: set[str] = set()
    try:
        await send_batch(relay.port, [f"one-{n}" for n in range(15)], acked=acked)
        await asyncio.gather(
            *(
                send_batch(relay.port, [f"c{c}-{n}" for n in range(8)], acked=acked)
                for c in range(4)
            )
        )
        await wait_for(lambda: upstream.accepted >= len(acked), timeout=30, what="delivery")
    finally:
        await stop_traced(relay)
    assert len(acked) == 47, relay.log_tail()

    calls = parse(trace.read_text(errors="replace").splitlines())
    database = spool.resolve() / "spool.sqlite3"
    durable = frozenset({str(database), f"{database}-wal"})
    replies, unsynced = unsynced_replies(
        calls, reply=QUEUED, listen_port=relay.port, durable_files=durable
    )
    assert len(replies) == len(acked), f"{len(replies)} 250s traced for {len(acked)} acked"
    assert unsynced == [], f"{len(unsynced)} of {len(replies)} 250s had no fsync before them"


async def test_kill_9_under_load_loses_no_acknowledged_message(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """Killed with SIGKILL at random moments under load and restarted on the same spool each
    time, the relay delivers every Message-ID it answered 250 for; repeats are bounded by the
    deliveries in flight at the kills (workers x kills)."""
    kills, workers = 6, 4
    environ = queue_environ(
        upstream, certificates, tmp_path / "spool", RELAY_QUEUE_WORKERS=str(workers)
    )
    relay = RelayProcess(environ, log_path=tmp_path / "relay.log")
    chooser = random.Random(int(os.environ.get("KILL_TEST_SEED", "15")))
    acked: set[str] = set()
    sent = 0
    try:
        for round_number in range(kills + 1):
            await asyncio.to_thread(relay.start, 30.0)
            tags = [f"k{round_number}-{c}-{n}" for c in range(3) for n in range(40)]
            load = asyncio.gather(
                *(
                    send_batch(relay.port, tags[c * 40 : (c + 1) * 40], acked=acked, timeout=5)
                    for c in range(3)
                )
            )
            sent += len(tags)
            if round_number == kills:  # the last round runs to the end and drains
                await load
                break
            # Kill mid-load, wherever the round has got to: after 5 to 100 of its 120 replies.
            target = len(acked) + chooser.randint(5, 100)
            await wait_for(lambda: len(acked) >= target, timeout=30, what="the load")  # noqa: B023
            os.kill(relay.pid, signal.SIGKILL)
            await load
            assert await relay.wait_exit(10) == -signal.SIGKILL
        expected = {message_id(tag) for tag in acked}
        await wait_for(
            lambda: expected <= set(delivered_ids(upstream)), timeout=60, what="every 250'd id"
        )
    finally:
        await relay.astop()
    counts = count_by_id(delivered_ids(upstream))
    repeats = sum(n - 1 for n in counts.values() if n > 1)
    assert sent // 4 < len(acked) < sent, f"{len(acked)} of {sent} acknowledged: kills missed"
    assert expected <= set(counts)
    assert repeats <= kills * workers, f"{repeats} repeated deliveries after {kills} kills"
    print(f"kill -9 x{kills}: {len(acked)} acked of {sent}, {repeats} repeats", file=sys.stderr)


async def test_large_backlog_survives_a_restart_and_is_delivered_once(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """2,000 messages accepted while the upstream refuses connections are all delivered, each
    exactly once, by the next relay started on the same spool with the upstream back."""
    spool = tmp_path / "spool"
    # Nothing listens on port 1. Attempts stuck waiting for a connection count as in flight at
    # SIGTERM: a short attempt timeout lets this relay stop well within the grace period.
    down = queue_environ(
        upstream,
        certificates,
        spool,
        AWS_SMTP_PORT="1",
        RELAY_QUEUE_ATTEMPT_TIMEOUT="2",
        RELAY_GRACE_PERIOD="10",
    )
    relay = RelayProcess(down, log_path=tmp_path / "down.log")
    await asyncio.to_thread(relay.start, 30.0)
    acked: set[str] = set()
    try:
        await asyncio.gather(
            *(
                send_batch(relay.port, [f"b{c}-{n}" for n in range(250)], acked=acked)
                for c in range(8)
            )
        )
    finally:
        assert await relay.astop(30) == 0, relay.log_tail()
    assert len(acked) == 2000, relay.log_tail()
    assert upstream.accepted == 0
    # The attempts made while the upstream was down are rescheduled minutes ahead: flush them
    # as an operator would after an outage (`relay queue retry --all`).
    flush = ["queue", "retry", "--all", "--spool-dir", str(spool)]
    assert await asyncio.to_thread(relay_main, flush) == 0

    started = time.monotonic()
    relay = RelayProcess(queue_environ(upstream, certificates, spool), log_path=tmp_path / "up.log")
    await asyncio.to_thread(relay.start, 30.0)
    try:
        await wait_for(lambda: upstream.accepted >= 2000, timeout=60, what="the backlog")
        await asyncio.sleep(0.5)  # anything delivered twice would arrive now
    finally:
        await relay.astop()
    counts = count_by_id(delivered_ids(upstream))
    assert set(counts) == {message_id(tag) for tag in acked}
    assert set(counts.values()) == {1}, "a message was delivered more than once"
    print(f"backlog of 2000 delivered in {time.monotonic() - started:.1f} s", file=sys.stderr)
