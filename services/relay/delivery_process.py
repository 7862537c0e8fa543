"""Queue mode's delivery in a child process: the parent's side (start, wake, supervise, stop).

Why a process: delivering (TLS to SES, the spool's reads and settles, the workers' bookkeeping)
took about two thirds of the relay's single event loop and GIL, so a relay that delivered
accepted a third of what it accepted when idle. As Postfix keeps smtpd apart from its queue
manager and delivery agents, a queueing relay run as `python -m relay.main` keeps the SMTP front
in its own process and starts `python -m relay.delivery_main` for the `QueueRunner`; both open
the same spool (the local spool allows one process to lease, any number to put).

- Wake: one byte on a non-blocking pipe per put (a full pipe means a wake is already pending).
  The same pipe ends the child: its EOF (the parent stopped, or died even by `kill -9`) makes
  it stop gracefully, so no orphan keeps delivering. A stop writes `s<grace in ms>\\n` first.
- Supervision: a child that exits unexpectedly is logged as an ERROR and started again after a
  pause doubling from 1 s to 30 s (reset after a run of 30 s); `relay_queue_worker_restarts_total`
  counts restarts, `relay_queue_worker_up` says whether one is running and reported ready.
- Metrics: the child serves its registry on an ephemeral loopback port it reports on a second
  pipe (which it holds open for its life: the parent reads its EOF as the exit). The parent's
  `/metrics` takes the families only delivery updates (`CHILD_FAMILIES`) from the child's
  exposition, fetched at scrape time, and every other family from its own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

import relay.delivery_main  # the child runs it: this import also makes Pants package it
from relay.ops_http import NotReady

log = logging.getLogger(__name__)

#: The readiness check (advisory: the queue absorbs a worker that is down) in `/readyz`.
WORKER_PROBE = "delivery_worker"

#: Metric families that only delivery updates: taken from the child's exposition.
CHILD_FAMILIES = frozenset(
    {
        "relay_queue_deliveries",
        "relay_queue_retries",
        "relay_queue_dsn",
        "relay_queue_dead_lettered",
        "relay_queue_possible_duplicates",
        "relay_pool_size",
        "relay_pool_idle",
        "relay_pool_opened",
        "relay_pool_recycled",
        "relay_pool_failures",
        "relay_limiter_wait_seconds",
        "relay_upstream_latency_seconds",
    }
)

#: Seconds the parent allows beyond the grace for the child to close its spool and sender.
CLOSE_MARGIN = 2.0


def worker_command() -> list[str]:
    """`python -m relay.delivery_main` with this interpreter (a venv's, the PEX's, a test's)."""
    return [sys.executable, "-m", relay.delivery_main.__name__]


def worker_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus this process's `sys.path` as PYTHONPATH: the child imports what the parent
    imported, from a checkout, a venv or a zipapp PEX (whose wheels are on `sys.path`)."""
    env = dict(environ)
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return env


def child_owned(name: str) -> bool:
    """Whether the family `name` (as the text parser names it) comes from the child."""
    return name in CHILD_FAMILIES or name.removesuffix("_created") in CHILD_FAMILIES


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merged_exposition(registry: CollectorRegistry, child_text: str | None) -> bytes:
    """The parent's families, except `CHILD_FAMILIES` which come from `child_text` (absent when
    None: the child is down)."""
    families = [f for f in registry.collect() if not child_owned(f.name)]
    if child_text is not None:
        try:
            parsed = list(text_string_to_metric_families(child_text))
        except ValueError as exc:
            log.warning("delivery worker's metrics unreadable: %s", exc)
            parsed = []
        families.extend(f for f in parsed if child_owned(f.name))
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Families(families))
    return generate_latest(merged)


async def fetch_metrics(port: int, timeout: float) -> str | None:
    """GET /metrics from the child on 127.0.0.1:`port`; None on any failure."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                response = await reader.read()
            finally:
                writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        log.debug("delivery worker's metrics unavailable: %r", exc)
        return None
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body.decode("utf-8", errors="replace")


