"""Whom to blacklist after an SES bounce or complaint: a pure function of notification and policy.

`DEFAULT_POLICY` follows AWS's guidance (docs/ses-facts.md, "Notifications"): every Permanent
bounce, whatever its subtype, and every complaint except feedback type `not-spam` blacklist the
recipient; Transient and Undetermined bounces (an out-of-office reply is Transient/General) are
only reported. A policy may add thresholds such as "Transient/General after 3 occurrences";
counting needs history, which lives in the blacklist repository, so such recipients are marked
`COUNT_DEPENDENT` and the caller blacklists once the stored count reaches the threshold. Strings
that are not addresses are never blacklisted, only listed for the caller to report. Each decided
recipient carries everything a `BlacklistEvent` needs (reason, detail, ids, timestamp).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import attrs

from ses_core.addresses import EmailAddress
from ses_core.feedback._recipients import InvalidRecipient
from ses_core.feedback.notifications import NotificationKind, SesNotification

PERMANENT = "Permanent"
TRANSIENT = "Transient"
UNDETERMINED = "Undetermined"
NOT_SPAM = "not-spam"


class Verdict(enum.StrEnum):
    """What to do with one recipient."""

    BLACKLIST = "blacklist"  # blacklist now
    COUNT_DEPENDENT = "count-dependent"  # blacklist once the stored count reaches `threshold`
    REPORT = "report"  # do not blacklist; worth logging


@attrs.frozen
class BounceThreshold:
    """Blacklist bounces of one type/subtype once an address has collected `occurrences` of them.

    Attributes:
        bounce_type: e.g. "Transient". bounce_subtype: e.g. "General".
        occurrences: how many such bounces (this one included) trigger blacklisting; at least 1
            (1 means blacklist at once, so the decision says BLACKLIST rather than COUNT_DEPENDENT).
    """

    bounce_type: str
    bounce_subtype: str
    occurrences: int = attrs.field(validator=attrs.validators.ge(1))


@attrs.frozen
class SuppressionPolicy:
    """What feedback blacklists a recipient; change it with `attrs.evolve` or the `with_` helpers.

    Attributes:
        blacklist_permanent_bounces: blacklist Permanent bounces (default True).
        blacklist_complaints: blacklist complaints (default True).
        exempt_feedback_types: complaint feedback types that do not blacklist (default not-spam).
        bounce_thresholds: count-dependent rules for bounces that are not Permanent.
    """

    blacklist_permanent_bounces: bool = True
    blacklist_complaints: bool = True
    exempt_feedback_types: frozenset[str] = frozenset({NOT_SPAM})
    bounce_thresholds: tuple[BounceThreshold, ...] = ()

    def with_threshold(
        self, bounce_type: str, bounce_subtype: str, occurrences: int
    ) -> SuppressionPolicy:
        """A copy that also blacklists `bounce_type/bounce_subtype` after `occurrences` bounces."""
        rule = BounceThreshold(bounce_type, bounce_subtype, occurrences)
        others = tuple(
            t
            for t in self.bounce_thresholds
            if (t.bounce_type, t.bounce_subtype) != (bounce_type, bounce_subtype)
        )
        return attrs.evolve(self, bounce_thresholds=(*others, rule))

    def threshold_for(self, bounce_type: str, bounce_subtype: str) -> int | None:
        """The occurrence threshold for this bounce type/subtype, if the policy has one."""
        for rule in self.bounce_thresholds:
            if rule.bounce_type == bounce_type and rule.bounce_subtype == bounce_subtype:
                return rule.occurrences
        return None


DEFAULT_POLICY = SuppressionPolicy()


@attrs.frozen
class RecipientDecision:
    """The verdict for one recipient, with everything needed to build a `BlacklistEvent`.

    Attributes:
        address: the recipient (use `address.key` as the blacklist key).
        verdict: what to do.
        reason: "bounce" or "complaint" (a `BlacklistReason` value).
        detail: "Permanent/General", "complaint:abuse", or "complaint" without a feedback type.
        feedback_id: SES's feedback id (the blacklist's idempotency key).
        message_id: SES's id of the message that bounced or was complained about.
        timestamp: when the bounce or complaint happened.
        threshold: for COUNT_DEPENDENT, the occurrences that trigger blacklisting; else None.
    """

    address: EmailAddress
    verdict: Verdict
    reason: Literal["bounce", "complaint"]
    detail: str
    feedback_id: str
    message_id: str | None
    timestamp: datetime
    threshold: int | None = None


@attrs.frozen
class SuppressionDecision:
    """The decision for one notification; each recipient appears once, with its strongest verdict.

    Attributes:
        to_blacklist: recipients to blacklist now.
        count_dependent: recipients to blacklist once their stored count reaches the threshold.
        not_blacklisted: recipients reported but left alone (transient bounces, not-spam, ...).
        invalid_recipients: reported strings that are not addresses; never blacklisted.
    """

    to_blacklist: tuple[RecipientDecision, ...] = ()
    count_dependent: tuple[RecipientDecision, ...] = ()
    not_blacklisted: tuple[RecipientDecision, ...] = ()
    invalid_recipients: tuple[InvalidRecipient, ...] = ()

    @property
    def recipients(self) -> tuple[RecipientDecision, ...]:
        """Every decided recipient, whatever the verdict."""
        return self.to_blacklist + self.count_dependent + self.not_blacklisted

    @classmethod
    def from_decisions(
        cls, decisions: Iterable[RecipientDecision], invalid: tuple[InvalidRecipient, ...] = ()
    ) -> SuppressionDecision:
        """Group per-recipient decisions by verdict, keeping one decision per address.

        When an address is decided more than once (several notifications merged), the strongest
        verdict wins: BLACKLIST over COUNT_DEPENDENT (the lower threshold among those) over
        REPORT, so a "report only" seen first can never hide a later "blacklist". Among equally
        strong decisions the first is kept. Addresses keep the order they first appeared in.
        """
        strongest: dict[str, RecipientDecision] = {}
        for decision in decisions:
            key = decision.address.key
            kept = strongest.get(key)
            if kept is None or _strength(decision) > _strength(kept):
                strongest[key] = decision
        groups: dict[Verdict, list[RecipientDecision]] = {verdict: [] for verdict in Verdict}
        for decision in strongest.values():
            groups[decision.verdict].append(decision)
        return cls(
            to_blacklist=tuple(groups[Verdict.BLACKLIST]),
            count_dependent=tuple(groups[Verdict.COUNT_DEPENDENT]),
            not_blacklisted=tuple(groups[Verdict.REPORT]),
            invalid_recipients=invalid,
        )

    @classmethod
    def uniform(
        cls,
        verdict: Verdict,
        decisions: Iterable[RecipientDecision],
        invalid: tuple[InvalidRecipient, ...] = (),
    ) -> SuppressionDecision:
        """All `decisions` share `verdict` (one notification's recipients): the fast path."""
        seen: set[str] = set()
        unique: list[RecipientDecision] = []
        for decision in decisions:
            key = decision.address.key
            if key not in seen:
                seen.add(key)
                unique.append(decision)
        group = tuple(unique)
        if verdict is Verdict.BLACKLIST:
            return cls(to_blacklist=group, invalid_recipients=invalid)
        if verdict is Verdict.COUNT_DEPENDENT:
            return cls(count_dependent=group, invalid_recipients=invalid)
        return cls(not_blacklisted=group, invalid_recipients=invalid)


_NOTHING = SuppressionDecision()
_VERDICT_RANK = {Verdict.REPORT: 0, Verdict.COUNT_DEPENDENT: 1, Verdict.BLACKLIST: 2}


def _strength(decision: RecipientDecision) -> tuple[int, int]:
    """Sort key of how strongly a decision suppresses: by verdict, then the lower threshold."""
    threshold = decision.threshold if decision.threshold is not None else 0
    return _VERDICT_RANK[decision.verdict], -threshold


def decide_suppression(
    notification: SesNotification | None, policy: SuppressionPolicy = DEFAULT_POLICY
) -> SuppressionDecision:
    """Decide, for each recipient of a bounce or complaint, whether to blacklist it (module doc).

    Other kinds (deliveries, opens, unknown types, SNS confirmations given as None) decide nothing.
    """
    if notification is None:
        return _NOTHING
    message_id = None if notification.mail is None else notification.mail.message_id
    bounce = notification.bounce
    if notification.kind is NotificationKind.BOUNCE and bounce is not None:
        verdict, threshold = _bounce_verdict(bounce.bounce_type, bounce.bounce_subtype, policy)
        detail = bounce.detail
        decisions = (
            RecipientDecision(
                address=recipient.address,
                verdict=verdict,
                reason="bounce",
                detail=detail,
                feedback_id=bounce.feedback_id,
                message_id=message_id,
                timestamp=bounce.timestamp,
                threshold=threshold,
            )
            for recipient in bounce.recipients
        )
        return SuppressionDecision.uniform(verdict, decisions, bounce.invalid_recipients)
    complaint = notification.complaint
    if notification.kind is NotificationKind.COMPLAINT and complaint is not None:
        exempt = complaint.feedback_type in policy.exempt_feedback_types
        blacklist = policy.blacklist_complaints and not exempt
        verdict = Verdict.BLACKLIST if blacklist else Verdict.REPORT
        detail = complaint.detail
        decisions = (
            RecipientDecision(
                address=address,
                verdict=verdict,
                reason="complaint",
                detail=detail,
                feedback_id=complaint.feedback_id,
                message_id=message_id,
                timestamp=complaint.timestamp,
            )
            for address in complaint.recipients
        )
        return SuppressionDecision.uniform(verdict, decisions, complaint.invalid_recipients)
    return _NOTHING


def _bounce_verdict(
    bounce_type: str, bounce_subtype: str, policy: SuppressionPolicy
) -> tuple[Verdict, int | None]:
    if bounce_type == PERMANENT and policy.blacklist_permanent_bounces:
        return Verdict.BLACKLIST, None
    threshold = policy.threshold_for(bounce_type, bounce_subtype)
    if threshold is None:
        return Verdict.REPORT, None
    if threshold == 1:
        return Verdict.BLACKLIST, None
    return Verdict.COUNT_DEPENDENT, threshold
