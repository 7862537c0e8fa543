"""Limiter precision benchmark: how close to the limit, and never above it.

For each rate (default 10, 50 and 500 recipients/s) it offers 1.25x the limit of single-recipient
requests, on the real clock, starting from idle with the default burst, and prints:
- achieved: grants in the run divided by rate x seconds (goal >= 99%, >= 97% through Redis);
- windows over: how many grants start a sliding 1-second window [t, t+1s) holding more than
  limit + 1 grants (goal 0), computed exactly from the grant timestamps.
First an in-process `LocalRateLimiter`, then three OS processes sharing one `RedisRateLimiter`
on a throw-away redis-server on 127.0.0.1 (counted on the aggregate of the three).

    PYTHONPATH=libs:services:. python -m bench.limiter_precision              # 60 s per run
    PYTHONPATH=libs:services:. python -m bench.limiter_precision --seconds 10 # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import concurrent.futures
import math
import multiprocessing
import time

import attrs

from ses_core.ratelimit import LocalRateLimiter, RateLimiter
from ses_core.ratelimit.redis import FailClosed, RedisRateLimiter
from ses_core.testing.redis_server import RedisServer

LOAD_FACTOR = 1.25
#: How often the load generator wakes to issue the requests that are due.
TICK = 0.002


@attrs.frozen
class Figures:
    """What one run measured.

    Attributes:
        rate: the limit (recipients per second).
        seconds: the measured duration.
        grants: grants within the duration.
        windows_over: grants starting a 1 s window with more than limit + 1 grants.
        worst_window: the most grants seen in any 1 s window.
    """

    rate: float
    seconds: float
    grants: int
    windows_over: int
    worst_window: int

    @property
    def achieved(self) -> float:
        """Grants as a fraction of rate x seconds."""
        return self.grants / (self.rate * self.seconds)

    @classmethod
    def from_grants(cls, rate: float, seconds: float, start: float, times: list[float]) -> Figures:
        """Measure grant timestamps (seconds on one monotonic clock) from `start`."""
        inside = sorted(t for t in times if start <= t < start + seconds)
        bound = math.floor(rate) + 1
        over = 0
        worst = 0
        for i, t in enumerate(inside):
            count = bisect.bisect_left(inside, t + 1.0, lo=i) - i
            worst = max(worst, count)
            if count > bound:
                over += 1
        return cls(rate, seconds, len(inside), over, worst)

    def line(self, label: str) -> str:
        """One printable line."""
        return (
            f"{label:<22} rate {self.rate:>6.0f}/s  {self.seconds:>5.0f} s  "
            f"grants {self.grants:>6}  achieved {self.achieved * 100:6.2f}%  "
            f"worst 1s window {self.worst_window:>4} (limit+1 = {math.floor(self.rate) + 1})  "
            f"windows over {self.windows_over}"
        )


async def offer_load(
    limiter: RateLimiter, offered_rate: float, seconds: float, start: float
) -> list[float]:
    """Issue single-recipient acquires at `offered_rate`/s from `start` for `seconds`; return
    the grant timestamps. Bounded: at most offered_rate x seconds requests, stops at the end."""
    total = int(offered_rate * seconds)
    grants: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        await limiter.acquire(1)
        grants.append(time.monotonic())

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    end = start + seconds
    issued = 0
    while issued < total and (now := time.monotonic()) < end:
        due = min(total, int((now - start) * offered_rate) + 1)
        for _ in range(due - issued):
            task = asyncio.get_running_loop().create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        issued = due
        await asyncio.sleep(TICK)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return grants


def run_local(rate: float, seconds: float) -> Figures:
    """One in-process run from idle."""

    async def main() -> Figures:
        limiter = LocalRateLimiter(rate)
        start = time.monotonic() + 0.05
        grants = await offer_load(limiter, rate * LOAD_FACTOR, seconds, start)
        return Figures.from_grants(rate, seconds, start, grants)

    return asyncio.run(main())


def _warm(delay: float) -> None:
    time.sleep(delay)  # keeps this worker busy so the pool starts the next one


def _redis_worker(
    url: str, key: str, rate: float, share: float, seconds: float, start: float
) -> list[float]:
    async def main() -> list[float]:
        limiter = RedisRateLimiter.from_url(url, key=key, rate=rate, on_unavailable=FailClosed())
        async with limiter:
            return await offer_load(limiter, share, seconds, start)

    return asyncio.run(main())


def run_redis(url: str, rate: float, seconds: float, processes: int) -> Figures:
    """`processes` OS processes share one Redis-kept rate; measured on the aggregate."""
    key = f"bench:{rate}:{time.monotonic_ns()}"
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        # Start every worker and import this module in it before the common start time.
        list(pool.map(_warm, [0.3] * processes))
        start = time.monotonic() + 1.0
        share = rate * LOAD_FACTOR / processes
        futures = [
            pool.submit(_redis_worker, url, key, rate, share, seconds, start)
            for _ in range(processes)
        ]
        times: list[float] = []
        for future in futures:
            times.extend(future.result(timeout=seconds + 60.0))
    return Figures.from_grants(rate, seconds, start, times)


def main() -> None:
    """Parse arguments, run every configuration, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each run")
    parser.add_argument("--rates", default="10,50,500", help="comma-separated limits")
    parser.add_argument("--processes", type=int, default=3, help="processes sharing Redis")
    parser.add_argument("--no-redis", action="store_true", help="skip the shared-Redis runs")
    arguments = parser.parse_args()
    rates = [float(part) for part in arguments.rates.split(",")]
    print(f"offered load {LOAD_FACTOR}x the limit, default burst (1), real clock, from idle")
    for rate in rates:
        print(run_local(rate, arguments.seconds).line("local"), flush=True)
    if arguments.no_redis:
        return
    with RedisServer() as server:
        for rate in rates:
            figures = run_redis(server.url, rate, arguments.seconds, arguments.processes)
            print(figures.line(f"redis x{arguments.processes} processes"), flush=True)


if __name__ == "__main__":
    main()
