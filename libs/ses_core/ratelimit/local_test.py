"""Tests for the in-process GCRA limiter (virtual time: nothing here really waits)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator

import pytest

from ses_core.errors import RateLimitTimeout
from ses_core.ratelimit import LocalRateLimiter, RateLimiter
from ses_core.testing.clock import VirtualClock


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    yield VirtualClock()
    # Cancel what a test left waiting, so no task outlives its event loop.
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


def make(clock: VirtualClock, rate: float = 10.0, burst: int = 1) -> LocalRateLimiter:
    return LocalRateLimiter(rate, burst, clock=clock, sleep=clock.sleep)


def start(
    limiter: RateLimiter,
    clock: VirtualClock,
    cost: int,
    name: str,
    grants: list[tuple[str, float]],
    max_wait: float | None = None,
) -> asyncio.Task[float]:
    async def run() -> float:
        waited = await limiter.acquire(cost, max_wait=max_wait)
        grants.append((name, clock.now))
        return waited

    return asyncio.get_running_loop().create_task(run())


async def projected_wait(limiter: RateLimiter, cost: int) -> float:
    """The wait a request of `cost` arriving now would have, read from the `RateLimitTimeout` of
    a `max_wait=0` request (which takes nothing). Only for waits above zero."""
    with pytest.raises(RateLimitTimeout) as caught:
        await limiter.acquire(cost, max_wait=0.0)
    return caught.value.wait_seconds


def max_in_window(times: list[float], window: float = 1.0) -> int:
    ordered = sorted(times)
    return max(
        sum(1 for other in ordered if start <= other < start + window - 1e-9) for start in ordered
    )


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("nan"), 1), (1, -1), (1, 1.5)])
def test_constructor_refuses_bad_settings(clock: VirtualClock, rate: float, burst: int) -> None:
    """A non-positive rate or a negative/non-integer burst is a configuration error."""
    with pytest.raises(ValueError):
        LocalRateLimiter(rate, burst, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize("cost", [0, -1, True, 1.5])
async def test_acquire_refuses_bad_costs(clock: VirtualClock, cost: int) -> None:
    """A cost is a recipient count: a positive integer."""
    with pytest.raises(ValueError):
        await make(clock).acquire(cost)


async def test_acquire_refuses_negative_max_wait(clock: VirtualClock) -> None:
    """A negative max_wait is a caller bug, not a timeout."""
    with pytest.raises(ValueError):
        await make(clock).acquire(1, max_wait=-1)


async def test_idle_limiter_admits_burst_then_spaces_by_the_interval(
    clock: VirtualClock,
) -> None:
    """After idle, `burst` single sends pass at once; the rest follow at exactly 1/rate."""
    limiter = make(clock, rate=10.0, burst=1)
    grants: list[tuple[str, float]] = []
    tasks = [start(limiter, clock, 1, str(i), grants) for i in range(25)]
    await clock.advance(5.0)
    assert all(task.done() for task in tasks)
    offsets = [round(at - 1000.0, 6) for _, at in grants]
    assert offsets[:3] == [0.0, 0.1, 0.2]
    assert offsets[-1] == pytest.approx(2.4)
    assert [name for name, _ in grants] == [str(i) for i in range(25)]
    # The first second after idle leaves one recipient of margin below the limit + 1.
    assert max_in_window([at for _, at in grants]) == 10


async def test_larger_burst_passes_at_once_after_idle(clock: VirtualClock) -> None:
    """With burst=3, three single sends pass at once after idle, then one per interval."""
    limiter = make(clock, rate=10.0, burst=3)
    grants: list[tuple[str, float]] = []
    tasks = [start(limiter, clock, 1, str(i), grants) for i in range(6)]
    await clock.advance(2.0)
    assert all(task.done() for task in tasks)
    offsets = [round(at - 1000.0, 6) for _, at in grants]
    assert offsets == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]


async def test_first_acquire_returns_zero_wait(clock: VirtualClock) -> None:
    """An idle limiter admits at once and reports no wait."""
    assert await make(clock).acquire(1) == 0.0


async def test_acquire_reports_the_seconds_waited(clock: VirtualClock) -> None:
    """The returned wait is the time between the call and the grant."""
    limiter = make(clock, rate=4.0, burst=0)
    await limiter.acquire(1)
    task = asyncio.get_running_loop().create_task(limiter.acquire(1))
    await clock.advance(1.0)
    assert task.result() == pytest.approx(0.25)


@pytest.mark.parametrize(("rate", "burst"), [(10.0, 0), (10.0, 1), (50.0, 1), (7.5, 3)])
async def test_sliding_windows_never_exceed_rate_plus_burst(
    clock: VirtualClock, rate: float, burst: int
) -> None:
    """Saturated single-recipient traffic from idle never puts more than ceil(rate)+burst in any
    1 s window; in fact one fewer, the margin kept for wire jitter after idle."""
    limiter = make(clock, rate=rate, burst=burst)
    grants: list[tuple[str, float]] = []
    for i in range(int(rate * 3)):
        start(limiter, clock, 1, str(i), grants)
    await clock.advance(10.0)
    most = max_in_window([at for _, at in grants])
    assert most <= math.ceil(rate) + burst
    assert most == math.ceil(rate) + max(burst - 1, 0)


@pytest.mark.parametrize(("rate", "interval"), [(100.0, 1.01 / 100), (14.5, 1 / 14.5)])
async def test_jitter_spaces_grants_as_the_redis_limiter_spaces_slots(
    clock: VirtualClock, rate: float, interval: float
) -> None:
    """`jitter` stretches the interval just enough (as `RedisRateLimiter.slot_interval`) that
    sends arriving up to `jitter` seconds late still fit ceil(rate) + burst a second; a
    fractional rate whose rounding up leaves that room already is not slowed. `rate` reports
    the configured rate, and a new rate is stretched alike."""
    limiter = LocalRateLimiter(rate, 0, jitter=0.01, clock=clock, sleep=clock.sleep)
    assert (limiter.rate, limiter.slot_interval) == (rate, pytest.approx(interval))
    grants: list[tuple[str, float]] = []
    for i in range(5):
        start(limiter, clock, 1, str(i), grants)
    await clock.advance(2.0)
    offsets = [at - 1000.0 for _, at in grants]
    assert offsets == pytest.approx([i * interval for i in range(5)])
    limiter.set_rate(50.0)
    assert limiter.slot_interval == pytest.approx(1.01 / 50)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, float("nan")])
def test_jitter_outside_0_to_1_second_is_refused(clock: VirtualClock, jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        LocalRateLimiter(10.0, 1, jitter=jitter, clock=clock, sleep=clock.sleep)


async def test_cost_above_burst_is_admitted_and_borrows_from_later_seconds(
    clock: VirtualClock,
) -> None:
    """A 50-recipient message passes at once when idle and delays the next send by its cost."""
    limiter = make(clock, rate=10.0, burst=1)
    assert await limiter.acquire(50) == 0.0
    assert await projected_wait(limiter, 1) == pytest.approx(4.9)
    grants: list[tuple[str, float]] = []
    start(limiter, clock, 1, "next", grants)
    await clock.advance(10.0)
    assert grants == [("next", pytest.approx(1004.9))]


async def test_large_message_is_not_starved_by_later_small_ones(clock: VirtualClock) -> None:
    """Requests are served in arrival order: singles arriving after a big message wait for it."""
    limiter = make(clock, rate=10.0, burst=1)
    grants: list[tuple[str, float]] = []
    start(limiter, clock, 1, "a", grants)
    start(limiter, clock, 1, "b", grants)
    start(limiter, clock, 1, "c", grants)
    start(limiter, clock, 20, "big", grants)
    for i in range(10):
        start(limiter, clock, 1, f"s{i}", grants)
    await clock.advance(60.0)
    names = [name for name, _ in grants]
    assert names == ["a", "b", "c", "big"] + [f"s{i}" for i in range(10)]
    # a, b, c go at 0, 0.1, 0.2 (burst 1 after idle); big waits for the bucket to refill after
    # c (a full bucket is needed above the burst).
    assert dict(grants)["big"] == pytest.approx(1000.4)
    assert dict(grants)["s0"] == pytest.approx(1000.4 + 2.0 - 0.1)


async def test_max_wait_fails_fast_and_takes_nothing(clock: VirtualClock) -> None:
    """A request whose projected wait exceeds max_wait raises at once, without sleeping or
    changing what later requests get."""
    limiter = make(clock, rate=10.0, burst=1)
    grants: list[tuple[str, float]] = []
    for i in range(12):
        start(limiter, clock, 1, str(i), grants)
    await clock.settle()
    before = await projected_wait(limiter, 1)
    sleeps_before = len(clock.sleeps)
    with pytest.raises(RateLimitTimeout) as caught:
        await limiter.acquire(1, max_wait=0.5)
    assert caught.value.wait_seconds == pytest.approx(before)
    assert await projected_wait(limiter, 1) == before
    assert len(clock.sleeps) == sleeps_before
    assert clock.now == 1000.0


async def test_max_wait_that_suffices_is_honoured(clock: VirtualClock) -> None:
    """A request whose projected wait fits max_wait is served within it."""
    limiter = make(clock, rate=10.0, burst=1)
    await limiter.acquire(1)  # after idle this books the slack too: the next single waits 0.1 s
    projected = await projected_wait(limiter, 3)
    assert projected > 0
    task = asyncio.get_running_loop().create_task(limiter.acquire(3, max_wait=projected))
    await clock.advance(5.0)
    assert task.result() == pytest.approx(projected)


async def test_max_wait_projection_counts_queued_costs(clock: VirtualClock) -> None:
    """The up-front estimate includes everyone queued ahead, so it matches the real wait."""
    limiter = make(clock, rate=10.0, burst=1)
    await limiter.acquire(2)
    grants: list[tuple[str, float]] = []
    start(limiter, clock, 5, "big", grants)
    start(limiter, clock, 1, "one", grants)
    await clock.settle()
    projected = await projected_wait(limiter, 1)
    task = asyncio.get_running_loop().create_task(limiter.acquire(1, max_wait=projected))
    await clock.advance(10.0)
    assert task.result() == pytest.approx(projected)
    assert projected == pytest.approx(0.2 + 0.5 + 0.1 - 0.1)


async def test_cancelled_head_takes_nothing_and_next_moves_up(clock: VirtualClock) -> None:
    """Cancelling the waiter at the head leaves the TAT untouched and the next one is served
    at the time the cancelled one would have been."""
    limiter = make(clock, rate=10.0, burst=0)
    await limiter.acquire(1)
    grants: list[tuple[str, float]] = []
    head = start(limiter, clock, 1, "head", grants)
    start(limiter, clock, 1, "next", grants)
    await clock.settle()
    head.cancel()
    await clock.advance(1.0)
    assert head.cancelled()
    assert grants == [("next", pytest.approx(1000.1))]
    assert limiter.waiting == 0


async def test_cancelled_middle_waiter_does_not_delay_those_behind(clock: VirtualClock) -> None:
    """A cancelled waiter in the middle of the queue frees its place entirely."""
    limiter = make(clock, rate=10.0, burst=0)
    await limiter.acquire(1)
    grants: list[tuple[str, float]] = []
    start(limiter, clock, 1, "a", grants)
    middle = start(limiter, clock, 30, "middle", grants)
    start(limiter, clock, 1, "c", grants)
    await clock.settle()
    assert await projected_wait(limiter, 1) == pytest.approx(3.3)
    middle.cancel()
    await clock.settle()
    assert await projected_wait(limiter, 1) == pytest.approx(0.3)
    await clock.advance(1.0)
    assert grants == [("a", pytest.approx(1000.1)), ("c", pytest.approx(1000.2))]


async def test_cancel_while_sleeping_on_its_own_slot_restores_capacity(
    clock: VirtualClock,
) -> None:
    """A lone waiter cancelled during its sleep leaves the limiter as if it never asked."""
    limiter = make(clock, rate=1.0, burst=0)
    await limiter.acquire(1)
    task = asyncio.get_running_loop().create_task(limiter.acquire(1))
    await clock.advance(0.5)
    task.cancel()
    await clock.settle()
    assert await projected_wait(limiter, 1) == pytest.approx(0.5)
    assert limiter.waiting == 0


async def test_set_rate_rescales_the_outstanding_debt(clock: VirtualClock) -> None:
    """Doubling the rate halves the time still owed by recipients already admitted."""
    limiter = make(clock, rate=10.0, burst=0)
    await limiter.acquire(10)
    assert await projected_wait(limiter, 1) == pytest.approx(1.0)
    limiter.set_rate(20.0)
    assert limiter.rate == 20.0
    assert await projected_wait(limiter, 1) == pytest.approx(0.5)


async def test_set_rate_refuses_bad_rates(clock: VirtualClock) -> None:
    """set_rate validates like the constructor."""
    with pytest.raises(ValueError):
        make(clock).set_rate(0)


async def test_rate_drop_while_queued_times_out_instead_of_overstaying(
    clock: VirtualClock,
) -> None:
    """If the rate falls after the up-front check, a waiter with max_wait gives up (taking
    nothing) as soon as it knows it would overstay."""
    limiter = make(clock, rate=10.0, burst=0)
    await limiter.acquire(1)
    task = asyncio.get_running_loop().create_task(limiter.acquire(1, max_wait=0.5))
    await clock.settle()
    limiter.set_rate(0.5)
    await clock.advance(1.0)
    with pytest.raises(RateLimitTimeout):
        task.result()
    assert limiter.waiting == 0


async def test_many_waiters_all_served_in_order_under_mixed_costs(clock: VirtualClock) -> None:
    """Mixed costs are served in arrival order and the total time matches the total cost."""
    limiter = make(clock, rate=20.0, burst=1)
    grants: list[tuple[str, float]] = []
    costs = [1, 3, 50, 1, 1, 7, 2, 1, 20, 1]
    for i, cost in enumerate(costs):
        start(limiter, clock, cost, str(i), grants)
    await clock.advance(20.0)
    assert [name for name, _ in grants] == [str(i) for i in range(len(costs))]
    assert await limiter.acquire(100) == 0.0
    assert grants[-1][1] - 1000.0 <= (sum(costs) - costs[-1]) / 20.0


@pytest.mark.parametrize("seed", range(5))
async def test_random_traffic_with_cancellations_keeps_order_and_bound(
    clock: VirtualClock, seed: int
) -> None:
    """Random arrivals of 1-2 recipients with random cancellations: survivors are served in
    arrival order, no 1 s window carries more than rate+burst recipients, and nothing is left
    queued or reserved."""
    rng = random.Random(seed)
    rate = 20.0
    limiter = make(clock, rate=rate, burst=1)
    grants: list[tuple[str, float]] = []
    costs: dict[str, int] = {}
    tasks: dict[str, asyncio.Task[float]] = {}
    for i in range(120):
        name = f"r{i:03d}"
        costs[name] = rng.choice([1, 1, 1, 2])
        tasks[name] = start(limiter, clock, costs[name], name, grants)
        await clock.settle(3)
        if rng.random() < 0.2:
            victim = rng.choice(list(tasks))
            tasks[victim].cancel()
        await clock.advance(rng.choice([0.0, 0.01, 0.05, 0.2]))
    await clock.advance(60.0)
    served = [name for name, _ in grants]
    assert served == sorted(served)
    assert all(tasks[name].cancelled() for name in set(tasks) - set(served))
    times = [(at, costs[name]) for name, at in grants]
    for at, _ in times:
        in_window = sum(cost for other, cost in times if at <= other < at + 1.0 - 1e-9)
        assert in_window <= rate + 1
    assert limiter.waiting == 0
    assert await limiter.acquire(1) == 0.0
