"""Tests for relay.sns_endpoint: SNS HTTP(S) bodies signed with a local key, a real blacklist."""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.sns_endpoint import SnsMessageHandler, UrllibConfirmer, validate_subscribe_url
from ses_core.blacklist import BlacklistEvent, InMemoryBlacklist, OccurrenceResult
from ses_core.blacklist.feedback_writer import FeedbackWriter
from ses_core.errors import BlacklistUnavailable
from ses_core.testing import feedback_docs as fx
from ses_core.testing.blacklists import DelegatingBlacklist
from ses_core.testing.certs import TestCertificates
from ses_core.testing.sns_signing import SnsTestSigner

#: Just after the fixtures' Timestamps.
NOW = datetime(2023, 12, 14, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer() -> SnsTestSigner:
    """One key and certificate for the module (key generation is the slow part)."""
    return SnsTestSigner()


class Confirmations:
    """Records SubscribeURLs instead of fetching them."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)


class DownBlacklist(DelegatingBlacklist):
    """The store is unreachable for writes."""

    def record(self, event: BlacklistEvent) -> Any:
        raise BlacklistUnavailable("table unreachable")

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        raise BlacklistUnavailable("table unreachable")


def make(
    signer: SnsTestSigner, blacklist: Any, confirm: Confirmations | None = None
) -> SnsMessageHandler:
    return SnsMessageHandler(
        signer.verifier({fx.TOPIC_ARN}),
        FeedbackWriter(blacklist),
        topic_arns=frozenset({fx.TOPIC_ARN}),
        confirm=confirm or Confirmations(),
        clock=lambda: NOW,
    )


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_bounce_is_blacklisted(signer: SnsTestSigner, version: str) -> None:
    """A genuine Notification (both signature versions) blacklists the bounced address."""
    blacklist = InMemoryBlacklist()
    signed = signer.sign(fx.sns_envelope(fx.bounce_with_dsn("jane@example.com")), version)
    reply = make(signer, blacklist).handle(body(signed))
    assert reply.status == 200
    assert blacklist.get("jane@example.com") is not None


def test_replay_is_answered_without_a_second_write(signer: SnsTestSigner) -> None:
    """The same MessageId again: 200 (SNS must stop) and the store is not written twice."""
    inner = InMemoryBlacklist()
    calls: list[str] = []

    class Counting(DelegatingBlacklist):
        def record(self, event: BlacklistEvent) -> Any:
            calls.append(event.address)
            return super().record(event)

    handler = make(signer, Counting(inner))
    signed = body(signer.sign(fx.sns_envelope(fx.bounce_with_dsn())))
    first, second = handler.handle(signed), handler.handle(signed)
    assert (first.status, second.status) == (200, 200)
    assert "duplicate" in second.text
    assert calls == ["jane@example.com"]


def test_wrong_topic_is_refused_before_any_certificate_fetch(signer: SnsTestSigner) -> None:
    """A topic outside RELAY_SNS_TOPIC_ARNS: 403, nothing fetched, nothing written."""
    blacklist = InMemoryBlacklist()
    message = dict(fx.sns_envelope(fx.bounce_with_dsn()), TopicArn="arn:aws:sns:eu-west-1:1:x")
    before = len(signer.fetched)
    reply = make(signer, blacklist).handle(body(signer.sign(message)))
    assert reply.status == 403
    assert len(signer.fetched) == before
    assert blacklist.get("jane@example.com") is None


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://sns.s3.amazonaws.com/cert.pem",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
    ],
)
def test_forged_certificate_url_is_refused(signer: SnsTestSigner, url: str) -> None:
    """A SigningCertURL off SNS's hosts: 403 without fetching it, nothing written."""
    blacklist = InMemoryBlacklist()
    message = dict(fx.sns_envelope(fx.bounce_with_dsn()), SigningCertURL=url)
    before = len(signer.fetched)
    reply = make(signer, blacklist).handle(body(signer.sign(message)))
    assert reply.status == 403
    assert len(signer.fetched) == before
    assert blacklist.get("jane@example.com") is None


def test_tampered_message_is_refused(signer: SnsTestSigner) -> None:
    """A signed message changed afterwards: 403, nothing written."""
    blacklist = InMemoryBlacklist()
    signed = signer.sign(fx.sns_envelope(fx.bounce_with_dsn("jane@example.com")))
    signed["Message"] = json.dumps(fx.bounce_with_dsn("victim@example.com"))
    assert make(signer, blacklist).handle(body(signed)).status == 403
    assert blacklist.get("victim@example.com") is None


def test_store_down_is_a_5xx_so_that_sns_retries(signer: SnsTestSigner) -> None:
    """BlacklistUnavailable: 503, and the MessageId is not remembered (the retry is processed)."""
    signed = body(signer.sign(fx.sns_envelope(fx.bounce_with_dsn())))
    down = make(signer, DownBlacklist(InMemoryBlacklist()))
    assert down.handle(signed).status == 503
    assert down.handle(signed).status == 503


def test_subscription_is_confirmed_after_verification(signer: SnsTestSigner) -> None:
    """A verified SubscriptionConfirmation fetches its SubscribeURL once."""
    confirm = Confirmations()
    message = signer.sign(fx.subscription_confirmation())
    reply = make(signer, InMemoryBlacklist(), confirm).handle(body(message))
    assert reply.status == 200
    assert confirm.urls == [message["SubscribeURL"]]


def test_unverified_subscription_is_not_confirmed(signer: SnsTestSigner) -> None:
    """A forged confirmation (bad signature) never makes the relay fetch anything."""
    confirm = Confirmations()
    message = signer.sign(fx.subscription_confirmation())
    message["Token"] = "forged"
    assert make(signer, InMemoryBlacklist(), confirm).handle(body(message)).status == 403
    assert confirm.urls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",  # another region
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com.evil.example/",
        "https://user@sns.us-east-1.amazonaws.com/",
        "https://sns.us-east-1.amazonaws.com:8443/",
        "https://sns.us-east-1.amazonaws.com\\@evil.example/",
        "https://127.0.0.1/",
    ],
)
def test_forged_subscribe_url_host_is_never_fetched(signer: SnsTestSigner, url: str) -> None:
    """Even correctly signed (SNS would never sign it), a SubscribeURL off the topic region's SNS
    host is refused: no request to any other host."""
    confirm = Confirmations()
    message = signer.sign(dict(fx.subscription_confirmation(), SubscribeURL=url))
    assert make(signer, InMemoryBlacklist(), confirm).handle(body(message)).status == 403
    assert confirm.urls == []


