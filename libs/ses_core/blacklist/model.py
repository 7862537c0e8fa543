"""The blacklist port: who must never be mailed again, and why.

The Lambda writes entries from SES bounce and complaint notifications; every relay replica reads
them before accepting a recipient; the operator lists and fixes them. `Blacklist` is the port all
of them depend on. Adapters:

- `InMemoryBlacklist` (here): tests and embedding; thread-safe.
- `ses_core.blacklist.sqlite.SqliteBlacklist`: one local file, the relay's default without AWS.
- `ses_core.blacklist.dynamodb.DynamoDBBlacklist`: the shared table, compatible with the
  original service's tables.
- `ses_core.blacklist.cache.CachedBlacklist`: a read-through cache in front of any of them.

Every address given to a blacklist (raw text such as `"Bob" <Bob@Example.com>` or an already
normalised key) is normalised with `ses_core.addresses`; an invalid address raises
`InvalidAddress` before the store is touched. Results are keyed by the normalised key.

Semantics shared by every adapter (and pinned by `blacklist_test.py`):
- `record` is idempotent per feedback id: the same notification delivered twice leaves the entry
  as after one delivery. Events without a feedback id (rare: hand-made events) always count.
- An entry describes its *latest* event: reason, detail, feedback id and message id follow the
  event with the newest timestamp. An older event that arrives late (out of order) still raises
  `count` and may move `first_seen` back, but does not overwrite the latest event's fields.
- `record_occurrence` counts *soft* events (a Transient bounce, say) per address, idempotently
  per feedback id, without blacklisting, until `threshold` of them have been counted; then the
  address is blacklisted. Counts below the threshold are invisible to `lookup_many`, `get` and
  `list_page`. `remove` forgets the count with the entry, so an address an operator removed
  starts counting from zero.
- Infrastructure failures raise `BlacklistUnavailable`; no adapter ever answers "not
  blacklisted" because the store failed.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from ses_core.addresses import normalize_address

log = logging.getLogger(__name__)

#: Stand-in for a time nobody recorded: items written by the original service hold only the
#: address, so their first/last sighting is unknown. The epoch sorts before every real event.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)

#: Largest page `list_page` accepts.
MAX_PAGE_SIZE = 1000


class BlacklistReason(enum.StrEnum):
    """Why an address is blacklisted."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    IMPORTED = "imported"


def _utc(value: datetime) -> datetime:
    """Accept only aware datetimes and store them in UTC, so comparisons and text forms agree."""
    if not isinstance(value, datetime):
        message = f"expected a datetime, got {type(value).__name__}"
        raise TypeError(message)
    if value.tzinfo is None or value.utcoffset() is None:
        message = f"naive datetime {value.isoformat()} has no time zone; pass an aware datetime"
        raise ValueError(message)
    return value.astimezone(UTC)


def _reason(value: BlacklistReason | str) -> BlacklistReason:
    return BlacklistReason(value)


