"""Unit tests for the handler's queue paths (`relay.handler_queue`): queue mode's DATA and 452s,
and direct mode's deferred recipients put into the spool."""

from __future__ import annotations

import asyncio
import logging

import pytest

from relay.handler import RelayEnvelope, RelayHandler
from relay.handler_queue import QUEUE_UNAVAILABLE, STORAGE_FULL
from relay.handler_test import ACCEPT, ScriptedSender, result_for, session, transaction
from relay.wiring_queue import Delivery
from ses_core.blacklist import BlacklistEntry, BlacklistReason, InMemoryBlacklist
from ses_core.errors import SpoolFull, SpoolUnavailable
from ses_core.queue import (
    MemorySpool,
    NewMessage,
    QueuedEnvelope,
    QueueFilter,
    RecipientState,
)
from ses_core.smtp import Outcome, RecipientResult, ReplyClass


class Runner:
    """Stands in for the delivery workers: counts wakes."""

    def __init__(self) -> None:
        self.wakes = 0

    async def start(self) -> None:
        return None

    def wake(self) -> None:
        self.wakes += 1

    async def stop(self, grace: float) -> None:
        return None


class FailingSpool(MemorySpool):
    """A MemorySpool whose `put` raises `error`."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def put(self, message: NewMessage) -> str:
        raise self.error


class GatedSpool(MemorySpool):
    """A MemorySpool whose `put` stores only once `durable` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = asyncio.Event()

    async def put(self, message: NewMessage) -> str:
        await self.durable.wait()
        return await super().put(message)


def queue_handler(
    spool: MemorySpool | None = None, *, queue_mode: bool = True, **options: object
) -> tuple[RelayHandler, MemorySpool, Runner]:
    spool = spool if spool is not None else MemorySpool()
    runner = Runner()
    delivery = Delivery(spool, runner, queue_mode, retry_delay=30.0)
    sender = options.pop("sender", ScriptedSender())
    handler = RelayHandler(sender=sender, delivery=delivery, **options)  # type: ignore[arg-type]
    return handler, spool, runner


def stored(spool: MemorySpool) -> list[QueuedEnvelope]:
    return [m.envelope for m in spool.list(QueueFilter())]


