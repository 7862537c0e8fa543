"""Tests for `QueueRunner`: leasing order, wake-ups, the worker cap, shutdown, and surviving
errors. The spool is `MemorySpool`, the sender scripted; waits are bounded hang guards only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from ses_core.errors import SpoolUnavailable
from ses_core.queue import (
    MemorySpool,
    MessageState,
    MessageSummary,
    NewMessage,
    QueuedEnvelope,
)
from ses_core.queue.backoff import Backoff
from ses_core.queue.delivery import DeliverySettings, QueueRunner
from ses_core.smtp.results import SendResult
from ses_core.smtp.sender import OutboundMessage
from ses_core.testing.queue_doubles import ACCEPT_ALL, RecordingEvents, ScriptedSender

T0 = 1_800_000_000.0
BODY = b"Subject: hi\r\n\r\nhello\r\n"


class Clock:
    """Wall-clock time that moves only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


class Rig:
    """A runner over a MemorySpool and a scripted sender, with its clock and events."""

    def __init__(self, *script: Any, spool: MemorySpool | None = None, **options: Any) -> None:
        settings: dict[str, Any] = {
            "workers": 4,
            "bounce_from": "bounces@example.com",
            "backoff": Backoff(random=lambda: 0.5),
            "idle_poll": 0.01,
            "spool_retry": 0.001,
        }
        settings.update(options)
        self.clock = Clock()
        self.spool = spool if spool is not None else MemorySpool(clock=self.clock)
        self.sender = ScriptedSender(*script)
        self.events = RecordingEvents()
        self.runner = QueueRunner(
            self.spool,
            self.sender,
            settings=DeliverySettings(**settings),
            events=self.events,
            clock=self.clock,
        )

    async def put(self, recipient: str, *, due: float | None = None) -> str:
        envelope = QueuedEnvelope("alice@example.com", (recipient,), received_at=self.clock.now)
        return await self.spool.put(NewMessage(envelope, BODY, not_before=due))

    def queued(self) -> int:
        return self.spool.summary().messages


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    """Rigs made by a test; their runners are stopped at the end whatever happened."""
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.runner.stop(0.0)


def make(rigs: list[Rig], *script: Any, **options: Any) -> Rig:
    rig = Rig(*script, **options)
    rigs.append(rig)
    return rig


async def test_due_messages_are_delivered_oldest_due_first(rigs: list[Rig]) -> None:
    """With one worker, the sends follow the due times, not the order of the puts."""
    rig = make(rigs, workers=1)
    await rig.put("c@example.net", due=T0 - 10)
    await rig.put("a@example.net", due=T0 - 30)
    await rig.put("b@example.net", due=T0 - 20)
    await rig.runner.start()
    await eventually(lambda: rig.queued() == 0)
    assert rig.sender.recipients_sent() == [
        ("a@example.net",),
        ("b@example.net",),
        ("c@example.net",),
    ]


async def test_wake_delivers_a_new_message_without_waiting_for_the_poll(rigs: list[Rig]) -> None:
    """idle_poll is an hour: only `wake()` can get the new message out within the guard."""
    rig = make(rigs, idle_poll=3600.0)
    await rig.runner.start()
    await asyncio.sleep(0.01)  # the dispatcher found nothing and sleeps
    await rig.put("bob@example.net")
    rig.runner.wake()
    await eventually(lambda: rig.queued() == 0, timeout=5.0)
    assert rig.sender.recipients_sent() == [("bob@example.net",)]


async def test_a_message_falls_due_at_its_time(rigs: list[Rig]) -> None:
    """The dispatcher sleeps until the next due time (idle_poll here), then leases it."""
    rig = make(rigs)
    await rig.put("bob@example.net", due=T0 + 60)
    await rig.runner.start()
    await asyncio.sleep(0.03)
    assert not rig.sender.sent
    rig.clock.now += 60
    await eventually(lambda: rig.queued() == 0)


