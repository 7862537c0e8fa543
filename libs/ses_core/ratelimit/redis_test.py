"""Tests for the Redis-shared limiter, against a real throw-away redis-server on 127.0.0.1.

The server's clock is real, but the limiter's sleep (and its clock for probing) is virtual in
most tests, so waits are skipped rather than slept.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

import pytest
import redis.asyncio

from ses_core.errors import RateLimiterUnavailable, RateLimitTimeout
from ses_core.ratelimit import RateLimiter
from ses_core.ratelimit.redis import DegradeToLocal, FailClosed, RedisRateLimiter
from ses_core.testing.clock import VirtualClock
from ses_core.testing.ports import free_port
from ses_core.testing.redis_server import RedisServer

KEY = "test:rate"
T = TypeVar("T")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
async def clock(server: RedisServer) -> AsyncIterator[VirtualClock]:
    server.start()  # a previous test may have killed it
    client = redis.asyncio.Redis.from_url(server.url)
    await client.flushall()
    await client.aclose()
    yield VirtualClock()
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


def make(
    server: RedisServer,
    clock: VirtualClock,
    *,
    rate: float = 10.0,
    burst: int = 1,
    policy: FailClosed | DegradeToLocal | None = None,
    url: str | None = None,
) -> RedisRateLimiter:
    return RedisRateLimiter.from_url(
        url or server.url,
        key=KEY,
        rate=rate,
        burst=burst,
        on_unavailable=policy or FailClosed(),
        timeout=0.5,
        clock=clock,
        sleep=clock.sleep,
    )


async def drive(clock: VirtualClock, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, moving virtual time on to the next sleeper's deadline (at most 1 s at a
    time) while the awaitable waits; bounded in real time."""
    task = asyncio.ensure_future(awaitable)
    deadline = time.monotonic() + 10.0
    while not task.done():
        assert time.monotonic() < deadline, "drive: gave up after 10 real seconds"
        await asyncio.wait({task}, timeout=0.002)
        if not task.done():
            await clock.advance_to_next()
    return task.result()


async def stored_tat(server: RedisServer) -> bytes | None:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        value = await client.get(KEY)
        return value if isinstance(value, bytes) else None
    finally:
        await client.aclose()


async def connection_named(server: RedisServer, name: str, *, present: bool) -> bool:
    """Whether a client connection called `name` is (or is not, per `present`) open on the
    server within a second: a closed socket takes the server a moment to notice."""
    observer = redis.asyncio.Redis.from_url(server.url)
    try:
        for _ in range(100):
            names = {entry["name"] for entry in await observer.client_list()}
            if (name in names) is present:
                return True
            await asyncio.sleep(0.01)
        return False
    finally:
        await observer.aclose()


def test_settings_are_validated() -> None:
    """Bad rate, burst, jitter or degrade fraction are configuration errors."""
    client = redis.asyncio.Redis()
    with pytest.raises(ValueError):
        RedisRateLimiter(client, key=KEY, rate=0, on_unavailable=FailClosed())
    with pytest.raises(ValueError):
        RedisRateLimiter(client, key=KEY, rate=1, burst=-1, on_unavailable=FailClosed())
    with pytest.raises(ValueError):
        RedisRateLimiter(client, key=KEY, rate=1, jitter=1.5, on_unavailable=FailClosed())
    with pytest.raises(ValueError):
        DegradeToLocal(fraction=0)


def test_slot_interval_is_stretched_by_the_jitter_allowance() -> None:
    """Slots are 1/rate apart, stretched by the jitter allowance (1% by default, none with 0)."""
    client = redis.asyncio.Redis()
    limiter = RedisRateLimiter(client, key=KEY, rate=500, on_unavailable=FailClosed())
    assert limiter.slot_interval == pytest.approx(1.01 / 500)
    limiter.set_rate(10)
    assert limiter.rate == 10
    assert limiter.slot_interval == pytest.approx(0.101)
    limiter.set_rate(7.5)  # ceil(7.5) + 1 fits without stretching
    assert limiter.slot_interval == pytest.approx(1 / 7.5)
    exact = RedisRateLimiter(client, key=KEY, rate=10, jitter=0, on_unavailable=FailClosed())
    assert exact.slot_interval == pytest.approx(0.1)


