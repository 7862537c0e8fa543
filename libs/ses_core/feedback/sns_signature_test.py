"""Tests for ses_core.feedback.sns_signature: real RSA signatures made with a local key."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ses_core.errors import CertificateUnavailable, SignatureInvalid
from ses_core.feedback.sns_signature import (
    MAX_CERTIFICATE_BYTES,
    SnsSignatureVerifier,
    UrllibCertificateFetcher,
    string_to_sign,
    validate_certificate_url,
)
from ses_core.testing import feedback_docs as fx

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _certificate_pem(private_key: Any, *, not_after: datetime = NOW + timedelta(days=365)) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(not_after)
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    """One RSA key for the module (generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def cert_pem(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed certificate for `key`."""
    return _certificate_pem(key)


class FakeFetcher:
    """Serves PEM bytes per URL and counts calls."""

    def __init__(self, pems: dict[str, bytes]) -> None:
        self.pems = pems
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.pems[url]


def _sign(key: rsa.RSAPrivateKey, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
    message = dict(message, SignatureVersion=version)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


@pytest.fixture
def fetcher(cert_pem: bytes) -> FakeFetcher:
    """A fetcher that serves our certificate at the fixtures' SNS URL."""
    return FakeFetcher({fx.CERT_URL: cert_pem})


@pytest.fixture
def verifier(fetcher: FakeFetcher) -> SnsSignatureVerifier:
    """A verifier using the fake fetcher and a fixed clock."""
    return SnsSignatureVerifier(fetcher=fetcher, clock=lambda: NOW)


def _notification() -> dict[str, Any]:
    return fx.sns_envelope(fx.bounce_with_dsn())


@pytest.mark.parametrize("version", ["1", "2"])
def test_valid_signatures_pass(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier, version: str
) -> None:
    """Correctly signed v1 (SHA1withRSA) and v2 (SHA256withRSA) notifications verify."""
    verifier.verify(_sign(key, _notification(), version))


def test_valid_signature_as_json_text(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier
) -> None:
    """The verifier accepts the raw HTTP body text as well as a decoded mapping."""
    verifier.verify(json.dumps(_sign(key, _notification(), "2")))
    verifier.verify(json.dumps(_sign(key, _notification(), "2")).encode())


@pytest.mark.parametrize("sns_type", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_confirmations_verify(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier, sns_type: str
) -> None:
    """Confirmations are signed over SubscribeURL and Token too, and verify."""
    verifier.verify(_sign(key, fx.subscription_confirmation(sns_type)))


def test_subject_is_signed_when_present(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier
) -> None:
    """A Subject is part of the signed string; changing it breaks the signature."""
    message = _sign(key, dict(_notification(), Subject="Amazon SES Email Event Notification"))
    verifier.verify(message)
    with pytest.raises(SignatureInvalid):
        verifier.verify(dict(message, Subject="Other"))


def test_lambda_record_with_null_subject_and_cert_url_spelling(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier
) -> None:
    """A Lambda-style SNS object (SigningCertUrl, Subject null) verifies."""
    sns = fx.lambda_sns_record(fx.bounce_with_dsn())["Sns"]
    verifier.verify(_sign(key, sns))


def test_string_to_sign_is_exact() -> None:
    """The string to sign lists key\\nvalue\\n in the documented order, skipping a null Subject."""
    message = {
        "Type": "Notification",
        "MessageId": "id",
        "TopicArn": "arn",
        "Message": "m",
        "Timestamp": "t",
        "Subject": None,
        "Extra": "ignored",
    }
    assert (
        string_to_sign(message)
        == b"Message\nm\nMessageId\nid\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n"
    )


@pytest.mark.parametrize("field", ["Message", "MessageId", "Timestamp", "TopicArn"])
def test_tampered_field_is_rejected(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier, field: str
) -> None:
    """Changing any signed field after signing is detected."""
    message = _sign(key, _notification())
    message[field] = message[field] + "x"
    with pytest.raises(SignatureInvalid, match="does not match"):
        verifier.verify(message)


def test_tampered_token_of_confirmation_is_rejected(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier
) -> None:
    """A confirmation's Token is signed: changing it is detected."""
    message = _sign(key, fx.subscription_confirmation())
    message["Token"] = "forged"
    with pytest.raises(SignatureInvalid):
        verifier.verify(message)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.evil.com/cert.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com:99999/cert.pem",
        "file:///etc/passwd.pem",
        # urlsplit drops tab/CR/LF: a check of the split URL passes these; the fetch then fails.
        "https://sns.us-east-1.amazonaws\t.com/x.pem",
        "https://sns.us-east-1.amazonaws.com/a\n.pem",
        "https://sns.us-east-1.amazonaws.com/a\r.pem",
        "https://sns.us-east-1.amazonaws.com/a b.pem",
        "https://sns.us-east-1.amazonaws.com\\@evil.com/x.pem",
        "https://sns.us-east-1.amazonaws.com/\x00.pem",
        "https://sns.us-east-1.amazonaws.com/\x7f.pem",
        "https://sns.us-east-1.amazonaws.com/caf\u00e9.pem",
        # S3 bucket hosts (anyone can upload there) and other hosts with no region label.
        "https://sns.s3.amazonaws.com/cert.pem",
        "https://sns.s3-us-west-2.amazonaws.com/cert.pem",
        "https://sns.s3.us-west-2.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
        "https://sns.us-east-1.s3.amazonaws.com/cert.pem",
        "https://sns.useast-1.amazonaws.com/cert.pem",
        "https://sns.us-east.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.cn/cert.pem",
        "https://xsns.us-east-1.amazonaws.com/cert.pem",
    ],
)
def test_bad_certificate_urls_are_rejected_before_fetching(
    key: rsa.RSAPrivateKey, fetcher: FakeFetcher, verifier: SnsSignatureVerifier, url: str
) -> None:
    """http, foreign or non-regional hosts, non-.pem paths, ports, userinfo, control characters
    and non-ASCII text are refused without a fetch."""
    message = _sign(key, dict(_notification(), SigningCertURL=url))
    with pytest.raises(SignatureInvalid, match="SigningCertURL"):
        verifier.verify(message)
    assert fetcher.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com:443/x.pem",
        "https://sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.eu-west-2.amazonaws.com/x.pem",
        "https://sns.ap-southeast-1.amazonaws.com/x.pem",
        "https://sns.cn-northwest-1.amazonaws.com.cn/x.pem",
        "https://sns.us-iso-east-1.amazonaws.com/x.pem",
        "https://sns.us-isob-east-1.amazonaws.com/x.pem",
    ],
)
def test_good_certificate_urls(url: str) -> None:
    """SNS hosts of every region shape and partition, including .amazonaws.com.cn, pass."""
    assert validate_certificate_url(url) == url


