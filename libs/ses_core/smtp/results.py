"""What an SES SMTP reply means, and the values a send returns.

SES answers several different conditions with the same code (`454` is a rate throttle, a daily
quota, an authentication hiccup or a plain transient failure, told apart only by the text; see
the reply table in `docs/ses-facts.md`). `classify_reply` is the single place that reads a reply;
everything else acts on its `ReplyClass`, never on reply text.

Policy encoded here, on purpose:
- only a real permanent reply (5xx that is not an auth/config failure) can make a recipient
  REFUSED; every transient, throttled, rate-limited, quota, auth or connection outcome leaves it
  DEFERRED, so the relay answers 4xx and the sender keeps the mail;
- `530`/`535` and `554 Access denied` are operator errors (credentials, IAM policy): the mail is
  fine, so they are AUTH (deferred, logged loudly), never a bounce;
- unknown or malformed codes are TRANSIENT: when in doubt, keep the mail.
"""

from __future__ import annotations

import enum
import logging

import attrs

#: The deferral text of the ambiguous case (see `RecipientResult.ambiguous`), whichever sender.
AMBIGUOUS_TEXT = (
    "4.4.2 connection to SES lost after the message was sent and before SES replied; "
    "it may have been accepted"
)


class ReplyClass(enum.Enum):
    """What a reply means for the message and for the connection.

    `RATE_LIMITED` is never an upstream reply: it marks recipients deferred because the local
    send-rate limiter had no capacity before the send's deadline. Nor is `LIMITER_UNAVAILABLE`:
    the limiter could not answer at all (a shared store down, failing closed), so nothing was
    sent and the upstream is not to blame.
    """

    SUCCESS = "success"
    TRANSIENT = "transient"
    THROTTLED = "throttled"
    RATE_LIMITED = "rate_limited"
    LIMITER_UNAVAILABLE = "limiter_unavailable"
    DAILY_QUOTA = "daily_quota"
    AUTH = "auth"
    CONNECTION = "connection"
    PERMANENT = "permanent"

    @property
    def retryable_soon(self) -> bool:
        """Whether retrying this message within its deadline may succeed."""
        return self in (ReplyClass.TRANSIENT, ReplyClass.THROTTLED, ReplyClass.CONNECTION)


#: Codes that always mean "the relay's credentials or configuration are wrong".
_AUTH_CODES = frozenset({530, 534, 535, 538})


def classify_reply(code: int, text: str) -> ReplyClass:
    """Classify one SMTP reply from SES (or any upstream) by its code and, for 454/554, its text."""
    lowered = " ".join(text.lower().split())
    if 200 <= code < 400:
        return ReplyClass.SUCCESS
    if code == 421:
        return ReplyClass.CONNECTION
    if 400 <= code < 500:
        if "daily message quota" in lowered or ("throttling" in lowered and "daily" in lowered):
            return ReplyClass.DAILY_QUOTA
        if "throttling" in lowered or "maximum sending rate" in lowered:
            return ReplyClass.THROTTLED
        if "authentication" in lowered:
            return ReplyClass.AUTH
        return ReplyClass.TRANSIENT
    if code in _AUTH_CODES:
        return ReplyClass.AUTH
    if code == 554 and "access denied" in lowered:
        return ReplyClass.AUTH
    if 500 <= code < 600:
        return ReplyClass.PERMANENT
    return ReplyClass.TRANSIENT


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


