"""The `MessageSender` port and the `OutboundMessage` it takes.

The relay depends on this port, not on the SES client: production wires `SesSmtpClient`
(`ses_core.smtp.client`), local mode an outbox, tests a fake. This module stays free of
aiosmtplib so that importing the port costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from ses_core.smtp.results import SendResult


def _addresses(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class OutboundMessage:
    """A message to send, as it will go on the wire.

    Attributes:
        sender: envelope sender (MAIL FROM).
        recipients: envelope recipients (RCPT TO), any number.
        data: the RFC 5322 message; any line endings (sent as CRLF).
        smtputf8: the message needs SMTPUTF8 (also implied by non-ASCII addresses).
        eightbit: the body is 8-bit MIME.
    """

    sender: str
    recipients: tuple[str, ...] = attrs.field(converter=_addresses)
    data: bytes
    smtputf8: bool = False
    eightbit: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.recipients:
            message = "a message needs at least one recipient"
            raise ValueError(message)


def recipient_chunks(recipients: tuple[str, ...], size: int) -> tuple[tuple[str, ...], ...]:
    """`recipients` split, in order, into groups of at most `size` (SES takes 50 per message):
    every sender splits the same way, so a chunk's outcome means the same whichever way out."""
    return tuple(recipients[start : start + size] for start in range(0, len(recipients), size))


class MessageSender(Protocol):
    """Anything that delivers mail: the SES client, or a relay's local outbox."""

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Deliver `message`; one result per recipient; never raises for SMTP outcomes.

        Transient failures are retried only until `deadline` (on the sender's clock,
        `time.monotonic()` unless injected); what is still deferred then is the caller's to
        decide.
        """
        ...

    async def probe(self) -> None:
        """Raise unless mail can be delivered now (a readiness probe)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
