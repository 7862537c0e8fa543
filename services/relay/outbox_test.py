"""Unit tests for relay.outbox: atomic .eml files, envelope headers, limiter and disk failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.outbox import OutboxSender
from ses_core.errors import DailyQuotaExhausted, RateLimiterUnavailable, RateLimitTimeout
from ses_core.smtp import OutboundMessage, Outcome, ReplyClass

MESSAGE = OutboundMessage(
    sender="app@example.com",
    recipients=("a@example.org", "b@example.org"),
    data=b"Subject: hi\r\n\r\nbody\r\n",
)


class Limiter:
    """A limiter that records costs, or raises a given error."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.costs: list[tuple[int, float | None]] = []

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        self.costs.append((cost, max_wait))
        if self.error is not None:
            raise self.error
        return 0.25


async def test_writes_one_eml_with_envelope_headers(tmp_path: Path) -> None:
    """Each send writes one .eml with Return-Path and X-Original-To headers; no temp file left."""
    limiter = Limiter()
    sender = OutboxSender(tmp_path / "out", limiter=limiter, clock=lambda: 100.0)
    result = await sender.send(MESSAGE, deadline=110.0)
    assert result.all_accepted and result.limiter_wait == 0.25
    assert limiter.costs == [(2, 10.0)]  # one token per recipient, bounded by the deadline
    [eml] = (tmp_path / "out").iterdir()
    assert eml.suffix == ".eml"
    assert eml.read_bytes() == (
        b"Return-Path: <app@example.com>\r\nX-Original-To: a@example.org\r\n"
        b"X-Original-To: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    )
    await sender.probe()
    await sender.aclose()


@pytest.mark.parametrize(
    ("error", "code", "reply_class"),
    [
        (RateLimitTimeout("slow", 30.0), 451, ReplyClass.RATE_LIMITED),
        (RateLimiterUnavailable("redis down"), 451, ReplyClass.TRANSIENT),
        (DailyQuotaExhausted("quota"), 454, ReplyClass.DAILY_QUOTA),
    ],
)
async def test_limiter_refusals_defer(
    tmp_path: Path, error: BaseException, code: int, reply_class: ReplyClass
) -> None:
    """Limiter refusals defer every recipient (like the SMTP client) and write nothing."""
    sender = OutboxSender(tmp_path, limiter=Limiter(error))
    result = await sender.send(MESSAGE, deadline=None)
    assert {(r.outcome, r.code, r.reply_class) for r in result.recipients} == {
        (Outcome.DEFERRED, code, reply_class)
    }
    assert list(tmp_path.iterdir()) == []


async def test_disk_failure_defers_when_path_is_a_file(tmp_path: Path) -> None:
    """A write error (the outbox replaced by a file) defers every recipient with 451 4.3.0."""
    sender = OutboxSender(tmp_path / "out")
    (tmp_path / "out").rmdir()
    (tmp_path / "out").write_text("not a directory")
    result = await sender.send(MESSAGE)
    assert {(r.outcome, r.code) for r in result.recipients} == {(Outcome.DEFERRED, 451)}
    assert result.recipients[0].text.startswith("4.3.0")
    with pytest.raises(PermissionError):
        await sender.probe()
