"""Which blacklist store the relay uses: one store only, chosen explicitly, and logged.

The Docker image once set `RELAY_BLACKLIST_SQLITE`, and the relay preferred SQLite, so a container
configured with `USE_BLACKLIST=true` and `DYNAMODB_TABLE` looked its recipients up in an empty
local file. The rules now: the local SQLite file is the default only in local mode with no
DynamoDB table; both stores set explicitly is a start-up error naming both variables.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from relay.config import ConfigError, RelayConfig
from relay.wiring import build_blacklist
from ses_core.blacklist.sqlite import SqliteBlacklist

AWS = {"AWS_SMTP_HOST": "email-smtp.eu-west-1.amazonaws.com", "SES_RATE_LIMIT": "14"}
DYNAMODB = {"USE_BLACKLIST": "true", "DYNAMODB_TABLE": "ses-blacklist"}


def test_both_stores_set_is_a_config_error_naming_both(tmp_path: Path) -> None:
    """RELAY_BLACKLIST_SQLITE together with USE_BLACKLIST+DYNAMODB_TABLE stops start-up."""
    sqlite = {"RELAY_BLACKLIST_SQLITE": str(tmp_path / "bl.sqlite3")}
    for mode in (AWS, {}):
        with pytest.raises(ConfigError) as caught:
            RelayConfig.from_environ({**mode, **DYNAMODB, **sqlite})
        message = str(caught.value)
        assert "\n" not in message
        assert "RELAY_BLACKLIST_SQLITE" in message and "DYNAMODB_TABLE" in message


def test_dynamodb_table_is_used_in_aws_mode() -> None:
    """Compose's settings (AWS mode, USE_BLACKLIST, DYNAMODB_TABLE): DynamoDB, no SQLite file."""
    config = RelayConfig.from_environ({**AWS, **DYNAMODB})
    assert config.blacklist_sqlite is None
    assert config.use_blacklist and config.dynamodb_table == "ses-blacklist"


def test_dynamodb_table_is_used_in_local_mode_too() -> None:
    """Local mode falls back to the SQLite file only when no store is configured."""
    config = RelayConfig.from_environ(DYNAMODB)
    assert config.blacklist_sqlite is None
    assert RelayConfig.from_environ({}).blacklist_sqlite == Path("blacklist.sqlite3")


def test_explicit_sqlite_alone_is_still_honoured(tmp_path: Path) -> None:
    """RELAY_BLACKLIST_SQLITE without DYNAMODB_TABLE selects SQLite in AWS mode as before."""
    path = tmp_path / "bl.sqlite3"
    config = RelayConfig.from_environ({**AWS, "RELAY_BLACKLIST_SQLITE": str(path)})
    assert config.blacklist_sqlite == path


async def test_wiring_builds_dynamodb_and_logs_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With compose's settings the wiring builds the DynamoDB store and says so at start."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = RelayConfig.from_environ({**AWS, **DYNAMODB})
    caplog.set_level(logging.INFO, logger="relay.wiring")
    async with contextlib.AsyncExitStack() as stack:
        cache = build_blacklist(config, stack, {})
        assert cache is not None
        assert type(cache.inner).__name__ == "DynamoDBBlacklist"
    assert any("DynamoDB table ses-blacklist" in r.getMessage() for r in caplog.records)


async def test_wiring_logs_sqlite_and_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SQLite store and a disabled blacklist are logged too."""
    caplog.set_level(logging.INFO, logger="relay.wiring")
    path = tmp_path / "bl.sqlite3"
    async with contextlib.AsyncExitStack() as stack:
        cache = build_blacklist(RelayConfig(blacklist_sqlite=path), stack, {})
        assert cache is not None and isinstance(cache.inner, SqliteBlacklist)
        assert build_blacklist(RelayConfig(), stack, {}) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"SQLite file {path}" in m for m in messages)
    assert any("blacklist: off" in m for m in messages)


async def test_wiring_refuses_two_stores_built_in_code(tmp_path: Path) -> None:
    """A config made in code with both stores is refused too, never silently one of them."""
    config = RelayConfig(
        blacklist_sqlite=tmp_path / "bl.sqlite3", use_blacklist=True, dynamodb_table="t"
    )
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(ConfigError, match="RELAY_BLACKLIST_SQLITE.*DYNAMODB_TABLE"):
            build_blacklist(config, stack, {})