async def test_admits_at_once_when_idle(server: RedisServer, clock: VirtualClock) -> None:
    """An idle shared limiter admits the first request without waiting."""
    limiter = make(server, clock)
    port: RateLimiter = limiter
    assert await drive(clock, port.acquire(1)) == 0.0
    await limiter.aclose()


async def test_async_with_closes_the_connection_from_url_opened(
    server: RedisServer, clock: VirtualClock
) -> None:
    """Leaving an `async with` block, normally or by an exception, closes the limiter's Redis
    connection."""
    url = f"{server.url}?client_name=limiter-from-url"
    async with make(server, clock, url=url) as limiter:
        assert await drive(clock, limiter.acquire(1)) == 0.0
        assert await connection_named(server, "limiter-from-url", present=True)
    assert await connection_named(server, "limiter-from-url", present=False)
    with pytest.raises(RuntimeError):
        async with make(server, clock, url=url) as limiter:
            await drive(clock, limiter.acquire(1))
            assert await connection_named(server, "limiter-from-url", present=True)
            raise RuntimeError("the caller failed")
    assert await connection_named(server, "limiter-from-url", present=False)


async def test_async_with_closes_a_client_passed_in(
    server: RedisServer, clock: VirtualClock
) -> None:
    """The limiter owns the client it is given: leaving the block closes that client too."""
    client = redis.asyncio.Redis.from_url(f"{server.url}?client_name=given-client")
    async with RedisRateLimiter(
        client, key=KEY, rate=10.0, on_unavailable=FailClosed(), clock=clock, sleep=clock.sleep
    ) as limiter:
        await drive(clock, limiter.acquire(1))
        assert await connection_named(server, "given-client", present=True)
    assert await connection_named(server, "given-client", present=False)


async def test_async_with_stops_the_degraded_probe(
    server: RedisServer, clock: VirtualClock
) -> None:
    """Leaving the block while degraded cancels the background probe of Redis."""
    async with make(server, clock, policy=DegradeToLocal(probe_interval=5)) as limiter:
        server.kill()
        await drive(clock, limiter.acquire(1))
        assert limiter.degraded
        assert clock.sleeping == 1  # the probe, waiting for its next attempt
    assert clock.sleeping == 0


async def test_waits_follow_the_rate(server: RedisServer, clock: VirtualClock) -> None:
    """After the burst (one recipient after idle, by default), back-to-back single sends are
    given slots one interval apart."""
    limiter = make(server, clock, rate=10.0)
    assert await drive(clock, limiter.acquire(1)) == 0.0
    await drive(clock, limiter.acquire(1))
    assert clock.sleeps and 0.05 < clock.sleeps[-1] <= 0.101
    await drive(clock, limiter.acquire(1))
    assert 0.15 < clock.sleeps[-1] <= 0.202
    await limiter.aclose()


async def test_only_burst_recipients_pass_at_once_after_idle(
    server: RedisServer, clock: VirtualClock
) -> None:
    """As the local limiter: the first grant after idle books the slack unit, so exactly
    `burst` single sends pass without waiting and the next one waits an interval."""
    limiter = make(server, clock, rate=10.0, burst=2)
    assert await drive(clock, limiter.acquire(1)) == 0.0
    assert await drive(clock, limiter.acquire(1)) == 0.0
    assert not clock.sleeps
    await drive(clock, limiter.acquire(1))
    assert 0.05 < clock.sleeps[-1] <= 0.101
    await limiter.aclose()


async def test_two_limiters_share_one_budget(server: RedisServer, clock: VirtualClock) -> None:
    """A second replica's request waits behind the first replica's reservations."""
    first = make(server, clock, rate=10.0)
    second = make(server, clock, rate=10.0)
    for _ in range(5):
        await drive(clock, first.acquire(1))
    await drive(clock, second.acquire(1))
    # Five reserved from idle (the first also booked the slack unit): 6 - 1 (burst) slot
    # intervals of 0.101 s (10/s with the 1% jitter allowance).
    assert 0.45 < clock.sleeps[-1] <= 5 * 0.101, clock.sleeps
    await first.aclose()
    await second.aclose()


