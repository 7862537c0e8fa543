"""The queue's delivery workers: lease due messages, send them through SES, record the outcome.

`QueueRunner` runs one dispatcher and up to `workers` deliveries at a time. The dispatcher leases
as many due messages as there are free workers, oldest due first; when nothing is due it sleeps
until the earliest message falls due (`Spool.next_due`), a `wake()` (called after a `put`: new
mail goes out at once, not at the next poll) or `idle_poll`, whichever comes first. Each leased
message gets one attempt (`ses_core.queue._deliver`: blacklist, send, per-recipient outcome,
DSN, reschedule), and every lease ends with exactly one of `settle`, `dead_letter` or `release`.

Nothing accepted is lost on the way:
- an exception from the spool or the sender is logged and the message kept (rescheduled, or
  released), never a dead worker: one bad message cannot stop delivery of the others;
- `stop(grace)` stops leasing, lets the deliveries in flight finish within `grace`, then cancels
  the rest and releases their leases (due again at once, for the next process); a delivery
  cancelled after its final '.' left may be sent twice, never lost (at-least-once, as SMTP);
- a crash ends every lease of the process (the spool's contract), so at most the deliveries in
  flight are repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ses_core.blacklist import BlacklistReader
from ses_core.queue._deliver import Deliverer, Lease
from ses_core.queue._model import QueuedMessage
from ses_core.queue._ports import DeliveryEvents, NoEvents, Spool
from ses_core.queue._settings import DEFAULT_LIFETIME, DeliverySettings
from ses_core.queue.backoff import Backoff, RetryReason
from ses_core.smtp.sender import MessageSender

__all__ = ["DEFAULT_LIFETIME", "Backoff", "DeliverySettings", "QueueRunner", "RetryReason"]

log = logging.getLogger(__name__)


class QueueRunner:
    """Delivers the spool's due messages with `settings.workers` concurrent attempts.

    `clock` gives the spool's wall-clock time (epoch seconds: due times, lifetime); `monotonic`
    is the sender's clock, for the per-attempt deadline (`time.monotonic` unless the sender was
    given another).
    """

    def __init__(
        self,
        spool: Spool,
        sender: MessageSender,
        *,
        settings: DeliverySettings,
        blacklist: BlacklistReader | None = None,
        events: DeliveryEvents | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spool = spool
        self._settings = settings
        self._clock = clock
        self._deliverer = Deliverer(
            spool,
            sender,
            settings,
            blacklist,
            events if events is not None else NoEvents(),
            clock,
            monotonic,
        )
        self._active: dict[asyncio.Task[None], Lease] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        """Leased messages being delivered now."""
        return len(self._active)

    @property
    def settings(self) -> DeliverySettings:
        """The settings the runner was made with."""
        return self._settings

    async def start(self) -> None:
        """Start the dispatcher (once; a stopped runner stays stopped)."""
        if self._stopping:
            message = "a stopped QueueRunner cannot be started again"
            raise RuntimeError(message)
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="queue-dispatcher")
            log.info("queue delivery started: %d worker(s)", self._settings.workers)

    def wake(self) -> None:
        """Look for due messages now (call after a put, on the runner's event loop; cheap)."""
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop leasing; give the deliveries in flight `grace` seconds, then cancel them and
        release their leases. Safe to call more than once (later calls wait for the first)."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(max(0.0, grace)))
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._dispatcher is not None:
            done, _ = await asyncio.wait({self._dispatcher}, timeout=grace)
            if not done:
                self._dispatcher.cancel()
                await asyncio.wait({self._dispatcher})
        active = set(self._active)
        unfinished: set[asyncio.Task[None]] = set()
        if active:
            _, unfinished = await asyncio.wait(active, timeout=max(0.0, deadline - loop.time()))
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
        if self._chores:
            await asyncio.wait(set(self._chores))
        log.info(
            "queue delivery stopped: %d finished in the grace period, %d released",
            len(active) - len(unfinished),
            len(unfinished),
        )

    # --- the dispatcher ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        settings = self._settings
        while not self._stopping:
            self._wake.clear()
            free = settings.workers - len(self._active)
            timeout = settings.idle_poll
            if free > 0:
                wanted = min(free, settings.lease_batch)
                leased = await self._lease(wanted)
                if leased is None:  # the spool failed: try again after a pause
                    await self._sleep(settings.idle_poll)
                    continue
                for message in leased:
                    self._spawn(message)
                if len(leased) == wanted:
                    continue  # more may be due; a full house waits for a slot below
                if not leased:
                    timeout = await self._until_due(settings.idle_poll)
            await self._sleep(timeout)

    async def _lease(self, wanted: int) -> tuple[QueuedMessage, ...] | None:
        """Up to `wanted` due messages, None when the spool failed. A cancel that lands during
        the call releases whatever the spool hands out afterwards."""
        task = asyncio.ensure_future(self._spool.lease(wanted, self._clock()))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_orphans)
            raise
        except Exception:
            log.exception("queue: leasing due messages failed; trying again shortly")
            return None

    async def _until_due(self, longest: float) -> float:
        """Seconds until the earliest message falls due, at most `longest`."""
        try:
            due = await self._spool.next_due()
        except Exception:
            log.exception("queue: asking the spool for the next due time failed")
            return longest
        if due is None:
            return longest
        wait = due - self._clock()
        # Due already, yet the lease found nothing (taken elsewhere): no busy loop.
        return longest if wait <= 0 else min(longest, wait)

    async def _sleep(self, timeout: float) -> None:
        """Wait for `wake()`, a finished delivery or `timeout` seconds."""
        if self._stopping or self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _spawn(self, message: QueuedMessage) -> None:
        lease = Lease(message)
        if self._stopping:  # leased while stopping: give it back untouched
            self._chore(self._release(lease))
            return
        task = asyncio.create_task(self._run(lease), name=f"queue-delivery-{message.id}")
        self._active[task] = lease
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        self._wake.set()  # a worker is free

    # --- one delivery ------------------------------------------------------------------------

    async def _run(self, lease: Lease) -> None:
        try:
            await self._deliverer.attempt(lease)
        except asyncio.CancelledError:
            if not lease.ended:
                await self._release(lease)
            raise
        except Exception:
            log.exception("queue %s: the delivery attempt failed unexpectedly", lease.message.id)
            if not lease.ended:
                await self._reschedule(lease)

    async def _reschedule(self, lease: Lease) -> None:
        """After an unexpected error: keep the message as it was stored, due again after the
        transient backoff (not at once: an error that repeats must not become a hot loop)."""
        message = lease.message
        now = self._clock()
        attempt = message.attempts + 1
        delay = self._settings.backoff.delay(RetryReason.TRANSIENT, attempt)
        expires_at = message.envelope.received_at + self._settings.lifetime
        try:
            await self._spool.settle(
                message,
                message.envelope,
                next_attempt_at=min(now + delay, max(expires_at, now)),
                last_error="internal error during delivery (see the relay's log)",
            )
        except Exception:
            log.exception("queue %s: rescheduling failed; releasing the lease", message.id)
            await self._release(lease)
        else:
            lease.ended = True

    async def _release(self, lease: Lease) -> None:
        try:
            await self._spool.release(lease.message)
        except Exception:
            log.exception("queue %s: releasing the lease failed", lease.message.id)
        lease.ended = True

    def _release_orphans(self, task: asyncio.Future[tuple[QueuedMessage, ...]]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        for message in task.result():
            self._chore(self._release(Lease(message)))

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        chore = asyncio.ensure_future(work)
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)
