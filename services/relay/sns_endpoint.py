"""What the relay's SNS endpoint does with one HTTP(S) delivery from Amazon SNS.

Anyone can POST to a public endpoint, so every body is checked before it has any effect, cheapest
check first: JSON object of a known `Type`, `TopicArn` in `RELAY_SNS_TOPIC_ARNS` (before any
certificate is fetched), the signature (`ses_core.feedback.sns_signature`: certificate URL on an
SNS host, certificates cached), then the `Timestamp`. The answer tells SNS whether to retry:

- 200 once handled: a `Notification` went through the Lambda's own policy and idempotent writes
  (`ses_core.blacklist.feedback_writer`), a confirmation was confirmed or logged, or the
  `MessageId` was handled moments ago (a replay: answered without a second write).
- 4xx for what a retry can never fix: malformed (400), forged or unexpected (403), too old (400).
- 5xx when retrying may help: the blacklist store is unavailable (503), the signing certificate
  cannot be fetched (503), the SubscribeURL fetch failed (502), a bug (500; logged).

Replay protection is threefold: the signature (nobody else can make a message), the recent
MessageIds (a bounded LRU), and the age limit. SNS stops retrying an HTTP(S) delivery within an
hour (its delivery policies cap the total retry time at 3600 s), so a genuine message is never
older than `MAX_MESSAGE_AGE`; an older one is a recorded message played back, for instance to
blacklist again an address an operator has just removed. Writes are idempotent per feedback id
anyway.

A `SubscriptionConfirmation` is confirmed by fetching its `SubscribeURL` only after the message
verified, and only when that URL is https on `sns.<region>.amazonaws.com[.cn]` for the TopicArn's
own region, port 443, with no redirects: the endpoint never requests any other host (no SSRF).

`SnsMessageHandler.handle` blocks (certificate fetches, store writes): the HTTP server runs it on
threads of its own.
"""

from __future__ import annotations

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
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs

from ses_core.blacklist.feedback_writer import FeedbackWriter
from ses_core.errors import (
    BlacklistUnavailable,
    CertificateUnavailable,
    MalformedNotification,
    SignatureInvalid,
)
from ses_core.feedback import parse_feedback
from ses_core.feedback.sns_signature import SnsSignatureVerifier

log = logging.getLogger(__name__)

#: See the module docstring: SNS's longest retry schedule, plus clock skew.
MAX_MESSAGE_AGE = timedelta(hours=1, minutes=15)
#: How far ahead of our clock a Timestamp may be (clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=15)
#: MessageIds remembered as handled.
SEEN_MESSAGE_IDS = 10_000
#: A SubscribeURL answer is a small XML document; read no more than this.
MAX_CONFIRMATION_BYTES = 64 * 1024

_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})
_TOPIC_ARN = re.compile(r"arn:(aws[a-z-]*):sns:([a-z]{2}(?:-[a-z]+)+-\d+):\d{12}:[\w.-]{1,256}")
_UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")


class Confirmer(Protocol):
    """Requests an (already validated) SubscribeURL; raises on any failure."""

    def __call__(self, url: str) -> None:
        """Confirm the subscription by requesting `url`."""
        ...


@attrs.frozen
class SnsReply:
    """The HTTP status for SNS and a one-line text for the body (never a traceback)."""

    status: int
    text: str


