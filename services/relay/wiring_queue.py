"""The queue as the relay runs it: the spool, its delivery workers, their metrics and probes.

A spool is opened in both delivery modes: in `queue` mode every accepted message goes there, in
`direct` mode only the recipients SES still deferred after a partial acceptance. The delivery
workers (`ses_core.queue.delivery.QueueRunner`) run in both modes too, with the very sender the
direct mode uses, so the queue is drained at the same SES rate (the limiter is shared). A
queueing relay started by `relay.main` runs them in a child process instead
(`relay.delivery_process`, `build_delivery(..., delivery_process=True)`), so that delivering
never takes the SMTP front's event loop; built in code (tests, tools) they run in-process.

Shutdown order (the relay's `AsyncExitStack` is last-in, first-out, and `RelayServer.shutdown`
stops the workers first with what is left of the grace period): stop the workers (in-flight
deliveries finish, the rest stays queued), stop the depth poller, close the spool, then the
sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from relay.config import ConfigError, RelayConfig
from relay.metrics import RelayMetrics
from relay.ops_http import NotReady
from relay.variables_queue import RELAY_SPOOL_DIR
from relay.wiring_upstream import Probe
from ses_core.blacklist import BlacklistReader
from ses_core.errors import SesCoreError
from ses_core.queue import DeliveryEvents, MemorySpool, Spool, SpoolStats
from ses_core.smtp import MessageSender

log = logging.getLogger(__name__)

#: Seconds between two readings of the queue's depth for the gauges.
STATS_INTERVAL = 2.0

#: Makes the delivery workers: (spool, sender, config, blacklist, events) -> a runner with
#: `start()`, `wake()`, `stop(grace)` (tests may hand a stand-in).
RunnerFactory = Callable[
    [Spool, MessageSender, RelayConfig, BlacklistReader | None, DeliveryEvents], Any
]


@attrs.define
class Delivery:
    """The spool and its running delivery workers.

    Attributes:
        spool: where accepted messages (queue mode) or deferred recipients (direct mode) go.
        runner: the delivery workers (`QueueRunner`).
        queue_mode: True when a 250 means "on disk" (RELAY_DELIVERY=queue).
        retry_delay: seconds before recipients deferred in direct mode are tried again.
        exposition: the relay's `/metrics` body when delivery runs in a child process (its
            families merged in, `relay.delivery_process`); None: the registry's own.
    """

    spool: Spool
    runner: Any
    queue_mode: bool
    retry_delay: float = 30.0
    exposition: Callable[[], Awaitable[bytes]] | None = None
    _stopped: bool = False

    def admission(self) -> str | None:
        """Why the spool cannot take a message now ("disk_full", "queue_full"), or None."""
        return self.spool.admission()

    def wake(self) -> None:
        """Tell the workers a message was put (they need not wait for their next poll)."""
        self.runner.wake()

    async def stop(self, grace: float) -> None:
        """Stop the workers once: in-flight deliveries get `grace` seconds, the rest stays
        queued."""
        if self._stopped:
            return
        self._stopped = True
        await self.runner.stop(grace)


async def build_delivery(
    config: RelayConfig,
    stack: contextlib.AsyncExitStack,
    *,
    sender: MessageSender,
    blacklist: BlacklistReader | None,
    metrics: RelayMetrics,
    probes: dict[str, Probe],
    make_runner: RunnerFactory | None = None,
    delivery_process: bool = False,
) -> Delivery:
    """Open the spool, start the workers, the depth poller and the `spool` readiness probe; all
    of it closed by `stack` (see the module docstring for the order)."""
    spool = await open_spool(config)
    stack.push_async_callback(spool.aclose)
    io_stats = getattr(spool, "io_stats", None)
    if io_stats is not None:
        io_stats = lambda: spool.io_stats  # type: ignore[attr-defined]  # noqa: E731
        metrics.queue.watch_io(metrics.registry, io_stats)
    interval, on_stats = STATS_INTERVAL, None
    if config.queue.sqs is not None:  # the DLQ gauge, the orphan-body sweeper
        from relay.wiring_sqs import watch_sqs_spool

        interval, on_stats = watch_sqs_spool(spool, config.queue.sqs, metrics, stack)
    poller = asyncio.create_task(
        _poll_stats(spool, metrics, interval, on_stats), name="queue-stats"
    )
    stack.push_async_callback(_cancel, poller)
    events = metrics.delivery_events()
    exposition = None
    if delivery_process and separate_delivery(config):
        from relay.delivery_process import WORKER_PROBE, DeliveryProcess

        runner: Any = DeliveryProcess(metrics.registry)
        probes[WORKER_PROBE] = runner.probe
        exposition = runner.exposition
    else:
        runner = (make_runner or queue_runner)(spool, sender, config, blacklist, events)
    await runner.start()
    delivery = Delivery(
        spool, runner, config.queue.queue_mode, config.queue.retry_delay, exposition
    )
    stack.push_async_callback(delivery.stop, 0.0)
    probes["spool"] = spool_probe(spool)
    log.info(
        "delivery: %s (%s); %d queue worker(s)",
        "queue: a 250 means the message is stored" if delivery.queue_mode else "direct",
        describe_spool(config),
        config.queue.workers,
    )
    return delivery


async def open_spool(config: RelayConfig) -> Spool:
    """The shared spool (RELAY_SPOOL=sqs, `relay.wiring_sqs`), the local spool at
    RELAY_SPOOL_DIR (created 0700, recovered), or in memory for a code-built configuration; a
    `ConfigError` naming the setting when it cannot be used."""
    settings = config.queue
    if settings.sqs is not None:
        from relay.wiring_sqs import open_sqs_spool

        return await open_sqs_spool(config, settings.sqs)
    if settings.spool_dir is None:
        return MemorySpool(max_messages=settings.max_messages)
    from ses_core.queue.local import LocalSpool

    directory = settings.spool_dir
    try:
        spool = await asyncio.to_thread(
            LocalSpool.open,
            directory,
            min_free_bytes=settings.min_free_bytes,
            max_messages=settings.max_messages,
        )
    except (OSError, SesCoreError) as exc:
        message = f"{RELAY_SPOOL_DIR.name}: cannot open the spool at {directory}: {exc}"
        raise ConfigError(message) from None
    recovery = spool.recovery
    if recovery.recovered:
        log.warning(
            "spool %s: damaged files moved aside to %s (%s); a fresh spool was started",
            directory,
            recovery.moved_aside,
            recovery.reason,
        )
    return spool


def separate_delivery(config: RelayConfig) -> bool:
    """Whether the delivery workers can run in a child process (`relay.delivery_process`):
    queue mode on a spool another process can open (not a code-built one in memory)."""
    settings = config.queue
    return settings.queue_mode and (settings.spool_dir is not None or settings.sqs is not None)


def queue_runner(
    spool: Spool,
    sender: MessageSender,
    config: RelayConfig,
    blacklist: BlacklistReader | None,
    events: DeliveryEvents,
) -> Any:
    """The delivery workers for `config` (`ses_core.queue.delivery.QueueRunner`)."""
    from ses_core.queue.delivery import QueueRunner

    settings = delivery_settings(config)
    return QueueRunner(spool, sender, settings=settings, blacklist=blacklist, events=events)


def delivery_settings(config: RelayConfig) -> Any:
    """The workers' `DeliverySettings` for `config` (tests evolve them: shorter backoffs)."""
    from ses_core.queue.delivery import DeliverySettings

    return DeliverySettings(
        workers=config.queue.workers,
        attempt_timeout=config.queue.attempt_timeout,
        lifetime=config.queue.lifetime,
        bounce_from=config.bounce_from,
        # As the handler does in direct mode: SES needs a verified identity as envelope sender;
        # local mode keeps `<>` as it came.
        null_sender="" if config.local_mode else config.bounce_from,
        reporting_mta=config.server_fqdn,
    )


