"""Verify that an SNS message really comes from Amazon SNS, for HTTP(S) subscribers.

Anyone can POST to a public endpoint; only a valid signature proves SNS sent the message. The
rules (string to sign, SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA) are AWS's, summarised
in docs/ses-facts.md ("Envelopes around a notification"). The signing certificate URL must be
https on `sns.<region>.amazonaws.com[.cn]` with a `.pem` path, checked before anything is
fetched: the region must be shaped like one, so that S3 bucket hosts such as
`sns.s3.amazonaws.com` (where anyone can publish a "certificate") are refused, and control
characters, spaces, backslashes and non-ASCII text are refused outright because `urlsplit`
silently drops some of them (the URL checked would not be the URL fetched). Certificates are
cached per URL; optionally only expected TopicArns are accepted.

A forged or tampered message raises `SignatureInvalid`. Failing to fetch the certificate is an
infrastructure problem, not proof of forgery: it raises `CertificateUnavailable`, which a caller
may retry.
"""

from __future__ import annotations

import base64
import binascii
import collections
import http.client
import json
import logging
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ses_core.errors import CertificateUnavailable, SignatureInvalid

log = logging.getLogger(__name__)

#: `sns.<region>.amazonaws.com[.cn]`, where the region is shaped like AWS's: two letters, an
#: optional partition marker (`-gov`, `-iso`, `-isob`, ...), a direction word and a number.
_CERT_HOST = re.compile(r"sns\.[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+\.amazonaws\.com(?:\.cn)?")
#: Characters no certificate URL may contain; `urlsplit` would strip some of them unseen.
_UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
_NOTIFICATION_KEYS: tuple[str, ...] = (
    "Message",
    "MessageId",
    "Subject",
    "Timestamp",
    "TopicArn",
    "Type",
)
_CONFIRMATION_KEYS: tuple[str, ...] = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
#: SNS signing certificates are a few KiB; refuse to download anything much larger.
MAX_CERTIFICATE_BYTES = 64 * 1024


class CertificateFetcher(Protocol):
    """Fetches the PEM bytes at an (already validated) https URL."""

    def __call__(self, url: str) -> bytes:
        """Return the PEM bytes; raise CertificateUnavailable if they cannot be fetched."""
        ...


