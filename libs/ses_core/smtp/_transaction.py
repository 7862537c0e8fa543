"""One SMTP mail transaction (MAIL, RCPT..., DATA, body) on a pooled session, and how far it got.

The client needs to know exactly how far a transaction got when the session breaks:
- before the message body was handed to the socket, SES cannot have accepted the message, so
  sending it again on a fresh session is safe;
- after the body and its final '.' were written and before SES replied, SES may or may not have
  accepted it: that is the one ambiguous case, and the client must not resend on its own.

aiosmtplib's `data()` sends the DATA command and the body in one call and raises the same
`SMTPServerDisconnected` for a loss before the `354` and after the final '.', so this module
writes the commands and the body itself. That means doing here what aiosmtplib would do: the
same address quoting and control-character checks, line endings normalised to CRLF (bare LF and
bare CR included) and dot-stuffing (a line starting with '.' gets another).

One state machine serves both dialogues. With PIPELINING (RFC 2920; SES offers it) MAIL, every
RCPT and DATA go out in one write and the replies are read in order; without it each command is
written right before its reply is read. The body always waits for the `354`, so the failure
semantics are the same either way: a loss before the `354` is "not sent", a loss after the body
is the ambiguous case, and each RCPT reply is that recipient's verdict. A refused MAIL applies to
every recipient (pipelined RCPT and DATA replies that follow it, `503` in practice, are read and
ignored). A reply that cannot be parsed ends the session like a broken connection.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable

import aiosmtplib
import attrs

from ses_core.smtp._pipelining import Commands, command_line
from ses_core.smtp._pool import PooledConnection
from ses_core.smtp._session import abort_session
from ses_core.smtp.results import Reply, ReplyClass

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")

#: Called with the number of recipients the upstream accepted, right before the body is written;
#: None means go ahead, a Reply means do not send (the limiter had no tokens for it).
Charge = Callable[[int], Awaitable[Reply | None]]

SMTPUTF8_MISSING = "5.6.7 message needs SMTPUTF8 but the upstream does not offer it"
EIGHTBITMIME_MISSING = "5.6.3 message has 8-bit content but the upstream does not offer 8BITMIME"


@attrs.frozen
class MessageData:
    """A message body ready for the wire.

    Attributes:
        wire: CRLF-normalised, dot-stuffed body followed by the terminating ".\\r\\n".
        size: octets of the normalised body (what SIZE= declares, RFC 1870).
    """

    wire: bytes
    size: int

    @classmethod
    def from_bytes(cls, data: bytes) -> MessageData:
        """Normalise every line ending to CRLF, end with CRLF, dot-stuff, terminate."""
        if data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r"):
            normalized = data  # already CRLF throughout (the usual case): no copy
        else:
            normalized = _LINE_ENDING.sub(b"\r\n", data)
        if not normalized.endswith(b"\r\n"):
            normalized += b"\r\n"
        if normalized.startswith(b".") or b"\n." in normalized:
            stuffed = _LEADING_DOT.sub(b"..", normalized)
        else:
            stuffed = normalized
        return cls(wire=stuffed + b".\r\n", size=len(normalized))


class Loss(enum.Enum):
    """Whether, and where, the session broke during the transaction."""

    NONE = "none"
    BEFORE_BODY = "before_body"  # safe to resend on another session
    AFTER_BODY = "after_body"  # ambiguous: SES may have the message


@attrs.frozen
class SmtpEnvelope:
    """What one transaction sends.

    Attributes:
        sender: MAIL FROM address.
        recipients: RCPT TO addresses (at most 50).
        data: the prepared body.
        smtputf8: ask for SMTPUTF8 (required for non-ASCII addresses).
        eightbit: declare BODY=8BITMIME when the server offers it.
    """

    sender: str
    recipients: tuple[str, ...]
    data: MessageData
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


_BROKEN = (aiosmtplib.SMTPException, OSError)


async def run_transaction(
    connection: PooledConnection,
    envelope: SmtpEnvelope,
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
    if not smtp.supports_extension("8bitmime") and not envelope.data.wire.isascii():
        # RFC 6152: 8-bit octets must never go to a server without 8BITMIME; the client does
        # not downgrade to 7-bit MIME, so it reports the message undeliverable there.
        return TransactionOutcome.for_all(
            recipients, Reply(554, EIGHTBITMIME_MISSING, ReplyClass.PERMANENT), reusable=True
        )
    options = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={envelope.data.size}")
    if needs_utf8:
        options.append("SMTPUTF8")
    if envelope.eightbit and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "utf-8" if needs_utf8 else "ascii"

    try:
        lines = [command_line(b"MAIL FROM:", envelope.sender, options, encoding)]
    except (ValueError, UnicodeError):
        # Checked before sending, as aiosmtplib does: the sender is unusable for everyone.
        reply = Reply(501, "5.1.7 invalid sender address", ReplyClass.PERMANENT)
        return TransactionOutcome.for_all(recipients, reply, reusable=True)
    replies: dict[str, Reply] = {}
    sent: list[str] = []
    for recipient in recipients:
        try:
            lines.append(command_line(b"RCPT TO:", recipient, [], encoding))
        except (ValueError, UnicodeError):
            replies[recipient] = Reply(501, "5.1.3 invalid recipient address", ReplyClass.PERMANENT)
        else:
            sent.append(recipient)
    if not sent:
        return TransactionOutcome(replies)
    lines.append(b"DATA\r\n")

    protocol = smtp.protocol
    if protocol is None:
        smtp.close()
        return TransactionOutcome({}, Loss.BEFORE_BODY, reusable=False, stale=connection.reused)
    pipelined = smtp.supports_extension("pipelining")
    commands = Commands(protocol, lines, timeout, pipelined=pipelined)
    try:
        return await _converse(connection, envelope, commands, sent, replies, charge)
    finally:
        commands.finish()


async def _converse(
    connection: PooledConnection,
    envelope: SmtpEnvelope,
    commands: Commands,
    sent: list[str],
    replies: dict[str, Reply],
    charge: Charge | None,
) -> TransactionOutcome:
    smtp = connection.smtp
    recipients = envelope.recipients
    try:
        mail = await commands.next_reply()
    except aiosmtplib.SMTPResponseException:
        # An unparsable reply: the session cannot be trusted any more; nothing was sent.
        smtp.close()
        return TransactionOutcome({}, Loss.BEFORE_BODY, reusable=False)
    except _BROKEN:
        smtp.close()
        return TransactionOutcome({}, Loss.BEFORE_BODY, reusable=False, stale=connection.reused)
    if mail.code != 250:
        refused = Reply.from_upstream(mail.code, mail.message)
        if mail.code == 421 or not await commands.skip_unanswered():
            smtp.close()
            return TransactionOutcome(
                {r: refused for r in recipients}, reusable=False, recycle=mail.code == 421
            )
        outcome = await _abandon(smtp, recipients, refused)
        return attrs.evolve(outcome, replies={**outcome.replies, **replies})

    accepted: list[str] = []
    for recipient in sent:
        try:
            rcpt = await commands.next_reply()
        except _BROKEN:
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

    if not accepted and not commands.unanswered:
        # Every RCPT refused and DATA not written: end the transaction without it.
        outcome = await _abandon(smtp, (), Reply(250, "", ReplyClass.SUCCESS))
        return attrs.evolve(outcome, replies=replies)
    try:
        start = await commands.next_reply()
    except _BROKEN:
        smtp.close()
        return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
    commands.finish()
    if start.code != 354:
        rest = await _abandon(smtp, tuple(accepted), Reply.from_upstream(start.code, start.message))
        return attrs.evolve(rest, replies={**replies, **rest.replies})
    if not accepted:
        # Every pipelined RCPT refused yet DATA accepted (RFC 2920 section 3.1): end the empty
        # message.
        try:
            commands.write(b".\r\n")
            await commands.read()
        except _BROKEN:
            smtp.close()
            return TransactionOutcome(replies, reusable=False)
        return TransactionOutcome(replies)
    return await _send_body(connection, envelope.data, accepted, replies, commands, charge)


async def _send_body(
    connection: PooledConnection,
    data: MessageData,
    accepted: list[str],
    replies: dict[str, Reply],
    commands: Commands,
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
    try:
        commands.write(data.wire)
    except _BROKEN:
        smtp.close()
        return TransactionOutcome(replies, Loss.BEFORE_BODY, reusable=False)
    connection.messages += 1
    try:
        final = await commands.read()
    except _BROKEN:
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
    except _BROKEN:
        smtp.close()
        return TransactionOutcome.for_all(recipients, reply, reusable=False)
    return TransactionOutcome.for_all(recipients, reply, reusable=True)