def format_time(value: datetime) -> str:
    """The fixed-width text form stored by SQLite and DynamoDB; sorts in time order."""
    return _utc(value).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """Inverse of `format_time`; also accepts other ISO-8601 forms (`Z`, no fraction)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@attrs.frozen
class BlacklistEvent:
    """One bounce or complaint (or an operator action) about one recipient.

    Attributes:
        address: the recipient; normalised on construction (raises `InvalidAddress`).
        reason: what happened.
        detail: bounce type/subtype (`"Permanent/General"`) or complaint feedback type
            (`"complaint:abuse"`), if known.
        feedback_id: SES's id of the bounce/complaint; the idempotency key of `record`.
        message_id: SES message id of the mail that caused the event.
        timestamp: when the event happened (aware datetime; stored in UTC).
    """

    address: str = attrs.field(converter=normalize_address)
    reason: BlacklistReason = attrs.field(converter=_reason)
    detail: str | None
    feedback_id: str | None
    message_id: str | None
    timestamp: datetime = attrs.field(converter=_utc)


@attrs.frozen
class BlacklistEntry:
    """What the blacklist knows about one address.

    Attributes:
        address: the normalised key (see `ses_core.addresses`); normalised on construction.
        reason: reason of the latest event.
        detail: detail of the latest event (bounce type/subtype, complaint feedback type).
        feedback_id: feedback id of the latest event.
        message_id: SES message id of the latest event.
        first_seen: time of the earliest recorded event.
        last_seen: time of the latest recorded event.
        count: number of distinct events recorded.
    """

    address: str = attrs.field(converter=normalize_address)
    reason: BlacklistReason = attrs.field(converter=_reason)
    detail: str | None
    feedback_id: str | None
    message_id: str | None
    first_seen: datetime = attrs.field(converter=_utc)
    last_seen: datetime = attrs.field(converter=_utc)
    count: int = 1

    @classmethod
    def from_event(cls, event: BlacklistEvent) -> BlacklistEntry:
        """The entry a first event creates."""
        return cls(
            address=event.address,
            reason=event.reason,
            detail=event.detail,
            feedback_id=event.feedback_id,
            message_id=event.message_id,
            first_seen=event.timestamp,
            last_seen=event.timestamp,
            count=1,
        )

    @classmethod
    def manual(
        cls,
        address: str,
        *,
        detail: str | None = None,
        reason: BlacklistReason = BlacklistReason.MANUAL,
        now: datetime | None = None,
    ) -> BlacklistEntry:
        """An operator's entry (`MANUAL`, or `IMPORTED` for imports), seen once at `now`."""
        when = now if now is not None else datetime.now(UTC)
        return cls(
            address=address,
            reason=reason,
            detail=detail,
            feedback_id=None,
            message_id=None,
            first_seen=when,
            last_seen=when,
            count=1,
        )

    def merged_with(self, event: BlacklistEvent) -> BlacklistEntry:
        """This entry after one more *distinct* event (duplicates are the caller's concern).

        The newest event (by timestamp; ties go to the arriving one) supplies reason, detail
        and ids; an older, late event only adds to `count` and may move `first_seen` back.
        """
        if event.address != self.address:
            message = f"event for {event.address!r} cannot update entry {self.address!r}"
            raise ValueError(message)
        first_seen = min(self.first_seen, event.timestamp)
        if event.timestamp >= self.last_seen:
            return attrs.evolve(
                self,
                reason=event.reason,
                detail=event.detail,
                feedback_id=event.feedback_id,
                message_id=event.message_id,
                first_seen=first_seen,
                last_seen=event.timestamp,
                count=self.count + 1,
            )
        return attrs.evolve(self, first_seen=first_seen, count=self.count + 1)

    @classmethod
    def from_item(cls, item: Mapping[str, Mapping[str, Any]]) -> BlacklistEntry:
        """Read a DynamoDB item (low-level client form: `{"email": {"S": ...}, ...}`).

        Items written by the original service hold only `email` (possibly mixed-case); they read
        as `IMPORTED`, seen once at `UNKNOWN_TIME`, with no detail or ids. An unknown `reason`
        value (written by a newer version) also reads as `IMPORTED`. Raises `InvalidAddress`
        when `email` is not a valid address.
        """
        address = _item_str(item, "email")
        if address is None:
            raise ValueError("DynamoDB item has no string 'email' attribute")
        reason_text = _item_str(item, "reason")
        try:
            reason = BlacklistReason(reason_text) if reason_text else BlacklistReason.IMPORTED
        except ValueError:
            log.debug(
                "unknown blacklist reason %r for %r; reading as imported", reason_text, address
            )
            reason = BlacklistReason.IMPORTED
        first_text = _item_str(item, "first_seen")
        last_text = _item_str(item, "last_seen")
        first_seen = parse_time(first_text) if first_text else None
        last_seen = parse_time(last_text) if last_text else None
        first_seen = first_seen or last_seen or UNKNOWN_TIME
        last_seen = last_seen or first_seen
        count_attr = item.get("event_count", {})
        count = int(count_attr["N"]) if "N" in count_attr else 1
        return cls(
            address=address,
            reason=reason,
            detail=_item_str(item, "detail"),
            feedback_id=_item_str(item, "last_feedback_id"),
            message_id=_item_str(item, "last_message_id"),
            first_seen=first_seen,
            last_seen=last_seen,
            count=max(count, 1),
        )

    def to_item(self) -> dict[str, dict[str, Any]]:
        """This entry as a DynamoDB item (low-level client form); absent values are omitted.

        Layout: `email` (S, hash key: the normalised address), `reason` (S), `detail` (S),
        `last_feedback_id` (S), `last_message_id` (S), `first_seen` / `last_seen` (S, ISO-8601
        UTC, fixed width so they sort in time order), `event_count` (N), and
        `recent_feedback_ids` (L of S: the idempotency memory, see `dynamodb_blacklist`).
        """
        item: dict[str, dict[str, Any]] = {
            "email": {"S": self.address},
            "reason": {"S": str(self.reason)},
            "first_seen": {"S": format_time(self.first_seen)},
            "last_seen": {"S": format_time(self.last_seen)},
            "event_count": {"N": str(self.count)},
        }
        if self.detail is not None:
            item["detail"] = {"S": self.detail}
        if self.feedback_id is not None:
            item["last_feedback_id"] = {"S": self.feedback_id}
            item["recent_feedback_ids"] = {"L": [{"S": self.feedback_id}]}
        if self.message_id is not None:
            item["last_message_id"] = {"S": self.message_id}
        return item


