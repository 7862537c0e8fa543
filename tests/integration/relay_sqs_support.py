"""Helpers for the shared-spool (RELAY_SPOOL=sqs) integration tests: moto in server mode for SQS
and S3, a real redis-server for the shared limiter, and the relay's environment for them.

The relays reach moto through AWS_ENDPOINT_URL (boto3 reads it, as it reads credentials and the
region), with dummy credentials: exactly how a deployment points them at AWS, minus the endpoint.
The visibility timeout is at most twice one delivery (the SES stand-in stalls every message
`DELIVERY_SECONDS` after the final '.'), so an envelope whose lease were not kept alive by its
replica would be received by the other replica mid-delivery, and show as a duplicate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_dynamodb import MotoServer
from ses_core.testing.moto_sqs import SpoolResources, moto_environ
from ses_core.testing.redis_server import RedisServer
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.queue_e2e_support import queue_environ

#: Seconds the SES stand-in takes per message (a stall after the final '.').
DELIVERY_SECONDS = 1.5
#: Seconds an envelope stays hidden once received: twice one delivery.
VISIBILITY_TIMEOUT = 3

_keys = itertools.count(1)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's HTTP server (SQS and S3) on 127.0.0.1 for the module; resources are unique per
    test, so tests share it."""
    with MotoServer() as server:
        yield server.endpoint_url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away redis-server on loopback for the module (each test has its own key)."""
    with RedisServer() as server:
        yield server.url


def sqs_environ(
    upstream: SmtpUpstream,
    certificates: TestCertificates,
    resources: SpoolResources,
    *,
    endpoint: str,
    redis_url: str,
    scratch: Path,
    **extra: str,
) -> dict[str, str]:
    """A queueing relay on the shared spool `resources`, delivering to `upstream`, its limiter
    in Redis under a key of its own test."""
    settings = {
        **moto_environ(endpoint),
        "RELAY_SPOOL": "sqs",
        "RELAY_SQS_QUEUE_URL": resources.queue_url,
        "RELAY_S3_BUCKET": resources.bucket,
        "RELAY_S3_PREFIX": "bodies/",
        "RELAY_SQS_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "REDIS_URL": redis_url,
        "RELAY_REDIS_KEY": f"test:sqs:{next(_keys)}",
        "RELAY_RATE_BURST": "50",
        "RELAY_UPSTREAM_TIMEOUT": "10",
        "RELAY_GRACE_PERIOD": "5",
    }
    settings.update(extra)
    return queue_environ(upstream, certificates, scratch / "unused-spool", **settings)
