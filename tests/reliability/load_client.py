"""A load client that behaves like a sending MTA, and the exactly-once check at the upstream.

Every message carries a unique Message-ID. Each worker keeps one plain SMTP session to the relay
(EHLO once, then MAIL/RCPT/DATA per message) and counts every reply by class. Like a real MTA it
keeps a message answered 4xx (or whose session broke) and retries it later, with a growing delay,
a bounded number of times; a 5xx is final. The client is a few dozen lines over asyncio streams
rather than aiosmtplib so that it can see every reply code, including an unsolicited `421` and a
connection lost after the final '.', and so that it costs little CPU next to the relay.

`tally_deliveries` compares what the client was told with what the recording upstream received:
a message answered 250 and never received is *lost*; a Message-ID received more than once is
*duplicated*.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import heapq
import logging
import time
from collections.abc import Iterable

import attrs

log = logging.getLogger(__name__)

_BODY = ("reliability load line, nothing to see here " * 2 + "\r\n") * 8


class ConnectionLost(ConnectionError):
    """The relay closed the session (or it broke) before answering."""


@attrs.frozen
class LoadPlan:
    """What to send and how patiently.

    Attributes:
        host/port: the relay.
        messages: messages to send, each with its own Message-ID.
        connections: concurrent SMTP sessions (workers).
        run_id: tag in every Message-ID, so that several runs never mix.
        recipients: distinct recipient addresses cycled through (None: one new address per message).
        retry_delay: first wait before retrying a deferred message (doubles each time).
        retry_delay_max: longest wait between retries of one message.
        max_attempts: attempts per message before giving up (a real MTA gives up after days).
        time_budget: seconds the whole run may take; what is unfinished then is given up.
        command_timeout: seconds to wait for any reply.
    """

    host: str
    port: int
    messages: int
    connections: int
    run_id: str
    recipients: int | None = 50
    retry_delay: float = 0.2
    retry_delay_max: float = 2.0
    max_attempts: int = 60
    time_budget: float = 120.0
    command_timeout: float = 60.0

    def message_id(self, number: int) -> str:
        """The Message-ID of message `number`."""
        return f"<{self.run_id}.{number}@load.example.com>"

    def recipient(self, number: int) -> str:
        """The recipient of message `number`."""
        index = number if self.recipients is None else number % self.recipients
        return f"rcpt{index}@load.example.org"

    def payload(self, number: int) -> bytes:
        """Message `number` as sent in DATA, dot-stuffed and ending with the final '.'."""
        text = (
            f"From: Load <load@sender.example.com>\r\nTo: {self.recipient(number)}\r\n"
            f"Subject: load {number}\r\nMessage-ID: {self.message_id(number)}\r\n\r\n{_BODY}"
        )
        return text.encode("ascii") + b".\r\n"


class Verdict(enum.Enum):
    """Where a message ended."""

    ACKED = "acked"  # answered 250 after DATA: the relay owns it now
    REFUSED = "refused"  # answered 5xx: final
    GAVE_UP = "gave_up"  # still deferred after max_attempts or the time budget
    PENDING = "pending"  # not finished yet


@attrs.define
class MessageState:
    """One message's history as the client saw it."""

    number: int
    attempts: int = 0
    verdict: Verdict = Verdict.PENDING
    last_reply: str = ""


@attrs.define
class LoadStats:
    """Counters of one run (replies counted per reply, not per message).

    Attributes:
        replies_2xx/replies_4xx/replies_5xx: replies by class, any command (4xx includes 421).
        connection_errors: connects refused and sessions that broke without a reply.
        ambiguous: sessions lost after the final '.' and before the DATA reply.
        codes: every reply code seen, with its count.
        started/finished: monotonic times of the run.
    """

    replies_2xx: int = 0
    replies_4xx: int = 0
    replies_5xx: int = 0
    connection_errors: int = 0
    ambiguous: int = 0
    codes: collections.Counter[int] = attrs.field(factory=collections.Counter)
    started: float = 0.0
    finished: float = 0.0

    def count(self, code: int) -> None:
        """Count one reply."""
        self.codes[code] += 1
        if 200 <= code < 400:
            self.replies_2xx += 1
        elif 400 <= code < 500:
            self.replies_4xx += 1
        else:
            self.replies_5xx += 1


