"""Copy entries between our blacklist and the SES account-level suppression list (SES v2).

Teams often already have a suppression list in SES; importing it means the relays refuse those
recipients before SES silently drops them (suppressed sends still count against the daily
quota). Exporting goes the other way, for mail that bypasses the relays.

Rules:
- import never overwrites: an address already blacklisted keeps its richer entry (bounce type,
  feedback id, count). New entries are `imported`, detail `ses-suppression:<BOUNCE|COMPLAINT>`,
  seen at SES's `LastUpdateTime`.
- export puts only addresses SES does not list yet; `complaint` entries (and entries imported
  from a COMPLAINT suppression) go in as COMPLAINT, everything else as BOUNCE, the only two
  reasons SES knows.
- SES allows about one suppression-list call per second: every call, list pages and writes
  alike, goes through one `Pacer`, so an export's listing and its writes share the budget, and
  botocore's retry mode only has to absorb the odd throttle. An address SES refuses
  (`BadRequestException`) is reported and skipped; any other error stops the run.
- `dry_run` reads everything and writes nothing; `on_write` still reports each planned write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

import attrs

from ses_core.addresses import normalize_address
from ses_core.blacklist import BlacklistAdmin, BlacklistEntry, BlacklistReason
from ses_core.errors import InvalidAddress

log = logging.getLogger(__name__)

#: ListSuppressedDestinations returns at most this many summaries per call.
SES_PAGE_SIZE = 1000
#: Blacklist page size while exporting.
BLACKLIST_PAGE_SIZE = 500
#: Detail prefix of entries imported from the suppression list.
IMPORTED_DETAIL_PREFIX = "ses-suppression:"
SES_REASONS = ("BOUNCE", "COMPLAINT")
#: Suppression-list calls per second SES allows (non-sending SES API calls: about 1/s).
SES_CALLS_PER_SECOND = 1.0


class SuppressionListClient(Protocol):
    """The two calls of boto3's `sesv2` client this module uses."""

    def list_suppressed_destinations(self, **kwargs: Any) -> Mapping[str, Any]:
        """SES v2 ListSuppressedDestinations (one page)."""
        ...

    def put_suppressed_destination(self, **kwargs: Any) -> Mapping[str, Any]:
        """SES v2 PutSuppressedDestination."""
        ...


class Progress(Protocol):
    """What the sync tells a progress bar (tqdm's `update` fits)."""

    def update(self, n: float | None = 1) -> bool | None:
        """Count `n` more processed addresses."""
        ...


class _NoProgress:
    def update(self, n: float | None = 1) -> bool | None:
        return None


@attrs.frozen
class SuppressedDestination:
    """One summary from ListSuppressedDestinations.

    Attributes:
        address: the address as SES lists it.
        reason: "BOUNCE" or "COMPLAINT".
        last_update: when SES last added or updated it.
    """

    address: str
    reason: str
    last_update: datetime

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> SuppressedDestination:
        """Read a `SuppressedDestinationSummary` (botocore has parsed the timestamp)."""
        return cls(
            address=summary["EmailAddress"],
            reason=summary["Reason"],
            last_update=summary["LastUpdateTime"],
        )


@attrs.define
class SyncReport:
    """What an import or export did (or, with dry_run, would do).

    Attributes:
        seen: addresses read from the source.
        written: entries written (planned, with dry_run).
        already_present: addresses the destination already had.
        invalid: source addresses that are not valid addresses (skipped).
        refused: (address, SES's message) for addresses SES would not accept.
        dry_run: whether nothing was written.
    """

    dry_run: bool
    seen: int = 0
    written: int = 0
    already_present: int = 0
    invalid: list[str] = attrs.Factory(list)
    refused: list[tuple[str, str]] = attrs.Factory(list)


class Pacer:
    """Spaces calls at most `rate` per second; clock and sleep are injectable for tests."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Return when the next call may start."""
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


