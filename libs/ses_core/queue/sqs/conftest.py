"""Fixtures of the shared-spool tests: one moto server for the session, fresh resources per
test, spools with short timings that are closed after the test, and a clock tests can move."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import pytest

from ses_core.queue.sqs import SqsSpool, SqsSpoolSettings
from ses_core.testing.moto_dynamodb import MotoServer
from ses_core.testing.moto_sqs import (
    SettableClock,
    SpoolResources,
    aws_client,
    create_spool_resources,
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's HTTP server on 127.0.0.1, shared by the session (resource names are unique)."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def endpoint(moto_server: MotoServer) -> str:
    """The moto server's URL."""
    return moto_server.endpoint_url


@pytest.fixture
def resources(endpoint: str) -> SpoolResources:
    """A fresh queue (maxReceiveCount 5), dead-letter queue and bucket."""
    return create_spool_resources(endpoint)


@pytest.fixture
def spool_clock() -> SettableClock:
    """The spools' clock: real time until a test moves it."""
    return SettableClock()


@pytest.fixture
async def make_spool(
    endpoint: str, resources: SpoolResources, spool_clock: SettableClock
) -> AsyncIterator[Callable[..., SqsSpool]]:
    """Builds spools (replicas) on `resources`: visibility 30 s, long poll 1 s, unless told
    otherwise; each is closed after the test."""
    spools: list[SqsSpool] = []

    def make(sqs: Any = None, s3: Any = None, **options: Any) -> SqsSpool:
        base = SqsSpoolSettings(
            queue_url=resources.queue_url,
            bucket=resources.bucket,
            prefix="bodies/",
            visibility_timeout=30,
            wait_time=1,
            threads=4,
        )
        spool = SqsSpool(
            sqs or aws_client("sqs", endpoint),
            s3 or aws_client("s3", endpoint),
            attrs.evolve(base, **options),
            clock=spool_clock,
        )
        spools.append(spool)
        return spool

    yield make
    for spool in spools:
        await spool.aclose()
