"""The processes of `bench/queue_throughput.py` other than the relay: the sink and the load
generator, each in a process of its own (spawned), so that every side pays real process
boundaries as applications, relays and SES do on separate machines.

- `SinkProcess`: the SES stand-in (`SmtpUpstream`: STARTTLS + AUTH + PIPELINING) on uvloop. It
  keeps only (Message-ID, arrival time) per message (its recorded messages are compacted every
  0.2 s, so 100,000 bodies never sit in memory) and answers the parent's requests on a pipe.
  Arrival times are `time.monotonic()`, one system-wide clock on Linux, so the parent compares
  them with its own.
- `load_phase`: a hand-written SMTP client on plain asyncio streams (no SMTP library between
  the measurement and the socket): EHLO, STARTTLS (`writer.start_tls`), EHLO, AUTH PLAIN when
  asked, then MAIL/RCPT/DATA per message, MAIL+RCPT+DATA pipelined when the server offers
  PIPELINING. N messages over C connections sharing one counter; bounded by a deadline.
- `payload`: the ~2 KB benchmark message, also sent by `bench/relay_throughput.py`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gc
import logging
import multiprocessing
import multiprocessing.connection
import ssl
import time
from typing import Any

from ses_core.testing.certs import TestCertificates

USER, PASSWORD = "AKIABENCH", "bench-smtp-password"
BODY = ("x" * 76 + "\r\n") * 24  # ~1.9 KB of body; with headers ~2 KB
#: The longest any single load phase may take (seconds).
PHASE_TIMEOUT = 900.0


def payload(tag: str, number: int) -> tuple[str, bytes]:
    """(Message-ID, ~2 KB message, CRLF line ends, no line starting with a dot)."""
    message_id = f"<{tag}-{number}@bench.example.com>"
    data = (
        f"From: bench@example.com\r\nTo: r{number}@example.org\r\nSubject: bench {number}\r\n"
        f"Message-ID: {message_id}\r\n\r\n{BODY}"
    ).encode()
    return message_id, data


# --- the sink ----------------------------------------------------------------------------------


def _sink_main(certificates: TestCertificates, pipe: multiprocessing.connection.Connection) -> None:
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    from ses_core.testing.upstream import SmtpUpstream

    async def serve() -> None:
        sink = SmtpUpstream(
            certificates.server_context(), credentials=(USER, PASSWORD), pipelining=True
        )
        ids: list[str] = []
        times: list[float] = []

        def compact() -> None:
            received = sink.messages
            count = len(received)
            ids.extend(m.message_id or "" for m in received[:count])
            times.extend(m.received_at for m in received[:count])
            del received[:count]

        async def compactor() -> None:
            while True:
                await asyncio.sleep(0.2)
                compact()

        async with sink:
            # Start-up's objects out of the collector's way: a full collection over them stalls
            # the sink for milliseconds, which would show as arrival jitter it did not receive.
            gc.freeze()
            task = asyncio.create_task(compactor())
            pipe.send(sink.port)
            loop = asyncio.get_running_loop()
            while True:
                request = await loop.run_in_executor(None, pipe.recv)
                compact()
                if request == "stop":
                    break
                if request == "reset":
                    ids.clear()
                    times.clear()
                    pipe.send(None)
                elif request == "count":
                    pipe.send(len(ids))
                elif request == "first":
                    pipe.send(times[0] if times else None)
                elif request == "arrivals":
                    pipe.send((list(ids), list(times)))
            task.cancel()

    import uvloop

    uvloop.run(serve())


class SinkProcess:
    """The sink in its own process (a context manager); `port`, and requests on its pipe."""

    def __init__(self, certificates: TestCertificates) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_sink_main, args=(certificates, child), daemon=True)

    def __enter__(self) -> SinkProcess:
        self._process.start()
        if not self._pipe.poll(30):
            message = "the sink process did not start within 30 s"
            raise RuntimeError(message)
        self.port: int = self._pipe.recv()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._pipe.send("stop")
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def _ask(self, request: str) -> Any:
        self._pipe.send(request)
        if not self._pipe.poll(60):
            message = f"the sink did not answer {request!r} within 60 s"
            raise RuntimeError(message)
        return self._pipe.recv()

    def reset(self) -> None:
        """Forget what arrived so far."""
        self._ask("reset")

    def count(self) -> int:
        """Messages arrived since the last reset."""
        return int(self._ask("count"))

    def first_arrival(self) -> float | None:
        """`time.monotonic()` of the first arrival since the last reset."""
        first: float | None = self._ask("first")
        return first

    def arrivals(self) -> tuple[list[str], list[float]]:
        """Message-IDs and arrival times since the last reset, in arrival order."""
        ids, times = self._ask("arrivals")
        return ids, times


# --- the load generator ------------------------------------------------------------------------


class _Session:
    """One SMTP client session on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pipelining = False

    async def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed by the server")
            text = line.decode("latin-1").rstrip("\r\n")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), lines

    async def command(self, line: str) -> tuple[int, list[str]]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def ehlo(self) -> list[str]:
        code, lines = await self.command("EHLO bench.example.com")
        if code != 250:
            raise ConnectionError(f"EHLO refused: {code} {lines}")
        self.pipelining = any(line.upper().startswith("PIPELINING") for line in lines)
        return lines


