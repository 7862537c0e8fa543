"""Tests for the SES suppression-list sync, with botocore's Stubber on a real sesv2 client.

moto does not implement ListSuppressedDestinations/PutSuppressedDestination; the Stubber
validates every request and response against the real SES v2 API model instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from blacklist_cli.suppression_sync import (
    SES_PAGE_SIZE,
    Pacer,
    SuppressedDestination,
    export_to_ses,
    import_from_ses,
    iter_suppressed,
    ses_reason_for,
)
from ses_core.blacklist import (
    BlacklistEntry,
    BlacklistEvent,
    BlacklistReason,
    InMemoryBlacklist,
)
from ses_core.testing.clock import VirtualClock

T1 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2024, 3, 2, 8, 30, tzinfo=UTC)


@pytest.fixture
def sesv2() -> Iterator[tuple[Any, Stubber]]:
    """A real sesv2 client (dummy credentials) with a Stubber that must be fully consumed."""
    client = boto3.client(
        "sesv2",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def summary(address: str, reason: str = "BOUNCE", when: datetime = T1) -> dict[str, Any]:
    """One SuppressedDestinationSummary as SES returns it."""
    return {"EmailAddress": address, "Reason": reason, "LastUpdateTime": when}


def expect_list(
    stubber: Stubber,
    summaries: list[dict[str, Any]],
    *,
    token: str | None = None,
    next_token: str | None = None,
    reasons: list[str] | None = None,
) -> None:
    """Queue one ListSuppressedDestinations page, checking the request's paging parameters."""
    expected: dict[str, Any] = {"PageSize": SES_PAGE_SIZE}
    if reasons:
        expected["Reasons"] = reasons
    if token:
        expected["NextToken"] = token
    response: dict[str, Any] = {"SuppressedDestinationSummaries": summaries}
    if next_token:
        response["NextToken"] = next_token
    stubber.add_response("list_suppressed_destinations", response, expected)


def bounce(address: str, when: datetime = T1) -> BlacklistEvent:
    """A Permanent bounce event."""
    return BlacklistEvent(
        address=address,
        reason=BlacklistReason.BOUNCE,
        detail="Permanent/General",
        feedback_id=f"fb-{address}",
        message_id="m-1",
        timestamp=when,
    )


class CountingProgress:
    """Records progress updates."""

    def __init__(self) -> None:
        self.done = 0.0

    def update(self, n: float | None = 1) -> bool | None:
        self.done += n or 0
        return None


# -- import ------------------------------------------------------------------------------------


def test_import_follows_pages_and_adds_missing_addresses(sesv2: tuple[Any, Stubber]) -> None:
    """Every page is read (NextToken) and each new address becomes an `imported` entry."""
    client, stubber = sesv2
    expect_list(stubber, [summary("A@Example.com")], next_token="page-2")
    expect_list(stubber, [summary("b@example.org", "COMPLAINT", T2)], token="page-2")
    blacklist = InMemoryBlacklist()
    progress = CountingProgress()
    clock = VirtualClock()
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep_blocking)
    report = import_from_ses(blacklist, client, pacer=pacer, progress=progress)
    assert (report.seen, report.written, report.already_present) == (2, 2, 0)
    assert progress.done == 2
    assert clock.sleeps == [1.0]  # the second page waited for its turn
    entry = blacklist.get("a@example.com")
    assert entry == BlacklistEntry.manual(
        "a@example.com", reason=BlacklistReason.IMPORTED, detail="ses-suppression:BOUNCE", now=T1
    )
    other = blacklist.get("b@example.org")
    assert other is not None and other.detail == "ses-suppression:COMPLAINT"
    assert other.last_seen == T2


class TimedClient:
    """Delegates to a (stubbed) sesv2 client and notes the clock when each list call starts."""

    def __init__(self, inner: Any, clock: VirtualClock) -> None:
        self.inner = inner
        self.clock = clock
        self.list_starts: list[float] = []

    def list_suppressed_destinations(self, **kwargs: Any) -> Mapping[str, Any]:
        self.list_starts.append(self.clock())
        return cast("Mapping[str, Any]", self.inner.list_suppressed_destinations(**kwargs))

    def put_suppressed_destination(self, **kwargs: Any) -> Mapping[str, Any]:
        return cast("Mapping[str, Any]", self.inner.put_suppressed_destination(**kwargs))


