"""Helpers for the relay's integration tests: a loopback configuration, messages and clients.

The relay itself runs through the shared harness (`tests.support.relay_harness`): in-process with
`InProcessRelay`, or as `python -m relay.main` with `RelayProcess`.
"""

from __future__ import annotations

from typing import Any

import aiosmtplib

from relay.config import RelayConfig
from relay.queue_settings import QueueSettings
from relay.server import RelayServer
from ses_core.ratelimit import RateLimiter
from ses_core.smtp import SmtpSettings
from ses_core.smtp.client import SesSmtpClient
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream

MESSAGE = (
    b"From: App <app@example.com>\r\nTo: you@example.org\r\nSubject: test\r\n"
    b"Message-ID: <%s@example.com>\r\n\r\nHello.\r\n"
)


def message(number: int | str = 1) -> bytes:
    """A small RFC 5322 message with a unique Message-ID."""
    return MESSAGE % str(number).encode()


def base_config(**overrides: Any) -> RelayConfig:
    """A loopback relay on an ephemeral port, ops endpoint off, short waits, direct delivery (the
    suites check DATA replies; queue-mode tests pass `queue=QueueSettings(...)`)."""
    defaults: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "server_fqdn": "relay.test",
        "metrics_port": None,
        "max_wait": 5.0,
        "grace_period": 5.0,
        "rate_limit": 1000.0,
        "rate_burst": 50,
        "queue": QueueSettings(delivery="direct"),
    }
    defaults.update(overrides)
    return RelayConfig(**defaults)


def upstream_settings(
    upstream: SmtpUpstream, certificates: TestCertificates, **options: Any
) -> SmtpSettings:
    """Client settings for the scripted upstream (STARTTLS + AUTH, private CA), fast backoffs."""
    assert upstream.credentials is not None
    username, password = upstream.credentials
    values: dict[str, Any] = {
        "host": upstream.host,
        "port": upstream.port,
        "username": username,
        "password": password,
        "ca_file": certificates.ca_file,
        "server_hostname": "localhost",
        "pool_size": 2,
        "timeout": 5.0,
        "throttle_backoff": (0.05,),
        "transient_backoff": (0.05,),
        "reconnect_backoff": 0.05,
    }
    values.update(options)
    return SmtpSettings(**values)


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
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    *,
    limiter: RateLimiter | None = None,
    **options: Any,
) -> SesSmtpClient:
    """The pooled SES client pointed at the scripted upstream (`options`: its settings)."""
    return SesSmtpClient(upstream_settings(upstream, certificates, **options), limiter=limiter)
