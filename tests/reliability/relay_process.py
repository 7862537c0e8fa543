"""The relay as a real process (`python -m relay.main`), as production runs it, for the suites.

A process rather than `serve()` in the test's loop: its memory (PSS) is its own, SIGTERM is a real
signal, and "the relay stays up" means the same PID is still alive. The environment is built for
Pants' sandbox too: the child gets this interpreter (`sys.executable`) and `sys.path` as its
PYTHONPATH. Logs go to a file, never to a pipe nobody reads (a full pipe would block the relay).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import attrs
import psutil

# Imported, not only named: the entry point is found here (and Pants infers the dependency).
import relay.main

HOST = "127.0.0.1"
MIB = 1024 * 1024


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def relay_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Environment of a relay process: this interpreter's path, no inherited relay/AWS settings."""
    prefixes = ("AWS_", "RELAY_", "SMTP_", "SES_", "REDIS_", "USE_", "DYNAMODB_", "SSL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


@attrs.frozen
class Readiness:
    """One `/readyz` poll: HTTP status (0 when nothing answered) at a monotonic time."""

    at: float
    status: int


class RelayProcess:
    """One `python -m relay.main` process on fixed loopback ports (restartable on the same ports).

    Attributes:
        smtp_port / metrics_port: where it listens (chosen free once, kept across restarts).
        log_path: the relay's stderr (JSON log lines).
        exit_codes: exit status of every process started so far, once it ended.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.smtp_port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_dir / "relay.log"
        self.exit_codes: list[int] = []
        settings = {
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(self.smtp_port),
            "SERVER_FQDN": "relay.reliability.test",
            "RELAY_METRICS_HOST": HOST,
            "RELAY_METRICS_PORT": str(self.metrics_port),
            "RELAY_LOG_LEVEL": "WARNING",
        }
        settings.update(env)
        self._env = relay_environment(settings)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    @property
    def pid(self) -> int:
        """PID of the running process."""
        assert self._process is not None
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the current process is running."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start a process and wait until its SMTP and ops ports accept connections."""
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-m", relay.main.__name__],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        deadline = time.monotonic() + timeout
        for port in (self.smtp_port, self.metrics_port):
            while not _accepts(port):
                if self._process.poll() is not None:
                    message = f"relay exited with {self._process.returncode}: {self.log_tail()}"
                    raise RuntimeError(message)
                if time.monotonic() > deadline:
                    message = f"relay did not listen on {port} within {timeout} s"
                    raise TimeoutError(message)
                time.sleep(0.05)

    def pss(self) -> int:
        """Proportional set size of the relay process, in bytes."""
        return int(psutil.Process(self.pid).memory_full_info().pss)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait (without blocking the loop) for the current process to end; its status or None."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while self._process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        code = self._process.poll()
        if code is not None:
            self.exit_codes.append(code)
        return code

    async def stop(self) -> None:
        """SIGTERM the process, then SIGKILL if it does not end within 20 s.

        Waits without blocking the event loop: the relay's shutdown says QUIT to the upstream,
        which may be served by this very loop.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        if await self.wait_exit(20.0) is None:
            process.kill()
            process.wait(5)
            self.exit_codes.append(process.returncode)

    def log_tail(self, size: int = 3000) -> str:
        """The end of the relay's log."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return "(no log)"

    async def readyz(self, timeout: float = 8.0) -> int:
        """GET /readyz; the HTTP status, or 0 when the endpoint does not answer.

        `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` loses a cancellation that
        arrives as the request completes, and the poller below then never stopped (the fault
        matrix hung in CI on exactly that)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._get_status("/readyz")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return 0

    async def _get_status(self, path: str) -> int:
        reader, writer = await asyncio.open_connection(HOST, self.metrics_port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()
        finally:
            writer.close()
        return int(status_line.split()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


class ReadinessPoller:
    """Polls `/readyz` every `interval` seconds in a task, recording each answer."""

    def __init__(self, relay: RelayProcess, interval: float = 0.25) -> None:
        self.relay = relay
        self.interval = interval
        self.polls: list[Readiness] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start polling."""
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Stop polling. The flag ends the loop even if a cancellation were lost."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[Readiness]:
        """The polls begun between two monotonic times."""
        return [p for p in self.polls if start <= p.at <= end]

    async def _poll(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            status = await self.relay.readyz()
            self.polls.append(Readiness(started, status))
            await asyncio.sleep(self.interval)
