"""`relay queue sweep` on the shared spool (moto's server), and on a backend without bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import main
from ses_core.queue.sqs import PENDING_TAG_KEY, PENDING_TAG_VALUE
from ses_core.testing.moto_dynamodb import MotoServer
from ses_core.testing.moto_sqs import (
    aws_client,
    create_spool_resources,
    moto_environ,
    object_keys,
)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with MotoServer() as server:
        yield server.endpoint_url


def test_sweep_removes_old_pending_bodies_only(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A body still tagged pending is an orphan; a committed one (untagged) and anything
    outside RELAY_S3_PREFIX stay. `--older-than` spares young bodies (accepts in progress)."""
    resources = create_spool_resources(moto_endpoint)
    s3 = aws_client("s3", moto_endpoint)
    tag = f"{PENDING_TAG_KEY}={PENDING_TAG_VALUE}"
    s3.put_object(Bucket=resources.bucket, Key="bodies/orphan", Body=b"x", Tagging=tag)
    s3.put_object(Bucket=resources.bucket, Key="bodies/committed", Body=b"x")
    s3.put_object(Bucket=resources.bucket, Key="other/pending", Body=b"x", Tagging=tag)
    for name, value in {
        **moto_environ(moto_endpoint),
        "RELAY_SPOOL": "sqs",
        "RELAY_SQS_QUEUE_URL": resources.queue_url,
        "RELAY_S3_BUCKET": resources.bucket,
        "RELAY_S3_PREFIX": "bodies/",
    }.items():
        monkeypatch.setenv(name, value)
    assert main.main(["queue", "sweep"]) == 0  # default: older than 6 hours
    assert capsys.readouterr().out == "0 old bod(ies) checked: 0 orphan(s) removed, 0 kept\n"
    assert main.main(["queue", "sweep", "--older-than", "0"]) == 0
    assert capsys.readouterr().out == "2 old bod(ies) checked: 1 orphan(s) removed, 1 kept\n"
    assert object_keys(moto_endpoint, resources.bucket) == ["bodies/committed", "other/pending"]


def test_sweep_is_a_usage_error_on_the_local_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ses_core.queue.local import LocalSpool

    LocalSpool.open(tmp_path, min_free_bytes=0).close()
    monkeypatch.delenv("RELAY_SPOOL", raising=False)
    monkeypatch.setenv("RELAY_SPOOL_DIR", str(tmp_path))
    assert main.main(["queue", "sweep"]) == 2
    assert capsys.readouterr().err == (
        "queue sweep: this spool backend does not offer sweep (only RELAY_SPOOL=sqs has S3"
        " bodies)\n"
    )
