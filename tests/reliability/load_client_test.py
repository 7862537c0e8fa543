"""The load client's accounting against a scripted SMTP server on 127.0.0.1, the exactly-once
tally, and the DynamoDB fault proxy: the suites are only as good as these counters."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from tests.reliability.fault_proxy import FaultProxy, ProxyMode
from tests.reliability.load_client import (
    LoadClient,
    LoadPlan,
    LoadResult,
    LoadStats,
    MessageState,
    Verdict,
    tally_deliveries,
)

#: Given the number of DATA transactions finished so far (0-based), the reply to the final '.';
#: None hangs up without replying.
DataScript = Callable[[int], bytes | None]


class ScriptedServer:
    """A minimal SMTP server whose DATA replies (and MAIL replies) follow a script."""

    def __init__(
        self, data_reply: DataScript, mail_reply: Callable[[int], bytes] | None = None
    ) -> None:
        self.data_reply = data_reply
        self.mail_reply = mail_reply or (lambda n: b"250 OK")
        self.transactions = 0
        self.mails = 0
        self.connections = 0
        self.received: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 scripted\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"MAIL":
                    reply = self.mail_reply(self.mails)
                    self.mails += 1
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    body = await reader.readuntil(b"\r\n.\r\n")
                    reply_or_none = self.data_reply(self.transactions)
                    self.transactions += 1
                    if reply_or_none is None:
                        writer.close()
                        return
                    reply = reply_or_none
                    if reply.startswith(b"250"):
                        self.received.append(body)
                elif verb == b"QUIT":
                    reply = b"221 bye"
                else:
                    reply = b"250 OK"
                writer.write(reply + b"\r\n")
                await writer.drain()
                if reply.startswith(b"421"):
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()


@contextlib.asynccontextmanager
async def scripted(server: ScriptedServer) -> AsyncIterator[int]:
    """Serve `server` on an ephemeral loopback port; yield the port."""
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()


def plan(port: int, messages: int = 1, **options: object) -> LoadPlan:
    """A fast plan (millisecond retries, one connection unless told) against `port`."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "messages": messages,
        "connections": 1,
        "run_id": "unit",
        "retry_delay": 0.001,
        "retry_delay_max": 0.01,
        "max_attempts": 5,
        "time_budget": 10.0,
        "command_timeout": 5.0,
    }
    values.update(options)
    return LoadPlan(**values)  # type: ignore[arg-type]


async def test_every_message_is_acked_once_on_a_healthy_server() -> None:
    """A server answering 250 gets each message once, with its own Message-ID."""
    server = ScriptedServer(lambda n: b"250 OK")
    async with scripted(server) as port:
        result = await LoadClient(plan(port, messages=20, connections=3)).run()
    assert result.acked == 20
    assert result.stats.replies_4xx == result.stats.replies_5xx == 0
    ids = {body.split(b"Message-ID: ")[1].split(b"\r\n")[0] for body in server.received}
    assert len(ids) == 20


async def test_a_4xx_is_retried_until_accepted() -> None:
    """A 451 after the body is counted and the message is sent again, then acked."""
    server = ScriptedServer(lambda n: b"451 try later" if n < 2 else b"250 OK")
    async with scripted(server) as port:
        result = await LoadClient(plan(port)).run()
    assert result.states[0].verdict is Verdict.ACKED
    assert result.states[0].attempts == 3
    assert result.stats.replies_4xx == 2
    assert result.stats.codes[451] == 2


async def test_a_5xx_is_final_and_never_retried() -> None:
    """A 554 ends the message as refused after one attempt."""
    server = ScriptedServer(lambda n: b"554 no")
    async with scripted(server) as port:
        result = await LoadClient(plan(port)).run()
    assert result.states[0].verdict is Verdict.REFUSED
    assert result.states[0].attempts == 1
    assert result.stats.replies_5xx == 1


async def test_a_421_at_mail_reconnects_and_retries() -> None:
    """A 421 ends the session; the message is retried on a new one."""
    server = ScriptedServer(
        lambda n: b"250 OK", mail_reply=lambda n: b"421 bye" if n == 0 else b"250 OK"
    )
    async with scripted(server) as port:
        result = await LoadClient(plan(port)).run()
    assert result.states[0].verdict is Verdict.ACKED
    assert server.connections == 2
    assert result.stats.codes[421] == 1


async def test_a_session_lost_after_the_final_dot_counts_as_ambiguous() -> None:
    """No reply after the final '.': counted ambiguous, retried on a new session."""
    server = ScriptedServer(lambda n: None if n == 0 else b"250 OK")
    async with scripted(server) as port:
        result = await LoadClient(plan(port)).run()
    assert result.states[0].verdict is Verdict.ACKED
    assert result.stats.ambiguous == 1
    assert result.stats.connection_errors == 1


