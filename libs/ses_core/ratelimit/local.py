"""Send-rate limiting with SES semantics: a message costs one unit per recipient.

`RateLimiter` is the port every sender (the SMTP client, the relay) depends on; it is implemented
here in-process and in `ses_core.ratelimit.redis` (shared by every replica).

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
  following seconds, as SES does with multi-recipient messages (`docs/ses-facts.md`), instead of
  blocking forever.
- Requests are served strictly in arrival order: a 50-recipient message is never overtaken (and so
  never starved) by single-recipient ones that arrive after it.
- Capacity is reserved at grant time, not at arrival: a waiter that is cancelled has taken nothing,
  and the waiters behind it move up at once.
- `jitter` (seconds per second, default 0) spaces grants as the Redis limiter spaces its slots
  (`_gcra.slot_interval`): SES counts recipients where they arrive, and a message a few
  milliseconds slower in transit than the next would otherwise bunch one or two more into one
  of SES's seconds. Measured at the upstream, 500/s with burst 1: at most 503 in a second with
  none, 501 with 0.005 (the relay's setting), at 99.4% of the rate.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ses_core.ratelimit._gcra import (
    WAIT_EPSILON,
    Waiter,
    WaiterQueue,
    gcra_slack,
    idle_start_debt,
    slot_interval,
    timeout_error,
    validated_burst,
    validated_cost,
    validated_jitter,
    validated_max_wait,
    validated_rate,
)

#: Reads monotonic time in seconds (`time.monotonic`, or a test's virtual clock).
Clock = Callable[[], float]
#: Waits that many seconds (`asyncio.sleep`, or a test's virtual sleep).
Sleep = Callable[[float], Awaitable[object]]


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


class LocalRateLimiter:
    """In-process GCRA limiter, FIFO and cancel-safe; see the module docstring for the rules."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        jitter: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._jitter = validated_jitter(jitter)
        self._interval = slot_interval(validated_rate(rate), self._jitter)
        self._rate = rate
        self._capacity = validated_burst(burst) + 1
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf
        self._queue = WaiterQueue()

    @property
    def rate(self) -> float:
        """The current rate in recipients per second."""
        return self._rate

    @property
    def slot_interval(self) -> float:
        """Seconds between two single-recipient grants (1/rate, stretched by `jitter`)."""
        return self._interval

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
        new_interval = slot_interval(validated_rate(rate), self._jitter)
        now = self._clock()
        if self._tat > now:
            self._tat = now + (self._tat - now) / self._interval * new_interval
        self._interval = new_interval
        self._rate = rate

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        """Wait for `cost` recipients of capacity, in arrival order; return the seconds waited."""
        validated_cost(cost)
        validated_max_wait(max_wait)
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
