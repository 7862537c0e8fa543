"""Tests for the retry schedule: the numbers by reason, the jitter, and the dominant reason."""

from __future__ import annotations

import pytest

from ses_core.queue.backoff import Backoff, RetryReason
from ses_core.smtp.results import ReplyClass


def fixed(value: float) -> Backoff:
    """A schedule whose random source always answers `value`."""
    return Backoff(random=lambda: value)


@pytest.mark.parametrize("reason", [RetryReason.THROTTLED, RetryReason.RATE_LIMITED])
def test_throttling_retries_within_seconds_and_stays_under_a_minute(reason: RetryReason) -> None:
    """A throttle or rate-limit wait is retried after 5 s, doubling, never above 60 s."""
    backoff = Backoff()
    assert [backoff.nominal(reason, n) for n in (1, 2, 3, 4, 5, 50)] == [
        5.0,
        10.0,
        20.0,
        40.0,
        60.0,
        60.0,
    ]


def test_daily_quota_waits_about_half_an_hour_whatever_the_attempt() -> None:
    """The 24-hour window frees slowly: 30 minutes, jittered between 15 and 45."""
    assert Backoff().nominal(RetryReason.DAILY_QUOTA, 1) == 1800.0
    assert Backoff().nominal(RetryReason.DAILY_QUOTA, 40) == 1800.0
    assert fixed(0.0).delay(RetryReason.DAILY_QUOTA, 1) == pytest.approx(900.0)
    assert fixed(0.999999).delay(RetryReason.DAILY_QUOTA, 1) == pytest.approx(2700.0, rel=1e-5)


@pytest.mark.parametrize(
    "reason",
    [
        RetryReason.TRANSIENT,
        RetryReason.CONNECTION,
        RetryReason.AUTH,
        RetryReason.LIMITER_UNAVAILABLE,
        RetryReason.AMBIGUOUS,
    ],
)
def test_trouble_of_unknown_length_grows_from_a_minute_to_half_an_hour(
    reason: RetryReason,
) -> None:
    """Transient, connection, auth and limiter trouble: 60 s doubling to a 30-minute cap."""
    backoff = Backoff()
    assert [backoff.nominal(reason, n) for n in (1, 2, 3, 4, 5, 6, 1000)] == [
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1800.0,
        1800.0,
    ]


def test_a_blacklist_outage_retries_soon_then_grows() -> None:
    """Nothing was sent: 5 s first, then doubling up to the same 30-minute cap."""
    backoff = Backoff()
    assert backoff.nominal(RetryReason.BLACKLIST_UNAVAILABLE, 1) == 5.0
    assert backoff.nominal(RetryReason.BLACKLIST_UNAVAILABLE, 3) == 20.0
    assert backoff.nominal(RetryReason.BLACKLIST_UNAVAILABLE, 30) == 1800.0


def test_jitter_spreads_delays_around_the_nominal_value() -> None:
    """+-20 % on the growing schedule, +-50 % on the soon one, centred on the nominal delay."""
    assert fixed(0.0).delay(RetryReason.TRANSIENT, 1) == pytest.approx(48.0)
    assert fixed(0.5).delay(RetryReason.TRANSIENT, 1) == pytest.approx(60.0)
    assert fixed(0.0).delay(RetryReason.THROTTLED, 1) == pytest.approx(2.5)
    assert fixed(0.5).delay(RetryReason.THROTTLED, 2) == pytest.approx(10.0)


def test_the_slowest_reason_decides_when_a_message_is_retried() -> None:
    """Recipients deferred for several reasons: the message waits for the slowest trouble."""
    backoff = Backoff()
    reasons = {RetryReason.THROTTLED, RetryReason.DAILY_QUOTA, RetryReason.TRANSIENT}
    assert backoff.dominant(reasons, 1) is RetryReason.DAILY_QUOTA
    assert backoff.dominant({RetryReason.THROTTLED, RetryReason.TRANSIENT}, 1) is (
        RetryReason.TRANSIENT
    )
    assert backoff.dominant(set(), 1) is RetryReason.TRANSIENT


def test_reasons_are_the_reply_class_values() -> None:
    """Each deferring reply class maps to the reason of the same name (the metric label)."""
    assert RetryReason.of(ReplyClass.THROTTLED) is RetryReason.THROTTLED
    assert RetryReason.of(ReplyClass.DAILY_QUOTA) is RetryReason.DAILY_QUOTA
    assert RetryReason.of(ReplyClass.LIMITER_UNAVAILABLE) is RetryReason.LIMITER_UNAVAILABLE
    assert RetryReason.of(ReplyClass.PERMANENT) is RetryReason.TRANSIENT
    assert str(RetryReason.BLACKLIST_UNAVAILABLE) == "blacklist_unavailable"
