"""The shared spool as the relay runs it (RELAY_SPOOL=sqs): envelopes on SQS, bodies in S3.

`open_sqs_spool` builds the `SqsSpool` from the relay's settings: the region is the queue URL's
(`https://sqs.<region>.amazonaws.com/...`), else what the relay uses for SES (RELAY_SES_REGION,
AWS_SMTP_HOST's region, boto3's chain); credentials and AWS_ENDPOINT_URL come from boto3's own
chain. Opening makes no AWS call: a queue or bucket that cannot be used shows as `451 4.3.0` at
the first accept, and `relay check-config` reports it.

`watch_sqs_spool` adds what only the shared spool needs: the dead-letter queue's depth as
`relay_sqs_dead_letter_messages` (read with the other depths, every `stats_interval` seconds:
each reading is two billed GetQueueAttributes calls), and the periodic sweep of orphan bodies
(a crash between the S3 write and the SQS send leaves a body no envelope points to). The sweep
runs every `sweep_interval` seconds, jittered so that replicas spread out, and its failures are
logged, never fatal: S3's lifecycle rule is the backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Gauge

from relay.config import ConfigError, RelayConfig
from relay.metrics import RelayMetrics
from relay.queue_settings import SqsSettings
from relay.upstream import ses_region
from relay.variables_queue import RELAY_SQS_QUEUE_URL
from ses_core.errors import SesCoreError
from ses_core.queue import SpoolStats

log = logging.getLogger(__name__)

#: `sqs.<region>.amazonaws.com[.cn]` (and the legacy `<region>.queue.amazonaws.com`).
_SQS_HOST = re.compile(
    r"(?:sqs\.(?P<region>[a-z0-9-]+)|(?P<legacy>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?"
)

#: The shared spool's threads for boto3 calls: enough for the workers' receives, deletes and
#: S3 reads and the lease keeper, without a thread per worker.
SPOOL_THREADS = 16


def queue_region(queue_url: str) -> str | None:
    """The AWS region in an SQS queue URL, or None (an endpoint such as moto's or a VPC one)."""
    match = _SQS_HOST.fullmatch((urlsplit(queue_url).hostname or "").lower())
    if match is None:
        return None
    return match.group("region") or match.group("legacy")


def sqs_region(config: RelayConfig, settings: SqsSettings) -> str:
    """The shared spool's region (see the module docstring); a one-line `ConfigError` when none
    is known."""
    region = queue_region(settings.queue_url) or ses_region(config)
    if region is None:
        message = (
            "AWS_DEFAULT_REGION: no AWS region configured (needed for RELAY_SPOOL=sqs; or use the"
            f" queue's https://sqs.<region>.amazonaws.com URL in {RELAY_SQS_QUEUE_URL.name})"
        )
        raise ConfigError(message)
    return region


async def open_sqs_spool(config: RelayConfig, settings: SqsSettings) -> Any:
    """The `SqsSpool` for `settings` (no AWS call is made: see the module docstring)."""
    import botocore.exceptions

    from ses_core.queue.sqs import SqsSpool

    region = sqs_region(config, settings)
    try:
        return SqsSpool.from_config(
            queue_url=settings.queue_url,
            bucket=settings.bucket,
            prefix=settings.prefix,
            region=region,
            visibility_timeout=settings.visibility_timeout,
            wait_time=settings.wait_time,
            threads=SPOOL_THREADS,
        )
    except botocore.exceptions.BotoCoreError as exc:  # e.g. a malformed AWS_ENDPOINT_URL
        message = f"{RELAY_SQS_QUEUE_URL.name}: cannot use the SQS spool: {exc}"
        raise ConfigError(message) from None


def watch_sqs_spool(
    spool: Any,
    settings: SqsSettings,
    metrics: RelayMetrics,
    stack: contextlib.AsyncExitStack,
) -> tuple[float, Callable[[SpoolStats], None]]:
    """Register `relay_sqs_dead_letter_messages` and start the orphan-body sweeper (stopped by
    `stack`); (seconds between depth readings, what to do with each reading)."""
    gauge = Gauge(
        "relay_sqs_dead_letter_messages",
        "Envelopes in the shared spool's SQS dead-letter queue (approximate)",
        registry=metrics.registry,
    )
    sweeper = asyncio.create_task(
        sweep_periodically(spool, settings.sweep_interval), name="sqs-orphan-sweep"
    )
    stack.push_async_callback(_cancel, sweeper)

    def show(stats: SpoolStats) -> None:
        gauge.set(stats.dead_letters)

    return settings.stats_interval, show


async def sweep_periodically(
    spool: Any, interval: float, *, jitter: Callable[[], float] = random.random
) -> None:
    """Sweep orphan bodies every `interval` seconds (each wait between 0.5 and 1.5 times it, the
    first between 0 and 1 times); failures are logged and the next sweep tries again."""
    delay = interval * jitter()
    while True:
        await asyncio.sleep(delay)
        delay = interval * (0.5 + jitter())
        try:
            result = await spool.sweep_orphan_bodies()
        except SesCoreError as exc:
            log.warning("orphan-body sweep failed (tried again later): %s", exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a sweep never stops the relay
            log.error("orphan-body sweep failed unexpectedly", exc_info=exc)
            continue
        if result.removed:
            log.info(
                "orphan-body sweep: %d old bod(ies) checked, %d orphan(s) removed",
                result.checked,
                result.removed,
            )


def describe_sqs(settings: SqsSettings) -> str:
    """The shared spool as the start-up log and `check-config` name it."""
    return f"SQS spool {settings.queue_url}, bodies in s3://{settings.bucket}/{settings.prefix}"


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
