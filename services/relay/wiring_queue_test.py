"""Unit tests for relay.wiring_queue: the spool and workers each configuration builds, the
readiness of a queueing relay, the depth gauges, and the closing order."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest

import relay.wiring_queue
from relay.config import ConfigError, RelayConfig
from relay.metrics import RelayMetrics
from relay.ops_http import OpsHttpServer
from relay.outbox import OutboxSender
from relay.queue_settings import QueueSettings
from relay.wiring import Components, build_components
from relay.wiring_queue import build_delivery, delivery_settings, open_spool
from ses_core.queue import MemorySpool, NewMessage, QueuedEnvelope


class Runner:
    """Stands in for the delivery workers, recording what the wiring did to it."""

    def __init__(self, journal: list[str], args: tuple[Any, ...]) -> None:
        self.journal = journal
        self.args = args

    async def start(self) -> None:
        self.journal.append("runner started")

    def wake(self) -> None:
        self.journal.append("woken")

    async def stop(self, grace: float) -> None:
        self.journal.append(f"runner stopped ({grace:g})")


def recording(journal: list[str]) -> Any:
    def make(*args: Any) -> Runner:
        return Runner(journal, args)

    return make


def local(tmp_path: Path, **extra: str) -> RelayConfig:
    return RelayConfig.from_environ(
        {
            "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
            "RELAY_BLACKLIST_SQLITE": str(tmp_path / "bl.sqlite3"),
            "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
            **extra,
        }
    )


async def test_queue_mode_opens_the_local_spool_and_starts_the_workers(tmp_path: Path) -> None:
    """RELAY_SPOOL_DIR is created 0700; the workers get the spool, the same sender and the
    blacklist; the upstream probe is advisory and a spool probe is added."""
    journal: list[str] = []
    parts = await build_components(local(tmp_path), make_runner=recording(journal))
    try:
        assert parts.delivery is not None and parts.delivery.queue_mode
        spool_dir = tmp_path / "spool"
        assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
        runner = parts.delivery.runner
        spool, sender, config, blacklist, _ = runner.args
        assert spool is parts.delivery.spool and sender is parts.sender
        assert blacklist is parts.blacklist and config.queue.spool_dir == spool_dir
        assert journal == ["runner started"]
        assert set(parts.probes) >= {"upstream", "spool"}
        assert parts.advisory_probes == frozenset({"upstream"})
    finally:
        await parts.aclose()
    assert journal == ["runner started", "runner stopped (0)"]


async def test_direct_mode_also_runs_a_spool_and_workers(tmp_path: Path) -> None:
    """Direct mode needs the spool for recipients deferred after a partial acceptance; the
    upstream probe keeps making the relay unready there."""
    journal: list[str] = []
    config = local(tmp_path, RELAY_DELIVERY="direct")
    parts = await build_components(config, make_runner=recording(journal))
    try:
        assert parts.delivery is not None and not parts.delivery.queue_mode
        assert parts.advisory_probes == frozenset({"spool"})
        assert journal == ["runner started"]
    finally:
        await parts.aclose()


async def test_closing_order_is_workers_spool_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown stops the workers (once), then closes the spool, then the sender."""
    journal: list[str] = []

    class Spool(MemorySpool):
        async def aclose(self) -> None:
            journal.append("spool closed")
            await super().aclose()

    class Sender(OutboxSender):
        async def aclose(self) -> None:
            journal.append("sender closed")
            await super().aclose()

    metrics = RelayMetrics()
    async with contextlib.AsyncExitStack() as stack:
        sender = Sender(tmp_path)
        stack.push_async_callback(sender.aclose)

        async def spool_for(_: RelayConfig) -> MemorySpool:
            return Spool()

        monkeypatch.setattr(relay.wiring_queue, "open_spool", spool_for)
        delivery = await build_delivery(
            RelayConfig(),
            stack,
            sender=sender,
            blacklist=None,
            metrics=metrics,
            probes={},
            make_runner=recording(journal),
        )
        await delivery.stop(2.5)  # as RelayServer.shutdown does, with the grace left
    assert journal == [
        "runner started",
        "runner stopped (2.5)",
        "spool closed",
        "sender closed",
    ]


