"""Run a real relay for the suites: in-process, on a thread of its own, or as its own process.

- `InProcessRelay` runs `serve()` in a task of the test's event loop and stops it through an
  injected shutdown trigger (as hypercorn's tests do), so a test can hand it fake collaborators.
- `ThreadedRelay` runs the same on its own event loop in a daemon thread, so that blocking
  clients (smtplib, hypothesis) can talk to it from the test thread.
- `RelayProcess` runs `python -m relay.main` configured through environment variables, exactly as
  deployed: its own logging set-up, file descriptors, memory (PSS) and real signals.

Only the relay's public entry points are used (`RelayConfig`, `build_components`, `serve` and
`relay.main`). Everything listens on 127.0.0.1. A child process gets this interpreter
(`sys.executable`) and `sys.path` as its PYTHONPATH, so it sees the same sources and requirements
as the test, from a checkout or inside a Pants sandbox; its log goes to a file, never to a pipe
nobody reads (a full pipe would block the relay).

Delivery mode: the suites check DATA replies, so a relay process runs with RELAY_DELIVERY=direct
unless the test sets RELAY_DELIVERY itself (`DIRECT_DELIVERY`), and its spool is a scratch
directory (`scratch_spool_dir`) unless RELAY_SPOOL_DIR is given, so that no test writes
`./spool` in the working directory. In-process relays get the same from their configuration
(`tests.integration.relay_support.base_config` pins `direct`; a code-built configuration keeps its
spool in memory).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

import relay.main  # the processes below run it: this import makes Pants package it
from relay.config import RelayConfig
from relay.server import RelayServer, serve
from relay.wiring import Components, build_components
from ses_core.testing.ports import LOOPBACK, free_port, wait_until_accepting
from ses_core.testing.upstream import SmtpUpstream

#: Variables a relay process never inherits from the test's own environment.
INHERITED_PREFIXES_DROPPED = (
    "AWS_",
    "RELAY_",
    "SMTP_",
    "SES_",
    "REDIS_",
    "USE_",
    "DYNAMODB_",
    "SSL_",
)

ComponentsHook = Callable[[Components], None]

#: What the suites run with unless a test chooses: a 250 means the upstream accepted (the DATA
#: replies they check). Queue-mode tests set RELAY_DELIVERY=queue (or `QueueSettings`) themselves.
DIRECT_DELIVERY = {"RELAY_DELIVERY": "direct"}


def scratch_spool_dir() -> str:
    """A fresh directory for a relay's spool, removed when the test process exits."""
    directory = tempfile.mkdtemp(prefix="relay-spool-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


def upstream_environ(upstream: SmtpUpstream, ca_file: str) -> dict[str, str]:
    """The variables pointing a relay at `upstream` (a loopback SES stand-in) with its login."""
    if upstream.credentials is None:
        message = "the relay logs in to SES: give the stand-in credentials"
        raise ValueError(message)
    username, password = upstream.credentials
    return {
        "AWS_SMTP_HOST": upstream.host,
        "AWS_SMTP_PORT": str(upstream.port),
        "AWS_SMTP_USERNAME": username,
        "AWS_SMTP_PASSWORD": password,
        "RELAY_UPSTREAM_CA_FILE": ca_file,
    }


def process_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a relay process: this interpreter's path, `extra`, nothing inherited
    that configures a relay; direct delivery and a scratch spool unless `extra` sets them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES_DROPPED)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["RELAY_METRICS_PORT"] = "off"
    env.update(DIRECT_DELIVERY)
    env.update(extra)
    if "RELAY_SPOOL_DIR" not in extra:
        env["RELAY_SPOOL_DIR"] = scratch_spool_dir()
    return env


def relay_command() -> list[str]:
    """The command line that starts the relay as production does."""
    return [sys.executable, "-m", relay.main.__name__]


class InProcessRelay:
    """`serve(config)` in a task of the running event loop.

    As an async context manager it yields the started `RelayServer` and shuts it down on exit;
    `start`, `stop` and `wait_stopped` give a test the steps in between.
    """

    def __init__(
        self,
        config: RelayConfig,
        components: Components | None = None,
        *,
        start_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.components = components
        self._start_timeout = start_timeout
        self._trigger = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.server: RelayServer | None = None

    async def start(self) -> RelayServer:
        """Start `serve()` and wait until it listens; the running server."""
        started: list[RelayServer] = []
        self._task = asyncio.create_task(
            serve(
                self.config,
                shutdown_trigger=self._trigger.wait,
                components=self.components,
                on_started=started.append,
            )
        )
        deadline = time.monotonic() + self._start_timeout
        while not started:
            if self._task.done():
                self._task.result()  # raises what stopped serve() from starting
                message = "serve() returned before it started"
                raise RuntimeError(message)
            if time.monotonic() > deadline:
                message = f"relay did not start within {self._start_timeout} s"
                raise TimeoutError(message)
            await asyncio.sleep(0.005)
        self.server = started[0]
        return self.server

    def stop(self) -> None:
        """Pull the shutdown trigger (the relay drains and stops, as on SIGTERM)."""
        self._trigger.set()

    @property
    def stopped(self) -> bool:
        """Whether `serve()` has returned."""
        return self._task is not None and self._task.done()

    async def wait_stopped(self, timeout: float = 30.0) -> None:
        """Wait for `serve()` to return; re-raise what it raised."""
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout)

    async def __aenter__(self) -> RelayServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        await self.wait_stopped()


