"""Tests for ses_core.feedback.suppression: whom a bounce or complaint blacklists, by policy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from ses_core.blacklist import BlacklistEvent, BlacklistReason
from ses_core.feedback.notifications import SesNotification
from ses_core.feedback.suppression import (
    DEFAULT_POLICY,
    BounceThreshold,
    SuppressionDecision,
    SuppressionPolicy,
    Verdict,
    decide_suppression,
)
from ses_core.feedback.transport import parse_feedback
from ses_core.testing import feedback_docs as fx


def _bounce(bounce_type: str, subtype: str, *recipients: str) -> SesNotification:
    doc = fx.bounce_without_dsn()
    doc["bounce"]["bounceType"] = bounce_type
    doc["bounce"]["bounceSubType"] = subtype
    if recipients:
        doc["bounce"]["bouncedRecipients"] = [{"emailAddress": r} for r in recipients]
    return SesNotification.from_json(doc)


def _complaint(feedback_type: str | None) -> SesNotification:
    doc: dict[str, Any] = fx.complaint_with_feedback()
    if feedback_type is None:
        del doc["complaint"]["complaintFeedbackType"]
    else:
        doc["complaint"]["complaintFeedbackType"] = feedback_type
    return SesNotification.from_json(doc)


@pytest.mark.parametrize(
    "subtype", ["General", "NoEmail", "Suppressed", "OnAccountSuppressionList"]
)
def test_every_permanent_bounce_is_blacklisted(subtype: str) -> None:
    """By default every Permanent bounce blacklists each recipient with detail Permanent/<sub>."""
    decision = decide_suppression(_bounce("Permanent", subtype))
    assert [d.address.key for d in decision.to_blacklist] == [
        "jane@example.com",
        "richard@example.com",
    ]
    assert {(d.reason, d.detail, d.verdict) for d in decision.to_blacklist} == {
        ("bounce", f"Permanent/{subtype}", Verdict.BLACKLIST)
    }
    assert decision.not_blacklisted == () and decision.count_dependent == ()


def test_decision_carries_what_a_blacklist_event_needs() -> None:
    """Each decision carries feedback id, SES message id and the feedback timestamp."""
    [record] = parse_feedback(fx.lambda_sns_event(fx.bounce_with_dsn()))
    [d] = decide_suppression(record.notification).to_blacklist
    assert d.feedback_id == fx.BOUNCE_FEEDBACK_ID
    assert d.message_id == fx.SES_MESSAGE_ID
    assert d.timestamp == datetime(2023, 12, 14, 14, 59, 38, 237000, tzinfo=UTC)
    assert d.threshold is None


@pytest.mark.parametrize(
    ("bounce_type", "subtype"),
    [
        ("Transient", "General"),
        ("Transient", "MailboxFull"),
        ("Transient", "MessageTooLarge"),
        ("Transient", "ContentRejected"),
        ("Transient", "AttachmentRejected"),
        ("Undetermined", "Undetermined"),
    ],
)
def test_transient_and_undetermined_bounces_are_reported_only(
    bounce_type: str, subtype: str
) -> None:
    """Transient and Undetermined bounces are reported, never blacklisted, by default."""
    decision = decide_suppression(_bounce(bounce_type, subtype))
    assert decision.to_blacklist == () and decision.count_dependent == ()
    assert [d.detail for d in decision.not_blacklisted] == [f"{bounce_type}/{subtype}"] * 2
    assert all(d.verdict is Verdict.REPORT for d in decision.not_blacklisted)


@pytest.mark.parametrize("feedback_type", ["abuse", "auth-failure", "fraud", "other", "virus"])
def test_complaints_are_blacklisted(feedback_type: str) -> None:
    """Complaints of every feedback type but not-spam blacklist, detail complaint:<type>."""
    [d] = decide_suppression(_complaint(feedback_type)).to_blacklist
    assert (d.address.key, d.reason, d.detail) == (
        "richard@example.com",
        "complaint",
        f"complaint:{feedback_type}",
    )
    assert d.feedback_id == fx.COMPLAINT_FEEDBACK_ID


def test_complaint_without_feedback_type_is_blacklisted_as_complaint() -> None:
    """A complaint without a feedback report blacklists with the detail "complaint"."""
    [d] = decide_suppression(_complaint(None)).to_blacklist
    assert d.detail == "complaint"


def test_not_spam_complaint_is_reported_only() -> None:
    """A not-spam complaint is reported, not blacklisted."""
    decision = decide_suppression(_complaint("not-spam"))
    assert decision.to_blacklist == ()
    [d] = decision.not_blacklisted
    assert (d.detail, d.verdict) == ("complaint:not-spam", Verdict.REPORT)


def test_threshold_makes_transient_general_count_dependent() -> None:
    """A Transient/General threshold lists recipients as count-dependent, with the threshold."""
    policy = DEFAULT_POLICY.with_threshold("Transient", "General", 3)
    decision = decide_suppression(_bounce("Transient", "General"), policy)
    assert decision.to_blacklist == () and decision.not_blacklisted == ()
    assert [(d.verdict, d.threshold, d.detail) for d in decision.count_dependent] == [
        (Verdict.COUNT_DEPENDENT, 3, "Transient/General")
    ] * 2
    # Other transient subtypes are unaffected by that rule.
    assert decide_suppression(_bounce("Transient", "MailboxFull"), policy).count_dependent == ()


def test_threshold_of_one_blacklists_at_once() -> None:
    """A threshold of one occurrence means blacklist now."""
    policy = SuppressionPolicy().with_threshold("Transient", "MailboxFull", 1)
    decision = decide_suppression(_bounce("Transient", "MailboxFull"), policy)
    assert len(decision.to_blacklist) == 2


def test_with_threshold_replaces_an_existing_rule() -> None:
    """Setting a rule twice for the same type/subtype keeps only the latest."""
    policy = DEFAULT_POLICY.with_threshold("Transient", "General", 3).with_threshold(
        "Transient", "General", 5
    )
    assert policy.bounce_thresholds == (BounceThreshold("Transient", "General", 5),)
    assert policy.threshold_for("Transient", "General") == 5
    assert DEFAULT_POLICY.bounce_thresholds == ()


def test_threshold_must_be_positive() -> None:
    """A threshold below one occurrence is refused."""
    with pytest.raises(ValueError):
        BounceThreshold("Transient", "General", 0)


def test_policy_can_stop_blacklisting() -> None:
    """Policies can turn off blacklisting of permanent bounces or of complaints."""
    policy = attrs.evolve(
        DEFAULT_POLICY, blacklist_permanent_bounces=False, blacklist_complaints=False
    )
    assert decide_suppression(_bounce("Permanent", "General"), policy).to_blacklist == ()
    assert decide_suppression(_complaint("abuse"), policy).to_blacklist == ()
    assert len(decide_suppression(_complaint("abuse"), policy).not_blacklisted) == 1


def test_policy_can_exempt_more_feedback_types() -> None:
    """exempt_feedback_types is configurable."""
    policy = attrs.evolve(DEFAULT_POLICY, exempt_feedback_types=frozenset({"not-spam", "other"}))
    assert decide_suppression(_complaint("other"), policy).to_blacklist == ()


def test_duplicate_recipients_are_decided_once() -> None:
    """The same address twice (even in another case) appears once in the decision."""
    decision = decide_suppression(_bounce("Permanent", "General", "a@example.com", "A@EXAMPLE.com"))
    assert [d.address.key for d in decision.to_blacklist] == ["a@example.com"]


def test_invalid_recipients_are_reported_not_blacklisted() -> None:
    """Recipient strings that are not addresses are listed apart and never blacklisted."""
    decision = decide_suppression(_bounce("Permanent", "General", "ok@example.com", "broken"))
    assert [d.address.key for d in decision.to_blacklist] == ["ok@example.com"]
    assert [i.text for i in decision.invalid_recipients] == ["broken"]


def test_complaint_invalid_recipients_are_reported() -> None:
    """A complaint's unparseable recipients are reported by the decision too."""
    doc = fx.complaint_with_feedback()
    doc["complaint"]["complainedRecipients"].append({"emailAddress": "nope"})
    decision = decide_suppression(SesNotification.from_json(doc))
    assert [i.text for i in decision.invalid_recipients] == ["nope"]
    assert len(decision.to_blacklist) == 1