def ops_with_upstream_down(parts: Components) -> OpsHttpServer:
    """The ops endpoint of `parts`, its upstream probe failing as if SES refused connections."""

    async def upstream_down() -> None:
        raise ConnectionRefusedError

    parts.probes["upstream"] = upstream_down
    return OpsHttpServer(parts.metrics.registry, parts.probes, advisory=parts.advisory_probes)


async def test_readyz_of_a_queueing_relay_follows_the_spool_not_the_upstream(
    tmp_path: Path,
) -> None:
    """Upstream down: still ready (reported in the body). Spool full: 503 naming the reason."""
    config = attrs.evolve(RelayConfig(), queue=QueueSettings(max_messages=1))
    parts = await build_components(config, make_runner=recording([]))
    try:
        server = ops_with_upstream_down(parts)
        ready, text = await server.readiness()
        assert ready and "upstream: ConnectionRefusedError (not required)" in text
        assert parts.delivery is not None
        envelope = QueuedEnvelope("a@example.com", ("b@example.org",), received_at=1.0)
        await parts.delivery.spool.put(NewMessage(envelope, b"x"))
        ready, text = await server.readiness()
        assert not ready and "spool: SpoolNotAccepting (queue_full)" in text
    finally:
        await parts.aclose()


async def test_direct_relay_is_unready_when_the_upstream_is_down() -> None:
    config = attrs.evolve(RelayConfig(), queue=QueueSettings(delivery="direct"))
    parts = await build_components(config, make_runner=recording([]))
    try:
        server = ops_with_upstream_down(parts)
        ready, text = await server.readiness()
        assert not ready and text == "not ready: upstream: ConnectionRefusedError\n"
    finally:
        await parts.aclose()


async def test_an_unusable_spool_dir_is_a_one_line_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = attrs.evolve(RelayConfig(), queue=QueueSettings(spool_dir=blocker / "spool"))
    with pytest.raises(ConfigError, match="^RELAY_SPOOL_DIR: cannot open the spool at "):
        await open_spool(config)


async def test_local_spool_metrics_are_exported(tmp_path: Path) -> None:
    """The local spool's puts and fsync'd commits, and the depth gauges after a reading."""
    parts = await build_components(local(tmp_path), make_runner=recording([]))
    try:
        assert parts.delivery is not None
        envelope = QueuedEnvelope("a@example.com", ("b@example.org",), received_at=1.0)
        await parts.delivery.spool.put(NewMessage(envelope, b"x"))
        registry = parts.metrics.registry
        assert registry.get_sample_value("relay_spool_accepted_total") == 1
        assert (registry.get_sample_value("relay_spool_commits_total") or 0) >= 1
        parts.metrics.queue.show(await parts.delivery.spool.stats(), now=11.0)
        assert registry.get_sample_value("relay_queue_messages") == 1
        assert registry.get_sample_value("relay_queue_recipients") == 1
        assert registry.get_sample_value("relay_queue_oldest_age_seconds") == 10.0
        assert (registry.get_sample_value("relay_spool_free_bytes") or 0) > 0
    finally:
        await parts.aclose()


def test_delivery_settings_follow_the_configuration() -> None:
    config = attrs.evolve(
        RelayConfig(server_fqdn="relay.example.com", bounce_from="bounces@example.com"),
        queue=QueueSettings(workers=7, attempt_timeout=12.0, lifetime=3600.0),
    )
    settings = delivery_settings(config)
    assert (settings.workers, settings.attempt_timeout, settings.lifetime) == (7, 12.0, 3600.0)
    assert settings.bounce_from == "bounces@example.com"
    assert settings.null_sender == ""  # local mode keeps <>
    assert settings.reporting_mta == "relay.example.com"
    aws = attrs.evolve(config, upstream_host="email-smtp.eu-west-1.amazonaws.com")
    assert delivery_settings(aws).null_sender == "bounces@example.com"
