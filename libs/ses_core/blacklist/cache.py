"""A read-through cache in front of any `Blacklist`, so a hot recipient costs no store call.

Relays look up every recipient of every message; most recipients repeat. The cache keeps both
answers:
- positive ("blacklisted", with the entry) for `positive_ttl` seconds;
- negative ("not blacklisted") for `negative_ttl` seconds, which bounds how long a replica keeps
  mailing an address after the Lambda blacklisted it. Keep it short.
Size is bounded by `max_entries` with least-recently-used eviction. `lookup_many` asks the inner
store only for the misses, in one call. Errors of the inner store propagate and cache nothing.

`peek` answers from the cache alone, never calling the store, so an asyncio caller can use it on
the event loop and send only the misses to a thread (`lookup_many` may block on the store).
`lookup_now` (`InstantLookup`) does the same and also asks a store that can answer at once
(SQLite) for the misses, raising `LookupWouldBlock` when the store would have to wait.
`lookup_async` (`AsyncLookup`) sends the misses to a `batcher` (a `BatchingLookup` over the
inner store), so that the misses of concurrent sessions share one store call.

Writes through this object (`record`, `record_occurrence`, `put`, `remove`) go to the inner
store and invalidate the key, and a lookup that raced with such a write does not store its
(possibly stale) answer.
Writes by *other* processes are only seen when the cached answer expires.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs

from ses_core.addresses import normalize_address
from ses_core.blacklist._model import (
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    OccurrenceResult,
)
from ses_core.blacklist._ports import AsyncLookup, Blacklist, InstantLookup
from ses_core.blacklist._private import normalize_all
from ses_core.errors import LookupWouldBlock


@attrs.frozen
class CacheStats:
    """Counters of a `CachedBlacklist` since it was created.

    Attributes:
        hits: addresses answered from the cache.
        misses: addresses that had to be asked from the inner store.
        evictions: answers dropped to respect `max_entries`.
        size: answers currently cached.
    """

    hits: int
    misses: int
    evictions: int
    size: int

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses); 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@attrs.frozen
class _Cached:
    entry: BlacklistEntry | None
    expires: float


class CachedBlacklist:
    """A `Blacklist` that caches the answers of `inner` (see the module docstring)."""

    def __init__(
        self,
        inner: Blacklist,
        *,
        positive_ttl: float = 300.0,
        negative_ttl: float = 30.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        batcher: AsyncLookup | None = None,
    ) -> None:
        if positive_ttl < 0 or negative_ttl < 0:
            raise ValueError("TTLs must not be negative")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.inner = inner
        self.batcher = batcher
        # Resolved once, not per lookup (a Protocol isinstance check is slow): the inner
        # store's instant lookup, if it has one.
        self._inner_now = inner.lookup_now if isinstance(inner, InstantLookup) else None
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        # Bumped by every invalidation: a lookup that started before it must not fill the
        # cache with what it read, since the write may have changed it.
        self._generation = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                size=len(self._cache),
            )

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        return self._read_through(addresses, self.inner.lookup_many)

    def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """Answer from the cache, and the misses from the store when it can answer at once
        (`InstantLookup`); otherwise raise `LookupWouldBlock` after counting nothing, so the
        caller's blocking `lookup_many` from a thread counts the lookup once."""
        if self._inner_now is not None:
            return self._read_through(addresses, self._inner_now)
        found, misses = self.peek(addresses)
        if misses:
            raise LookupWouldBlock("cache miss; the store needs a blocking call")
        return found

    async def lookup_async(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """As `lookup_many`, for an asyncio caller: hits (and a store that can answer at once)
        on the loop, misses through `batcher`, which shares its store calls with other callers'
        misses. Without a batcher it raises `LookupWouldBlock` as `lookup_now` does."""
        if self._inner_now is not None or self.batcher is None:
            return self.lookup_now(addresses)
        found, missing, texts, generation = self._begin(addresses)
        if not missing:
            return found
        answers = await self.batcher.lookup_async(texts)
        return self._finish(found, missing, answers, generation)

    def _read_through(
        self,
        addresses: Iterable[str],
        fetch: Callable[[Iterable[str]], dict[str, BlacklistEntry]],
    ) -> dict[str, BlacklistEntry]:
        found, missing, texts, generation = self._begin(addresses)
        if not missing:
            return found
        return self._finish(found, missing, fetch(texts), generation)

    def _begin(
        self, addresses: Iterable[str]
    ) -> tuple[dict[str, BlacklistEntry], list[str], list[str], int]:
        """(cached entries, missing keys, texts to ask the store, generation) for a lookup."""
        keys = normalize_all(addresses)
        found: dict[str, BlacklistEntry] = {}
        missing: list[str] = []
        with self._lock:
            now = self._clock()
            for key in keys:
                cached = self._cache.get(key)
                if cached is not None and cached.expires > now:
                    self._cache.move_to_end(key)
                    self._hits += 1
                    if cached.entry is not None:
                        found[key] = cached.entry
                    continue
                if cached is not None:
                    del self._cache[key]
                self._misses += 1
                missing.append(key)
            generation = self._generation
        # Every text given (not only the key): an adapter may also look up legacy forms.
        return found, missing, [text for key in missing for text in keys[key]], generation

    def _finish(
        self,
        found: dict[str, BlacklistEntry],
        missing: list[str],
        answers: dict[str, BlacklistEntry],
        generation: int,
    ) -> dict[str, BlacklistEntry]:
        """Add the store's `answers` for `missing` to `found`, and cache them unless a write
        invalidated anything since `generation`."""
        with self._lock:
            store = generation == self._generation
            now = self._clock()
            for key in missing:
                entry = answers.get(key)
                if entry is not None:
                    found[key] = entry
                if store:
                    ttl = self.positive_ttl if entry is not None else self.negative_ttl
                    self._store(key, _Cached(entry=entry, expires=now + ttl))
        return found

    def peek(self, addresses: Iterable[str]) -> tuple[dict[str, BlacklistEntry], list[str]]:
        """What the cache already knows, without asking the store (never blocks on I/O).

        Returns `(found, misses)`: the blacklisted entries among the fresh cached answers, keyed
        by normalised key, and the addresses (as given) that have no fresh answer; pass those
        to `lookup_many`, which counts them as misses. Raises `InvalidAddress` like `lookup_many`.
        """
        keys = normalize_all(addresses)
        found: dict[str, BlacklistEntry] = {}
        misses: list[str] = []
        with self._lock:
            now = self._clock()
            for key, texts in keys.items():
                cached = self._cache.get(key)
                if cached is None or cached.expires <= now:
                    misses.extend(texts)
                    continue
                self._cache.move_to_end(key)
                self._hits += 1
                if cached.entry is not None:
                    found[key] = cached.entry
        return found, misses

    def get(self, address: str) -> BlacklistEntry | None:
        key = normalize_address(address)
        return self.lookup_many([address]).get(key)

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        try:
            return self.inner.record(event)
        finally:
            self.invalidate(event.address)

    def put(self, entry: BlacklistEntry) -> None:
        try:
            self.inner.put(entry)
        finally:
            self.invalidate(entry.address)

    def remove(self, address: str) -> bool:
        key = normalize_address(address)
        try:
            return self.inner.remove(address)
        finally:
            self.invalidate(key)

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        """Not cached: listings are for operators and must show the store as it is."""
        return self.inner.list_page(limit=limit, cursor=cursor)

    def invalidate(self, address: str | None = None) -> None:
        """Forget the answer for `address` (any form), or every answer when `None`."""
        key = None if address is None else normalize_address(address)
        with self._lock:
            self._generation += 1
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(key, None)

    def _store(self, key: str, value: _Cached) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
            self._evictions += 1

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        """Count a soft event in the inner store and invalidate the address, like `record`."""
        try:
            return self.inner.record_occurrence(event, threshold=threshold)
        finally:
            self.invalidate(event.address)