def test_missing_certificate_url_is_rejected() -> None:
    """A missing SigningCertURL is refused."""
    with pytest.raises(SignatureInvalid):
        validate_certificate_url(None)


def test_wrong_topic_is_rejected(key: rsa.RSAPrivateKey, fetcher: FakeFetcher) -> None:
    """With expected topics set, a validly signed message from another topic is refused."""
    verifier = SnsSignatureVerifier(
        fetcher=fetcher,
        expected_topic_arns={"arn:aws:sns:us-east-1:123456789012:other"},
        clock=lambda: NOW,
    )
    with pytest.raises(SignatureInvalid, match="TopicArn"):
        verifier.verify(_sign(key, _notification()))
    accepting = SnsSignatureVerifier(
        fetcher=fetcher, expected_topic_arns={fx.TOPIC_ARN}, clock=lambda: NOW
    )
    accepting.verify(_sign(key, _notification()))


def test_signature_from_another_key_is_rejected(verifier: SnsSignatureVerifier) -> None:
    """A message signed with a key other than the certificate's fails."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verifier.verify(_sign(other, _notification()))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"SignatureVersion": "3"}, "SignatureVersion"),
        ({"SignatureVersion": None}, "SignatureVersion"),
        ({"Signature": "***not base64***"}, "base64"),
        ({"Signature": None}, "Signature"),
        ({"Type": "Other"}, "type"),
        ({"Message": 5}, "Message"),
    ],
)
def test_unverifiable_messages_are_rejected(
    key: rsa.RSAPrivateKey, verifier: SnsSignatureVerifier, changes: dict[str, Any], match: str
) -> None:
    """Unknown versions, bad base64, missing fields and unknown types raise SignatureInvalid."""
    message = _sign(key, _notification())
    message.update(changes)
    with pytest.raises(SignatureInvalid, match=match):
        verifier.verify(message)


@pytest.mark.parametrize("body", ["{not json", "[1]", b"\xff", "[" * 50_000])
def test_bodies_that_are_not_json_objects_are_rejected(
    verifier: SnsSignatureVerifier, body: Any
) -> None:
    """A body that is not a JSON object (including deeply nested junk) raises SignatureInvalid."""
    with pytest.raises(SignatureInvalid):
        verifier.verify(body)


def test_certificates_are_cached_per_url(
    key: rsa.RSAPrivateKey, fetcher: FakeFetcher, verifier: SnsSignatureVerifier
) -> None:
    """The certificate is fetched once and reused for later messages."""
    for _ in range(3):
        verifier.verify(_sign(key, _notification()))
    assert fetcher.calls == [fx.CERT_URL]


def test_cache_is_bounded(key: rsa.RSAPrivateKey, cert_pem: bytes) -> None:
    """With cache_size=1 a second URL evicts the first, which is then fetched again."""
    other_url = "https://sns.eu-west-1.amazonaws.com/other.pem"
    fetcher = FakeFetcher({fx.CERT_URL: cert_pem, other_url: cert_pem})
    verifier = SnsSignatureVerifier(fetcher=fetcher, cache_size=1, clock=lambda: NOW)
    for url in (fx.CERT_URL, other_url, fx.CERT_URL):
        verifier.verify(_sign(key, dict(_notification(), SigningCertURL=url)))
    assert fetcher.calls == [fx.CERT_URL, other_url, fx.CERT_URL]


def test_expired_certificate_is_rejected(key: rsa.RSAPrivateKey, fetcher: FakeFetcher) -> None:
    """A certificate outside its validity period is refused."""
    verifier = SnsSignatureVerifier(fetcher=fetcher, clock=lambda: NOW + timedelta(days=400))
    with pytest.raises(SignatureInvalid, match="not valid at"):
        verifier.verify(_sign(key, _notification()))


def test_fetched_bytes_that_are_not_a_certificate_are_rejected(key: rsa.RSAPrivateKey) -> None:
    """Garbage at the certificate URL raises SignatureInvalid."""
    verifier = SnsSignatureVerifier(
        fetcher=FakeFetcher({fx.CERT_URL: b"<html>"}), clock=lambda: NOW
    )
    with pytest.raises(SignatureInvalid, match="PEM"):
        verifier.verify(_sign(key, _notification()))


def test_non_rsa_certificate_is_rejected(key: rsa.RSAPrivateKey) -> None:
    """A certificate holding an EC key cannot verify SNS signatures."""
    ec_pem = _certificate_pem(ec.generate_private_key(ec.SECP256R1()))
    verifier = SnsSignatureVerifier(fetcher=FakeFetcher({fx.CERT_URL: ec_pem}), clock=lambda: NOW)
    with pytest.raises(SignatureInvalid, match="RSA"):
        verifier.verify(_sign(key, _notification()))


def test_fetch_failure_is_retryable_not_forgery(key: rsa.RSAPrivateKey) -> None:
    """A fetcher failure propagates as the retryable CertificateUnavailable."""

    def failing(url: str) -> bytes:
        raise CertificateUnavailable("down")

    verifier = SnsSignatureVerifier(fetcher=failing, clock=lambda: NOW)
    with pytest.raises(CertificateUnavailable):
        verifier.verify(_sign(key, _notification()))


# --- the default urllib fetcher, against a real HTTPS server on 127.0.0.1 ------------------------


@pytest.fixture(scope="module")
def https_server(cert_pem: bytes) -> Iterator[tuple[str, Callable[[], ssl.SSLContext]]]:
    """A loopback HTTPS server: /cert.pem serves the PEM, /big.pem serves too many bytes,
    /garbled.pem answers with a status line that is not HTTP."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/garbled.pem":
                # Not HTTP: http.client raises BadStatusLine, an HTTPException but no OSError.
                self.wfile.write(b"HTTP/1.1 2x0 Garbled\r\n\r\n")
                self.close_connection = True
                return
            bodies = {"/cert.pem": cert_pem, "/big.pem": b"x" * (MAX_CERTIFICATE_BYTES + 10)}
            body = bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()

    def client_context() -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        return ctx

    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", client_context
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_urllib_fetcher_downloads_over_verified_https(
    https_server: tuple[str, Callable[[], ssl.SSLContext]], cert_pem: bytes
) -> None:
    """The default fetcher downloads the PEM over TLS with a verified certificate."""
    base, context = https_server
    fetcher = UrllibCertificateFetcher(timeout=5.0, ssl_context=context())
    assert fetcher(f"{base}/cert.pem") == cert_pem


