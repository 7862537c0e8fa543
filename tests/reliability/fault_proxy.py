"""A fault-injecting TCP proxy on 127.0.0.1 for HTTP dependencies (the relay's DynamoDB endpoint).

The relay talks to a moto server through this proxy, exactly as it would to DynamoDB. While the
mode is `PASS` requests flow untouched; `DELAY` holds every request for `delay` seconds (a slow
service, request by request, also on kept-alive connections); `ERROR` answers the next request
with an HTTP 500 DynamoDB `InternalServerError` and closes the connection; `RESET` closes the
connection without an answer. The proxy reads whole HTTP/1.1 requests (head and Content-Length
body), so a fault applies once per request however the client splits it into writes. The mode can
change while connections are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging

log = logging.getLogger(__name__)

_ERROR_BODY = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
    b'"message":"Internal server error (injected by the reliability suite)"}'
)
_ERROR_RESPONSE = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/x-amz-json-1.0\r\n"
    b"Content-Length: " + str(len(_ERROR_BODY)).encode() + b"\r\nConnection: close\r\n\r\n"
) + _ERROR_BODY


class ProxyMode(enum.Enum):
    """What the proxy does to traffic."""

    PASS = "pass"
    DELAY = "delay"
    ERROR = "error"
    RESET = "reset"


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `target_host:target_port`, with injectable faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: float = 2.0,
        probe_marker: bytes | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.mode = ProxyMode.PASS
        self.delay = delay
        self.probe_marker = probe_marker
        self.requests = 0
        self.faulted = 0
        #: Faults applied to requests without `probe_marker`: the relay's own mail traffic, as
        #: opposed to its readiness probe (which alone could account for every fault).
        self.faulted_traffic = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The listening port."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and cut every forwarded connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("proxied connection broke")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if request is None or await self._faulted(writer, request):
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        upstream = asyncio.create_task(self._copy_back(up_reader, writer))
        try:
            while request is not None:
                if self.mode is ProxyMode.DELAY:
                    self._count_fault(request)
                    await asyncio.sleep(self.delay)
                elif await self._faulted(writer, request):
                    break
                self.requests += 1
                up_writer.write(request)
                await up_writer.drain()
                request = await _read_request(reader)
        finally:
            upstream.cancel()
            await asyncio.gather(upstream, return_exceptions=True)
            up_writer.close()

    def _count_fault(self, request: bytes) -> None:
        self.faulted += 1
        if self.probe_marker is None or self.probe_marker not in request:
            self.faulted_traffic += 1

    async def _faulted(self, writer: asyncio.StreamWriter, request: bytes) -> bool:
        """Apply ERROR/RESET to this connection; True when it was faulted (and must end)."""
        if self.mode is ProxyMode.ERROR:
            self._count_fault(request)
            with contextlib.suppress(ConnectionError):
                writer.write(_ERROR_RESPONSE)
                await writer.drain()
            return True
        if self.mode is ProxyMode.RESET:
            self._count_fault(request)
            transport = writer.transport
            if hasattr(transport, "abort"):
                transport.abort()
            return True
        return False

    @staticmethod
    async def _copy_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole HTTP/1.1 request (head and Content-Length body), or None at end of stream.

    Faults apply per request, so a delay is added once per call however the client splits it.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body
