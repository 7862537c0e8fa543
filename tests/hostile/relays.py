"""Run a real relay for the hostile and security suites: in a thread, or as its own process.

Both forms are configured the way an operator configures the relay, through the environment
variables of `RelayConfig.from_environ`, and both deliver to a real `SmtpUpstream` (the SES
stand-in with STARTTLS and AUTH) on 127.0.0.1. The relay listens on 127.0.0.1 only.

- `ThreadedRelay` runs `serve()` on its own event loop in a daemon thread, so blocking test
  clients (and hypothesis) can talk to it from the test thread, and tests can swap collaborators
  (for instance an `AuthThrottle` without delays for fuzzing).
- `RelayProcess` runs `python -m relay.main` exactly as deployed (its own logging setup, its own
  file descriptors); its log output goes to a file the test reads afterwards.

Subprocesses use `sys.executable` and the test's own `sys.path`, so they also work inside a
Pants sandbox venv.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from relay.auth import hash_password
from relay.config import RelayConfig
from relay.server import RelayServer, serve
from relay.wiring import Components, build_components
from ses_core.testing.upstream import SmtpUpstream
from ses_core.testing.certs import TestCertificates

#: The relay's own AUTH user (clients authenticate with these).
RELAY_USER = "app"
RELAY_PASSWORD = "Relay-Pass-7f3c9e1a"
#: What the relay presents to the SES stand-in (SmtpUpstream's default credentials).
UPSTREAM_USER = "AKIATESTUSER"
UPSTREAM_PASSWORD = "test-smtp-password"

ComponentsHook = Callable[[Components], None]


def relay_environ(certs: TestCertificates, upstream: SmtpUpstream, **extra: str) -> dict[str, str]:
    """The environment of a loopback relay with STARTTLS, one AUTH user and the given upstream.

    `extra` overrides or adds variables (`RELAY_AUTH_REQUIRED="false"`, ...).
    """
    environ = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "0",
        "SERVER_FQDN": "relay.test",
        "SSL_CERT_PATH": certs.cert_file,
        "SSL_KEY_PATH": certs.key_file,
        "AWS_SMTP_HOST": "127.0.0.1",
        "AWS_SMTP_PORT": str(upstream.port),
        "AWS_SMTP_USERNAME": UPSTREAM_USER,
        "AWS_SMTP_PASSWORD": UPSTREAM_PASSWORD,
        "RELAY_UPSTREAM_CA_FILE": certs.ca_file,
        "RELAY_UPSTREAM_TIMEOUT": "5",
        "RELAY_POOL_SIZE": "2",
        "SES_RATE_LIMIT": "1000",
        "RELAY_RATE_BURST": "1000",
        "RELAY_MAX_WAIT": "10",
        "RELAY_GRACE_PERIOD": "2",
        "RELAY_AUTH_USERS": f"{RELAY_USER}:{hash_password(RELAY_PASSWORD, n=16)}",
        "RELAY_METRICS_PORT": "off",
        "RELAY_LOG_FORMAT": "json",
    }
    environ.update(extra)
    return environ


class ThreadedRelay:
    """`serve()` on its own event loop in a daemon thread (a context manager).

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
        """Whether `serve()` is still running (it ends only when told to, or by crashing)."""
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
            raise TimeoutError(f"relay did not start within {self._start_timeout}s")
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

            def started(server: RelayServer) -> None:
                self.server = server
                self._started.set()

            await serve(
                self.config,
                shutdown_trigger=self._stop.wait,
                components=components,
                on_started=started,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test thread, which re-raises it
            self._error = exc
            self._started.set()


class RelayProcess:
    """`python -m relay.main` with the given environment (a context manager).

    Attributes:
        port: the SMTP port it listens on.
        log_path: the file receiving the process's stdout and stderr (its whole log).
    """

    def __init__(self, environ: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._environ = dict(environ)
        self._environ["SMTP_PORT"] = str(self.port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The relay's process id."""
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """Everything the process has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> RelayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RELAY_", "SMTP_"))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update(self._environ)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "relay.main"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_listening(20.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        """SIGTERM the process (SIGKILL after 15 s); return its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def _wait_listening(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = f"relay exited with {self.process.returncode}: {self.log_text()[-3000:]}"
                raise RuntimeError(message)
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"relay did not listen on {self.port} within {timeout}s")


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to `wanted` (capped by the hard limit) if lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def unique_message(
    tag: str | None = None, body: str = "Hello from a well-behaved client."
) -> bytes:
    """A small RFC 5322 message whose Message-ID is unique (returned inside the bytes)."""
    message_id = f"<{tag or uuid.uuid4().hex}@client.example.com>"
    return (
        "From: App <app@example.com>\r\nTo: you@example.org\r\nSubject: hostile-suite\r\n"
        f"Message-ID: {message_id}\r\n\r\n{body}\r\n"
    ).encode()


def send_normally(
    port: int,
    upstream: SmtpUpstream,
    *,
    login: tuple[str, str] | None = None,
    ca_file: str | None = None,
    timeout: float = 15.0,
) -> str:
    """Send one message the polite way (smtplib); assert 250 and that the upstream has it once.

    Returns the message's Message-ID. STARTTLS is used when `ca_file` is given, AUTH with `login`.
    """
    tag = uuid.uuid4().hex
    message_id = f"<{tag}@client.example.com>"
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
        client.ehlo("client.example.com")
        if ca_file is not None:
            client.starttls(context=ssl.create_default_context(cafile=ca_file))
            client.ehlo("client.example.com")
        if login is not None:
            client.login(*login)
        code, _ = client.mail("app@example.com")
        assert code == 250, code
        code, _ = client.rcpt("you@example.org")
        assert code == 250, code
        code, reply = client.data(unique_message(tag))
        assert code == 250, (code, reply)
    found = [m for m in upstream.messages if m.message_id == message_id]
    assert len(found) == 1, f"upstream has {len(found)} copies of {message_id}"
    return message_id


def poll(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether `predicate()` became true, polling every 50 ms for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
