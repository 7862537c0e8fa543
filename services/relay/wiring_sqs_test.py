"""Unit tests for relay.wiring_sqs: the shared spool's region, its periodic sweep, its gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import attrs
import pytest

from relay.config import ConfigError, RelayConfig
from relay.handler_queue import QUEUE_UNAVAILABLE, STORAGE_FULL, admission_reply
from relay.metrics import RelayMetrics
from relay.queue_settings import QueueSettings, SqsSettings
from relay.wiring_queue import describe_spool
from relay.wiring_sqs import queue_region, sqs_region, sweep_periodically, watch_sqs_spool
from ses_core.errors import SpoolUnavailable
from ses_core.queue import SpoolStats
from ses_core.queue.sqs import SweepResult

SETTINGS = SqsSettings(queue_url="http://127.0.0.1:9/123456789012/spool", bucket="bodies")


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/spool", "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/spool", "cn-north-1"),
        ("https://us-east-2.queue.amazonaws.com/123456789012/spool", "us-east-2"),
        ("http://127.0.0.1:5000/123456789012/spool", None),
        ("https://vpce-1.sqs.eu-west-1.vpce.amazonaws.com/1/spool", None),
    ],
)
def test_the_region_of_a_queue_url(url: str, region: str | None) -> None:
    assert queue_region(url) == region


def test_the_queue_url_region_wins_then_the_relay_s_usual_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    config = RelayConfig(ses_region="eu-central-1")
    aws = attrs.evolve(SETTINGS, queue_url="https://sqs.eu-west-1.amazonaws.com/1/spool")
    assert sqs_region(config, aws) == "eu-west-1"
    assert sqs_region(config, SETTINGS) == "eu-central-1"
    with pytest.raises(ConfigError, match="^AWS_DEFAULT_REGION: no AWS region configured"):
        sqs_region(RelayConfig(), SETTINGS)


def test_an_unavailable_spool_is_answered_451_a_full_one_452() -> None:
    assert admission_reply("unavailable") == QUEUE_UNAVAILABLE
    assert QUEUE_UNAVAILABLE.startswith("451 4.3.0 ")
    assert admission_reply("disk_full") == admission_reply("queue_full") == STORAGE_FULL


def test_the_spool_is_described_by_its_queue_and_bucket() -> None:
    config = RelayConfig(queue=QueueSettings(spool="sqs", sqs=SETTINGS))
    assert describe_spool(config) == (
        "SQS spool http://127.0.0.1:9/123456789012/spool, bodies in s3://bodies/ses-relay/"
    )


async def test_the_spool_is_opened_with_the_relay_s_settings_and_no_aws_call() -> None:
    """The queue URL's region, the prefix and the visibility timeout reach the `SqsSpool`;
    nothing is contacted (the queue below does not exist)."""
    from relay.wiring_queue import open_spool
    from ses_core.queue.sqs import SqsSpool

    sqs = SqsSettings(
        queue_url="https://sqs.ap-south-1.amazonaws.com/123456789012/missing",
        bucket="bodies",
        prefix="p/",
        visibility_timeout=120,
    )
    spool = await open_spool(RelayConfig(queue=QueueSettings(spool="sqs", sqs=sqs)))
    try:
        assert isinstance(spool, SqsSpool)
        assert (spool.settings.prefix, spool.settings.visibility_timeout) == ("p/", 120)
        assert spool.settings.queue_url == sqs.queue_url
        assert spool._queue._client.meta.region_name == "ap-south-1"  # noqa: SLF001
        assert spool.admission() is None
    finally:
        await spool.aclose()


class _Spool:
    """Sweeps as told: each entry of `script` is a result or an exception to raise."""

    def __init__(self, *script: SweepResult | Exception) -> None:
        self.script = list(script)
        self.sweeps = 0
        self.done = asyncio.Event()

    async def sweep_orphan_bodies(self) -> SweepResult:
        self.sweeps += 1
        if len(self.script) <= 1:
            self.done.set()
        step = self.script.pop(0) if self.script else SweepResult(0, 0, 0)
        if isinstance(step, Exception):
            raise step
        return step


async def test_failed_sweeps_are_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "relay.wiring_sqs")
    spool = _Spool(
        SpoolUnavailable("S3 ListObjectsV2 failed"), RuntimeError("boom"), SweepResult(3, 1, 2)
    )
    task = asyncio.create_task(sweep_periodically(spool, 0.001, jitter=lambda: 0.0))
    try:
        await asyncio.wait_for(spool.done.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert spool.sweeps >= 3
    text = caplog.text
    assert "orphan-body sweep failed (tried again later): S3 ListObjectsV2 failed" in text
    assert "orphan-body sweep failed unexpectedly" in text
    assert "3 old bod(ies) checked, 1 orphan(s) removed" in text


async def test_the_dead_letter_gauge_follows_the_readings() -> None:
    metrics = RelayMetrics()
    spool = _Spool()
    settings = attrs.evolve(SETTINGS, stats_interval=7.0, sweep_interval=3600.0)
    async with contextlib.AsyncExitStack() as stack:
        interval, show = watch_sqs_spool(spool, settings, metrics, stack)
        show(SpoolStats(messages=4, recipients=4, oldest_received_at=None, dead_letters=3))
        sample = metrics.registry.get_sample_value("relay_sqs_dead_letter_messages")
    assert (interval, sample) == (7.0, 3.0)
