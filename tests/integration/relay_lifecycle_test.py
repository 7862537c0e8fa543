"""Start-up refusals and graceful shutdown: in-process with a trigger, and as a real process
receiving SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal
import smtplib
import subprocess
from pathlib import Path

import aiosmtplib
import pytest

from relay.config import ConfigError
from relay.outbox import OutboxSender
from relay.server import RelayServer, serve
from relay.wiring import Components
from ses_core.smtp import OutboundMessage, SendResult
from tests.integration.relay_support import base_config, message, relay_client
from tests.support.relay_harness import InProcessRelay, RelayProcess, process_environ, relay_command


class GatedSender:
    """Delivers to an outbox, but only once `gate` is set; records that it was entered/closed."""

    def __init__(self, outbox: Path) -> None:
        self.inner = OutboxSender(outbox)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.closed = False

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.send(message, deadline=deadline)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True


async def send_one(relay: RelayServer) -> int:
    """Send one message; return the DATA reply code (or the error's code)."""
    client = await relay_client(relay)
    try:
        await client.ehlo()
        await client.mail("app@example.com")
        await client.rcpt("a@example.org")
        return (await client.data(message())).code
    finally:
        client.close()


async def test_in_flight_transaction_finishes_during_shutdown(tmp_path: Path) -> None:
    """On shutdown: new connections refused, idle sessions get 421, the running DATA gets 250."""
    sender = GatedSender(tmp_path)
    harness = InProcessRelay(base_config(grace_period=10.0), Components(sender=sender))
    relay = await harness.start()
    idle = await relay_client(relay)
    await idle.ehlo()
    in_flight = asyncio.create_task(send_one(relay))
    await asyncio.wait_for(sender.entered.wait(), 5)
    harness.stop()
    for _ in range(100):
        if relay.draining:
            break
        await asyncio.sleep(0.01)
    noop = await idle.execute_command(b"NOOP")
    assert noop.code == 421
    with pytest.raises((OSError, aiosmtplib.SMTPConnectError)):
        await relay_client(relay)
    await asyncio.sleep(0.1)
    assert not harness.stopped  # still draining: the transaction is in flight
    sender.gate.set()
    assert await asyncio.wait_for(in_flight, 5) == 250
    await harness.wait_stopped(5)
    assert sender.closed
    assert len(list(tmp_path.glob("*.eml"))) == 1


async def test_grace_period_bounds_shutdown(tmp_path: Path) -> None:
    """A transaction that outlives RELAY_GRACE_PERIOD is cut off and the relay still stops."""
    sender = GatedSender(tmp_path)
    harness = InProcessRelay(base_config(grace_period=0.3), Components(sender=sender))
    relay = await harness.start()
    in_flight = asyncio.create_task(send_one(relay))
    await asyncio.wait_for(sender.entered.wait(), 5)
    harness.stop()
    await harness.wait_stopped(5)
    assert sender.closed
    with pytest.raises(aiosmtplib.SMTPException):
        await asyncio.wait_for(in_flight, 5)


async def test_open_relay_refused_in_process() -> None:
    """serve() refuses a public listener without AUTH or networks before binding anything."""
    config = base_config(listen_host="0.0.0.0")
    with pytest.raises(ConfigError, match="open relay"):
        await serve(config, shutdown_trigger=asyncio.Event().wait)


def run_main(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `python -m relay.main` to completion with `env` added."""
    return subprocess.run(
        relay_command(),
        env=process_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_open_relay_refused_by_main(tmp_path: Path) -> None:
    """The process exits 2 with one line naming SMTP_HOST, without a traceback."""
    result = run_main(
        {"SMTP_HOST": "0.0.0.0", "SMTP_PORT": "0", "RELAY_LOCAL_OUTBOX": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "configuration error: SMTP_HOST: " in result.stderr


def test_invalid_config_is_one_line_exit_2() -> None:
    """A bad value stops start-up with exit status 2 and one line naming the variable."""
    result = run_main({"SMTP_PORT": "twenty-five"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: SMTP_PORT: expected an integer, got 'twenty-five'"
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_local_mode_process_with_status_0(tmp_path: Path, signum: int) -> None:
    """A local-mode relay process delivers to its outbox and exits 0 on SIGTERM and SIGINT."""
    env = {
        "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
        "RELAY_BLACKLIST_SQLITE": str(tmp_path / "bl.sqlite3"),
    }
    with RelayProcess(env, log_path=tmp_path / "relay.log") as process:
        with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
            client.sendmail("app@example.com", ["you@example.org"], message("proc"))
        process.send_signal(signum)
        assert process.wait(15) == 0
        lines = [json.loads(line) for line in process.log_text().splitlines()]
    messages = [line["msg"] for line in lines]
    assert any(m.startswith("LOCAL MODE") for m in messages)
    assert any(
        line.get("event") == "transaction" and line["outcome"] == "accepted" for line in lines
    )
    assert messages[-1].startswith("relay stopped")
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
