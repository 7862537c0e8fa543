"""Unit tests for the TLS policy of SES sessions and the reply handling while opening one."""

from __future__ import annotations

import ssl

import pytest

from ses_core.smtp._session import build_tls_context, class_while_opening
from ses_core.smtp.results import ReplyClass
from ses_core.testing.certs import TestCertificates


@pytest.mark.parametrize("use_ca_file", [False, True])
def test_tls_context_always_verifies_certificate_and_host_name(
    tmp_path: object, use_ca_file: bool
) -> None:
    """With or without a test CA, the context needs TLS 1.2+, a valid chain and the right name."""
    ca_file = TestCertificates.create(str(tmp_path)).ca_file if use_ca_file else None
    context = build_tls_context(ca_file)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_replies_while_opening_are_never_permanent_for_the_message() -> None:
    """A 554 greeting or a 4xx STARTTLS answer is a connection problem, auth stays auth."""
    assert class_while_opening(554, "No SMTP service here") is ReplyClass.CONNECTION
    assert class_while_opening(454, "TLS not available") is ReplyClass.CONNECTION
    assert class_while_opening(421, "Too many concurrent SMTP connections") is ReplyClass.CONNECTION
    assert class_while_opening(535, "Authentication Credentials Invalid") is ReplyClass.AUTH
    assert class_while_opening(454, "Temporary authentication failure") is ReplyClass.AUTH
