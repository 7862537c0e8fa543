"""The relay daemon: the SMTP listener, the ops endpoint, signals and graceful shutdown.

`serve(config, *, shutdown_trigger=None)` is modelled on hypercorn's `worker_serve`: it starts the
SMTP listener and the ops HTTP endpoint, waits for SIGTERM/SIGINT (or for the injected trigger,
which tests use), and then shuts down in order:

1. stop accepting connections;
2. answer any new command on an open session with `421 4.3.2` and close it, while transactions
   already in flight (MAIL given, or DATA being relayed) may finish, for up to
   `RELAY_GRACE_PERIOD` seconds;
3. close what is left (idle sessions get an unsolicited 421, RFC 5321 section 3.8);
4. stop the queue's delivery workers with what is left of the grace period: deliveries in flight
   finish, every other message stays in the spool for the next start;
5. close the components (spool, sender pool, limiter, blacklist, ...) and the HTTP endpoint.

Each connection gets a `relay.session.RelaySession`; the objects it and the listener run with
come from `relay.wiring`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relay.access import refuse_open_relay
from relay.config import RelayConfig
from relay.ops_http import OpsHttpServer
from relay.session import OpenSessions, RelaySession
from relay.wiring import Components, build_components, build_handler, build_session_policy

log = logging.getLogger(__name__)

#: asyncio's default backlog (100) makes connection bursts wait for SYN retries.
_LISTEN_BACKLOG = 1024


class RelayServer:
    """The SMTP listener, its sessions, the ops endpoint, and orderly shutdown.

    Attributes:
        config: the relay's configuration.
        components: what the relay runs with (closed on shutdown).
        metrics: the relay's metrics.
        sessions: the open client sessions and the draining flag.
    """

    def __init__(self, config: RelayConfig, components: Components) -> None:
        self.config = config
        self.components = components
        self.metrics = components.metrics
        self.sessions = OpenSessions(self.metrics.sessions)
        self._handler = build_handler(config, components)
        self._session_policy = build_session_policy(config, components, self.sessions)
        self._server: asyncio.AbstractServer | None = None
        self._http: OpsHttpServer | None = None
        self._bound_port = config.listen_port

    @property
    def port(self) -> int:
        """The bound SMTP port (useful when configured with port 0)."""
        return self._bound_port

    @property
    def metrics_port(self) -> int | None:
        """The bound ops HTTP port, or None when disabled."""
        return self._http.port if self._http is not None else None

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun."""
        return self.sessions.draining

    def _new_session(self) -> RelaySession:
        return RelaySession(self._handler, self._session_policy)

    async def start(self) -> None:
        """Bind the SMTP listener and the ops endpoint."""
        loop = asyncio.get_running_loop()
        tls_context = self.components.tls_context
        self._server = await loop.create_server(
            self._new_session,
            host=self.config.listen_host,
            port=self.config.listen_port,
            ssl=tls_context if self.config.implicit_tls else None,
            backlog=_LISTEN_BACKLOG,
        )
        self._bound_port = int(self._server.sockets[0].getsockname()[1])
        if self.config.metrics_port is not None:
            self._http = OpsHttpServer(
                self.metrics.registry,
                {"accepting": self._probe_accepting, **self.components.probes},
                host=self.config.metrics_host,
                port=self.config.metrics_port,
                advisory=self.components.advisory_probes,
                exposition=delivery.exposition if (delivery := self.components.delivery) else None,
            )
            await self._http.start()
        if self.components.sns_endpoint is not None:
            await self.components.sns_endpoint.start()
        if self.config.implicit_tls:
            tls = "implicit TLS"
        else:
            tls = "STARTTLS" if tls_context is not None else "no TLS"
        if not self.components.credentials.enabled:
            auth = "off"
        else:
            auth = "required" if self.config.auth_required else "optional"
        upstream = (
            "local mode"
            if self.config.local_mode
            else f"upstream {self.config.upstream_host or 'SES v2 API'}"
        )
        log.info(
            "relay listening on %s:%d (%s, AUTH %s, %s)",
            self.config.listen_host,
            self.port,
            tls,
            auth,
            upstream,
        )

    async def _probe_accepting(self) -> None:
        """Readiness: not ready once draining, so load balancers stop sending new clients."""
        if self.draining:
            raise ConnectionRefusedError("shutting down")

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight transactions within the grace period, close all."""
        started = time.monotonic()
        self.sessions.start_draining()
        if self._server is not None:
            self._server.close()
        log.info(
            "shutting down: %d session(s) open, %d transaction(s) in flight, grace %.1fs",
            len(self.sessions),
            len(self.sessions.in_transaction()),
            self.config.grace_period,
        )
        deadline = started + self.config.grace_period
        while self.sessions.in_transaction() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = self.sessions.in_transaction()
        if left:
            log.warning("grace period over: closing %d session(s) mid-transaction", len(left))
        for session in self.sessions:
            session.abort_idle()
        if self.components.delivery is not None:
            # In-flight deliveries finish within what is left of the grace; the rest stays queued.
            await self.components.delivery.stop(max(0.0, deadline - time.monotonic()))
        if self._server is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            except asyncio.TimeoutError:
                log.debug("listener did not report closed within 1s")
        if self.components.sns_endpoint is not None:
            await self.components.sns_endpoint.aclose()  # before the blacklist it writes to
        await self.components.aclose()
        if self._http is not None:
            await self._http.aclose()
        log.info("relay stopped after %.2fs", time.monotonic() - started)


async def serve(
    config: RelayConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    components: Components | None = None,
    on_started: Callable[[RelayServer], None] | None = None,
    delivery_process: bool = False,
) -> None:
    """Run the relay until SIGTERM/SIGINT (or until `shutdown_trigger()` returns), then stop.

    `components` are built from `config` (`relay.wiring`) unless given; either way the relay
    closes them when it stops. `on_started` receives the running server (tests read its ports).
    `delivery_process` runs queue delivery in a child process (`relay.main` sets it).
    """
    refuse_open_relay(config)
    parts = (
        components
        if components is not None
        else await build_components(config, delivery_process=delivery_process)
    )
    try:
        server = RelayServer(config, parts)
        await server.start()
    except BaseException:
        if components is None:
            await parts.aclose()
        raise
    if on_started is not None:
        on_started(server)
    try:
        if shutdown_trigger is None:
            await _wait_for_signal()
        else:
            await shutdown_trigger()
    finally:
        await server.shutdown()


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("signal received, shutting down")
