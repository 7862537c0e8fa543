"""Tests for relay.auth: password hashing, API keys, the cached checker and the throttle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from relay.auth import (
    API_KEYS_CONNECT_TIMEOUT,
    API_KEYS_READ_TIMEOUT,
    ApiKeyRecord,
    AuthThrottle,
    CredentialsUnavailable,
    CredentialVerifier,
    DynamoDBApiKeys,
    InMemoryApiKeys,
    api_key_digest,
    hash_password,
    is_password_hash,
    verify_password,
)
from ses_core.testing.clock import VirtualClock
from ses_core.testing.moto_dynamodb import create_api_key_table


def test_hash_roundtrip_and_salt() -> None:
    """A hash verifies its password only, and two hashes of one password differ (salted)."""
    first, second = hash_password("correct horse", n=16), hash_password("correct horse", n=16)
    assert first != second
    assert first.startswith("scrypt$16$8$1$")
    assert verify_password("correct horse", first)
    assert not verify_password("wrong", first)


@pytest.mark.parametrize(
    "text",
    ["", "plain", "scrypt$1$8$1$AA$AA", "scrypt$16$8$1$!!$AAAA", "bcrypt$x", "scrypt$16$8$1$AA"],
)
def test_malformed_hashes_never_verify(text: str) -> None:
    """Malformed hash strings are recognised as such and never match."""
    assert not is_password_hash(text)
    assert not verify_password("anything", text)


async def test_static_user_verified() -> None:
    """A static user's password is accepted; a wrong password or another user is refused."""
    verifier = CredentialVerifier(users=[("app", hash_password("pw", n=16))])
    assert await verifier.verify("app", "pw")
    assert not await verifier.verify("app", "nope")
    assert not await verifier.verify("other", "pw")


async def test_answers_are_cached_until_the_ttl() -> None:
    """An answer survives a change of the store until `cache_ttl` seconds have passed."""
    clock = VirtualClock()
    store = InMemoryApiKeys()
    verifier = CredentialVerifier(api_keys=store, cache_ttl=10, clock=clock)
    assert not await verifier.verify("app", "late-key")
    store.add("late-key")
    assert not await verifier.verify("app", "late-key")
    clock.now += 11
    assert await verifier.verify("app", "late-key")


async def test_api_keys_hashed_and_legacy_items() -> None:
    """Keys stored as sha256 digests and legacy clear-text items both authenticate."""
    store = InMemoryApiKeys()
    store.add("new-key")
    store.add("old-key", hashed=False)
    store.add("off-key", ApiKeyRecord(active=False))
    store.add("bound-key", ApiKeyRecord(username="svc"))
    verifier = CredentialVerifier(api_keys=store)
    assert await verifier.verify("anyone", "new-key")
    assert await verifier.verify("anyone", "old-key")
    assert not await verifier.verify("anyone", "off-key")
    assert not await verifier.verify("anyone", "unknown")
    assert await verifier.verify("svc", "bound-key")
    assert not await verifier.verify("intruder", "bound-key")
    assert api_key_digest("new-key").startswith("sha256:")


async def test_store_failure_is_not_a_refusal_nor_cached() -> None:
    """When the key store fails the verifier raises CredentialsUnavailable and caches nothing."""

    class Broken:
        calls = 0

        def lookup(self, key: str) -> ApiKeyRecord | None:
            Broken.calls += 1
            raise CredentialsUnavailable("down")

    verifier = CredentialVerifier(api_keys=Broken())
    for _ in range(2):
        with pytest.raises(CredentialsUnavailable):
            await verifier.verify("u", "k")
    assert Broken.calls == 2


def test_api_key_record_from_dynamodb_items() -> None:
    """`active` is read from BOOL, S and N attributes; missing means active."""
    assert ApiKeyRecord.from_item({"api_key": {"S": "k"}}).active
    assert not ApiKeyRecord.from_item({"active": {"BOOL": False}}).active
    assert not ApiKeyRecord.from_item({"active": {"S": "false"}}).active
    assert not ApiKeyRecord.from_item({"active": {"N": "0"}}).active
    assert ApiKeyRecord.from_item({"username": {"S": "svc"}}).username == "svc"


def test_throttle_delays_grow_then_ban_then_expire() -> None:
    """Failures from one peer get doubling delays, then a ban that lapses after ban_seconds."""
    clock = VirtualClock()
    throttle = AuthThrottle(
        max_failures=3, base_delay=0.5, max_delay=8, ban_seconds=60, clock=clock
    )
    assert [throttle.record_failure("1.2.3.4") for _ in range(3)] == [0.5, 1.0, 2.0]
    assert throttle.banned("1.2.3.4")
    assert not throttle.banned("5.6.7.8")
    clock.now += 61
    assert not throttle.banned("1.2.3.4")


def test_throttle_success_resets() -> None:
    """A successful AUTH forgets the peer's earlier failures."""
    throttle = AuthThrottle(max_failures=2, clock=VirtualClock())
    throttle.record_failure("p")
    throttle.record_success("p")
    throttle.record_failure("p")
    assert not throttle.banned("p")


# --- the DynamoDB API-key table: timeouts and the readiness probe -------------------------------


@pytest.fixture
def api_key_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's DynamoDB (in-process) with an empty API-key table; dummy credentials, one region."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("dynamodb")
        create_api_key_table(client, "keys")
        yield client


def operations(client: Any) -> list[str]:
    """The names of the API operations `client` calls from now on."""
    called: list[str] = []
    client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: called.append(model.name)
    )
    return called


def test_api_key_client_has_short_timeouts_and_one_retry(api_key_table: Any) -> None:
    """The table's client gives up within seconds, so a slow table is a 454 at AUTH, not a hang."""
    keys = DynamoDBApiKeys.from_table_name("keys")
    config = keys.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (
        API_KEYS_CONNECT_TIMEOUT,
        API_KEYS_READ_TIMEOUT,
    )
    assert API_KEYS_CONNECT_TIMEOUT <= 5 and API_KEYS_READ_TIMEOUT <= 5
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}


def test_probe_reads_one_item_never_describes_the_table(api_key_table: Any) -> None:
    """Readiness needs only what lookups need (a read of an item that need not exist), not
    dynamodb:DescribeTable, which a read-only role lacks."""
    keys = DynamoDBApiKeys("keys", client=api_key_table)
    called = operations(api_key_table)
    keys.probe()
    assert called == ["GetItem"]


def test_probe_fails_when_the_table_is_missing(api_key_table: Any) -> None:
    """A missing table makes the probe (and so /readyz) fail, with the table named."""
    keys = DynamoDBApiKeys("nope", client=api_key_table)
    called = operations(api_key_table)
    with pytest.raises(CredentialsUnavailable, match="API-key table nope unavailable"):
        keys.probe()
    assert "DescribeTable" not in called