@pytest.mark.parametrize(
    "document",
    [fx.delivery(), fx.event_delivery(), fx.other_event("Open"), fx.subscription_succeeded()],
)
def test_other_kinds_decide_nothing(document: dict[str, Any]) -> None:
    """Deliveries, opens and unknown types blacklist and report nobody."""
    assert decide_suppression(SesNotification.from_json(document)) == SuppressionDecision()


def test_confirmation_records_decide_nothing() -> None:
    """An SNS confirmation (no notification) decides nothing."""
    [record] = parse_feedback(fx.subscription_confirmation())
    assert decide_suppression(record.notification).recipients == ()


def test_from_decisions_groups_mixed_verdicts() -> None:
    """SuppressionDecision.from_decisions groups by verdict and drops repeated addresses."""
    bounce = decide_suppression(_bounce("Permanent", "General", "a@example.com"))
    report = decide_suppression(_bounce("Transient", "General", "b@example.com", "a@example.com"))
    merged = SuppressionDecision.from_decisions(bounce.recipients + report.recipients)
    assert [d.address.key for d in merged.to_blacklist] == ["a@example.com"]
    assert [d.address.key for d in merged.not_blacklisted] == ["b@example.com"]


def test_from_decisions_keeps_a_later_blacklist_over_an_earlier_report() -> None:
    """A "report only" seen first for an address does not hide a later "blacklist" for it."""
    report = decide_suppression(_bounce("Transient", "General", "a@example.com", "b@example.com"))
    bounce = decide_suppression(_bounce("Permanent", "General", "A@example.com"))
    merged = SuppressionDecision.from_decisions(report.recipients + bounce.recipients)
    [blacklisted] = merged.to_blacklist
    assert (blacklisted.address.original, blacklisted.detail) == (
        "A@example.com",
        "Permanent/General",
    )
    assert [d.address.key for d in merged.not_blacklisted] == ["b@example.com"]
    assert merged.count_dependent == ()