@attrs.frozen
class LoadResult:
    """What a run achieved: per-message verdicts and the counters."""

    plan: LoadPlan
    states: tuple[MessageState, ...]
    stats: LoadStats

    def ids(self, verdict: Verdict) -> set[str]:
        """Message-IDs of the messages that ended with `verdict`."""
        return {self.plan.message_id(s.number) for s in self.states if s.verdict is verdict}

    def number(self, verdict: Verdict) -> int:
        """How many messages ended with `verdict`."""
        return sum(1 for s in self.states if s.verdict is verdict)

    @property
    def sent(self) -> int:
        """Messages the client had to send."""
        return len(self.states)

    @property
    def acked(self) -> int:
        """Messages answered 250."""
        return self.number(Verdict.ACKED)

    @property
    def seconds(self) -> float:
        """Wall time of the run."""
        return self.stats.finished - self.stats.started


@attrs.frozen
class DeliveryTally:
    """The exactly-once check at the recording upstream.

    Attributes:
        received: messages the upstream accepted with one of our Message-IDs.
        lost: messages answered 250 that the upstream never received.
        duplicated: Message-IDs the upstream received more than once.
        extra_copies: copies beyond the first, summed over duplicated Message-IDs.
        unacked_delivered: messages never answered 250 that still arrived (allowed: at least once).
        foreign: received Message-IDs this run never sent (must be 0).
    """

    received: int
    lost: int
    duplicated: int
    extra_copies: int
    unacked_delivered: int
    foreign: int


def tally_deliveries(result: LoadResult, received_ids: Iterable[str | None]) -> DeliveryTally:
    """Compare the client's verdicts with the Message-IDs the upstream received."""
    prefix = f"<{result.plan.run_id}."
    counts = collections.Counter(i for i in received_ids if i is not None and i.startswith(prefix))
    sent = {result.plan.message_id(s.number) for s in result.states}
    acked = result.ids(Verdict.ACKED)
    return DeliveryTally(
        received=sum(counts.values()),
        lost=len(acked - counts.keys()),
        duplicated=sum(1 for n in counts.values() if n > 1),
        extra_copies=sum(n - 1 for n in counts.values() if n > 1),
        unacked_delivered=len((counts.keys() & sent) - acked),
        foreign=len(counts.keys() - sent),
    )