async def _open(port: int, *, direct: bool, ca_file: str) -> _Session:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = _Session(reader, writer)
    code, _ = await session.reply()
    if code != 220:
        raise ConnectionError(f"greeting {code}")
    await session.ehlo()
    if direct:
        code, _ = await session.command("STARTTLS")
        if code != 220:
            raise ConnectionError(f"STARTTLS refused: {code}")
        context = ssl.create_default_context(cafile=ca_file)
        await writer.start_tls(context, server_hostname="localhost")
        await session.ehlo()
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        code, _ = await session.command(f"AUTH PLAIN {token}")
        if code != 235:
            raise ConnectionError(f"AUTH refused: {code}")
    return session


async def _send(session: _Session, number: int, tag: str) -> tuple[str, int]:
    message_id, data = payload(tag, number)
    envelope = ["MAIL FROM:<bench@example.com>", f"RCPT TO:<r{number}@example.org>", "DATA"]
    if session.pipelining:
        session.writer.write("".join(f"{line}\r\n" for line in envelope).encode())
        await session.writer.drain()
        codes = [(await session.reply())[0] for _ in envelope]
    else:
        codes = []
        for line in envelope:
            codes.append((await session.command(line))[0])
            if codes[-1] >= 400:
                break
    if codes[:2] != [250, 250] or codes[-1] != 354:
        if len(codes) == 3 and codes[2] == 354:  # DATA accepted despite a refusal: abort it
            session.writer.write(b".\r\n")
            await session.reply()
        await session.command("RSET")
        return message_id, next((c for c in codes if c >= 400), 0)
    session.writer.write(data + b".\r\n")
    await session.writer.drain()
    return message_id, (await session.reply())[0]


async def load_phase(
    *, port: int, direct: bool, ca_file: str, messages: int, connections: int, tag: str
) -> dict[str, Any]:
    """Send `messages` over `connections` sessions as fast as possible: elapsed seconds, the
    rate of 250s, the reply codes counted, and the Message-IDs answered 250."""
    acked: list[str] = []
    codes: dict[int, int] = {}
    numbers = iter(range(messages))

    async def worker() -> None:
        session = await _open(port, direct=direct, ca_file=ca_file)
        try:
            for number in numbers:
                message_id, code = await _send(session, number, tag)
                codes[code] = codes.get(code, 0) + 1
                if code == 250:
                    acked.append(message_id)
            await session.command("QUIT")
        finally:
            session.writer.close()

    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT):
        await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "rate": len(acked) / elapsed, "codes": codes, "acked": acked}


def _load_main(options: dict[str, Any]) -> dict[str, Any]:
    import uvloop

    result: dict[str, Any] = uvloop.run(load_phase(**options))
    return result


class LoadProcess:
    """Runs load phases in one spawned process (a context manager)."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, **options: Any) -> dict[str, Any]:
        """`load_phase(**options)` in the load process; its result (blocking)."""
        return self._pool.submit(_load_main, options).result(PHASE_TIMEOUT + 60)
