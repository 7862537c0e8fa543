"""`relay queue ...` on the real backends: a `LocalSpool` directory, and the shared SQS + S3
spool on a moto server (which offers `stats` and `redrive` only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import main
from ses_core.queue import NewMessage, QueuedEnvelope
from ses_core.testing.moto_dynamodb import MotoServer
from ses_core.testing.moto_sqs import (
    SpoolResources,
    aws_client,
    create_spool_resources,
    moto_environ,
)

NOW = 1_800_000_000.0


def test_commands_on_a_real_local_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a `LocalSpool` directory (RELAY_SPOOL_DIR): list, show, retry, stats and delete."""
    from ses_core.queue.local import LocalSpool

    async def fill() -> list[str]:
        spool = LocalSpool.open(tmp_path, min_free_bytes=0)
        try:
            return [
                await spool.put(
                    NewMessage(
                        QueuedEnvelope(f"s{n}@shop.example", [f"r{n}@example.com"], NOW, size=5),
                        b"hello",
                    )
                )
                for n in range(3)
            ]
        finally:
            await spool.aclose()

    ids = asyncio.run(fill())
    monkeypatch.setenv("RELAY_SPOOL_DIR", str(tmp_path))
    assert main.main(["queue", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["id"] for row in listed] == ids
    assert listed[0]["recipients"][0]["address"] == "r0@example.com"
    assert main.main(["queue", "show", ids[1]]) == 0
    assert "sender:        s1@shop.example" in capsys.readouterr().out
    assert main.main(["queue", "retry", ids[0]]) == 0
    assert main.main(["queue", "delete", ids[2]]) == 0
    assert main.main(["queue", "show", ids[2]]) == 1
    capsys.readouterr()
    assert main.main(["queue", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["messages"], stats["pending_recipients"], stats["dead_letters"]) == (2, 2, 0)
    assert stats["free_bytes"] > 0


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with MotoServer() as server:
        yield server.endpoint_url


@pytest.fixture
def sqs_spool(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> SpoolResources:
    """A fresh queue, dead-letter queue and bucket, named by the relay's variables; boto3 finds
    the moto server through AWS_ENDPOINT_URL."""
    resources = create_spool_resources(moto_endpoint)
    for name, value in {
        **moto_environ(moto_endpoint),
        "RELAY_SPOOL": "sqs",
        "RELAY_SQS_QUEUE_URL": resources.queue_url,
        "RELAY_S3_BUCKET": resources.bucket,
    }.items():
        monkeypatch.setenv(name, value)
    return resources


def dead_letter_one(endpoint: str, resources: SpoolResources) -> None:
    """Put a message through the shared spool and set it aside, as delivery would."""
    from ses_core.queue.sqs import SqsSpool, SqsSpoolSettings

    async def run() -> None:
        settings = SqsSpoolSettings(
            queue_url=resources.queue_url, bucket=resources.bucket, wait_time=0, threads=2
        )
        spool = SqsSpool(aws_client("sqs", endpoint), aws_client("s3", endpoint), settings)
        try:
            envelope = QueuedEnvelope("app@example.com", ["gone@example.org"], time.time())
            await spool.put(NewMessage(envelope, b"Subject: x\r\n\r\nbody\r\n"))
            for _ in range(50):
                leased = await spool.lease(1, time.time())
                if leased:
                    await spool.dead_letter(leased[0], leased[0].envelope, "no bounce sender")
                    return
            raise AssertionError("the message never came back from SQS")
        finally:
            await spool.aclose()

    asyncio.run(run())


def test_sqs_spool_offers_stats_and_redrive(
    moto_endpoint: str, sqs_spool: SpoolResources, capsys: pytest.CaptureFixture[str]
) -> None:
    """RELAY_SPOOL=sqs: stats shows the approximate depths, redrive moves dead letters back,
    and per-message actions are a usage error naming what the backend offers."""
    dead_letter_one(moto_endpoint, sqs_spool)
    assert main.main(["queue", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["messages"], stats["dead_letters"], stats["free_bytes"]) == (0, 1, None)
    assert main.main(["queue", "redrive"]) == 0
    assert capsys.readouterr().out == "1 dead letter(s) requeued\n"
    assert main.main(["queue", "stats"]) == 0
    assert "messages:           1\n" in capsys.readouterr().out
    assert main.main(["queue", "list"]) == 2
    assert capsys.readouterr().err == (
        "queue list: this spool backend does not offer list (it offers: stats, redrive)\n"
    )


def test_sqs_spool_needs_its_queue_and_bucket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RELAY_SPOOL=sqs without RELAY_SQS_QUEUE_URL or RELAY_S3_BUCKET is a usage error."""
    monkeypatch.setenv("RELAY_SPOOL", "sqs")
    monkeypatch.delenv("RELAY_SQS_QUEUE_URL", raising=False)
    assert main.main(["queue", "stats"]) == 2
    assert capsys.readouterr().err == (
        "queue stats: RELAY_SPOOL=sqs needs RELAY_SQS_QUEUE_URL and RELAY_S3_BUCKET\n"
    )
