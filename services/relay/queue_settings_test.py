"""Unit tests for relay.queue_settings: the queue's variables, their defaults and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, RelayConfig
from relay.queue_settings import (
    QueueSettings,
    SqsSettings,
    describe_size,
    parse_size,
    read_queue_settings,
)

#: The least a shared (SQS + S3) spool needs.
SQS = {
    "RELAY_SPOOL": "sqs",
    "RELAY_SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/spool",
    "RELAY_S3_BUCKET": "bodies",
    "REDIS_URL": "redis://redis:6379/0",
}


def test_defaults_from_an_empty_environment() -> None:
    """Queue mode, a local spool in ./spool, 1 GiB free kept, 1e6 messages, 5 days, 32, 30 s."""
    settings = read_queue_settings({})
    assert settings == QueueSettings(spool_dir=Path("spool"))
    assert settings.queue_mode and settings.min_free_bytes == 1024**3
    assert (settings.max_messages, settings.lifetime) == (1_000_000, 432_000.0)
    assert (settings.workers, settings.attempt_timeout) == (32, 30.0)
    assert RelayConfig.from_environ({}).queue == settings
    assert RelayConfig().queue.spool_dir is None  # built in code: in memory, no ./spool


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = read_queue_settings(
        {
            "RELAY_DELIVERY": "Direct",
            "RELAY_SPOOL": "local",
            "RELAY_SPOOL_DIR": str(tmp_path),
            "RELAY_SPOOL_MIN_FREE": "500MiB",
            "RELAY_QUEUE_MAX_MESSAGES": "10",
            "RELAY_QUEUE_LIFETIME": "3600",
            "RELAY_QUEUE_WORKERS": "4",
            "RELAY_QUEUE_ATTEMPT_TIMEOUT": "12.5",
        }
    )
    assert settings == QueueSettings(
        delivery="direct",
        spool_dir=tmp_path,
        min_free_bytes=500 * 1024**2,
        max_messages=10,
        lifetime=3600.0,
        workers=4,
        attempt_timeout=12.5,
    )
    assert not settings.queue_mode


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("1GiB", 1024**3),
        ("1 GB", 1000**3),
        ("2.5MiB", int(2.5 * 1024**2)),
        ("64kb", 64_000),
        ("3KiB", 3072),
        ("", 1024**3),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"RELAY_DELIVERY": "later"},
            "^RELAY_DELIVERY: expected 'queue' or 'direct', got 'later'$",
        ),
        ({"RELAY_SPOOL": "nfs"}, "^RELAY_SPOOL: expected 'local' or 'sqs', got 'nfs'$"),
        (
            {**SQS, "RELAY_SQS_QUEUE_URL": " "},
            "^RELAY_SQS_QUEUE_URL: required when RELAY_SPOOL=sqs$",
        ),
        ({**SQS, "RELAY_S3_BUCKET": ""}, "^RELAY_S3_BUCKET: required when RELAY_SPOOL=sqs$"),
        (
            {**SQS, "REDIS_URL": ""},
            r"^REDIS_URL: required when RELAY_SPOOL=sqs \(replicas sharing the queue must share"
            " one send rate: N replicas with separate limiters would send at N times the rate\\)$",
        ),
        ({**SQS, "RELAY_S3_PREFIX": "/x/"}, "^RELAY_S3_PREFIX: an S3 key prefix starts without"),
        ({**SQS, "RELAY_SQS_VISIBILITY_TIMEOUT": "1"}, "^RELAY_SQS_VISIBILITY_TIMEOUT: must be"),
        (
            {**SQS, "RELAY_SQS_VISIBILITY_TIMEOUT": "43201"},
            "^RELAY_SQS_VISIBILITY_TIMEOUT: at most 43200 \\(12 hours\\), got 43201$",
        ),
        ({"RELAY_SPOOL_MIN_FREE": "lots"}, "^RELAY_SPOOL_MIN_FREE: expected bytes or a size like"),
        ({"RELAY_SPOOL_MIN_FREE": "5 parsecs"}, "^RELAY_SPOOL_MIN_FREE: "),
        ({"RELAY_QUEUE_MAX_MESSAGES": "0"}, "^RELAY_QUEUE_MAX_MESSAGES: must be at least 1"),
        ({"RELAY_QUEUE_LIFETIME": "forever"}, "^RELAY_QUEUE_LIFETIME: expected a number"),
        ({"RELAY_QUEUE_WORKERS": "0"}, "^RELAY_QUEUE_WORKERS: must be at least 1"),
        ({"RELAY_QUEUE_ATTEMPT_TIMEOUT": "0"}, "^RELAY_QUEUE_ATTEMPT_TIMEOUT: must be"),
    ],
)
def test_bad_values_are_one_line_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        RelayConfig.from_environ(environ)
    assert "\n" not in str(caught.value)


def test_the_shared_spool_reads_its_queue_and_bucket() -> None:
    """RELAY_SPOOL=sqs: queue, bucket, prefix (default ses-relay/) and visibility (default 60);
    no local directory."""
    settings = read_queue_settings({**SQS, "RELAY_SPOOL": "SQS"})
    assert (settings.spool, settings.spool_dir) == ("sqs", None)
    assert settings.sqs == SqsSettings(
        queue_url=SQS["RELAY_SQS_QUEUE_URL"], bucket="bodies", prefix="ses-relay/"
    )
    assert settings.sqs.visibility_timeout == 60
    custom = read_queue_settings(
        {**SQS, "RELAY_S3_PREFIX": "prod/", "RELAY_SQS_VISIBILITY_TIMEOUT": "120"}
    )
    assert custom.sqs is not None
    assert (custom.sqs.prefix, custom.sqs.visibility_timeout) == ("prod/", 120)
    assert read_queue_settings({}).sqs is None


def test_a_spool_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="^RELAY_SPOOL_DIR: not a directory: "):
        read_queue_settings({"RELAY_SPOOL_DIR": str(path)})


def test_describe_size() -> None:
    assert [describe_size(n) for n in (1024**3, 500 * 1024**2, 1000, 0)] == [
        "1GiB",
        "500MiB",
        "1000",
        "0",
    ]
