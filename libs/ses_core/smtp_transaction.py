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
"""

from __future__ import annotations

import enum
import re

import aiosmtplib
import attrs

from ses_core.smtp_pool import PooledConnection
from ses_core.smtp_replies import ReplyClass, classify_reply

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")

SMTPUTF8_MISSING = "5.6.7 message needs SMTPUTF8 but the upstream does not offer it"


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
        normalized = _LINE_ENDING.sub(b"\r\n", data)
        if not normalized.endswith(b"\r\n"):
            normalized += b"\r\n"
        return cls(wire=_LEADING_DOT.sub(b"..", normalized) + b".\r\n", size=len(normalized))


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
    """

    replies: dict[str, Reply]
    loss: Loss = Loss.NONE
    reusable: bool = True
    recycle: bool = False
    stale: bool = False

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
    connection: PooledConnection, envelope: Envelope, timeout: float
) -> TransactionOutcome:
    """Send one message over `connection`; never raises for SMTP replies or a broken session."""
    smtp = connection.smtp
    recipients = envelope.recipients
    needs_utf8 = envelope.smtputf8 or not all(a.isascii() for a in (envelope.sender, *recipients))
    if needs_utf8 and not smtp.supports_extension("smtputf8"):
        return TransactionOutcome.for_all(
            recipients, Reply(553, SMTPUTF8_MISSING, ReplyClass.PERMANENT), reusable=True
        )
    options = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={envelope.payload.size}")
    if needs_utf8:
        options.append("SMTPUTF8")
    if envelope.eightbit and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "utf-8" if needs_utf8 else "ascii"

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

    protocol = smtp.protocol
    try:
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol.write(envelope.payload.wire)
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
