"""The SES SMTP client part of ses_core: send mail through SES without losing any.

A send returns one verdict per recipient (`SendResult`): ACCEPTED, REFUSED only for a real
permanent reply, or DEFERRED for everything that may pass (the caller answers 4xx and the mail is
kept). Reply texts are read once, in `classify_reply`; everything else acts on `ReplyClass`.

This front door holds the light names: settings, results and the `MessageSender` port. The pooled
client itself needs aiosmtplib and is imported from its module:
`from ses_core.smtp.client import SesSmtpClient`.
"""

from ses_core.smtp.results import (
    Outcome,
    PoolStats,
    RecipientResult,
    Reply,
    ReplyClass,
    SendResult,
    classify_reply,
)
from ses_core.smtp.sender import MessageSender, OutboundMessage
from ses_core.smtp.settings import SES_MAX_RECIPIENTS, SmtpSettings

__all__ = [
    "SES_MAX_RECIPIENTS",
    "MessageSender",
    "Outcome",
    "OutboundMessage",
    "PoolStats",
    "RecipientResult",
    "Reply",
    "ReplyClass",
    "SendResult",
    "SmtpSettings",
    "classify_reply",
]