def test_list_pages_are_spaced_by_the_pacer(sesv2: tuple[Any, Stubber]) -> None:
    """Each ListSuppressedDestinations page starts at least 1/rate after the previous one."""
    client, stubber = sesv2
    expect_list(stubber, [summary("a@example.com")], next_token="page-2")
    expect_list(stubber, [summary("b@example.com")], token="page-2", next_token="page-3")
    expect_list(stubber, [], token="page-3")
    clock = VirtualClock(start=100.0)
    timed = TimedClient(client, clock)
    pages = list(iter_suppressed(timed, pacer=Pacer(1.0, clock=clock, sleep=clock.sleep_blocking)))
    assert [len(page) for page in pages] == [1, 1, 0]
    assert timed.list_starts == [100.0, 101.0, 102.0]
    assert clock.sleeps == [1.0, 1.0]


def test_import_keeps_existing_entries(sesv2: tuple[Any, Stubber]) -> None:
    """An address already blacklisted keeps its richer entry."""
    client, stubber = sesv2
    expect_list(stubber, [summary("jane@example.com")])
    blacklist = InMemoryBlacklist()
    existing = blacklist.record(bounce("jane@example.com"))
    report = import_from_ses(blacklist, client)
    assert (report.written, report.already_present) == (0, 1)
    assert blacklist.get("jane@example.com") == existing


def test_import_skips_invalid_addresses(sesv2: tuple[Any, Stubber]) -> None:
    """A listed string that is not an address is reported, and the rest are imported."""
    client, stubber = sesv2
    expect_list(stubber, [summary("not-an-address"), summary("ok@example.com")])
    blacklist = InMemoryBlacklist()
    report = import_from_ses(blacklist, client)
    assert report.invalid == ["not-an-address"]
    assert report.written == 1 and len(blacklist) == 1


def test_import_dry_run_writes_nothing(sesv2: tuple[Any, Stubber]) -> None:
    """A dry run reports each planned write and leaves the blacklist unchanged."""
    client, stubber = sesv2
    expect_list(stubber, [summary("a@example.com"), summary("b@example.com", "COMPLAINT")])
    blacklist = InMemoryBlacklist()
    planned: list[tuple[str, str]] = []
    report = import_from_ses(
        blacklist, client, dry_run=True, on_write=lambda a, r: planned.append((a, r))
    )
    assert report.dry_run and report.written == 2
    assert planned == [("a@example.com", "BOUNCE"), ("b@example.com", "COMPLAINT")]
    assert len(blacklist) == 0


def test_import_passes_the_reason_filter(sesv2: tuple[Any, Stubber]) -> None:
    """A reason filter is sent to SES as `Reasons`."""
    client, stubber = sesv2
    expect_list(stubber, [], reasons=["COMPLAINT"])
    report = import_from_ses(InMemoryBlacklist(), client, reasons=["COMPLAINT"])
    assert report.seen == 0


def test_import_lets_ses_errors_through(sesv2: tuple[Any, Stubber]) -> None:
    """An SES error while listing stops the import with the ClientError."""
    client, stubber = sesv2
    stubber.add_client_error("list_suppressed_destinations", "TooManyRequestsException")
    with pytest.raises(ClientError):
        import_from_ses(InMemoryBlacklist(), client)


# -- export ------------------------------------------------------------------------------------


def test_export_puts_only_missing_addresses_with_mapped_reasons(sesv2: tuple[Any, Stubber]) -> None:
    """Addresses SES already suppresses are skipped; complaints go in as COMPLAINT."""
    client, stubber = sesv2
    blacklist = InMemoryBlacklist()
    blacklist.record(bounce("already@example.com"))
    blacklist.record(bounce("bounced@example.com"))
    blacklist.put(BlacklistEntry.manual("manual@example.com", now=T1))
    blacklist.record(
        BlacklistEvent(
            address="complained@example.com",
            reason=BlacklistReason.COMPLAINT,
            detail="complaint:abuse",
            feedback_id="fb-c",
            message_id=None,
            timestamp=T2,
        )
    )
    expect_list(stubber, [summary("Already@Example.com")])
    for address, reason in [
        ("bounced@example.com", "BOUNCE"),
        ("complained@example.com", "COMPLAINT"),
        ("manual@example.com", "BOUNCE"),
    ]:
        stubber.add_response(
            "put_suppressed_destination", {}, {"EmailAddress": address, "Reason": reason}
        )
    clock = VirtualClock()
    report = export_to_ses(
        blacklist, client, pacer=Pacer(1.0, clock=clock, sleep=clock.sleep_blocking)
    )
    assert (report.seen, report.written, report.already_present) == (4, 3, 1)
    # The listing and the three writes share one pacer: every write waits its second.
    assert clock.sleeps == [1.0, 1.0, 1.0]