def spool_probe(spool: Spool) -> Probe:
    """Readiness: the spool can take a message (not disk_full, queue_full or closed; the
    shared spool: not within a few seconds of a failed accept)."""

    async def spool_ready() -> None:
        reason = spool.admission()
        if reason is not None:
            raise SpoolNotAccepting(reason)

    return spool_ready


class SpoolNotAccepting(NotReady):
    """The spool refuses new messages; `/readyz` shows the reason."""


def describe_spool(config: RelayConfig) -> str:
    """The spool as the start-up log and `check-config` name it."""
    if config.queue.sqs is not None:
        from relay.wiring_sqs import describe_sqs

        return describe_sqs(config.queue.sqs)
    directory = config.queue.spool_dir
    return "spool in memory" if directory is None else f"local spool {directory}"


async def _poll_stats(
    spool: Spool,
    metrics: RelayMetrics,
    interval: float = STATS_INTERVAL,
    also: Callable[[SpoolStats], None] | None = None,
) -> None:
    while True:
        try:
            stats = await spool.stats()
            metrics.queue.show(stats)
            if also is not None:
                also(stats)
        except (OSError, SesCoreError) as exc:  # a failed reading leaves the last values
            log.debug("queue stats unavailable: %s", exc)
        await asyncio.sleep(interval)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
