"""Blacklisted recipients at RCPT time: refusal, the silent drop mode, a store that is down, and
the table format of the service this relay replaces (through moto); plus local mode end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from relay.config import RelayConfig
from relay.outbox import OutboxSender
from relay.wiring import Components
from ses_core.blacklist import BlacklistEntry, BlacklistReason, InMemoryBlacklist
from ses_core.blacklist.cache import CachedBlacklist
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.errors import BlacklistUnavailable
from ses_core.testing.moto_dynamodb import MotoServer, create_blacklist_table
from tests.integration.relay_support import base_config, message, relay_client
from tests.support.relay_harness import InProcessRelay


def blacklist_with(*addresses: str) -> InMemoryBlacklist:
    """An in-memory blacklist holding `addresses` as bounces."""
    blacklist = InMemoryBlacklist()
    for address in addresses:
        blacklist.put(BlacklistEntry.manual(address, reason=BlacklistReason.BOUNCE))
    return blacklist


async def test_blacklisted_recipient_refused_with_reason(tmp_path: Path) -> None:
    """A blacklisted recipient (any case) gets 550 5.1.1 naming it and the reason; others go out."""
    components = Components(
        sender=OutboxSender(tmp_path), blacklist=blacklist_with("gone@example.org")
    )
    async with InProcessRelay(base_config(), components) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail("app@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            await client.rcpt("Gone@EXAMPLE.org")
        await client.rcpt("ok@example.org")
        assert (await client.data(message())).code == 250
        client.close()
    assert caught.value.code == 550
    assert caught.value.message == "5.1.1 <Gone@example.org>: recipient is blacklisted (bounce)"
    [eml] = tmp_path.glob("*.eml")
    assert b"X-Original-To: ok@example.org" in eml.read_bytes()
    assert b"Gone@" not in eml.read_bytes()


async def test_drop_mode_accepts_but_does_not_send(tmp_path: Path) -> None:
    """RELAY_BLACKLIST_MODE=drop answers 250 at RCPT and silently leaves the address out."""
    components = Components(
        sender=OutboxSender(tmp_path), blacklist=blacklist_with("gone@example.org")
    )
    async with InProcessRelay(base_config(blacklist_drop=True), components) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.sendmail("app@example.com", ["gone@example.org", "ok@example.org"], message(1))
        await client.sendmail("app@example.com", ["gone@example.org"], message(2))
        client.close()
    [eml] = tmp_path.glob("*.eml")  # the second message had no deliverable recipient
    assert b"X-Original-To: ok@example.org" in eml.read_bytes()
    assert b"gone@" not in eml.read_bytes()


async def test_blacklist_down_is_451_never_accept(tmp_path: Path) -> None:
    """When the blacklist cannot answer the RCPT gets 451 4.3.0, and nothing is sent."""

    class Down(InMemoryBlacklist):
        def get(self, address: str) -> BlacklistEntry | None:
            raise BlacklistUnavailable("table unreachable")

    components = Components(sender=OutboxSender(tmp_path), blacklist=Down())
    async with InProcessRelay(base_config(), components) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail("app@example.com")
        reply = await client.execute_command(b"RCPT", b"TO:<a@example.org>")
        data = await client.execute_command(b"DATA")
        client.close()
    assert reply.code == 451 and reply.message.startswith("4.3.0")
    assert data.code == 503  # no recipient was accepted
    assert list(tmp_path.glob("*.eml")) == []


async def test_bad_recipient_syntax_is_501_with_reason(tmp_path: Path) -> None:
    """An unparseable recipient gets 501 5.1.3 and a reason, whether aiosmtpd parses it or not."""
    async with InProcessRelay(base_config(), Components(sender=OutboxSender(tmp_path))) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail("app@example.com")
        first = await client.execute_command(b"RCPT", b"TO:<a@@example.org>")
        second = await client.execute_command(b"RCPT", b"TO:<no-at-sign>")
        third = await client.execute_command(b"RCPT", b"TO:<a@[300.1.1.1]>")
        client.close()
    for reply in (first, second, third):
        assert reply.code == 501 and reply.message.startswith("5.1.3 Bad recipient address syntax:")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto's DynamoDB on a loopback port."""
    with MotoServer() as server:
        yield server


async def test_dynamodb_table_of_the_original_format(tmp_path: Path, moto: MotoServer) -> None:
    """An item written by the original service (only `email`, mixed case) refuses the recipient."""
    client = moto.client()
    create_blacklist_table(client, "bl-original")
    client.put_item(TableName="bl-original", Item={"email": {"S": "Old@Example.org"}})
    blacklist = CachedBlacklist(DynamoDBBlacklist("bl-original", client=client))
    components = Components(sender=OutboxSender(tmp_path), blacklist=blacklist)
    async with InProcessRelay(base_config(), components) as relay:
        client_ = await relay_client(relay)
        await client_.ehlo()
        await client_.mail("app@example.com")
        refused = await client_.execute_command(b"RCPT", b"TO:<Old@Example.org>")
        again = await client_.execute_command(b"RCPT", b"TO:<Old@Example.org>")
        accepted = await client_.execute_command(b"RCPT", b"TO:<new@example.org>")
        client_.close()
    assert refused.code == 550 and "(imported)" in refused.message
    assert again.code == 550
    assert accepted.code == 250
    assert blacklist.stats.hits >= 1


async def test_local_mode_end_to_end(tmp_path: Path) -> None:
    """Local mode built from environment variables: SQLite blacklist, .eml files in the outbox."""
    sqlite_path = tmp_path / "blacklist.sqlite3"
    with SqliteBlacklist(sqlite_path) as store:
        store.put(BlacklistEntry.manual("blocked@example.org", reason=BlacklistReason.COMPLAINT))
    config = RelayConfig.from_environ(
        {
            "SMTP_PORT": "0",
            "RELAY_METRICS_PORT": "off",
            "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
            "RELAY_BLACKLIST_SQLITE": str(sqlite_path),
            "RELAY_DELIVERY": "direct",
            "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        }
    )
    assert config.local_mode
    async with InProcessRelay(config) as relay:
        client = await relay_client(relay)
        await client.ehlo()
        await client.mail("app@example.com")
        refused = await client.execute_command(b"RCPT", b"TO:<blocked@example.org>")
        await client.rcpt("friend@example.org")
        await client.data(message("local"))
        client.close()
    assert refused.code == 550 and "(complaint)" in refused.message
    [eml] = (tmp_path / "outbox").glob("*.eml")
    assert b"Message-ID: <local@example.com>" in eml.read_bytes()
    assert list((tmp_path / "outbox").glob(".*.tmp")) == []