class _Refused(Exception):
    """Stops handling with this reply."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.reply = SnsReply(status, text)


def validate_subscribe_url(url: object, topic_arn: str) -> str:
    """Return `url` if it is SNS's own confirmation URL for the topic's region; else ValueError."""
    match = _TOPIC_ARN.fullmatch(topic_arn)
    if not isinstance(url, str) or match is None:
        raise ValueError("SubscribeURL or TopicArn is missing or malformed")
    if not url.isascii() or _UNSAFE_URL_CHARACTERS.search(url):
        raise ValueError("SubscribeURL has spaces, control characters or non-ASCII text")
    partition, region = match.group(1), match.group(2)
    suffix = ".amazonaws.com.cn" if partition == "aws-cn" else ".amazonaws.com"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("SubscribeURL is not a valid URL") from None
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or parts.hostname != f"sns.{region}{suffix}"
    ):
        message = f"SubscribeURL is not https://sns.{region}{suffix}/ (the topic's region)"
        raise ValueError(message)
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere: refuse it (urllib then raises HTTPError)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibConfirmer:
    """Requests a SubscribeURL over https: certificate verified, no redirects, a timeout."""

    def __init__(self, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        context = ssl_context or ssl.create_default_context()
        self._opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=context)
        )
        self._timeout = timeout

    def __call__(self, url: str) -> None:
        """Request `url`; raise OSError (urllib's errors are OSErrors) on any failure."""
        try:
            with self._opener.open(url, timeout=self._timeout) as response:
                response.read(MAX_CONFIRMATION_BYTES)
        except http.client.HTTPException as exc:
            raise OSError(f"confirmation request failed: {exc}") from exc


class SnsMessageHandler:
    """Checks and handles one SNS HTTP(S) body (see the module docstring). Thread-safe."""

    def __init__(
        self,
        verifier: SnsSignatureVerifier,
        writer: FeedbackWriter,
        *,
        topic_arns: Collection[str],
        confirm: Confirmer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        seen_size: int = SEEN_MESSAGE_IDS,
    ) -> None:
        self._verifier = verifier
        self._writer = writer
        self._topics = frozenset(topic_arns)
        self._confirm = confirm
        self._clock = clock
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._seen_size = seen_size
        self._lock = threading.Lock()

    def handle(self, body: bytes) -> SnsReply:
        """The reply for one POSTed body; never raises."""
        try:
            return self._handle(body)
        except _Refused as refused:
            log.warning("SNS delivery refused (%d): %s", refused.reply.status, refused.reply.text)
            return refused.reply
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, SNS retries
            log.exception("unexpected error handling an SNS delivery")
            return SnsReply(500, "internal error")

    def _handle(self, body: bytes) -> SnsReply:
        message = _decode(body)
        sns_type, topic = message.get("Type"), message.get("TopicArn")
        message_id = str(message.get("MessageId", ""))[:100]
        if sns_type not in _TYPES:
            raise _Refused(400, f"unsupported SNS message type {str(sns_type)[:40]!r}")
        if topic not in self._topics:
            raise _Refused(403, f"topic {str(topic)[:200]!r} is not in RELAY_SNS_TOPIC_ARNS")
        try:
            self._verifier.verify(message)
        except SignatureInvalid as exc:
            raise _Refused(403, f"signature refused: {exc}") from None
        except CertificateUnavailable as exc:
            raise _Refused(503, f"signing certificate unavailable: {exc}") from None
        self._check_age(message.get("Timestamp"))
        if sns_type == "SubscriptionConfirmation":
            return self._subscribe(message, str(topic), message_id)
        if sns_type == "UnsubscribeConfirmation":
            log.info("SNS UnsubscribeConfirmation for %s (message %s)", topic, message_id)
            return SnsReply(200, "unsubscribe confirmation logged")
        return self._notification(message, message_id)

    def _notification(self, message: Mapping[str, Any], message_id: str) -> SnsReply:
        with self._lock:
            if message_id in self._seen:
                self._seen.move_to_end(message_id)
                return SnsReply(200, "duplicate: already handled")
        try:
            records = parse_feedback(message)
        except MalformedNotification as exc:
            raise _Refused(400, f"malformed notification at {exc.path}: {exc.reason}") from None
        try:
            for record in records:
                self._writer.apply(record, message_id)
        except BlacklistUnavailable as exc:
            log.error("blacklist write failed for SNS message %s", message_id, exc_info=True)
            raise _Refused(503, f"blacklist store unavailable: {type(exc).__name__}") from None
        with self._lock:
            self._seen[message_id] = None
            while len(self._seen) > self._seen_size:
                self._seen.popitem(last=False)
        return SnsReply(200, "handled")

    def _subscribe(self, message: Mapping[str, Any], topic: str, message_id: str) -> SnsReply:
        try:
            url = validate_subscribe_url(message.get("SubscribeURL"), topic)
        except ValueError as exc:
            raise _Refused(403, str(exc)) from None
        try:
            self._confirm(url)
        except Exception as exc:  # noqa: BLE001 - any failure: SNS may resend, the operator sees it
            log.warning("could not confirm the SNS subscription to %s: %s", topic, exc)
            raise _Refused(502, "subscription confirmation failed") from None
        log.info("SNS subscription to %s confirmed (message %s)", topic, message_id)
        return SnsReply(200, "subscription confirmed")

    def _check_age(self, timestamp: object) -> None:
        try:
            sent = datetime.fromisoformat(str(timestamp))
        except ValueError:
            raise _Refused(400, "Timestamp is missing or malformed") from None
        if sent.tzinfo is None:
            raise _Refused(400, "Timestamp has no time zone")
        now = self._clock()
        if sent < now - MAX_MESSAGE_AGE:
            raise _Refused(400, f"message is too old (sent {sent.isoformat()})")
        if sent > now + MAX_CLOCK_SKEW:
            raise _Refused(400, f"message is from the future (sent {sent.isoformat()})")


def _decode(body: bytes) -> Mapping[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(400, "body is not JSON") from None
    if not isinstance(message, dict):
        raise _Refused(400, "body is not a JSON object")
    return message
