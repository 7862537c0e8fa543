"""The shared spool (RELAY_SPOOL=sqs) at its edges, on moto's server and a real Redis:

- S3 or SQS failing at accept: the client gets a 4xx (451 at DATA, then 451 at MAIL for a few
  seconds, `/readyz` unready meanwhile), never a 250, and no body is left behind;
- a body above SQS's 256 KB message limit goes through (it lives in S3);
- a poisoned envelope goes to the dead-letter queue instead of looping, and
  `relay_sqs_dead_letter_messages` shows it; delivery goes on;
- start-up refuses RELAY_SPOOL=sqs without REDIS_URL (or without its queue or bucket) with one
  line and a non-zero exit.

The relays of the first three run in-process (their depth readings every 0.2 s instead of 30 s);
boto3 finds moto through AWS_ENDPOINT_URL, set for the test.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiosmtplib
import attrs
import pytest

from relay.config import RelayConfig
from relay.server import RelayServer
from relay.wiring import build_components
from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_sqs import (
    SpoolResources,
    aws_client,
    create_spool_resources,
    moto_environ,
    object_keys,
    queue_depth,
)
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.relay_queue_support import eventually, fast_runner, http_get, send
from tests.integration.relay_sqs_support import moto_endpoint, redis_url, sqs_environ
from tests.support.relay_harness import InProcessRelay, process_environ, relay_command

__all__ = ["moto_endpoint", "redis_url"]  # fixtures

#: SQS's largest message.
SQS_MESSAGE_LIMIT = 256 * 1024

#: The `start_relay` fixture: an in-process relay on the given shared spool.
StartRelay = Callable[[SpoolResources], AbstractAsyncContextManager[RelayServer]]


@pytest.fixture
def resources(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> SpoolResources:
    """Fresh queue, dead-letter queue and bucket; boto3 in this process pointed at moto."""
    for name, value in moto_environ(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    return create_spool_resources(moto_endpoint)


def config_for(environ: dict[str, str]) -> RelayConfig:
    """The relay's configuration from `environ`, SMTP and ops endpoint on ephemeral loopback
    ports, queue depths read every 0.2 s."""
    config = RelayConfig.from_environ({**environ, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "0"})
    assert config.queue.sqs is not None
    sqs = attrs.evolve(config.queue.sqs, stats_interval=0.2)
    return attrs.evolve(config, metrics_port=0, queue=attrs.evolve(config.queue, sqs=sqs))


@pytest.fixture
def start_relay(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    moto_endpoint: str,
    redis_url: str,
    tmp_path: Path,
) -> StartRelay:
    """Starts an in-process relay on a shared spool (configured by `config_for`), delivering to
    `upstream`, and stops it on exit."""

    @contextlib.asynccontextmanager
    async def start(resources: SpoolResources) -> AsyncIterator[RelayServer]:
        environ = sqs_environ(
            upstream,
            certificates,
            resources,
            endpoint=moto_endpoint,
            redis_url=redis_url,
            scratch=tmp_path,
        )
        config = config_for(environ)
        components = await build_components(config, make_runner=fast_runner)
        async with InProcessRelay(config, components) as relay:
            yield relay

    return start


def sample(relay: RelayServer, name: str, **labels: str) -> float:
    value = relay.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


@pytest.mark.parametrize("broken", ["s3", "sqs"])
async def test_a_failing_s3_or_sqs_at_accept_gives_a_4xx_and_no_250(
    broken: str,
    upstream: SmtpUpstream,
    resources: SpoolResources,
    moto_endpoint: str,
    start_relay: StartRelay,
) -> None:
    """S3: the bucket does not exist. SQS: the queue was deleted (the body written first is
    removed again)."""
    if broken == "s3":
        resources = attrs.evolve(resources, bucket=f"{resources.bucket}-missing")
    else:
        aws_client("sqs", moto_endpoint).delete_queue(QueueUrl=resources.queue_url)
    async with start_relay(resources) as relay:
        first = await send(relay, ["r1@example.org"], number=1)
        second = await send(relay, ["r2@example.org"], number=2)
        ready = await http_get(relay.metrics_port, "/readyz")
        refusals = sample(relay, "relay_spool_refusals_total", reason="unavailable")
    assert first == (451, "4.3.0 Queue temporarily unavailable, try again later")
    assert second == first  # refused at MAIL: no body is sent to a spool that just failed
    assert ready.startswith("HTTP/1.1 503"), ready
    assert "spool" in ready
    assert refusals >= 2
    assert upstream.messages == []
    if broken == "sqs":
        assert object_keys(moto_endpoint, resources.bucket) == []


async def test_a_body_larger_than_an_sqs_message_is_delivered(
    upstream: SmtpUpstream,
    resources: SpoolResources,
    moto_endpoint: str,
    start_relay: StartRelay,
) -> None:
    line = b"x" * 998 + b"\r\n"
    data = (
        b"From: app@example.com\r\nTo: big@example.org\r\nSubject: big\r\n"
        b"Message-ID: <big@example.com>\r\n\r\n" + line * (SQS_MESSAGE_LIMIT // len(line) + 50)
    )
    assert len(data) > SQS_MESSAGE_LIMIT
    async with start_relay(resources) as relay:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=30)
        async with client:
            _, reply = await client.sendmail("app@example.com", ["big@example.org"], data)
        assert reply.startswith("2.0.0 Ok: queued as "), reply
        await eventually(lambda: len(upstream.messages) == 1, timeout=30)
        await eventually(lambda: not object_keys(moto_endpoint, resources.bucket), timeout=10)
    assert upstream.messages[0].data.endswith(line * 3)
    assert len(upstream.messages[0].data) >= len(data)
    assert upstream.messages[0].recipients == ("big@example.org",)


async def test_a_poisoned_envelope_goes_to_the_dead_letter_queue(
    upstream: SmtpUpstream,
    resources: SpoolResources,
    moto_endpoint: str,
    start_relay: StartRelay,
) -> None:
    sqs = aws_client("sqs", moto_endpoint)
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody='{"not": "an envelope"')
    async with start_relay(resources) as relay:
        await eventually(lambda: sample(relay, "relay_sqs_dead_letter_messages") == 1, timeout=20)
        assert sample(relay, "relay_queue_dead_letters") == 1
        code, _ = await send(relay, ["after@example.org"], number=7)  # delivery goes on
        assert code == 250
        await eventually(lambda: len(upstream.messages) == 1, timeout=20)
        metrics = await http_get(relay.metrics_port, "/metrics")
    assert "relay_sqs_dead_letter_messages 1.0" in metrics
    assert upstream.messages[0].message_id == "<7@example.com>"
    assert queue_depth(moto_endpoint, resources.queue_url) == 0
    assert queue_depth(moto_endpoint, resources.dead_letter_queue_url) == 1
    (dead,) = sqs.receive_message(QueueUrl=resources.dead_letter_queue_url)["Messages"]
    assert dead["Body"] == '{"not": "an envelope"'


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        (
            "REDIS_URL",
            "REDIS_URL: required when RELAY_SPOOL=sqs (replicas sharing the queue must share one"
            " send rate: N replicas with separate limiters would send at N times the rate)",
        ),
        ("RELAY_S3_BUCKET", "RELAY_S3_BUCKET: required when RELAY_SPOOL=sqs"),
        ("RELAY_SQS_QUEUE_URL", "RELAY_SQS_QUEUE_URL: required when RELAY_SPOOL=sqs"),
    ],
)
@pytest.mark.parametrize("command", [[], ["check-config"]])
def test_an_incomplete_shared_spool_stops_start_up_with_one_line(
    unset: str, message: str, command: list[str]
) -> None:
    settings = {
        "RELAY_DELIVERY": "queue",
        "RELAY_SPOOL": "sqs",
        "RELAY_SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/spool",
        "RELAY_S3_BUCKET": "bodies",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "0",
    }
    del settings[unset]
    result = subprocess.run(
        relay_command() + command,
        env=process_environ(settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.decode() == f"configuration error: {message}\n"