def test_from_decisions_ranks_count_dependent_between_report_and_blacklist() -> None:
    """Count-dependent beats report, blacklist beats count-dependent, whatever the order."""
    policy = DEFAULT_POLICY.with_threshold("Transient", "General", 3)
    report = decide_suppression(_bounce("Transient", "MailboxFull", "a@example.com"), policy)
    counted = decide_suppression(_bounce("Transient", "General", "a@example.com"), policy)
    blacklist = decide_suppression(_bounce("Permanent", "General", "a@example.com"), policy)
    merged = SuppressionDecision.from_decisions(report.recipients + counted.recipients)
    assert [d.verdict for d in merged.recipients] == [Verdict.COUNT_DEPENDENT]
    merged = SuppressionDecision.from_decisions(
        counted.recipients + blacklist.recipients + report.recipients
    )
    assert [d.verdict for d in merged.recipients] == [Verdict.BLACKLIST]


def test_from_decisions_keeps_the_lowest_threshold() -> None:
    """Of two count-dependent decisions for one address, the lower threshold wins."""
    loose = DEFAULT_POLICY.with_threshold("Transient", "General", 5)
    strict = DEFAULT_POLICY.with_threshold("Transient", "General", 2)
    first = decide_suppression(_bounce("Transient", "General", "a@example.com"), loose)
    second = decide_suppression(_bounce("Transient", "General", "a@example.com"), strict)
    merged = SuppressionDecision.from_decisions(first.recipients + second.recipients)
    assert [d.threshold for d in merged.count_dependent] == [2]


def test_decision_builds_a_blacklist_event_without_rederiving() -> None:
    """A decided recipient maps field for field onto the blacklist's BlacklistEvent."""
    [d] = decide_suppression(_complaint("abuse")).to_blacklist
    event = BlacklistEvent(
        address=d.address.key,
        reason=BlacklistReason(d.reason),
        detail=d.detail,
        feedback_id=d.feedback_id,
        message_id=d.message_id,
        timestamp=d.timestamp,
    )
    assert (event.address, event.reason, event.detail) == (
        "richard@example.com",
        BlacklistReason.COMPLAINT,
        "complaint:abuse",
    )


def test_complaint_on_account_suppression_list_is_blacklisted() -> None:
    """A complaint with complaintSubType OnAccountSuppressionList and no report blacklists."""
    doc = fx.complaint_without_feedback()
    doc["complaint"]["complaintSubType"] = "OnAccountSuppressionList"
    notification = SesNotification.from_json(doc)
    assert notification.complaint is not None
    assert notification.complaint.subtype == "OnAccountSuppressionList"
    [d] = decide_suppression(notification).to_blacklist
    assert (d.reason, d.detail) == ("complaint", "complaint")