async def test_cost_above_burst_is_admitted_and_borrows(
    server: RedisServer, clock: VirtualClock
) -> None:
    """A 50-recipient message passes at once when idle; the next send waits for its cost."""
    limiter = make(server, clock, rate=100.0)
    assert await drive(clock, limiter.acquire(50)) == 0.0
    await drive(clock, limiter.acquire(1))
    assert 0.45 < clock.sleeps[-1] <= 0.5
    await limiter.aclose()


async def test_requests_in_one_process_are_served_in_arrival_order(
    server: RedisServer, clock: VirtualClock
) -> None:
    """Within a process a big message is not overtaken by single ones that came after it."""
    limiter = make(server, clock, rate=100.0)
    order: list[str] = []

    async def take(cost: int, name: str) -> None:
        await limiter.acquire(cost)
        order.append(name)

    names = ["a", "b", "big", "c", "d"]
    costs = [1, 1, 30, 1, 1]
    tasks = [asyncio.create_task(take(cost, name)) for cost, name in zip(costs, names, strict=True)]
    for _ in range(20):
        await clock.advance(1.0)
        if all(task.done() for task in tasks):
            break
    assert order == names
    await limiter.aclose()


async def test_max_wait_fails_fast_and_takes_nothing(
    server: RedisServer, clock: VirtualClock
) -> None:
    """When the slot is further than max_wait, the script reserves nothing and we raise."""
    limiter = make(server, clock, rate=10.0)
    for _ in range(4):
        await drive(clock, limiter.acquire(1))
    before = await stored_tat(server)
    with pytest.raises(RateLimitTimeout) as caught:
        await drive(clock, limiter.acquire(1, max_wait=0.1))
    assert caught.value.wait_seconds > 0.2
    assert await stored_tat(server) == before
    await limiter.aclose()


async def test_max_wait_behind_a_local_queue_fails_fast(
    server: RedisServer, clock: VirtualClock
) -> None:
    """With requests queued in this process, the estimate counts them and nothing is taken."""
    limiter = make(server, clock, rate=10.0)
    await drive(clock, limiter.acquire(1))
    head = asyncio.create_task(limiter.acquire(1))
    queued = asyncio.create_task(limiter.acquire(20))
    await clock.settle()
    before = await stored_tat(server)
    with pytest.raises(RateLimitTimeout):
        await drive(clock, limiter.acquire(1, max_wait=1.0))
    assert await stored_tat(server) == before
    await clock.advance(5.0)
    await asyncio.gather(head, queued)
    await limiter.aclose()


async def test_max_wait_estimate_behind_a_reserved_head_is_exact(
    server: RedisServer, clock: VirtualClock
) -> None:
    """A head that already holds its slot is not counted twice: a max_wait that covers the
    real wait is accepted."""
    limiter = make(server, clock, rate=10.0)
    for _ in range(3):
        await drive(clock, limiter.acquire(1))
    head = asyncio.create_task(limiter.acquire(5))
    for _ in range(100):
        if clock.sleeping:
            break
        await asyncio.sleep(0.01)
    # Redis holds 3 + 5 recipients from now, plus the slack unit the first grant after idle
    # booked: a single one fits after 9 - 1 (burst) intervals.
    with pytest.raises(RateLimitTimeout):
        await limiter.acquire(1, max_wait=8 * 0.101 - 0.05)
    accepted = asyncio.create_task(limiter.acquire(1, max_wait=8 * 0.101 + 0.01))
    await clock.settle()
    await asyncio.sleep(0.05)
    assert not accepted.done()  # passed the up-front check and queued behind the head
    head.cancel()
    accepted.cancel()
    await asyncio.gather(head, accepted, return_exceptions=True)
    await limiter.aclose()