def test_export_reason_filter_and_progress_total(sesv2: tuple[Any, Stubber]) -> None:
    """Only entries with the chosen reasons are exported; the progress bar learns the total."""
    client, stubber = sesv2
    blacklist = InMemoryBlacklist()
    blacklist.record(bounce("bounced@example.com"))
    blacklist.put(BlacklistEntry.manual("manual@example.com", now=T1))
    expect_list(stubber, [])
    stubber.add_response(
        "put_suppressed_destination",
        {},
        {"EmailAddress": "manual@example.com", "Reason": "BOUNCE"},
    )
    totals: list[int] = []
    progress = CountingProgress()

    def factory(total: int) -> CountingProgress:
        totals.append(total)
        return progress

    report = export_to_ses(
        blacklist,
        client,
        reasons={BlacklistReason.MANUAL},
        pacer=Pacer(1e6, sleep=lambda s: None),
        progress_factory=factory,
    )
    assert report.written == 1 and totals == [1] and progress.done == 1


def test_export_reports_addresses_ses_refuses(sesv2: tuple[Any, Stubber]) -> None:
    """A BadRequestException for one address is reported and the export goes on."""
    client, stubber = sesv2
    blacklist = InMemoryBlacklist()
    blacklist.record(bounce("a@example.com"))
    blacklist.record(bounce("b@example.com"))
    expect_list(stubber, [])
    stubber.add_client_error(
        "put_suppressed_destination", "BadRequestException", "Invalid email address"
    )
    stubber.add_response("put_suppressed_destination", {})
    report = export_to_ses(blacklist, client, pacer=Pacer(1e6, sleep=lambda s: None))
    assert report.refused == [("a@example.com", "Invalid email address")]
    assert report.written == 1


def test_export_stops_on_other_errors(sesv2: tuple[Any, Stubber]) -> None:
    """Any error other than a refused address (throttling after retries, ...) stops the run."""
    client, stubber = sesv2
    blacklist = InMemoryBlacklist()
    blacklist.record(bounce("a@example.com"))
    expect_list(stubber, [])
    stubber.add_client_error("put_suppressed_destination", "TooManyRequestsException")
    with pytest.raises(ClientError):
        export_to_ses(blacklist, client, pacer=Pacer(1e6, sleep=lambda s: None))


def test_export_dry_run_puts_nothing(sesv2: tuple[Any, Stubber]) -> None:
    """A dry run lists the suppression list but never calls PutSuppressedDestination."""
    client, stubber = sesv2
    blacklist = InMemoryBlacklist()
    blacklist.record(bounce("a@example.com"))
    expect_list(stubber, [])
    planned: list[tuple[str, str]] = []
    report = export_to_ses(
        blacklist, client, dry_run=True, on_write=lambda a, r: planned.append((a, r))
    )
    assert report.written == 1 and planned == [("a@example.com", "BOUNCE")]


# -- helpers -----------------------------------------------------------------------------------


def test_imported_complaints_export_as_complaints() -> None:
    """An entry imported from a COMPLAINT suppression goes back as COMPLAINT."""
    entry = BlacklistEntry.manual(
        "a@example.com", reason=BlacklistReason.IMPORTED, detail="ses-suppression:COMPLAINT", now=T1
    )
    assert ses_reason_for(entry) == "COMPLAINT"
    assert ses_reason_for(BlacklistEntry.manual("a@example.com", now=T1)) == "BOUNCE"


def test_pacer_spaces_calls_by_the_rate() -> None:
    """The first call goes at once; later ones wait until 1/rate after the previous one."""
    clock = VirtualClock()
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep_blocking)
    pacer.wait()
    pacer.wait()
    clock.now += 1.0  # a slow call: no wait needed afterwards
    pacer.wait()
    assert clock.sleeps == [0.5]


def test_pacer_refuses_a_non_positive_rate() -> None:
    """A zero or negative rate is a programming error."""
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(0)


def test_summary_reads_the_ses_fields() -> None:
    """SuppressedDestination keeps address, reason and time as SES lists them."""
    destination = SuppressedDestination.from_summary(summary("A@b.example", "COMPLAINT", T2))
    assert destination == SuppressedDestination("A@b.example", "COMPLAINT", T2)
