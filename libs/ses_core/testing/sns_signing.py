"""Sign SNS HTTP(S) bodies the way Amazon SNS does, with a local key, for tests.

SNS signs the string `ses_core.feedback.sns_signature.string_to_sign` builds, with SHA1withRSA
(SignatureVersion 1) or SHA256withRSA (2), and names its certificate in `SigningCertURL`. Tests
cannot fetch the real certificate (no network) and must not loosen the verifier's URL checks, so
`SnsTestSigner.fetcher` serves the test certificate at the fixtures' real-looking SNS URL instead:
inject it (or `verifier()`) where production builds the urllib fetcher.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ses_core.feedback.sns_signature import SnsSignatureVerifier, string_to_sign
from ses_core.testing.feedback_transport_docs import CERT_URL


class SnsTestSigner:
    """An RSA key and a self-signed certificate served at `CERT_URL` by `fetcher`."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2099, 1, 1, tzinfo=UTC))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        self.fetched: list[str] = []

    def fetcher(self, url: str) -> bytes:
        """The test certificate at `CERT_URL`; any other URL fails like a missing file."""
        self.fetched.append(url)
        if url != CERT_URL:
            message = f"no test certificate at {url}"
            raise KeyError(message)
        return self.cert_pem

    def verifier(self, topic_arns: Collection[str] | None = None) -> SnsSignatureVerifier:
        """A production verifier whose only difference is the certificate fetcher."""
        return SnsSignatureVerifier(fetcher=self.fetcher, expected_topic_arns=topic_arns)

    def sign(self, message: Mapping[str, Any], version: str = "1") -> dict[str, Any]:
        """A copy of `message` with `SignatureVersion` and a valid `Signature`."""
        signed = dict(message, SignatureVersion=version)
        algorithm: hashes.HashAlgorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed


async def post_https(
    port: int,
    body: bytes,
    *,
    ca_file: str,
    method: str = "POST",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, str]:
    """One HTTP/1.1 request to https://127.0.0.1:port over a verified TLS connection, as SNS
    makes it; (status, body text). `headers` replace the defaults (Content-Length included)."""
    context = ssl.create_default_context(cafile=ca_file)
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": "Notification",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    fields.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        try:
            writer.write(head.encode("ascii") + b"\r\n" + body)
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode()
