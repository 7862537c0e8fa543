"""The SES API sender against real HTTP endpoints: the scripted SES v2 stub and moto's server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ses_core.sesapi import SesApiSettings
from ses_core.sesapi.client import AccountSuspended, SesApiSender, sesv2_client
from ses_core.smtp import OutboundMessage, Outcome, ReplyClass
from ses_core.smtp.results import AMBIGUOUS_TEXT
from ses_core.testing.certs import TestCertificates
from ses_core.testing.sesv2_stub import Answer, SesV2Stub
from ses_core.testing.upstream import SmtpUpstream

REGION = "eu-west-1"
MESSAGE = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: someone-else@example.org\r\n"
    b"X-SES-CONFIGURATION-SET: events\r\n"
    b"X-SES-MESSAGE-TAGS: campaign=spring, team=sales\r\n"
    b"Subject: caf\xc3\xa9\r\n"
    b"\r\n"
    b"8-bit body \xff\xfe, not UTF-8\r\n"
)


class RecordingLimiter:
    """Grants at once and remembers what each call cost."""

    def __init__(self) -> None:
        self.costs: list[int] = []

    @property
    def rate(self) -> float:
        return 100.0

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        self.costs.append(cost)
        return 0.0


def client_for(url: str, *, timeout: float = 5.0) -> Any:
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )
    return boto3.client(
        "sesv2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


@pytest.fixture
def stub() -> Iterator[SesV2Stub]:
    with SesV2Stub() as server:
        yield server


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
async def sender(stub: SesV2Stub, slept: list[float]) -> AsyncIterator[SesApiSender]:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    settings = SesApiSettings(region=REGION, configuration_set="default-set", max_attempts=4)
    async with SesApiSender(settings, client=client_for(stub.url), sleep=sleep) as made:
        yield made


def message(*recipients: str, data: bytes = MESSAGE) -> OutboundMessage:
    return OutboundMessage("sender@example.com", recipients or ("a@example.net",), data)


async def test_sends_the_exact_bytes_without_the_consumed_headers(
    stub: SesV2Stub, sender: SesApiSender
) -> None:
    result = await sender.send(message("a@example.net", "b@example.net"))
    assert result.all_accepted
    (sent,) = stub.requests
    assert sent.data == MESSAGE.replace(b"X-SES-CONFIGURATION-SET: events\r\n", b"").replace(
        b"X-SES-MESSAGE-TAGS: campaign=spring, team=sales\r\n", b""
    )
    assert sent.sender == "sender@example.com"
    assert sent.to == ("a@example.net", "b@example.net")  # the envelope, not the To: header
    assert sent.configuration_set == "events"  # the header overrides the default
    assert sent.tags == (("campaign", "spring"), ("team", "sales"))
    assert result.recipients[0].code == 250
    assert result.recipients[0].text == f"Ok {sent.message_id}"


async def test_the_default_configuration_set_applies_without_a_header(
    stub: SesV2Stub, sender: SesApiSender
) -> None:
    await sender.send(message(data=b"Subject: x\r\n\r\nbody\r\n"))
    assert stub.requests[0].configuration_set == "default-set"
    assert stub.requests[0].tags == ()


async def test_invalid_tags_refuse_the_message_naming_the_header_and_send_nothing(
    stub: SesV2Stub, sender: SesApiSender
) -> None:
    data = b"X-SES-MESSAGE-TAGS: no-equals-sign\r\n\r\nbody\r\n"
    result = await sender.send(message(data=data))
    (refused,) = result.refused
    assert refused.code == 554
    assert "X-SES-MESSAGE-TAGS" in refused.text
    assert stub.requests == []


async def test_more_than_50_recipients_go_in_calls_of_50_each_charged_per_recipient(
    stub: SesV2Stub,
) -> None:
    limiter = RecordingLimiter()
    recipients = tuple(f"r{i}@example.net" for i in range(120))
    settings = SesApiSettings(region=REGION)
    async with SesApiSender(settings, client=client_for(stub.url), limiter=limiter) as sender:
        result = await sender.send(message(*recipients))
    assert result.all_accepted
    assert [len(r.to) for r in stub.requests] == [50, 50, 20]
    assert limiter.costs == [50, 50, 20]
    assert tuple(r for sent in stub.requests for r in sent.to) == recipients


async def test_throttling_is_retried_with_backoff_never_refused(
    stub: SesV2Stub, sender: SesApiSender, slept: list[float]
) -> None:
    too_many = Answer.failure(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
    stub.script(too_many, too_many)
    result = await sender.send(message())
    assert result.all_accepted
    assert result.attempts == 3
    assert slept == [5.0, 10.0]


async def test_throttling_past_the_attempts_is_deferred_as_throttled(
    stub: SesV2Stub, sender: SesApiSender
) -> None:
    stub.default = Answer.failure(429, "TooManyRequestsException", "Too many requests")
    result = await sender.send(message())
    (deferred,) = result.deferred
    assert deferred.reply_class is ReplyClass.THROTTLED
    assert len(stub.requests) == 4


async def test_the_daily_quota_is_deferred_at_once_as_daily_quota(
    stub: SesV2Stub, sender: SesApiSender
) -> None:
    stub.script(Answer.failure(400, "LimitExceededException", "Daily message quota exceeded."))
    result = await sender.send(message())
    (deferred,) = result.deferred
    assert deferred.reply_class is ReplyClass.DAILY_QUOTA
    assert len(stub.requests) == 1


async def test_message_rejected_is_permanent(stub: SesV2Stub, sender: SesApiSender) -> None:
    stub.script(Answer.failure(400, "MessageRejected", "Email address is not verified."))
    result = await sender.send(message("a@example.net", "b@example.net"))
    assert [r.outcome for r in result.recipients] == [Outcome.REFUSED, Outcome.REFUSED]
    assert result.recipients[0].code == 554
    assert "MessageRejected" in result.recipients[0].text


async def test_a_suspended_account_defers_and_fails_the_probe_until_a_send_succeeds(
    stub: SesV2Stub, sender: SesApiSender
) -> None:
    stub.script(Answer.failure(400, "AccountSuspendedException", "Account is suspended."))
    result = await sender.send(message())
    assert result.deferred[0].reply_class is ReplyClass.AUTH
    with pytest.raises(AccountSuspended, match="AccountSuspendedException"):
        await sender.probe()
    assert (await sender.send(message())).all_accepted
    await sender.probe()


async def test_a_server_error_is_transient_and_retried(
    stub: SesV2Stub, sender: SesApiSender, slept: list[float]
) -> None:
    stub.script(Answer.failure(503, "ServiceUnavailable", "try later"))
    result = await sender.send(message())
    assert result.all_accepted
    assert slept == [1.0]


async def test_a_read_timeout_after_sending_is_ambiguous_and_never_resent(
    stub: SesV2Stub,
) -> None:
    stub.script(Answer.silence(10.0))
    settings = SesApiSettings(region=REGION, timeout=0.5)
    client = client_for(stub.url, timeout=0.5)
    async with SesApiSender(settings, client=client) as sender:
        result = await sender.send(message("a@example.net", "b@example.net"))
    assert result.ambiguous
    assert all(r.ambiguous and r.text == AMBIGUOUS_TEXT for r in result.recipients)
    assert all(r.outcome is Outcome.DEFERRED for r in result.recipients)
    assert len(stub.requests) == 1


async def test_an_unreachable_endpoint_is_a_deferral(free_port: int) -> None:
    settings = SesApiSettings(region=REGION, max_attempts=1)
    client = client_for(f"http://127.0.0.1:{free_port}", timeout=1.0)
    async with SesApiSender(settings, client=client) as sender:
        result = await sender.send(message())
    assert result.deferred[0].reply_class is ReplyClass.CONNECTION


async def test_missing_credentials_are_an_auth_deferral(
    stub: SesV2Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", stub.url)
    settings = SesApiSettings(region=REGION, max_attempts=1)
    async with SesApiSender(settings, client=sesv2_client(settings)) as sender:
        result = await sender.send(message())
    assert result.deferred[0].reply_class is ReplyClass.AUTH
    assert stub.requests == []


def test_the_production_client_has_no_automatic_retries_and_matched_pool() -> None:
    settings = SesApiSettings(region=REGION, concurrency=7)
    client = sesv2_client(settings)
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.config.max_pool_connections == 7
    assert client.meta.region_name == REGION


async def test_moto_accepts_a_send() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = client_for(f"http://{host}:{port}")
        client.create_email_identity(EmailIdentity="sender@example.com")
        async with SesApiSender(SesApiSettings(region=REGION), client=client) as sender:
            result = await sender.send(message("a@example.net", data=b"Subject: x\r\n\r\nhi\r\n"))
    finally:
        server.stop()
    assert result.all_accepted
    assert result.recipients[0].text.startswith("Ok ")
    assert len(result.recipients[0].text) > len("Ok ")


async def test_the_smtp_path_passes_the_ses_headers_through_unchanged(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """Only the API path consumes X-SES-*: over SMTP, SES itself reads and removes them."""
    from ses_core.smtp.client import SesSmtpClient
    from ses_core.smtp.client_test import settings_for

    async with SesSmtpClient(settings_for(upstream, certificates)) as client:
        result = await client.send(message(data=MESSAGE.replace(b"\xff\xfe", b"")))
    assert result.all_accepted
    (received,) = upstream.messages
    assert b"X-SES-CONFIGURATION-SET: events\r\n" in received.data
    assert b"X-SES-MESSAGE-TAGS: campaign=spring, team=sales\r\n" in received.data
