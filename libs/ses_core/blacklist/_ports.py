"""The blacklist port, split by role: relays read, the Lambda writes, operators administer.

Each caller depends on the narrowest role it needs, so a test double or a new store implements
only that; `Blacklist` is all three roles, what every adapter provides. The port is synchronous
(boto3 and sqlite3 are); asyncio callers use a thread, `InstantLookup` when a store can answer
without waiting, or `AsyncLookup` when lookups are batched across callers.

Semantics shared by every adapter (pinned by `ports_test.py`):
- Every address given (raw text such as `"Bob" <Bob@Example.com>` or a normalised key) is
  normalised with `ses_core.addresses`; an invalid one raises `InvalidAddress` before the store
  is touched. Results are keyed by the normalised key.
- `record` is idempotent per feedback id: the same notification delivered twice leaves the entry
  as after one delivery. Events without a feedback id (hand-made events) always count.
- An entry describes its *latest* event (see `BlacklistEntry.merged_with`): an older event that
  arrives late still raises `count` and may move `first_seen` back, nothing else.
- `record_occurrence` counts *soft* events per address, idempotently per feedback id, without
  blacklisting until `threshold` of them are counted. Counts below the threshold are invisible
  to lookups and listings; `remove` forgets the count with the entry.
- Infrastructure failures raise `BlacklistUnavailable`: no adapter ever answers "not
  blacklisted" because the store failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ses_core.blacklist._model import (
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    OccurrenceResult,
)


class BlacklistReader(Protocol):
    """What a relay needs: is this recipient blacklisted?"""

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """Entries of the blacklisted addresses among `addresses`, keyed by normalised key.

        Addresses not in the result are not blacklisted. Raises `InvalidAddress` (before any
        store access) and `BlacklistUnavailable`.
        """
        ...

    def get(self, address: str) -> BlacklistEntry | None:
        """The entry for one address, or `None` when it is not blacklisted."""
        ...


@runtime_checkable
class InstantLookup(Protocol):
    """A store that can answer a lookup at once, on an event loop, when that costs no waiting.

    An asyncio caller tries `lookup_now` first and, on `LookupWouldBlock`, sends the lookup to a
    thread: for a local SQLite file that saves a thread hop per recipient, a large share of one
    RCPT, while a store behind a network never claims this.
    """

    def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """As `BlacklistReader.lookup_many`, or raise `LookupWouldBlock` when it would wait."""
        ...


@runtime_checkable
class AsyncLookup(Protocol):
    """A reader with an asyncio lookup of its own, which waits without holding a thread.

    `BatchingLookup` shares one store call among the lookups of concurrent sessions, and a
    `CachedBlacklist` given one answers its misses through it; the relay prefers this port to a
    thread per RCPT.
    """

    async def lookup_async(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """As `BlacklistReader.lookup_many`, awaited on the event loop."""
        ...


class BlacklistWriter(Protocol):
    """What the feedback Lambda needs: record bounces and complaints."""

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        """Add or update the entry for the event's address; idempotent per feedback id.

        Returns the entry as stored after the call (for a duplicate: the current entry).
        """
        ...

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        """Count a soft event (e.g. Transient/General); blacklist once `threshold` are counted.

        Counting is per normalised address and idempotent per feedback id (events without one
        always count). Below `threshold` the result's `entry` is `None` and the blacklist is
        untouched (an entry the address already has for other reasons stays as it was). When the
        count reaches `threshold` the address is blacklisted with the event's reason, detail and
        ids, `first_seen`/`last_seen` spanning the counted events and `count` = occurrences; the
        result carries that entry. Later distinct events are merged into the entry as by
        `record`; a duplicate returns the current entry unchanged (and writes it if an earlier
        attempt counted the event but failed before blacklisting). `threshold` must be >= 1
        (`ValueError`).
        """
        ...


class BlacklistAdmin(BlacklistReader, Protocol):
    """What an operator needs: look entries up, list them, add and remove them by hand."""

    def put(self, entry: BlacklistEntry) -> None:
        """Store `entry` as given, replacing any entry for its address (manual edit, import)."""
        ...

    def remove(self, address: str) -> bool:
        """Delete the entry for `address`, and its occurrence count; `True` when there was an
        entry."""
        ...

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        """Up to `limit` (1 to 1000) entries after `cursor` (`None` = from the start)."""
        ...


class Blacklist(BlacklistAdmin, BlacklistWriter, Protocol):
    """Every role at once: what each adapter (memory, SQLite, DynamoDB, cache) implements."""
