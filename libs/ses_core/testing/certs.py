"""Throw-away TLS material for tests and benchmarks: a private CA and a server certificate.

The SMTP client always verifies the certificate and the host name, so the stand-in upstream needs
a certificate a client can verify. `trustme` makes a CA that exists only for the test run; the CA
file is written to a temporary directory and handed to the client as its `ca_file`.
"""

from __future__ import annotations

import os
import ssl
import tempfile

import attrs
import trustme


@attrs.frozen
class TestCertificates:
    """A CA file and the PEM files of one server certificate it signed.

    Attributes:
        ca_file: the CA certificate (PEM) a client trusts.
        cert_file: the server certificate chain (PEM).
        key_file: the server's private key (PEM).
        names: the host names and IP addresses the server certificate is valid for.
    """

    __test__ = False  # not a pytest test class, despite the name

    ca_file: str
    cert_file: str
    key_file: str
    names: tuple[str, ...]

    @classmethod
    def create(
        cls, directory: str | None = None, names: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> TestCertificates:
        """Make a new CA and a server certificate for `names`, written below `directory`."""
        folder = directory if directory is not None else tempfile.mkdtemp(prefix="ses-tls-")
        authority = trustme.CA()
        server = authority.issue_cert(*names)
        ca_file = os.path.join(folder, "ca.pem")
        cert_file = os.path.join(folder, "server-chain.pem")
        key_file = os.path.join(folder, "server-key.pem")
        authority.cert_pem.write_to_path(ca_file)
        server.private_key_pem.write_to_path(key_file)
        with open(cert_file, "wb") as out:
            for blob in server.cert_chain_pems:
                out.write(blob.bytes())
        return cls(ca_file=ca_file, cert_file=cert_file, key_file=key_file, names=names)

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server presenting the certificate (TLS 1.2 minimum)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context
