"""Test doubles around a real `Blacklist`: fault injection without a fake store.

Tests that need one write to fail (throttling for one address, an outage for all) wrap a real
adapter (moto-backed DynamoDB, SQLite, in-memory) in a subclass of `DelegatingBlacklist` that
overrides only the methods it breaks; every other call reaches the real store unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from ses_core.blacklist import (
    Blacklist,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    OccurrenceResult,
)


class DelegatingBlacklist:
    """A `Blacklist` that forwards every call to `inner`; subclasses override what they fault."""

    def __init__(self, inner: Blacklist) -> None:
        self.inner = inner

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        return self.inner.lookup_many(addresses)

    def get(self, address: str) -> BlacklistEntry | None:
        return self.inner.get(address)

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        return self.inner.record(event)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        return self.inner.record_occurrence(event, threshold=threshold)

    def put(self, entry: BlacklistEntry) -> None:
        self.inner.put(entry)

    def remove(self, address: str) -> bool:
        return self.inner.remove(address)

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        return self.inner.list_page(limit=limit, cursor=cursor)
