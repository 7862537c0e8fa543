"""The relay process with RELAY_UPSTREAM=api against the SES v2 stub: configured as deployed
(boto3's credential, region and endpoint variables), `auto` rate from the stub's GetAccount."""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import Iterator

import pytest

from ses_core.testing.sesv2_stub import Answer, SesV2Stub
from tests.support.relay_harness import RelayProcess

MESSAGE = (
    b"From: app@example.com\r\n"
    b"To: header-only@example.org\r\n"
    b"X-SES-MESSAGE-TAGS: campaign=spring\r\n"
    b"X-SES-CONFIGURATION-SET: events\r\n"
    b"Subject: api\r\n"
    b"\r\n"
    b"body\r\n"
)


@pytest.fixture(scope="module")
def stub() -> Iterator[SesV2Stub]:
    with SesV2Stub() as server:
        yield server


@pytest.fixture(scope="module")
def relay(stub: SesV2Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    env = {
        "RELAY_UPSTREAM": "api",
        "AWS_REGION": "eu-west-1",  # boto3 ignores it; the relay reads it (Lambda/ECS set it)
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_SESV2": stub.url,
        "AWS_ENDPOINT_URL_SES": stub.url,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "RELAY_CONFIGURATION_SET": "default-set",
        "RELAY_MAX_WAIT": "3",
    }
    log_path = tmp_path_factory.mktemp("relay") / "relay.log"
    with RelayProcess(env, log_path=log_path, ops_endpoint=True) as process:
        yield process


def send(relay: RelayProcess, data: bytes, recipients: list[str]) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as client:
        return client.sendmail("app@example.com", recipients, data)


def readyz_body(relay: RelayProcess) -> tuple[int, str]:
    async def get() -> tuple[int, str]:
        assert relay.metrics_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.metrics_port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()

    return asyncio.run(get())


def transactions(relay: RelayProcess) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "transaction"]


def test_a_message_goes_out_through_sendemail_with_headers_consumed(
    relay: RelayProcess, stub: SesV2Stub
) -> None:
    before = len(stub.requests)
    assert send(relay, MESSAGE, ["a@example.net", "b@example.net"]) == {}
    sent = stub.requests[before]
    assert sent.to == ("a@example.net", "b@example.net")
    assert sent.sender == "app@example.com"
    assert sent.configuration_set == "events"
    assert sent.tags == (("campaign", "spring"),)
    assert b"X-SES-" not in sent.data
    assert b"Subject: api\r\n" in sent.data
    assert sent.message_id is not None
    assert sent.message_id in relay.log_text()  # SES's id in the transaction log


def test_invalid_tags_are_a_5xx_at_data_naming_the_header(
    relay: RelayProcess, stub: SesV2Stub
) -> None:
    before = len(stub.requests)
    bad = MESSAGE.replace(b"campaign=spring", b"campaign spring")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(relay, bad, ["a@example.net"])
    assert refused.value.smtp_code == 554
    assert b"X-SES-MESSAGE-TAGS" in refused.value.smtp_error
    assert len(stub.requests) == before


def test_message_rejected_is_a_5xx(relay: RelayProcess, stub: SesV2Stub) -> None:
    stub.script(Answer.failure(400, "MessageRejected", "Email address is not verified."))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(relay, MESSAGE, ["a@example.net"])
    assert refused.value.smtp_code == 554


def test_a_suspended_account_is_a_4xx_and_readyz_names_it(
    relay: RelayProcess, stub: SesV2Stub
) -> None:
    stub.script(Answer.failure(400, "AccountSuspendedException", "Account suspended."))
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(relay, MESSAGE, ["a@example.net"])
    assert 400 <= deferred.value.smtp_code < 500
    status, body = readyz_body(relay)
    assert status == 503
    assert "upstream: AccountSuspended" in body
    assert send(relay, MESSAGE, ["a@example.net"]) == {}  # SES sends again: ready again
    assert readyz_body(relay)[0] == 200


def test_the_start_log_names_the_api_upstream(relay: RelayProcess) -> None:
    assert "upstream: SES v2 API in eu-west-1" in relay.log_text()
    assert "LOCAL MODE" not in relay.log_text()
    assert "upstream SES v2 API)" in relay.log_text()
