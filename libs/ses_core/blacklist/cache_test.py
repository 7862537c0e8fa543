"""CachedBlacklist: hits cost nothing, TTLs and size bounds hold, writes invalidate, errors pass."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from ses_core.blacklist import (
    AsyncLookup,
    BatchingLookup,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    BlacklistReason,
    CachedBlacklist,
    CacheStats,
    InMemoryBlacklist,
    InstantLookup,
    OccurrenceResult,
)
from ses_core.errors import BlacklistUnavailable, InvalidAddress, LookupWouldBlock
from ses_core.testing.clock import VirtualClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Recording(InMemoryBlacklist):
    """An in-memory store that records what lookups ask for, and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []
        self.failing = False

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        texts = list(addresses)
        self.asked.append(texts)
        if self.failing:
            raise BlacklistUnavailable("store down")
        return super().lookup_many(texts)


def event(address: str = "bob@example.com", feedback_id: str = "fb-1") -> BlacklistEvent:
    return BlacklistEvent(address, BlacklistReason.BOUNCE, None, feedback_id, None, T0)


@pytest.fixture
def clock() -> VirtualClock:
    """A clock the test moves by hand."""
    return VirtualClock()


@pytest.fixture
def inner() -> Recording:
    """The store behind the cache, with bob blacklisted."""
    store = Recording()
    store.record(event())
    return store


@pytest.fixture
def cache(inner: Recording, clock: VirtualClock) -> CachedBlacklist:
    """A cache with distinct positive (60 s) and negative (10 s) TTLs and room for 3 answers."""
    return CachedBlacklist(inner, positive_ttl=60, negative_ttl=10, max_entries=3, clock=clock)


def test_hot_recipients_cost_no_store_call(cache: CachedBlacklist, inner: Recording) -> None:
    """A second lookup of the same addresses is answered from the cache, both answers."""
    first = cache.lookup_many(["Bob@example.com", "ann@example.com"])
    second = cache.lookup_many(["bob@example.com", "<ANN@example.com>"])
    assert first == second and list(second) == ["bob@example.com"]
    assert len(inner.asked) == 1
    assert cache.stats == CacheStats(hits=2, misses=2, evictions=0, size=2)
    assert cache.stats.hit_ratio == 0.5


def test_only_misses_are_asked_in_one_call(cache: CachedBlacklist, inner: Recording) -> None:
    """The inner store is asked once, for the misses only, with the texts as given."""
    cache.lookup_many(["bob@example.com"])
    cache.lookup_many(["bob@example.com", "Ann@Example.com", "carl@example.com"])
    assert inner.asked == [["bob@example.com"], ["Ann@Example.com", "carl@example.com"]]


def test_every_given_form_reaches_the_store(cache: CachedBlacklist, inner: Recording) -> None:
    """Different texts of one key all go to the store (adapters may match legacy forms)."""
    cache.lookup_many(["Ann@Example.com", "ann@example.com"])
    assert inner.asked == [["Ann@Example.com", "ann@example.com"]]
    assert cache.stats.misses == 1


def test_negative_answer_expires_first(
    cache: CachedBlacklist, inner: Recording, clock: VirtualClock
) -> None:
    """ "Not blacklisted" is kept for negative_ttl, "blacklisted" for positive_ttl."""
    cache.lookup_many(["bob@example.com", "ann@example.com"])
    inner.record(event("ann@example.com", "fb-2"))  # written by another process
    clock.now += 9.9
    assert list(cache.lookup_many(["ann@example.com"])) == []
    clock.now += 0.2
    assert list(cache.lookup_many(["ann@example.com"])) == ["ann@example.com"]
    inner.remove("bob@example.com")
    clock.now += 49
    assert list(cache.lookup_many(["bob@example.com"])) == ["bob@example.com"]
    clock.now += 1
    assert cache.lookup_many(["bob@example.com"]) == {}


