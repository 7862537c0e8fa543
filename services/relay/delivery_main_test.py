"""The delivery worker's side: what the wake pipe says (wakes, the stop line, EOF) and the wait
for the local spool's lease lock a previous worker still holds."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

import pytest

from relay.delivery_main import (
    NICENESS,
    Debounced,
    StopSignal,
    lower_loop_priority,
    wait_for_lease_lock,
    watch_wake_pipe,
)
from ses_core.queue import MemorySpool
from ses_core.queue.local import LocalSpool


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_wake_bytes_wake_once_per_read() -> None:
    stop, wakes = StopSignal(30.0), Wakes()
    stop.feed(b"....", wakes)
    stop.feed(b".", wakes)
    assert wakes.count == 2 and not stop.requested


async def test_the_stop_line_gives_the_grace_and_eof_stops() -> None:
    """`s<ms>\\n` (possibly split across reads, after wakes) then EOF: stop with that grace."""
    stop, wakes = StopSignal(30.0), Wakes()
    stop.feed(b"..s12", wakes)
    stop.feed(b"50\n", wakes)
    assert not stop.requested
    stop.feed(b"", wakes)
    assert stop.requested and await stop.wait() == 1.25
    assert wakes.count == 1


def test_eof_alone_stops_with_the_default_grace() -> None:
    """The parent died (even `kill -9`): its end of the pipe closed without a stop line."""
    stop = StopSignal(30.0)
    stop.feed(b"", Wakes())
    assert stop.requested and stop.grace == 30.0


def test_the_first_stop_wins() -> None:
    stop = StopSignal(30.0)
    stop.stop(5.0)
    stop.feed(b"s1000\n", Wakes())
    stop.feed(b"", Wakes())
    assert stop.grace == 5.0


async def test_the_pipe_is_watched_until_eof() -> None:
    read, write = os.pipe()
    stop, wakes = StopSignal(9.0), Wakes()
    watch_wake_pipe(read, stop, wakes)
    try:
        os.write(write, b"..")
        os.close(write)
        assert await asyncio.wait_for(stop.wait(), 10) == 9.0
        assert wakes.count >= 1
    finally:
        os.close(read)


async def test_a_new_worker_waits_for_the_lease_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While another opener of the spool leases (the previous worker finishing), the new one
    waits with one warning; it goes on once the lock is free."""
    previous = LocalSpool.open(tmp_path, min_free_bytes=0)
    await previous.lease(1, 0.0)  # takes the lease lock
    current = LocalSpool.open(tmp_path, min_free_bytes=0)
    stop = StopSignal(1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="relay.delivery"):
            waiting = asyncio.create_task(wait_for_lease_lock(current, stop))
            await asyncio.sleep(1.2)
            assert not waiting.done()
            await previous.aclose()
            assert await asyncio.wait_for(waiting, 10) is True
        warnings = [r for r in caplog.records if "another process is delivering" in r.message]
        assert len(warnings) == 1
    finally:
        await previous.aclose()
        await current.aclose()


async def test_a_stop_ends_the_wait_for_the_lease_lock(tmp_path: Path) -> None:
    previous = LocalSpool.open(tmp_path, min_free_bytes=0)
    await previous.lease(1, 0.0)
    current = LocalSpool.open(tmp_path, min_free_bytes=0)
    stop = StopSignal(1.0)
    try:
        waiting = asyncio.create_task(wait_for_lease_lock(current, stop))
        stop.stop()
        assert await asyncio.wait_for(waiting, 10) is False
    finally:
        await previous.aclose()
        await current.aclose()


async def test_other_spools_need_no_wait() -> None:
    assert await wait_for_lease_lock(MemorySpool(), StopSignal(1.0)) is True


async def test_wakes_are_gathered_into_one() -> None:
    """Many wakes within the delay wake the workers once; a later one wakes them again."""
    wakes = Wakes()
    debounced = Debounced(wakes, 0.01)
    for _ in range(100):
        debounced()
    while wakes.count == 0:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert wakes.count == 1
    debounced()
    while wakes.count == 1:
        await asyncio.sleep(0.005)
    Debounced(wakes, 0.0)()  # no delay: at once
    assert wakes.count == 3


def test_only_the_calling_thread_is_lowered() -> None:
    """Linux nice values are per thread: the loop's thread is lowered, one started before it
    (the spool's writer) is not, and one it starts afterwards inherits the lower priority."""
    seen: dict[str, int] = {}

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def loop_thread() -> None:
        seen["before"] = nice()
        lower_loop_priority()
        seen["after"] = nice()
        child = threading.Thread(target=lambda: seen.__setitem__("child", nice()))
        child.start()
        child.join()

    base = nice()
    thread = threading.Thread(target=loop_thread)
    thread.start()
    thread.join()
    assert seen == {"before": base, "after": min(base + NICENESS, 19), "child": seen["after"]}
    assert nice() == base
