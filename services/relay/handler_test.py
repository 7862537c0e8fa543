"""Unit tests for relay.handler: every reply the MAIL, RCPT and DATA hooks can give."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiosmtpd.smtp import Session

from relay.access import AccessPolicy
from relay.handler import INTERNAL_ERROR, RelayEnvelope, RelayHandler
from relay.outbox import WRITE_FAILED
from ses_core.blacklist import BlacklistEntry, BlacklistReason, InMemoryBlacklist
from ses_core.blacklist.cache import CachedBlacklist
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.errors import BlacklistUnavailable, LookupWouldBlock
from ses_core.smtp import OutboundMessage, Outcome, RecipientResult, ReplyClass, SendResult

Script = Callable[[OutboundMessage], SendResult]


class ScriptedSender:
    """A MessageSender answering from a list of functions, one per call."""

    def __init__(self, *script: Script | BaseException) -> None:
        self.script = list(script)
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        self.sent.append(message)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step(message)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def each(code: int, text: str, reply_class: ReplyClass, outcome: Outcome) -> Script:
    """Every recipient gets the same result."""
    return lambda m: SendResult(
        tuple(RecipientResult(r, outcome, code, text, reply_class) for r in m.recipients)
    )


ACCEPT = each(250, "Ok 0100-abc", ReplyClass.SUCCESS, Outcome.ACCEPTED)


def result_for(table: dict[str, RecipientResult]) -> Script:
    """Return the given results for the recipients asked."""
    return lambda m: SendResult(tuple(table[r] for r in m.recipients))


def lookup_threads() -> ThreadPoolExecutor:
    """Blacklist lookup threads named as the relay's wiring names them."""
    return ThreadPoolExecutor(1, thread_name_prefix="blacklist-lookup")


def session() -> Session:
    """An aiosmtpd session from 192.0.2.7."""
    s = Session(asyncio.get_event_loop())
    s.peer = ("192.0.2.7", 40000)  # type: ignore[assignment]
    return s


async def transaction(
    handler: RelayHandler, recipients: list[str], *, sender: str = "app@example.com"
) -> tuple[RelayEnvelope, list[str]]:
    """Run MAIL and RCPT hooks; return the envelope and the RCPT replies."""
    env = RelayEnvelope()
    sess = session()
    assert (await handler.handle_MAIL(None, sess, env, sender, [])).startswith("250")
    replies = [await handler.handle_RCPT(None, sess, env, r, []) for r in recipients]
    env.original_content = b"Subject: x\r\n\r\nbody\r\n"
    return env, replies


async def data(handler: RelayHandler, recipients: list[str]) -> str:
    """MAIL, RCPT and DATA; return the DATA reply."""
    env, _ = await transaction(handler, recipients)
    return await handler.handle_DATA(None, session(), env)


async def test_mail_checks_syntax_and_domain() -> None:
    """MAIL FROM: 501 5.1.7 for bad syntax, 550 5.7.1 for a domain outside the allowlist."""
    handler = RelayHandler(
        sender=ScriptedSender(), policy=AccessPolicy(sender_domains=frozenset({"example.com"}))
    )
    env = RelayEnvelope()
    assert (await handler.handle_MAIL(None, session(), env, "a@@b", [])).startswith("501 5.1.7")
    assert (await handler.handle_MAIL(None, session(), env, "a@other.example", [])).startswith(
        "550 5.7.1"
    )
    assert env.mail_from is None
    assert await handler.handle_MAIL(None, session(), env, "a@example.com", ["BODY=8BITMIME"]) == (
        "250 2.1.0 OK"
    )
    assert env.sender_domain == "example.com" and env.mail_options == ["BODY=8BITMIME"]


async def test_rcpt_replies() -> None:
    """RCPT: syntax 501, SMTPUTF8 553, blacklist 550 with reason, limit 452, else 250."""
    blacklist = InMemoryBlacklist(
        [BlacklistEntry.manual("x@example.org", reason=BlacklistReason.COMPLAINT)]
    )
    handler = RelayHandler(sender=ScriptedSender(), blacklist=blacklist, max_recipients=2)
    env, replies = await transaction(
        handler,
        [
            "bad@",
            "ü@example.org",
            "X@Example.org",
            "a@example.org",
            "b@example.org",
            "c@example.org",
        ],
    )
    assert replies[0].startswith("501 5.1.3 Bad recipient address syntax:")
    assert replies[1].startswith("553 5.6.7")
    assert replies[2] == "550 5.1.1 <X@example.org>: recipient is blacklisted (complaint)"
    assert replies[3:5] == ["250 2.1.5 OK", "250 2.1.5 OK"]
    assert replies[5] == "452 4.5.3 Too many recipients"
    assert env.rcpt_tos == ["a@example.org", "b@example.org"]
    assert env.refused == [{"rcpt": "x@example.org", "reason": "blacklisted:complaint"}]


