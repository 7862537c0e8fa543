"""Hostile SMTP clients against a real relay on 127.0.0.1 (issue 7, item 5).

Every test talks to the relay over real sockets with `WireClient`, which validates every byte the
relay sends: each line must be a well-formed SMTP reply and no traceback or exception name may
reach the client. Hypothesis drives random command sequences and random byte streams; fixed tests
cover the named cases (long lines, bare LF/CR, NUL, SIZE, odd addresses, 1,000 recipients, garbage
AUTH, STARTTLS twice, commands after QUIT, slow-loris and 1,000 idle clients). After each test the
relay must still be running and must still deliver a normal client's message to the upstream.

The relay runs in a thread (`ThreadedRelay`) with a 2-second session timeout, so the timeout tests
finish in seconds, and with an AUTH throttle without delays, so that fuzzed AUTH failures do not
slow the suite (throttling itself is tested in security_test.py).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.auth import AuthThrottle
from relay.config import RelayConfig
from relay.wiring import Components
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream
from tests.hostile.relays import (
    RELAY_PASSWORD,
    RELAY_USER,
    poll,
    raise_fd_limit,
    relay_environ,
    send_normally,
    unique_message,
)
from tests.hostile.wire import (
    CLOSING_CODES,
    ConnectionClosed,
    Reply,
    ReplyViolation,
    WireClient,
    parse_replies,
)
from tests.support.relay_harness import RelayProcess, ThreadedRelay

SESSION_TIMEOUT = 2.0
MAX_SIZE = 65536
FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- fixtures ------------------------------------------------------------------------------------


def no_auth_delays(components: Components) -> None:
    """Swap in a throttle that neither delays nor bans (fuzzing fails AUTH a lot)."""
    components.auth_throttle = AuthThrottle(base_delay=0.0, max_delay=0.0, max_failures=10**9)


@contextlib.contextmanager
def hostile_relay(
    certificates: TestCertificates, upstream: SmtpUpstream, **extra: str
) -> Iterator[ThreadedRelay]:
    """A relay with STARTTLS, optional AUTH, SIZE 64 KiB and a 2 s session timeout."""
    settings = {
        "RELAY_AUTH_REQUIRED": "false",
        "RELAY_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
        "RELAY_MAX_MESSAGE_SIZE": str(MAX_SIZE),
    }
    settings.update(extra)
    environ = relay_environ(certificates, upstream, **settings)
    with ThreadedRelay(RelayConfig.from_environ(environ), adjust=no_auth_delays) as relay:
        yield relay


@pytest.fixture(scope="module")
def relay(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> Iterator[ThreadedRelay]:
    """The relay shared by this module's tests."""
    with hostile_relay(certificates, threaded_upstream) as running:
        yield running