def _item_str(item: Mapping[str, Mapping[str, Any]], name: str) -> str | None:
    value = item.get(name)
    if not value or "S" not in value:
        return None
    text = value["S"]
    return text if isinstance(text, str) else None


@attrs.frozen
class BlacklistPage:
    """One page of a listing.

    Attributes:
        entries: the entries of this page (may be fewer than asked, even when more follow).
        next_cursor: pass it to `list_page` for the next page; `None` on the last page.
            Opaque: its form depends on the adapter.
    """

    entries: tuple[BlacklistEntry, ...]
    next_cursor: str | None = None


@attrs.frozen
class OccurrenceTally:
    """The soft events counted for one address (see `Blacklist.record_occurrence`).

    Attributes:
        count: distinct events counted.
        first_seen: time of the earliest counted event.
        last_seen: time of the latest counted event.
    """

    count: int
    first_seen: datetime = attrs.field(converter=_utc)
    last_seen: datetime = attrs.field(converter=_utc)

    @classmethod
    def first(cls, event: BlacklistEvent) -> OccurrenceTally:
        """The tally after the first event."""
        return cls(count=1, first_seen=event.timestamp, last_seen=event.timestamp)

    def counted(self, event: BlacklistEvent) -> OccurrenceTally:
        """This tally after one more *distinct* event (duplicates are the caller's concern)."""
        return OccurrenceTally(
            count=self.count + 1,
            first_seen=min(self.first_seen, event.timestamp),
            last_seen=max(self.last_seen, event.timestamp),
        )

    def entry_for(self, event: BlacklistEvent) -> BlacklistEntry:
        """The entry written when `event` makes the tally reach the threshold.

        Reason, detail and ids are the event's; the times span every counted event and
        `count` is the number of occurrences.
        """
        return BlacklistEntry(
            address=event.address,
            reason=event.reason,
            detail=event.detail,
            feedback_id=event.feedback_id,
            message_id=event.message_id,
            first_seen=min(self.first_seen, event.timestamp),
            last_seen=max(self.last_seen, event.timestamp),
            count=self.count,
        )


@attrs.frozen
class OccurrenceResult:
    """What one `Blacklist.record_occurrence` call did.

    Attributes:
        address: the normalised key.
        count: occurrences counted for the address so far (this one included).
        threshold: the threshold the call was given.
        duplicate: the event's feedback id had been counted before; the count did not change.
        entry: the blacklist entry once `count` has reached `threshold` (the address is
            blacklisted); `None` below it (the address is not blacklisted by these events).
    """

    address: str
    count: int
    threshold: int
    duplicate: bool
    entry: BlacklistEntry | None

    @property
    def blacklisted(self) -> bool:
        """Whether the count reached the threshold, so the address is on the blacklist."""
        return self.entry is not None