async def test_no_more_messages_are_leased_than_there_are_workers(rigs: list[Rig]) -> None:
    """Two workers, five due messages: two in flight, three left unleased for later."""
    rig = make(rigs, workers=2)
    rig.sender.gate = asyncio.Event()
    for n in range(5):
        await rig.put(f"r{n}@example.net")
    await rig.runner.start()
    await eventually(lambda: rig.sender.started == 2)
    await asyncio.sleep(0.02)
    assert rig.runner.in_flight == 2
    assert rig.sender.started == 2
    rig.sender.gate.set()
    await eventually(lambda: rig.queued() == 0)
    assert len(rig.sender.sent) == 5


async def test_stop_lets_deliveries_in_flight_finish_within_the_grace(rigs: list[Rig]) -> None:
    """Stop during two sends: they complete and are settled, nothing released."""
    rig = make(rigs)
    rig.sender.gate = asyncio.Event()
    await rig.put("a@example.net")
    await rig.put("b@example.net")
    await rig.runner.start()
    await eventually(lambda: rig.runner.in_flight == 2)
    stopping = asyncio.create_task(rig.runner.stop(30.0))
    await asyncio.sleep(0.01)
    assert not stopping.done()
    rig.sender.gate.set()
    await asyncio.wait_for(stopping, 10.0)
    assert rig.queued() == 0
    assert rig.runner.in_flight == 0
    assert len(rig.sender.sent) == 2


async def test_stop_releases_what_did_not_finish_so_nothing_is_lost(rigs: list[Rig]) -> None:
    """Grace over: the stuck sends are cancelled and their messages due again at once."""
    rig = make(rigs)
    rig.sender.gate = asyncio.Event()  # never opened
    await rig.put("a@example.net")
    await rig.put("b@example.net")
    await rig.runner.start()
    await eventually(lambda: rig.runner.in_flight == 2)
    await rig.runner.stop(0.0)
    assert rig.runner.in_flight == 0
    assert rig.queued() == 2
    leased = await rig.spool.lease(10, rig.clock.now)  # not leased any more, and due
    assert sorted(m.envelope.recipients[0].address for m in leased) == [
        "a@example.net",
        "b@example.net",
    ]
    assert all(m.attempts == 0 for m in leased)


async def test_stop_is_idempotent_and_a_stopped_runner_stays_stopped(rigs: list[Rig]) -> None:
    """Two concurrent stops and a later one all return; start after stop is refused."""
    rig = make(rigs)
    await rig.runner.start()
    await asyncio.gather(rig.runner.stop(1.0), rig.runner.stop(1.0))
    await rig.runner.stop(1.0)
    with pytest.raises(RuntimeError, match="stopped"):
        await rig.runner.start()
    await rig.put("bob@example.net")
    rig.runner.wake()
    await asyncio.sleep(0.02)
    assert not rig.sender.sent


async def test_stop_before_start_does_nothing(rigs: list[Rig]) -> None:
    """A runner never started stops at once."""
    rig = make(rigs)
    await rig.runner.stop(5.0)
    assert rig.runner.in_flight == 0


async def first_of_two_kept(rig: Rig) -> MessageSummary:
    """Queue two messages, the first due first, and run `rig` until both were sent and only one
    is left queued (the first, whose attempt went wrong); its summary."""
    first = await rig.put("a@example.net", due=T0 - 2)
    await rig.put("b@example.net", due=T0 - 1)
    await rig.runner.start()
    await eventually(
        lambda: len(rig.sender.sent) == 2 and rig.queued() == 1 and not rig.runner.in_flight
    )
    summary = rig.spool.show(first)
    assert summary is not None
    return summary


async def test_a_sender_exception_does_not_kill_the_worker(rigs: list[Rig]) -> None:
    """One worker: the first send raises, the next message still goes; the first is kept."""
    rig = make(rigs, RuntimeError("sender bug"), workers=1)
    summary = await first_of_two_kept(rig)
    assert summary.state is MessageState.QUEUED
    assert summary.next_attempt_at > T0
    assert rig.events.retries == {"transient": 1}


