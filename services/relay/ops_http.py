"""A tiny HTTP/1.1 endpoint for operations: `/metrics`, `/healthz`, `/readyz`.

Three GET routes do not justify a web framework; `asyncio.start_server` serves them on the relay's
event loop. Each response closes the connection. `/readyz` runs the relay's readiness probes
(upstream NOOP on the probe's own session, outside the send pool so that it never queues behind
sends waiting for rate tokens; Redis; DynamoDB) with a timeout and answers 503 with the failing
probe's name and error class, never with a traceback. A probe named in `advisory` is reported
in the body but does not make the relay unready: in queue mode the upstream (the queue absorbs an
SES outage, so a queueing relay is ready while its spool can accept). A probe may raise `NotReady`
with a short reason that is safe to show (the spool's "disk_full").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: A readiness probe: returns when ready, raises otherwise.
Probe = Callable[[], Awaitable[None]]


class NotReady(Exception):
    """Raised by a probe with a short reason `/readyz` shows (no secret, no traceback)."""


_MAX_REQUEST_BYTES = 8192
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


class OpsHttpServer:
    """Serves the registry's metrics and the health/readiness probes on `host:port`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        probes: dict[str, Probe],
        *,
        host: str = "127.0.0.1",
        port: int = 9125,
        probe_timeout: float = 5.0,
        advisory: frozenset[str] = frozenset(),
        exposition: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self._registry = registry
        self._probes = probes
        self._host = host
        self._port = port
        self._timeout = probe_timeout
        self._advisory = advisory
        # Replaces the registry's own exposition (a queueing relay merges its delivery
        # process's families in: `relay.delivery_process`).
        self._exposition = exposition
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("ops endpoint on http://%s:%d (/metrics /healthz /readyz)", self._host, self.port)

    async def aclose(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def readiness(self) -> tuple[bool, str]:
        """Run every probe; return (ready, text). Advisory probes' failures are listed after
        `ready` without changing it."""
        failures = []
        notes = []
        for name, probe in self._probes.items():
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
                # that arrives just as the probe completes.
                async with asyncio.timeout(self._timeout):
                    await probe()
            except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - reported, see below
                # A probe must answer for any failure; the class name tells the operator which
                # dependency failed and the details are logged, not sent.
                log.warning(
                    "readiness check %s failed: %s", name, type(exc).__name__, exc_info=True
                )
                detail = type(exc).__name__
                if isinstance(exc, NotReady) and str(exc):
                    detail = f"{detail} ({exc})"
                if name in self._advisory:
                    notes.append(f"{name}: {detail} (not required)")
                else:
                    failures.append(f"{name}: {detail}")
        if failures:
            return False, "not ready: " + "; ".join(failures + notes) + "\n"
        if notes:
            return True, "ready; " + "; ".join(notes) + "\n"
        return True, "ready\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                status, content_type, body = await self._respond(reader)
        except (
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            writer.close()
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_REQUEST_BYTES:
            return 400, "text/plain", b"request too large\n"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in {"GET", "HEAD"}:
            return 405, "text/plain", b"method not allowed\n"
        if target == "/metrics":
            if self._exposition is not None:
                return 200, CONTENT_TYPE_LATEST, await self._exposition()
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if target == "/healthz":
            return 200, "text/plain", b"ok\n"
        if target == "/readyz":
            ready, text = await self.readiness()
            return (200 if ready else 503), "text/plain", text.encode()
        return 404, "text/plain", b"not found\n"