async def test_cancelled_head_gives_its_slot_back(server: RedisServer, clock: VirtualClock) -> None:
    """A waiter cancelled during its wait returns the slot, so the next one is not delayed."""
    limiter = make(server, clock, rate=2.0)
    await drive(clock, limiter.acquire(1))
    await drive(clock, limiter.acquire(1))
    after_first = await stored_tat(server)
    waiter = asyncio.create_task(limiter.acquire(1))
    await clock.settle()
    assert clock.sleeping == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    for _ in range(50):
        if await stored_tat(server) == after_first:
            break
        await asyncio.sleep(0.01)
    assert await stored_tat(server) == after_first
    await drive(clock, limiter.acquire(1))
    # Two granted from idle (with the slack unit) put the next slot 2 slot intervals (0.505 s at
    # 2/s with the 1% jitter allowance) away, not the 3 it would be had the cancelled waiter
    # kept its slot.
    assert clock.sleeps[-1] <= 2 * 0.505
    await limiter.aclose()


async def test_cancelled_queued_waiter_takes_nothing(
    server: RedisServer, clock: VirtualClock
) -> None:
    """A waiter cancelled while queued behind the head never reserved anything."""
    limiter = make(server, clock, rate=10.0)
    await drive(clock, limiter.acquire(1))
    await drive(clock, limiter.acquire(1))
    head = asyncio.create_task(limiter.acquire(1))
    queued = asyncio.create_task(limiter.acquire(30))
    await clock.settle()
    with_head = await stored_tat(server)
    queued.cancel()
    await clock.advance(1.0)
    await head
    assert queued.cancelled()
    assert await stored_tat(server) == with_head
    await limiter.aclose()


async def test_fail_closed_raises_then_recovers(
    server: RedisServer, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down: retryable RateLimiterUnavailable (one WARNING, no retry storm); back up:
    requests pass again (one INFO)."""
    caplog.set_level(logging.INFO, logger="ses_core.ratelimit.redis")
    limiter = make(server, clock, policy=FailClosed(probe_interval=2.0))
    await drive(clock, limiter.acquire(1))
    server.kill()
    with pytest.raises(RateLimiterUnavailable):
        await drive(clock, limiter.acquire(1))
    server.start()
    with pytest.raises(RateLimiterUnavailable):
        await drive(clock, limiter.acquire(1))  # still inside the probe interval: no attempt made
    clock.now += 2.5
    await drive(clock, limiter.acquire(1))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(warnings) == 1 and len(infos) == 1
    await limiter.aclose()


async def test_fail_closed_when_redis_was_never_there(clock: VirtualClock) -> None:
    """Nothing listening on the port: callers get RateLimiterUnavailable, not a hang."""
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        key=KEY,
        rate=5,
        on_unavailable=FailClosed(),
        timeout=0.5,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(RateLimiterUnavailable):
        await drive(clock, limiter.acquire(1))
    await limiter.aclose()


async def test_degrade_switches_to_local_and_back(
    server: RedisServer, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down: sends continue at the local fraction with one WARNING; once a probe finds
    Redis again, the shared rate is used (one INFO)."""
    caplog.set_level(logging.INFO, logger="ses_core.ratelimit.redis")
    limiter = make(server, clock, rate=10.0, policy=DegradeToLocal(fraction=0.5, probe_interval=3))
    await drive(clock, limiter.acquire(1))
    server.kill()
    await drive(clock, limiter.acquire(1))
    assert limiter.degraded  # that send went through the idle local fallback at once
    third = asyncio.create_task(limiter.acquire(1))
    await clock.advance(0.1)
    assert not third.done()  # the local fallback runs at 5/s, burst 1: 0.2 s apart
    await clock.advance(0.1)
    assert third.done()
    server.start()
    await clock.advance(3.0)
    for _ in range(100):
        if not limiter.degraded:
            break
        await asyncio.sleep(0.01)
    assert not limiter.degraded
    client = redis.asyncio.Redis.from_url(server.url)
    await client.flushall()
    await drive(clock, limiter.acquire(1))
    assert await client.get(KEY) is not None
    await client.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if "back to the shared rate" in r.getMessage()]
    assert len(warnings) == 1 and len(infos) == 1
    await limiter.aclose()


