"""Tests for the throw-away TLS material."""

from __future__ import annotations

import ssl

from ses_core.testing.certs import TestCertificates


def test_server_context_needs_tls_1_2_and_clients_trust_the_ca(
    certificates: TestCertificates,
) -> None:
    """The server context refuses anything below TLS 1.2, and the CA file is one clients load."""
    assert certificates.server_context().minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ssl.create_default_context(cafile=certificates.ca_file).get_ca_certs()
