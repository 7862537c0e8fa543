"""Polls a relay process's `/readyz` while a fault runs, recording every answer with its time."""

from __future__ import annotations

import asyncio
import time

import attrs

from tests.support.relay_harness import RelayProcess


@attrs.frozen
class Readiness:
    """One `/readyz` poll: HTTP status (0 when nothing answered) at a monotonic time."""

    at: float
    status: int


class ReadinessPoller:
    """Polls `/readyz` every `interval` seconds in a task, recording each answer."""

    def __init__(self, relay: RelayProcess, interval: float = 0.25) -> None:
        self.relay = relay
        self.interval = interval
        self.polls: list[Readiness] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start polling."""
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Stop polling. The flag ends the loop even if a cancellation were lost."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[Readiness]:
        """The polls begun between two monotonic times."""
        return [p for p in self.polls if start <= p.at <= end]

    async def _poll(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            status = await self.relay.readyz()
            self.polls.append(Readiness(started, status))
            await asyncio.sleep(self.interval)