class Outcome(enum.Enum):
    """The final state of one recipient after a send."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    DEFERRED = "deferred"


def outcome_for(reply_class: ReplyClass) -> Outcome:
    """The recipient outcome a final reply of this class gives."""
    if reply_class is ReplyClass.SUCCESS:
        return Outcome.ACCEPTED
    if reply_class is ReplyClass.PERMANENT:
        return Outcome.REFUSED
    return Outcome.DEFERRED


@attrs.frozen
class RecipientResult:
    """What happened to one recipient.

    Attributes:
        recipient: the envelope address as given to `send`.
        outcome: ACCEPTED, REFUSED (permanent upstream reply) or DEFERRED (retry later).
        code: the upstream's reply code, or a 4xx/5xx code the client chose for a local reason.
        text: the upstream's reply text, or a description of the local reason.
        reply_class: the classification behind `outcome`.
        ambiguous: DEFERRED because the session was lost after the message's final '.' and
            before SES replied: SES may have it, so the client never resends it on its own (a
            resend could deliver twice); whoever resends decides that duplicates are acceptable.
    """

    recipient: str
    outcome: Outcome
    code: int
    text: str
    reply_class: ReplyClass
    ambiguous: bool = False

    @classmethod
    def from_reply(cls, recipient: str, code: int, text: str) -> RecipientResult:
        """A result from a final upstream reply, classified."""
        reply_class = classify_reply(code, text)
        return cls(recipient, outcome_for(reply_class), code, text, reply_class)

    @classmethod
    def for_reply(cls, recipient: str, reply: Reply) -> RecipientResult:
        """The final result a recipient gets from its last reply (REFUSED only when permanent)."""
        outcome = outcome_for(reply.reply_class)
        return cls(recipient, outcome, reply.code, reply.text, reply.reply_class)

    @classmethod
    def deferred(
        cls,
        recipient: str,
        code: int,
        text: str,
        reply_class: ReplyClass,
        *,
        ambiguous: bool = False,
    ) -> RecipientResult:
        """A DEFERRED result, whatever the class (used when a retry budget runs out, and for the
        ambiguous case)."""
        return cls(recipient, Outcome.DEFERRED, code, text, reply_class, ambiguous)


@attrs.frozen
class SendResult:
    """The outcome of one `send`, one entry per recipient in the order given.

    Attributes:
        recipients: one `RecipientResult` per recipient.
        limiter_wait: seconds spent waiting for send-rate capacity, summed over attempts.
        attempts: SMTP transactions tried (summed over 50-recipient chunks).
        ambiguous: the connection was lost after the message's final '.' and before the reply,
            so SES may have accepted it; those recipients are DEFERRED with their own `ambiguous`
            set, were not resent, and a resend may duplicate.
    """

    recipients: tuple[RecipientResult, ...]
    limiter_wait: float = 0.0
    attempts: int = 1
    ambiguous: bool = False

    @classmethod
    def combine(cls, parts: tuple[SendResult, ...]) -> SendResult:
        """Join the results of several chunks of one message."""
        return cls(
            recipients=tuple(r for part in parts for r in part.recipients),
            limiter_wait=sum(part.limiter_wait for part in parts),
            attempts=sum(part.attempts for part in parts),
            ambiguous=any(part.ambiguous for part in parts),
        )

    def with_retry(self, retry: SendResult) -> SendResult:
        """This result with the recipients a later `retry` resent to replaced by their new
        results, in the original order; waits and attempts summed."""
        again = {r.recipient: r for r in retry.recipients}
        return SendResult(
            recipients=tuple(again.get(r.recipient, r) for r in self.recipients),
            limiter_wait=self.limiter_wait + retry.limiter_wait,
            attempts=self.attempts + retry.attempts,
            ambiguous=self.ambiguous or retry.ambiguous,
        )

    @property
    def all_accepted(self) -> bool:
        """Whether every recipient was accepted."""
        return all(r.outcome is Outcome.ACCEPTED for r in self.recipients)

    @property
    def accepted(self) -> tuple[RecipientResult, ...]:
        """The recipients SES accepted."""
        return self._with(Outcome.ACCEPTED)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        """The recipients SES refused permanently."""
        return self._with(Outcome.REFUSED)

    @property
    def deferred(self) -> tuple[RecipientResult, ...]:
        """The recipients to retry later."""
        return self._with(Outcome.DEFERRED)

    def _with(self, outcome: Outcome) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if r.outcome is outcome)


@attrs.frozen
class PoolStats:
    """A snapshot of the SES client's session pool.

    Attributes:
        size: connections open now (idle + in use).
        idle: open connections waiting in the pool.
        opened: connections opened since start.
        recycled: connections closed on purpose (max messages, max age, 421).
        failures: failed opens plus connections found broken.
        in_use: connections lent out now.
        ambiguous: sends whose connection was lost after the final '.' (possible duplicates).
    """

    size: int
    idle: int
    opened: int
    recycled: int
    failures: int
    in_use: int = 0
    ambiguous: int = 0


def log_recipient_failures(
    logger: logging.Logger, upstream: str, sender: str, results: tuple[RecipientResult, ...]
) -> None:
    """Log every recipient that was not accepted: ERROR for credential trouble, else WARNING.

    Of the sender only its domain is logged (as the relay's transaction log does): the refused or
    deferred recipient is what an operator needs, the sender's mailbox is just personal data.
    Both SES senders (SMTP and API) log through this, so their lines read alike.
    """
    sender = "*@" + sender.rpartition("@")[2] if "@" in sender else "<>"
    for result in results:
        if result.outcome is Outcome.ACCEPTED:
            continue
        level = logging.ERROR if result.reply_class is ReplyClass.AUTH else logging.WARNING
        logger.log(
            level,
            "%s %s %s -> %s: %d %s (%s)",
            upstream,
            result.outcome.value,
            sender,
            result.recipient,
            result.code,
            result.text,
            result.reply_class.value,
        )