async def test_rcpt_blacklist_unavailable_is_451() -> None:
    """A failing blacklist gives 451 4.3.0 and the recipient is not accepted."""

    class Down(InMemoryBlacklist):
        def get(self, address: str) -> BlacklistEntry | None:
            raise BlacklistUnavailable("down")

    handler = RelayHandler(sender=ScriptedSender(), blacklist=Down())
    env, replies = await transaction(handler, ["a@example.org"])
    assert replies == ["451 4.3.0 Blacklist temporarily unavailable, try again later"]
    assert env.rcpt_tos == []


async def test_cached_rcpt_answers_need_no_thread() -> None:
    """With a CachedBlacklist, a repeated recipient is answered on the loop; misses go to the
    dedicated lookup threads."""
    threaded: list[tuple[str, str]] = []

    class Recording(InMemoryBlacklist):
        def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
            wanted = list(addresses)
            threaded.extend((address, threading.current_thread().name) for address in wanted)
            return super().lookup_many(wanted)

    blacklist = CachedBlacklist(
        Recording([BlacklistEntry.manual("x@example.org", reason=BlacklistReason.BOUNCE)])
    )
    handler = RelayHandler(
        sender=ScriptedSender(), blacklist=blacklist, lookup_executor=lookup_threads()
    )
    for _ in range(2):
        env, replies = await transaction(handler, ["a@example.org", "X@example.org"])
        assert replies == [
            "250 2.1.5 OK",
            "550 5.1.1 <X@example.org>: recipient is blacklisted (bounce)",
        ]
        assert env.rcpt_tos == ["a@example.org"]
    assert [address for address, _ in threaded] == ["a@example.org", "X@example.org"]
    assert all(name.startswith("blacklist-lookup") for _, name in threaded)
    assert blacklist.stats.hits == 2


