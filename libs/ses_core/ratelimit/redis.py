"""One account-wide send rate shared by every relay replica, kept in Redis.

SES limits the whole account, so replicas share one budget: the GCRA state (the theoretical
arrival time, TAT) lives in Redis and is updated by a single Lua script that reads the server's
own clock (`TIME`), so replicas need no synchronised clocks and no update can interleave. The
script starts with `redis.replicate_commands()`, which makes reading `TIME` before a write safe
under replication on Redis < 5 (later versions replicate effects anyway).

How waiting works:
- Inside one process, requests queue locally in arrival order and only the head talks to Redis,
  so a process never overtakes its own earlier requests and sends Redis one request at a time.
- The head *reserves* its slot: the script advances the TAT and answers how long to wait for
  it, so replicas are served in the order their heads reached Redis (FIFO across processes, no
  polling, and a large message cannot be starved by other replicas' small ones). A `max_wait`
  that the slot would exceed makes the script take nothing.
- The GCRA rules and `burst` are those of `LocalRateLimiter` (both written in `_gcra`).
  Processes wake for their slots with some jitter (scheduling, network), so slots are spread by
  `jitter` seconds per second: what the processes actually send still puts at most
  ceil(rate) + burst recipients in any one-second window (see `slot_interval`).
- A head cancelled while waiting for its slot gives it back when nobody reserved after it (the
  TAT is still its own); otherwise the slot goes unused: nobody is delayed and the account is
  never over-sent. Queued requests behind the head hold nothing. (A head cancelled during the
  script's round trip cannot know its slot; that slot goes unused.)

When Redis cannot be reached the policy decides: `FailClosed` raises the retryable
`RateLimiterUnavailable` and tries Redis again at most once per `probe_interval`;
`DegradeToLocal` sends from an in-process limiter at a fraction of the rate (requests already
waiting there finish there) and probes Redis in the background until it answers. Each switch
logs one line (WARNING down, INFO back).

The limiter owns its Redis client: leave an `async with` block or call `aclose()` to close it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import redis.asyncio
import redis.exceptions

from ses_core.errors import RateLimiterUnavailable
from ses_core.ratelimit._gcra import (
    GCRA_SCRIPT,
    WAIT_EPSILON,
    WaiterQueue,
    slot_interval,
    timeout_error,
    validated_burst,
    validated_cost,
    validated_jitter,
    validated_max_wait,
    validated_rate,
)
from ses_core.ratelimit.local import Clock, LocalRateLimiter, Sleep

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

#: Errors that mean "Redis is not reachable right now" (not "the script is wrong").
_REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    OSError,
)


@attrs.frozen
class FailClosed:
    """When Redis is unreachable, raise `RateLimiterUnavailable` (retryable).

    Attributes:
        probe_interval: after a failure, requests fail at once without contacting Redis for this
            many seconds, so a dead Redis costs one connection attempt per interval.
    """

    probe_interval: float = 1.0


@attrs.frozen
class DegradeToLocal:
    """When Redis is unreachable, keep sending from an in-process limiter at a fraction of the rate.

    Attributes:
        fraction: share of the account rate this replica may use alone (e.g. 1 / replicas).
        probe_interval: seconds between background probes of Redis while degraded.
    """

    fraction: float = attrs.field(default=0.5)
    probe_interval: float = 5.0

    @fraction.validator
    def _require_fraction(self, _attribute: object, value: float) -> None:
        if not 0 < value <= 1:
            message = f"fraction must be in (0, 1], got {value!r}"
            raise ValueError(message)


UnavailablePolicy = FailClosed | DegradeToLocal


@attrs.frozen
class _Reply:
    taken: bool
    wait: float
    tat: str


class RedisRateLimiter:
    """GCRA limiter shared through Redis; see the module docstring for the rules.

    It owns `redis` (the client passed in or made by `from_url`) and closes it on `aclose()` or
    at the end of an `async with` block.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        key: str,
        rate: float,
        burst: int = 1,
        on_unavailable: UnavailablePolicy,
        jitter: float = 0.01,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._key = key
        self._rate = validated_rate(rate)
        self._capacity = validated_burst(burst) + 1
        self._jitter = validated_jitter(jitter)
        self._policy = on_unavailable
        self._clock = clock
        self._sleep = sleep
        self._script: AsyncScript = redis.register_script(GCRA_SCRIPT)
        self._queue = WaiterQueue()
        self._down_until = -float("inf")
        self._local: LocalRateLimiter | None = None
        if isinstance(on_unavailable, DegradeToLocal):
            self._local = LocalRateLimiter(
                rate * on_unavailable.fraction, burst, clock=clock, sleep=sleep
            )
        self._degraded = False
        self._closed_down = False
        self._probe: asyncio.Task[None] | None = None
        self._refunds: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key: str,
        rate: float,
        burst: int = 1,
        on_unavailable: UnavailablePolicy,
        timeout: float = 1.0,
        jitter: float = 0.01,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> RedisRateLimiter:
        """Connect to `url` (redis:// or rediss://) with short timeouts, so an outage is noticed."""
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return cls(
            client,
            key=key,
            rate=rate,
            burst=burst,
            on_unavailable=on_unavailable,
            jitter=jitter,
            clock=clock,
            sleep=sleep,
        )

    @property
    def rate(self) -> float:
        """The account-wide rate in recipients per second."""
        return self._rate

    @property
    def slot_interval(self) -> float:
        """Seconds between two single-recipient slots in the shared schedule.

        1/rate, stretched just enough that slots shifted by up to `jitter` seconds between
        processes still put at most ceil(rate) + burst sends in any one-second window (the
        default 10 ms costs 1% of the rate).
        """
        return slot_interval(self._rate, self._jitter)

    @property
    def degraded(self) -> bool:
        """True while requests are served by the local fallback limiter."""
        return self._degraded

    def set_rate(self, rate: float) -> None:
        """Change the rate used by this replica (and its local fallback)."""
        self._rate = validated_rate(rate)
        if self._local is not None and isinstance(self._policy, DegradeToLocal):
            self._local.set_rate(rate * self._policy.fraction)

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background probe, wait for slot give-backs in flight, close the client."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await asyncio.gather(*self._refunds, return_exceptions=True)
        await self._redis.aclose()

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        """Wait for `cost` recipients of account-wide capacity; return the seconds waited."""
        validated_cost(cost)
        validated_max_wait(max_wait)
        start = self._clock()
        if self._degraded:
            return await self._local_acquire(cost, max_wait, start)
        if max_wait is not None and self._queue:
            # Fail fast: estimate the wait behind this process's queue without taking anything.
            reply = await self._call(cost, "peek", ahead=self._unreserved_cost())
            if reply is None:
                return await self._local_acquire(cost, max_wait, start)
            if reply.wait > max_wait + WAIT_EPSILON:
                raise timeout_error(cost, reply.wait, max_wait)
        waiter = self._queue.join(cost)
        try:
            await waiter.turn.wait()
            if self._degraded:
                self._queue.leave(waiter)
                return await self._local_acquire(cost, max_wait, start)
            remaining = None if max_wait is None else max(0.0, start + max_wait - self._clock())
            reply = await self._call(cost, "reserve", max_wait=remaining)
            if reply is None:
                self._queue.leave(waiter)
                return await self._local_acquire(cost, max_wait, start)
            if not reply.taken:
                raise timeout_error(cost, self._clock() - start + reply.wait, max_wait or 0.0)
            waiter.reserved = True
            if reply.wait > 0:
                await self._wait_slot(cost, reply)
            return self._clock() - start
        finally:
            self._queue.leave(waiter)

    async def _wait_slot(self, cost: int, reply: _Reply) -> None:
        try:
            await self._sleep(reply.wait)
        except asyncio.CancelledError:
            self._refund(cost, reply.tat)
            raise

    def _refund(self, cost: int, tat: str) -> None:
        # The caller is being cancelled and must not wait for Redis: give the slot back in a
        # tracked background task whose failure is only logged (the slot then goes unused).
        task = asyncio.get_running_loop().create_task(self._send_refund(cost, tat))
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)

    async def _send_refund(self, cost: int, tat: str) -> None:
        try:
            await self._run_script(cost, "refund", refund_tat=tat)
        except _REDIS_DOWN_ERRORS as error:
            log.info("could not give back a cancelled rate-limit slot: %s", error)

    async def _local_acquire(self, cost: int, max_wait: float | None, start: float) -> float:
        assert self._local is not None
        remaining = None if max_wait is None else max(0.0, start + max_wait - self._clock())
        await self._local.acquire(cost, max_wait=remaining)
        return self._clock() - start

    def _unreserved_cost(self) -> int:
        # The head's reservation, if it has one, is already counted in Redis.
        head = self._queue.head
        return self._queue.cost - (head.cost if head.reserved else 0)

    async def _call(
        self, cost: int, mode: str, *, ahead: int = 0, max_wait: float | None = None
    ) -> _Reply | None:
        """Run the script; None means "degraded: use the local limiter"."""
        if self._clock() < self._down_until:
            self._raise_unavailable(None)
        try:
            result = await self._run_script(cost, mode, ahead=ahead, max_wait=max_wait)
        except _REDIS_DOWN_ERRORS as error:
            self._on_down(error)
            return None
        if self._closed_down:
            self._closed_down = False
            log.info("rate limiter store reachable again: requests are admitted again")
        return result

    async def _run_script(
        self,
        cost: int,
        mode: str,
        *,
        ahead: int = 0,
        max_wait: float | None = None,
        refund_tat: str = "",
    ) -> _Reply:
        interval_us = 1_000_000.0 * self.slot_interval
        args: list[Any] = [
            repr(interval_us),
            self._capacity,
            cost,
            repr(ahead * interval_us),
            -1 if max_wait is None else repr(max_wait * 1_000_000.0),
            mode,
            refund_tat,
        ]
        taken, wait_us, tat = await self._script(keys=[self._key], args=args)
        tat_text = tat.decode() if isinstance(tat, bytes) else str(tat)
        return _Reply(taken=bool(taken), wait=int(wait_us) / 1_000_000.0, tat=tat_text)

    def _on_down(self, error: BaseException) -> None:
        if not isinstance(self._policy, DegradeToLocal):
            self._down_until = self._clock() + self._policy.probe_interval
            if not self._closed_down:
                self._closed_down = True
                log.warning("rate limiter store unreachable (%s): failing closed", error)
            self._raise_unavailable(error)
        if not self._degraded:
            self._degraded = True
            log.warning(
                "rate limiter store unreachable (%s): degrading to a local limiter at %.3g/s",
                error,
                self._rate * self._policy.fraction,
            )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    def _raise_unavailable(self, error: BaseException | None) -> NoReturn:
        message = "rate limiter store (Redis) is unreachable"
        if error is not None:
            message = f"{message}: {error}"
        raise RateLimiterUnavailable(message) from error

    async def _probe_until_back(self) -> None:
        assert isinstance(self._policy, DegradeToLocal)
        while self._degraded:
            await self._sleep(self._policy.probe_interval)
            try:
                await self._redis.ping()
            except _REDIS_DOWN_ERRORS as error:
                log.debug("rate limiter store still unreachable: %s", error)
                continue
            self._degraded = False
            log.info("rate limiter store reachable again: back to the shared rate")
