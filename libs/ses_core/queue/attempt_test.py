"""Tests for one delivery attempt (`_deliver.Deliverer` over `_attempt.AttemptBook`): what each
recipient becomes, what is reported, and how the lease ends, against `MemorySpool`."""

from __future__ import annotations

import asyncio
import email
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from typing import Any

import pytest

from ses_core.blacklist import BlacklistEntry, CachedBlacklist, InMemoryBlacklist
from ses_core.errors import BlacklistUnavailable, SpoolUnavailable
from ses_core.queue import (
    MemorySpool,
    MessageState,
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
    QueueFilter,
    RecipientState,
)
from ses_core.queue._attempt import AMBIGUOUS_FAILED_TEXT
from ses_core.queue._deliver import Deliverer, Lease
from ses_core.queue.backoff import Backoff
from ses_core.queue.delivery import DeliverySettings
from ses_core.testing.queue_doubles import AMBIGUOUS, RecordingEvents, ScriptedSender, answer
from ses_core.testing.upstream import SES_DAILY_QUOTA, SES_NOT_VERIFIED, SES_THROTTLED

T0 = 1_800_000_000.0
DAY = 86400.0
BODY = b"From: alice@example.com\r\nSubject: hello\r\nMessage-ID: <h1@example.com>\r\n\r\nhi\r\n"
BOUNCE_FROM = "bounces@example.com"
TEMPORARY = (451, "Temporary service failure")


class Clock:
    """Wall-clock time that moves only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InspectableSpool(MemorySpool):
    """MemorySpool with the two read helpers these tests need."""

    def list_all(self) -> list[Any]:
        return list(self.list(QueueFilter(limit=1000)))

    def data_of(self, message_id: str) -> bytes:
        return self._messages[message_id].data


class Harness:
    """A Deliverer over a MemorySpool, a scripted sender and recorded events."""

    def __init__(
        self,
        *script: Any,
        blacklist: Any = None,
        spool_class: type[InspectableSpool] = InspectableSpool,
        **options: Any,
    ) -> None:
        settings: dict[str, Any] = {
            "bounce_from": BOUNCE_FROM,
            "null_sender": BOUNCE_FROM,
            "reporting_mta": "relay.example.com",
            "backoff": Backoff(random=lambda: 0.5),  # no jitter: nominal delays
            "spool_retry": 0.001,
        }
        settings.update(options)
        self.settings = DeliverySettings(**settings)
        self.clock = Clock()
        self.spool = spool_class(clock=self.clock)
        self.sender = ScriptedSender(*script)
        self.events = RecordingEvents()
        self.deliverer = Deliverer(
            self.spool,
            self.sender,
            self.settings,
            blacklist,
            self.events,
            self.clock,
            monotonic=lambda: 500.0,
        )

    async def put(
        self,
        *recipients: str,
        sender: str = "alice@example.com",
        received_at: float | None = None,
        data: bytes = BODY,
    ) -> str:
        received = self.clock.now if received_at is None else received_at
        envelope = QueuedEnvelope(sender, recipients, received_at=received)
        return await self.spool.put(NewMessage(envelope, data, not_before=self.clock.now))

    async def attempt(self) -> int:
        """Lease every due message and give each one attempt; how many were attempted."""
        leased = await self.spool.lease(100, self.clock.now)
        for message in leased:
            await self.deliverer.attempt(Lease(message))
        return len(leased)

    async def attempt_when_due(self, message_id: str) -> int:
        """Move the clock to the message's next attempt, then `attempt`."""
        self.clock.now = self.summary(message_id).next_attempt_at
        return await self.attempt()

    def summary(self, message_id: str) -> MessageSummary:
        """The spool's summary of a message that must still be there."""
        summary = self.spool.show(message_id)
        assert summary is not None
        return summary

    def states(self, message_id: str) -> dict[str, RecipientState]:
        summary = self.summary(message_id)
        return {r.address: r.state for r in summary.envelope.recipients}

    def notices(self) -> list[tuple[QueuedEnvelope, bytes]]:
        """The DSNs queued so far (null-sender messages), with their bytes."""
        found = []
        for summary in self.spool.list_all():
            if summary.envelope.sender == "":
                found.append((summary.envelope, self.spool.data_of(summary.id)))
        return found


harness = Harness


def parts(data: bytes) -> list[Any]:
    """The parts of a DSN."""
    payload: Any = email.message_from_bytes(data, policy=policy.default).get_payload()
    assert isinstance(payload, list)
    return payload


