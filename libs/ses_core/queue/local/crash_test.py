"""A put that returned survives kill -9 of the process, body intact (what makes the 250 safe)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ses_core.queue.local import LocalSpool

# 20 concurrent "sessions" put messages and print each id once its put has returned.
CHILD = """
import asyncio, sys, time
from ses_core.queue import NewMessage, QueuedEnvelope
from ses_core.queue.local import LocalSpool

async def main():
    spool = LocalSpool.open(sys.argv[1], free_bytes=lambda: 1 << 40)
    numbers = iter(range(2000))

    async def session():
        for number in numbers:
            envelope = QueuedEnvelope("a@example.org", ("r@example.net",), received_at=time.time())
            message_id = await spool.put(NewMessage(envelope, b"body %d;" % number * 40))
            print(message_id, number, flush=True)
            await asyncio.sleep(0.005)  # so that the kill lands mid-stream

    await asyncio.gather(*(session() for _ in range(20)))
    print("done", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_every_put_that_returned_survives_sigkill(tmp_path: Path) -> None:
    """Kill -9 in the middle of a stream of puts: every id printed after put() is there."""
    directory = tmp_path / "spool"
    # the parent's sys.path: the same sources and requirements under Pants (a pex) and a venv
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    confirmed: dict[str, int] = {}
    deadline = time.monotonic() + 10
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)], stdout=subprocess.PIPE, env=env, text=True
    ) as child:
        try:
            assert child.stdout is not None
            while len(confirmed) < 200 and time.monotonic() < deadline:
                line = child.stdout.readline()
                assert line and not line.startswith("done"), "the child ended before the kill"
                message_id, number = line.split()
                confirmed[message_id] = int(number)
        finally:
            child.send_signal(signal.SIGKILL)
    assert confirmed, "the child confirmed no put"
    with LocalSpool.open(directory, free_bytes=lambda: 1 << 40) as spool:
        assert not spool.recovery.recovered
        leased = {m.id: m for m in await spool.lease(5000, time.time() + 1)}
        for message_id, confirmed_number in confirmed.items():
            assert message_id in leased, f"message {message_id} was confirmed, then lost"
            assert await spool.body(leased[message_id]) == b"body %d;" % confirmed_number * 40
        assert (await spool.stats()).messages == len(leased) >= len(confirmed)
