"""The relay's optional HTTPS listener for Amazon SNS deliveries (`RELAY_SNS_LISTEN`).

Like the ops endpoint (`relay.ops_http`), one route does not justify a web framework:
`asyncio.start_server` with TLS serves `POST /` on the relay's event loop, one request per
connection. It is exposed to the internet (SNS must reach it), so every step is bounded: the TLS
handshake and the request head (`HEADER_TIMEOUT`), the body (`MAX_BODY_BYTES`, announced by
`Content-Length`, else 411/413 before anything is read; `BODY_TIMEOUT`), and the connections
handled at once (`MAX_CONNECTIONS`; beyond that 503, which SNS retries). Only `POST` (405) to `/`
(404) is served. The body goes to `relay.sns_endpoint.SnsMessageHandler` on threads of the
endpoint's own (it blocks on certificate fetches and store writes), never on the loop.

`build_sns_endpoint` is the wiring seam: production passes only the settings and the relay's
blacklist; tests inject the signature verifier (a test certificate) and the confirmer (no
network) instead of loosening the verifier's certificate-host checks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from relay._env import ConfigError
from relay.sns_settings import SnsSettings

if TYPE_CHECKING:
    from relay.sns_endpoint import Confirmer, SnsReply
    from ses_core.feedback.sns_signature import SnsSignatureVerifier

log = logging.getLogger(__name__)

#: SNS messages are at most 256 KiB; their JSON envelope adds a few KiB of escaping at most.
MAX_BODY_BYTES = 256 * 1024 + 16 * 1024
#: Request lines and headers of SNS deliveries are well under 8 KiB.
MAX_HEAD_BYTES = 16 * 1024
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
MAX_CONNECTIONS = 32
PATH = "/"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class SnsHttpServer:
    """Serves `POST /` over TLS on `host:port`, handing each body to `handle` (blocking)."""

    def __init__(
        self,
        handle: Callable[[bytes], SnsReply],
        ssl_context: ssl.SSLContext,
        *,
        host: str = "127.0.0.1",
        port: int = 8443,
        max_body: int = MAX_BODY_BYTES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._handle = handle
        self._context = ssl_context
        self._host = host
        self._port = port
        self._max_body = max_body
        self._max_connections = max_connections
        self._active = 0
        self._server: asyncio.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start serving."""
        self._executor = ThreadPoolExecutor(self._max_connections, thread_name_prefix="sns")
        self._server = await asyncio.start_server(
            self._serve,
            self._host,
            self._port,
            ssl=self._context,
            ssl_handshake_timeout=HEADER_TIMEOUT,
            limit=MAX_HEAD_BYTES,
        )
        log.info("SNS endpoint on https://%s:%d%s", self._host, self.port, PATH)

    async def aclose(self) -> None:
        """Stop serving; requests being handled finish on their threads."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._active += 1
        try:
            if self._active > self._max_connections:
                status, text = 503, "busy"
            else:
                status, text = await self._respond(reader)
        except (
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,  # StreamReader's "separator is found, but chunk is longer than limit"
            ConnectionError,
            ssl.SSLError,
        ):
            writer.close()
            return
        finally:
            self._active -= 1
        body = (text + "\n").encode("utf-8", "replace")
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + body)
            async with asyncio.timeout(HEADER_TIMEOUT):
                await writer.drain()
        except (ConnectionError, asyncio.TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        async with asyncio.timeout(HEADER_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "bad request"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target != PATH:
            return 404, "not found"
        if method != "POST":
            return 405, "method not allowed"
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length_text = headers.get("content-length")
        if "transfer-encoding" in headers or length_text is None:
            return 411, "Content-Length required"
        if not length_text.isdigit():
            return 400, "bad Content-Length"
        length = int(length_text)
        if length > self._max_body:
            return 413, f"body larger than {self._max_body} bytes"
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await reader.readexactly(length)
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(self._executor, self._handle, body)
        return reply.status, reply.text


def sns_server_context(settings: SnsSettings) -> ssl.SSLContext:
    """The listener's TLS context; ConfigError naming the variables on a bad file."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.cert_path), str(settings.key_path))
    except (OSError, ssl.SSLError) as exc:
        message = f"RELAY_SNS_CERT_PATH/RELAY_SNS_KEY_PATH: cannot load certificate and key ({exc})"
        raise ConfigError(message) from None
    return context


def build_sns_endpoint(
    settings: SnsSettings | None,
    blacklist: Any,
    *,
    verifier: SnsSignatureVerifier | None = None,
    confirm: Confirmer | None = None,
) -> SnsHttpServer | None:
    """The endpoint for `settings` (None when off), writing to the relay's `blacklist`."""
    if settings is None:
        return None
    if blacklist is None:
        message = (
            "RELAY_SNS_LISTEN: the SNS endpoint writes to the relay's blacklist; set "
            "RELAY_BLACKLIST_SQLITE, or USE_BLACKLIST with DYNAMODB_TABLE"
        )
        raise ConfigError(message)
    from relay.sns_endpoint import SnsMessageHandler, UrllibConfirmer
    from ses_core.blacklist.feedback_writer import FeedbackWriter
    from ses_core.feedback.sns_signature import SnsSignatureVerifier

    handler = SnsMessageHandler(
        verifier or SnsSignatureVerifier(expected_topic_arns=settings.topic_arns),
        FeedbackWriter(blacklist, logger=logging.getLogger("relay.sns_endpoint")),
        topic_arns=settings.topic_arns,
        confirm=confirm or UrllibConfirmer(),
    )
    log.info("SNS endpoint accepts topic(s): %s", ", ".join(sorted(settings.topic_arns)))
    return SnsHttpServer(
        handler.handle, sns_server_context(settings), host=settings.host, port=settings.port
    )