async def test_retries_are_bounded_by_max_attempts() -> None:
    """A message deferred on every attempt is given up after max_attempts."""
    server = ScriptedServer(lambda n: b"451 never")
    async with scripted(server) as port:
        result = await LoadClient(plan(port, max_attempts=4)).run()
    assert result.states[0].verdict is Verdict.GAVE_UP
    assert result.states[0].attempts == 4


async def test_an_unreachable_relay_ends_in_give_up_within_the_time_budget(free_port: int) -> None:
    """Connection refused is counted, retried, and the run ends within its budget."""
    started = time.monotonic()
    result = await LoadClient(plan(free_port, max_attempts=1000, time_budget=0.5)).run()
    assert time.monotonic() - started < 5
    assert result.states[0].verdict is Verdict.GAVE_UP
    assert result.stats.connection_errors >= 1


def _result(verdicts: list[Verdict]) -> LoadResult:
    states = tuple(MessageState(n, attempts=1, verdict=v) for n, v in enumerate(verdicts))
    return LoadResult(plan(1, messages=len(verdicts)), states, LoadStats())


def test_tally_counts_lost_duplicated_and_foreign_messages() -> None:
    """Acked but absent is lost; twice is duplicated; unknown and unacked arrivals are apart."""
    result = _result([Verdict.ACKED, Verdict.ACKED, Verdict.ACKED, Verdict.GAVE_UP])
    mid = result.plan.message_id
    received = [mid(0), mid(0), mid(0), mid(1), mid(3), "<unit.99@load.example.com>", None, "<x@y>"]
    tally = tally_deliveries(result, received)
    assert tally.lost == 1  # message 2
    assert tally.duplicated == 1 and tally.extra_copies == 2
    assert tally.unacked_delivered == 1  # message 3
    assert tally.foreign == 1
    assert tally.received == 6


def test_tally_of_a_clean_run_is_all_zero() -> None:
    """Every acked message received once: nothing lost, nothing duplicated."""
    result = _result([Verdict.ACKED, Verdict.REFUSED])
    tally = tally_deliveries(result, [result.plan.message_id(0)])
    assert (tally.lost, tally.duplicated, tally.foreign, tally.unacked_delivered) == (0, 0, 0, 0)


async def _http_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer `200 ok` to every request head (bodies here are tiny and ignored)."""
    while True:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    writer.close()


async def _get(port: int, requests: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for _ in range(requests):
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            answers.append(head.split(b"\r\n")[0] + b" " + await reader.readexactly(length))
    finally:
        writer.close()
    return answers


@pytest.mark.parametrize(
    ("mode", "first_line"),
    [
        (ProxyMode.PASS, b"HTTP/1.1 200 OK ok"),
        (ProxyMode.ERROR, b"HTTP/1.1 500 Internal Server Error"),
    ],
)
async def test_fault_proxy_forwards_or_answers_500(mode: ProxyMode, first_line: bytes) -> None:
    """PASS forwards requests on a kept-alive connection; ERROR answers a DynamoDB 500."""
    backend = await asyncio.start_server(_http_backend, "127.0.0.1", 0)
    proxy = FaultProxy("127.0.0.1", int(backend.sockets[0].getsockname()[1]))
    await proxy.start()
    try:
        proxy.mode = mode
        answers = await _get(proxy.port, requests=2 if mode is ProxyMode.PASS else 1)
        assert answers[0].startswith(first_line)
        if mode is ProxyMode.ERROR:
            assert b"InternalServerError" in answers[0]
            assert proxy.faulted == 1
        else:
            assert proxy.requests == 2
    finally:
        await proxy.stop()
        backend.close()


async def test_fault_proxy_delays_each_request() -> None:
    """DELAY holds every request for the configured time before forwarding it."""
    backend = await asyncio.start_server(_http_backend, "127.0.0.1", 0)
    proxy = FaultProxy("127.0.0.1", int(backend.sockets[0].getsockname()[1]), delay=0.1)
    await proxy.start()
    try:
        proxy.mode = ProxyMode.DELAY
        started = time.monotonic()
        answers = await _get(proxy.port, requests=2)
        assert time.monotonic() - started >= 0.2
        assert all(a.endswith(b"ok") for a in answers)
        assert proxy.faulted == 2
    finally:
        await proxy.stop()
        backend.close()


def test_reply_classes_are_counted_by_first_digit() -> None:
    """2xx/3xx count as positive, 4xx as transient, 5xx as permanent."""
    stats = LoadStats()
    for code in (250, 354, 421, 451, 554):
        stats.count(code)
    assert (stats.replies_2xx, stats.replies_4xx, stats.replies_5xx) == (2, 2, 1)
    assert stats.codes == collections.Counter({250: 1, 354: 1, 421: 1, 451: 1, 554: 1})