def iter_suppressed(
    client: SuppressionListClient,
    *,
    reasons: Collection[str] | None = None,
    pacer: Pacer | None = None,
) -> Iterator[list[SuppressedDestination]]:
    """Yield the suppression list page by page (follows NextToken until SES stops sending one).

    Each page is one paced call (`pacer`, default `SES_CALLS_PER_SECOND`): a list of 100,000
    addresses is 100 calls, and unpaced they would burst past SES's limit.
    """
    pacer = pacer or Pacer(SES_CALLS_PER_SECOND)
    kwargs: dict[str, Any] = {"PageSize": SES_PAGE_SIZE}
    if reasons:
        kwargs["Reasons"] = sorted(reasons)
    while True:
        pacer.wait()
        response = client.list_suppressed_destinations(**kwargs)
        yield [
            SuppressedDestination.from_summary(summary)
            for summary in response.get("SuppressedDestinationSummaries", [])
        ]
        token = response.get("NextToken")
        if not token:
            return
        kwargs["NextToken"] = token


def import_from_ses(
    blacklist: BlacklistAdmin,
    client: SuppressionListClient,
    *,
    reasons: Collection[str] | None = None,
    dry_run: bool = False,
    pacer: Pacer | None = None,
    progress: Progress | None = None,
    on_write: Callable[[str, str], None] | None = None,
) -> SyncReport:
    """Add every suppressed address the blacklist lacks; see the module docstring."""
    report = SyncReport(dry_run=dry_run)
    progress = progress if progress is not None else _NoProgress()
    for page in iter_suppressed(client, reasons=reasons, pacer=pacer):
        valid: dict[str, SuppressedDestination] = {}
        for destination in page:
            report.seen += 1
            try:
                key = normalize_address(destination.address)
            except InvalidAddress as exc:
                log.warning("skipping suppressed address %r: %s", destination.address, exc)
                report.invalid.append(destination.address)
                continue
            valid.setdefault(key, destination)
        present = blacklist.lookup_many(valid) if valid else {}
        for key, destination in valid.items():
            if key in present:
                report.already_present += 1
                continue
            entry = BlacklistEntry.manual(
                key,
                reason=BlacklistReason.IMPORTED,
                detail=IMPORTED_DETAIL_PREFIX + destination.reason,
                now=destination.last_update,
            )
            if on_write is not None:
                on_write(key, destination.reason)
            if not dry_run:
                blacklist.put(entry)
            report.written += 1
        progress.update(len(page))
    return report


def ses_reason_for(entry: BlacklistEntry) -> str:
    """The suppression reason an entry exports as: COMPLAINT or BOUNCE."""
    if entry.reason is BlacklistReason.COMPLAINT:
        return "COMPLAINT"
    if entry.detail == IMPORTED_DETAIL_PREFIX + "COMPLAINT":
        return "COMPLAINT"
    return "BOUNCE"


def export_to_ses(
    blacklist: BlacklistAdmin,
    client: SuppressionListClient,
    *,
    reasons: Collection[BlacklistReason] | None = None,
    dry_run: bool = False,
    pacer: Pacer | None = None,
    progress_factory: Callable[[int], Progress] | None = None,
    on_write: Callable[[str, str], None] | None = None,
) -> SyncReport:
    """Put every blacklisted address (of `reasons`, default all) SES does not suppress yet."""
    from botocore.exceptions import ClientError

    report = SyncReport(dry_run=dry_run)
    pacer = pacer or Pacer(SES_CALLS_PER_SECOND)
    suppressed: set[str] = set()
    for page in iter_suppressed(client, pacer=pacer):
        for destination in page:
            try:
                suppressed.add(normalize_address(destination.address))
            except InvalidAddress:
                log.debug("ignoring unparseable suppressed address %r", destination.address)
    pending: list[BlacklistEntry] = []
    cursor: str | None = None
    while True:
        listing = blacklist.list_page(limit=BLACKLIST_PAGE_SIZE, cursor=cursor)
        for entry in listing.entries:
            if reasons is not None and entry.reason not in reasons:
                continue
            report.seen += 1
            if entry.address in suppressed:
                report.already_present += 1
            else:
                pending.append(entry)
        cursor = listing.next_cursor
        if cursor is None:
            break
    progress = progress_factory(len(pending)) if progress_factory else _NoProgress()
    for entry in pending:
        reason = ses_reason_for(entry)
        if on_write is not None:
            on_write(entry.address, reason)
        if dry_run:
            report.written += 1
            progress.update(1)
            continue
        pacer.wait()
        try:
            client.put_suppressed_destination(EmailAddress=entry.address, Reason=reason)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != "BadRequestException":
                raise
            message = str(error.get("Message", ""))
            log.warning("SES refused %s: %s", entry.address, message)
            report.refused.append((entry.address, message))
        else:
            report.written += 1
        progress.update(1)
    return report
