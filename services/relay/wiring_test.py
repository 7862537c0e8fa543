"""Unit tests for relay.wiring: what each configuration builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, RelayConfig
from relay.outbox import OutboxSender
from relay.wiring import build_components, smtp_settings_from_url
from ses_core.blacklist.cache import CachedBlacklist
from ses_core.smtp.client import SesSmtpClient


def local(tmp_path: Path, **extra: str) -> RelayConfig:
    """A local-mode config writing below tmp_path."""
    return RelayConfig.from_environ(
        {
            "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
            "RELAY_BLACKLIST_SQLITE": str(tmp_path / "bl.sqlite3"),
            **extra,
        }
    )


async def test_local_mode_builds_outbox_and_sqlite(tmp_path: Path) -> None:
    """Local mode: outbox sender, cached SQLite blacklist, upstream readiness check, no AUTH."""
    parts = await build_components(local(tmp_path))
    try:
        assert isinstance(parts.sender, OutboxSender)
        assert isinstance(parts.blacklist, CachedBlacklist)
        assert set(parts.ready_checks) == {"upstream"}
        assert not parts.credentials.enabled and parts.tls_context is None
    finally:
        await parts.aclose()
    assert (tmp_path / "bl.sqlite3").exists()


async def test_local_smtp_url_uses_the_pooled_client(tmp_path: Path) -> None:
    """RELAY_LOCAL_SMTP_URL sends through SesSmtpClient to that server."""
    parts = await build_components(local(tmp_path, RELAY_LOCAL_SMTP_URL="smtp://127.0.0.1:2525"))
    try:
        assert isinstance(parts.sender, SesSmtpClient)
    finally:
        await parts.aclose()


def test_smtp_url_parsing() -> None:
    """User, password, implicit TLS and default ports come from the URL."""
    config = RelayConfig()
    plain = smtp_settings_from_url("smtp://127.0.0.1:2525", config)
    assert (plain.host, plain.port, plain.username, plain.uses_implicit_tls) == (
        "127.0.0.1",
        2525,
        None,
        False,
    )
    tls = smtp_settings_from_url("smtps://u%40x:p%3Aw@mail.test", config)
    assert (tls.port, tls.username, tls.password, tls.uses_implicit_tls) == (
        465,
        "u@x",
        "p:w",
        True,
    )


async def test_missing_region_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USE_BLACKLIST with DynamoDB but no AWS region fails with a one-line ConfigError."""
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    config = RelayConfig.from_environ(
        {
            "AWS_SMTP_HOST": "127.0.0.1",
            "SES_RATE_LIMIT": "5",
            "USE_BLACKLIST": "true",
            "DYNAMODB_TABLE": "bl",
        }
    )
    with pytest.raises(ConfigError, match="^AWS_DEFAULT_REGION: "):
        await build_components(config)
