"""The relay daemon: an aiosmtpd server subclass, start-up wiring and graceful shutdown.

`serve(config, *, shutdown_trigger=None)` is modelled on hypercorn's `worker_serve`: it starts the
SMTP listener and the ops HTTP endpoint, waits for SIGTERM/SIGINT (or for the injected trigger,
which tests use), and then shuts down in order:

1. stop accepting connections;
2. answer any new command on an open session with `421 4.3.2` and close it, while transactions
   already in flight (MAIL given, or DATA being relayed) may finish, for up to
   `RELAY_GRACE_PERIOD` seconds;
3. close what is left (idle sessions get an unsolicited 421, RFC 5321 section 3.8), then the
   sender pool, the limiter and the HTTP endpoint.

`RelaySMTP` adds to aiosmtpd's `SMTP`: AUTH checked asynchronously against hashed credentials
(cached) with per-peer throttling; AUTH offered and accepted only over TLS, including implicit
TLS (aiosmtpd only counts STARTTLS as TLS, issues #274/#281, so an implicit-TLS session is marked
secure rather than dropping the requirement); refusal of clients outside the allowed networks;
`501` with a reason for recipient addresses aiosmtpd cannot parse; the draining behaviour above.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, TLSSetupException, syntax

from relay.access import AccessPolicy, check_not_open_relay
from relay.auth import CredentialChecker, CredentialsUnavailable
from relay.config import RelayConfig
from relay.handler import RelayEnvelope, RelayHandler
from relay.junk import JUNK_COMMANDS, JUNK_REPLY, JunkBudget, is_junk_reply
from relay.ops_http import OpsHttpServer
from relay.wiring import Components, build_components
from ses_core.addresses import EmailAddress
from ses_core.errors import InvalidAddress

log = logging.getLogger(__name__)

SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, try again later"
#: Never sent to a client: RFC 5321 reply text is printable (a tab is allowed), and lone
#: surrogates (undecodable client bytes that aiosmtpd echoes) cannot even be encoded.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
#: Commands that may continue a transaction already in flight while draining.
_IN_TRANSACTION_COMMANDS = frozenset({"RCPT", "DATA", "NOOP"})


class _ImplicitTls:
    """Marks an implicit-TLS session as encrypted (aiosmtpd only checks that this is set)."""


class RelaySMTP(SMTP):
    """One client session (aiosmtpd protocol) with the relay's access, AUTH and drain rules."""

    def __init__(
        self,
        handler: RelayHandler,
        *,
        relay: RelayServer,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.relay = relay
        self._denied = False
        self._in_data = False
        self._relaying = False
        self._junk = JunkBudget(relay.config.junk_command_limit)
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._guard(name, method)

    # --- connection lifecycle ------------------------------------------------------------------

    def _create_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_upgrade = self._original_transport is not None
        super().connection_made(transport)
        if starttls_upgrade:
            return
        self.relay.sessions.add(self)
        self.relay.metrics.sessions.inc()
        if transport.get_extra_info("sslcontext") is not None:
            self._tls_protocol = _ImplicitTls()  # type: ignore[assignment]
        host = self.peer_host
        if not self.relay.policy.client_allowed(host):
            self._denied = True
            log.warning("connection from %s refused: not in RELAY_ALLOWED_NETWORKS", host)

    def connection_lost(self, error: Exception | None) -> None:
        if self in self.relay.sessions:
            self.relay.sessions.discard(self)
            self.relay.metrics.sessions.dec()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._denied or self.relay.draining:
            reply = "554 5.7.1 Access denied" if self._denied else SHUTDOWN_REPLY
            await self.push(reply)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    @property
    def peer_host(self) -> str | None:
        """The client's IP address."""
        peer = self.session.peer if self.session is not None else None
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return None

    @property
    def encrypted(self) -> bool:
        """Whether the session runs under TLS (STARTTLS or implicit)."""
        return self._tls_protocol is not None

    @property
    def in_transaction(self) -> bool:
        """Whether a mail transaction is under way (MAIL accepted, or DATA being relayed)."""
        return self._in_data or bool(self.envelope is not None and self.envelope.mail_from)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        # aiosmtpd's idle timer keeps running while the handler relays the message upstream,
        # which may take up to RELAY_MAX_WAIT. The client is waiting for *us* then: cutting it off
        # would make it retry a message SES may already have (a duplicate). Pause the timer.
        self._relaying = True
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._relaying = False
            self._junk.refill()
            if self.transport is not None and not self.transport.is_closing():
                self._reset_timeout()

    def _timeout_cb(self) -> None:
        if self._relaying:
            self._reset_timeout()
            return
        super()._timeout_cb()

    # --- draining ------------------------------------------------------------------------------

    def _guard(
        self, name: str, method: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        @functools.wraps(method)
        async def guarded(arg: Any) -> None:
            if self.relay.draining and name != "QUIT":
                if not (name in _IN_TRANSACTION_COMMANDS and self.in_transaction):
                    await self.close_for_shutdown()
                    return
            if name in JUNK_COMMANDS and not self._junk.spend():
                await self._close_for_junk()
                return
            if name == "DATA":
                self._in_data = True
                try:
                    await method(arg)
                finally:
                    self._in_data = False
                return
            await method(arg)

        return guarded

    async def close_for_shutdown(self) -> None:
        """Answer 421 and end the session (as QUIT does)."""
        await self.push(SHUTDOWN_REPLY)
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self.transport is not None:
            self.transport.close()

    async def _close_for_junk(self) -> None:
        """Answer 421 and end a session that spent its budget of junk commands."""
        log.warning("closing session from %s: too many commands without a message", self.peer_host)
        self.relay.metrics.junk_disconnects.inc()
        await super().push(JUNK_REPLY)
        if self.transport is not None:
            self.transport.close()

    def abort_idle(self) -> None:
        """Send an unsolicited 421 and close (used after the grace period)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            self._writer.write(SHUTDOWN_REPLY.encode() + b"\r\n")
        except (RuntimeError, ConnectionError):
            pass  # the peer is gone: nothing to tell it
        transport.close()

    # --- replies and STARTTLS ------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Send a reply line; control characters and lone surrogates are replaced by `?`.

        aiosmtpd echoes client text back (`500 Error: command "..." not recognized`,
        `502 Could not VRFY ...`), so a client could otherwise make the relay send a bare CR or
        a NUL inside a reply, or fail encoding it (an internal error, answered 451).
        """
        if isinstance(status, str):
            await super().push(_UNSENDABLE.sub("?", status))
        else:
            await super().push(status)
            status = status.decode("ascii", "replace")
        if is_junk_reply(status) and not self._junk.spend():
            await self._close_for_junk()

    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd answers 220 to a second STARTTLS and then fails the nested handshake inside
        # asyncio; RFC 3207 forbids a second TLS negotiation, so refuse it.
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client failed its own TLS handshake (garbage after 220, wrong protocol): not
            # a relay error, so no traceback at ERROR and no unexpected-error count, which any
            # client could otherwise inflate. aiosmtpd closes the connection and sends nothing.
            log.info("TLS handshake with %s failed: %r", self.peer_host, error.__cause__)
            return "421 4.7.0 TLS handshake failed"
        status: str = await super().handle_exception(error)
        return status

    # --- RCPT syntax ---------------------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every MAIL/RCPT path with the (slow) email header parser; paths repeat
        # a lot (same senders, hot recipients, and our RCPT pre-check below), so memoise. Only
        # ordinary-length paths are cached: a client sending huge unique paths must not be able
        # to pin memory (65,536 one-kilobyte paths would hold ~130 MB).
        if len(arg) > _CACHED_PATH_LENGTH:
            return _parse_path.__wrapped__(arg)
        simple = _SIMPLE_PATH.fullmatch(arg)
        if simple is not None:
            # The common `<local@domain>` form, parsed exactly as the header parser would (a
            # property test holds the two to the same answer): ~1 us instead of ~45 us for a
            # recipient not seen before, which newsletters send nothing but.
            return simple.group(1), simple.group(2) or ""
        return _parse_path(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg is not None and self.envelope is not None and self.envelope.mail_from:
            path = self._strip_command_keyword("TO:", arg)
            if path is not None:
                address, _ = self._getaddr(path)
                if address is None:
                    reason = _address_problem(path)
                    await self.push(f"501 5.1.3 Bad recipient address syntax: {reason}")
                    return
        await super().smtp_RCPT(arg)

    # --- AUTH ----------------------------------------------------------------------------------

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        host = self.peer_host or "?"
        if self.relay.throttle.banned(host):
            self.relay.metrics.auth_failures.labels("banned").inc()
            await self.push("421 4.7.0 Too many failed authentications, closing connection")
            if self.transport is not None:
                self.transport.close()
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._verify(LoginPassword(parts[1], parts[2]))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._verify(LoginPassword(login, password))

    async def _verify(self, credentials: LoginPassword) -> AuthResult:
        host = self.peer_host or "?"
        # One check at a time per peer: guesses sent in parallel on many connections wait here
        # and see each other's failures (and delays), so they are cut off like sequential ones.
        async with self.relay.auth_lock(host):
            if self.relay.throttle.banned(host):
                self.relay.metrics.auth_failures.labels("banned").inc()
                await self.push("421 4.7.0 Too many failed authentications, closing connection")
                if self.transport is not None:
                    self.transport.close()
                return AuthResult(success=False, handled=True)
            return await self._verify_unlocked(host, credentials)

    async def _verify_unlocked(self, host: str, credentials: LoginPassword) -> AuthResult:
        try:
            username = credentials.login.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            username, password = "", ""
        try:
            valid = bool(username or password) and await self.relay.credentials.check(
                username, password
            )
        except CredentialsUnavailable as exc:
            log.error("AUTH: credential store unavailable: %s", exc)
            self.relay.metrics.auth_failures.labels("unavailable").inc()
            return AuthResult(
                success=False, handled=False, message="454 4.7.0 Temporary authentication failure"
            )
        if valid:
            self.relay.throttle.record_success(host)
            return AuthResult(success=True, auth_data=username)
        self.relay.metrics.auth_failures.labels("invalid").inc()
        delay = self.relay.throttle.record_failure(host)
        log.warning("AUTH failed from %s (delaying %.1fs)", host, delay)
        await self.relay.sleep(delay)
        if self.relay.throttle.banned(host):
            await self.push("535 5.7.8 Authentication credentials invalid")
            await self.push("421 4.7.0 Too many failed authentications, closing connection")
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)


#: Longest MAIL/RCPT argument memoised by `RelaySMTP._getaddr` (RFC 5321 paths are <= 256).
_CACHED_PATH_LENGTH = 300
#: `<dot-atom@dot-atom>` with optional parameters after white space: what nearly every client
#: sends. Anything else (quoted local parts, comments, domain literals, UTF-8, no brackets) goes
#: to aiosmtpd's parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?![ \t(])(.*))?",
    re.ASCII | re.DOTALL,
)


@functools.lru_cache(maxsize=16384)
def _parse_path(arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's own path parser (pure for `local_part_limit == 0`), cached."""
    try:
        return SMTP._getaddr(_PATH_PARSER, arg)
    except Exception:  # noqa: BLE001 - any parser failure is a syntax error, see below
        # aiosmtpd only catches HeaderParseError, but Python's email header parser also fails
        # with IndexError (`a@` without angle brackets), AttributeError or UnboundLocalError
        # (`"<0@0>"@[`, found by server_test's property test) on malformed paths. Each is the
        # client's syntax error (501), not an internal one (451).
        return None, None


class _PathParser:
    local_part_limit = 0


_PATH_PARSER: Any = _PathParser()


def _address_problem(path: str) -> str:
    try:
        EmailAddress.parse(path.split(" ", 1)[0])
    except InvalidAddress as exc:
        flat = " ".join(str(exc).split())
        return flat[:200]
    return "malformed address"


class RelayServer:
    """The SMTP listener, its sessions, the ops endpoint, and orderly shutdown."""

    def __init__(
        self,
        config: RelayConfig,
        components: Components,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.components = components
        self.metrics = components.metrics
        self.policy = AccessPolicy.from_config(config)
        self.credentials: CredentialChecker = components.credentials
        self.throttle = components.auth_throttle
        self.sleep = sleep
        self.sessions: set[RelaySMTP] = set()
        self.draining = False
        self.handler = RelayHandler(
            sender=components.sender,
            blacklist=components.blacklist,
            policy=self.policy,
            metrics=self.metrics,
            max_wait=config.max_wait,
            max_recipients=config.max_recipients,
            blacklist_drop=config.blacklist_drop,
            on_daily_quota=components.on_daily_quota,
        )
        self._server: asyncio.AbstractServer | None = None
        self._http: OpsHttpServer | None = None
        self._bound_port = config.listen_port
        self._auth_locks: dict[str, asyncio.Lock] = {}

    @property
    def port(self) -> int:
        """The bound SMTP port (useful when configured with port 0)."""
        return self._bound_port

    def auth_lock(self, host: str) -> asyncio.Lock:
        """The lock serialising AUTH checks from `host` (see `RelaySMTP._verify`)."""
        lock = self._auth_locks.get(host)
        if lock is None:
            if len(self._auth_locks) >= 10_000:
                # Bounded: forget the locks nobody holds.
                self._auth_locks = {h: k for h, k in self._auth_locks.items() if k.locked()}
            lock = self._auth_locks[host] = asyncio.Lock()
        return lock

    @property
    def metrics_port(self) -> int | None:
        """The bound ops HTTP port, or None when disabled."""
        return self._http.port if self._http is not None else None

    def _make_session(self) -> RelaySMTP:
        auth_on = self.credentials.enabled
        return RelaySMTP(
            self.handler,
            relay=self,
            hostname=self.config.server_fqdn,
            ident="ses-relay",
            tls_context=None if self.config.implicit_tls else self.components.tls_context,
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=self.config.session_timeout,
            auth_required=auth_on and self.config.auth_required,
            auth_require_tls=True,
            auth_exclude_mechanism=[] if auth_on else ["PLAIN", "LOGIN"],
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        """Bind the SMTP listener and the ops endpoint."""
        loop = asyncio.get_running_loop()
        ssl_context = self.components.tls_context if self.config.implicit_tls else None
        self._server = await loop.create_server(
            self._make_session,
            host=self.config.listen_host,
            port=self.config.listen_port,
            ssl=ssl_context,
            # asyncio's default backlog (100) makes connection bursts wait for SYN retries.
            backlog=1024,
        )
        self._bound_port = int(self._server.sockets[0].getsockname()[1])
        if self.config.metrics_port is not None:
            self._http = OpsHttpServer(
                self.metrics.registry,
                {"accepting": self._check_accepting, **self.components.ready_checks},
                host=self.config.metrics_host,
                port=self.config.metrics_port,
            )
            await self._http.start()
        tls = (
            "implicit TLS"
            if self.config.implicit_tls
            else ("STARTTLS" if self.components.tls_context is not None else "no TLS")
        )
        log.info(
            "relay listening on %s:%d (%s, AUTH %s, %s)",
            self.config.listen_host,
            self.port,
            tls,
            "required"
            if self.credentials.enabled and self.config.auth_required
            else ("optional" if self.credentials.enabled else "off"),
            "local mode" if self.config.local_mode else f"upstream {self.config.upstream_host}",
        )

    async def _check_accepting(self) -> None:
        """Readiness: not ready once draining, so load balancers stop sending new clients."""
        if self.draining:
            raise ConnectionRefusedError("shutting down")

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight transactions within the grace period, close all."""
        started = time.monotonic()
        self.draining = True
        if self._server is not None:
            self._server.close()
        busy = [s for s in self.sessions if s.in_transaction]
        log.info(
            "shutting down: %d session(s) open, %d transaction(s) in flight, grace %.1fs",
            len(self.sessions),
            len(busy),
            self.config.grace_period,
        )
        deadline = started + self.config.grace_period
        while any(s.in_transaction for s in self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = [s for s in self.sessions if s.in_transaction]
        if left:
            log.warning("grace period over: closing %d session(s) mid-transaction", len(left))
        for session in list(self.sessions):
            session.abort_idle()
        if self._server is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            except asyncio.TimeoutError:
                log.debug("listener did not report closed within 1s")
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
) -> None:
    """Run the relay until SIGTERM/SIGINT (or until `shutdown_trigger()` returns), then stop.

    `components` (sender, blacklist, credentials, ...) are built from `config` unless given;
    `on_started` receives the running server (tests read its bound ports).
    """
    check_not_open_relay(config)
    owned = components is None
    parts = components if components is not None else await build_components(config)
    server = RelayServer(config, parts)
    try:
        await server.start()
    except BaseException:
        if owned:
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
