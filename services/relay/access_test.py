"""Tests for relay.access: client networks, sender domains, the open-relay refusal."""

from __future__ import annotations

import logging

import attrs
import pytest

from relay.access import AccessPolicy, is_loopback_only, refuse_open_relay
from relay.auth import hash_password
from relay.config import ConfigError, RelayConfig


def test_networks_allow_members_only() -> None:
    """Only addresses inside a listed CIDR (including IPv4-mapped IPv6) are allowed."""
    config = RelayConfig.from_environ({"RELAY_ALLOWED_NETWORKS": "10.0.0.0/8,::1/128"})
    policy = AccessPolicy.from_config(config)
    assert policy.client_allowed("10.1.2.3")
    assert policy.client_allowed("::ffff:10.1.2.3")
    assert policy.client_allowed("::1")
    assert not policy.client_allowed("192.168.0.1")
    assert not policy.client_allowed(None)
    assert not policy.client_allowed("not-an-ip")
    assert AccessPolicy().client_allowed("203.0.113.9")


def test_sender_domains() -> None:
    """With a domain list only those exact domains may be used in MAIL FROM."""
    policy = AccessPolicy(sender_domains=frozenset({"example.com"}))
    assert policy.sender_allowed("example.com")
    assert not policy.sender_allowed("evil.example.com")
    assert AccessPolicy().sender_allowed("anything.test")


def test_loopback_detection() -> None:
    """Loopback addresses and `localhost` count as loopback; wildcard and public ones do not."""
    assert is_loopback_only(["127.0.0.1", "::1", "localhost"])
    assert not is_loopback_only(["0.0.0.0"])
    assert not is_loopback_only(["192.0.2.1"])


def test_open_relay_refused() -> None:
    """Listening publicly without AUTH or a network list is refused with a ConfigError."""
    with pytest.raises(ConfigError, match="^SMTP_HOST: .*open relay"):
        refuse_open_relay(RelayConfig(listen_host="0.0.0.0"))


def test_open_relay_protected_configurations_start() -> None:
    """Required AUTH, a network list, or loopback each make a public listener acceptable."""
    hashed = hash_password("pw", n=2)
    refuse_open_relay(RelayConfig(listen_host="127.0.0.1"))
    refuse_open_relay(RelayConfig(listen_host="0.0.0.0", auth_users=(("a", hashed),)))
    refuse_open_relay(
        RelayConfig.from_environ({"SMTP_HOST": "0.0.0.0", "RELAY_ALLOWED_NETWORKS": "10.0.0.0/8"})
    )
    optional_auth = RelayConfig(
        listen_host="0.0.0.0", auth_users=(("a", hashed),), auth_required=False
    )
    with pytest.raises(ConfigError):
        refuse_open_relay(optional_auth)


def test_open_relay_override_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    """RELAY_ALLOW_OPEN_RELAY starts the relay but logs a warning."""
    config = attrs.evolve(RelayConfig(listen_host="0.0.0.0"), allow_open_relay=True)
    with caplog.at_level(logging.WARNING, logger="relay.access"):
        refuse_open_relay(config)
    assert "OPEN RELAY" in caplog.text
