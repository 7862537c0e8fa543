"""What the local and the Redis limiters share: the GCRA rules (in Python, and in Lua for the
Redis script), the FIFO waiter queue and the argument validators.

Internal to `ses_core.ratelimit`. Both limiters must admit exactly alike, so the rules live in
one module: a change to `gcra_slack` or `idle_start_debt` is made to `GCRA_SCRIPT` beside them.
"""

from __future__ import annotations

import asyncio
import collections
import math

import attrs

from ses_core.errors import RateLimitTimeout

#: Tolerance for float rounding when comparing computed wake-up times with the clock.
WAIT_EPSILON = 1e-9


def validated_rate(rate: float) -> float:
    """Return `rate` if it is a finite positive number, else raise ValueError."""
    if not (math.isfinite(rate) and rate > 0):
        message = f"rate must be a finite number above 0, got {rate!r}"
        raise ValueError(message)
    return rate


def validated_burst(burst: int) -> int:
    """Return `burst` if it is a non-negative integer, else raise ValueError."""
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        message = f"burst must be an integer >= 0, got {burst!r}"
        raise ValueError(message)
    return burst


def validated_cost(cost: int) -> int:
    """Return `cost` if it is a positive integer (a recipient count), else raise ValueError."""
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        message = f"cost must be an integer >= 1 (recipients), got {cost!r}"
        raise ValueError(message)
    return cost


def validated_jitter(jitter: float) -> float:
    """Return `jitter` if it is a number of seconds in [0, 1), else raise ValueError."""
    if not (math.isfinite(jitter) and 0 <= jitter < 1):
        message = f"jitter must be in [0, 1) seconds, got {jitter!r}"
        raise ValueError(message)
    return jitter


def slot_interval(rate: float, jitter: float) -> float:
    """Seconds between two single-recipient grants at `rate`: 1/rate, stretched just enough
    that sends shifted by up to `jitter` seconds (a process waking late, a message slower in
    transit than the next) still put at most ceil(rate) + burst recipients into any one-second
    window where they arrive. Jitter 0.01 costs 1% of an integer rate; a fractional rate's
    rounding up to ceil(rate) may already leave the room, and then it costs nothing."""
    return max(1.0 / rate, (1.0 + jitter) / math.ceil(rate))


def validated_max_wait(max_wait: float | None) -> float | None:
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

    Nothing when there is no slack to spend (burst 0), nor for a cost that fills the bucket on
    its own: such a message borrows from the following seconds anyway.
    """
    return interval if cost < capacity and capacity > 1 else 0.0


def timeout_error(cost: int, wait: float, max_wait: float) -> RateLimitTimeout:
    """Build the error for a request whose wait would exceed its `max_wait`."""
    message = f"sending {cost} recipient(s) would wait {wait:.3f} s, more than {max_wait:.3f} s"
    return RateLimitTimeout(message, wait_seconds=wait)


# The rules above as one atomic Redis script on the server's clock, in microseconds (used by
# `ses_core.ratelimit.redis`). KEYS[1]: the GCRA key. ARGV: interval_us, capacity, cost,
# ahead_us, max_wait_us (-1: none), mode ("reserve", "peek" or "refund"), refund_tat.
# reserve: take the next slot for `cost` unless the wait would exceed max_wait; answers
#          {taken (0/1), wait_us, tat_after} (wait counted from the server's now).
# peek:    answers the wait a request would have behind `ahead_us` of queued work; takes nothing.
# refund:  gives `cost` back if the TAT is still `refund_tat` (nobody reserved after it).
GCRA_SCRIPT = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local ahead = tonumber(ARGV[4])
local max_wait = tonumber(ARGV[5])
local mode = ARGV[6]
local stored = redis.call('GET', KEYS[1])
local tat = now
local idle = true
if stored then
  tat = tonumber(stored)
  if tat > now then idle = false else tat = now end
end
if mode == 'refund' then
  if stored and stored == ARGV[7] then
    local back = tat - cost * interval
    if back <= now then
      redis.call('DEL', KEYS[1])
    else
      local ttl = math.ceil((back - now) / 1000) + 1000
      redis.call('SET', KEYS[1], string.format('%.3f', back), 'PX', ttl)
    end
    return {1, 0, '0'}
  end
  return {0, 0, '0'}
end
local used = cost
if used > capacity then used = capacity end
local wait = tat + ahead - (capacity - used) * interval - now
if wait < 0 then wait = 0 end
if mode == 'peek' or (max_wait >= 0 and wait > max_wait) then
  return {0, math.ceil(wait), '0'}
end
local new_tat = tat + cost * interval
if idle and cost < capacity and capacity > 1 then
  -- as idle_start_debt: book the slack unit on the first grant after idle
  new_tat = new_tat + interval
end
local encoded = string.format('%.3f', new_tat)
redis.call('SET', KEYS[1], encoded, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.ceil(wait), encoded}
"""


@attrs.define(eq=False)
class Waiter:
    """One queued request.

    Attributes:
        cost: recipients it asks for.
        turn: set when it is at the head of the queue.
        reserved: (Redis limiter) its slot is already reserved in Redis.
    """

    cost: int
    turn: asyncio.Event = attrs.field(factory=asyncio.Event)
    reserved: bool = False


class WaiterQueue:
    """Requests in arrival order and the cost they hold: only the head may take capacity, and a
    waiter that leaves (granted, timed out or cancelled) wakes the next one at once, so a
    cancelled request takes nothing and delays no one."""

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