def test_subscribe_url_must_match_the_topic_region() -> None:
    """Only https://sns.<region of the TopicArn>.amazonaws.com[.cn] passes."""
    arn = "arn:aws:sns:eu-west-1:123456789012:t"
    good = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x"
    assert validate_subscribe_url(good, arn) == good
    china = "arn:aws-cn:sns:cn-north-1:123456789012:t"
    url = "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription"
    assert validate_subscribe_url(url, china) == url
    with pytest.raises(ValueError, match="SubscribeURL"):
        validate_subscribe_url(good, china)


def test_unsubscribe_confirmation_is_logged(
    signer: SnsTestSigner, caplog: pytest.LogCaptureFixture
) -> None:
    """UnsubscribeConfirmation: 200, logged, nothing fetched."""
    confirm = Confirmations()
    message = signer.sign(fx.subscription_confirmation("UnsubscribeConfirmation"))
    caplog.set_level("INFO")
    assert make(signer, InMemoryBlacklist(), confirm).handle(body(message)).status == 200
    assert confirm.urls == []
    assert "UnsubscribeConfirmation" in caplog.text


def test_stale_message_is_refused(signer: SnsTestSigner) -> None:
    """A genuine but old message (older than SNS's retries last): 400, not written."""
    blacklist = InMemoryBlacklist()
    message = dict(fx.sns_envelope(fx.bounce_with_dsn()), Timestamp="2023-12-14T12:00:00.000Z")
    reply = make(signer, blacklist).handle(body(signer.sign(message)))
    assert reply.status == 400 and "old" in reply.text
    assert blacklist.get("jane@example.com") is None


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"Type": "Other"}', json.dumps({"Type": "Notification"}).encode()],
)
def test_malformed_bodies_are_4xx(signer: SnsTestSigner, payload: bytes) -> None:
    """What can never succeed gets a 4xx (SNS does not retry it), never a traceback."""
    reply = make(signer, InMemoryBlacklist()).handle(payload)
    assert 400 <= reply.status < 500


def test_signed_but_unparseable_notification_is_400(signer: SnsTestSigner) -> None:
    """A verified Notification whose Message is not SES JSON: 400 (a retry cannot fix it)."""
    signed = signer.sign(fx.sns_envelope("not ses json"))
    assert make(signer, InMemoryBlacklist()).handle(body(signed)).status == 400


def test_timestamps_in_the_future_beyond_skew_are_refused(signer: SnsTestSigner) -> None:
    """A Timestamp far in the future cannot come from SNS."""
    future = (NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    message = dict(fx.sns_envelope(fx.bounce_with_dsn()), Timestamp=future)
    assert make(signer, InMemoryBlacklist()).handle(body(signer.sign(message))).status == 400


class _Recording(http.server.BaseHTTPRequestHandler):
    """Answers GET with the server's `answer` (status, Location) and records the path."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server: Any = self.server
        server.paths.append(self.path)
        status, location = server.answer
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature
        return


@contextlib.contextmanager
def https_server(certificates: TestCertificates, status: int, location: str = "") -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    server.paths, server.answer = [], (status, location)
    server.socket = certificates.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_confirmer_requests_the_url_and_never_follows_a_redirect(
    certificates: TestCertificates,
) -> None:
    """A 200 confirms; a redirect (which could point anywhere) is an error and is not followed."""
    context = ssl.create_default_context(cafile=certificates.ca_file)
    confirm = UrllibConfirmer(ssl_context=context, timeout=5.0)
    with https_server(certificates, 200) as good:
        confirm(f"https://127.0.0.1:{good.server_address[1]}/?Action=ConfirmSubscription")
        assert good.paths == ["/?Action=ConfirmSubscription"]
        with https_server(
            certificates, 302, f"https://127.0.0.1:{good.server_address[1]}/x"
        ) as bad:
            with pytest.raises(OSError):
                confirm(f"https://127.0.0.1:{bad.server_address[1]}/")
            assert bad.paths == ["/"]
        assert good.paths == ["/?Action=ConfirmSubscription"]  # the redirect target: untouched