class ExplodingEvents(RecordingEvents):
    """Events whose first `recipients_done` raises: an unexpected error inside an attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def recipients_done(self, outcome: str, count: int) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("metrics bug")
        super().recipients_done(outcome, count)


async def test_an_unexpected_error_in_an_attempt_reschedules_instead_of_looping(
    rigs: list[Rig],
) -> None:
    """The message is kept as stored and due after the transient backoff; work goes on."""
    rig = make(rigs, workers=1)
    rig.runner._deliverer._events = ExplodingEvents()  # noqa: SLF001
    summary = await first_of_two_kept(rig)
    assert summary.next_attempt_at == T0 + 60.0
    assert summary.last_error.startswith("internal error")


class LeaseFailsOnce(MemorySpool):
    """A spool whose first lease and first next_due raise."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lease_failures = 1
        self.next_due_failures = 1

    async def lease(self, limit: int, now: float) -> Any:
        if self.lease_failures:
            self.lease_failures -= 1
            raise SpoolUnavailable("database is locked")
        return await super().lease(limit, now)

    async def next_due(self) -> float | None:
        if self.next_due_failures:
            self.next_due_failures -= 1
            raise SpoolUnavailable("database is locked")
        return await super().next_due()


async def test_the_dispatcher_survives_spool_errors(rigs: list[Rig]) -> None:
    """A failing lease or next_due is logged and tried again after a pause."""
    rig = make(rigs)
    spool = LeaseFailsOnce(clock=rig.clock)
    rig.spool = spool
    rig.runner = QueueRunner(
        spool,
        rig.sender,
        settings=DeliverySettings(idle_poll=0.01),
        clock=rig.clock,
    )
    await rig.runner.start()
    await asyncio.sleep(0.03)
    await rig.put("bob@example.net")
    rig.runner.wake()
    await eventually(lambda: rig.queued() == 0)
    assert spool.lease_failures == 0


class SettleAlwaysFails(MemorySpool):
    """A spool that cannot store any outcome (a dead disk)."""

    async def settle(self, message: Any, envelope: Any, **kwargs: Any) -> None:
        raise SpoolUnavailable("I/O error")


async def test_a_spool_that_cannot_store_outcomes_gets_its_leases_back(rigs: list[Rig]) -> None:
    """Writes fail, rescheduling fails: the lease is released (kept, never dropped)."""
    rig = make(rigs)
    spool = SettleAlwaysFails(clock=rig.clock)
    rig.spool = spool
    rig.runner = QueueRunner(
        spool,
        rig.sender,
        settings=DeliverySettings(workers=1, idle_poll=0.01, spool_retry=0.0001),
        clock=rig.clock,
    )
    await rig.put("bob@example.net")
    await rig.runner.start()
    await eventually(lambda: len(rig.sender.sent) >= 2)  # released, leased and sent again
    await rig.runner.stop(0.0)
    assert rig.queued() == 1
    assert await spool.lease(10, rig.clock.now)  # not stuck in a lease


async def test_deliveries_in_flight_are_counted(rigs: list[Rig]) -> None:
    """`in_flight` is the number of leased messages being delivered."""
    rig = make(rigs)
    rig.sender.gate = asyncio.Event()
    await rig.runner.start()
    assert rig.runner.in_flight == 0
    for n in range(3):
        await rig.put(f"r{n}@example.net")
    rig.runner.wake()
    await eventually(lambda: rig.runner.in_flight == 3)
    rig.sender.gate.set()
    await eventually(lambda: rig.runner.in_flight == 0 and rig.queued() == 0)