class ErrorLog(logging.Handler):
    """Collects ERROR records of the relay's loggers (internal errors on hostile input)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def describe(self) -> str:
        """The collected records, with the exception type of each."""
        return "; ".join(f"{r.name}: {r.getMessage()} ({_exc_name(r)})" for r in self.records)


def _exc_name(record: logging.LogRecord) -> str:
    if record.exc_info and record.exc_info[0] is not None:
        return record.exc_info[0].__name__
    return "-"


@contextlib.contextmanager
def relay_errors() -> Iterator[ErrorLog]:
    """Collect ERROR records from `relay.*` while the block runs."""
    handler = ErrorLog()
    logger = logging.getLogger("relay")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def assert_healthy(relay: ThreadedRelay, upstream: SmtpUpstream) -> None:
    """The relay still runs, has met no internal error, and a polite client still gets its
    message to the upstream."""
    assert relay.alive, "relay stopped"
    assert relay.unexpected_errors() == 0, "hostile input caused an internal error (451)"
    send_normally(relay.port, upstream)


# --- hypothesis strategies --------------------------------------------------------------------

#: Addresses that are invalid, quoted, IDN, routed or enormous.
HOSTILE_ADDRESSES = (
    "",
    "plain@example.org",
    "UPPER@EXAMPLE.ORG",
    "no-at-sign",
    "@example.org",
    "user@",
    "a@b@c.example",
    '"quoted local"@example.org',
    '"quote\\"inside"@example.org',
    '"unterminated@example.org',
    "user@bücher.example",
    "üser@example.org",
    "user@xn--bcher-kva.example",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "@evil.example:user@example.org",
    "user%evil.example@example.org",
    "evil.example!user@example.org",
    "user@localhost",
    "user@-bad-.example",
    "user@example..org",
    "a" * 65 + "@example.org",
    "a" * 300 + "@example.org",
    "user@" + "d" * 64 + ".example",
    "user@" + ".".join(["label"] * 60) + ".example",
    "user\x00nul@example.org",
    "user@exa\x00mple.org",
    "<nested@example.org>",
    "user@example.org> SIZE=1",
    "user@ex ample.org",
)

_ARG_BYTES = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=80).map(
    lambda t: t.encode("utf-8")
)
_ARG = st.one_of(_ARG_BYTES, _TEXT, st.just(b""))
_ADDRESS = st.one_of(
    st.sampled_from(HOSTILE_ADDRESSES).map(lambda a: a.encode("utf-8")),
    _TEXT,
    st.builds(
        lambda local, domain: local + b"@" + domain,
        st.from_regex(rb"\A[a-zA-Z0-9.+_%!-]{1,20}\Z"),
        st.from_regex(rb"\A[a-z0-9.-]{1,30}\Z"),
    ),
)
_MAIL_PARAM = st.sampled_from(
    [b"", b" SIZE=100", b" SIZE=99999999", b" SIZE=abc", b" BODY=8BITMIME", b" SMTPUTF8", b" X=Y"]
)
_AUTH_BLOB = st.one_of(
    _ARG_BYTES,
    st.binary(max_size=60).map(base64.b64encode),
    st.just(base64.b64encode(b"\0app\0wrong")),
    st.just(b"="),
    st.just(b"*"),
)


@attrs.frozen
class Step:
    """One command of a fuzzed session (and the body to send if it is answered 354)."""

    line: bytes
    body: bytes = b""


def _step(line: Any) -> Any:
    return line.map(Step)


def dot_stuffed(body: bytes) -> bytes:
    """`body` as a client must send it in DATA (RFC 5321 section 4.5.2), so that lockstep
    sessions stay in step; unstuffed bodies are what the byte-stream fuzzing sends."""
    return b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n")
    )


_BODIES = st.one_of(
    st.just(b"Subject: fuzz\r\n\r\nbody"),
    st.binary(max_size=400).map(dot_stuffed),
    st.just(b"x" * (MAX_SIZE + 10)),
)
STEPS = st.one_of(
    _step(st.builds(lambda a: b"EHLO " + a, _ARG)),
    _step(st.builds(lambda a: b"HELO " + a, _ARG)),
    _step(st.builds(lambda a, p: b"MAIL FROM:<" + a + b">" + p, _ADDRESS, _MAIL_PARAM)),
    _step(st.builds(lambda a: b"MAIL " + a, _ARG)),
    _step(st.builds(lambda a: b"RCPT TO:<" + a + b">", _ADDRESS)),
    _step(st.builds(lambda a: b"RCPT " + a, _ARG)),
    st.builds(lambda body: Step(b"DATA", body), _BODIES),
    _step(st.sampled_from([b"RSET", b"NOOP", b"QUIT", b"HELP", b"STARTTLS", b"DATA x"])),
    _step(st.builds(lambda a: b"NOOP " + a, _ARG)),
    _step(st.builds(lambda a: b"VRFY " + a, _ARG)),
    _step(st.builds(lambda a: b"EXPN " + a, _ARG)),
    _step(
        st.builds(
            lambda mech, blob: b"AUTH " + mech + (b" " + blob if blob else b""),
            st.sampled_from([b"PLAIN", b"LOGIN", b"CRAM-MD5", b"XOAUTH2", b"", b"plain"]),
            st.one_of(st.just(b""), _AUTH_BLOB),
        )
    ),
    _step(_AUTH_BLOB),  # a bare line: the answer to a 334 challenge, or junk
    _step(st.builds(lambda a: b"STARTTLS " + a, _ARG)),
    _step(_ARG_BYTES),  # junk commands
)


#: Steps a well-behaved client would send, so that random sessions also reach AUTH and DATA.
GOOD_STEPS = st.sampled_from(
    [
        Step(b"EHLO client.example"),
        Step(b"STARTTLS"),
        Step(b"AUTH PLAIN " + base64.b64encode(f"\0{RELAY_USER}\0{RELAY_PASSWORD}".encode())),
        Step(b"MAIL FROM:<app@example.com>"),
        Step(b"RCPT TO:<you@example.org>"),
    ]
)
TRANSACTION = st.builds(
    lambda body: [
        Step(b"EHLO client.example"),
        Step(b"MAIL FROM:<app@example.com>"),
        Step(b"RCPT TO:<you@example.org>"),
        Step(b"DATA", body),
    ],
    _BODIES,
)
TLS_LOGIN = st.just(
    [
        Step(b"EHLO client.example"),
        Step(b"STARTTLS"),
        Step(b"EHLO client.example"),
        Step(b"AUTH PLAIN " + base64.b64encode(f"\0{RELAY_USER}\0{RELAY_PASSWORD}".encode())),
    ]
)
SESSIONS = st.lists(
    st.one_of(
        STEPS.map(lambda step: [step]),
        GOOD_STEPS.map(lambda step: [step]),
        TRANSACTION,
        TLS_LOGIN,
    ),
    min_size=1,
    max_size=8,
).map(lambda groups: [step for group in groups for step in group])


def run_session(port: int, steps: list[Step], ca_file: str) -> list[Reply]:
    """Play `steps` in lockstep (one reply per line); validate every reply; return them."""
    replies: list[Reply] = []
    encrypted = False
    with WireClient(port, timeout=10.0) as client:
        replies.append(client.read_reply())
        assert replies[0].code == 220
        for step in steps:
            try:
                reply = client.command(step.line)
                if reply.code == 354:
                    replies.append(reply)
                    client.send(step.body + b"\r\n.\r\n")
                    reply = client.read_reply()
            except ConnectionClosed:
                last = replies[-1].code
                assert last in CLOSING_CODES, f"connection closed without a reply after {last}"
                assert client.read_until_closed(timeout=2.0) == []
                return replies
            replies.append(reply)
            if reply.code == 220:  # after the greeting, only STARTTLS answers 220
                assert not encrypted, "STARTTLS accepted on a session already under TLS"
                client.starttls(ca_file)
                encrypted = True
            if reply.code == 221:
                assert client.read_until_closed(timeout=5.0) == [], "data after 221"
                return replies
    return replies


# --- fuzzing ------------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(steps=SESSIONS)
def test_fuzzed_command_sessions_get_wellformed_replies(
    relay: ThreadedRelay,
    threaded_upstream: SmtpUpstream,
    certificates: TestCertificates,
    steps: list[Step],
) -> None:
    """Random command sequences with random arguments get only well-formed, leak-free replies."""
    with relay_errors() as errors:
        run_session(relay.port, steps, certificates.ca_file)
    assert relay.alive
    assert not errors.records, f"internal errors on hostile input: {errors.describe()}"


_FRAGMENTS = st.sampled_from(
    [
        b"\n",
        b"\r",
        b"\x00",
        b"\r\n",
        b"\r\r\n",
        b"\n\r",
        b"\xff\xfe\xfd",
        b"X" * 1500,
        b"EHLO fuzz.example\r\n",
        b"HELO fuzz.example\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"MAIL FROM:<a@example.com> SIZE=99999999\r\n",
        b"RCPT TO:<b@example.org>\r\n",
        b"RCPT TO:<b@example.org>\n",
        b"DATA\r\n",
        b"RSET\r",
        b"NOOP\x00NOOP\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"\n.\n",
        b"\r.\r",
        b"AUTH PLAIN AAAA\r\n",
        b"QUIT\r\n",
    ]
)


@FUZZ_SETTINGS
@given(chunks=st.lists(st.one_of(_FRAGMENTS, st.binary(max_size=200)), min_size=1, max_size=25))
def test_fuzzed_byte_streams_get_wellformed_replies(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream, chunks: list[bytes]
) -> None:
    """Random bytes (bare CR/LF, NUL, long lines, pipelined commands) get well-formed replies."""
    with relay_errors() as errors:
        with WireClient(relay.port, timeout=10.0) as client:
            with contextlib.suppress(ConnectionClosed):
                client.send(b"".join(chunks) + b"\r\n.\r\nQUIT\r\n")
            replies = client.read_until_closed(timeout=10.0)
    assert replies and replies[0].code == 220
    assert relay.alive
    assert not errors.records, f"internal errors on hostile input: {errors.describe()}"


def test_relay_serves_normally_after_fuzzing(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """After the fuzzed sessions above, the same relay still relays a normal message."""
    assert_healthy(relay, threaded_upstream)


# --- named hostile inputs -------------------------------------------------------------------------


def greeted(port: int, *, ehlo: bool = True) -> WireClient:
    """A connected client past the greeting (and EHLO)."""
    client = WireClient(port)
    assert client.read_reply().code == 220
    if ehlo:
        assert client.command(b"EHLO hostile.example").code == 250
    return client


def test_lines_over_1000_bytes_are_refused_and_the_session_continues(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """Command lines of 1,001 to 100,000 bytes get a 500, and the next command works."""
    with greeted(relay.port) as client:
        for size in (1001, 1500, 5000, 100_000):
            reply = client.command(b"NOOP " + b"x" * size)
            assert reply.code == 500, reply
        assert client.command(b"MAIL FROM:<" + b"a" * 2000 + b"@example.com>").code == 500
        assert client.command(b"NOOP").code == 250
    assert_healthy(relay, threaded_upstream)


def test_bare_lf_bare_cr_and_nul_get_wellformed_replies(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """Bare LF, bare CR and NUL inside commands never produce a malformed or leaking reply."""
    for stream in (
        b"NOOP\nNOOP\r\n",
        b"NOOP\rRSET\r\n",
        b"FOO\rBAR\r\n",
        b"NO\x00OP\r\n",
        b"MAIL FROM:<a\x00b@example.com>\r\n",
        b"MAIL FROM:<a@example.com>\rRCPT TO:<b@example.org>\r\n",
        b"\r\r\r\n",
        b"\n\n\n",
        b"\x00\x00\x00\r\n",
    ):
        with greeted(relay.port) as client:
            client.send(stream + b"QUIT\r\n")
            replies = client.read_until_closed()
            assert replies[-1].code == 221, (stream, replies)
    assert_healthy(relay, threaded_upstream)


def test_bare_newline_dots_in_data_cannot_smuggle_a_second_message(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """`\\n.\\n` and `\\r.\\r` inside DATA do not end the message upstream (no SMTP smuggling)."""
    before = len(threaded_upstream.messages)
    marker = "smuggle-7d1f"
    body = (
        f"Subject: {marker}\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.com>\nRCPT TO:<victim@"
        "example.org>\nDATA\nSubject: smuggled\n\nsecond\r.\rthird\r\n..leading dot\r\n"
    ).encode()
    with greeted(relay.port) as client:
        assert client.command(b"MAIL FROM:<app@example.com>").code == 250
        assert client.command(b"RCPT TO:<you@example.org>").code == 250
        assert client.command(b"DATA").code == 354
        client.send(body + b"\r\n.\r\n")
        assert client.read_reply().code == 250
        assert client.command(b"QUIT").code == 221
    new = threaded_upstream.messages[before:]
    assert [m.recipients for m in new] == [("you@example.org",)]
    assert marker.encode() in new[0].data and b"second" in new[0].data
    assert b"third" in new[0].data


def test_data_over_size_is_refused(relay: ThreadedRelay, threaded_upstream: SmtpUpstream) -> None:
    """SIZE above the limit gets 552 at MAIL; a body above it gets 552 after DATA; nothing sent."""
    before = threaded_upstream.accepted
    with greeted(relay.port) as client:
        reply = client.command(b"MAIL FROM:<app@example.com> SIZE=%d" % (MAX_SIZE + 1))
        assert reply.code == 552
        assert client.command(b"MAIL FROM:<app@example.com> SIZE=1000").code == 250
        assert client.command(b"RCPT TO:<you@example.org>").code == 250
        assert client.command(b"DATA").code == 354
        line = b"y" * 998 + b"\r\n"
        client.send(b"Subject: big\r\n\r\n" + line * (MAX_SIZE // len(line) + 5) + b".\r\n")
        assert client.read_reply().code == 552
        assert client.command(b"NOOP").code == 250
    assert threaded_upstream.accepted == before
    assert_healthy(relay, threaded_upstream)


def test_hostile_addresses_get_clean_answers_and_only_accepted_ones_are_sent(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """Invalid, quoted, IDN, routed and enormous addresses: clean replies, exact delivery."""
    accepted: list[str] = []
    before = len(threaded_upstream.messages)
    with greeted(relay.port) as client:
        for sender in HOSTILE_ADDRESSES:
            reply = client.command(b"MAIL FROM:<" + sender.encode() + b"> SMTPUTF8")
            assert reply.code in {250, 500, 501, 550, 553, 555}, (sender, reply)
            if reply.code == 250:
                assert client.command(b"RSET").code == 250
        assert client.command(b"MAIL FROM:<app@example.com> SMTPUTF8").code == 250
        for recipient in HOSTILE_ADDRESSES:
            reply = client.command(b"RCPT TO:<" + recipient.encode() + b">")
            assert reply.code in {250, 500, 501, 550, 553, 555}, (recipient, reply)
            if reply.code == 250:
                accepted.append(recipient)
        assert accepted, "no hostile address was accepted at all"
        assert client.command(b"DATA").code == 354
        client.send(b"Subject: addresses\r\n\r\nhello\r\n.\r\n")
        final = client.read_reply()
    new = threaded_upstream.messages[before:]
    delivered = [r for m in new for r in m.recipients]
    # aiosmtpd drops a source route (RFC 5321 section 4.1.1.3 lets a server ignore it).
    expected = [a.split(":", 1)[1] if a.startswith("@") else a for a in accepted]
    if final.code == 250:
        assert sorted(delivered) == sorted(expected), (delivered, expected)
    else:
        assert final.code in {451, 550, 553, 554}, final
        assert len(delivered) <= len(accepted)
    assert_healthy(relay, threaded_upstream)


def test_paths_the_email_parser_chokes_on_get_a_permanent_refusal(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """`a@` without angle brackets (which crashes Python's address parser) is a syntax error
    (5xx), not an internal error: a 451 would make the client retry a hopeless address."""
    with relay_errors() as errors:
        with greeted(relay.port) as client:
            for line in (b"VRFY a@", b"VRFY \x93@", b"MAIL FROM:a@", b"MAIL FROM: a@"):
                reply = client.command(line)
                assert 500 <= reply.code < 600 or reply.code == 252, (line, reply)
            assert client.command(b"MAIL FROM:<app@example.com>").code == 250
            for line in (b"RCPT TO:b@", b"RCPT TO: x@"):
                reply = client.command(line)
                assert 500 <= reply.code < 600, (line, reply)
    assert not errors.records, errors.describe()
    assert_healthy(relay, threaded_upstream)


def test_a_thousand_recipients_all_arrive_exactly_once(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """1,000 RCPTs are accepted (the 1,001st gets 452) and each recipient gets one copy."""
    before = len(threaded_upstream.messages)
    recipients = [f"r{n:04d}@example.org" for n in range(1000)]
    with greeted(relay.port) as client:
        assert client.command(b"MAIL FROM:<app@example.com>").code == 250
        for recipient in recipients:
            assert client.command(f"RCPT TO:<{recipient}>".encode()).code == 250
        assert client.command(b"RCPT TO:<one-too-many@example.org>").code == 452
        assert client.command(b"DATA").code == 354
        client.send(b"Subject: many\r\n\r\nto many\r\n.\r\n")
        assert client.read_reply().code == 250
    delivered = [r for m in threaded_upstream.messages[before:] for r in m.recipients]
    assert sorted(delivered) == recipients
    assert all(len(m.recipients) <= 50 for m in threaded_upstream.messages[before:])
    assert_healthy(relay, threaded_upstream)


def test_auth_with_garbage_base64_gets_clean_refusals(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """Garbage AUTH data (bad base64, bad splits, aborts, odd mechanisms) gets 5xx, not a crash."""
    with greeted(relay.port) as client:
        assert client.command(b"STARTTLS").code == 220
        client.starttls(certificates.ca_file)
        assert client.command(b"EHLO hostile.example").code == 250
        for line in (
            b"AUTH PLAIN !!!!",
            b"AUTH PLAIN " + base64.b64encode(b"no-nul-separators"),
            b"AUTH PLAIN " + base64.b64encode(b"\0\0\0\0"),
            b"AUTH PLAIN " + base64.b64encode(b"\xff\0\xfe\0\xfd"),
            b"AUTH PLAIN =",
            b"AUTH PLAIN " + b"A" * 900,
            b"AUTH PLAIN a b c",
            b"AUTH XOAUTH2 dG9rZW4=",
            b"AUTH",
        ):
            reply = client.command(line)
            assert 500 <= reply.code < 600, (line, reply)
        assert client.command(b"AUTH LOGIN").code == 334
        assert client.command(b"%%% not base64 %%%").code == 501
        assert client.command(b"AUTH PLAIN").code == 334
        assert client.command(b"*").code == 501
        assert client.command(b"AUTH LOGIN " + base64.b64encode(b"app")).code == 334
        assert client.command(base64.b64encode(b"\xff\xfe garbage")).code == 535
        assert client.command(b"NOOP").code == 250
        plain = base64.b64encode(f"\0{RELAY_USER}\0{RELAY_PASSWORD}".encode())
        assert client.command(b"AUTH PLAIN " + plain).code == 235
    assert_healthy(relay, threaded_upstream)


def test_starttls_twice_is_refused(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream, certificates: TestCertificates
) -> None:
    """A second STARTTLS on a TLS session is refused with 503 and the session goes on."""
    with relay_errors() as errors:
        with greeted(relay.port) as client:
            assert client.command(b"STARTTLS").code == 220
            client.starttls(certificates.ca_file)
            ehlo = client.command(b"EHLO hostile.example")
            assert "STARTTLS" not in ehlo.lines
            second = client.command(b"STARTTLS")
            assert second.code == 503, second
            assert client.command(b"NOOP").code == 250
    assert not errors.records, errors.describe()
    assert_healthy(relay, threaded_upstream)


def test_garbage_instead_of_a_tls_handshake_closes_the_session(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """Plain-text commands after `220` to STARTTLS end the session without a traceback to the
    client, and a client's failed handshake is not counted or logged as a relay error."""
    with hostile_relay(certificates, threaded_upstream) as relay, relay_errors() as errors:
        for _ in range(3):
            with greeted(relay.port) as client:
                assert client.command(b"STARTTLS").code == 220
                with contextlib.suppress(ConnectionClosed):
                    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n" * 20)
                assert client.read_until_closed(timeout=10.0) == []
        assert poll(lambda: relay.open_sessions() == 0, 5.0)
        assert not errors.records, errors.describe()
        assert_healthy(relay, threaded_upstream)


def test_commands_after_quit_are_ignored(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """Commands pipelined after QUIT get no reply and deliver nothing; the socket closes."""
    before = threaded_upstream.accepted
    with greeted(relay.port) as client:
        client.send(
            b"QUIT\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
            b"Subject: after quit\r\n\r\nx\r\n.\r\nNOOP\r\n"
        )
        replies = client.read_until_closed()
    assert [r.code for r in replies] == [221]
    with greeted(relay.port) as client:
        assert client.command(b"QUIT").code == 221
        time.sleep(0.1)
        with contextlib.suppress(ConnectionClosed):
            client.send(b"NOOP\r\n")
        assert client.read_until_closed() == []
    assert threaded_upstream.accepted == before
    assert_healthy(relay, threaded_upstream)


# --- slow and idle clients ------------------------------------------------------------------------


def slow_loris(port: int, payload: bytes, interval: float, results: dict[str, Any]) -> None:
    """Send `payload` one byte per `interval`; record how long until the relay hung up."""
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        greeting = sock.recv(4096)
        received = bytearray(greeting)
        try:
            for byte in payload:
                sock.sendall(bytes([byte]))
                sent += 1
                sock.settimeout(interval)
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the relay hung up between two bytes: that is the point
    results["elapsed"] = time.monotonic() - started
    results["sent"] = sent
    results["received"] = bytes(received)


def test_slow_loris_clients_are_timed_out_while_others_are_served(
    relay: ThreadedRelay, threaded_upstream: SmtpUpstream
) -> None:
    """Clients sending one byte per second (in a command, or in DATA) are cut off near the
    session timeout, while a normal client is served at the same time."""
    command = b"EHLO slow-loris.example.com\r\n" * 3
    in_data = b"EHLO a\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
    results: list[dict[str, Any]] = [{}, {}]

    def slow_data() -> None:
        # Send the envelope at once, then one body byte per second.
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            sock.recv(4096)
            sock.sendall(in_data)
            time.sleep(0.3)
            sock.recv(4096)
            started, sent = time.monotonic(), 0
            try:
                for byte in b"Subject: slow\r\n\r\n" + b"z" * 30:
                    sock.sendall(bytes([byte]))
                    sent += 1
                    sock.settimeout(1.0)
                    try:
                        if sock.recv(4096) == b"":
                            break
                    except TimeoutError:
                        continue
            except (BrokenPipeError, ConnectionResetError):
                pass  # hung up on us: expected
            results[1]["elapsed"] = time.monotonic() - started
            results[1]["sent"] = sent

    threads = [
        threading.Thread(target=slow_loris, args=(relay.port, command, 1.0, results[0])),
        threading.Thread(target=slow_data),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    send_normally(relay.port, threaded_upstream)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    for result in results:
        assert result["elapsed"] < SESSION_TIMEOUT + 3.0, result
        assert result["sent"] < 10, result
    parse_replies(results[0]["received"])
    assert_healthy(relay, threaded_upstream)


def test_slow_loris_sending_valid_commands_is_cut_off_by_the_junk_limit(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """A client that completes a valid NOOP one byte at a time, always inside the idle timeout
    (aiosmtpd restarts that timer on every command), is closed with 421 once it has sent
    RELAY_JUNK_COMMAND_LIMIT commands without a message, while a normal client is served."""
    noop_seconds = 6 * 0.25
    assert noop_seconds < SESSION_TIMEOUT  # the idle timeout alone would never end this session
    result: dict[str, Any] = {}
    with hostile_relay(certificates, threaded_upstream, RELAY_JUNK_COMMAND_LIMIT="3") as relay:
        loris = threading.Thread(
            target=slow_loris, args=(relay.port, b"NOOP\r\n" * 8, 0.25, result)
        )
        loris.start()
        send_normally(relay.port, threaded_upstream)
        loris.join(30)
        assert not loris.is_alive()
        replies = parse_replies(result["received"])
        assert [r.code for r in replies] == [220, 250, 250, 250, 421], replies
        assert "Too many commands without a message" in replies[-1].text
        assert result["sent"] < len(b"NOOP\r\n" * 5), result
        assert_healthy(relay, threaded_upstream)


def test_junk_budget_counts_protocol_errors_and_refills_with_each_message(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream
) -> None:
    """Protocol errors spend the budget like NOOPs; a message that reaches the end of DATA
    refills it, so a long-lived connection that NOOPs before each message is never cut off."""
    with hostile_relay(certificates, threaded_upstream, RELAY_JUNK_COMMAND_LIMIT="3") as relay:
        with greeted(relay.port) as client:  # EHLO: 1 unit
            for _ in range(5):
                assert client.command(b"NOOP").code == 250  # 1 unit, refilled below
                assert client.command(b"MAIL FROM:<app@example.com>").code == 250
                assert client.command(b"RCPT TO:<you@example.org>").code == 250
                assert client.command(b"DATA").code == 354
                client.send(unique_message() + b".\r\n")
                assert client.read_reply().code == 250
            assert client.command(b"MAIL FROM:<app@example.com>").code == 250
            assert client.command(b"MAIL FROM:<app@example.com>").code == 503  # 1
            assert client.command(b"RCPT TO:<not an address>").code == 501  # 2
            assert client.command(b"RSET").code == 250  # 3: the budget is spent
            assert client.command(b"NOOP").code == 421
            assert client.read_until_closed() == []
        assert_healthy(relay, threaded_upstream)


def test_a_thousand_idle_connections_are_timed_out_while_a_client_is_served(
    certificates: TestCertificates, threaded_upstream: SmtpUpstream, tmp_path: Path
) -> None:
    """1,000 idle connections do not stop a normal client; all are closed after the timeout.

    The relay runs as its own process here: in a thread it would share the GIL with the 1,000
    connecting sockets, which measures the test rather than the relay.
    """
    raise_fd_limit(4096)
    timeout = 6.0
    environ = relay_environ(
        certificates,
        threaded_upstream,
        RELAY_AUTH_REQUIRED="false",
        RELAY_SESSION_TIMEOUT=str(timeout),
    )
    with RelayProcess(environ, log_path=tmp_path / "relay.log") as relay:
        idle: list[socket.socket] = []
        try:
            started = time.monotonic()
            for number in range(1000):
                if number % 50 == 0:
                    # Pace the burst (the relay listens with a backlog of 1024) so
                    # that SYNs are not dropped and retried a second later by the kernel.
                    time.sleep(0.05)
                idle.append(socket.create_connection(("127.0.0.1", relay.port), timeout=10))
            opened = time.monotonic() - started
            send_normally(relay.port, threaded_upstream)
            still_open = relay_connections(relay.pid, relay.port)
            assert still_open >= 900, f"{still_open} open; opening took {opened:.1f}s"
            closed = poll(lambda: relay_connections(relay.pid, relay.port) == 0, timeout + 10.0)
            assert closed, relay_connections(relay.pid, relay.port)
            for sock in idle:
                sock.settimeout(5)
                data = bytearray()
                while chunk := sock.recv(4096):
                    data += chunk
                assert [r.code for r in parse_replies(bytes(data))] == [220]
        finally:
            for sock in idle:
                sock.close()
        assert relay.alive
        send_normally(relay.port, threaded_upstream)


def relay_connections(pid: int, port: int) -> int:
    """Established client connections the relay process holds on its SMTP port."""
    process = psutil.Process(pid)
    return sum(
        1
        for conn in process.net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port == port
    )


def test_wire_client_rejects_malformed_replies() -> None:
    """The checker itself flags bad lines, leaks and code changes (so the suite can fail)."""
    for stream in (
        b"250 ok\n",
        b"25 short\r\n",
        b"250ok\r\n",
        b"250 a\rb\r\n",
        b"250 nul\x00\r\n",
        b"451 4.3.0 Error: (KeyError) 'x'\r\n",
        b"451 Traceback (most recent call last):\r\n",
        b"250-first\r\n251 second\r\n",
        b"250-unfinished\r\n",
    ):
        with pytest.raises(ReplyViolation):
            parse_replies(stream)
    assert parse_replies(b"250-a\r\n250 b\r\n334 \r\n") == [
        Reply(250, ("a", "b")),
        Reply(334, ("",)),
    ]
