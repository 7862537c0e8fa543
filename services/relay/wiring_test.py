"""Unit tests for relay.wiring: what each configuration builds, and that it all gets closed."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from relay.auth import API_KEYS_READ_TIMEOUT
from relay.config import ConfigError, RelayConfig
from relay.outbox import OutboxSender
from relay.session import OpenSessions
from relay.wiring import (
    Components,
    Probe,
    api_key_table,
    build_components,
    build_handler,
    build_limiter,
    build_session_policy,
    ses_quota_clients,
    smtp_settings_from_url,
)
from relay.wiring_upstream import PACING_JITTER
from ses_core.blacklist import CachedBlacklist
from ses_core.ratelimit import LocalRateLimiter
from ses_core.smtp.client import SesSmtpClient


def local(tmp_path: Path, **extra: str) -> RelayConfig:
    """A local-mode config writing below tmp_path."""
    return RelayConfig.from_environ(
        {
            "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
            "RELAY_BLACKLIST_SQLITE": str(tmp_path / "bl.sqlite3"),
            "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
            **extra,
        }
    )


async def test_local_mode_builds_outbox_and_sqlite(tmp_path: Path) -> None:
    """Local mode: outbox sender, cached SQLite blacklist, upstream and spool probes, no AUTH."""
    parts = await build_components(local(tmp_path))
    try:
        assert isinstance(parts.sender, OutboxSender)
        assert isinstance(parts.blacklist, CachedBlacklist)
        assert set(parts.probes) == {"upstream", "spool"}
        assert not parts.credentials.enabled and parts.tls_context is None
        assert parts.lookup_executor is not None
    finally:
        await parts.aclose()
    assert (tmp_path / "bl.sqlite3").exists()


async def test_closing_releases_the_lookup_threads(tmp_path: Path) -> None:
    """After `aclose()` the blacklist lookup threads take no more work."""
    parts = await build_components(local(tmp_path))
    await parts.aclose()
    assert parts.lookup_executor is not None
    with pytest.raises(RuntimeError):
        parts.lookup_executor.submit(print)


async def test_blacklist_cache_settings_reach_the_cache(tmp_path: Path) -> None:
    """Both TTLs and the size bound are read from the environment and given to the cache."""
    config = local(
        tmp_path,
        RELAY_BLACKLIST_CACHE_TTL="5",
        RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL="42.5",
        RELAY_BLACKLIST_CACHE_MAX_ENTRIES="1234",
    )
    parts = await build_components(config)
    try:
        cache = parts.blacklist
        assert isinstance(cache, CachedBlacklist)
        assert (cache.positive_ttl, cache.negative_ttl, cache.max_entries) == (42.5, 5.0, 1234)
    finally:
        await parts.aclose()


async def test_local_smtp_url_uses_the_pooled_client(tmp_path: Path) -> None:
    """RELAY_LOCAL_SMTP_URL sends through SesSmtpClient to that server."""
    parts = await build_components(local(tmp_path, RELAY_LOCAL_SMTP_URL="smtp://127.0.0.1:2525"))
    try:
        assert isinstance(parts.sender, SesSmtpClient)
    finally:
        await parts.aclose()


async def test_hand_made_components_close_their_sender(tmp_path: Path) -> None:
    """Components built by hand (tests) close just the sender they were given."""
    closed: list[str] = []

    class Sender(OutboxSender):
        async def aclose(self) -> None:
            closed.append("sender")

    parts = Components(sender=Sender(tmp_path))
    await parts.aclose()
    assert closed == ["sender"]


def test_handler_and_session_policy_follow_the_config(tmp_path: Path) -> None:
    """The handler and the session policy get the configured limits and the components."""
    config = RelayConfig(
        max_recipients=7, max_message_size=4096, session_timeout=9.0, junk_command_limit=3
    )
    parts = Components(sender=OutboxSender(tmp_path))
    handler = build_handler(config, parts)
    assert (handler.max_recipients, handler.sender) == (7, parts.sender)
    sessions = OpenSessions(parts.metrics.sessions)
    policy = build_session_policy(config, parts, sessions)
    assert (policy.max_message_size, policy.idle_timeout, policy.junk_command_limit) == (
        4096,
        9.0,
        3,
    )
    assert policy.sessions is sessions and not policy.auth.enabled


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


def test_null_sender_follows_the_mode(tmp_path: Path) -> None:
    """AWS mode sends `<>` mail as RELAY_BOUNCE_FROM (None: refused); local mode keeps `<>`."""
    parts = Components(sender=OutboxSender(tmp_path))
    aws = "email-smtp.eu-west-1.amazonaws.com"
    assert build_handler(RelayConfig(upstream_host=aws), parts).null_sender is None
    with_bounce = RelayConfig(upstream_host=aws, bounce_from="bounces@example.com")
    assert build_handler(with_bounce, parts).null_sender == "bounces@example.com"
    local = RelayConfig(bounce_from="bounces@example.com")
    assert build_handler(local, parts).null_sender == ""


def test_ses_quota_clients_read_the_region_of_the_smtp_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`auto` reads the quota of the region the mail goes to (the SES SMTP host's), not
    AWS_DEFAULT_REGION's; any other host leaves the region to boto3's usual settings. Both
    clients have the short timeouts and the one retry that bound start-up."""
    from ses_core.ratelimit.ses_quota import API_CONNECT_TIMEOUT, API_READ_TIMEOUT

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    ses_host = RelayConfig.from_environ({"AWS_SMTP_HOST": "email-smtp.ap-south-1.amazonaws.com"})
    for client in ses_quota_clients(ses_host):
        assert client.meta.region_name == "ap-south-1"
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (
            API_CONNECT_TIMEOUT,
            API_READ_TIMEOUT,
        )
        assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
    other_host = RelayConfig.from_environ({"AWS_SMTP_HOST": "smtp.example.com"})
    assert {c.meta.region_name for c in ses_quota_clients(other_host)} == {"eu-west-1"}