def test_least_recently_used_is_evicted(cache: CachedBlacklist, inner: Recording) -> None:
    """At max_entries, the answer unused for longest goes first."""
    cache.lookup_many(["a@example.com", "b@example.com", "c@example.com"])
    cache.lookup_many(["a@example.com"])  # a is now the most recent
    cache.lookup_many(["d@example.com"])  # evicts b
    inner.asked.clear()
    cache.lookup_many(["a@example.com", "c@example.com", "d@example.com"])
    assert inner.asked == []
    cache.lookup_many(["b@example.com"])
    assert inner.asked == [["b@example.com"]]
    assert cache.stats.evictions == 2 and cache.stats.size == 3


def test_writes_through_the_cache_invalidate(cache: CachedBlacklist, inner: Recording) -> None:
    """record, put and remove drop the cached answer of their address."""
    assert cache.get("ann@example.com") is None
    assert cache.record(event("Ann@example.com", "fb-2")).count == 1
    assert cache.get("ann@example.com") is not None
    assert cache.remove("<ann@example.com>") is True
    assert cache.get("ann@example.com") is None
    cache.put(BlacklistEntry.manual("ann@example.com", now=T0))
    entry = cache.get("ann@example.com")
    assert entry is not None and entry.reason is BlacklistReason.MANUAL


def test_failed_write_still_invalidates(cache: CachedBlacklist, inner: Recording) -> None:
    """A write that raised may have happened, so the cached answer is dropped anyway."""
    cache.get("bob@example.com")

    def broken(event: BlacklistEvent) -> BlacklistEntry:
        raise BlacklistUnavailable("store down")

    inner.record = broken  # type: ignore[method-assign]
    with pytest.raises(BlacklistUnavailable):
        cache.record(event())
    assert cache.stats.size == 0


