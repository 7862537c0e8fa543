"""Tests for reply classification and the per-recipient result values."""

from __future__ import annotations

import pytest

from ses_core.smtp.results import (
    Outcome,
    RecipientResult,
    ReplyClass,
    SendResult,
    classify_reply,
    outcome_for,
)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "Ok 0100018c-abc-000000", ReplyClass.SUCCESS),
        (251, "User not local; will forward", ReplyClass.SUCCESS),
        (354, "End data with <CR><LF>.<CR><LF>", ReplyClass.SUCCESS),
        (421, "Too many concurrent SMTP connections", ReplyClass.CONNECTION),
        (421, "Maximum message count per session reached", ReplyClass.CONNECTION),
        (451, "Temporary service failure", ReplyClass.TRANSIENT),
        (454, "Temporary service failure", ReplyClass.TRANSIENT),
        (454, "Throttling failure: Maximum sending rate exceeded.", ReplyClass.THROTTLED),
        (454, "Throttling failure: Daily message quota exceeded.", ReplyClass.DAILY_QUOTA),
        (454, "Temporary authentication failure", ReplyClass.AUTH),
        (530, "Authentication required", ReplyClass.AUTH),
        (535, "Authentication Credentials Invalid", ReplyClass.AUTH),
        (554, "Access denied: User arn:aws:iam::1:user/x is not authorized", ReplyClass.AUTH),
        (552, "Message is too long", ReplyClass.PERMANENT),
        (553, "5.1.3 Invalid email address", ReplyClass.PERMANENT),
        (501, "Invalid MAIL FROM address provided", ReplyClass.PERMANENT),
        (554, "Message rejected: Email address is not verified.", ReplyClass.PERMANENT),
        (554, "Transaction failed: Recipient count exceeds 50", ReplyClass.PERMANENT),
        (450, "Mailbox busy", ReplyClass.TRANSIENT),
        (0, "", ReplyClass.TRANSIENT),
        (999, "nonsense", ReplyClass.TRANSIENT),
    ],
)
def test_classify_reply_follows_the_ses_reply_table(
    code: int, text: str, expected: ReplyClass
) -> None:
    """Each SES reply in docs/ses-facts.md gets the class the relay must act on."""
    assert classify_reply(code, text) is expected


def test_classification_ignores_case_and_line_breaks() -> None:
    """Multi-line or differently cased reply texts are still recognised."""
    assert classify_reply(454, "THROTTLING FAILURE:\nMaximum sending rate exceeded") is (
        ReplyClass.THROTTLED
    )


@pytest.mark.parametrize("reply_class", list(ReplyClass))
def test_only_permanent_replies_refuse(reply_class: ReplyClass) -> None:
    """Only PERMANENT gives REFUSED, only SUCCESS gives ACCEPTED; all else is DEFERRED."""
    expected = {
        ReplyClass.SUCCESS: Outcome.ACCEPTED,
        ReplyClass.PERMANENT: Outcome.REFUSED,
    }.get(reply_class, Outcome.DEFERRED)
    assert outcome_for(reply_class) is expected


def test_retryable_soon_covers_transient_throttled_and_connection_only() -> None:
    """Daily quota, auth failures and the local limiter's refusal are not retried within a
    send."""
    retryable = {c for c in ReplyClass if c.retryable_soon}
    assert retryable == {ReplyClass.TRANSIENT, ReplyClass.THROTTLED, ReplyClass.CONNECTION}


def test_recipient_result_from_reply_classifies() -> None:
    """A throttled reply makes a DEFERRED result that keeps SES's code and text."""
    result = RecipientResult.from_reply("a@example.com", 454, "Throttling failure: x")
    assert result == RecipientResult(
        "a@example.com", Outcome.DEFERRED, 454, "Throttling failure: x", ReplyClass.THROTTLED
    )


def test_send_result_groups_recipients_and_combines_chunks() -> None:
    """accepted/refused/deferred filter in order; combine sums waits and attempts."""
    ok = RecipientResult.from_reply("a@x", 250, "Ok")
    bad = RecipientResult.from_reply("b@x", 552, "Message is too long")
    later = RecipientResult.deferred("c@x", 451, "lost", ReplyClass.CONNECTION)
    first = SendResult((ok, bad), limiter_wait=0.5, attempts=1)
    second = SendResult((later,), limiter_wait=0.25, attempts=2, ambiguous=True)
    combined = SendResult.combine((first, second))
    assert combined.recipients == (ok, bad, later)
    assert (combined.accepted, combined.refused, combined.deferred) == ((ok,), (bad,), (later,))
    assert combined.limiter_wait == 0.75
    assert combined.attempts == 3
    assert combined.ambiguous
    assert not combined.all_accepted
    assert SendResult((ok,)).all_accepted


def test_no_upstream_reply_is_classified_rate_limited() -> None:
    """RATE_LIMITED marks the local limiter's refusal only: SES's own throttle is THROTTLED."""
    classes = {classify_reply(code, text) for code in range(0, 1000) for text in ("", "x")}
    assert ReplyClass.RATE_LIMITED not in classes
    assert classify_reply(451, "4.7.0 send rate limit") is ReplyClass.TRANSIENT


def test_with_retry_replaces_the_resent_recipients_in_order() -> None:
    """A retry's results replace those recipients' earlier ones; waits and attempts add up."""
    ok = RecipientResult.from_reply("a@x", 250, "Ok 1")
    later = RecipientResult.deferred("b@x", 451, "lost", ReplyClass.CONNECTION)
    now_ok = RecipientResult.from_reply("b@x", 250, "Ok 2")
    first = SendResult((ok, later), limiter_wait=0.5, attempts=2)
    merged = first.with_retry(SendResult((now_ok,), limiter_wait=0.25, ambiguous=True))
    assert merged == SendResult((ok, now_ok), limiter_wait=0.75, attempts=3, ambiguous=True)
