"""When a queued message is tried again: the retry schedule, by what deferred it.

SES answers different troubles with the same `454` (see docs/ses-facts.md), and each clears at its
own pace, so the queue waits by class, not by one schedule:

- THROTTLED, RATE_LIMITED: the account's per-second rate was exceeded (by SES's count, or the
  relay's own limiter had no tokens before the attempt's deadline). That passes within seconds,
  and the rate limiter paces the resend anyway, so retry soon: 5 s doubling to at most 60 s (AWS
  advises 5 s, 10 s, 30 s ... for throttling), jittered by +-50 % so that a burst of deferred
  messages does not come back as one burst.
- DAILY_QUOTA: the rolling 24-hour quota is used up. It frees as the sends of 24 h ago age out,
  slowly and not at a known moment, so retrying every few seconds only burns SMTP sessions:
  wait about 30 minutes (15 to 45 with jitter).
- TRANSIENT, CONNECTION, AUTH, LIMITER_UNAVAILABLE, AMBIGUOUS: something is wrong for an unknown
  time (an SES incident, the network, credentials or IAM being fixed, the shared limiter's store
  down). Grow like Postfix's minimal/maximal backoff time (300 s / 4000 s): 60 s doubling to a
  cap of 30 minutes, +-20 % jitter, so a long outage costs about two attempts an hour per message
  and a short one delays mail by a minute or two. An ambiguous loss (SES may have the message) is
  resent once on this schedule.
- BLACKLIST_UNAVAILABLE: the relay's own store could not answer, so nothing was sent: retry soon
  (5 s), then grow to the same 30-minute cap while it stays down.

`attempt` is the message's attempt number (1 for its first retry), so a message that has been
failing for long waits long. The queue also caps every delay at the message's expiry time, so
the last attempt happens when the lifetime ends (see `ses_core.queue.delivery`).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable

import attrs

from ses_core.smtp.results import ReplyClass


class RetryReason(enum.StrEnum):
    """Why a message is retried: a deferring reply class, or a cause the queue finds itself.

    The values are the `reason` label of `relay_queue_retries_total`.
    """

    THROTTLED = "throttled"
    RATE_LIMITED = "rate_limited"
    DAILY_QUOTA = "daily_quota"
    TRANSIENT = "transient"
    CONNECTION = "connection"
    AUTH = "auth"
    LIMITER_UNAVAILABLE = "limiter_unavailable"
    AMBIGUOUS = "ambiguous"
    BLACKLIST_UNAVAILABLE = "blacklist_unavailable"

    @classmethod
    def of(cls, reply_class: ReplyClass) -> RetryReason:
        """The reason for a recipient deferred with `reply_class` (TRANSIENT for a class that
        does not defer, which a sender should never report as deferred)."""
        try:
            return cls(reply_class.value)
        except ValueError:
            return cls.TRANSIENT


_SOON = frozenset({RetryReason.THROTTLED, RetryReason.RATE_LIMITED})


@attrs.frozen
class Backoff:
    """The retry schedule (see the module docstring for the numbers and why).

    Attributes:
        soon: first delay after a throttle or rate-limit wait, and after a blacklist outage.
        soon_cap: longest delay after a throttle or rate-limit wait.
        soon_jitter: spread of those delays (0.5 = +-50 %).
        base: first delay of the growing schedule (transient, connection, auth, ...).
        cap: longest delay of the growing schedule.
        jitter: spread of growing delays.
        daily_quota: delay after the daily quota was found used up.
        daily_quota_jitter: its spread.
        random: a uniform [0, 1) source (injected by tests).
    """

    soon: float = 5.0
    soon_cap: float = 60.0
    soon_jitter: float = 0.5
    base: float = 60.0
    cap: float = 1800.0
    jitter: float = 0.2
    daily_quota: float = 1800.0
    daily_quota_jitter: float = 0.5
    random: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)

    def nominal(self, reason: RetryReason, attempt: int) -> float:
        """The delay before retry `attempt` (1, 2, ...) after `reason`, without jitter."""
        doublings = 2.0 ** min(max(attempt, 1) - 1, 30)
        if reason in _SOON:
            return min(self.soon_cap, self.soon * doublings)
        if reason is RetryReason.DAILY_QUOTA:
            return self.daily_quota
        if reason is RetryReason.BLACKLIST_UNAVAILABLE:
            return min(self.cap, self.soon * doublings)
        return min(self.cap, self.base * doublings)

    def delay(self, reason: RetryReason, attempt: int) -> float:
        """The delay before retry `attempt` after `reason`, jittered."""
        if reason in _SOON:
            spread = self.soon_jitter
        elif reason is RetryReason.DAILY_QUOTA:
            spread = self.daily_quota_jitter
        else:
            spread = self.jitter
        return self.nominal(reason, attempt) * (1.0 - spread + 2.0 * spread * self.random())

    def dominant(self, reasons: Iterable[RetryReason], attempt: int) -> RetryReason:
        """Of several reasons recipients of one message were deferred for, the one that waits
        longest: the message is retried once, when the slowest trouble may have passed."""
        ordered = sorted(set(reasons), key=lambda r: (self.nominal(r, attempt), r.value))
        if not ordered:
            return RetryReason.TRANSIENT
        return ordered[-1]
