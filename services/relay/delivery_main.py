"""The delivery worker process of a queueing relay: `python -m relay.delivery_main` (started by
`relay.delivery_process`, never by hand).

It reads the relay's configuration from the same environment, builds the limiter, blacklist,
sender and spool with the relay's own wiring functions, and runs the `QueueRunner` on them. Its
metrics are served on an ephemeral loopback port, reported to the parent as `ready <port>` on
the report pipe (held open for the process's life: the parent reads its EOF as the exit).

The wake pipe carries one byte per put (`runner.wake()`), and `s<grace in ms>\\n` when the parent
stops it; its EOF (the parent stopped or died, even by `kill -9`) stops delivery: in-flight
deliveries get the grace (RELAY_GRACE_PERIOD unless the parent said), the rest stays queued.
SIGTERM stops it the same way; SIGINT is ignored (a terminal's Ctrl-C reaches the whole process
group: the parent handles it and stops this process in order).

A new worker started while the previous one still finishes its deliveries finds the local
spool's lease lock taken: it waits for it (one warning), then starts delivering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import Any

from relay.config import ConfigError, RelayConfig
from relay.logs import setup_logging
from relay.metrics import RelayMetrics
from relay.ops_http import OpsHttpServer
from relay.wiring_queue import open_spool, queue_runner
from relay.wiring_stores import build_blacklist
from relay.wiring_upstream import Probe, build_limiter, build_sender
from ses_core.errors import SpoolUnavailable
from ses_core.queue import Spool

log = logging.getLogger("relay.delivery")

#: Added to the nice value of the delivery loop's thread once the spool is open: when the CPU
#: is short, accepting (the parent) goes first; the queue absorbs a delivery that falls behind
#: (SES's rate, not the CPU, paces it anyway). Linux nice values are per thread, and only the
#: loop's is raised: the spool's writer thread, started as the spool opened, keeps the parent's
#: priority, so a transaction holding the spool's write lock is never starved while the relay's
#: puts wait for it. Measured with one client connection on a shared 2-core box (means of four
#: runs): 0.51x of the direct ceiling with the whole process at nice 10, 0.54x like this.
NICENESS = 19

#: Wakes are gathered for this long before the workers look for due messages: under load they
#: then lease, send and settle more messages per spool transaction, and take the spool's write
#: lock from the SMTP front less often (a modest gain measured; 50 ms is nothing for mail).
WAKE_DELAY = 0.05

#: Seconds between two tries for the lease lock a previous worker still holds.
LEASE_LOCK_RETRY = 0.5

_STOP = re.compile(rb"s([0-9]+)\n")


class StopSignal:
    """When to stop and with what grace: the wake pipe's stop line or EOF, or SIGTERM."""

    def __init__(self, default_grace: float) -> None:
        self._default = default_grace
        self._event = asyncio.Event()
        self._control = bytearray()
        self.grace = default_grace

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def stop(self, grace: float | None = None) -> None:
        """Stop with `grace` (the default when None); the first request wins."""
        if not self._event.is_set():
            self.grace = self._default if grace is None else grace
            self._event.set()

    def feed(self, data: bytes, wake: Any) -> None:
        """Bytes read from the wake pipe: wakes, a stop line, or b"" (EOF)."""
        if not data:
            match = _STOP.search(bytes(self._control))
            self.stop(int(match.group(1)) / 1000 if match else None)
            return
        control = data.replace(b".", b"")
        if control:
            self._control += control
        if len(control) < len(data):
            wake()

    async def wait(self) -> float:
        """Wait for a stop; its grace."""
        await self._event.wait()
        return self.grace


class Debounced:
    """Calls `action` `delay` seconds after the first call, once for all calls until then."""

    def __init__(self, action: Any, delay: float) -> None:
        self._action = action
        self._delay = delay
        self._pending = False

    def __call__(self) -> None:
        if self._pending:
            return
        if self._delay <= 0:
            self._action()
            return
        self._pending = True
        asyncio.get_running_loop().call_later(self._delay, self._fire)

    def _fire(self) -> None:
        self._pending = False
        self._action()


def watch_wake_pipe(fd: int, stop: StopSignal, wake: Any) -> None:
    """Feed `stop` what the pipe `fd` carries (on the running loop); EOF removes the reader."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        stop.feed(data, wake)

    loop.add_reader(fd, readable)


async def wait_for_lease_lock(spool: Spool, stop: StopSignal) -> bool:
    """With the local spool, wait until this process may lease (a previous worker may still
    hold the lock); False when a stop came first."""
    from ses_core.queue.local import LocalSpool

    if not isinstance(spool, LocalSpool):
        return True
    warned = False
    while not stop.requested:
        try:
            found = await spool.lease(1, time.time())
        except SpoolUnavailable as exc:
            if not warned:
                log.warning("delivery waits for the spool: %s", exc)
                warned = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_LOCK_RETRY)
            continue
        for message in found:
            await spool.release(message)
        return True
    return False


async def run_worker(config: RelayConfig, wake_fd: int, report_fd: int) -> None:
    """Deliver from the spool until told to stop (see the module docstring)."""
    stop = StopSignal(config.grace_period)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.stop)
    metrics = RelayMetrics()
    probes: dict[str, Probe] = {}
    async with contextlib.AsyncExitStack() as stack:
        limiter, _ = await build_limiter(config, stack, probes)
        blacklist = build_blacklist(config, stack, probes)
        sender = await build_sender(config, stack, limiter, metrics)
        spool = await open_spool(config)
        stack.push_async_callback(spool.aclose)
        lower_loop_priority()
        runner = queue_runner(spool, sender, config, blacklist, metrics.delivery_events())
        ops = OpsHttpServer(metrics.registry, {}, host="127.0.0.1", port=0)
        await ops.start()
        stack.push_async_callback(ops.aclose)
        watch_wake_pipe(wake_fd, stop, Debounced(runner.wake, WAKE_DELAY))
        if not await wait_for_lease_lock(spool, stop):
            return
        # Start-up's objects (modules, clients, settings) go to the collector's permanent
        # generation, so full collections stop walking them: their pauses were the largest
        # gaps between deliveries at 500/s (17 ms; about 5 ms after).
        gc.freeze()
        await runner.start()
        os.write(report_fd, f"ready {ops.port}\n".encode())
        grace = await stop.wait()
        log.info("delivery worker stopping, grace %.1fs", grace)
        await runner.stop(grace)


def lower_loop_priority() -> None:
    """Raise the calling thread's nice value by `NICENESS` (threads it starts inherit it)."""
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + NICENESS)


def main(argv: list[str] | None = None) -> int:
    """Run the worker; the exit status (2: configuration error)."""
    parser = argparse.ArgumentParser(prog="relay.delivery_main")
    parser.add_argument("--wake-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        config = RelayConfig.from_environ(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, json_lines=config.log_json)
    try:
        _run(run_worker(config, args.wake_fd, args.report_fd))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except OSError as exc:
        log.error("delivery worker cannot run: %s", exc)
        return 1
    return 0


def _run(coroutine: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


if __name__ == "__main__":
    raise SystemExit(main())