def status_blocks(data: bytes) -> list[Any]:
    """The blocks of a DSN's delivery-status part."""
    blocks = parts(data)[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


def entry(address: str, reason: str = "bounce") -> BlacklistEntry:
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    return BlacklistEntry(address, reason, None, None, None, seen, seen)


# --- outcomes ---------------------------------------------------------------------------------


async def test_a_message_accepted_for_every_recipient_leaves_the_queue() -> None:
    """All accepted: settled with nothing pending, so it is removed; no DSN."""
    h = harness()
    await h.put("bob@example.net", "carol@example.org")
    assert await h.attempt() == 1
    assert h.spool.summary().messages == 0
    assert h.events.outcomes == {"accepted": 2}
    assert not h.events.dsns
    assert h.sender.sent[0].sender == "alice@example.com"
    assert h.sender.sent[0].data == BODY


async def test_the_attempt_deadline_is_the_attempt_timeout_on_the_senders_clock() -> None:
    """The sender gets monotonic() + attempt_timeout as its deadline."""
    h = harness(attempt_timeout=12.5)
    await h.put("bob@example.net")
    await h.attempt()
    assert h.sender.deadlines == [512.5]


async def test_a_partial_acceptance_never_resends_the_accepted_recipient() -> None:
    """Bob accepted, Carol throttled: the retry goes to Carol alone, soon."""
    h = harness(answer({"carol@example.org": SES_THROTTLED}))
    message_id = await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    assert h.states(message_id) == {
        "bob@example.net": RecipientState.ACCEPTED,
        "carol@example.org": RecipientState.PENDING,
    }
    summary = h.summary(message_id)
    assert summary.next_attempt_at == T0 + 5.0
    assert summary.attempts == 1
    assert "Throttling failure" in summary.last_error
    carol = summary.envelope.recipients[1]
    assert (carol.attempts, carol.code) == (1, 454)
    assert h.events.outcomes == {"accepted": 1, "deferred": 1}
    assert h.events.retries == {"throttled": 1}

    h.clock.now += 5.0
    await h.attempt()
    assert h.sender.recipients_sent() == [
        ("bob@example.net", "carol@example.org"),
        ("carol@example.org",),
    ]
    assert h.spool.summary().messages == 0


async def test_nothing_is_due_before_the_backoff_delay() -> None:
    """A deferred message is not leased again before its next attempt time."""
    h = harness(answer({"bob@example.net": TEMPORARY}))
    await h.put("bob@example.net")
    await h.attempt()
    h.clock.now += 59.0
    assert await h.attempt() == 0
    h.clock.now += 1.0
    assert await h.attempt() == 1


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param({"bob@example.net": SES_DAILY_QUOTA}, id="quota"),
        pytest.param(
            {"bob@example.net": SES_THROTTLED, "carol@example.org": SES_DAILY_QUOTA},
            id="throttled-and-quota",
        ),
    ],
)
async def test_the_daily_quota_defers_for_half_an_hour(replies: dict[str, tuple[int, str]]) -> None:
    """A used-up daily quota is not retried every few seconds; with a throttled recipient in
    the same message, the message waits for the slowest (the quota)."""
    h = harness(answer(replies))
    message_id = await h.put(*replies)
    await h.attempt()
    summary = h.summary(message_id)
    assert summary.next_attempt_at == T0 + 1800.0
    assert h.events.retries == {"daily_quota": 1}


async def test_the_backoff_grows_with_the_messages_attempts() -> None:
    """Transient trouble: 60 s, then 120 s, then 240 s."""
    h = harness(*(answer({"bob@example.net": TEMPORARY}) for _ in range(3)))
    message_id = await h.put("bob@example.net")
    delays = []
    for _ in range(3):
        before = h.clock.now
        await h.attempt()
        summary = h.summary(message_id)
        delays.append(summary.next_attempt_at - before)
        h.clock.now = summary.next_attempt_at
    assert delays == [60.0, 120.0, 240.0]


# --- refusals and DSNs --------------------------------------------------------------------------


