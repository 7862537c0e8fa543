"""Helpers for the relay's integration tests: run a relay in-process or as a process, talk SMTP.

The relay runs with `serve()` in a task of the test's event loop (shutdown through an injected
trigger, as hypercorn's tests do) or, for tests about processes and signals, as
`python -m relay.main` with environment variables, exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiosmtplib
import attrs

import relay.main  # the processes below run it: this import makes Pants package it
from relay.config import RelayConfig
from relay.server import RelayServer, serve
from relay.wiring import Components
from ses_core.smtp.client import SesSmtpClient, SmtpSettings
from ses_core.testing.upstream import SmtpUpstream
from ses_core.testing.certs import TestCertificates

UPSTREAM_USER, UPSTREAM_PASSWORD = "AKIATESTUSER", "test-smtp-password"
MESSAGE = (
    b"From: App <app@example.com>\r\nTo: you@example.org\r\nSubject: test\r\n"
    b"Message-ID: <%s@example.com>\r\n\r\nHello.\r\n"
)


def message(number: int | str = 1) -> bytes:
    """A small RFC 5322 message with a unique Message-ID."""
    return MESSAGE % str(number).encode()


def base_config(**overrides: Any) -> RelayConfig:
    """A loopback relay on an ephemeral port, ops endpoint off, short waits."""
    defaults: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "server_fqdn": "relay.test",
        "metrics_port": None,
        "max_wait": 5.0,
        "grace_period": 5.0,
        "rate_limit": 1000.0,
        "rate_burst": 50,
    }
    defaults.update(overrides)
    return RelayConfig(**defaults)


def upstream_settings(
    upstream: SmtpUpstream, certs: TestCertificates, **options: Any
) -> SmtpSettings:
    """Client settings for the scripted upstream (STARTTLS + AUTH, private CA), fast backoffs."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": upstream.port,
        "username": UPSTREAM_USER,
        "password": UPSTREAM_PASSWORD,
        "ca_file": certs.ca_file,
        "server_hostname": "localhost",
        "pool_size": 2,
        "timeout": 5.0,
        "throttle_backoff": (0.05,),
        "transient_backoff": (0.05,),
        "reconnect_backoff": 0.05,
    }
    values.update(options)
    return SmtpSettings(**values)


@contextlib.asynccontextmanager
async def running_relay(
    config: RelayConfig, components: Components | None = None
) -> AsyncIterator[RelayServer]:
    """Run `serve(config)` in a task; yield the started server; shut it down on exit."""
    stop = asyncio.Event()
    started: list[RelayServer] = []
    task = asyncio.create_task(
        serve(config, shutdown_trigger=stop.wait, components=components, on_started=started.append)
    )
    deadline = time.monotonic() + 10
    while not started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("relay did not start within 10 s")
        await asyncio.sleep(0.005)
    try:
        yield started[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def relay_client(
    server: RelayServer, *, tls: bool = False, ca_file: str | None = None, **kwargs: Any
) -> aiosmtplib.SMTP:
    """A connected aiosmtplib client (no automatic STARTTLS unless `tls`)."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=server.port,
        start_tls=False,
        use_tls=tls,
        cert_bundle=ca_file,
        timeout=10,
        **kwargs,
    )
    await client.connect()
    return client


async def ses_client(
    upstream: SmtpUpstream, certs: TestCertificates, **options: Any
) -> SesSmtpClient:
    """The pooled SES client pointed at the scripted upstream."""
    return SesSmtpClient(upstream_settings(upstream, certs, **options))


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relay_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a relay process: this interpreter's path, no inherited AWS vars.

    The child gets `sys.path` as its PYTHONPATH, so it sees the same sources and requirements as
    this test, whether run from a checkout or inside a Pants sandbox.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RELAY_", "SMTP_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["RELAY_METRICS_PORT"] = "off"
    env.update(extra)
    return env


@contextlib.contextmanager
def relay_process(
    extra: Mapping[str, str], *, wait_port: int | None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `python -m relay.main`; wait until `wait_port` accepts; SIGTERM it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", relay.main.__name__],
        env=relay_environment(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if wait_port is not None:
            wait_listening(wait_port, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Poll until 127.0.0.1:`port` accepts connections (or the process died / time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"relay exited with {process.returncode}: {err[-2000:]}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"relay did not listen on {port} within {timeout} s")


def evolve(config: RelayConfig, **changes: Any) -> RelayConfig:
    """`attrs.evolve` with a short name."""
    return attrs.evolve(config, **changes)