async def test_degraded_probe_is_bounded(
    server: RedisServer, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis stays down, one background probe runs per probe interval, no more."""
    limiter = make(server, clock, rate=10.0, policy=DegradeToLocal(probe_interval=5))
    server.kill()
    await drive(clock, limiter.acquire(1))
    await drive(clock, limiter.acquire(1))
    sleeps_before = clock.sleeps.count(5)
    assert sleeps_before == 1
    await clock.advance(5.0)
    for _ in range(100):
        if clock.sleeps.count(5) == 2:
            break
        await asyncio.sleep(0.01)
    assert clock.sleeps.count(5) == 2
    assert limiter.degraded
    await limiter.aclose()


def _warm(delay: float) -> int:
    time.sleep(delay)  # keeps this worker busy so the pool starts the next one
    return os.getpid()


def _process_worker(url: str, rate: float, seconds: float, start: float) -> list[float]:
    async def run() -> list[float]:
        limiter = RedisRateLimiter.from_url(url, key=KEY, rate=rate, on_unavailable=FailClosed())
        grants: list[float] = []

        async def take() -> None:
            await limiter.acquire(1)
            grants.append(time.monotonic())

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        tasks = [asyncio.create_task(take()) for _ in range(int(rate * seconds))]
        await asyncio.wait(tasks, timeout=seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await limiter.aclose()
        return [t for t in grants if t < start + seconds]

    return asyncio.run(run())


def test_several_processes_share_one_account_rate(server: RedisServer) -> None:
    """Three OS processes, each offering the full rate, together stay within rate + 1 in every
    sliding second and still use the rate."""
    server.start()
    rate, seconds = 10.0, 3.0
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=context) as pool:
        assert len(set(pool.map(_warm, [0.3] * 3))) == 3
        start = time.monotonic() + 0.5
        futures = [pool.submit(_process_worker, server.url, rate, seconds, start) for _ in range(3)]
        per_process = [future.result(timeout=30) for future in futures]
    times = sorted(t for grants in per_process for t in grants)
    assert all(per_process), "every process got some grants"
    worst = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert worst <= rate + 1
    assert len(times) >= 0.9 * rate * seconds


async def test_cancel_after_a_later_reservation_leaves_the_others_alone(
    server: RedisServer, clock: VirtualClock
) -> None:
    """If another replica reserved after the cancelled waiter, its slot is not given back (that
    would overlap) and the other replica keeps the slot it was promised."""
    mine = make(server, clock, rate=2.0)
    other = make(server, clock, rate=2.0)
    await drive(clock, mine.acquire(1))
    await drive(clock, mine.acquire(1))
    waiter = asyncio.create_task(mine.acquire(1))
    await clock.settle()
    later = asyncio.create_task(other.acquire(1))
    await clock.settle()
    for _ in range(100):
        if clock.sleeping == 2:
            break
        await asyncio.sleep(0.01)
    with_both = await stored_tat(server)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await mine.aclose()  # waits for the give-back attempt to finish
    assert await stored_tat(server) == with_both
    # Its promised slot: 3 slot intervals (0.505 s at 2/s) after two grants from idle (with the
    # slack unit) and mine's waiter.
    assert 1.4 < clock.sleeps[-1] <= 3 * 0.505
    await drive(clock, later)
    await other.aclose()


async def test_fail_closed_fails_every_queued_waiter_fast(
    server: RedisServer, clock: VirtualClock
) -> None:
    """When Redis dies, requests queued in this process all get RateLimiterUnavailable."""
    limiter = make(server, clock, rate=1.0, policy=FailClosed(probe_interval=10))
    await drive(clock, limiter.acquire(1))
    server.kill()
    tasks = [asyncio.create_task(limiter.acquire(1)) for _ in range(5)]
    done, _ = await asyncio.wait(tasks, timeout=10)
    assert len(done) == 5
    for task in tasks:
        assert isinstance(task.exception(), RateLimiterUnavailable)
    await limiter.aclose()
