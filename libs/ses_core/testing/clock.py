"""A clock and `sleep` that move only when a test says so, for code that takes both injected.

Pass `clock` as the clock and `clock.sleep` as the sleep function; then `await clock.advance(s)`
wakes every sleeper whose deadline falls within the next `s` seconds, in deadline order, letting
the event loop run in between, so timing-dependent code is tested exactly and without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class VirtualClock:
    """Monotonic virtual time with an awaitable `sleep`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    @property
    def sleeping(self) -> int:
        """How many sleepers are waiting for time to pass."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep(self, delay: float) -> None:
        """Wait until the clock has been advanced by `delay` seconds."""
        self.sleeps.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, delay), next(self._counter), future))
        await future

    def sleep_blocking(self, delay: float) -> None:
        """`sleep` for synchronous code: time moves forward by `delay` at once."""
        self.sleeps.append(delay)
        self.now += max(0.0, delay)

    async def settle(self, rounds: int = 50) -> None:
        """Let every ready task run (a bounded number of event-loop turns)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance_to_next(self, limit: float = 1.0) -> None:
        """Move time to the earliest sleeper's deadline, but by at most `limit` seconds."""
        pending = [deadline for deadline, _, future in self._sleepers if not future.done()]
        if pending:
            await self.advance(min(limit, max(0.0, min(pending) - self.now)))

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order."""
        target = self.now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self.now = max(self.now, deadline)
            future.set_result(None)
            await self.settle()
        self.now = max(self.now, target)
        await self.settle()
