"""The relay's security promises, tested from outside over real sockets (issue 7, item 7).

- a client from a network outside `RELAY_ALLOWED_NETWORKS` cannot relay, whatever it sends, and
  an unauthenticated client cannot relay when AUTH is required;
- AUTH is neither offered nor accepted before TLS;
- credentials and message bodies never reach the log, even at DEBUG (the relay runs as a process
  with its production logging set-up, and the suite searches everything it wrote);
- failed AUTH attempts are slowed down, then the peer is cut off;
- nothing a client sends (recipient domains, IP literals, source routes, `%` and `!` hacks,
  XCLIENT/XFORWARD/ETRN) makes the relay connect anywhere but the configured upstream.

A non-allowed peer is simulated the honest way: the relay still listens on 127.0.0.1 only, and
the allowed networks (10.0.0.0/8) exclude the loopback address the test client comes from.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from relay.auth import AuthThrottle
from relay.config import ConfigError, RelayConfig
from relay.wiring import Components
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import DEFAULT_CREDENTIALS, SmtpUpstream
from tests.hostile.relays import (
    RELAY_PASSWORD,
    RELAY_USER,
    poll,
    relay_environ,
    send_normally,
    unique_message,
)
from tests.hostile.wire import ConnectionClosed, WireClient
from tests.support.relay_harness import RelayProcess, ThreadedRelay

UPSTREAM_USER, UPSTREAM_PASSWORD = DEFAULT_CREDENTIALS

VALID_PLAIN = base64.b64encode(f"\0{RELAY_USER}\0{RELAY_PASSWORD}".encode())


@contextlib.contextmanager
def threaded_relay(
    certificates: TestCertificates,
    upstream: SmtpUpstream,
    *,
    throttle: AuthThrottle | None = None,
    **extra: str,
) -> Iterator[ThreadedRelay]:
    """A relay in a thread, configured through its environment variables."""
    config = RelayConfig.from_environ(relay_environ(certificates, upstream, **extra))

    def adjust(components: Components) -> None:
        if throttle is not None:
            components.auth_throttle = throttle

    with ThreadedRelay(config, adjust=adjust) as relay:
        yield relay


def listening_addresses(port: int) -> set[str]:
    """The local addresses this process listens on at `port`."""
    return {
        conn.laddr.ip
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }


def tls_session(port: int, ca_file: str) -> WireClient:
    """A client past the greeting, STARTTLS and EHLO."""
    client = WireClient(port)
    assert client.read_reply().code == 220
    assert client.command(b"EHLO client.example").code == 250
    assert client.command(b"STARTTLS").code == 220
    client.starttls(ca_file)
    assert client.command(b"EHLO client.example").code == 250
    return client


# --- who may relay ------------------------------------------------------------------------------


def test_client_outside_the_allowed_networks_cannot_relay(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """A peer outside RELAY_ALLOWED_NETWORKS gets 554 and is disconnected, whatever it sends."""
    before = threaded_upstream.accepted
    with threaded_relay(
        certificates, threaded_upstream, RELAY_ALLOWED_NETWORKS="10.0.0.0/8"
    ) as relay:
        assert listening_addresses(relay.port) == {"127.0.0.1"}
        with WireClient(relay.port) as client:
            with contextlib.suppress(ConnectionClosed):
                client.send(
                    b"EHLO client.example\r\nXCLIENT ADDR=10.1.2.3 NAME=trusted.example\r\n"
                    b"STARTTLS\r\nAUTH PLAIN " + VALID_PLAIN + b"\r\n"
                    b"MAIL FROM:<app@example.com>\r\nRCPT TO:<you@example.org>\r\nDATA\r\n"
                    + unique_message()
                    + b".\r\nQUIT\r\n"
                )
            replies = client.read_until_closed()
        assert [r.code for r in replies] == [554]
        assert relay.alive
    assert threaded_upstream.accepted == before


def test_unauthenticated_client_cannot_relay_when_auth_is_required(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """With AUTH required, MAIL/RCPT/DATA are refused before AUTH, in clear and under TLS."""
    before = threaded_upstream.accepted
    with threaded_relay(
        certificates, threaded_upstream, RELAY_ALLOWED_NETWORKS="127.0.0.0/8"
    ) as relay:
        with WireClient(relay.port) as client:
            assert client.read_reply().code == 220
            assert client.command(b"EHLO client.example").code == 250
            assert client.command(b"XCLIENT ADDR=127.0.0.1 LOGIN=app").code in {500, 502}
            assert client.command(b"MAIL FROM:<app@example.com>").code == 530
            assert client.command(b"RCPT TO:<you@example.org>").code in {503, 530}
            assert client.command(b"DATA").code in {503, 530}
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"MAIL FROM:<app@example.com>").code == 530
            assert client.command(b"RCPT TO:<you@example.org>").code in {503, 530}
            assert client.command(b"DATA").code in {503, 530}
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code == 235
            assert client.command(b"MAIL FROM:<app@example.com>").code == 250
        assert relay.alive
    assert threaded_upstream.accepted == before


def test_auth_is_neither_offered_nor_accepted_before_tls(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """In clear, EHLO does not list AUTH and valid credentials are refused (538/530)."""
    with threaded_relay(certificates, threaded_upstream) as relay:
        with WireClient(relay.port) as client:
            assert client.read_reply().code == 220
            ehlo = client.command(b"EHLO client.example")
            assert not any(line.upper().startswith("AUTH") for line in ehlo.lines), ehlo
            assert "STARTTLS" in ehlo.lines
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code in {530, 538}
            assert client.command(b"AUTH LOGIN").code in {530, 538}
            assert client.command(b"AUTH PLAIN").code in {530, 538}
            assert client.command(b"MAIL FROM:<app@example.com>").code == 530
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code == 235
        # No failure was counted for the refused clear-text attempts: nothing was checked.
        assert relay.server is not None
        assert not relay.server.components.auth_throttle.banned("127.0.0.1")


def test_auth_without_a_certificate_is_a_configuration_error(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """AUTH users without SSL_CERT_PATH stop the relay at start-up (no clear-text AUTH ever)."""
    environ = relay_environ(certificates, threaded_upstream)
    del environ["SSL_CERT_PATH"], environ["SSL_KEY_PATH"]
    with pytest.raises(ConfigError, match="SSL_CERT_PATH"):
        RelayConfig.from_environ(environ)


# --- secrets and bodies stay out of the logs ----------------------------------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logs_never_contain_credentials_or_message_bodies(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream, tmp_path: Path, log_format: str
) -> None:
    """A DEBUG-level run with PLAIN, LOGIN, failed and clear-text AUTH logs no secret or body."""
    wrong_password = "Wrong-Pass-c4n4ry-91b2"
    body_canary = "BODY-CANARY-5e0d2f7a"
    subject_canary = "SUBJECT-CANARY-a81c"
    garbage_canary = b"R2FyYmFnZUNhbmFyeQ=="
    environ = relay_environ(
        certificates, threaded_upstream, RELAY_LOG_LEVEL="DEBUG", RELAY_LOG_FORMAT=log_format
    )
    before = len(threaded_upstream.messages)
    with RelayProcess(environ, log_path=tmp_path / "relay.log") as relay:
        with WireClient(relay.port) as client:  # clear text: refused, must not be logged either
            client.read_reply()
            client.command(b"EHLO client.example")
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code in {530, 538}
        with tls_session(relay.port, certificates.ca_file) as client:
            wrong = base64.b64encode(f"\0{RELAY_USER}\0{wrong_password}".encode())
            assert client.command(b"AUTH PLAIN " + wrong).code == 535
            assert client.command(b"AUTH PLAIN " + garbage_canary + b"!").code == 501
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code == 235
            message = (
                f"From: app@example.com\r\nTo: you@example.org\r\nSubject: {subject_canary}\r\n"
                f"Message-ID: <canary-{log_format}@example.com>\r\n\r\n{body_canary}\r\n"
            ).encode()
            assert client.command(b"MAIL FROM:<app@example.com>").code == 250
            assert client.command(b"RCPT TO:<you@example.org>").code == 250
            assert client.command(b"DATA").code == 354
            client.send(message + b".\r\n")
            assert client.read_reply().code == 250
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"AUTH LOGIN").code == 334
            assert client.command(base64.b64encode(RELAY_USER.encode())).code == 334
            assert client.command(base64.b64encode(RELAY_PASSWORD.encode())).code == 235
        send_normally(
            relay.port,
            threaded_upstream,
            login=(RELAY_USER, RELAY_PASSWORD),
            ca_file=certificates.ca_file,
        )
        assert relay.stop() == 0
        log = relay.log_text()
    assert len(threaded_upstream.messages) == before + 2
    assert body_canary.encode() in threaded_upstream.messages[before].data  # the canary did travel
    # The capture works: it holds the transaction line and the failed AUTH warning.
    assert "accepted" in log and "AUTH failed from 127.0.0.1" in log, log[-3000:]
    secrets = {
        "relay password": RELAY_PASSWORD,
        "wrong password": wrong_password,
        "PLAIN blob": VALID_PLAIN.decode(),
        "PLAIN blob of the wrong password": wrong.decode(),
        "LOGIN password blob": base64.b64encode(RELAY_PASSWORD.encode()).decode(),
        "garbage AUTH blob": garbage_canary.decode(),
        "upstream password": UPSTREAM_PASSWORD,
        "upstream PLAIN blob": base64.b64encode(
            f"\0{UPSTREAM_USER}\0{UPSTREAM_PASSWORD}".encode()
        ).decode(),
        "upstream LOGIN password blob": base64.b64encode(UPSTREAM_PASSWORD.encode()).decode(),
        "password hash": environ["RELAY_AUTH_USERS"].split(":", 1)[1],
        "message body": body_canary,
        "message subject": subject_canary,
    }
    leaked = {name: value for name, value in secrets.items() if value in log}
    assert not leaked, f"found in the relay's log: {sorted(leaked)}"


# --- AUTH failures are slowed and cut off ---------------------------------------------------------


def test_failed_auth_attempts_are_slowed_then_cut_off(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """Each failure waits twice as long as the last; the 4th ends with 421 and a ban that holds
    across connections, even for the right password."""
    throttle = AuthThrottle(max_failures=4, base_delay=0.1, max_delay=2.0, ban_seconds=60.0)
    wrong = base64.b64encode(f"\0{RELAY_USER}\0not-the-password".encode())
    with threaded_relay(certificates, threaded_upstream, throttle=throttle) as relay:
        timings: list[float] = []
        with tls_session(relay.port, certificates.ca_file) as client:
            for _ in range(2):
                started = time.monotonic()
                assert client.command(b"AUTH PLAIN " + wrong).code == 535
                timings.append(time.monotonic() - started)
        with tls_session(
            relay.port, certificates.ca_file
        ) as client:  # a new connection: same count
            started = time.monotonic()
            assert client.command(b"AUTH PLAIN " + wrong).code == 535
            timings.append(time.monotonic() - started)
            started = time.monotonic()
            client.send(b"AUTH PLAIN " + wrong + b"\r\n")
            assert client.read_reply().code == 535
            assert client.read_reply().code == 421
            timings.append(time.monotonic() - started)
            assert client.read_until_closed() == []
        for number, (took, expected) in enumerate(
            zip(timings, (0.1, 0.2, 0.4, 0.8), strict=True), 1
        ):
            assert took >= expected * 0.9, f"failure {number} answered after {took:.3f}s"
        assert timings == sorted(timings)
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code == 421
            assert client.read_until_closed() == []
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"MAIL FROM:<app@example.com>").code == 530
        assert relay.alive


def test_default_throttle_delays_a_failed_auth(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """The relay as wired for production (no injected throttle) delays the first failure."""
    with threaded_relay(certificates, threaded_upstream) as relay:
        with tls_session(relay.port, certificates.ca_file) as client:
            wrong = base64.b64encode(f"\0{RELAY_USER}\0nope".encode())
            started = time.monotonic()
            assert client.command(b"AUTH PLAIN " + wrong).code == 535
            assert time.monotonic() - started >= 0.45
        assert relay.server is not None
        assert relay.server.components.auth_throttle.max_failures >= 1


# --- only the configured upstream ---------------------------------------------------------------


class Trap:
    """A loopback listener that counts connections (nothing should ever reach it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Trap:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()


def foreign_connections(pid: int, relay_port: int, upstream_port: int) -> list[str]:
    """The relay process's sockets that talk to anything but its clients and the upstream."""
    found = []
    for conn in psutil.Process(pid).net_connections(kind="inet"):
        if not conn.raddr:
            continue
        if conn.laddr.port == relay_port:
            continue  # a client of the relay
        if conn.raddr.ip == "127.0.0.1" and conn.raddr.port == upstream_port:
            continue
        found.append(f"{conn.laddr} -> {conn.raddr} ({conn.status})")
    return found


def test_clients_cannot_make_the_relay_connect_anywhere_but_the_upstream(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream, tmp_path: Path
) -> None:
    """Recipients at any domain, IP literals, source routes, `%`/`!` hacks and XCLIENT-style
    commands only ever reach the configured upstream; no other connection is made."""
    before = len(threaded_upstream.messages)
    with Trap() as trap, RelayProcess(
        relay_environ(certificates, threaded_upstream), log_path=tmp_path / "r.log"
    ) as relay:
        trap_host = f"127.0.0.1:{trap.port}"
        recipients = [
            "someone@gmail.com",
            "someone@example.net",
            "someone@localhost",
            "someone@[127.0.0.1]",
            f"someone@[{trap_host}]",
            "someone@127.0.0.1",
            f"@[{trap_host}]:someone@example.org",
            "@localhost:someone@example.org",
            "someone%127.0.0.1@example.org",
            f"someone%[{trap_host}]@example.org",
            "127.0.0.1!someone@example.org",
            f'"someone@[{trap_host}]"@example.org',
        ]
        accepted: list[str] = []
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code == 235
            with contextlib.suppress(ConnectionClosed):
                client.send(
                    f"XCLIENT ADDR=127.0.0.1 PORT={trap.port} HELO=trap\r\n"
                    f"XFORWARD ADDR=127.0.0.1 PORT={trap.port}\r\nETRN example.org\r\n"
                    f"TURN\r\nATRN example.org\r\nEXPN someone@[{trap_host}]\r\n".encode()
                )
            replies = client.read_until_closed()
            # Unknown to the relay, all of them (aiosmtpd hangs up after five unknown commands).
            assert all(500 <= r.code < 600 for r in replies), replies
        with tls_session(relay.port, certificates.ca_file) as client:
            assert client.command(b"AUTH PLAIN " + VALID_PLAIN).code == 235
            mail = client.command(f"MAIL FROM:<@[{trap_host}]:app@example.com>".encode())
            if mail.code != 250:
                assert client.command(b"MAIL FROM:<app@example.com>").code == 250
            for recipient in recipients:
                reply = client.command(f"RCPT TO:<{recipient}>".encode())
                assert reply.code in {250, 501, 550, 553}, (recipient, reply)
                if reply.code == 250:
                    accepted.append(recipient)
            assert accepted
            assert client.command(b"DATA").code == 354
            client.send(unique_message("routing") + b".\r\n")
            assert client.read_reply().code == 250
            assert foreign_connections(relay.pid, relay.port, threaded_upstream.port) == []
        assert poll(lambda: trap.connections > 0, 1.0) is False
        assert foreign_connections(relay.pid, relay.port, threaded_upstream.port) == []
        assert relay.alive
    expected = sorted(r.rsplit(":", 1)[1] if r.startswith("@") else r for r in accepted)
    delivered = sorted(r for m in threaded_upstream.messages[before:] for r in m.recipients)
    assert delivered == expected
    assert trap.connections == 0


def test_parallel_auth_guesses_are_cut_off_too(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """Guessing on 40 connections at once gets no more passwords checked than guessing on one:
    at most `max_failures` guesses are answered 535, the rest 421."""
    throttle = AuthThrottle(max_failures=4, base_delay=0.1, max_delay=0.4, ban_seconds=60.0)
    with threaded_relay(certificates, threaded_upstream, throttle=throttle) as relay:
        clients = [tls_session(relay.port, certificates.ca_file) for _ in range(40)]
        try:
            for number, client in enumerate(clients):
                wrong = base64.b64encode(f"\0{RELAY_USER}\0guess-{number}".encode())
                client.send(b"AUTH PLAIN " + wrong + b"\r\n")
            codes = [client.read_reply().code for client in clients]
        finally:
            for client in clients:
                client.close()
        assert codes.count(535) <= throttle.max_failures, codes
        assert set(codes) <= {535, 421}, codes
        assert relay.alive
