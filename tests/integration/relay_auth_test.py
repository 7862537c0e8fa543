"""TLS and AUTH at the relay's front door: STARTTLS, implicit TLS, static and API-key credentials,
failure throttling, client networks and sender domains."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from relay.auth import AuthThrottle, CredentialVerifier, DynamoDBApiKeys, hash_password
from relay.config import RelayConfig
from relay.outbox import OutboxSender
from relay.tls import server_context
from relay.wiring import Components
from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_dynamodb import MotoServer, create_api_key_table
from tests.integration.relay_support import base_config, message, relay_client
from tests.support.relay_harness import InProcessRelay

PASSWORD = "correct horse battery"


def auth_config(certificates: TestCertificates, **overrides: object) -> RelayConfig:
    """A relay with a certificate and one static user (AUTH required)."""
    values: dict[str, Any] = {
        "tls_cert_path": Path(certificates.cert_file),
        "tls_key_path": Path(certificates.key_file),
        "auth_users": (("app", hash_password(PASSWORD, n=16)),),
    }
    values.update(overrides)
    return base_config(**values)


def components(config: RelayConfig, outbox: Path, **extra: Any) -> Components:
    """Outbox sender, the config's credentials and TLS context, a throttle without delays."""
    assert config.tls_cert_path is not None and config.tls_key_path is not None
    values: dict[str, Any] = {
        "sender": OutboxSender(outbox),
        "credentials": CredentialVerifier(users=config.auth_users),
        "tls_context": server_context(config.tls_cert_path, config.tls_key_path),
        "auth_throttle": AuthThrottle(max_failures=3, base_delay=0.0, max_delay=0.0),
    }
    values.update(extra)
    return Components(**values)


def plain(user: str, password: str) -> str:
    """The AUTH PLAIN initial response."""
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_auth_refused_before_starttls_accepted_after(
    certificates: TestCertificates, tmp_path: Path
) -> None:
    """AUTH is neither offered nor accepted in clear; after STARTTLS it is, and mail flows."""
    config = auth_config(certificates)
    async with InProcessRelay(config, components(config, tmp_path)) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        assert client.supports_extension("starttls")
        assert not client.supports_extension("auth")
        reply = await client.execute_command(b"AUTH", b"PLAIN", plain("app", PASSWORD).encode())
        assert reply.code == 538
        mail = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
        assert mail.code == 530
        await client.starttls(tls_context=_client_context(certificates))
        await client.ehlo()
        assert client.supports_extension("auth")
        assert set(client.server_auth_methods) == {"plain", "login"}
        mail = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
        assert mail.code == 530  # still no AUTH
        assert (await client.auth_login("app", PASSWORD)).code == 235
        await client.sendmail("app@example.com", ["x@example.org"], message())
        client.close()
    assert len(list(tmp_path.glob("*.eml"))) == 1


async def test_implicit_tls_offers_and_accepts_auth(
    certificates: TestCertificates, tmp_path: Path
) -> None:
    """With ENABLE_SSL the session is TLS from the start: AUTH offered and accepted, no STARTTLS."""
    config = auth_config(certificates, implicit_tls=True)
    async with InProcessRelay(config, components(config, tmp_path)) as relay:
        client = await relay_client(relay, tls=True, ca_file=certificates.ca_file)
        await client.ehlo()
        assert client.supports_extension("auth")
        assert not client.supports_extension("starttls")
        assert (await client.auth_plain("app", PASSWORD)).code == 235
        await client.sendmail("app@example.com", ["x@example.org"], message())
        client.close()
    assert len(list(tmp_path.glob("*.eml"))) == 1


async def test_failures_are_throttled_then_disconnected(
    certificates: TestCertificates, tmp_path: Path
) -> None:
    """Wrong passwords get 535; the third failure ends with 421, and later AUTH gets 421 too."""
    config = auth_config(certificates, implicit_tls=True)
    async with InProcessRelay(config, components(config, tmp_path)) as relay:
        client = await relay_client(relay, tls=True, ca_file=certificates.ca_file)
        await client.ehlo()
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
                await client.auth_plain("app", "wrong")
            assert caught.value.code == 535
        with pytest.raises((aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPServerDisconnected)):
            await client.auth_plain("app", "wrong")
        client.close()
        again = await relay_client(relay, tls=True, ca_file=certificates.ca_file)
        await again.ehlo()
        reply = await again.execute_command(b"AUTH", b"PLAIN", plain("app", PASSWORD).encode())
        assert reply.code == 421
        again.close()
        failures = relay.metrics.registry.get_sample_value(
            "relay_auth_failures_total", {"reason": "invalid"}
        )
        assert failures == 3


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto's DynamoDB on a loopback port."""
    with MotoServer() as server:
        yield server


