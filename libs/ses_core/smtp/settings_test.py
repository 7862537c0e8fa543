"""Tests for the SES SMTP settings: TLS mode by port, and what is refused."""

from __future__ import annotations

import pytest

from ses_core.smtp.settings import SmtpSettings


def test_settings_choose_tls_mode_by_port_and_validate() -> None:
    """465/2465 mean implicit TLS; bad ports, half credentials and >50 recipients are rejected."""
    assert SmtpSettings("h", 465).uses_implicit_tls
    assert SmtpSettings("h", 2465).uses_implicit_tls
    assert not SmtpSettings("h", 587).uses_implicit_tls
    assert SmtpSettings("h", 2587, implicit_tls=True).uses_implicit_tls
    region = SmtpSettings.for_region("eu-west-1", "AKIA", "pw")
    assert region.host == "email-smtp.eu-west-1.amazonaws.com"
    assert "pw" not in repr(region)
    with pytest.raises(ValueError):
        SmtpSettings("h", 0)
    with pytest.raises(ValueError):
        SmtpSettings("h", username="u")
    with pytest.raises(ValueError):
        SmtpSettings("h", max_recipients_per_message=51)
    with pytest.raises(ValueError):
        SmtpSettings("h", throttle_backoff=())


def test_the_certificate_name_defaults_to_the_host() -> None:
    """`server_hostname` overrides the name the certificate must match, else it is `host`."""
    assert SmtpSettings("127.0.0.1").tls_server_name == "127.0.0.1"
    assert SmtpSettings("127.0.0.1", server_hostname="localhost").tls_server_name == "localhost"
