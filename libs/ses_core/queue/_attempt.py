"""One delivery attempt as state transitions: what each recipient becomes, and what to report.

Pure bookkeeping, no I/O: `AttemptBook` starts from a leased message's recipients and takes, in
order, the blacklist's verdicts, the sender's results (or a deferral when nothing could be sent)
and, once the lifetime is over, the expiry of whatever is still pending. `result()` then says the
new recipient states, which recipients a DSN reports, the outcome counts for metrics and why the
message is retried. Only PENDING recipients are ever touched: an ACCEPTED recipient is final, so
a retry after a partial acceptance never resends to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import attrs

from ses_core.queue._model import RecipientState, SpooledRecipient
from ses_core.queue.backoff import RetryReason
from ses_core.queue.dsn import FailedRecipient, status_of
from ses_core.smtp.results import Outcome, RecipientResult, ReplyClass, SendResult

#: The text of a recipient FAILED because SES's reply was lost after the final '.' twice. It marks
#: the recipient in the spool, so the message is dead-lettered (not reported to its sender: SES
#: may have delivered it) whenever it finishes.
AMBIGUOUS_FAILED_TEXT = (
    "4.4.2 connection to SES lost after the message was sent, again after one resend; "
    "SES may have accepted it, so it is not resent (dead-lettered for an operator)"
)

#: Outcome labels (`DeliveryEvents.recipients_done`).
ACCEPTED = "accepted"
REFUSED = "refused"
EXPIRED = "expired"
SUPPRESSED = "suppressed"
AMBIGUOUS = "ambiguous"
DEFERRED = "deferred"
_RESEND = "resend"  # deferred after a first ambiguous loss: counted deferred + possible duplicate

_REPORTED = (REFUSED, EXPIRED, SUPPRESSED)


@attrs.frozen
class AttemptResult:
    """What one attempt did to a message's recipients.

    Attributes:
        recipients: every recipient in envelope order, with its new state.
        failed: recipients that became FAILED now and are to be reported to the sender (refused,
            expired, suppressed; not the ambiguous ones).
        outcomes: recipients per outcome label, for metrics.
        possible_duplicates: recipients to be resent after an ambiguous loss.
        retry_reasons: why the recipients still PENDING were deferred (empty when none is).
        last_error: the last problem, one line, for operators (`queue list`).
    """

    recipients: tuple[SpooledRecipient, ...]
    failed: tuple[FailedRecipient, ...]
    outcomes: Mapping[str, int]
    possible_duplicates: int
    retry_reasons: frozenset[RetryReason]
    last_error: str

    @property
    def finished(self) -> bool:
        """No recipient is PENDING any more."""
        return not any(r.pending for r in self.recipients)


def is_ambiguous_failure(recipient: SpooledRecipient) -> bool:
    """Whether `recipient` FAILED because its delivery was lost ambiguously twice."""
    return recipient.state is RecipientState.FAILED and recipient.text == AMBIGUOUS_FAILED_TEXT


@attrs.define
class AttemptBook:
    """The recipients of one leased message while an attempt changes them."""

    recipients: list[SpooledRecipient]
    last_error: str = ""
    _labels: dict[int, str] = attrs.field(factory=dict)
    _reasons: dict[int, RetryReason] = attrs.field(factory=dict)
    _failed: dict[int, FailedRecipient] = attrs.field(factory=dict)

    @classmethod
    def start(cls, recipients: tuple[SpooledRecipient, ...], last_error: str) -> AttemptBook:
        """A book for a message whose recipients are `recipients`."""
        return cls(list(recipients), last_error)

    def pending(self) -> tuple[str, ...]:
        """The addresses still to deliver, in envelope order."""
        return tuple(r.address for r in self.recipients if r.pending)

    def suppress(self, reasons: Mapping[str, str], now: float) -> None:
        """FAIL the PENDING recipients in `reasons` (address -> blacklist reason)."""
        for index, recipient in self._pending_items():
            reason = reasons.get(recipient.address)
            if reason is None:
                continue
            text = f"5.1.1 recipient is blacklisted ({reason})"
            self.recipients[index] = attrs.evolve(
                recipient, state=RecipientState.FAILED, code=550, text=text
            )
            self._labels[index] = SUPPRESSED
            self._failed[index] = FailedRecipient(
                recipient.address,
                "5.1.1",
                f"the address is on the relay's blacklist ({reason}): it bounced or complained "
                "before, so mail to it is not sent",
                last_attempt_at=now,
            )

    def defer_all(self, reason: RetryReason, error: str) -> None:
        """Leave every PENDING recipient PENDING, untried, because of `reason`."""
        for index, _ in self._pending_items():
            self._labels[index] = DEFERRED
            self._reasons[index] = reason
        self.last_error = error

    def record(self, result: SendResult, now: float) -> None:
        """Take the sender's verdict on the PENDING recipients (sent in envelope order)."""
        by_address: dict[str, RecipientResult] = {}
        for entry in result.recipients:
            by_address.setdefault(entry.recipient, entry)
        for index, recipient in self._pending_items():
            found = by_address.get(recipient.address)
            if found is None:  # a sender that lost track of one: retry it, never drop it
                found = RecipientResult.deferred(
                    recipient.address, 451, "4.3.0 no result from the sender", ReplyClass.TRANSIENT
                )
            self._record_one(index, recipient, found, now)

    def _record_one(
        self, index: int, recipient: SpooledRecipient, result: RecipientResult, now: float
    ) -> None:
        tried = attrs.evolve(
            recipient, attempts=recipient.attempts + 1, code=result.code, text=result.text
        )
        if result.outcome is Outcome.ACCEPTED:
            self.recipients[index] = attrs.evolve(tried, state=RecipientState.ACCEPTED)
            self._labels[index] = ACCEPTED
            return
        if result.outcome is Outcome.REFUSED:
            self.recipients[index] = attrs.evolve(tried, state=RecipientState.FAILED)
            self._labels[index] = REFUSED
            self._failed[index] = FailedRecipient(
                recipient.address,
                status_of(result.code, result.text),
                "the mail server refused it permanently",
                result.code,
                result.text,
                now,
            )
            self.last_error = f"{result.code} {result.text}"
            return
        self.last_error = f"{result.code} {result.text}"
        if not result.ambiguous:
            self.recipients[index] = tried
            self._labels[index] = DEFERRED
            self._reasons[index] = RetryReason.of(result.reply_class)
        elif recipient.ambiguous_resends == 0:
            self.recipients[index] = attrs.evolve(tried, ambiguous_resends=1)
            self._labels[index] = _RESEND
            self._reasons[index] = RetryReason.AMBIGUOUS
        else:
            self.recipients[index] = attrs.evolve(
                tried, state=RecipientState.FAILED, text=AMBIGUOUS_FAILED_TEXT
            )
            self._labels[index] = AMBIGUOUS

    def expire(self, age: str, now: float) -> None:
        """FAIL every recipient still PENDING: the message outlived the queue's lifetime. One
        whose delivery was just lost ambiguously is failed as ambiguous, not reported."""
        for index, recipient in self._pending_items():
            if self._labels.get(index) == _RESEND:
                self.recipients[index] = attrs.evolve(
                    recipient, state=RecipientState.FAILED, text=AMBIGUOUS_FAILED_TEXT
                )
                self._labels[index] = AMBIGUOUS
                self._reasons.pop(index, None)
                continue
            last = f"{recipient.code} {recipient.text}" if recipient.code else self.last_error
            text = f"4.4.7 message expired after {age} in the queue; last error: {last or 'none'}"
            self.recipients[index] = attrs.evolve(recipient, state=RecipientState.FAILED, text=text)
            self._labels[index] = EXPIRED
            self._reasons.pop(index, None)
            self._failed[index] = FailedRecipient(
                recipient.address,
                "4.4.7",
                f"delivery was given up after {age} of retrying"
                + ("" if recipient.code or not last else f" (last error: {last})"),
                recipient.code,
                recipient.text if recipient.code else "",
                now if recipient.attempts else None,
            )

    def result(self) -> AttemptResult:
        """The attempt's outcome so far."""
        labels = Counter(self._labels.values())
        resends = labels.pop(_RESEND, 0)
        if resends:
            labels[DEFERRED] += resends
        pending = {i for i, r in enumerate(self.recipients) if r.pending}
        return AttemptResult(
            recipients=tuple(self.recipients),
            failed=tuple(self._failed[i] for i in sorted(self._failed)),
            outcomes=dict(labels),
            possible_duplicates=resends,
            retry_reasons=frozenset(r for i, r in self._reasons.items() if i in pending),
            last_error=self.last_error,
        )

    def _pending_items(self) -> list[tuple[int, SpooledRecipient]]:
        return [(i, r) for i, r in enumerate(self.recipients) if r.pending]