async def test_api_key_table_legacy_and_hashed_keys(
    certificates: TestCertificates, tmp_path: Path, moto: MotoServer
) -> None:
    """USE_APIKEY: an original clear-text key item and a new hashed key both authenticate."""
    client = moto.client()
    create_api_key_table(client, "api-keys")
    client.put_item(TableName="api-keys", Item={"api_key": {"S": "legacy-key-123"}})
    client.put_item(
        TableName="api-keys", Item={"api_key": {"S": "disabled-key"}, "active": {"BOOL": False}}
    )
    keys = DynamoDBApiKeys("api-keys", client=client)
    new_key = keys.create_key(description="test")
    stored = client.scan(TableName="api-keys")["Items"]
    assert not any(item["api_key"]["S"] == new_key for item in stored)  # only the digest is stored
    config = auth_config(
        certificates, implicit_tls=True, auth_users=(), use_apikey=True, api_keys_table="api-keys"
    )
    parts = components(config, tmp_path, credentials=CredentialVerifier(api_keys=keys))
    async with InProcessRelay(config, parts) as relay:
        for user, key, expected in [
            ("svc", "legacy-key-123", 235),
            ("svc", new_key, 235),
            ("svc", "disabled-key", 535),
        ]:
            session = await relay_client(relay, tls=True, ca_file=certificates.ca_file)
            await session.ehlo()
            reply = await session.execute_command(b"AUTH", b"PLAIN", plain(user, key).encode())
            assert reply.code == expected, (key, reply)
            session.close()


async def test_client_outside_allowed_networks_is_refused(
    certificates: TestCertificates, tmp_path: Path
) -> None:
    """A client address outside RELAY_ALLOWED_NETWORKS gets 554 5.7.1 in the greeting."""
    config = RelayConfig.from_environ({"RELAY_ALLOWED_NETWORKS": "10.0.0.0/8"})
    config = base_config(allowed_networks=config.allowed_networks)
    async with InProcessRelay(config, Components(sender=OutboxSender(tmp_path))) as relay:
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
            await relay_client(relay)
    assert caught.value.code == 554


async def test_sender_domain_not_allowed(tmp_path: Path) -> None:
    """MAIL FROM a domain outside RELAY_ALLOWED_SENDER_DOMAINS gets 550 5.7.1."""
    config = base_config(allowed_sender_domains=("example.com",))
    async with InProcessRelay(config, Components(sender=OutboxSender(tmp_path))) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        refused = await client.execute_command(b"MAIL", b"FROM:<x@evil.example.net>")
        accepted = await client.execute_command(b"MAIL", b"FROM:<x@example.com>")
        client.close()
    assert refused.code == 550 and "5.7.1" in refused.message
    assert accepted.code == 250


def _client_context(certificates: TestCertificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificates.ca_file)


async def test_credential_store_down_is_454(certificates: TestCertificates, tmp_path: Path) -> None:
    """When the API-key store cannot answer, AUTH gets 454 4.7.0 (temporary), not 535."""
    from relay.auth import ApiKeyRecord, CredentialsUnavailable

    class Down:
        def lookup(self, key: str) -> ApiKeyRecord | None:
            raise CredentialsUnavailable("table unreachable")

    config = auth_config(certificates, implicit_tls=True)
    parts = components(config, tmp_path, credentials=CredentialVerifier(api_keys=Down()))
    async with InProcessRelay(config, parts) as relay:
        client = await relay_client(relay, tls=True, ca_file=certificates.ca_file)
        await client.ehlo()
        reply = await client.execute_command(b"AUTH", b"PLAIN", plain("svc", "key").encode())
        client.close()
    assert reply.code == 454 and reply.message.startswith("4.7.0")


async def test_help_still_lists_commands(tmp_path: Path) -> None:
    """The drain wrappers keep aiosmtpd's command metadata: HELP lists the commands."""
    async with InProcessRelay(base_config(), Components(sender=OutboxSender(tmp_path))) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        reply = await client.execute_command(b"HELP")
        client.close()
    assert reply.code == 250 and "MAIL" in reply.message and "RCPT" in reply.message


async def test_ehlo_extensions_and_pipelined_transaction(tmp_path: Path) -> None:
    """EHLO offers SIZE 40 MiB, 8BITMIME, SMTPUTF8 and PIPELINING; a pipelined batch works."""
    import asyncio

    async with InProcessRelay(base_config(), Components(sender=OutboxSender(tmp_path))) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        for extension in ("size", "8bitmime", "smtputf8", "pipelining"):
            assert client.supports_extension(extension), extension
        assert client.esmtp_extensions["size"] == str(40 * 1024 * 1024)
        client.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        await reader.readline()
        writer.write(
            b"EHLO me\r\nMAIL FROM:<app@example.com> SMTPUTF8\r\nRCPT TO:<a@example.org>\r\n"
            b"RCPT TO:<b@example.org>\r\nDATA\r\n"
        )
        replies: list[bytes] = []
        while not replies or not replies[-1].startswith(b"354"):
            replies.append(await asyncio.wait_for(reader.readline(), 5))
        writer.write(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        final = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
    codes = [line[:4] for line in replies if not line.startswith(b"250-")]
    assert codes == [b"250 ", b"250 ", b"250 ", b"250 ", b"354 "]
    assert final.startswith(b"250 ")
    [eml] = tmp_path.glob("*.eml")
    assert b"X-Original-To: b@example.org" in eml.read_bytes()
