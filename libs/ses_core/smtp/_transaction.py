"""One SMTP mail transaction (MAIL, RCPT..., DATA) on a pooled session, and where it failed.

The client needs to know exactly how far a transaction got when the session breaks:
- before the message body was handed to the socket, SES cannot have accepted the message, so
  sending it again on a fresh session is safe;
- after the body and its final '.' were written and before SES replied, SES may or may not have
  accepted it: that is the one ambiguous case, and the client must not resend on its own.

aiosmtplib's `data()` sends the DATA command and the body in one call and raises the same
`SMTPServerDisconnected` for a loss before the `354` and after the final '.', so this module sends
`DATA` with `execute_command` and writes the body itself. That means doing here what
`data()` would do: line endings normalised to CRLF (bare LF and bare CR included, as aiosmtplib's
own `normalize_message_line_endings`) and dot-stuffing (a line starting with '.' gets another).

PIPELINING (RFC 2920; SES offers it): when the server advertises it, MAIL, every RCPT and DATA
go out in one write and the replies are read in order, saving a round trip per command. The
body still waits for the `354`, so the failure semantics are the same as without pipelining: a
loss before the `354` is "not sent", a loss after the body is the ambiguous case, and each
RCPT reply is still that recipient's verdict. A refused MAIL applies to every recipient (the
RCPT and DATA replies that follow it, `503` in practice, are read and ignored).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Awaitable, Callable

import aiosmtplib
import attrs
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX

from ses_core.smtp._pool import PipeliningProtocol, PooledConnection, abort_session
from ses_core.smtp.results import ReplyClass, classify_reply

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")

#: Called with the number of recipients the upstream accepted, right before the body is written;
#: None means go ahead, a Reply means do not send (the limiter had no tokens for it).
Charge = Callable[[int], Awaitable["Reply | None"]]

SMTPUTF8_MISSING = "5.6.7 message needs SMTPUTF8 but the upstream does not offer it"
EIGHTBITMIME_MISSING = "5.6.3 message has 8-bit content but the upstream does not offer 8BITMIME"


@attrs.frozen
class Payload:
    """A message body ready for the wire.

    Attributes:
        wire: CRLF-normalised, dot-stuffed body followed by the terminating ".\\r\\n".
        size: octets of the normalised body (what SIZE= declares, RFC 1870).
    """

    wire: bytes
    size: int

    @classmethod
    def from_message_data(cls, data: bytes) -> Payload:
        """Normalise every line ending to CRLF, end with CRLF, dot-stuff, terminate."""
        if data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r"):
            normalized = data  # already CRLF throughout (the usual case): no copy
        else:
            normalized = _LINE_ENDING.sub(b"\r\n", data)
        if not normalized.endswith(b"\r\n"):
            normalized += b"\r\n"
        if normalized.startswith(b".") or b"\n." in normalized:
            normalized_wire = _LEADING_DOT.sub(b"..", normalized)
        else:
            normalized_wire = normalized
        return cls(wire=normalized_wire + b".\r\n", size=len(normalized))


@attrs.frozen
class Reply:
    """A reply (or a locally made equivalent) and its class.

    Attributes:
        code: SMTP reply code.
        text: reply text.
        reply_class: its meaning; usually `classify_reply(code, text)`.
    """

    code: int
    text: str
    reply_class: ReplyClass

    @classmethod
    def from_upstream(cls, code: int, text: str) -> Reply:
        """A reply as the upstream sent it, classified."""
        return cls(code, text, classify_reply(code, text))


class Loss(enum.Enum):
    """Whether, and where, the session broke during the transaction."""

    NONE = "none"
    BEFORE_BODY = "before_body"  # safe to resend on another session
    AFTER_BODY = "after_body"  # ambiguous: SES may have the message


@attrs.frozen
class Envelope:
    """What one transaction sends.

    Attributes:
        sender: MAIL FROM address.
        recipients: RCPT TO addresses (at most 50).
        payload: the prepared body.
        smtputf8: ask for SMTPUTF8 (required for non-ASCII addresses).
        eightbit: declare BODY=8BITMIME when the server offers it.
    """

    sender: str
    recipients: tuple[str, ...]
    payload: Payload
    smtputf8: bool
    eightbit: bool


@attrs.frozen
class TransactionOutcome:
    """What one transaction did.

    Attributes:
        replies: the final reply per recipient that got one; a recipient missing here was lost
            with the session (see `loss`).
        loss: where the session broke, if it did.
        reusable: the session is in a clean state and may serve the next message.
        recycle: the server asked to end the session (421).
        stale: the session was already dead when the transaction began (a reused session broke
            before MAIL got any answer); the attempt did not reach SES.
        held_back: `charge` refused: the body was not sent (the session was aborted after the
            `354`, so the upstream discards the transaction); the accepted recipients carry the
            charge's reply.
    """

    replies: dict[str, Reply]
    loss: Loss = Loss.NONE
    reusable: bool = True
    recycle: bool = False
    stale: bool = False
    held_back: bool = False

    @classmethod
    def for_all(
        cls, recipients: tuple[str, ...], reply: Reply, *, reusable: bool
    ) -> TransactionOutcome:
        """The same reply for every recipient."""
        closing = reply.code == 421
        return cls(
            {r: reply for r in recipients}, reusable=reusable and not closing, recycle=closing
        )


_BROKEN = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)


async def run_transaction(
    connection: PooledConnection,
    envelope: Envelope,
    timeout: float,
    charge: Charge | None = None,
) -> TransactionOutcome:
    """Send one message over `connection`; never raises for SMTP replies or a broken session.

    `charge`, if given, is awaited after the `354` and before the body (see `Charge`), so that
    send-rate tokens are taken as close as possible to the moment the upstream accepts.
    """
    smtp = connection.smtp
    recipients = envelope.recipients
    needs_utf8 = envelope.smtputf8 or not all(a.isascii() for a in (envelope.sender, *recipients))
    if needs_utf8 and not smtp.supports_extension("smtputf8"):
        return TransactionOutcome.for_all(
            recipients, Reply(553, SMTPUTF8_MISSING, ReplyClass.PERMANENT), reusable=True
        )
    if not smtp.supports_extension("8bitmime") and not envelope.payload.wire.isascii():
        # RFC 6152: 8-bit octets must never go to a server without 8BITMIME; the client does
        # not downgrade to 7-bit MIME, so it reports the message undeliverable there.
        return TransactionOutcome.for_all(
            recipients, Reply(554, EIGHTBITMIME_MISSING, ReplyClass.PERMANENT), reusable=True
        )
    options = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={envelope.payload.size}")
    if needs_utf8:
        options.append("SMTPUTF8")
    if envelope.eightbit and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "utf-8" if needs_utf8 else "ascii"
    protocol = smtp.protocol
    if isinstance(protocol, PipeliningProtocol) and smtp.supports_extension("pipelining"):
        return await _run_pipelined(
            connection, protocol, envelope, options, encoding, timeout, charge
        )

    try:
        await smtp.mail(envelope.sender, options=options, encoding=encoding, timeout=timeout)
    except aiosmtplib.SMTPResponseException as exc:
        return await _abandon(smtp, recipients, Reply.from_upstream(exc.code, exc.message))
    except _BROKEN:
        smtp.close()
        return TransactionOutcome({}, Loss.BEFORE_BODY, reusable=False, stale=connection.reused)
    except (ValueError, aiosmtplib.SMTPException):
        # aiosmtplib refuses, before sending, an address it cannot quote or that holds control
        # characters: the sender is unusable for every recipient.
        reply = Reply(501, "5.1.7 invalid sender address", ReplyClass.PERMANENT)
        return TransactionOutcome.for_all(recipients, reply, reusable=True)

    replies: dict[str, Reply] = {}
    accepted: list[str] = []
    for recipient in recipients:
        try:
            await smtp.rcpt(recipient, encoding=encoding, timeout=timeout)
        except aiosmtplib.SMTPResponseException as exc:
            replies[recipient] = Reply.from_upstream(exc.code, exc.message)
            if exc.code == 421:
                # aiosmtplib closed the session; the rest share the server's verdict.
                closing = replies[recipient]
                return TransactionOutcome(
                    {r: replies.get(r, closing) for r in recipients}, reusable=False, recycle=True
                )
        except _BROKEN:
            smtp.close()
            return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
        except (ValueError, aiosmtplib.SMTPException):
            replies[recipient] = Reply(501, "5.1.3 invalid recipient address", ReplyClass.PERMANENT)
        else:
            accepted.append(recipient)
    if not accepted:
        outcome = await _abandon(smtp, (), Reply(250, "", ReplyClass.SUCCESS))
        return attrs.evolve(outcome, replies=replies)

    try:
        start = await smtp.execute_command(b"DATA", timeout=timeout)
    except _BROKEN:
        smtp.close()
        return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
    if start.code != 354:
        rest = await _abandon(smtp, tuple(accepted), Reply.from_upstream(start.code, start.message))
        return attrs.evolve(rest, replies={**replies, **rest.replies})

    return await _send_body(connection, envelope.payload, accepted, replies, timeout, charge)


async def _run_pipelined(
    connection: PooledConnection,
    protocol: PipeliningProtocol,
    envelope: Envelope,
    options: list[str],
    encoding: str,
    timeout: float,
    charge: Charge | None,
) -> TransactionOutcome:
    """The transaction with MAIL, RCPT... and DATA in one write (see the module docstring)."""
    recipients = envelope.recipients
    try:
        mail = _command(b"MAIL FROM:", envelope.sender, options, encoding)
    except (ValueError, UnicodeError):
        # Same as aiosmtplib refusing it before sending: the sender is unusable for everyone.
        reply = Reply(501, "5.1.7 invalid sender address", ReplyClass.PERMANENT)
        return TransactionOutcome.for_all(recipients, reply, reusable=True)
    replies: dict[str, Reply] = {}
    sent: list[str] = []
    lines = [mail]
    for recipient in recipients:
        try:
            lines.append(_command(b"RCPT TO:", recipient, [], encoding))
        except (ValueError, UnicodeError):
            replies[recipient] = Reply(501, "5.1.3 invalid recipient address", ReplyClass.PERMANENT)
        else:
            sent.append(recipient)
    if not sent:
        return TransactionOutcome(replies)
    lines.append(b"DATA\r\n")

    protocol.expect(len(lines))
    try:
        return await _pipelined_replies(
            connection, protocol, envelope, lines, sent, replies, timeout, charge
        )
    finally:
        protocol.expect(0)


async def _pipelined_replies(
    connection: PooledConnection,
    protocol: PipeliningProtocol,
    envelope: Envelope,
    lines: list[bytes],
    sent: list[str],
    replies: dict[str, Reply],
    timeout: float,
    charge: Charge | None,
) -> TransactionOutcome:
    smtp = connection.smtp
    recipients = envelope.recipients
    try:
        protocol.write(b"".join(lines))
        mail = await protocol.read_response(timeout=timeout)
    except _BROKEN:
        smtp.close()
        return TransactionOutcome({}, Loss.BEFORE_BODY, reusable=False, stale=connection.reused)
    except aiosmtplib.SMTPResponseException:
        # An unparsable reply: the session cannot be trusted any more; nothing was sent.
        smtp.close()
        return TransactionOutcome({}, Loss.BEFORE_BODY, reusable=False)
    if mail.code != 250:
        refused = Reply.from_upstream(mail.code, mail.message)
        if mail.code == 421 or not await _skip_replies(protocol, len(lines) - 1, timeout):
            smtp.close()
            return TransactionOutcome(
                {r: refused for r in recipients}, reusable=False, recycle=mail.code == 421
            )
        outcome = await _abandon(smtp, recipients, refused)
        return attrs.evolve(outcome, replies={**outcome.replies, **replies})

    accepted: list[str] = []
    for recipient in sent:
        try:
            rcpt = await protocol.read_response(timeout=timeout)
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
            return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
        if rcpt.code in (250, 251):
            accepted.append(recipient)
            continue
        replies[recipient] = Reply.from_upstream(rcpt.code, rcpt.message)
        if rcpt.code == 421:
            smtp.close()
            closing = replies[recipient]
            return TransactionOutcome(
                {r: replies.get(r, closing) for r in recipients}, reusable=False, recycle=True
            )

    try:
        start = await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
        return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
    protocol.expect(0)
    if start.code == 354 and not accepted:
        # Every RCPT refused yet DATA accepted (RFC 2920 section 3.1): end the empty message.
        try:
            protocol.write(b".\r\n")
            await protocol.read_response(timeout=timeout)
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
            return TransactionOutcome(replies, reusable=False)
        return TransactionOutcome(replies)
    if start.code != 354:
        if not accepted:
            outcome = await _abandon(smtp, (), Reply(250, "", ReplyClass.SUCCESS))
            return attrs.evolve(outcome, replies=replies)
        rest = await _abandon(smtp, tuple(accepted), Reply.from_upstream(start.code, start.message))
        return attrs.evolve(rest, replies={**replies, **rest.replies})
    return await _send_body(connection, envelope.payload, accepted, replies, timeout, charge)


async def _skip_replies(protocol: PipeliningProtocol, count: int, timeout: float) -> bool:
    """Read and ignore `count` pipelined replies; False when the session broke meanwhile."""
    try:
        for _ in range(count):
            await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


def _command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """One MAIL/RCPT line as aiosmtplib would send it (same address checks)."""
    parts = [verb + _quoted(address, encoding)]
    parts.extend(option.encode("ascii") for option in options)
    for part in parts:
        if COMMAND_INJECTION_REGEX.search(part):
            message = "command argument contains a control character"
            raise ValueError(message)
    return b" ".join(parts) + b"\r\n"


@functools.lru_cache(maxsize=4096)
def _quoted(address: str, encoding: str) -> bytes:
    """`<address>` as aiosmtplib quotes it (its parser is slow; senders and recipients repeat)."""
    return quote_address(address).encode(encoding)


async def _send_body(
    connection: PooledConnection,
    payload: Payload,
    accepted: list[str],
    replies: dict[str, Reply],
    timeout: float,
    charge: Charge | None,
) -> TransactionOutcome:
    """After the `354`: take the tokens, write the body and its final '.', read the verdict."""
    smtp = connection.smtp
    if charge is not None:
        refusal = await charge(len(accepted))
        if refusal is not None:
            # No way to cancel DATA in SMTP: drop the session without the final '.', so the
            # upstream discards the transaction.
            abort_session(smtp)
            replies.update((r, refusal) for r in accepted)
            return TransactionOutcome(replies, reusable=False, recycle=True, held_back=True)
    protocol = smtp.protocol
    try:
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol.write(payload.wire)
    except _BROKEN:
        smtp.close()
        return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
    connection.messages += 1
    try:
        final = await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
        return TransactionOutcome(replies, Loss.AFTER_BODY, reusable=False)
    reply = Reply.from_upstream(final.code, final.message)
    replies.update((r, reply) for r in accepted)
    if final.code == 421:
        smtp.close()
        return TransactionOutcome(replies, reusable=False, recycle=True)
    return TransactionOutcome(replies)


async def _abandon(
    smtp: aiosmtplib.SMTP, recipients: tuple[str, ...], reply: Reply
) -> TransactionOutcome:
    """End a transaction that will not reach DATA's end: RSET so the session can be reused."""
    if reply.code == 421 or not smtp.is_connected:
        smtp.close()
        return TransactionOutcome(
            {r: reply for r in recipients}, reusable=False, recycle=reply.code == 421
        )
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
        return TransactionOutcome.for_all(recipients, reply, reusable=False)
    return TransactionOutcome.for_all(recipients, reply, reusable=True)