@pytest.mark.parametrize("path", ["/missing.pem", "/big.pem"])
def test_urllib_fetcher_failures_are_certificate_unavailable(
    https_server: tuple[str, Callable[[], ssl.SSLContext]], path: str
) -> None:
    """HTTP errors and oversized bodies raise CertificateUnavailable."""
    base, context = https_server
    fetcher = UrllibCertificateFetcher(timeout=5.0, ssl_context=context())
    with pytest.raises(CertificateUnavailable):
        fetcher(f"{base}{path}")


@pytest.mark.parametrize("path", ["/garbled.pem", "/a\n.pem", "/a\t.pem"])
def test_urllib_fetcher_http_client_errors_are_certificate_unavailable(
    https_server: tuple[str, Callable[[], ssl.SSLContext]], path: str
) -> None:
    """http.client's own errors (BadStatusLine, InvalidURL) become CertificateUnavailable."""
    base, context = https_server
    fetcher = UrllibCertificateFetcher(timeout=5.0, ssl_context=context())
    with pytest.raises(CertificateUnavailable) as info:
        fetcher(f"{base}{path}")
    assert isinstance(info.value.__cause__, http.client.HTTPException)


def test_http_client_error_while_fetching_escapes_verify_typed(
    key: rsa.RSAPrivateKey, https_server: tuple[str, Callable[[], ssl.SSLContext]]
) -> None:
    """An HTTPException raised while fetching reaches the caller of verify() typed, retryable."""
    base, context = https_server
    fetcher = UrllibCertificateFetcher(timeout=5.0, ssl_context=context())

    def garbled(url: str) -> bytes:
        return fetcher(f"{base}/garbled.pem")

    verifier = SnsSignatureVerifier(fetcher=garbled, clock=lambda: NOW)
    with pytest.raises(CertificateUnavailable):
        verifier.verify(_sign(key, _notification()))


