"""Local mode's sender: each message becomes one `.eml` file in an outbox directory.

This is what runs on a developer machine with no AWS account: the relay behaves exactly as in
production (AUTH, blacklist, rate limit, logs, metrics) but `send` writes the message to disk.
Writes are atomic and durable before the `250` (a hidden temporary file, fsync, rename, then an
fsync of the directory), so a watcher never sees half a message and an acknowledged message
survives a power loss. The envelope is recorded the way local delivery agents do it: a
`Return-Path` header and one `X-Original-To` header per recipient are prepended to the message
(`Return-Path: <>` for the null sender of bounces, kept as it came).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ses_core.errors import DailyQuotaExhausted, RateLimiterUnavailable, RateLimitTimeout
from ses_core.ratelimit import RateLimiter
from ses_core.smtp import OutboundMessage, Outcome, RecipientResult, ReplyClass, SendResult

log = logging.getLogger(__name__)

#: The deferral text of a message the outbox could not make durable.
WRITE_FAILED = "4.3.0 Local outbox write failed"


class OutboxSender:
    """A `MessageSender` that writes `.eml` files into `directory` (created if missing)."""

    def __init__(
        self,
        directory: Path,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self._limiter = limiter
        self._clock = clock
        self._counter = itertools.count()
        self.directory.mkdir(parents=True, exist_ok=True)

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Write `message`; every recipient ACCEPTED, or DEFERRED (like the SMTP client: as
        RATE_LIMITED when the rate limiter has no capacity before `deadline`) when it cannot be
        written now."""
        waited = 0.0
        if self._limiter is not None:
            max_wait = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                waited = await self._limiter.acquire(len(message.recipients), max_wait=max_wait)
            except RateLimitTimeout as exc:
                text = (
                    "4.7.0 send rate limit: no capacity before the message deadline "
                    f"({exc.wait_seconds:.1f}s)"
                )
                return _all(message, 451, text, ReplyClass.RATE_LIMITED, attempts=0)
            except RateLimiterUnavailable:
                text = "4.3.0 send-rate limiter unavailable"
                return _all(message, 451, text, ReplyClass.LIMITER_UNAVAILABLE, attempts=0)
            except DailyQuotaExhausted:
                text = "4.7.0 daily sending quota exhausted"
                return _all(message, 454, text, ReplyClass.DAILY_QUOTA, attempts=0)
        try:
            path = await asyncio.to_thread(self._write, message)
        except OSError as exc:
            log.error("outbox write failed in %s: %s", self.directory, exc.strerror or exc)
            return _all(message, 451, WRITE_FAILED, ReplyClass.TRANSIENT, waited=waited)
        text = f"2.0.0 Ok {path.stem}"
        accepted = tuple(
            RecipientResult(rcpt, Outcome.ACCEPTED, 250, text, ReplyClass.SUCCESS)
            for rcpt in message.recipients
        )
        return SendResult(recipients=accepted, limiter_wait=waited)

    async def probe(self) -> None:
        """Raise `OSError` unless the outbox directory is writable (readiness)."""
        if not os.access(self.directory, os.W_OK | os.X_OK):
            message = f"outbox {self.directory} is not writable"
            raise PermissionError(message)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _write(self, message: OutboundMessage) -> Path:
        """Write `message` durably, before the client is told 250: the file's bytes are fsynced
        before the rename that gives it its final name, and the directory after it (the rename
        itself lives in the directory). A failure removes what was written, so the client's
        retry neither loses the message nor duplicates it."""
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{next(self._counter):06d}-{uuid.uuid4().hex[:12]}"
        final = self.directory / f"{name}.eml"
        temporary = self.directory / f".{name}.tmp"
        header = [f"Return-Path: <{message.sender}>\r\n"]
        header.extend(f"X-Original-To: {rcpt}\r\n" for rcpt in message.recipients)
        try:
            with open(temporary, "wb") as file:
                file.write("".join(header).encode("utf-8"))
                file.write(message.data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        try:
            _fsync_directory(self.directory)
        except OSError:
            final.unlink(missing_ok=True)
            raise
        return final


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _all(
    message: OutboundMessage,
    code: int,
    text: str,
    reply_class: ReplyClass,
    *,
    waited: float = 0.0,
    attempts: int = 1,
) -> SendResult:
    results = tuple(
        RecipientResult(rcpt, Outcome.DEFERRED, code, text, reply_class)
        for rcpt in message.recipients
    )
    return SendResult(recipients=results, limiter_wait=waited, attempts=attempts)
