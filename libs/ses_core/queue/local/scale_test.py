"""The spool's memory and per-call work do not grow with the queue's length.

Measured structurally, not by timing: SQLite's progress handler counts the virtual-machine
steps of each call, which a COUNT(*) or a full scan would multiply by the number of messages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ses_core.queue import NewMessage, QueuedEnvelope
from ses_core.queue.local import LocalSpool
from ses_core.queue.local._schema import insert_message

NOW = 10_000.0
QUEUED = 20_000


def fill(tx: sqlite3.Connection) -> None:
    for index in range(QUEUED):
        envelope = QueuedEnvelope("a@example.org", ("r@example.net",), received_at=NOW + index)
        insert_message(tx, NewMessage(envelope, b"m"))


async def vm_steps(spool: LocalSpool, call: Callable[[], Awaitable[Any]]) -> int:
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    spool._reader.connection.set_progress_handler(count, 1)
    try:
        await call()
    finally:
        spool._reader.connection.set_progress_handler(None, 1)
    return steps[0]


async def test_calls_do_not_scan_a_deep_queue(tmp_path: Path) -> None:
    """With 20,000 queued, stats/lease/next_due/body cost a bounded number of SQLite steps and
    the only per-message state in memory is the set of leased ids."""
    with LocalSpool.open(tmp_path / "s", free_bytes=lambda: 1 << 40) as spool:
        await spool._write(fill)
        assert (await spool.stats()).messages == QUEUED
        leased: list[Any] = []

        async def lease() -> None:
            leased.extend(await spool.lease(10, NOW + QUEUED))

        for call in (spool.stats, lease, spool.next_due):
            assert await vm_steps(spool, call) < 1_000, call
        assert await vm_steps(spool, lambda: spool.body(leased[0])) < 200
        assert spool.leased_count == 10 and len(spool._leased) == 10
        assert await spool.next_due() == NOW + 10
        # the last ones are leased past the 10 already out, still without a scan
        assert await vm_steps(spool, lease) < 1_000
        assert [m.envelope.received_at for m in leased[10:]] == [NOW + i for i in range(10, 20)]