async def test_a_refused_recipient_is_reported_in_a_dsn_queued_with_the_attempt() -> None:
    """Refused: FAILED, the DSN goes into the spool in the same settle, to the sender."""
    h = harness(answer({"carol@example.org": SES_NOT_VERIFIED}))
    await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    notices = h.notices()
    assert len(notices) == 1
    envelope, data = notices[0]
    assert [r.address for r in envelope.recipients] == ["alice@example.com"]
    blocks = status_blocks(data)
    assert blocks[0]["Reporting-MTA"] == "dns; relay.example.com"
    assert len(blocks) == 2
    assert blocks[1]["Final-Recipient"] == "rfc822; carol@example.org"
    assert blocks[1]["Status"] == "5.0.0"
    assert blocks[1]["Diagnostic-Code"] == f"smtp; {SES_NOT_VERIFIED[0]} {SES_NOT_VERIFIED[1]}"
    assert h.events.outcomes == {"accepted": 1, "refused": 1}
    assert h.events.dsns == {"queued": 1}


async def test_the_dsn_is_sent_with_the_bounce_sender_and_never_answered_by_another() -> None:
    """The queued DSN goes out from null_sender; when it is refused, no DSN follows."""
    h = harness(
        answer({"bob@example.net": SES_NOT_VERIFIED}), answer({"alice@example.com": (550, "no")})
    )
    await h.put("bob@example.net")
    await h.attempt()  # the original: refused, DSN queued
    await h.attempt()  # the DSN: refused
    assert [m.sender for m in h.sender.sent] == ["alice@example.com", BOUNCE_FROM]
    assert h.sender.sent[1].recipients == ("alice@example.com",)
    assert h.events.dsns == {"queued": 1, "null_sender": 1}
    assert h.spool.summary().messages == 0
    assert h.spool.summary().dead_letters == 0


async def test_a_null_sender_message_is_sent_with_the_null_sender_setting() -> None:
    """`<>` messages go out with `null_sender` (a verified identity for SES)."""
    h = harness(null_sender="relay@example.com")
    await h.put("bob@example.net", sender="")
    await h.attempt()
    assert h.sender.sent[0].sender == "relay@example.com"


async def test_without_a_null_sender_setting_the_null_sender_is_kept() -> None:
    """A local outbox keeps `<>` (null_sender None or "")."""
    h = harness(null_sender=None)
    await h.put("bob@example.net", sender="")
    await h.attempt()
    assert h.sender.sent[0].sender == ""


