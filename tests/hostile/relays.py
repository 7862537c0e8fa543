"""The relay of the hostile and security suites: its configuration, and the polite client that
proves it still works after an attack.

The relay is configured the way an operator configures it, through the environment variables of
`RelayConfig.from_environ`, and delivers to a real `SmtpUpstream` (the SES stand-in with STARTTLS
and AUTH) on 127.0.0.1. It runs through the shared harness (`tests.support.relay_harness`): in a
thread (`ThreadedRelay`), so blocking clients and hypothesis can talk to it from the test thread,
or as its own process (`RelayProcess`), exactly as deployed.
"""

from __future__ import annotations

import resource
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable

from relay.auth import hash_password
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.support.relay_harness import DIRECT_DELIVERY, scratch_spool_dir, upstream_environ

#: The relay's own AUTH user (clients authenticate with these).
RELAY_USER = "app"
RELAY_PASSWORD = "Relay-Pass-7f3c9e1a"


def relay_environ(
    certificates: TestCertificates, upstream: SmtpUpstream, **extra: str
) -> dict[str, str]:
    """The environment of a loopback relay with STARTTLS, one AUTH user and the given upstream.

    `extra` overrides or adds variables (`RELAY_AUTH_REQUIRED="false"`, ...).
    """
    environ = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "0",
        "SERVER_FQDN": "relay.test",
        "SSL_CERT_PATH": certificates.cert_file,
        "SSL_KEY_PATH": certificates.key_file,
        **upstream_environ(upstream, certificates.ca_file),
        "RELAY_UPSTREAM_TIMEOUT": "5",
        "RELAY_POOL_SIZE": "2",
        "SES_RATE_LIMIT": "1000",
        "RELAY_RATE_BURST": "1000",
        "RELAY_MAX_WAIT": "10",
        "RELAY_GRACE_PERIOD": "2",
        "RELAY_AUTH_USERS": f"{RELAY_USER}:{hash_password(RELAY_PASSWORD, n=16)}",
        "RELAY_METRICS_PORT": "off",
        "RELAY_LOG_FORMAT": "json",
        **DIRECT_DELIVERY,
        "RELAY_SPOOL_DIR": scratch_spool_dir(),
    }
    environ.update(extra)
    return environ


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