def test_lookup_racing_a_write_does_not_cache_stale_answer(
    inner: Recording, clock: VirtualClock
) -> None:
    """An answer read while a write invalidated the cache is returned but not stored."""
    cache = CachedBlacklist(inner, positive_ttl=60, negative_ttl=60, max_entries=10, clock=clock)
    original = inner.lookup_many

    def racing(addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        answer = original(addresses)
        cache.record(event("ann@example.com", "fb-2"))  # lands while we were reading
        return answer

    inner.lookup_many = racing  # type: ignore[method-assign]
    assert cache.lookup_many(["ann@example.com"]) == {}
    inner.lookup_many = original  # type: ignore[method-assign]
    assert list(cache.lookup_many(["ann@example.com"])) == ["ann@example.com"]


def test_store_errors_propagate_and_cache_nothing(cache: CachedBlacklist, inner: Recording) -> None:
    """BlacklistUnavailable passes through; nothing is cached, so the next lookup asks again."""
    inner.failing = True
    with pytest.raises(BlacklistUnavailable):
        cache.lookup_many(["bob@example.com"])
    inner.failing = False
    assert list(cache.lookup_many(["bob@example.com"])) == ["bob@example.com"]
    assert len(inner.asked) == 2


def test_invalid_address_asks_nothing(cache: CachedBlacklist, inner: Recording) -> None:
    """A bad address fails before the cache or the store is consulted."""
    with pytest.raises(InvalidAddress):
        cache.lookup_many(["bob@example.com", "nope"])
    assert inner.asked == [] and cache.stats.misses == 0


def test_invalidate_everything(cache: CachedBlacklist, inner: Recording) -> None:
    """invalidate() without an address empties the cache."""
    cache.lookup_many(["a@example.com", "b@example.com"])
    cache.invalidate()
    assert cache.stats.size == 0


def test_list_page_is_not_cached(cache: CachedBlacklist, inner: Recording) -> None:
    """Listings always show the store as it is."""
    assert [e.address for e in cache.list_page().entries] == ["bob@example.com"]
    inner.record(event("ann@example.com", "fb-2"))
    ann = inner.get("ann@example.com")
    assert ann is not None
    assert cache.list_page(limit=1) == BlacklistPage(entries=(ann,), next_cursor="ann@example.com")


def test_hit_ratio_before_any_lookup_is_zero(cache: CachedBlacklist) -> None:
    """No lookups, no ratio (and no division by zero)."""
    assert cache.stats.hit_ratio == 0.0


@pytest.mark.parametrize("kwargs", [{"positive_ttl": -1}, {"negative_ttl": -1}, {"max_entries": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    """Negative TTLs or an empty size bound are configuration errors."""
    with pytest.raises(ValueError):
        CachedBlacklist(InMemoryBlacklist(), **kwargs)  # type: ignore[arg-type]


def test_concurrent_lookups_keep_counters_consistent(inner: Recording, clock: VirtualClock) -> None:
    """Threads hammering the cache never lose a hit or miss count or exceed the size bound."""
    cache = CachedBlacklist(inner, positive_ttl=60, negative_ttl=60, max_entries=20, clock=clock)
    addresses = [f"user{n}@example.com" for n in range(40)] + ["bob@example.com"]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for n in range(300):
                batch = [addresses[(offset + n + k) % len(addresses)] for k in range(3)]
                found = cache.lookup_many(batch)
                assert set(found) <= {"bob@example.com"}
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t * 7,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    stats = cache.stats
    assert stats.hits + stats.misses == 4 * 300 * 3
    assert stats.size <= 20


def test_peek_answers_hits_without_the_store(cache: CachedBlacklist, inner: Recording) -> None:
    """Cached answers, both kinds, come back from peek with no store call; misses are listed."""
    cache.lookup_many(["bob@example.com", "ann@example.com"])
    found, misses = cache.peek(["Bob@Example.com", "<ann@example.com>", "Carl@example.com"])
    assert list(found) == ["bob@example.com"]
    assert found["bob@example.com"].reason is BlacklistReason.BOUNCE
    assert misses == ["Carl@example.com"]
    assert len(inner.asked) == 1
    assert cache.stats == CacheStats(hits=2, misses=2, evictions=0, size=2)


def test_peek_treats_expired_answers_as_misses(
    cache: CachedBlacklist, inner: Recording, clock: VirtualClock
) -> None:
    """An answer past its TTL is a miss for peek too (and peek asks nothing)."""
    cache.lookup_many(["ann@example.com"])
    clock.now += 11
    assert cache.peek(["ann@example.com"]) == ({}, ["ann@example.com"])
    assert len(inner.asked) == 1


def test_peek_sees_invalidation(cache: CachedBlacklist, inner: Recording) -> None:
    """After a write through the cache, the written key is a miss again."""
    cache.lookup_many(["bob@example.com"])
    cache.remove("bob@example.com")
    assert cache.peek(["bob@example.com"]) == ({}, ["bob@example.com"])


def test_peek_refuses_invalid_addresses(cache: CachedBlacklist, inner: Recording) -> None:
    """A bad address raises InvalidAddress, as lookup_many does."""
    with pytest.raises(InvalidAddress):
        cache.peek(["not an address"])


def test_record_occurrence_passes_through_and_invalidates(
    cache: CachedBlacklist, inner: Recording
) -> None:
    """A soft event goes to the store; once it blacklists, the cached "no" is dropped."""
    assert cache.get("ann@example.com") is None
    below = cache.record_occurrence(event("ann@example.com", "soft-1"), threshold=2)
    assert (below.count, below.entry) == (1, None)
    assert cache.get("ann@example.com") is None
    crossed = cache.record_occurrence(event("Ann@example.com", "soft-2"), threshold=2)
    assert crossed.entry is not None
    assert cache.get("ann@example.com") == crossed.entry
    assert inner.get("ann@example.com") == crossed.entry


def test_failed_record_occurrence_still_invalidates(
    cache: CachedBlacklist, inner: Recording
) -> None:
    """A count that raised may have blacklisted, so the cached answer is dropped anyway."""
    cache.get("bob@example.com")

    def broken(event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        raise BlacklistUnavailable("store down")

    inner.record_occurrence = broken  # type: ignore[method-assign]
    with pytest.raises(BlacklistUnavailable):
        cache.record_occurrence(event(), threshold=2)
    assert cache.stats.size == 0


class InstantRecording(Recording):
    """A store that can answer at once (`InstantLookup`), recording those calls apart."""

    def __init__(self) -> None:
        super().__init__()
        self.asked_now: list[list[str]] = []

    def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        texts = list(addresses)
        self.asked_now.append(texts)
        return InMemoryBlacklist.lookup_many(self, texts)


def test_lookup_now_over_a_blocking_store_answers_hits_and_refuses_misses(
    cache: CachedBlacklist, inner: Recording
) -> None:
    """Over a store with no instant path, hits are answered and a miss raises LookupWouldBlock
    without asking the store or counting a miss (the blocking retry counts it once)."""
    cache.lookup_many(["bob@example.com"])
    assert list(cache.lookup_now(["Bob@Example.com"])) == ["bob@example.com"]
    with pytest.raises(LookupWouldBlock):
        cache.lookup_now(["carl@example.com"])
    assert len(inner.asked) == 1
    assert cache.stats == CacheStats(hits=1, misses=1, evictions=0, size=1)


def test_lookup_now_over_an_instant_store_reads_through(clock: VirtualClock) -> None:
    """Over an `InstantLookup` store the misses are fetched at once and cached like lookup_many."""
    inner = InstantRecording()
    inner.record(event())
    cache = CachedBlacklist(inner, negative_ttl=10, clock=clock)
    assert isinstance(cache, InstantLookup)
    assert list(cache.lookup_now(["bob@example.com", "ann@example.com"])) == ["bob@example.com"]
    assert cache.lookup_now(["ann@example.com"]) == {}
    assert inner.asked_now == [["bob@example.com", "ann@example.com"]]
    assert inner.asked == []
    assert cache.stats == CacheStats(hits=1, misses=2, evictions=0, size=2)


async def test_lookup_async_sends_misses_through_the_batcher(
    inner: Recording, clock: VirtualClock
) -> None:
    """With a batcher, concurrent misses share one store call and are cached; hits never reach
    the batcher."""
    batcher = BatchingLookup(inner.lookup_many)
    cache = CachedBlacklist(inner, negative_ttl=10, clock=clock, batcher=batcher)
    try:
        assert isinstance(cache, AsyncLookup)
        first = await asyncio.gather(
            cache.lookup_async(["Bob@Example.com"]), cache.lookup_async(["ann@example.com"])
        )
        again = await cache.lookup_async(["bob@example.com", "ann@example.com"])
    finally:
        await batcher.aclose()
    assert [list(found) for found in first] == [["bob@example.com"], []]
    assert list(again) == ["bob@example.com"]
    assert inner.asked == [["Bob@Example.com", "ann@example.com"]]
    assert cache.stats == CacheStats(hits=2, misses=2, evictions=0, size=2)


async def test_lookup_async_without_a_batcher_refuses_misses(
    cache: CachedBlacklist, inner: Recording
) -> None:
    """Without a batcher a miss raises LookupWouldBlock (the caller uses a thread)."""
    cache.lookup_many(["bob@example.com"])
    assert list(await cache.lookup_async(["bob@example.com"])) == ["bob@example.com"]
    with pytest.raises(LookupWouldBlock):
        await cache.lookup_async(["carl@example.com"])
    assert len(inner.asked) == 1


async def test_lookup_async_failure_propagates_and_caches_nothing(
    inner: Recording, clock: VirtualClock
) -> None:
    """A failed batch reaches the caller as BlacklistUnavailable and leaves the cache empty."""
    batcher = BatchingLookup(inner.lookup_many)
    cache = CachedBlacklist(inner, clock=clock, batcher=batcher)
    inner.failing = True
    try:
        with pytest.raises(BlacklistUnavailable):
            await cache.lookup_async(["bob@example.com"])
    finally:
        await batcher.aclose()
    assert cache.stats.size == 0


async def test_lookup_async_does_not_cache_what_a_concurrent_write_changed(
    inner: Recording, clock: VirtualClock
) -> None:
    """An answer read while a write invalidated the address is returned but not cached."""

    class Writing(Recording):
        def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
            found = super().lookup_many(addresses)
            reader.invalidate("ann@example.com")  # a write lands while the call is in flight
            return found

    store = Writing()
    batcher = BatchingLookup(store.lookup_many)
    reader = CachedBlacklist(store, clock=clock, batcher=batcher)
    try:
        assert await reader.lookup_async(["ann@example.com"]) == {}
    finally:
        await batcher.aclose()
    assert reader.stats.size == 0