def test_urllib_fetcher_refuses_an_untrusted_server(
    https_server: tuple[str, Callable[[], ssl.SSLContext]]
) -> None:
    """Without trusting the test CA, TLS verification fails: CertificateUnavailable."""
    base, _ = https_server
    with pytest.raises(CertificateUnavailable):
        UrllibCertificateFetcher(timeout=5.0)(f"{base}/cert.pem")


def test_urllib_fetcher_connection_refused() -> None:
    """A closed port raises CertificateUnavailable."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CertificateUnavailable):
        UrllibCertificateFetcher(timeout=2.0)(f"https://127.0.0.1:{port}/cert.pem")


def _unavailable(url: str) -> bytes:
    raise CertificateUnavailable(url)


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(["Type", "TopicArn", "Signature", "SignatureVersion", "SigningCertURL"]),
        inner,
        max_size=5,
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_junk)
def test_property_junk_only_raises_signature_errors(value: Any) -> None:
    """Arbitrary JSON raises SignatureInvalid (or CertificateUnavailable), nothing else."""
    verifier = SnsSignatureVerifier(
        fetcher=_unavailable, expected_topic_arns={fx.TOPIC_ARN}, clock=lambda: NOW
    )
    open_verifier = SnsSignatureVerifier(fetcher=_unavailable, clock=lambda: NOW)
    for candidate in (verifier, open_verifier):
        with pytest.raises((SignatureInvalid, CertificateUnavailable)):
            candidate.verify(json.dumps(value))