class _Session:
    """One plain SMTP session to the relay."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> tuple[_Session, int]:
        """Connect and read the greeting; return the session and the greeting code."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        session = cls(reader, writer, timeout)
        return session, await session.reply()

    async def reply(self) -> int:
        """Read one (possibly multi-line) reply; return its code."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line.endswith(b"\n"):
                raise ConnectionLost("session closed before a complete reply")
            if len(line) < 4 or not line[:3].isdigit():
                message = f"malformed reply line {line[:80]!r}"
                raise ConnectionLost(message)
            if line[3:4] != b"-":
                return int(line[:3])

    async def command(self, line: bytes) -> int:
        """Send one command line; return the reply code."""
        self.writer.write(line)
        await self.writer.drain()
        return await self.reply()

    def close(self) -> None:
        """Close without QUIT (the session may be broken)."""
        self.writer.close()


class _Schedule:
    """Hands out message numbers: due retries first, then new messages."""

    def __init__(self, messages: int) -> None:
        self.fresh = collections.deque(range(messages))
        self.retries: list[tuple[float, int]] = []
        self.in_flight = 0
        self.stopped = False

    async def next(self, deadline: float) -> int | None:
        """The next number to send, waiting for a retry to fall due; None when done."""
        while time.monotonic() < deadline and not self.stopped:
            now = time.monotonic()
            if self.retries and self.retries[0][0] <= now:
                self.in_flight += 1
                return heapq.heappop(self.retries)[1]
            if self.fresh:
                self.in_flight += 1
                return self.fresh.popleft()
            if not self.retries and self.in_flight == 0:
                return None
            wait = self.retries[0][0] - now if self.retries else 0.05
            await asyncio.sleep(min(max(wait, 0.001), 0.05, deadline - now))
        return None

    def done(self) -> None:
        """The number handed out last by this worker is finished."""
        self.in_flight -= 1

    def retry(self, number: int, delay: float) -> None:
        """Send `number` again after `delay` seconds."""
        self.in_flight -= 1
        heapq.heappush(self.retries, (time.monotonic() + delay, number))


class LoadClient:
    """Runs a `LoadPlan` against the relay; `progress` counts messages acked so far."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.states = [MessageState(n) for n in range(plan.messages)]
        self.stats = LoadStats()
        self.progress = 0
        self._schedule = _Schedule(plan.messages)

    def stop(self) -> None:
        """Hand out no more messages (what is unfinished ends as given up)."""
        self._schedule.stopped = True

    async def run(self) -> LoadResult:
        """Send everything (with retries) and return the verdicts."""
        self.stats.started = time.monotonic()
        deadline = self.stats.started + self.plan.time_budget
        workers = [self._worker(deadline) for _ in range(self.plan.connections)]
        await asyncio.gather(*workers)
        self.stats.finished = time.monotonic()
        for state in self.states:
            if state.verdict is Verdict.PENDING:
                state.verdict = Verdict.GAVE_UP
        return LoadResult(self.plan, tuple(self.states), self.stats)

    async def _worker(self, deadline: float) -> None:
        session: _Session | None = None
        failures = 0
        try:
            while True:
                number = await self._schedule.next(deadline)
                if number is None:
                    return
                state = self.states[number]
                state.attempts += 1
                if session is None:
                    session = await self._connect(state)
                    if session is None:
                        failures += 1
                        self._defer(state)
                        # Back off the connection itself too, as an MTA does per destination.
                        await asyncio.sleep(min(0.05 * 2**failures, self.plan.retry_delay_max))
                        continue
                    failures = 0
                keep = await self._transaction(session, state)
                if not keep:
                    session.close()
                    session = None
        finally:
            if session is not None:
                session.close()

    async def _connect(self, state: MessageState) -> _Session | None:
        try:
            session, code = await _Session.open(
                self.plan.host, self.plan.port, self.plan.command_timeout
            )
        except (OSError, asyncio.TimeoutError, ConnectionLost) as exc:
            self.stats.connection_errors += 1
            state.last_reply = f"connect: {type(exc).__name__}"
            return None
        try:
            self.stats.count(code)
            if code == 220:
                code = await session.command(b"EHLO load.example.com\r\n")
                self.stats.count(code)
                if code == 250:
                    return session
        except (OSError, asyncio.TimeoutError, ConnectionLost) as exc:
            self.stats.connection_errors += 1
            state.last_reply = f"greeting: {type(exc).__name__}"
        else:
            state.last_reply = f"greeting/EHLO {code}"
        session.close()
        return None

    async def _transaction(self, session: _Session, state: MessageState) -> bool:
        """One MAIL/RCPT/DATA; return whether the session can be used again."""
        plan = self.plan
        steps = (
            (b"MAIL FROM:<load@sender.example.com>\r\n", 250),
            (f"RCPT TO:<{plan.recipient(state.number)}>\r\n".encode(), 250),
            (b"DATA\r\n", 354),
        )
        body_sent = False
        try:
            for line, wanted in steps:
                code = await session.command(line)
                self.stats.count(code)
                if code != wanted:
                    return await self._refused_before_data(session, state, line, code)
            session.writer.write(plan.payload(state.number))
            body_sent = True
            code = await session.command(b"")
        except (OSError, asyncio.TimeoutError, ConnectionLost) as exc:
            self.stats.connection_errors += 1
            if body_sent:
                self.stats.ambiguous += 1
            state.last_reply = f"lost: {type(exc).__name__}"
            self._defer(state)
            return False
        self.stats.count(code)
        state.last_reply = str(code)
        if code == 250:
            state.verdict = Verdict.ACKED
            self.progress += 1
            self._schedule.done()
        elif 500 <= code < 600:
            state.verdict = Verdict.REFUSED
            self._schedule.done()
        else:
            self._defer(state)
        return code != 421

    async def _refused_before_data(
        self, session: _Session, state: MessageState, line: bytes, code: int
    ) -> bool:
        state.last_reply = f"{line.split(b':')[0].decode()} {code}"
        if 500 <= code < 600:
            state.verdict = Verdict.REFUSED
            self._schedule.done()
        else:
            self._defer(state)
        if code == 421:
            return False
        try:
            reset = await session.command(b"RSET\r\n")
        except (OSError, asyncio.TimeoutError, ConnectionLost):
            self.stats.connection_errors += 1
            return False
        self.stats.count(reset)
        return reset == 250

    def _defer(self, state: MessageState) -> None:
        if state.attempts >= self.plan.max_attempts:
            state.verdict = Verdict.GAVE_UP
            self._schedule.done()
            return
        delay = min(self.plan.retry_delay * 2 ** (state.attempts - 1), self.plan.retry_delay_max)
        self._schedule.retry(state.number, delay)
