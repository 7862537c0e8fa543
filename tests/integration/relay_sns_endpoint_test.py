"""The relay's SNS HTTPS endpoint end to end: a signed bounce POSTed over HTTPS on 127.0.0.1
blacklists the address, and the relay then refuses it at RCPT with `550 5.1.1`.

The in-process relay is built from `RELAY_SNS_*` exactly as in production, except the signature
verifier's certificate fetcher, injected at the wiring seam (`build_sns_endpoint`): the test
certificate sits at a real-looking SNS URL and nothing touches the network. The subprocess test
runs `python -m relay.main` unchanged, with the production verifier: it can check only what needs
no AWS certificate (a forged certificate URL is refused before anything is fetched).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError, RelayConfig
from relay.sns_http import build_sns_endpoint
from relay.wiring import build_components
from ses_core.testing import feedback_docs as fx
from ses_core.testing.certs import TestCertificates
from ses_core.testing.sns_signing import SnsTestSigner, post_https
from tests.integration.relay_support import relay_client
from tests.support.relay_harness import InProcessRelay, RelayProcess, wait_until_accepting


def sns_environ(tmp_path: Path, certificates: TestCertificates, port: int) -> dict[str, str]:
    return {
        "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
        "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "RELAY_BLACKLIST_SQLITE": str(tmp_path / "blacklist.sqlite3"),
        "RELAY_SNS_LISTEN": f"127.0.0.1:{port}",
        "RELAY_SNS_CERT_PATH": certificates.cert_file,
        "RELAY_SNS_KEY_PATH": certificates.key_file,
        "RELAY_SNS_TOPIC_ARNS": fx.TOPIC_ARN,
    }


def fresh(message: dict[str, Any]) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return dict(message, Timestamp=stamp)


async def test_signed_bounce_blacklists_the_address_for_smtp(
    tmp_path: Path, certificates: TestCertificates
) -> None:
    """POST a signed bounce for a fresh address, then RCPT TO it: 550 5.1.1."""
    signer = SnsTestSigner()
    environ = {
        "SMTP_PORT": "0",
        "RELAY_METRICS_PORT": "off",
        **sns_environ(tmp_path, certificates, 0),
    }
    config = RelayConfig.from_environ(environ)
    components = await build_components(config)
    assert components.sns_endpoint is not None  # built from RELAY_SNS_* alone
    components.sns_endpoint = build_sns_endpoint(
        config.sns,
        components.blacklist,
        verifier=signer.verifier({fx.TOPIC_ARN}),
        confirm=lambda url: None,
    )
    async with InProcessRelay(config, components) as relay:
        assert relay.components.sns_endpoint is not None
        port = relay.components.sns_endpoint.port
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail("app@example.com")
        before = await client.execute_command(b"RCPT", b"TO:<gone@example.org>")
        await client.rset()
        message = signer.sign(fresh(fx.sns_envelope(fx.bounce_with_dsn("gone@example.org"))))
        status, _ = await post_https(
            port, json.dumps(message).encode(), ca_file=certificates.ca_file
        )
        replayed, _ = await post_https(
            port, json.dumps(message).encode(), ca_file=certificates.ca_file
        )
        await client.mail("app@example.com")
        after = await client.execute_command(b"RCPT", b"TO:<gone@example.org>")
        client.close()
    assert before.code == 250  # looked up (and cached as clean) before the bounce arrived
    assert (status, replayed) == (200, 200)
    assert after.code == 550 and "5.1.1" in after.message


async def test_enabled_without_topics_stops_start_up(
    tmp_path: Path, certificates: TestCertificates
) -> None:
    """RELAY_SNS_LISTEN without RELAY_SNS_TOPIC_ARNS is a start-up ConfigError."""
    environ = sns_environ(tmp_path, certificates, 0)
    del environ["RELAY_SNS_TOPIC_ARNS"]
    with pytest.raises(ConfigError, match="RELAY_SNS_TOPIC_ARNS"):
        RelayConfig.from_environ(environ)


async def test_relay_process_serves_the_endpoint(
    tmp_path: Path, certificates: TestCertificates, free_port: int
) -> None:
    """`python -m relay.main` with RELAY_SNS_* listens over HTTPS and refuses what it must."""
    environ = sns_environ(tmp_path, certificates, free_port)
    with RelayProcess(environ, log_path=tmp_path / "relay.log") as relay:
        wait_until_accepting(free_port, timeout=20.0, alive=lambda: relay.alive)
        forged = dict(
            fresh(fx.sns_envelope(fx.bounce_with_dsn())),
            SigningCertURL="https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        )
        status, text = await post_https(
            free_port, json.dumps(forged).encode(), ca_file=certificates.ca_file
        )
        wrong, _ = await post_https(free_port, b"{}", ca_file=certificates.ca_file, method="GET")
    assert status == 403 and "SigningCertURL" in text
    assert wrong == 405
