"""Tests for relay.sns_settings: off by default, complete or a one-line ConfigError."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from relay.check_config import check_config, effective_settings
from relay.config import ConfigError, RelayConfig
from relay.sns_settings import SnsSettings, read_sns_settings

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Certificate and key files (contents are checked when the endpoint starts)."""
    cert, key = tmp_path / "sns.crt", tmp_path / "sns.key"
    cert.write_text("cert")
    key.write_text("key")
    return {"RELAY_SNS_CERT_PATH": str(cert), "RELAY_SNS_KEY_PATH": str(key)}


def test_off_by_default() -> None:
    """No RELAY_SNS_LISTEN: no endpoint (and RelayConfig carries none)."""
    assert read_sns_settings({}) is None
    assert RelayConfig.from_environ({}).sns is None


def test_complete_settings(files: dict[str, str]) -> None:
    """host:port, the TLS files and the topic allowlist; RelayConfig carries them."""
    environ = {
        "RELAY_SNS_LISTEN": "[::1]:8443",
        "RELAY_SNS_TOPIC_ARNS": f"{TOPIC}, arn:aws-cn:sns:cn-north-1:123456789012:t",
        **files,
    }
    settings = read_sns_settings(environ)
    assert isinstance(settings, SnsSettings)
    assert (settings.host, settings.port) == ("::1", 8443)
    assert settings.topic_arns == {TOPIC, "arn:aws-cn:sns:cn-north-1:123456789012:t"}
    assert RelayConfig.from_environ(environ).sns == settings


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"RELAY_SNS_TOPIC_ARNS": ""}, "RELAY_SNS_TOPIC_ARNS: required"),
        ({"RELAY_SNS_TOPIC_ARNS": "ses-feedback"}, "RELAY_SNS_TOPIC_ARNS: not an SNS topic"),
        ({"RELAY_SNS_CERT_PATH": ""}, "RELAY_SNS_CERT_PATH: required"),
        ({"RELAY_SNS_KEY_PATH": "/nonexistent/key"}, "RELAY_SNS_KEY_PATH: no such file"),
        ({"RELAY_SNS_LISTEN": "8443"}, "RELAY_SNS_LISTEN: expected host:port"),
        ({"RELAY_SNS_LISTEN": "0.0.0.0:99999"}, "RELAY_SNS_LISTEN: expected host:port"),
    ],
)
def test_incomplete_settings_stop_start_up(
    files: dict[str, str], extra: dict[str, str], named: str
) -> None:
    """Enabled without what it needs: a ConfigError naming the variable."""
    environ = {
        "RELAY_SNS_LISTEN": "127.0.0.1:8443",
        "RELAY_SNS_TOPIC_ARNS": TOPIC,
        **files,
        **extra,
    }
    with pytest.raises(ConfigError, match=named):
        read_sns_settings(environ)
    with pytest.raises(ConfigError, match=named):
        RelayConfig.from_environ(environ)


def test_check_config_shows_the_settings_and_loads_the_key(files: dict[str, str]) -> None:
    """`relay check-config` lists RELAY_SNS_* and refuses a key file that is not a key."""
    environ = {"RELAY_SNS_LISTEN": "127.0.0.1:8443", "RELAY_SNS_TOPIC_ARNS": TOPIC, **files}
    shown = dict(effective_settings(RelayConfig.from_environ(environ)))
    assert shown["RELAY_SNS_LISTEN"] == "127.0.0.1:8443"
    assert shown["RELAY_SNS_TOPIC_ARNS"] == TOPIC
    assert dict(effective_settings(RelayConfig()))["RELAY_SNS_LISTEN"] == "off"
    assert check_config(environ, out=io.StringIO()) == 2  # "cert"/"key" are not PEM
