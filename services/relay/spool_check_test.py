"""Unit tests for relay.spool_check: what `check-config` says about the spool directory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import relay.spool_check
from relay.check_config import check_config
from relay.config import ConfigError
from relay.queue_settings import QueueSettings, SqsSettings
from relay.spool_check import check_spool


def test_an_existing_writable_spool_is_summarised(tmp_path: Path) -> None:
    line, warnings = check_spool(QueueSettings(spool_dir=tmp_path, min_free_bytes=0))
    assert line.startswith(f"spool {tmp_path} (exists, ") and "minimum 0)" in line
    assert warnings == []


def test_a_missing_spool_is_created_by_the_relay(tmp_path: Path) -> None:
    line, _ = check_spool(QueueSettings(spool_dir=tmp_path / "a" / "spool", min_free_bytes=0))
    assert "(will be created, " in line
    assert not (tmp_path / "a").exists()  # the check writes nothing


def test_little_free_space_is_a_warning(tmp_path: Path) -> None:
    _, warnings = check_spool(QueueSettings(spool_dir=tmp_path, min_free_bytes=2**62))
    assert len(warnings) == 1 and warnings[0].startswith("RELAY_SPOOL_MIN_FREE: only ")


def test_a_read_only_spool_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the relay's user may not write is refused (the access check is replaced: these
    tests may run as root, who writes anywhere)."""
    monkeypatch.setattr(relay.spool_check.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="^RELAY_SPOOL_DIR: this user cannot write to the spool"):
        check_spool(QueueSettings(spool_dir=tmp_path))
    with pytest.raises(ConfigError, match="^RELAY_SPOOL_DIR: this user cannot create the spool"):
        check_spool(QueueSettings(spool_dir=tmp_path / "new"))


def test_a_file_in_the_way_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="^RELAY_SPOOL_DIR: .* is not a directory"):
        check_spool(QueueSettings(spool_dir=tmp_path / "file" / "spool"))


def test_check_config_reports_the_spool_and_exits_2_when_unusable(tmp_path: Path) -> None:
    out = io.StringIO()
    ok = {"RELAY_SPOOL_DIR": str(tmp_path / "spool"), "RELAY_SPOOL_MIN_FREE": "0"}
    assert check_config(ok, out=out) == 0
    first = out.getvalue().splitlines()[0]
    assert f"delivery queue, spool {tmp_path / 'spool'} (will be created" in first
    (tmp_path / "file").write_text("x")
    bad = {"RELAY_SPOOL_DIR": str(tmp_path / "file" / "spool")}
    assert check_config(bad, out=io.StringIO()) == 2


def test_the_shared_spool_is_named_not_checked_on_disk() -> None:
    """RELAY_SPOOL=sqs: check-config names the queue and bucket (AWS is not contacted)."""
    sqs = SqsSettings(queue_url="https://sqs.eu-west-1.amazonaws.com/1/spool", bucket="bodies")
    assert check_spool(QueueSettings(spool="sqs", sqs=sqs)) == (
        "SQS spool https://sqs.eu-west-1.amazonaws.com/1/spool, bodies in s3://bodies/ses-relay/",
        [],
    )
