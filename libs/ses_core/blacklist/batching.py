"""`BatchingLookup`: the blacklist lookups of every session, coalesced into few store calls.

A relay looks a recipient up when its RCPT arrives: one address at a time, from many sessions at
once. DynamoDB answers up to 100 keys in one `BatchGetItem` in about the time of one, so lookups
that wait at the same moment should share a call instead of costing one each. This coalescer
sits in front of any store's `lookup_many` (synchronous, run on threads of its own) and knows
nothing of DynamoDB but, optionally, what a lookup costs in store keys (`store_keys`).

When a lookup goes out, and why:
- Nothing in flight: at the next turn of the event loop once the open batch holds as many
  addresses as the last batch sent (at 1 connection: at once), else `gather_delay` after its
  first lookup. So at 1 connection a lookup waits for nobody but the lookups made in the same
  turn: a fixed gather window would add its whole length to every uncached RCPT (p50 and p99
  alike) and collect nobody. With 20 sessions in step, the last call was shared by 20, and the
  first lookup after it waits (at most `gather_delay`) for the 19 others whose replies have just
  gone out, instead of going alone and splitting every round into a call of 1 and one of 19.
  Measured (`bench/blacklist_rcpt.py`): a window at idle costs 1 connection +5 ms at p50; going
  at once when idle regardless of the last batch costs twice the calls at 20 connections.
- A call in flight: lookups collect in the open batch, which goes out when a call completes (so
  under load, with 20 connections, the lookups of one round trip share one call), or
  `gather_delay` (5 ms) after its first lookup, whichever comes first: a slow call (throttled
  and retried, a read timeout) holds the others back by at most that.
- A batch never holds more than `max_keys` store keys (BatchGetItem's limit of 100): a full one
  goes out at once, and further lookups open the next.
- At most `max_in_flight` calls run at once; while all are busy a due batch keeps filling (up to
  `max_keys`) until a call completes.

Failures and cancellation:
- A failed call fails every lookup of its batch with `BlacklistUnavailable` (any other error is
  logged and turned into one), and no other: earlier and later batches are untouched. Keys the
  store leaves unprocessed are its own to retry (the DynamoDB adapter retries `UnprocessedKeys`
  with jittered backoff and raises `BlacklistUnavailable` only when it gives up).
- A waiter that is cancelled (its client disconnected) leaves the call to the others.
- `aclose()` refuses new lookups, fails those not yet sent, gives calls in flight up to
  `close_timeout` to answer their waiters, and stops its threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import attrs

from ses_core.blacklist._model import BlacklistEntry
from ses_core.blacklist._private import normalize_all
from ses_core.errors import BlacklistUnavailable

log = logging.getLogger(__name__)

#: BatchGetItem's limit: the default size of a batch, in store keys.
MAX_BATCH_KEYS = 100
#: The longest a lookup waits for company while a call is in flight.
GATHER_DELAY = 0.005

Answers = dict[str, BlacklistEntry]


@attrs.define(eq=False)
class _Batch:
    """Addresses that go out in one call, and the future that all their waiters share.

    Attributes:
        future: the call's answers (normalised key -> entry), or its `BlacklistUnavailable`.
        texts: the addresses as given, once each, in arrival order.
        keys: the store keys they cost.
        timer: when the batch is due, while it is open.
        soon: whether it is due at the next turn of the loop.
    """

    future: asyncio.Future[Answers]
    texts: dict[str, None] = attrs.field(factory=dict)
    keys: set[str] = attrs.field(factory=set)
    timer: asyncio.Handle | None = None
    soon: bool = False

    def fail(self, error: BlacklistUnavailable) -> None:
        if not self.future.done():
            self.future.set_exception(error)
            # Marked as retrieved: every waiter may have left, and that is no error to report.
            self.future.exception()


class BatchingLookup:
    """Coalesces concurrent `lookup_async` calls into calls of `lookup_many` (see the module
    docstring for when a batch goes out and what failures do).

    `lookup_many` is a store's synchronous lookup (normalised key -> entry of the blacklisted
    addresses among those given); it runs on `max_in_flight` threads owned by this object.
    `store_keys(address)` names the store keys a lookup of `address` costs (default: its
    normalised key), so that a batch stays within `max_keys` of them.
    """

    def __init__(
        self,
        lookup_many: Callable[[list[str]], Answers],
        *,
        store_keys: Callable[[str], Iterable[str]] | None = None,
        max_keys: int = MAX_BATCH_KEYS,
        gather_delay: float = GATHER_DELAY,
        max_in_flight: int = 8,
        close_timeout: float = 5.0,
    ) -> None:
        if max_keys < 1 or max_in_flight < 1:
            raise ValueError("max_keys and max_in_flight must be at least 1")
        if gather_delay < 0 or close_timeout < 0:
            raise ValueError("gather_delay and close_timeout must not be negative")
        self.max_keys = max_keys
        self.gather_delay = gather_delay
        self.max_in_flight = max_in_flight
        self.close_timeout = close_timeout
        self._lookup_many = lookup_many
        self._store_keys = store_keys
        self._threads = ThreadPoolExecutor(max_in_flight, thread_name_prefix="blacklist-batch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: _Batch | None = None
        self._ready: deque[_Batch] = deque()  # full batches waiting for a call slot
        self._waiting = 0
        self._in_flight = 0
        self._last_size = 1  # addresses in the last batch sent: the company to expect
        self._calls: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def waiting(self) -> int:
        """Addresses queued for a call that has not started yet."""
        return self._waiting

    async def lookup_async(self, addresses: Iterable[str]) -> Answers:
        """As `BlacklistReader.lookup_many`, sharing store calls with concurrent lookups.

        Raises `InvalidAddress` before anything is queued, and `BlacklistUnavailable` when the
        call of its batch failed or the batcher is closed.
        """
        keys = normalize_all(addresses)
        if not keys:
            return {}
        if self._closed:
            raise BlacklistUnavailable("blacklist lookups are shut down")
        loop = self._bind()
        batches: list[_Batch] = []
        for key, texts in keys.items():
            batch = self._admit(loop, key, texts)
            if batch not in batches:
                batches.append(batch)
        found: Answers = {}
        for batch in batches:
            # Shielded: cancelling this waiter must not cancel the call the others wait for.
            answers = await asyncio.shield(batch.future)
            found.update((key, answers[key]) for key in keys if key in answers)
        return found

    async def aclose(self) -> None:
        """Refuse new lookups, fail unsent ones, let calls in flight finish (bounded)."""
        if self._closed:
            return
        self._closed = True
        unsent = [*self._ready, *([self._open] if self._open is not None else [])]
        self._open = None
        self._ready.clear()
        self._waiting = 0
        for batch in unsent:
            if batch.timer is not None:
                batch.timer.cancel()
            batch.fail(BlacklistUnavailable("blacklist lookups shut down before this one"))
        if self._calls:
            _, stuck = await asyncio.wait(set(self._calls), timeout=self.close_timeout)
            for task in stuck:
                task.cancel()
            if stuck:
                log.warning("%d blacklist lookup calls abandoned at shutdown", len(stuck))
                await asyncio.wait(stuck)
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- batching, all on the event loop's thread -------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a BatchingLookup serves one event loop")
        return loop

    def _admit(self, loop: asyncio.AbstractEventLoop, key: str, texts: list[str]) -> _Batch:
        """The batch that asks for `texts` (all forms of `key`, kept together so that the store
        can rank a key's forms in one call)."""
        batch = self._open
        if batch is not None and all(text in batch.texts for text in texts):
            return batch
        cost = self._keys_of(key, texts)
        if batch is not None and len(batch.keys | cost) > self.max_keys:
            self._seal(batch)
            batch = None
        if batch is None:
            batch = self._open = _Batch(loop.create_future())
            batch.timer = loop.call_later(self.gather_delay, self._due, batch)
        added = [text for text in texts if text not in batch.texts]
        batch.texts.update(dict.fromkeys(added))
        batch.keys |= cost
        self._waiting += len(added)
        if len(batch.keys) >= self.max_keys:
            self._seal(batch)
        elif not batch.soon and self._in_flight == 0 and len(batch.texts) >= self._last_size:
            # The company to expect is here: go at the next turn (with this turn's latecomers).
            if batch.timer is not None:
                batch.timer.cancel()
            batch.timer = loop.call_soon(self._due, batch)
            batch.soon = True
        return batch

    def _keys_of(self, key: str, texts: list[str]) -> set[str]:
        if self._store_keys is None:
            return {key}
        return {store_key for text in texts for store_key in self._store_keys(text)}

    def _due(self, batch: _Batch) -> None:
        """The batch's time has come: out it goes, or with every slot busy it goes (still
        filling meanwhile) when the next call completes."""
        batch.timer = None
        if batch is self._open and self._in_flight < self.max_in_flight:
            self._seal(batch)

    def _seal(self, batch: _Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch is self._open:
            self._open = None
        self._ready.append(batch)
        self._start_ready()

    def _start_ready(self) -> None:
        while self._ready and self._in_flight < self.max_in_flight:
            batch = self._ready.popleft()
            self._waiting -= len(batch.texts)
            self._last_size = len(batch.texts)
            self._in_flight += 1
            assert self._loop is not None
            task = self._loop.create_task(self._call(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, batch: _Batch) -> None:
        texts = list(batch.texts)
        assert self._loop is not None
        try:
            answers = await self._loop.run_in_executor(self._threads, self._lookup_many, texts)
        except asyncio.CancelledError:
            batch.fail(BlacklistUnavailable("blacklist lookup abandoned at shutdown"))
            raise
        except BlacklistUnavailable as exc:
            batch.fail(exc)
        except Exception as exc:
            log.error("blacklist lookup of %d addresses failed", len(texts), exc_info=exc)
            error = BlacklistUnavailable(f"blacklist lookup failed ({type(exc).__name__})")
            error.__cause__ = exc
            batch.fail(error)
        else:
            if not batch.future.done():
                batch.future.set_result(answers)
        finally:
            self._in_flight -= 1
            if not self._closed:
                self._start_ready()
                # A call completed: what gathered meanwhile goes out now, not at its timer.
                if self._open is not None and self._in_flight < self.max_in_flight:
                    self._seal(self._open)
