"""Tests for the blacklist lookup at delivery time: the relay's lookup shape, keyed by address."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from ses_core.blacklist import BlacklistEntry, CachedBlacklist, InMemoryBlacklist
from ses_core.errors import BlacklistUnavailable, LookupWouldBlock
from ses_core.queue._lookup import blacklisted

SEEN = datetime(2026, 1, 1, tzinfo=UTC)


def entry(address: str, reason: str = "bounce") -> BlacklistEntry:
    return BlacklistEntry(address, reason, None, None, None, SEEN, SEEN)


class ThreadRecordingBlacklist(InMemoryBlacklist):
    """Records the thread each synchronous lookup ran on."""

    def __init__(self, entries: Iterable[BlacklistEntry] = ()) -> None:
        super().__init__(entries)
        self.threads: list[str] = []

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        self.threads.append(threading.current_thread().name)
        return super().lookup_many(addresses)


class InstantBlacklist(ThreadRecordingBlacklist):
    """Answers on the loop (`InstantLookup`), or says it would block when told."""

    def __init__(self, entries: Iterable[BlacklistEntry] = (), *, blocks: bool = False) -> None:
        super().__init__(entries)
        self.blocks = blocks
        self.instant = 0

    def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        if self.blocks:
            raise LookupWouldBlock("the file is locked")
        self.instant += 1
        return InMemoryBlacklist.lookup_many(self, addresses)


async def test_the_result_is_keyed_by_the_address_as_queued_with_its_reason() -> None:
    """A differently-cased recipient matches its normalised entry; the reason is kept."""
    store = ThreadRecordingBlacklist([entry("carol@example.org", "complaint")])
    found = await blacklisted(store, ["bob@example.net", "Carol@Example.ORG"])
    assert found == {"Carol@Example.ORG": "complaint"}


async def test_a_synchronous_store_is_asked_from_a_thread() -> None:
    """A plain BlacklistReader (boto3, sqlite) never blocks the event loop."""
    store = ThreadRecordingBlacklist()
    await blacklisted(store, ["bob@example.net"])
    assert store.threads
    assert store.threads[0] != threading.current_thread().name


async def test_an_instant_store_answers_on_the_loop() -> None:
    """InstantLookup: no thread hop when the answer costs no waiting."""
    store = InstantBlacklist([entry("bob@example.net")])
    assert await blacklisted(store, ["bob@example.net"]) == {"bob@example.net": "bounce"}
    assert (store.instant, store.threads) == (1, [])


async def test_a_lookup_that_would_block_goes_to_a_thread() -> None:
    """LookupWouldBlock is not a failure: the same lookup is asked the blocking way."""
    store = InstantBlacklist([entry("bob@example.net")], blocks=True)
    assert await blacklisted(store, ["bob@example.net"]) == {"bob@example.net": "bounce"}
    assert len(store.threads) == 1


async def test_a_cached_blacklist_is_asked_through_its_async_lookup() -> None:
    """The cache (AsyncLookup) answers; a second lookup is a cache hit."""
    store = CachedBlacklist(InMemoryBlacklist([entry("bob@example.net")]))
    assert await blacklisted(store, ["bob@example.net"]) == {"bob@example.net": "bounce"}
    assert await blacklisted(store, ["bob@example.net"]) == {"bob@example.net": "bounce"}
    assert store.stats.hits >= 1


async def test_an_address_that_does_not_parse_is_left_to_the_upstream() -> None:
    """It passed RCPT once; at delivery it is not looked up, and the others still are."""
    store = ThreadRecordingBlacklist([entry("bob@example.net")])
    found = await blacklisted(store, ["not an address", "bob@example.net"])
    assert found == {"bob@example.net": "bounce"}
    assert await blacklisted(store, ["not an address"]) == {}


async def test_a_store_that_cannot_answer_raises() -> None:
    """BlacklistUnavailable goes up: delivery must not read it as "not blacklisted"."""

    class Down(InMemoryBlacklist):
        def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
            raise BlacklistUnavailable("no answer")

    with pytest.raises(BlacklistUnavailable):
        await blacklisted(Down(), ["bob@example.net"])