async def test_a_retry_and_its_dsn_flow_through_the_runner(rigs: list[Rig]) -> None:
    """Deferred, retried when due (after a wake), refused: the DSN is delivered as well."""
    from ses_core.testing.queue_doubles import answer

    rig = make(
        rigs,
        answer({"bob@example.net": (451, "Temporary service failure")}),
        answer({"bob@example.net": (554, "Message rejected: Email address is not verified.")}),
        null_sender="bounces@example.com",
    )
    await rig.put("bob@example.net")
    await rig.runner.start()
    await eventually(lambda: len(rig.sender.sent) == 1 and rig.runner.in_flight == 0)
    rig.clock.now += 60.0
    rig.runner.wake()
    await eventually(
        lambda: len(rig.sender.sent) == 3 and rig.queued() == 0 and not rig.runner.in_flight
    )
    dsn = rig.sender.sent[2]
    assert (dsn.sender, dsn.recipients) == ("bounces@example.com", ("alice@example.com",))
    assert b"multipart/report" in dsn.data
    assert rig.events.outcomes == {"deferred": 1, "refused": 1, "accepted": 1}


class GatedLease(MemorySpool):
    """A spool whose lease waits for `gate` after taking the messages (a slow lease call)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.leasing = asyncio.Event()

    async def lease(self, limit: int, now: float) -> Any:
        leased = await super().lease(limit, now)
        self.leasing.set()
        await self.gate.wait()
        return leased


def gated_rig(rigs: list[Rig]) -> tuple[Rig, GatedLease]:
    rig = make(rigs)
    spool = GatedLease(clock=rig.clock)
    rig.spool = spool
    rig.runner = QueueRunner(
        spool, rig.sender, settings=DeliverySettings(idle_poll=0.01), clock=rig.clock
    )
    return rig, spool


async def test_messages_leased_while_stopping_are_released_not_started(rigs: list[Rig]) -> None:
    """A lease that returns after stop began: its messages go back untouched."""
    rig, spool = gated_rig(rigs)
    await rig.put("bob@example.net")
    await rig.runner.start()
    await asyncio.wait_for(spool.leasing.wait(), 10.0)
    stopping = asyncio.create_task(rig.runner.stop(10.0))
    await asyncio.sleep(0.01)
    spool.gate.set()
    await asyncio.wait_for(stopping, 10.0)
    assert not rig.sender.started
    spool.gate = asyncio.Event()
    spool.gate.set()
    assert len(await spool.lease(10, rig.clock.now)) == 1  # released: leasable again


async def test_a_lease_cut_off_by_the_grace_is_released_when_it_returns(rigs: list[Rig]) -> None:
    """The dispatcher is cancelled inside a stuck lease call; what it returns later goes back."""
    rig, spool = gated_rig(rigs)
    await rig.put("bob@example.net")
    await rig.runner.start()
    await asyncio.wait_for(spool.leasing.wait(), 10.0)
    await rig.runner.stop(0.0)
    spool.gate.set()  # the spool call finishes after the runner stopped

    async def leasable() -> int:
        return len(await spool.lease(10, rig.clock.now))

    async with asyncio.timeout(10.0):
        while not await leasable():
            await asyncio.sleep(0.001)
    assert not rig.sender.started


async def test_each_send_is_reported_with_its_limiter_wait(rigs: list[Rig]) -> None:
    """Every send to the upstream is reported once (`DeliveryEvents.sent`), with the time the
    send-rate limiter made it wait, so queue mode fills the same latency metrics as direct."""

    def waited(message: OutboundMessage) -> SendResult:
        return attrs.evolve(ACCEPT_ALL(message), limiter_wait=0.25)

    rig = make(rigs, waited)
    await rig.put("a@example.net")
    await rig.put("b@example.net")
    await rig.runner.start()
    await eventually(lambda: rig.queued() == 0 and len(rig.events.sends) == 2)
    assert sorted(wait for _, wait in rig.events.sends) == [0.0, 0.25]
    assert all(seconds >= 0 for seconds, _ in rig.events.sends)
