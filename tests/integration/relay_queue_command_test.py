"""`relay queue ...` beside a running queueing relay process, on the same spool, as the runbooks
use it: a message deferred for minutes goes out at once after `retry`; `stats` and `show` see
what the relay stored."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from relay.main import main as relay_main
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SES_TEMPORARY_FAILURE, Fault, SmtpUpstream, Stage
from tests.integration.queue_e2e_support import (
    message_id,
    metric,
    queue_environ,
    send_batch,
    wait_for,
)
from tests.support.relay_harness import RelayProcess


async def queue_command(*argv: str) -> tuple[int, str]:
    """Run `relay queue ARGV` (in a thread: it blocks); its status and stdout."""
    out = io.StringIO()

    def run() -> int:
        with redirect_stdout(out):
            return relay_main(["queue", *argv])

    status = await asyncio.to_thread(run)
    return status, out.getvalue()


async def test_retry_delivers_a_deferred_message_while_the_relay_runs(
    upstream: SmtpUpstream, certificates: TestCertificates, tmp_path: Path
) -> None:
    """A message deferred by a transient failure waits a minute or more; `relay queue retry ID`
    from another process makes the running relay deliver it within seconds."""
    spool = tmp_path / "spool"
    upstream.faults.set(Fault.reply(Stage.MAIL, *SES_TEMPORARY_FAILURE), times=None)
    relay = RelayProcess(
        # A short attempt: the pooled client's own retries give up quickly, the queue defers.
        queue_environ(upstream, certificates, spool, RELAY_QUEUE_ATTEMPT_TIMEOUT="2"),
        log_path=tmp_path / "relay.log",
        ops_endpoint=True,
    )
    await asyncio.to_thread(relay.start, 30.0)
    deferred = 'relay_queue_retries_total{reason="transient"}'
    try:
        assert await send_batch(relay.port, ["later"]) == {"later": 250}
        for _ in range(200):
            if await metric(relay.metrics_port, deferred) >= 1:
                break
            await asyncio.sleep(0.1)
        upstream.faults.clear()  # SES is back; the message would still wait for its backoff
        status, listed = await queue_command("list", "--json", "--spool-dir", str(spool))
        [row] = [json.loads(line) for line in listed.splitlines()]
        assert status == 0 and row["attempts"] == 1
        assert row["last_error"], row
        assert row["next_attempt_at"] > row["received_at"] + 30, "not deferred for long"
        status, shown = await queue_command("show", row["id"], "--spool-dir", str(spool))
        assert status == 0 and "451 Temporary service failure" in shown
        assert await queue_command("retry", row["id"], "--spool-dir", str(spool)) == (
            0,
            f"{row['id']}: due now\n",
        )
        await wait_for(lambda: upstream.accepted == 1, timeout=15, what="the retried message")
        # The relay commits the outcome just after the upstream's 250 (outcomes are gathered for
        # up to 10 ms): poll, bounded, instead of reading the spool at once.
        for _ in range(100):
            status, stats = await queue_command("stats", "--json", "--spool-dir", str(spool))
            if status != 0 or json.loads(stats)["messages"] == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await relay.astop()
    assert upstream.messages[0].message_id == message_id("later")
    assert status == 0 and json.loads(stats)["messages"] == 0