async def test_without_a_bounce_sender_a_failure_is_dead_lettered_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No bounce_from: no DSN can go, so the message is set aside for an operator."""
    h = harness(answer({"bob@example.net": SES_NOT_VERIFIED}), bounce_from=None)
    message_id = await h.put("bob@example.net")
    with caplog.at_level(logging.WARNING, logger="ses_core.queue.delivery"):
        await h.attempt()
    summary = h.summary(message_id)
    assert summary.state is MessageState.DEAD
    assert summary.last_error == "undeliverable"
    assert h.events.dsns == {"no_bounce_sender": 1}
    assert h.events.dead == {"undeliverable": 1}
    assert any(message_id in r.message and "bob@example.net" in r.message for r in caplog.records)
    assert not h.notices()


async def test_without_a_bounce_sender_the_message_is_dead_lettered_once_finished() -> None:
    """A refusal while another recipient is still deferred: dead-lettered when that one ends."""
    h = harness(
        answer({"bob@example.net": SES_NOT_VERIFIED, "carol@example.org": TEMPORARY}),
        bounce_from=None,
    )
    message_id = await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    summary = h.summary(message_id)
    assert summary.state is MessageState.QUEUED
    h.clock.now += 60.0
    await h.attempt()
    assert h.sender.recipients_sent()[-1] == ("carol@example.org",)
    summary = h.summary(message_id)
    assert (summary.state, summary.last_error) == (MessageState.DEAD, "undeliverable")


# --- the ambiguous case -------------------------------------------------------------------------


async def test_an_ambiguous_loss_is_resent_once_and_counted_as_a_possible_duplicate() -> None:
    """Lost after the final '.': PENDING with one resend allowed, then accepted."""
    h = harness(answer({"bob@example.net": AMBIGUOUS}))
    message_id = await h.put("bob@example.net")
    await h.attempt()
    summary = h.summary(message_id)
    bob = summary.envelope.recipients[0]
    assert (bob.state, bob.ambiguous_resends) == (RecipientState.PENDING, 1)
    assert h.events.duplicates == 1
    assert h.events.retries == {"ambiguous": 1}
    await h.attempt_when_due(message_id)
    assert len(h.sender.sent) == 2
    assert h.spool.summary().messages == 0


async def test_a_second_ambiguous_loss_fails_and_dead_letters_without_a_dsn() -> None:
    """SES may have delivered it: an operator decides, the sender gets no bounce."""
    h = harness(
        # First attempt: Bob lost, Carol refused (her DSN queued with the settle).
        answer({"bob@example.net": AMBIGUOUS, "carol@example.org": SES_NOT_VERIFIED}),
        # Second: the DSN to Alice goes first (due earlier), then Bob is lost again.
        answer({"bob@example.net": AMBIGUOUS}),
        answer({"bob@example.net": AMBIGUOUS}),
    )
    message_id = await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    await h.attempt_when_due(message_id)
    summary = h.summary(message_id)
    assert (summary.state, summary.last_error) == (MessageState.DEAD, "ambiguous")
    bob = summary.envelope.recipients[0]
    assert (bob.state, bob.text) == (RecipientState.FAILED, AMBIGUOUS_FAILED_TEXT)
    assert h.events.outcomes["ambiguous"] == 1
    assert h.events.duplicates == 1
    assert h.events.dead == {"ambiguous": 1}
    assert h.events.dsns == {"queued": 1}  # Carol's, from the first attempt only
    dsns_sent = [m.recipients for m in h.sender.sent if m.sender == BOUNCE_FROM]
    assert dsns_sent == [("alice@example.com",)]


async def test_a_refusal_next_to_a_final_ambiguous_loss_still_gets_its_dsn() -> None:
    """Dead-lettering takes no notices, so the DSN is queued on its own first."""
    h = harness(
        answer({"bob@example.net": AMBIGUOUS, "carol@example.org": TEMPORARY}),
        answer({"bob@example.net": AMBIGUOUS, "carol@example.org": SES_NOT_VERIFIED}),
    )
    message_id = await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    await h.attempt_when_due(message_id)
    summary = h.summary(message_id)
    assert summary.state is MessageState.DEAD
    notices = h.notices()
    assert len(notices) == 1
    assert status_blocks(notices[0][1])[1]["Final-Recipient"] == "rfc822; carol@example.org"


class NoNoticeSpool(InspectableSpool):
    """Refuses every `put` after the first (the message itself): a DSN cannot be queued."""

    async def put(self, message: NewMessage) -> str:
        if self._messages:
            raise SpoolUnavailable("disk write error")
        return await super().put(message)


async def test_a_dsn_the_spool_refuses_beside_a_dead_letter_is_counted_failed() -> None:
    """Dead-lettering queues the DSN on its own first; when the spool refuses it, the message
    is still dead-lettered (an operator sees it) and the DSN is counted `failed`, not `queued`."""
    h = harness(
        answer({"bob@example.net": AMBIGUOUS, "carol@example.org": TEMPORARY}),
        answer({"bob@example.net": AMBIGUOUS, "carol@example.org": SES_NOT_VERIFIED}),
        spool_class=NoNoticeSpool,
    )
    message_id = await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    await h.attempt_when_due(message_id)
    assert h.summary(message_id).state is MessageState.DEAD
    assert h.notices() == []
    assert h.events.dsns == {"failed": 1}
    assert h.events.dead == {"ambiguous": 1}


# --- expiry -------------------------------------------------------------------------------------


async def test_the_last_retry_is_scheduled_at_the_expiry_time() -> None:
    """A delay that would pass the lifetime is cut to the expiry time."""
    h = harness(answer({"bob@example.net": TEMPORARY}), lifetime=DAY)
    message_id = await h.put("bob@example.net", received_at=T0 - DAY + 30.0)
    await h.attempt()
    summary = h.summary(message_id)
    assert summary.next_attempt_at == T0 + 30.0


async def test_a_message_still_deferred_at_its_expiry_fails_with_4_4_7_and_a_dsn() -> None:
    """Tried once more at expiry; still deferred: FAILED, the last error kept, reported."""
    h = harness(answer({"bob@example.net": SES_DAILY_QUOTA}))
    message_id = await h.put("bob@example.net", received_at=T0 - 5 * DAY)
    await h.attempt()
    assert len(h.sender.sent) == 1
    assert h.spool.show(message_id) is None  # finished: reported, removed
    assert h.events.outcomes == {"expired": 1}
    assert not h.events.retries
    envelope, data = h.notices()[0]
    block = status_blocks(data)[1]
    assert block["Status"] == "4.4.7"
    assert block["Action"] == "failed"
    assert block["Diagnostic-Code"] == f"smtp; 454 {SES_DAILY_QUOTA[1]}"
    text = parts(data)[0].get_content()
    assert "5 days" in text


async def test_an_expired_recipient_keeps_the_last_error_in_its_text() -> None:
    """Operators see why it expired in the dead-letter or list output."""
    h = harness(answer({"bob@example.net": TEMPORARY}), bounce_from=None)
    message_id = await h.put("bob@example.net", received_at=T0 - 5 * DAY - 10)
    await h.attempt()
    summary = h.summary(message_id)
    bob = summary.envelope.recipients[0]
    assert bob.state is RecipientState.FAILED
    assert bob.text.startswith("4.4.7 message expired after 5 days in the queue; last error: 451")


async def test_an_expired_message_that_is_now_accepted_is_delivered() -> None:
    """Expiry is decided after the attempt: an old message SES takes now is not bounced."""
    h = harness()
    await h.put("bob@example.net", received_at=T0 - 6 * DAY)
    await h.attempt()
    assert h.events.outcomes == {"accepted": 1}
    assert not h.notices()


# --- blacklist at delivery ----------------------------------------------------------------------


async def test_a_recipient_blacklisted_while_queued_is_suppressed_and_reported() -> None:
    """Looked up again before sending: not sent, FAILED 550 5.1.1, in the DSN."""
    h = harness(blacklist=InMemoryBlacklist([entry("Carol@Example.org", "complaint")]))
    await h.put("bob@example.net", "carol@example.org")
    await h.attempt()
    assert h.sender.recipients_sent() == [("bob@example.net",)]
    assert h.events.outcomes == {"accepted": 1, "suppressed": 1}
    block = status_blocks(h.notices()[0][1])[1]
    assert block["Final-Recipient"] == "rfc822; carol@example.org"
    assert block["Status"] == "5.1.1"
    assert "Diagnostic-Code" not in block


async def test_every_recipient_blacklisted_sends_nothing() -> None:
    """No recipient left: nothing goes to SES, the message ends with its DSN."""
    h = harness(blacklist=CachedBlacklist(InMemoryBlacklist([entry("bob@example.net")])))
    message_id = await h.put("bob@example.net")
    await h.attempt()
    assert not h.sender.sent
    assert h.spool.show(message_id) is None
    assert len(h.notices()) == 1


class DownBlacklist(InMemoryBlacklist):
    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        raise BlacklistUnavailable("the table does not answer")


async def test_a_blacklist_that_cannot_answer_sends_nothing_and_retries_soon() -> None:
    """Never read an outage as "not blacklisted": no send, rescheduled in 5 s."""
    h = harness(blacklist=DownBlacklist())
    message_id = await h.put("bob@example.net")
    await h.attempt()
    assert not h.sender.sent
    summary = h.summary(message_id)
    assert summary.next_attempt_at == T0 + 5.0
    assert summary.envelope.recipients[0].attempts == 0
    assert "blacklist unavailable" in summary.last_error
    assert h.events.retries == {"blacklist_unavailable": 1}


# --- failures of the spool and the sender -------------------------------------------------------


async def test_a_corrupt_body_is_dead_lettered_and_never_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SpoolCorrupt: set aside as "corrupt", logged as an error."""
    h = harness()
    message_id = await h.put("bob@example.net")
    h.spool.corrupt.add(message_id)
    with caplog.at_level(logging.ERROR, logger="ses_core.queue.delivery"):
        await h.attempt()
    assert not h.sender.sent
    summary = h.summary(message_id)
    assert (summary.state, summary.last_error) == (MessageState.DEAD, "corrupt")
    assert h.events.dead == {"corrupt": 1}
    assert any(r.levelno == logging.ERROR and message_id in r.message for r in caplog.records)