class ThreadedRelay:
    """An `InProcessRelay` on its own event loop in a daemon thread (a context manager).

    Its components are built from the configuration; `adjust` may swap one before the relay
    starts (for instance an AUTH throttle without delays for fuzzing).

    Attributes:
        server: the running `RelayServer` (after `__enter__`).
    """

    def __init__(
        self,
        config: RelayConfig,
        *,
        adjust: ComponentsHook | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.config = config
        self._adjust = adjust
        self._start_timeout = start_timeout
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.server: RelayServer | None = None

    @property
    def port(self) -> int:
        """The bound SMTP port."""
        assert self.server is not None
        return self.server.port

    @property
    def alive(self) -> bool:
        """Whether the relay is still running (it ends only when told to, or by crashing)."""
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def unexpected_errors(self) -> float:
        """How many exceptions the relay answered with its internal-error 451 so far."""
        assert self.server is not None
        value = self.server.metrics.registry.get_sample_value("relay_unexpected_errors_total")
        return value or 0.0

    def open_sessions(self) -> int:
        """Client sessions the relay holds right now."""
        assert self.server is not None
        return len(self.server.sessions)

    def __enter__(self) -> ThreadedRelay:
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        if not self._started.wait(self._start_timeout):
            message = f"relay did not start within {self._start_timeout} s"
            raise TimeoutError(message)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            components = await build_components(self.config)
            if self._adjust is not None:
                self._adjust(components)
            async with InProcessRelay(self.config, components) as server:
                self.server = server
                self._started.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test thread, which re-raises it
            self._error = exc
            self._started.set()


class RelayProcess:
    """`python -m relay.main` with the given environment (a context manager), restartable.

    The harness chooses the listening ports once (SMTP_HOST/SMTP_PORT and, with `ops_endpoint`,
    RELAY_METRICS_HOST/RELAY_METRICS_PORT), so a restarted relay comes back on the same ports.

    Attributes:
        port: the SMTP port it listens on.
        metrics_port: the ops endpoint's port (`/readyz`, `/metrics`), or None when it is off.
        log_path: the file receiving its stdout and stderr, or None to discard them.
        exit_codes: the exit status of every process started so far, once it ended.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        log_path: Path | None = None,
        ops_endpoint: bool = False,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port() if ops_endpoint else None
        self.log_path = log_path
        self.exit_codes: list[int] = []
        settings = dict(environ)
        settings.update({"SMTP_HOST": LOOPBACK, "SMTP_PORT": str(self.port)})
        if self.metrics_port is not None:
            settings.update(
                {"RELAY_METRICS_HOST": LOOPBACK, "RELAY_METRICS_PORT": str(self.metrics_port)}
            )
        else:
            settings["RELAY_METRICS_PORT"] = "off"
        self._env = process_environ(settings)
        self._command = list(command) if command is not None else relay_command()
        self._process: subprocess.Popen[bytes] | None = None
        self._exit_recorded = False

    @property
    def pid(self) -> int:
        """The process id of the running relay."""
        assert self._process is not None
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the current process is running."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start a process and wait until its ports accept connections."""
        output: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            output = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it open
        try:
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        finally:
            if not isinstance(output, int):
                output.close()
        self._exit_recorded = False
        deadline = time.monotonic() + timeout
        for port in (self.port, self.metrics_port):
            if port is None:
                continue
            try:
                wait_until_accepting(
                    port, timeout=max(0.0, deadline - time.monotonic()), alive=lambda: self.alive
                )
            except ChildProcessError:
                code = self._process.poll()
                message = f"relay exited with {code}: {self.log_tail()}"
                raise RuntimeError(message) from None

    def pss(self) -> int:
        """Proportional set size of the relay, in bytes: its process and its children (the
        queue's delivery process), since both are the relay's memory."""
        process = psutil.Process(self.pid)
        total = 0
        for member in (process, *process.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += int(member.memory_full_info().pss)
        return total

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the relay (SIGTERM and SIGINT shut it down gracefully)."""
        assert self._process is not None
        self._process.send_signal(signum)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown)."""
        self.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Wait (blocking) for the current process to end; its status, or None on timeout."""
        assert self._process is not None
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._ended()

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait without blocking the loop for the current process to end; its status or None."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while self._process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self._ended()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process, SIGKILL it if it has not ended within `timeout`; its status."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self.terminate()
            if self.wait(timeout) is None:
                self._process.kill()
                self._process.wait(5)
        return self._ended()

    async def astop(self, timeout: float = 20.0) -> int | None:
        """`stop` without blocking the event loop: the relay's shutdown says QUIT to its
        upstream, which may be served by this very loop."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self.terminate()
            if await self.wait_exit(timeout) is None:
                self._process.kill()
                self._process.wait(5)
        return self._ended()

    def _ended(self) -> int | None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None and not self._exit_recorded:
            self._exit_recorded = True
            self.exit_codes.append(code)
        return code

    def log_text(self) -> str:
        """Everything the relay has logged so far."""
        if self.log_path is None:
            return "(log discarded)"
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def log_tail(self, size: int = 3000) -> str:
        """The end of the relay's log."""
        return self.log_text()[-size:]

    async def readyz(self, timeout: float = 8.0) -> int:
        """GET /readyz; the HTTP status, or 0 when the endpoint does not answer.

        `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` can lose a cancellation that
        arrives as the request completes, and a poller cancelled then would never stop.
        """
        if self.metrics_port is None:
            message = "the ops endpoint is off: create the RelayProcess with ops_endpoint=True"
            raise RuntimeError(message)
        try:
            async with asyncio.timeout(timeout):
                return await self._get_status(self.metrics_port, "/readyz")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return 0

    async def _get_status(self, port: int, path: str) -> int:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()
        finally:
            writer.close()
        return int(status_line.split()[1])

    def __enter__(self) -> RelayProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
