"""A queueing relay process (`python -m relay.main`) and SIGTERM: it stops accepting, exits 0
with the undelivered mail left in its spool, and the next start delivers it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ses_core.queue.local import LocalSpool
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import Fault, SmtpUpstream, Stage, ThreadedUpstream
from tests.integration.relay_queue_support import eventually, queue_environ, send
from tests.support.relay_harness import RelayProcess


async def test_sigterm_keeps_queued_mail_and_a_restart_delivers_it(
    certificates: TestCertificates, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with ThreadedUpstream(SmtpUpstream(certificates.server_context())) as upstream:
        # SES hangs at connect: the deliveries are in flight when SIGTERM comes.
        upstream.faults.set(Fault.stall(Stage.CONNECT, 15.0), times=None)
        environ = queue_environ(
            upstream,
            certificates,
            spool,
            RELAY_UPSTREAM_TIMEOUT="20",
            RELAY_QUEUE_ATTEMPT_TIMEOUT="20",
            RELAY_GRACE_PERIOD="1",
            RELAY_LOG_FORMAT="text",
        )
        for name in ("SMTP_HOST", "SMTP_PORT", "RELAY_METRICS_PORT"):
            environ.pop(name)  # the harness picks them
        process = RelayProcess(environ, log_path=tmp_path / "relay.log")
        process.start()
        try:
            replies = [await send(process.port, [f"r{n}@example.org"], number=n) for n in range(3)]
            assert [code for code, _ in replies] == [250, 250, 250], process.log_tail()
            await eventually(lambda: upstream.connections_opened >= 1)
            process.terminate()
            assert await process.wait_exit(20) == 0, process.log_tail()
            assert upstream.messages == []
            log = process.log_text()
            assert "queue delivery stopped" in log and "released" in log, log[-2000:]
            left = await asyncio.to_thread(LocalSpool.open, spool)
            try:
                assert left.summary().messages == 3
            finally:
                await left.aclose()
            upstream.faults.clear()
            process.start()
            await eventually(lambda: len(upstream.messages) == 3, timeout=30)
            assert await process.astop() == 0
        finally:
            process.stop()
    ids = sorted(m.message_id or "" for m in upstream.messages)
    assert ids == ["<0@example.com>", "<1@example.com>", "<2@example.com>"]
