"""Send-rate limiting with SES semantics: a message costs one unit per recipient.

`RateLimiter` is the port every sender (the SMTP client, the relay) depends on; implementations
live beside it (in-process) and in `redis_rate_limit` (shared by every replica).

The in-process `LocalRateLimiter` runs GCRA (the generic cell rate algorithm, a token bucket kept
as one timestamp, the "theoretical arrival time" or TAT):

- `burst` is how many recipients may pass at once after an idle period (default 1: one, then
  one per interval). While traffic is continuous the bucket holds one recipient of slack beyond
  that, which absorbs the scheduler's wake-up lateness so a saturated limiter delivers its full
  rate. Any half-open one-second window therefore carries at most `ceil(rate) + burst` recipients
  of single-recipient traffic (`rate + 1` by default), and the first second after idle at most
  `ceil(rate) + burst - 1`: that spare recipient is the margin that keeps the count *measured at
  SES* within the limit + 1 when the first message of a burst is slower on the wire than the
  ones behind it (a fresh connection, a TLS handshake).
- A cost above the bucket size is admitted as soon as the bucket is full and then borrows from the
  following seconds, as SES does with multi-recipient messages, instead of blocking forever.
- Requests are served strictly in arrival order: a 50-recipient message is never overtaken (and so
  never starved) by single-recipient ones that arrive after it.
- Capacity is reserved at grant time, not at arrival: a waiter that is cancelled has taken nothing,
  and the waiters behind it move up at once.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from ses_core.errors import RateLimitTimeout

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

#: Tolerance for float rounding when comparing computed wake-up times with the clock.
WAIT_EPSILON = 1e-9


class RateLimiter(Protocol):
    """Admits sends at the account's rate, counting recipients, in arrival order."""

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        """Wait until `cost` recipients fit the rate; return the seconds waited.

        Raises `RateLimitTimeout` at once (taking nothing) when the wait would exceed `max_wait`,
        `RateLimiterUnavailable` when a shared store is down and the limiter fails closed, and
        `DailyQuotaExhausted` when the daily quota is known to be used up.
        """
        ...


class AdjustableRateLimiter(RateLimiter, Protocol):
    """A limiter whose rate can be changed while it runs (the SES-read "auto" rate uses it)."""

    @property
    def rate(self) -> float:
        """The current rate in recipients per second."""
        ...

    def set_rate(self, rate: float) -> None:
        """Change the rate; capacity already used keeps counting at its new cost in time."""
        ...


@attrs.frozen
class RateLimitSpec:
    """How the send rate is chosen: a fixed number of recipients per second, or read from SES.

    Attributes:
        rate: the fixed rate, or None for `auto`.
        fallback_rate: used by `auto` until SES answers (and when it never does).
    """

    rate: float | None
    fallback_rate: float = 1.0

    @property
    def auto(self) -> bool:
        """True when the rate is read from the SES account."""
        return self.rate is None

    @classmethod
    def parse(cls, text: str, *, fallback_rate: float = 1.0) -> RateLimitSpec:
        """Read `"14"`, `"0.5"` or `"auto"` (as in `SES_RATE_LIMIT`); raise ValueError otherwise."""
        cleaned = text.strip().lower()
        check_rate(fallback_rate)
        if cleaned == "auto":
            return cls(rate=None, fallback_rate=fallback_rate)
        try:
            rate = float(cleaned)
        except ValueError:
            message = f"rate limit must be a positive number or 'auto', got {text!r}"
            raise ValueError(message) from None
        check_rate(rate)
        return cls(rate=rate, fallback_rate=fallback_rate)

    @property
    def initial_rate(self) -> float:
        """The rate to start a limiter with."""
        return self.fallback_rate if self.rate is None else self.rate


def check_rate(rate: float) -> float:
    """Return `rate` if it is a finite positive number, else raise ValueError."""
    if not (math.isfinite(rate) and rate > 0):
        message = f"rate must be a finite number above 0, got {rate!r}"
        raise ValueError(message)
    return rate


def check_burst(burst: int) -> int:
    """Return `burst` if it is a non-negative integer, else raise ValueError."""
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        message = f"burst must be an integer >= 0, got {burst!r}"
        raise ValueError(message)
    return burst


def check_cost(cost: int) -> int:
    """Return `cost` if it is a positive integer (a recipient count), else raise ValueError."""
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        message = f"cost must be an integer >= 1 (recipients), got {cost!r}"
        raise ValueError(message)
    return cost


def check_max_wait(max_wait: float | None) -> float | None:
    """Return `max_wait` if it is None or a non-negative number, else raise ValueError."""
    if max_wait is not None and not (max_wait >= 0):
        message = f"max_wait must be >= 0 seconds, got {max_wait!r}"
        raise ValueError(message)
    return max_wait


def gcra_slack(cost: int, capacity: int, interval: float) -> float:
    """How far ahead of the TAT a request of `cost` may be admitted (0 for costs >= capacity)."""
    return (capacity - min(cost, capacity)) * interval