class _Child:
    """One started worker: its process, the write end of its wake pipe, its report pipe."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        wake_read, self.wake_fd = os.pipe()
        report_read, report_write = os.pipe()
        os.set_blocking(self.wake_fd, False)
        try:
            argv = [*command, "--wake-fd", str(wake_read), "--report-fd", str(report_write)]
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                argv, env=dict(env), stdin=subprocess.DEVNULL, pass_fds=(wake_read, report_write)
            )
        except BaseException:
            for fd in (self.wake_fd, report_read):
                os.close(fd)
            raise
        finally:
            os.close(wake_read)
            os.close(report_write)
        self.report_fd = report_read
        self.port: int | None = None
        self.started = time.monotonic()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self.wake_fd, b".")  # BlockingIOError: a wake is pending already

    def request_stop(self, grace: float) -> None:
        """Tell the child to stop with `grace` seconds, then close the pipe (its EOF)."""
        if self.wake_fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self.wake_fd, f"s{round(grace * 1000)}\n".encode())  # milliseconds
        self.close_wake()

    def close_wake(self) -> None:
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
            self.wake_fd = -1

    async def run(self) -> int:
        """Read the child's report (`ready <port>`) until EOF; then its exit status."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self.report_fd, "rb", 0)
        )
        try:
            while line := await reader.readline():
                words = line.split()
                if len(words) == 2 and words[0] == b"ready" and words[1].isdigit():
                    self.port = int(words[1])
                    log.info("delivery worker pid %d ready", self.process.pid)
        finally:
            self.port = None
            transport.close()
        while (code := self.process.poll()) is None:  # exits right after closing the pipe
            await asyncio.sleep(0.02)
        self.close_wake()
        return code


class DeliveryProcess:
    """Runs and supervises the delivery child; the runner a queue-mode `Delivery` holds
    (`start`, `wake`, `stop(grace)`), plus `probe` and `exposition` for the ops endpoint."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        command: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 30.0,
        fetch_timeout: float = 1.0,
    ) -> None:
        self._registry = registry
        self._command = list(command) if command is not None else worker_command()
        self._env = worker_environ(os.environ if environ is None else environ)
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._stable_after = stable_after
        self._fetch_timeout = fetch_timeout
        self._child: _Child | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.restarts = Counter(
            "relay_queue_worker_restarts",
            "Delivery worker processes restarted after an unexpected exit",
            registry=registry,
        )
        registry.register(_UpCollector(self))

    @property
    def up(self) -> bool:
        """Whether a worker runs and has reported ready."""
        child = self._child
        return child is not None and child.port is not None and child.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The running worker's process id, or None."""
        child = self._child
        return child.process.pid if child is not None else None

    async def start(self) -> None:
        """Start the first worker and its supervisor (a failure to exec raises here)."""
        self._child = _Child(self._command, self._env)
        self._supervisor = asyncio.create_task(self._supervise(), name="delivery-supervisor")

    def wake(self) -> None:
        """A message was put: wake the worker (one byte; coalesced while one is pending)."""
        if self._child is not None:
            self._child.wake()

    async def stop(self, grace: float) -> None:
        """Stop supervising; the worker stops with `grace` (deliveries in flight finish, the
        rest stays queued), and is killed if it has not exited `CLOSE_MARGIN` s after it."""
        if self._stopping.is_set():
            if self._supervisor is not None:
                await asyncio.wait({self._supervisor})
            return
        self._stopping.set()
        child, supervisor = self._child, self._supervisor
        if child is not None:
            child.request_stop(max(0.0, grace))
        if supervisor is None:
            return
        done, _ = await asyncio.wait({supervisor}, timeout=max(0.0, grace) + CLOSE_MARGIN)
        if not done and child is not None:
            log.error("delivery worker pid %d did not stop in time: killed", child.process.pid)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await asyncio.wait({supervisor})

    async def probe(self) -> None:
        """Readiness (advisory): raises `NotReady` while no worker is running."""
        if not self.up:
            raise NotReady(f"delivery worker down, restarting ({self.restarts_count} restarts)")

    @property
    def restarts_count(self) -> int:
        """Restarts so far."""
        return int(self._registry.get_sample_value("relay_queue_worker_restarts_total") or 0)

    async def exposition(self) -> bytes:
        """The relay's `/metrics`: see `merged_exposition`."""
        child = self._child
        text = None
        if child is not None and child.port is not None:
            text = await fetch_metrics(child.port, self._fetch_timeout)
        return merged_exposition(self._registry, text)

    async def _supervise(self) -> None:
        backoff = self._first_backoff
        while True:
            child = self._child
            if child is not None:
                code = await child.run()
                if self._stopping.is_set():
                    log.info("delivery worker pid %d stopped (status %d)", child.process.pid, code)
                    return
                if time.monotonic() - child.started >= self._stable_after:
                    backoff = self._first_backoff
                log.error(
                    "delivery worker pid %d exited unexpectedly (status %d); restarting in %.0f s",
                    child.process.pid,
                    code,
                    backoff,
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return
            backoff = min(backoff * 2, self._max_backoff)
            self.restarts.inc()
            try:
                self._child = _Child(self._command, self._env)
            except OSError as exc:
                log.error("delivery worker could not be started (tried again later): %s", exc)
                self._child = None


class _UpCollector(Collector):
    def __init__(self, process: DeliveryProcess) -> None:
        self._process = process

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "relay_queue_worker_up",
            "1 while the delivery worker process runs and has reported ready",
            value=1.0 if self._process.up else 0.0,
        )