async def test_sqlite_blacklist_is_read_on_the_loop_unless_it_would_block(tmp_path: Path) -> None:
    """A SQLite store (`InstantLookup`) is read on the event loop, with no thread hop; when the
    instant read would wait for a lock, the lookup goes to the lookup threads instead."""
    store = SqliteBlacklist(tmp_path / "bl.db")
    store.put(BlacklistEntry.manual("x@example.org", reason=BlacklistReason.COMPLAINT))
    threads: list[str] = []
    blocked = [False]

    class Watched(SqliteBlacklist):
        def lookup_now(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
            if blocked[0]:
                raise LookupWouldBlock("locked")
            return super().lookup_now(addresses)

        def get(self, address: str) -> BlacklistEntry | None:
            threads.append(threading.current_thread().name)
            return super().get(address)

    blacklist = Watched(tmp_path / "bl.db")
    handler = RelayHandler(
        sender=ScriptedSender(), blacklist=blacklist, lookup_executor=lookup_threads()
    )
    refused = "550 5.1.1 <x@example.org>: recipient is blacklisted (complaint)"
    _, replies = await transaction(handler, ["a@example.org", "x@example.org"])
    assert replies == ["250 2.1.5 OK", refused]
    assert threads == []
    blocked[0] = True
    _, replies = await transaction(handler, ["b@example.org", "x@example.org"])
    assert replies == ["250 2.1.5 OK", refused]
    assert len(threads) == 2 and all(name.startswith("blacklist-lookup") for name in threads)
    blacklist.close()
    store.close()


async def test_cached_blacklist_miss_that_fails_is_451() -> None:
    """A cache miss whose store lookup fails still gives 451 4.3.0, never an accept."""

    class Down(InMemoryBlacklist):
        def lookup_many(self, addresses: object) -> dict[str, BlacklistEntry]:
            raise BlacklistUnavailable("down")

    handler = RelayHandler(sender=ScriptedSender(), blacklist=CachedBlacklist(Down()))
    env, replies = await transaction(handler, ["a@example.org"])
    assert replies == ["451 4.3.0 Blacklist temporarily unavailable, try again later"]
    assert env.rcpt_tos == []


async def test_drop_mode_sends_to_the_others_only() -> None:
    """Drop mode: 250 at RCPT, the address is left out at DATA; only dropped ones: no send."""
    blacklist = InMemoryBlacklist([BlacklistEntry.manual("x@example.org")])
    sender = ScriptedSender(ACCEPT)
    handler = RelayHandler(sender=sender, blacklist=blacklist, blacklist_drop=True)
    env, replies = await transaction(handler, ["x@example.org", "a@example.org"])
    assert replies == ["250 2.1.5 OK", "250 2.1.5 OK"]
    assert (await handler.handle_DATA(None, session(), env)).startswith("250")
    assert sender.sent[0].recipients == ("a@example.org",)
    assert await data(handler, ["x@example.org"]) == "250 2.0.0 OK"
    assert len(sender.sent) == 1


async def test_ehlo_drops_empty_auth_line() -> None:
    """PIPELINING is added, an AUTH line without mechanisms removed, the host name recorded."""
    handler = RelayHandler(sender=ScriptedSender())
    sess = session()
    lines = await handler.handle_EHLO(
        None, sess, RelayEnvelope(), "client", ["250-x", "250-AUTH ", "250 HELP"]
    )
    assert lines == ["250-x", "250-PIPELINING", "250 HELP"] and sess.host_name == "client"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (ACCEPT, "250 Ok 0100-abc"),
        (
            each(
                554,
                "Message rejected: Email address is not verified.",
                ReplyClass.PERMANENT,
                Outcome.REFUSED,
            ),
            "554 Message rejected: Email address is not verified.",
        ),
        (
            each(
                454,
                "Throttling failure: Maximum sending rate exceeded.",
                ReplyClass.THROTTLED,
                Outcome.DEFERRED,
            ),
            "451 4.7.0 Upstream throttled, try again later (upstream 454)",
        ),
        (
            each(
                451,
                "4.7.0 send rate limit: no capacity before the message deadline",
                ReplyClass.RATE_LIMITED,
                Outcome.DEFERRED,
            ),
            "451 4.7.0 Send rate limit: wait exceeded, try again later",
        ),
        (
            each(
                454, "4.7.0 daily sending quota exhausted", ReplyClass.DAILY_QUOTA, Outcome.DEFERRED
            ),
            "451 4.7.0 Daily sending quota exceeded, try again later (upstream 454)",
        ),
        (
            each(535, "Authentication Credentials Invalid", ReplyClass.AUTH, Outcome.DEFERRED),
            "451 4.7.0 Upstream refused the relay's credentials, try again later (upstream 535)",
        ),
        (
            each(421, "lost", ReplyClass.CONNECTION, Outcome.DEFERRED),
            "451 4.4.1 Upstream unreachable, try again later",
        ),
        (
            each(451, "Temporary service failure", ReplyClass.TRANSIENT, Outcome.DEFERRED),
            "451 4.3.0 Upstream temporary failure, try again later (upstream 451)",
        ),
        (each(250, "weird 5xx", ReplyClass.PERMANENT, Outcome.REFUSED), "554 weird 5xx"),
    ],
)
async def test_data_replies(script: Script, expected: str) -> None:
    """DATA answers with the truth for each kind of sender result."""
    handler = RelayHandler(sender=ScriptedSender(script))
    assert await data(handler, ["a@example.org", "b@example.org"]) == expected


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            each(
                451,
                "4.3.0 send-rate limiter unavailable: redis down",
                ReplyClass.LIMITER_UNAVAILABLE,
                Outcome.DEFERRED,
            ),
            "451 4.3.0 Rate limiter unavailable, try again later",
        ),
        (
            each(451, WRITE_FAILED, ReplyClass.TRANSIENT, Outcome.DEFERRED),
            "451 4.3.0 Local outbox write failed, try again later",
        ),
    ],
)
async def test_data_names_what_failed_locally(script: Script, expected: str) -> None:
    """A limiter that cannot answer, or an outbox that cannot write, is named as such, not
    blamed on the upstream."""
    handler = RelayHandler(sender=ScriptedSender(script))
    assert await data(handler, ["a@example.org"]) == expected


async def test_null_sender_refused_without_bounce_from() -> None:
    """MAIL FROM:<> without RELAY_BOUNCE_FROM: 550 5.7.1 naming the setting."""
    handler = RelayHandler(sender=ScriptedSender())
    env = RelayEnvelope()
    reply = await handler.handle_MAIL(None, session(), env, "<>", [])
    assert reply == (
        "550 5.7.1 Null sender not accepted: set RELAY_BOUNCE_FROM to a verified identity"
    )
    assert env.mail_from is None


async def test_null_sender_goes_upstream_as_bounce_from() -> None:
    """With a bounce-from address, `<>` is accepted (even outside the sender-domain allowlist)
    and sent with that envelope sender; the message bytes are unchanged."""
    sender = ScriptedSender(ACCEPT)
    handler = RelayHandler(
        sender=sender,
        policy=AccessPolicy(sender_domains=frozenset({"example.com"})),
        null_sender="bounces@example.com",
    )
    env = RelayEnvelope()
    assert await handler.handle_MAIL(None, session(), env, "<>", []) == "250 2.1.0 OK"
    assert env.sender_domain is None
    assert await handler.handle_RCPT(None, session(), env, "a@example.org", []) == "250 2.1.5 OK"
    env.original_content = b"Subject: bounce\r\n\r\nbody\r\n"
    assert await handler.handle_DATA(None, session(), env) == "250 Ok 0100-abc"
    [sent] = sender.sent
    assert sent.sender == "bounces@example.com"
    assert sent.data == b"Subject: bounce\r\n\r\nbody\r\n"