def idle_start_debt(cost: int, capacity: int, interval: float) -> float:
    """The slack unit an idle limiter books on its first grant.

    None when there is no slack to spend (burst 0), and none for a cost that fills the bucket on
    its own: such a message borrows from the following seconds anyway.
    """
    return interval if cost < capacity and capacity > 1 else 0.0


def timeout_error(cost: int, wait: float, max_wait: float) -> RateLimitTimeout:
    """Build the error for a request whose wait would exceed its `max_wait`."""
    message = f"sending {cost} recipient(s) would wait {wait:.3f} s, more than {max_wait:.3f} s"
    return RateLimitTimeout(message, wait_seconds=wait)


@attrs.define(eq=False)
class Waiter:
    """One queued request: its cost, the event that says it is at the head of the queue, and
    (Redis limiter) whether its tokens are already reserved in Redis."""

    cost: int
    turn: asyncio.Event = attrs.field(factory=asyncio.Event)
    reserved: bool = False


class WaiterQueue:
    """Requests in arrival order and the cost they hold, shared by both limiters: only the head
    may take tokens, and a waiter that leaves (granted, timed out or cancelled) wakes the next
    one at once, so a cancelled request takes nothing and delays no one."""

    def __init__(self) -> None:
        self._waiters: collections.deque[Waiter] = collections.deque()
        #: Recipients queued in total.
        self.cost = 0

    def __len__(self) -> int:
        return len(self._waiters)

    @property
    def head(self) -> Waiter:
        """The waiter whose turn it is (the queue must not be empty)."""
        return self._waiters[0]

    def join(self, cost: int) -> Waiter:
        """Queue a request of `cost`; it is woken at once if it is the only one."""
        waiter = Waiter(cost)
        self._waiters.append(waiter)
        self.cost += cost
        if len(self._waiters) == 1:
            waiter.turn.set()
        return waiter

    def leave(self, waiter: Waiter) -> None:
        """Remove `waiter` (again: a no-op) and wake the new head if it was the head."""
        was_head = bool(self._waiters) and self._waiters[0] is waiter
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self.cost -= waiter.cost
        if was_head and self._waiters:
            self._waiters[0].turn.set()


class LocalRateLimiter:
    """In-process GCRA limiter, FIFO and cancel-safe; see the module docstring for the rules."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / check_rate(rate)
        self._rate = rate
        self._capacity = check_burst(burst) + 1
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf
        self._queue = WaiterQueue()

    @property
    def rate(self) -> float:
        """The current rate in recipients per second."""
        return self._rate

    @property
    def burst(self) -> int:
        """Recipients allowed at once beyond the steady rate."""
        return self._capacity - 1

    @property
    def waiting(self) -> int:
        """How many requests are queued."""
        return len(self._queue)

    def set_rate(self, rate: float) -> None:
        """Change the rate; the outstanding debt (in recipients) is rescaled to the new rate."""
        new_interval = 1.0 / check_rate(rate)
        now = self._clock()
        if self._tat > now:
            self._tat = now + (self._tat - now) / self._interval * new_interval
        self._interval = new_interval
        self._rate = rate

    def projected_wait(self, cost: int) -> float:
        """Seconds a request of `cost` arriving now would wait behind the current queue."""
        return self._delay(check_cost(cost), self._clock(), ahead=self._queue.cost)

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        """Wait for `cost` recipients of capacity, in arrival order; return the seconds waited."""
        check_cost(cost)
        check_max_wait(max_wait)
        start = self._clock()
        wait = self._delay(cost, start, ahead=self._queue.cost)
        if max_wait is not None and wait > max_wait + WAIT_EPSILON:
            raise timeout_error(cost, wait, max_wait)
        if not self._queue and wait <= WAIT_EPSILON:
            self._grant(cost, start)
            return 0.0
        waiter = self._queue.join(cost)
        try:
            return await self._wait_turn(waiter, start, max_wait)
        finally:
            # Runs on grant, timeout and cancellation alike: the waiter leaves the queue having
            # taken nothing unless `_grant` ran, and the next one is woken at once.
            self._queue.leave(waiter)

    async def _wait_turn(self, waiter: Waiter, start: float, max_wait: float | None) -> float:
        await waiter.turn.wait()
        while True:
            now = self._clock()
            delay = self._delay(waiter.cost, now, ahead=0)
            if delay <= WAIT_EPSILON:
                self._grant(waiter.cost, now)
                return now - start
            if max_wait is not None and now - start + delay > max_wait + WAIT_EPSILON:
                # The rate dropped while we queued: fail now rather than overstay the deadline.
                raise timeout_error(waiter.cost, now - start + delay, max_wait)
            await self._sleep(delay)

    def _delay(self, cost: int, now: float, *, ahead: int) -> float:
        tat = max(self._tat, now) + ahead * self._interval
        return max(0.0, tat - gcra_slack(cost, self._capacity, self._interval) - now)

    def _grant(self, cost: int, now: float) -> None:
        if self._tat <= now:
            # Idle (no debt): start the schedule with the lateness slack already spent, so that
            # only `burst` recipients pass at once after idle (see the module docstring).
            self._tat = (
                now + cost * self._interval + idle_start_debt(cost, self._capacity, self._interval)
            )
            return
        self._tat += cost * self._interval
