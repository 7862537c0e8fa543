"""Unit tests for relay.ops_http: routes, readiness failures, bad requests (loopback socket)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter

from relay.ops_http import NotReady, OpsHttpServer


async def fetch(port: int, request: bytes) -> str:
    """Send a raw request; return the raw response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response.decode()


async def test_routes() -> None:
    """/metrics serves the given registry, /healthz ok, unknown 404, POST 405, junk 400."""
    registry = CollectorRegistry()
    Counter("probe_things", "things", registry=registry).inc()
    server = OpsHttpServer(registry, {}, port=0)
    await server.start()
    try:
        metrics = await fetch(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert metrics.startswith("HTTP/1.1 200") and "probe_things_total 1.0" in metrics
        assert (await fetch(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")).endswith("ok\n")
        assert (await fetch(server.port, b"GET /readyz HTTP/1.1\r\n\r\n")).endswith("ready\n")
        assert (await fetch(server.port, b"GET /x HTTP/1.1\r\n\r\n")).startswith("HTTP/1.1 404")
        assert (await fetch(server.port, b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(
            "HTTP/1.1 405"
        )
        assert (await fetch(server.port, b"nonsense\r\n\r\n")).startswith("HTTP/1.1 400")
    finally:
        await server.aclose()


async def test_readiness_reports_failing_probes_without_details() -> None:
    """A failing or hanging probe makes /readyz 503 naming the probe and error class only."""

    async def broken() -> None:
        raise ConnectionError("secret-host:6379 refused")

    async def hanging() -> None:
        await asyncio.sleep(10)

    async def fine() -> None:
        return None

    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "redis": broken,
        "upstream": hanging,
        "dynamodb": fine,
    }
    server = OpsHttpServer(CollectorRegistry(), probes, port=0, probe_timeout=0.05)
    await server.start()
    try:
        response = await fetch(server.port, b"GET /readyz HTTP/1.1\r\n\r\n")
    finally:
        await server.aclose()
    assert response.startswith("HTTP/1.1 503")
    assert "redis: ConnectionError" in response and "upstream: TimeoutError" in response
    assert "secret-host" not in response and "dynamodb" not in response


async def test_advisory_probe_is_reported_but_keeps_the_relay_ready() -> None:
    """Queue mode: the upstream down is shown in the body, the answer stays 200; a required
    probe (the spool) that fails makes it 503 with its safe reason."""

    async def upstream_down() -> None:
        raise ConnectionRefusedError("secret detail")

    async def spool_full() -> None:
        raise NotReady("disk_full")

    server = OpsHttpServer(
        CollectorRegistry(), {"upstream": upstream_down}, advisory=frozenset({"upstream"})
    )
    assert await server.readiness() == (
        True,
        "ready; upstream: ConnectionRefusedError (not required)\n",
    )
    both = OpsHttpServer(
        CollectorRegistry(),
        {"upstream": upstream_down, "spool": spool_full},
        advisory=frozenset({"upstream"}),
    )
    ready, text = await both.readiness()
    assert not ready
    assert text == (
        "not ready: spool: NotReady (disk_full); upstream: ConnectionRefusedError (not required)\n"
    )
    assert "secret detail" not in text