async def test_queue_mode_answers_250_with_the_queue_id_and_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DATA puts the message (envelope as received) into the spool, wakes the workers, and
    never calls the sender."""
    handler, spool, runner = queue_handler()
    env, _ = await transaction(handler, ["a@example.org", "b@example.org"])
    env.mail_options.append("BODY=8BITMIME")
    with caplog.at_level(logging.INFO, logger="relay.transactions"):
        reply = await handler.handle_DATA(None, session(), env)
        await asyncio.sleep(0)  # the transaction line is written just after the reply
    assert reply == "250 2.0.0 Ok: queued as m00000001"
    (summary,) = spool.list(QueueFilter())
    envelope = summary.envelope
    assert envelope.sender == "app@example.com"
    assert [r.address for r in envelope.recipients] == ["a@example.org", "b@example.org"]
    assert envelope.eightbit and not envelope.smtputf8
    assert envelope.size == len(env.original_content or b"") and envelope.transaction_id
    assert envelope.received_at > 1.7e9  # wall clock: it must mean the same after a restart
    assert runner.wakes == 1
    lines = [r for r in caplog.records if r.name == "relay.transactions"]
    assert len(lines) == 1
    line = lines[0]
    assert line.fields["queue_id"] == summary.id  # type: ignore[attr-defined]
    assert line.fields["outcome"] == "queued"  # type: ignore[attr-defined]
    assert handler.sender.sent == []  # type: ignore[attr-defined]
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_recipients_total", {"outcome": "queued"}) == 2
    assert (
        registry.get_sample_value("relay_transactions_total", {"outcome": "queued", "reason": ""})
        == 1
    )


async def test_250_only_after_put_returned() -> None:
    """While `put` has not returned (not durable yet), DATA has not answered."""
    spool = GatedSpool()
    handler, _, runner = queue_handler(spool)
    env, _ = await transaction(handler, ["a@example.org"])
    answer = asyncio.ensure_future(handler.handle_DATA(None, session(), env))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not answer.done() and runner.wakes == 0
    spool.durable.set()
    assert (await answer).startswith("250 2.0.0 Ok: queued as ")
    assert runner.wakes == 1


@pytest.mark.parametrize("reason", ["disk_full", "queue_full"])
async def test_spool_full_at_data_is_452_and_counted(reason: str) -> None:
    handler, spool, runner = queue_handler(FailingSpool(SpoolFull("no room", reason)))
    env, _ = await transaction(handler, ["a@example.org"])
    assert await handler.handle_DATA(None, session(), env) == STORAGE_FULL
    assert runner.wakes == 0
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_spool_refusals_total", {"reason": reason}) == 1
    assert (
        registry.get_sample_value(
            "relay_transactions_total", {"outcome": "deferred", "reason": reason}
        )
        == 1
    )


@pytest.mark.parametrize("error", [SpoolUnavailable("EIO"), RuntimeError("bug")])
async def test_spool_failure_at_data_is_451_never_a_traceback(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    handler, _, runner = queue_handler(FailingSpool(error))
    env, _ = await transaction(handler, ["a@example.org"])
    reply = await handler.handle_DATA(None, session(), env)
    assert reply == QUEUE_UNAVAILABLE and reply.startswith("451 4.3.0")
    assert runner.wakes == 0
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_spool_refusals_total", {"reason": "unavailable"}) == 1


async def test_admission_refusal_is_452_at_mail_and_rcpt() -> None:
    """A spool that cannot accept: 452 4.3.1 at MAIL, and at RCPT if it filled meanwhile."""
    handler, spool, _ = queue_handler(MemorySpool(max_messages=0))
    env = RelayEnvelope()
    assert await handler.handle_MAIL(None, session(), env, "app@example.com", []) == STORAGE_FULL
    assert env.mail_from is None
    handler, spool, _ = queue_handler(MemorySpool(max_messages=1))
    env = RelayEnvelope()
    assert (await handler.handle_MAIL(None, session(), env, "app@example.com", [])).startswith(
        "250"
    )
    await spool.put(NewMessage(stored_envelope(), b"x"))  # another session filled it
    assert await handler.handle_RCPT(None, session(), env, "a@example.org", []) == STORAGE_FULL
    assert env.rcpt_tos == []
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_spool_refusals_total", {"reason": "queue_full"}) == 1


def stored_envelope() -> QueuedEnvelope:
    return QueuedEnvelope(sender="x@example.com", recipients=("y@example.org",), received_at=1.0)


async def test_direct_mode_does_not_refuse_at_mail_for_a_full_spool() -> None:
    """The spool only takes deferred leftovers in direct mode: MAIL is not refused for it."""
    handler, _, _ = queue_handler(MemorySpool(max_messages=0), queue_mode=False)
    env = RelayEnvelope()
    assert (await handler.handle_MAIL(None, session(), env, "app@example.com", [])).startswith(
        "250"
    )


async def test_blacklist_still_refuses_at_rcpt_in_queue_mode() -> None:
    blacklist = InMemoryBlacklist(
        [BlacklistEntry.manual("x@example.org", reason=BlacklistReason.BOUNCE)]
    )
    handler, spool, _ = queue_handler(blacklist=blacklist)
    env, replies = await transaction(handler, ["x@example.org", "ok@example.org"])
    assert replies[0].startswith("550 5.1.1 <x@example.org>: recipient is blacklisted")
    assert (await handler.handle_DATA(None, session(), env)).startswith("250 2.0.0 Ok: queued")
    (envelope,) = stored(spool)
    assert [r.address for r in envelope.recipients] == ["ok@example.org"]


async def test_null_sender_is_queued_as_empty_and_refused_without_bounce_from() -> None:
    """`<>` is kept as "" in the spool (never sent a DSN); without RELAY_BOUNCE_FROM in AWS
    mode it is refused at MAIL as before."""
    handler, spool, _ = queue_handler(null_sender="bounces@example.com")
    env = RelayEnvelope()
    assert (await handler.handle_MAIL(None, session(), env, "<>", [])).startswith("250")
    assert (await handler.handle_RCPT(None, session(), env, "a@example.org", [])).startswith("250")
    env.original_content = b"Subject: bounce\r\n\r\nx\r\n"
    assert (await handler.handle_DATA(None, session(), env)).startswith("250 2.0.0 Ok: queued")
    (envelope,) = stored(spool)
    assert envelope.sender == ""
    refusing, _, _ = queue_handler(null_sender=None)
    assert (await refusing.handle_MAIL(None, session(), RelayEnvelope(), "<>", [])).startswith(
        "550 5.7.1"
    )


def deferred(recipient: str, *, ambiguous: bool = False) -> RecipientResult:
    return RecipientResult(
        recipient, Outcome.DEFERRED, 454, "Throttling failure", ReplyClass.THROTTLED, ambiguous
    )


def accepted(recipient: str) -> RecipientResult:
    return RecipientResult(recipient, Outcome.ACCEPTED, 250, "Ok 0100-abc", ReplyClass.SUCCESS)


async def test_direct_partial_acceptance_queues_the_deferred_recipients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """250 (as before), and the still-deferred recipients go to the spool, due after the retry
    delay; the ambiguous one with its one resend used, counted as a possible duplicate."""
    table = {
        "a@example.org": accepted("a@example.org"),
        "b@example.org": deferred("b@example.org"),
        "c@example.org": deferred("c@example.org", ambiguous=True),
    }
    sender = ScriptedSender(result_for(table))
    handler, spool, runner = queue_handler(queue_mode=False, sender=sender)
    env, _ = await transaction(handler, list(table))
    with caplog.at_level(logging.INFO):
        reply = await handler.handle_DATA(None, session(), env)
    assert reply.startswith("250 Ok 0100-abc")
    (summary,) = spool.list(QueueFilter())
    envelope = summary.envelope
    assert [(r.address, r.state, r.ambiguous_resends) for r in envelope.recipients] == [
        ("b@example.org", RecipientState.PENDING, 0),
        ("c@example.org", RecipientState.PENDING, 1),
    ]
    assert envelope.sender == "app@example.com"
    assert summary.next_attempt_at >= envelope.received_at + 30.0
    assert await spool.next_due() == summary.next_attempt_at
    assert runner.wakes == 1
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_queue_possible_duplicates_total") == 1
    assert registry.get_sample_value("relay_recipients_total", {"outcome": "undelivered"}) is None
    assert registry.get_sample_value("relay_recipients_total", {"outcome": "queued"}) == 2
    assert any(
        r.levelno == logging.WARNING and f"queued as {summary.id}" in r.getMessage()
        for r in caplog.records
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_direct_partial_acceptance_logs_undelivered_when_the_spool_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = {"a@example.org": accepted("a@example.org"), "b@example.org": deferred("b@example.org")}
    sender = ScriptedSender(result_for(table))
    handler, _, _ = queue_handler(
        FailingSpool(SpoolUnavailable("EIO")), queue_mode=False, sender=sender
    )
    env, _ = await transaction(handler, list(table))
    with caplog.at_level(logging.INFO):
        assert (await handler.handle_DATA(None, session(), env)).startswith("250")
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_recipients_total", {"outcome": "undelivered"}) == 1
    assert any("still deferred after partial acceptance" in r.getMessage() for r in caplog.records)


async def test_direct_mode_full_acceptance_puts_nothing() -> None:
    handler, spool, runner = queue_handler(queue_mode=False, sender=ScriptedSender(ACCEPT))
    env, _ = await transaction(handler, ["a@example.org"])
    assert (await handler.handle_DATA(None, session(), env)).startswith("250")
    assert spool.list(QueueFilter()) == () and runner.wakes == 0
