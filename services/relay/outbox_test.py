"""Unit tests for relay.outbox: atomic .eml files, envelope headers, limiter and disk failures."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from relay.outbox import WRITE_FAILED, OutboxSender
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
        (RateLimiterUnavailable("redis down"), 451, ReplyClass.LIMITER_UNAVAILABLE),
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


class DiskRecorder:
    """Wraps `os.fsync` and `os.replace`, logging each call (a file or a directory fsync) in
    `events`; with `fail`, the fsyncs (of `fail_kind` only, if given) raise it instead."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        *,
        fail: OSError | None = None,
        fail_kind: str | None = None,
    ) -> None:
        self.events: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append(f"fsync {kind}")
            if fail is not None and fail_kind in (None, kind):
                raise fail
            real_fsync(fd)

        def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
            self.events.append("rename")
            real_replace(source, target)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)


async def test_file_and_directory_are_fsynced_around_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable before the result: file fsync, then rename, then directory fsync."""
    recorder = DiskRecorder(monkeypatch)
    result = await OutboxSender(tmp_path).send(MESSAGE)
    recorder.events.append("result")
    assert result.all_accepted
    assert recorder.events == ["fsync file", "rename", "fsync dir", "result"]
    assert [p.suffix for p in tmp_path.iterdir()] == [".eml"]


@pytest.mark.parametrize("errno_code", [errno.EIO, errno.ENOSPC])
async def test_failed_fsync_defers_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_code: int
) -> None:
    """A failing fsync (EIO, ENOSPC) defers with 451 4.3.0 and leaves no file behind."""
    DiskRecorder(monkeypatch, fail=OSError(errno_code, os.strerror(errno_code)))
    result = await OutboxSender(tmp_path).send(MESSAGE)
    assert {(r.outcome, r.code, r.text) for r in result.recipients} == {
        (Outcome.DEFERRED, 451, WRITE_FAILED)
    }
    assert list(tmp_path.iterdir()) == []


async def test_failed_directory_fsync_removes_the_renamed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory fsync failing after the rename: deferred, and the .eml removed again (the
    client keeps and resends the message, so it is neither lost nor duplicated)."""
    recorder = DiskRecorder(monkeypatch, fail=OSError(errno.EIO, "I/O error"), fail_kind="dir")
    result = await OutboxSender(tmp_path).send(MESSAGE)
    assert recorder.events == ["fsync file", "rename", "fsync dir"]
    assert {(r.outcome, r.code) for r in result.recipients} == {(Outcome.DEFERRED, 451)}
    assert list(tmp_path.iterdir()) == []