async def test_a_sender_that_raises_leaves_the_message_deferred() -> None:
    """A sender bug is a transient deferral: the mail is kept and retried."""
    h = harness(RuntimeError("boom"))
    message_id = await h.put("bob@example.net")
    await h.attempt()
    summary = h.summary(message_id)
    assert summary.state is MessageState.QUEUED
    assert "local error while sending (RuntimeError)" in summary.last_error
    assert h.events.retries == {"transient": 1}


class FlakySpool(InspectableSpool):
    """Fails the first `failures` calls of `body` and `settle`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body_failures = 0
        self.settle_failures = 0
        self.settles = 0

    async def body(self, message: Any) -> bytes:
        if self.body_failures:
            self.body_failures -= 1
            raise SpoolUnavailable("disk read error")
        return await super().body(message)

    async def settle(self, message: Any, envelope: Any, **kwargs: Any) -> None:
        self.settles += 1
        if self.settle_failures:
            self.settle_failures -= 1
            raise SpoolUnavailable("disk write error")
        await super().settle(message, envelope, **kwargs)


def flaky_harness(*script: Any, **options: Any) -> tuple[Harness, FlakySpool]:
    h = harness(*script, spool_class=FlakySpool, **options)
    assert isinstance(h.spool, FlakySpool)
    return h, h.spool


async def test_a_body_that_cannot_be_read_is_retried_later() -> None:
    """An I/O error reading the body: nothing sent, rescheduled."""
    h, spool = flaky_harness()
    spool.body_failures = 1
    message_id = await h.put("bob@example.net")
    await h.attempt()
    assert not h.sender.sent
    summary = h.summary(message_id)
    assert summary.state is MessageState.QUEUED
    assert "could not read" in summary.last_error


async def test_a_failed_settle_is_written_again() -> None:
    """The spool fails to store the outcome twice: written on the third try, sent once."""
    h, spool = flaky_harness()
    spool.settle_failures = 2
    await h.put("bob@example.net")
    await h.attempt()
    assert spool.settles == 3
    assert len(h.sender.sent) == 1
    assert h.spool.summary().messages == 0


async def test_a_spool_that_keeps_failing_raises_for_the_runner() -> None:
    """After five tries the error goes up (the runner logs it and releases the lease)."""
    h, spool = flaky_harness()
    spool.settle_failures = 10
    await h.put("bob@example.net")
    leased = await h.spool.lease(1, h.clock.now)
    lease = Lease(leased[0])
    with pytest.raises(SpoolUnavailable):
        await h.deliverer.attempt(lease)
    assert not lease.ended
    assert spool.settles == 5


async def test_a_long_send_keeps_its_lease_alive() -> None:
    """Spool.heartbeat is called while a send runs longer than heartbeat_interval."""
    h = harness(heartbeat_interval=0.001)
    beats = 0

    async def heartbeat(message: Any) -> None:
        nonlocal beats
        beats += 1
        if beats >= 2:
            assert h.sender.gate is not None
            h.sender.gate.set()

    h.spool.heartbeat = heartbeat  # type: ignore[method-assign]
    h.sender.gate = asyncio.Event()
    await h.put("bob@example.net")
    await asyncio.wait_for(h.attempt(), timeout=10.0)
    assert beats >= 2
    assert h.events.outcomes == {"accepted": 1}


async def test_a_dsn_that_cannot_be_made_leaves_the_message_for_an_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DSN builder failure is logged; the finished message is dead-lettered, not dropped."""
    import ses_core.queue._deliver as deliver_module

    def broken(**kwargs: Any) -> Any:
        raise ValueError("unexpected header")

    monkeypatch.setattr(deliver_module, "dsn_notice", broken)
    h = harness(answer({"bob@example.net": SES_NOT_VERIFIED}))
    message_id = await h.put("bob@example.net")
    await h.attempt()
    summary = h.summary(message_id)
    assert (summary.state, summary.last_error) == (MessageState.DEAD, "undeliverable")
    assert not h.events.dsns


async def test_an_ambiguous_loss_at_the_expiry_is_dead_lettered_not_bounced() -> None:
    """No resend is left in the lifetime and SES may have it: an operator decides."""
    h = harness(answer({"bob@example.net": AMBIGUOUS, "carol@example.org": TEMPORARY}))
    message_id = await h.put("bob@example.net", "carol@example.org", received_at=T0 - 5 * DAY)
    await h.attempt()
    summary = h.summary(message_id)
    assert (summary.state, summary.last_error) == (MessageState.DEAD, "ambiguous")
    assert [r.state for r in summary.envelope.recipients] == [RecipientState.FAILED] * 2
    assert h.events.outcomes == {"ambiguous": 1, "expired": 1}
    assert h.events.duplicates == 0
    notices = h.notices()  # Carol's expiry is still reported
    assert [status_blocks(data)[1]["Final-Recipient"] for _, data in notices] == [
        "rfc822; carol@example.org"
    ]