def check_threshold(threshold: int) -> None:
    """Validate a `record_occurrence` threshold the same way in every adapter."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        message = f"threshold must be an integer of at least 1, got {threshold!r}"
        raise ValueError(message)


@runtime_checkable
class InstantLookup(Protocol):
    """A store that can answer a lookup at once, on an event loop, when that costs no waiting.

    An asyncio caller tries `lookup_now` first and, on `LookupWouldBlock`, sends the lookup to a
    thread: for a local SQLite file that saves a thread hop per recipient (about a tenth of a
    millisecond, a large share of one RCPT), while a store behind a network never claims this.
    """

    def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """As `Blacklist.lookup_many`, or raise `LookupWouldBlock` when answering would wait."""
        ...


class Blacklist(Protocol):
    """Synchronous port (boto3 and sqlite3 are); async callers use `asyncio.to_thread`."""

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        """Entries of the blacklisted addresses among `addresses`, keyed by normalised key.

        Addresses not in the result are not blacklisted. Raises `InvalidAddress` (before any
        store access) and `BlacklistUnavailable`.
        """
        ...

    def get(self, address: str) -> BlacklistEntry | None:
        """The entry for one address, or `None` when it is not blacklisted."""
        ...

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        """Add or update the entry for the event's address; idempotent per feedback id.

        Returns the entry as stored after the call (for a duplicate: the current entry).
        """
        ...

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        """Count a soft event (e.g. Transient/General); blacklist once `threshold` are counted.

        Counting is per normalised address and idempotent per feedback id: a redelivered
        notification is not counted twice (events without a feedback id always count). While
        the count is below `threshold` the result's `entry` is `None` and these events leave
        the blacklist untouched: lookups, `get` and `list_page` do not see the count (an entry
        the address already has for other reasons stays as it was). When the count reaches
        `threshold` the address is blacklisted with the event's reason, detail and ids,
        `first_seen`/`last_seen` spanning the counted events and `count` = occurrences; the
        result carries that entry. Later distinct events are merged into the entry as by
        `record`; a duplicate returns the current entry unchanged (and writes it if an earlier
        attempt counted the event but failed before blacklisting). `threshold` must be >= 1
        (`ValueError`). Raises `BlacklistUnavailable` like every write.
        """
        ...

    def put(self, entry: BlacklistEntry) -> None:
        """Store `entry` as given, replacing any entry for its address (manual edit, import)."""
        ...

    def remove(self, address: str) -> bool:
        """Delete the entry for `address`, and its occurrence count; `True` when there was an
        entry."""
        ...

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        """Up to `limit` entries after `cursor` (`None` = from the start)."""
        ...


def check_page_args(limit: int, cursor: str | None) -> None:
    """Validate `list_page` arguments the same way in every adapter."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        message = f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        raise ValueError(message)
    if cursor is not None and not cursor:
        raise ValueError("cursor must be None or a cursor returned by list_page")


def normalize_all(addresses: Iterable[str]) -> dict[str, list[str]]:
    """Map normalised key -> distinct texts given for it; raises `InvalidAddress` for any bad one.

    Validates everything first, so a bad address anywhere means no store access at all. The
    texts matter to adapters that also look up legacy, non-normalised keys.
    """
    if isinstance(addresses, str):
        raise TypeError("lookup_many takes an iterable of addresses, not one string")
    keys: dict[str, list[str]] = {}
    for text in addresses:
        texts = keys.setdefault(normalize_address(text), [])
        if text not in texts:
            texts.append(text)
    return keys


class InMemoryBlacklist:
    """A `Blacklist` in a dict: for tests and embedding. Thread-safe; listing is by address."""

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
        check_threshold(threshold)
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
        check_page_args(limit, cursor)
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