class UrllibCertificateFetcher:
    """The default fetcher: urllib over https, certificate and hostname verified, with a timeout."""

    def __init__(self, *, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._timeout = timeout
        self._context = ssl_context or ssl.create_default_context()

    def __call__(self, url: str) -> bytes:
        """Download `url`; any network or HTTP failure becomes CertificateUnavailable."""
        try:
            with urllib.request.urlopen(url, timeout=self._timeout, context=self._context) as resp:
                data: bytes = resp.read(MAX_CERTIFICATE_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # URLError/HTTPError/timeouts are OSErrors; ValueError covers malformed URLs;
            # http.client raises HTTPException (InvalidURL, BadStatusLine, ...), which is neither.
            message = f"cannot fetch SNS signing certificate {url}: {exc}"
            raise CertificateUnavailable(message) from exc
        if len(data) > MAX_CERTIFICATE_BYTES:
            message = f"SNS signing certificate {url} is larger than {MAX_CERTIFICATE_BYTES} bytes"
            raise CertificateUnavailable(message)
        return data


def validate_certificate_url(url: object) -> str:
    """Return `url` if it can be an SNS signing certificate URL; raise SignatureInvalid if not."""
    if not isinstance(url, str):
        raise SignatureInvalid("SigningCertURL is missing or not a string")
    if not url.isascii() or _UNSAFE_URL_CHARACTERS.search(url):
        message = (
            f"SigningCertURL {url[:200]!r} has spaces, control characters, backslashes "
            "or non-ASCII text"
        )
        raise SignatureInvalid(message)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        message = f"SigningCertURL {url[:200]!r} is not a valid URL: {exc}"
        raise SignatureInvalid(message) from None
    if parts.scheme != "https":
        message = f"SigningCertURL {url[:200]!r} is not https"
        raise SignatureInvalid(message)
    host = parts.hostname or ""
    if (
        parts.username
        or parts.password
        or port not in (None, 443)
        or not _CERT_HOST.fullmatch(host)
    ):
        message = f"SigningCertURL {url[:200]!r} is not on an sns.<region>.amazonaws.com host"
        raise SignatureInvalid(message)
    if not parts.path.endswith(".pem"):
        message = f"SigningCertURL {url[:200]!r} does not name a .pem file"
        raise SignatureInvalid(message)
    return url


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed for this message, per its Type; raise SignatureInvalid if incomplete."""
    msg_type = message.get("Type")
    if msg_type == "Notification":
        keys = _NOTIFICATION_KEYS
    elif msg_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        keys = _CONFIRMATION_KEYS
    else:
        message_text = f"cannot verify SNS message of type {str(msg_type)[:60]!r}"
        raise SignatureInvalid(message_text)
    parts: list[str] = []
    for key in keys:
        value = message.get(key)
        if value is None and key == "Subject":
            continue  # Subject is signed only when present (Lambda records carry it as null)
        if not isinstance(value, str):
            message_text = f"SNS message field {key} is missing or not a string"
            raise SignatureInvalid(message_text)
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


class SnsSignatureVerifier:
    """Checks SNS message signatures, fetching and caching signing certificates.

    Thread-safe. `expected_topic_arns`, when given, lists the only topics accepted. `clock` returns
    the current aware datetime (certificates outside their validity period are refused).
    """

    def __init__(
        self,
        *,
        fetcher: CertificateFetcher | None = None,
        expected_topic_arns: Collection[str] | None = None,
        cache_size: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._fetcher = fetcher if fetcher is not None else UrllibCertificateFetcher()
        self._topics = None if expected_topic_arns is None else frozenset(expected_topic_arns)
        self._cache: collections.OrderedDict[str, x509.Certificate] = collections.OrderedDict()
        self._cache_size = cache_size
        self._clock = clock
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any] | str | bytes) -> None:
        """Return if `message` (an SNS JSON body, decoded or not) is authentic; else raise.

        Raises SignatureInvalid for anything unverifiable or forged, CertificateUnavailable when
        the certificate cannot be fetched.
        """
        obj = _as_mapping(message)
        topic = obj.get("TopicArn")
        if self._topics is not None and not (isinstance(topic, str) and topic in self._topics):
            text = f"unexpected TopicArn {str(topic)[:200]!r}"
            raise SignatureInvalid(text)
        version = obj.get("SignatureVersion")
        hash_factory = _HASHES.get(version) if isinstance(version, str) else None
        if hash_factory is None:
            text = f"unsupported SignatureVersion {str(version)[:20]!r}"
            raise SignatureInvalid(text)
        signature = _decode_signature(obj.get("Signature"))
        url = validate_certificate_url(obj.get("SigningCertURL", obj.get("SigningCertUrl")))
        certificate = self._certificate(url)
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureInvalid("SNS signing certificate does not hold an RSA key")
        try:
            public_key.verify(signature, string_to_sign(obj), padding.PKCS1v15(), hash_factory())
        except InvalidSignature:
            raise SignatureInvalid("SNS message signature does not match") from None

    def _certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None:
                self._cache.move_to_end(url)
        if cached is None:
            cached = _load_certificate(self._fetcher(url), url)
            with self._lock:
                self._cache[url] = cached
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        now = self._clock()
        if not (cached.not_valid_before_utc <= now <= cached.not_valid_after_utc):
            message = f"SNS signing certificate {url} is not valid at {now.isoformat()}"
            raise SignatureInvalid(message)
        return cached


def _as_mapping(message: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    if isinstance(message, Mapping):
        return message
    try:
        decoded = json.loads(message)
    except (ValueError, RecursionError) as exc:
        text = f"SNS message is not valid JSON: {type(exc).__name__}"
        raise SignatureInvalid(text) from None
    if not isinstance(decoded, Mapping):
        raise SignatureInvalid("SNS message is not a JSON object")
    return decoded


def _decode_signature(value: object) -> bytes:
    if not isinstance(value, str):
        raise SignatureInvalid("Signature is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("Signature is not valid base64") from None


def _load_certificate(pem: bytes, url: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        message = f"{url} does not hold a PEM certificate"
        raise SignatureInvalid(message) from None
