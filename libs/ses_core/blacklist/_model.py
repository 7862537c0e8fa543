"""The blacklist's values: events about recipients, the entries they make, pages and tallies.

Every store (memory, SQLite, DynamoDB) reads and writes these frozen values, so the rules of how
an entry changes (`BlacklistEntry.merged_with`) and when a count blacklists
(`OccurrenceTally.entry_for`) are written once, here, and not in each adapter.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import attrs

from ses_core.addresses import normalize_address
from ses_core.blacklist._private import as_utc

#: Stand-in for a time nobody recorded: items written by the original service hold only the
#: address, so their first/last sighting is unknown. The epoch sorts before every real event.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class BlacklistReason(enum.StrEnum):
    """Why an address is blacklisted."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    IMPORTED = "imported"


def _reason(value: BlacklistReason | str) -> BlacklistReason:
    return BlacklistReason(value)


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
    timestamp: datetime = attrs.field(converter=as_utc)


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
    first_seen: datetime = attrs.field(converter=as_utc)
    last_seen: datetime = attrs.field(converter=as_utc)
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
    """The soft events counted for one address (see `BlacklistWriter.record_occurrence`).

    Attributes:
        count: distinct events counted.
        first_seen: time of the earliest counted event.
        last_seen: time of the latest counted event.
    """

    count: int
    first_seen: datetime = attrs.field(converter=as_utc)
    last_seen: datetime = attrs.field(converter=as_utc)

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
    """What one `BlacklistWriter.record_occurrence` call did.

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
