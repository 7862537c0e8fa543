"""Opening and dropping one authenticated TLS session to the SES SMTP endpoint.

TLS is never optional: STARTTLS on 25/587/2587 (a server that does not offer it is refused
before any credentials are sent), implicit TLS on 465/2465; TLS 1.2 minimum; the certificate and
the host name are always verified (`ca_file` only replaces the trusted CAs, for tests). Every
failure to open becomes a `ConnectFailure` carrying a reply-like code, text and class, so the
client can defer the mail with a reason and the pool can back off.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import aiosmtplib

from ses_core.smtp._pipelining import enable_pipelining
from ses_core.smtp.results import ReplyClass, classify_reply
from ses_core.smtp.settings import SmtpSettings

log = logging.getLogger(__name__)


class ConnectFailure(Exception):
    """Opening a session failed; carries a reply-like code/text and what it means.

    Internal to the client: `SesSmtpClient` turns it into DEFERRED results, `probe()` into
    `UpstreamUnavailable`.
    """

    def __init__(self, code: int, text: str, reply_class: ReplyClass) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.reply_class = reply_class


def build_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context: TLS 1.2+, certificate and host-name verification always on."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


async def open_session(
    settings: SmtpSettings, tls_context: ssl.SSLContext, local_hostname: str
) -> aiosmtplib.SMTP:
    """Connect, secure, authenticate; the session's protocol can pipeline. Raises
    `ConnectFailure` (never an aiosmtplib or OS error) when no usable session results."""
    smtp = aiosmtplib.SMTP(
        local_hostname=local_hostname,
        timeout=settings.timeout,
        use_tls=settings.uses_implicit_tls,
        start_tls=False,
        tls_context=tls_context,
    )
    try:
        if settings.uses_implicit_tls:
            # aiosmtplib verifies the name it connects to; to verify `server_hostname` while
            # connecting to `host`, hand it a connected socket.
            sock = await _connect_socket(settings.host, settings.port, settings.timeout)
            await smtp.connect(hostname=settings.tls_server_name, sock=sock)
        else:
            await smtp.connect(hostname=settings.host, port=settings.port)
            await _starttls(smtp, settings)
        await _login(smtp, settings)
        enable_pipelining(smtp)
    except BaseException as exc:
        # Once handed over, the socket belongs to the transport, which closes it.
        smtp.close()
        if isinstance(exc, ConnectFailure | asyncio.CancelledError):
            raise
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reply_class = class_while_opening(exc.code, exc.message)
            raise ConnectFailure(exc.code, exc.message, reply_class) from exc
        certificate_error = _find_cause(exc, ssl.SSLCertVerificationError)
        if certificate_error is not None:
            text = f"4.7.5 upstream certificate not trusted: {certificate_error.verify_message}"
            raise ConnectFailure(451, text, ReplyClass.AUTH) from exc
        if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
            # OSError covers refused connections and ssl.SSLError (a failed handshake).
            text = f"4.4.1 cannot connect to upstream: {_describe(exc)}"
            raise ConnectFailure(451, text, ReplyClass.CONNECTION) from exc
        raise
    return smtp


async def _starttls(smtp: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    await smtp.ehlo()
    if not smtp.supports_extension("starttls"):
        text = "4.7.0 upstream does not offer STARTTLS; refusing to send credentials in clear"
        raise ConnectFailure(451, text, ReplyClass.AUTH)
    await smtp.starttls(server_hostname=settings.server_hostname)
    await smtp.ehlo()


async def _login(smtp: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    if smtp.get_transport_info("sslcontext") is None:
        # Never reached with the settings allowed, but the credentials' safety must not
        # depend on the branches above staying right.
        raise ConnectFailure(451, "4.7.0 session not encrypted", ReplyClass.AUTH)
    if smtp.is_ehlo_or_helo_needed:
        await smtp.ehlo()
    if settings.username is None:
        return
    # One mechanism, one try: aiosmtplib's login() would try every advertised mechanism in
    # turn, a blind retry of a "454 Temporary authentication failure".
    if "plain" in smtp.server_auth_methods:
        await smtp.auth_plain(settings.username, settings.password or "")
    elif "login" in smtp.server_auth_methods:
        await smtp.auth_login(settings.username, settings.password or "")
    else:
        text = "4.7.0 upstream offers neither AUTH PLAIN nor AUTH LOGIN"
        raise ConnectFailure(451, text, ReplyClass.AUTH)


def abort_session(smtp: aiosmtplib.SMTP) -> None:
    """Drop a session at once, without flushing its buffer or a polite TLS close.

    A broken or interrupted session must not send what is still buffered: after a cancelled DATA
    that could be the final '.'.
    """
    transport = smtp.transport
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.abort()
    smtp.close()


async def quit_quietly(smtp: aiosmtplib.SMTP) -> None:
    """Say QUIT with a short timeout; the session is going away whatever the answer."""
    try:
        if smtp.is_connected:
            await smtp.quit(timeout=2.0)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        log.debug("QUIT failed while closing: %s", _describe(exc))
    finally:
        smtp.close()


def class_while_opening(code: int, text: str) -> ReplyClass:
    """Class of a reply received while opening a session: never PERMANENT for the message."""
    reply_class = classify_reply(code, text)
    if reply_class in (ReplyClass.PERMANENT, ReplyClass.SUCCESS, ReplyClass.TRANSIENT):
        return ReplyClass.CONNECTION
    return reply_class


def _describe(exc: BaseException) -> str:
    """`Type: text` of an exception, for a log line or a reply text."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _find_cause(
    exc: BaseException, kind: type[ssl.SSLCertVerificationError]
) -> ssl.SSLCertVerificationError | None:
    """The first exception of `kind` in `exc`'s cause/context chain (aiosmtplib wraps them)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def _connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected non-blocking TCP socket to host:port (first address that answers)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last_error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, address)
        except (OSError, TimeoutError) as exc:
            sock.close()
            last_error = exc if isinstance(exc, OSError) else OSError(f"timed out: {address}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last_error or OSError(f"no address for {host}:{port}")
