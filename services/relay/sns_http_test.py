"""Tests for relay.sns_http: the TLS listener over a real loopback socket, signed SNS bodies."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import relay.main  # noqa: F401  (the subprocess below imports the whole relay: Pants must ship it)
from relay.config import ConfigError
from relay.sns_endpoint import SnsReply
from relay.sns_http import MAX_BODY_BYTES, SnsHttpServer, build_sns_endpoint, sns_server_context
from relay.sns_settings import SnsSettings
from ses_core.blacklist import BlacklistEvent, InMemoryBlacklist, OccurrenceResult
from ses_core.errors import BlacklistUnavailable
from ses_core.testing import feedback_docs as fx
from ses_core.testing.blacklists import DelegatingBlacklist
from ses_core.testing.certs import TestCertificates
from ses_core.testing.sns_signing import SnsTestSigner, post_https


@pytest.fixture(scope="module")
def signer() -> SnsTestSigner:
    """One key and certificate for the module."""
    return SnsTestSigner()


class DownBlacklist(DelegatingBlacklist):
    """Writes fail as when DynamoDB or the SQLite file cannot be reached."""

    def record(self, event: BlacklistEvent) -> Any:
        raise BlacklistUnavailable("table unreachable")

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        raise BlacklistUnavailable("table unreachable")


def settings(certificates: TestCertificates) -> SnsSettings:
    return SnsSettings(
        host="127.0.0.1",
        port=0,
        cert_path=Path(certificates.cert_file),
        key_path=Path(certificates.key_file),
        topic_arns=frozenset({fx.TOPIC_ARN}),
    )


def now_stamped(message: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime

    return dict(message, Timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")


async def started(
    certificates: TestCertificates, signer: SnsTestSigner, blacklist: Any
) -> SnsHttpServer:
    server = build_sns_endpoint(
        settings(certificates),
        blacklist,
        verifier=signer.verifier({fx.TOPIC_ARN}),
        confirm=lambda url: None,
    )
    assert server is not None
    await server.start()
    return server


@pytest.fixture
async def memory() -> InMemoryBlacklist:
    """An empty in-memory blacklist."""
    return InMemoryBlacklist()


@pytest.fixture
async def endpoint(
    certificates: TestCertificates, signer: SnsTestSigner, memory: InMemoryBlacklist
) -> AsyncIterator[SnsHttpServer]:
    """The endpoint over `memory`, on an ephemeral port."""
    server = await started(certificates, signer, memory)
    yield server
    await server.aclose()


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_bounce_over_https_is_blacklisted(
    endpoint: SnsHttpServer,
    certificates: TestCertificates,
    signer: SnsTestSigner,
    memory: InMemoryBlacklist,
    version: str,
) -> None:
    """POST of a signed Notification: 200 and the address is blacklisted."""
    message = signer.sign(
        now_stamped(fx.sns_envelope(fx.bounce_with_dsn("ann@example.com"))), version
    )
    status, _ = await post_https(
        endpoint.port, json.dumps(message).encode(), ca_file=certificates.ca_file
    )
    assert status == 200
    assert memory.get("ann@example.com") is not None


async def test_wrong_topic_over_https_is_403(
    endpoint: SnsHttpServer, certificates: TestCertificates, signer: SnsTestSigner
) -> None:
    """A topic outside the allowlist: 403 (SNS does not retry it)."""
    message = dict(fx.sns_envelope(fx.bounce_with_dsn()), TopicArn="arn:aws:sns:us-east-1:1:x")
    body = json.dumps(signer.sign(now_stamped(message))).encode()
    status, text = await post_https(endpoint.port, body, ca_file=certificates.ca_file)
    assert status == 403 and "RELAY_SNS_TOPIC_ARNS" in text


async def test_body_over_the_limit_is_413_unread(
    endpoint: SnsHttpServer, certificates: TestCertificates
) -> None:
    """A Content-Length over the limit is refused before the body is read."""
    status, _ = await post_https(
        endpoint.port,
        b"",
        ca_file=certificates.ca_file,
        headers={"Content-Length": str(MAX_BODY_BYTES + 1)},
    )
    assert status == 413


async def test_a_body_at_the_limit_is_read(
    endpoint: SnsHttpServer, certificates: TestCertificates
) -> None:
    """The limit is a limit, not an off-by-one: a body of exactly that size is read (then 400)."""
    body = b" " * MAX_BODY_BYTES
    status, _ = await post_https(endpoint.port, body, ca_file=certificates.ca_file)
    assert status == 400


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/", None, 405),
        ("PUT", "/", None, 405),
        ("POST", "/admin", None, 404),
        ("POST", "/", {"Content-Length": "x"}, 400),
        ("POST", "/", {"Transfer-Encoding": "chunked"}, 411),
    ],
)
async def test_method_path_and_length_checks(
    endpoint: SnsHttpServer,
    certificates: TestCertificates,
    method: str,
    path: str,
    headers: dict[str, str] | None,
    expected: int,
) -> None:
    """Only POST / with a Content-Length is served."""
    status, _ = await post_https(
        endpoint.port,
        b"{}",
        ca_file=certificates.ca_file,
        method=method,
        path=path,
        headers=headers,
    )
    assert status == expected


async def test_store_down_is_503_so_that_sns_retries(
    certificates: TestCertificates, signer: SnsTestSigner
) -> None:
    """BlacklistUnavailable while writing: 503."""
    server = await started(certificates, signer, DownBlacklist(InMemoryBlacklist()))
    try:
        message = signer.sign(now_stamped(fx.sns_envelope(fx.bounce_with_dsn())))
        status, text = await post_https(
            server.port, json.dumps(message).encode(), ca_file=certificates.ca_file
        )
    finally:
        await server.aclose()
    assert status == 503 and "unavailable" in text


def test_enabled_without_a_blacklist_store_is_a_config_error(
    certificates: TestCertificates,
) -> None:
    """The endpoint needs somewhere to write."""
    with pytest.raises(ConfigError, match="RELAY_SNS_LISTEN"):
        build_sns_endpoint(settings(certificates), None)


def test_off_builds_nothing() -> None:
    """No settings, no endpoint."""
    assert build_sns_endpoint(None, InMemoryBlacklist()) is None


def test_unreadable_key_is_a_config_error(certificates: TestCertificates, tmp_path: Path) -> None:
    """A key file that is not a key: ConfigError naming the variables."""
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    broken = SnsSettings("127.0.0.1", 0, Path(certificates.cert_file), bad, frozenset({"t"}))
    with pytest.raises(ConfigError, match="RELAY_SNS_KEY_PATH"):
        build_sns_endpoint(broken, InMemoryBlacklist())


def test_the_relay_does_not_import_the_lambda_package() -> None:
    """The relay PEX shares the processing through ses_core, not through blacklist_lambda."""
    code = (
        "import sys, relay.main, relay.wiring, relay.sns_http, relay.sns_endpoint; "
        "bad = [m for m in sys.modules "
        "if m.split('.')[0] in ('blacklist_lambda', 'blacklist_cli')]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


async def test_connections_beyond_the_bound_get_503(certificates: TestCertificates) -> None:
    """With every handling slot taken (here one, held by a silent client), the next is 503."""
    bounded = SnsHttpServer(
        lambda body: SnsReply(200, "unused"),
        sns_server_context(settings(certificates)),
        port=0,
        max_connections=1,
    )
    await bounded.start()
    context = ssl.create_default_context(cafile=certificates.ca_file)
    try:
        _, holder = await asyncio.open_connection("127.0.0.1", bounded.port, ssl=context)
        status, text = 0, ""
        for _ in range(100):  # the holder's TLS handshake completes on the server's side first
            status, text = await post_https(bounded.port, b"{}", ca_file=certificates.ca_file)
            if status == 503:
                break
            await asyncio.sleep(0.01)
        holder.close()
    finally:
        await bounded.aclose()
    assert status == 503 and text.strip() == "busy"
