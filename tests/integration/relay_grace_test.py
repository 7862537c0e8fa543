"""SIGTERM never cuts a transaction that is still within RELAY_MAX_WAIT.

A DATA may wait up to `RELAY_MAX_WAIT` for rate tokens and SES retries, and then needs one more
upstream exchange (at most `RELAY_UPSTREAM_TIMEOUT`). The default `RELAY_GRACE_PERIOD` covers
both, and compose's `stop_grace_period` (after which docker sends SIGKILL) covers the grace period.
The shutdown test runs the defaults scaled down a hundredfold, like the other shutdown tests.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from relay import variables as v
from relay.outbox import OutboxSender
from relay.wiring import Components
from ses_core.smtp import OutboundMessage, SendResult
from tests.integration.relay_support import base_config, message, relay_client
from tests.support.relay_harness import InProcessRelay

COMPOSE_CANDIDATES = (
    Path("docker/compose.yaml"),
    Path(__file__).parents[2] / "docker/compose.yaml",
)
#: The defaults, scaled down so the test takes about a second.
SCALE = 0.01


def compose_stop_grace_period() -> float:
    """compose.yaml's `stop_grace_period`, in seconds."""
    path = next(p for p in COMPOSE_CANDIDATES if p.is_file())
    match = re.search(r"^\s*stop_grace_period:\s*(\d+)s\s*$", path.read_text(), re.MULTILINE)
    assert match is not None, f"no stop_grace_period in {path}"
    return float(match.group(1))


def test_default_grace_period_outlasts_max_wait_and_one_exchange() -> None:
    """RELAY_GRACE_PERIOD >= RELAY_MAX_WAIT + RELAY_UPSTREAM_TIMEOUT, and compose's
    stop_grace_period is longer still."""
    grace, wait = v.RELAY_GRACE_PERIOD.default, v.RELAY_MAX_WAIT.default
    assert grace >= wait + v.RELAY_UPSTREAM_TIMEOUT.default, (grace, wait)
    assert compose_stop_grace_period() > grace


class WaitsUntilDeadline:
    """A sender that uses its whole deadline (rate waits, SES retries), then one last exchange
    of `exchange` seconds, and delivers to an outbox."""

    def __init__(self, outbox: Path, exchange: float) -> None:
        self.inner = OutboxSender(outbox)
        self.exchange = exchange
        self.entered = asyncio.Event()
        self.closed = False

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        self.entered.set()
        assert deadline is not None
        await asyncio.sleep(max(deadline - time.monotonic(), 0.0) + self.exchange)
        return await self.inner.send(message, deadline=None)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True


async def send_one(harness: InProcessRelay) -> int:
    """Send one message through the running relay; the DATA reply code."""
    assert harness.server is not None
    client = await relay_client(harness.server)
    try:
        await client.ehlo()
        await client.mail("app@example.com")
        await client.rcpt("a@example.org")
        return (await client.data(message("grace"))).code
    finally:
        client.close()


async def test_transaction_using_all_of_max_wait_finishes_during_shutdown(tmp_path: Path) -> None:
    """With the default ratio, a DATA that waits its whole RELAY_MAX_WAIT plus one upstream
    exchange still gets its 250 after SIGTERM, and the relay then stops."""
    max_wait = v.RELAY_MAX_WAIT.default * SCALE
    exchange = v.RELAY_UPSTREAM_TIMEOUT.default * SCALE * 0.5
    sender = WaitsUntilDeadline(tmp_path, exchange)
    config = base_config(max_wait=max_wait, grace_period=v.RELAY_GRACE_PERIOD.default * SCALE)
    harness = InProcessRelay(config, Components(sender=sender))
    await harness.start()
    in_flight = asyncio.create_task(send_one(harness))
    await asyncio.wait_for(sender.entered.wait(), 5)
    harness.stop()  # the trigger stands for SIGTERM, right after the transaction began
    assert await asyncio.wait_for(in_flight, 10) == 250
    await harness.wait_stopped(10)
    assert sender.closed
    assert len(list(tmp_path.glob("*.eml"))) == 1
