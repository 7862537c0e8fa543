"""BatchingLookup: concurrent lookups share store calls of at most 100 keys; a failure reaches
exactly the waiters of its batch; a cancelled waiter leaves the call to the others; closing is
clean. The store is a fake `lookup_many` on the batcher's threads; a gate holds a call "in
flight" so that what happens meanwhile is decided by the test, not by timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from ses_core.blacklist import AsyncLookup, BatchingLookup, BlacklistEntry, InMemoryBlacklist
from ses_core.errors import BlacklistUnavailable, InvalidAddress

WAIT = 10.0  # bound on every wait below; never reached when the code is right


class FakeStore:
    """An in-memory blacklist's `lookup_many` that records each call, can be held in flight by a
    gate, and can be told to fail."""

    def __init__(self, *blacklisted: str) -> None:
        self.memory = InMemoryBlacklist([BlacklistEntry.manual(a) for a in blacklisted])
        self.calls: list[list[str]] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()
        self.gate.set()
        self.failure: Exception | None = None
        self._lock = threading.Lock()

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        texts = list(addresses)
        with self._lock:
            self.calls.append(texts)
            failure = self.failure
        self.entered.release()
        if not self.gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")
        if failure is not None:
            raise failure
        return self.memory.lookup_many(texts)

    async def wait_entered(self, calls: int = 1) -> None:
        """Wait until `calls` more calls have reached the store."""
        for _ in range(calls):
            assert await asyncio.to_thread(self.entered.acquire, True, WAIT)


@pytest.fixture
def store() -> FakeStore:
    """A store with two blacklisted addresses."""
    return FakeStore("gone@example.org", "left@example.org")


@pytest.fixture
async def batcher(store: FakeStore) -> AsyncIterator[BatchingLookup]:
    """A batcher over `store` whose in-flight batches go out only when a call completes."""
    lookups = BatchingLookup(store.lookup_many, gather_delay=WAIT * 10)
    yield lookups
    store.gate.set()
    await lookups.aclose()


def addresses(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{n}@example.org" for n in range(count)]


async def until_waiting(batcher: BatchingLookup, count: int) -> None:
    """Let the loop run until `count` addresses wait for a call (bounded in turns)."""
    for _ in range(1000):
        if batcher.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{batcher.waiting} addresses waiting, expected {count}")


async def lookup_each(batcher: BatchingLookup, texts: list[str]) -> list[Any]:
    """One concurrent lookup per address (as sessions do), results or exceptions in order."""
    tasks = [batcher.lookup_async([text]) for text in texts]
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)


async def test_it_is_an_async_lookup(batcher: BatchingLookup) -> None:
    """The batcher provides the asyncio lookup port the cache and the relay use."""
    assert isinstance(batcher, AsyncLookup)


async def test_concurrent_lookups_go_out_as_one_call(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """20 lookups made together while idle are one store call with all 20 addresses."""
    texts = addresses(19) + ["Gone@Example.org"]
    results = await lookup_each(batcher, texts)
    assert len(store.calls) == 1 and sorted(store.calls[0]) == sorted(texts)
    assert results[:19] == [{}] * 19
    [found] = results[19:]
    assert isinstance(found, dict) and list(found) == ["gone@example.org"]


async def test_lookups_during_a_call_go_out_together_next(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """Lookups arriving while a call is in flight share the next call, not one call each."""
    store.gate.clear()
    first = asyncio.ensure_future(batcher.lookup_async(["first@example.org"]))
    await store.wait_entered()
    later = asyncio.ensure_future(lookup_each(batcher, addresses(30) + ["left@example.org"]))
    await until_waiting(batcher, 31)  # queued behind the call in flight
    assert len(store.calls) == 1
    store.gate.set()
    assert await asyncio.wait_for(first, WAIT) == {}
    results = await asyncio.wait_for(later, WAIT)
    assert [len(call) for call in store.calls] == [1, 31]
    assert results[-1] == {"left@example.org": store.memory.get("left@example.org")}


async def test_after_a_shared_call_idle_lookups_wait_for_as_much_company(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """After a call shared by 3 lookups, the next lookups (nothing in flight) wait until 3 have
    come and go out together, rather than the first going alone."""
    await lookup_each(batcher, addresses(3, prefix="a"))
    first_two = asyncio.ensure_future(lookup_each(batcher, addresses(2, prefix="b")))
    await until_waiting(batcher, 2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert batcher.waiting == 2  # still gathering: the delay of this batcher is long
    third = await asyncio.wait_for(batcher.lookup_async(["c@example.org"]), WAIT)
    assert third == {} and await asyncio.wait_for(first_two, WAIT) == [{}, {}]
    assert [len(call) for call in store.calls] == [3, 3]


async def test_after_a_lone_call_an_idle_lookup_goes_at_once(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """At 1 connection every lookup goes out at the next turn, never waiting for company (the
    batcher's gather delay here is far longer than the test's bound)."""
    for text in addresses(3):
        assert await asyncio.wait_for(batcher.lookup_async([text]), WAIT) == {}
    assert [len(call) for call in store.calls] == [1, 1, 1]


async def test_a_slow_call_holds_others_back_only_for_the_gather_delay(store: FakeStore) -> None:
    """With a call stuck in flight, the next lookups go out after the gather delay in a call of
    their own rather than waiting for the stuck one."""
    batcher = BatchingLookup(store.lookup_many, gather_delay=0.001, max_in_flight=2)
    store.gate.clear()
    try:
        stuck = asyncio.ensure_future(batcher.lookup_async(["stuck@example.org"]))
        await store.wait_entered()
        later = asyncio.ensure_future(lookup_each(batcher, addresses(3)))
        await store.wait_entered()  # the second call starts although the first is stuck
        assert [len(call) for call in store.calls] == [1, 3]
        store.gate.set()
        assert await asyncio.wait_for(later, WAIT) == [{}, {}, {}]
        assert await asyncio.wait_for(stuck, WAIT) == {}
    finally:
        store.gate.set()
        await batcher.aclose()


async def test_more_than_100_keys_are_split_into_calls_of_at_most_100(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """250 concurrent lookups are three calls of at most 100 addresses, each asked once."""
    texts = addresses(249) + ["gone@example.org"]
    results = await lookup_each(batcher, texts)
    assert sorted(len(call) for call in store.calls) == [50, 100, 100]
    assert sorted(text for call in store.calls for text in call) == sorted(texts)
    assert results[-1] == {"gone@example.org": store.memory.get("gone@example.org")}


async def test_one_lookup_of_many_addresses_is_split_and_merged(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """A single lookup of 150 addresses spans two calls and gets one merged answer."""
    found = await asyncio.wait_for(
        batcher.lookup_async(addresses(148) + ["gone@example.org", "left@example.org"]), WAIT
    )
    assert sorted(len(call) for call in store.calls) == [50, 100]
    assert set(found) == {"gone@example.org", "left@example.org"}


async def test_the_limit_counts_store_keys(store: FakeStore) -> None:
    """With `store_keys` saying a mixed-case address costs two keys (a legacy form), a batch
    holds at most 50 of them."""

    def store_keys(text: str) -> tuple[str, ...]:
        return (text.lower(), text) if text != text.lower() else (text,)

    batcher = BatchingLookup(store.lookup_many, store_keys=store_keys)
    try:
        await lookup_each(batcher, addresses(120, prefix="User"))
    finally:
        await batcher.aclose()
    assert sorted(len(call) for call in store.calls) == [20, 50, 50]


async def test_the_same_address_from_many_sessions_is_asked_once(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """Duplicates in a batch are asked once; every waiter gets the answer."""
    results = await lookup_each(batcher, ["gone@example.org"] * 5 + ["other@example.org"])
    assert sorted(store.calls[0]) == ["gone@example.org", "other@example.org"]
    assert all(set(r) == {"gone@example.org"} for r in results[:5])
    assert results[5] == {}


@pytest.mark.parametrize(
    "failure", [BlacklistUnavailable("table down"), RuntimeError("bug in the store")]
)
async def test_a_failed_call_fails_every_waiter_of_its_batch(
    store: FakeStore, failure: Exception
) -> None:
    """Every lookup of a failed batch gets `BlacklistUnavailable` (whatever the store raised);
    the next lookup is asked afresh and answered."""
    batcher = BatchingLookup(store.lookup_many, gather_delay=0.001)
    store.failure = failure
    try:
        results = await lookup_each(batcher, addresses(20))
        assert all(isinstance(r, BlacklistUnavailable) for r in results)
        store.failure = None
        assert await asyncio.wait_for(batcher.lookup_async(["gone@example.org"]), WAIT) != {}
    finally:
        await batcher.aclose()
    assert len(store.calls) == 2


async def test_a_failure_stays_in_its_batch(batcher: BatchingLookup, store: FakeStore) -> None:
    """The waiters of a failed call get the error; those of the next batch get their answers."""
    store.gate.clear()
    store.failure = BlacklistUnavailable("throttled")
    failing = asyncio.ensure_future(lookup_each(batcher, addresses(3, prefix="a")))
    await store.wait_entered()
    store.failure = None  # the next call succeeds
    fine = asyncio.ensure_future(lookup_each(batcher, ["gone@example.org", "b@example.org"]))
    await until_waiting(batcher, 2)
    store.gate.set()
    assert all(isinstance(r, BlacklistUnavailable) for r in await failing)
    assert [set(r) for r in await fine] == [{"gone@example.org"}, set()]


async def test_a_cancelled_waiter_leaves_the_call_to_the_others(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """Cancelling one waiter (its client left) cancels neither the call nor the other waiters."""
    store.gate.clear()
    waiters = [
        asyncio.ensure_future(batcher.lookup_async([text]))
        for text in ["a@example.org", "gone@example.org", "c@example.org"]
    ]
    await store.wait_entered()
    waiters[0].cancel()
    await asyncio.sleep(0)
    store.gate.set()
    results: list[Any] = await asyncio.wait_for(
        asyncio.gather(*waiters, return_exceptions=True), WAIT
    )
    assert isinstance(results[0], asyncio.CancelledError)
    assert set(results[1]) == {"gone@example.org"}
    assert results[2] == {}
    assert len(store.calls) == 1


async def test_cancelling_every_waiter_before_the_call_still_leaves_a_working_batcher(
    store: FakeStore,
) -> None:
    """Waiters cancelled before their batch is sent do not break later lookups."""
    batcher = BatchingLookup(store.lookup_many, gather_delay=0.001)
    try:
        waiters = [asyncio.ensure_future(batcher.lookup_async([t])) for t in addresses(3)]
        await until_waiting(batcher, 3)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        found = await asyncio.wait_for(batcher.lookup_async(["left@example.org"]), WAIT)
    finally:
        await batcher.aclose()
    assert set(found) == {"left@example.org"}


async def test_invalid_address_is_refused_before_anything_is_queued(
    batcher: BatchingLookup, store: FakeStore
) -> None:
    """An invalid address raises `InvalidAddress` and costs no store call."""
    with pytest.raises(InvalidAddress):
        await batcher.lookup_async(["ok@example.org", "not an address"])
    assert await batcher.lookup_async([]) == {}
    await asyncio.sleep(0)
    assert store.calls == []


async def test_close_fails_unsent_lookups_and_lets_the_call_in_flight_finish(
    store: FakeStore,
) -> None:
    """`aclose()`: lookups not yet sent fail with `BlacklistUnavailable`, the call in flight
    answers its waiters, and later lookups are refused."""
    batcher = BatchingLookup(store.lookup_many, max_in_flight=1, gather_delay=WAIT * 10)
    store.gate.clear()
    in_flight = asyncio.ensure_future(batcher.lookup_async(["gone@example.org"]))
    await store.wait_entered()
    queued = asyncio.ensure_future(batcher.lookup_async(["queued@example.org"]))
    await until_waiting(batcher, 1)
    closing = asyncio.ensure_future(batcher.aclose())
    with pytest.raises(BlacklistUnavailable):
        await asyncio.wait_for(queued, WAIT)
    store.gate.set()
    assert set(await asyncio.wait_for(in_flight, WAIT)) == {"gone@example.org"}
    await asyncio.wait_for(closing, WAIT)
    with pytest.raises(BlacklistUnavailable):
        await batcher.lookup_async(["late@example.org"])
    assert len(store.calls) == 1
    await batcher.aclose()  # closing twice is harmless


async def test_close_does_not_wait_forever_for_a_stuck_call(store: FakeStore) -> None:
    """A call still stuck after `close_timeout` is abandoned: its waiters get
    `BlacklistUnavailable` and `aclose()` returns."""
    batcher = BatchingLookup(store.lookup_many, close_timeout=0.0)
    store.gate.clear()
    try:
        stuck = asyncio.ensure_future(batcher.lookup_async(["stuck@example.org"]))
        await store.wait_entered()
        await asyncio.wait_for(batcher.aclose(), WAIT)
        with pytest.raises(BlacklistUnavailable):
            await asyncio.wait_for(stuck, WAIT)
    finally:
        store.gate.set()


def test_bad_settings_are_refused() -> None:
    """A batch needs room for a key, a call slot, and a delay that is not negative."""
    for bad in ({"max_keys": 0}, {"max_in_flight": 0}, {"gather_delay": -1.0}):
        with pytest.raises(ValueError):
            BatchingLookup(FakeStore().lookup_many, **bad)
