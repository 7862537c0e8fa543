"""RELAY_UPSTREAM=api: configuration, and the sender the wiring builds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import ConfigError, RelayConfig
from relay.upstream import build_api_sender
from relay.wiring import build_components
from ses_core.sesapi.client import SesApiSender
from ses_core.testing.sesv2_stub import SesV2Stub

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[SesV2Stub]:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)
    with SesV2Stub() as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", stub.url)
        yield stub


def test_smtp_is_the_default_and_api_is_not_local_mode_with_auto_rate() -> None:
    assert RelayConfig.from_environ({}).upstream == "smtp"
    assert RelayConfig.from_environ({}).local_mode
    config = RelayConfig.from_environ(
        {"RELAY_UPSTREAM": "api", "RELAY_SES_REGION": "eu-west-1", "RELAY_CONFIGURATION_SET": "s"}
    )
    assert config.upstream == "api"
    assert not config.local_mode
    assert config.rate_limit is None  # auto
    assert config.ses_region == "eu-west-1"
    assert config.configuration_set == "s"


def test_an_unknown_upstream_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RELAY_UPSTREAM"):
        RelayConfig.from_environ({"RELAY_UPSTREAM": "carrier-pigeon"})


async def test_api_without_any_region_fails_at_start_naming_the_settings(
    aws_env: SesV2Stub,
) -> None:
    config = RelayConfig.from_environ({"RELAY_UPSTREAM": "api", "SES_RATE_LIMIT": "5"})
    with pytest.raises(ConfigError, match="RELAY_SES_REGION"):
        await build_components(config)


async def test_api_builds_the_api_sender_with_region_set_and_pool(
    aws_env: SesV2Stub, tmp_path: Path
) -> None:
    config = RelayConfig.from_environ(
        {
            "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
            "RELAY_UPSTREAM": "api",
            "RELAY_SES_REGION": "eu-central-1",
            "RELAY_CONFIGURATION_SET": "events",
            "RELAY_POOL_SIZE": "9",
        }
    )
    components = await build_components(config)  # auto: GetAccount from the stub
    try:
        sender = components.sender
        assert isinstance(sender, SesApiSender)
        assert sender._client.meta.region_name == "eu-central-1"
        assert sender._client.meta.config.max_pool_connections == 9
        assert sender._settings.configuration_set == "events"
        assert components.probes["upstream"] == sender.probe
    finally:
        await components.aclose()


def test_build_api_sender_takes_boto3s_region(
    aws_env: SesV2Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    config = RelayConfig.from_environ({"RELAY_UPSTREAM": "api", "SES_RATE_LIMIT": "5"})
    sender = build_api_sender(config, limiter=None)
    assert sender._client.meta.region_name == "ap-southeast-2"
