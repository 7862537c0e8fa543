"""The relay against AWS APIs that answer, refuse or stay silent: start-up and AUTH stay bounded.

SES's quota APIs and the API-key table are pointed at loopback stand-ins through boto3's
per-service endpoint variables (`AWS_ENDPOINT_URL_SES`, `AWS_ENDPOINT_URL_SESV2`,
`AWS_ENDPOINT_URL_DYNAMODB`), exactly as a user would point them elsewhere: moto's server, or a
socket that accepts connections and never answers (a stalled endpoint). What bounds each wait is
the clients' timeout configuration, asserted by the unit tests; these tests assert the outcome
(a one-line start-up error, a `454 4.7.0`) and guard against a hang with generous limits only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import aiosmtplib
import pytest

from relay.config import ConfigError, RelayConfig
from relay.wiring import build_components, build_limiter
from ses_core.ratelimit.ses_quota import QuotaGuardedLimiter
from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_dynamodb import MotoServer
from tests.integration.relay_auth_test import plain
from tests.integration.relay_support import base_config
from tests.support.relay_harness import InProcessRelay, RelayProcess

#: A guard against a hang (boto3's defaults wait minutes), far above the configured bounds.
HANG_GUARD = 120.0


class SilentEndpoint:
    """A loopback TCP endpoint that accepts every connection, reads nothing and never answers;
    a context manager counting the connections it accepted.

    Attributes:
        url: `http://127.0.0.1:<port>`, for an AWS endpoint variable.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-endpoint", daemon=True)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return len(self._accepted)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted.append(connection)

    def __enter__(self) -> SilentEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._thread.join(5)
        self._listener.close()
        for connection in self._accepted:
            connection.close()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Dummy AWS credentials and region, no shared config, no metadata service, no endpoint
    overrides but the ones the test sets."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def point_ses_at(aws: pytest.MonkeyPatch, url: str) -> None:
    aws.setenv("AWS_ENDPOINT_URL_SES", url)
    aws.setenv("AWS_ENDPOINT_URL_SESV2", url)


async def test_auto_rate_reads_get_send_quota_from_moto(aws: pytest.MonkeyPatch) -> None:
    """`auto` against moto's server: GetAccount is not there (moto lacks it), GetSendQuota
    answers 1/s, and that is the rate the relay starts with."""
    config = RelayConfig.from_environ({"AWS_SMTP_HOST": "127.0.0.1"})
    assert config.rate_limit is None
    with MotoServer() as moto:
        point_ses_at(aws, moto.endpoint_url)
        async with contextlib.AsyncExitStack() as stack:
            limiter, on_daily_quota = await build_limiter(config, stack, {})
            assert isinstance(limiter, QuotaGuardedLimiter) and limiter.rate == 1.0
            assert on_daily_quota is not None


async def test_auto_rate_fails_start_up_when_ses_never_answers(aws: pytest.MonkeyPatch) -> None:
    """An SES API endpoint that accepts connections but never answers: start-up fails with one
    line naming the endpoint and both APIs, after one retry of each, instead of stalling for
    minutes or running at a guessed rate."""
    config = RelayConfig.from_environ({"AWS_SMTP_HOST": "127.0.0.1"})
    with SilentEndpoint() as silent:
        point_ses_at(aws, silent.url)
        with pytest.raises(ConfigError) as caught:
            async with asyncio.timeout(HANG_GUARD):
                await build_components(config)
        deadline = time.monotonic() + 5
        while silent.connections < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        connections = silent.connections
    text = str(caught.value)
    assert text.startswith("SES_RATE_LIMIT: ") and "\n" not in text
    assert "GetAccount" in text and "GetSendQuota" in text and silent.url in text
    assert connections == 4  # two attempts (one retry) per API


async def test_auth_answers_454_when_the_api_key_table_never_answers(
    aws: pytest.MonkeyPatch, certificates: TestCertificates, tmp_path: Path
) -> None:
    """USE_APIKEY with a DynamoDB endpoint that never answers: AUTH gets `454 4.7.0` (try again
    later) within the client's timeouts, over real sockets, instead of hanging the session."""
    with SilentEndpoint() as silent:
        aws.setenv("AWS_ENDPOINT_URL_DYNAMODB", silent.url)
        config = base_config(
            tls_cert_path=Path(certificates.cert_file),
            tls_key_path=Path(certificates.key_file),
            implicit_tls=True,
            use_apikey=True,
            api_keys_table="api-keys",
            local_outbox=tmp_path / "outbox",
        )
        components = await build_components(config)
        async with InProcessRelay(config, components) as relay:
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=relay.port,
                use_tls=True,
                cert_bundle=certificates.ca_file,
                timeout=HANG_GUARD / 2,
            )
            await client.connect()
            await client.ehlo()
            reply = await client.execute_command(b"AUTH", b"PLAIN", plain("svc", "k").encode())
            client.close()
        await components.aclose()
    assert reply.code == 454 and reply.message.startswith("4.7.0"), reply


def test_unknown_relay_variable_is_warned_by_the_running_relay(tmp_path: Path) -> None:
    """`python -m relay.main` with `RELAY_POOL_SZE=8` starts and logs one warning naming it and
    RELAY_POOL_SIZE."""
    log_path = tmp_path / "relay.log"
    environ = {
        "RELAY_POOL_SZE": "8",
        "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
        "RELAY_BLACKLIST_SQLITE": str(tmp_path / "blacklist.sqlite3"),
        "RELAY_LOG_FORMAT": "text",
    }
    with RelayProcess(environ, log_path=log_path):
        pass
    lines = [line for line in log_path.read_text().splitlines() if "RELAY_POOL_SZE" in line]
    assert len(lines) == 1, log_path.read_text()
    assert "WARNING" in lines[0] and "RELAY_POOL_SIZE" in lines[0]