async def test_null_sender_kept_as_is_when_configured_empty() -> None:
    """`null_sender=""` (local outbox mode) keeps `<>` as the envelope sender."""
    sender = ScriptedSender(ACCEPT)
    handler = RelayHandler(sender=sender, null_sender="")
    env = RelayEnvelope()
    assert await handler.handle_MAIL(None, session(), env, "<>", []) == "250 2.1.0 OK"
    await handler.handle_RCPT(None, session(), env, "a@example.org", [])
    env.original_content = b"x\r\n"
    assert (await handler.handle_DATA(None, session(), env)).startswith("250")
    assert sender.sent[0].sender == ""


async def test_partial_deferred_past_deadline_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A deferred recipient not delivered in time: 250, an ERROR naming it, and a metric."""
    ok = RecipientResult("a@example.org", Outcome.ACCEPTED, 250, "Ok 1", ReplyClass.SUCCESS)
    quota = RecipientResult("b@example.org", Outcome.DEFERRED, 454, "daily", ReplyClass.DAILY_QUOTA)
    handler = RelayHandler(
        sender=ScriptedSender(result_for({"a@example.org": ok, "b@example.org": quota}))
    )
    with caplog.at_level(logging.ERROR, logger="relay.handler"):
        assert await data(handler, ["a@example.org", "b@example.org"]) == "250 Ok 1"
    assert "b@example.org (454)" in caplog.text
    registry = handler.metrics.registry
    assert registry.get_sample_value("relay_recipients_total", {"outcome": "undelivered"}) == 1


async def test_partial_deferral_is_answered_from_one_send() -> None:
    """Accepted + transiently deferred: one send, one 250; resending to the deferred
    recipients within the deadline is the sender's job (see `SesSmtpClient.send`)."""
    ok = RecipientResult("a@example.org", Outcome.ACCEPTED, 250, "Ok 1", ReplyClass.SUCCESS)
    later = RecipientResult(
        "b@example.org", Outcome.DEFERRED, 451, "Temporary", ReplyClass.TRANSIENT
    )
    sender = ScriptedSender(result_for({"a@example.org": ok, "b@example.org": later}))
    handler = RelayHandler(sender=sender)
    assert await data(handler, ["a@example.org", "b@example.org"]) == "250 Ok 1"
    assert [m.recipients for m in sender.sent] == [("a@example.org", "b@example.org")]


async def test_daily_quota_reported_to_the_poller() -> None:
    """An SES daily-quota deferral calls on_daily_quota so later sends stop before SES."""
    calls: list[bool] = []
    quota = each(
        454,
        "Throttling failure: Daily message quota exceeded.",
        ReplyClass.DAILY_QUOTA,
        Outcome.DEFERRED,
    )
    handler = RelayHandler(sender=ScriptedSender(quota), on_daily_quota=lambda: calls.append(True))
    assert (await data(handler, ["a@example.org"])).startswith("451 4.7.0 Daily")
    assert calls == [True]


async def test_transaction_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """One INFO line per transaction with the documented fields and no sender address."""
    handler = RelayHandler(sender=ScriptedSender(ACCEPT))
    with caplog.at_level(logging.INFO, logger="relay.transactions"):
        await data(handler, ["a@example.org"])
        # Written after the reply, on the loop's next iteration.
        assert not [r for r in caplog.records if r.name == "relay.transactions"]
        await asyncio.sleep(0)
    [record] = [r for r in caplog.records if r.name == "relay.transactions"]
    fields = record.fields  # type: ignore[attr-defined]
    assert set(fields) >= {
        "id",
        "peer",
        "sender_domain",
        "recipients",
        "refused",
        "outcome",
        "code",
        "upstream_code",
        "limiter_wait",
        "latency",
    }
    assert (
        fields["peer"] == "192.0.2.7" and fields["code"] == 250 and fields["upstream_code"] == 250
    )
    assert "app@example.com" not in str(fields)


async def test_handle_exception_is_451_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """handle_exception logs the traceback and answers the fixed 451 text."""
    handler = RelayHandler(sender=ScriptedSender())
    try:
        raise KeyError("internal detail")
    except KeyError as exc:
        error = exc
    with caplog.at_level(logging.ERROR):
        assert await handler.handle_exception(error) == INTERNAL_ERROR
    assert "KeyError" in caplog.text and "internal detail" not in INTERNAL_ERROR
