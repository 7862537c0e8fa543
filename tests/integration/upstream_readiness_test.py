"""`/readyz`'s upstream probe at peak traffic and when SES stops answering (issue 13, item 1).

The real parts: the pooled `SesSmtpClient` with a real `LocalRateLimiter` at 20 recipients per
second, the scripted SES stand-in (STARTTLS + AUTH) on loopback, and the relay's own ops endpoint
(`OpsHttpServer`, 5 s probe timeout as deployed) serving `client.probe` as `/readyz`. Peak traffic
is 200 messages queued at once: every pool slot is then held by a session waiting mid-DATA for
its rate tokens (the late charge), and the rest wait for a slot. The bounds are the issue's: every
poll answers 200 within 1 s while that lasts; once the upstream stops answering (listener closed,
or accepting and silent), idle or under load, `/readyz` answers 503 within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from relay.ops_http import OpsHttpServer
from ses_core.ratelimit import LocalRateLimiter
from ses_core.smtp import OutboundMessage, SendResult
from ses_core.smtp.client import SesSmtpClient
from ses_core.testing.certs import TestCertificates
from ses_core.testing.ports import LOOPBACK
from ses_core.testing.upstream import SmtpUpstream
from tests.integration.relay_support import message, upstream_settings

POOL_SIZE = 4
RATE = 20.0
QUEUED = 200
#: The issue's bounds.
READY_WITHIN = 1.0
NOT_READY_WITHIN = 5.0


class SilenceableProxy:
    """A TCP proxy to the upstream that can fall silent without closing anything.

    After `silence()` the connections already open stay open and forward nothing either way, and
    new connections are accepted and never answered: an upstream that hangs or is black-holed,
    which a closed listener does not cover (no error ever arrives, only silence).
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._silent = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)

    def silence(self) -> None:
        self._silent = True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self._silent:
                await self._pump(reader, None)
                return
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self._upstream_port)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> None:
        # Ends at EOF; `stop` aborts every transport, so no pump outlives the test.
        while data := await reader.read(65536):
            if self._silent or writer is None:
                continue  # swallowed: the other side never hears back
            writer.write(data)
            await writer.drain()
        if writer is not None:
            writer.transport.abort()


async def readyz(port: int) -> tuple[int, float]:
    """GET /readyz: (HTTP status, seconds it took); 0 when nothing answered within 10 s."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(10.0):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            try:
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: relay\r\n\r\n")
                response = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0, time.monotonic() - started
    return int(response.split()[1]), time.monotonic() - started


class Rig:
    """The client (through `proxy` when given), its limiter, the ops endpoint and the load."""

    def __init__(self, client: SesSmtpClient, limiter: LocalRateLimiter, ops: OpsHttpServer):
        self.client = client
        self.limiter = limiter
        self.ops = ops
        self.sends: list[asyncio.Task[SendResult]] = []

    async def peak(self) -> None:
        """Queue `QUEUED` messages; return once every pool slot is held by one of them."""
        self.sends = [
            asyncio.create_task(
                self.client.send(
                    OutboundMessage("app@example.com", (f"r{n}@example.org",), message(n))
                )
            )
            for n in range(QUEUED)
        ]
        for _ in range(500):
            if self.client.stats.in_use == POOL_SIZE and self.limiter.waiting > 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the load never held the pool: {self.client.stats}")

    @property
    def pending(self) -> int:
        return sum(1 for task in self.sends if not task.done())


@contextlib.asynccontextmanager
async def rig(
    upstream: SmtpUpstream, certificates: TestCertificates, proxy: SilenceableProxy | None
) -> AsyncIterator[Rig]:
    limiter = LocalRateLimiter(RATE, burst=1)
    # The deployed default SMTP timeout (30 s): the probe must not wait for it.
    settings = upstream_settings(
        upstream,
        certificates,
        port=upstream.port if proxy is None else proxy.port,
        pool_size=POOL_SIZE,
        timeout=30.0,
    )
    client = SesSmtpClient(settings, limiter=limiter)
    ops = OpsHttpServer(CollectorRegistry(), {"upstream": client.probe}, port=0)
    await ops.start()
    state = Rig(client, limiter, ops)
    try:
        yield state
    finally:
        for task in state.sends:
            task.cancel()
        await asyncio.gather(*state.sends, return_exceptions=True)
        if proxy is not None:
            await proxy.stop()  # a silent peer would hold every QUIT for its timeout
        await client.aclose()
        await ops.aclose()


async def test_readyz_answers_200_within_1s_while_200_messages_wait_for_tokens(
    upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """200 messages queued at 20/s hold every pool slot; /readyz still answers 200 at once."""
    async with rig(upstream, certificates, None) as state:
        await state.peak()
        polls = []
        for _ in range(15):
            status, took = await readyz(state.ops.port)
            polls.append((status, round(took, 3), state.client.stats.in_use))
            await asyncio.sleep(0.2)
        still_queued = state.pending
    assert all(status == 200 and took < READY_WITHIN for status, took, _ in polls), polls
    # The peak lasted through every poll: all slots lent to sends, most messages still waiting.
    assert all(in_use == POOL_SIZE for _, _, in_use in polls), polls
    assert still_queued > QUEUED // 2


@pytest.mark.parametrize("load", ["idle", "peak"])
@pytest.mark.parametrize("stop", ["listener_closed", "silent"])
async def test_readyz_turns_503_within_5s_once_the_upstream_stops_answering(
    upstream: SmtpUpstream, certificates: TestCertificates, load: str, stop: str
) -> None:
    """Ready first; then the upstream closes its listener (and drops its sessions) or falls
    silent (connections accepted, nothing answered); the first 503 comes within 5 s."""
    proxy = None
    if stop == "silent":
        proxy = SilenceableProxy(upstream.port)
        await proxy.start()
    async with rig(upstream, certificates, proxy) as state:
        first = OutboundMessage("app@example.com", ("first@example.org",), message())
        assert (await state.client.send(first)).all_accepted
        if load == "peak":
            await state.peak()
        status, took = await readyz(state.ops.port)
        assert (status, took < READY_WITHIN) == (200, True), (status, took)
        queued = state.pending
        stopped = time.monotonic()
        if proxy is not None:
            proxy.silence()
        else:
            await upstream.stop()
        answers = []
        for _ in range(50):
            status, _took = await readyz(state.ops.port)
            answers.append((status, round(time.monotonic() - stopped, 2)))
            if status == 503 or time.monotonic() - stopped > 2 * NOT_READY_WITHIN:
                break
            await asyncio.sleep(0.2)
    if load == "peak":
        assert queued > QUEUED // 2  # the upstream stopped under load
    status, after = answers[-1]
    assert status == 503 and after <= NOT_READY_WITHIN, answers
