"""Tests for relay.auth: password hashing, API keys, the cached checker and the throttle."""

from __future__ import annotations

import pytest

from relay.auth import (
    ApiKeyRecord,
    AuthThrottle,
    CredentialChecker,
    CredentialsUnavailable,
    InMemoryApiKeys,
    api_key_digest,
    hash_password,
    is_password_hash,
    verify_password,
)


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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


async def test_static_user_checked_and_cached() -> None:
    """A static user's password is accepted, a wrong one refused, and results are cached."""
    clock = FakeClock()
    checker = CredentialChecker(
        users=[("app", hash_password("pw", n=16))], cache_ttl=10, clock=clock
    )
    assert await checker.check("app", "pw")
    assert not await checker.check("app", "nope")
    assert not await checker.check("other", "pw")
    checker._users.clear()  # the cached answer survives a change until it expires
    assert await checker.check("app", "pw")
    clock.now += 11
    assert not await checker.check("app", "pw")


async def test_api_keys_hashed_and_legacy_items() -> None:
    """Keys stored as sha256 digests and legacy clear-text items both authenticate."""
    store = InMemoryApiKeys()
    store.add("new-key")
    store.add("old-key", hashed=False)
    store.add("off-key", ApiKeyRecord(active=False))
    store.add("bound-key", ApiKeyRecord(username="svc"))
    checker = CredentialChecker(api_keys=store)
    assert await checker.check("anyone", "new-key")
    assert await checker.check("anyone", "old-key")
    assert not await checker.check("anyone", "off-key")
    assert not await checker.check("anyone", "unknown")
    assert await checker.check("svc", "bound-key")
    assert not await checker.check("intruder", "bound-key")
    assert api_key_digest("new-key").startswith("sha256:")


async def test_store_failure_is_not_a_refusal_nor_cached() -> None:
    """When the key store fails the checker raises CredentialsUnavailable and caches nothing."""

    class Broken:
        calls = 0

        def lookup(self, key: str) -> ApiKeyRecord | None:
            Broken.calls += 1
            raise CredentialsUnavailable("down")

    checker = CredentialChecker(api_keys=Broken())
    for _ in range(2):
        with pytest.raises(CredentialsUnavailable):
            await checker.check("u", "k")
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
    clock = FakeClock()
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
    throttle = AuthThrottle(max_failures=2, clock=FakeClock())
    throttle.record_failure("p")
    throttle.record_success("p")
    throttle.record_failure("p")
    assert not throttle.banned("p")
