"""A `Blacklist` in a dict: for tests and embedding, shipped with the library.

It implements the whole contract (idempotency, occurrence counts, paging), so a test can use it
wherever a real store would go, and subclass it to record calls or inject faults.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import attrs

from ses_core.addresses import normalize_address
from ses_core.blacklist._model import (
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    OccurrenceResult,
    OccurrenceTally,
)
from ses_core.blacklist._private import normalize_all, require_page_args, require_threshold


class InMemoryBlacklist:
    """A `Blacklist` in a dict. Thread-safe; listing is in address order."""

    def __init__(self, entries: Iterable[BlacklistEntry] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, BlacklistEntry] = {}
        # Feedback ids already recorded per address: duplicates of *any* earlier event are
        # recognised, not only of the latest one.
        self._seen: dict[str, set[str]] = {}
        # Soft events counted by `record_occurrence`, and their feedback ids.
        self._tallies: dict[str, OccurrenceTally] = {}
        self._tallied: dict[str, set[str]] = {}
        for entry in entries:
            self.put(entry)

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        keys = normalize_all(addresses)
        with self._lock:
            return {key: self._entries[key] for key in keys if key in self._entries}

    def get(self, address: str) -> BlacklistEntry | None:
        key = normalize_address(address)
        with self._lock:
            return self._entries.get(key)

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        with self._lock:
            return self._record_locked(event)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        require_threshold(threshold)
        key = event.address
        with self._lock:
            tallied = self._tallied.setdefault(key, set())
            tally = self._tallies.get(key)
            fid = event.feedback_id
            duplicate = tally is not None and fid is not None and fid in tallied
            if tally is None or not duplicate:
                tally = OccurrenceTally.first(event) if tally is None else tally.counted(event)
                self._tallies[key] = tally
                if fid is not None:
                    tallied.add(fid)
            result = OccurrenceResult(key, tally.count, threshold, duplicate, entry=None)
            if tally.count < threshold:
                return result
            current = self._entries.get(key)
            if current is None:
                entry = tally.entry_for(event)
                self._entries[key] = entry
                self._seen[key] = {fid} if fid is not None else set()
            elif duplicate:
                entry = current
            else:
                entry = self._record_locked(event)
            return attrs.evolve(result, entry=entry)

    def put(self, entry: BlacklistEntry) -> None:
        with self._lock:
            self._entries[entry.address] = entry
            self._seen[entry.address] = {entry.feedback_id} if entry.feedback_id else set()

    def remove(self, address: str) -> bool:
        key = normalize_address(address)
        with self._lock:
            self._tallies.pop(key, None)
            self._tallied.pop(key, None)
            self._seen.pop(key, None)
            return self._entries.pop(key, None) is not None

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        require_page_args(limit, cursor)
        with self._lock:
            keys = sorted(key for key in self._entries if cursor is None or key > cursor)
            page = [self._entries[key] for key in keys[:limit]]
        next_cursor = page[-1].address if len(keys) > limit else None
        return BlacklistPage(entries=tuple(page), next_cursor=next_cursor)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _record_locked(self, event: BlacklistEvent) -> BlacklistEntry:
        current = self._entries.get(event.address)
        seen = self._seen.setdefault(event.address, set())
        if event.feedback_id is not None:
            if current is not None and event.feedback_id in seen:
                return current
            seen.add(event.feedback_id)
        entry = BlacklistEntry.from_event(event) if current is None else current.merged_with(event)
        self._entries[event.address] = entry
        return entry