def test_api_key_table_client_and_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """USE_APIKEY builds the table client with short timeouts and registers its readiness probe."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    config = RelayConfig(use_apikey=True, api_keys_table="keys", local_outbox=tmp_path)
    probes: dict[str, Probe] = {}
    keys = api_key_table(config, probes)
    assert keys is not None and keys.table_name == "keys"
    assert keys.client.meta.config.read_timeout == API_KEYS_READ_TIMEOUT
    assert set(probes) == {"api_keys"}


async def test_unknown_variables_are_warned_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`RELAY_POOL_SZE=8` is not silently ignored: one WARNING names it and RELAY_POOL_SIZE; a
    known variable gives no warning."""
    for extra, expected in (({"RELAY_POOL_SZE": "8"}, 1), ({"RELAY_POOL_SIZE": "8"}, 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            parts = await build_components(local(tmp_path, **extra))
            await parts.aclose()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        named = [w for w in warnings if "RELAY_POOL_SZE" in w]
        assert len(named) == expected, warnings
        assert all("RELAY_POOL_SIZE" in w for w in named)


async def test_the_local_limiter_paces_a_hair_under_the_configured_rate(tmp_path: Path) -> None:
    """SES counts at its end: the local limiter spaces its grants by PACING_JITTER (0.5% under
    SES_RATE_LIMIT) and still reports the configured rate (Redis keeps its own 1%)."""
    config = local(tmp_path, SES_RATE_LIMIT="200")
    async with contextlib.AsyncExitStack() as stack:
        limiter, on_daily_quota = await build_limiter(config, stack, {})
    assert isinstance(limiter, LocalRateLimiter) and on_daily_quota is None
    assert limiter.rate == pytest.approx(200.0)
    assert limiter.slot_interval == pytest.approx((1 + PACING_JITTER) / 200.0)
    assert 0 < PACING_JITTER <= 0.01
