"""Taking send-rate tokens for the SES client's attempts, one per recipient (SES counts them).

Tokens are taken late by default: after DATA's `354`, right before the body. The upstream counts
a message when it accepts the final '.', so taking the tokens there (rather than before MAIL)
keeps the round trips of MAIL/RCPT/DATA from bunching arrivals together, and only the recipients
the upstream accepted at RCPT are charged. The session waits mid-DATA for at most
min(deadline, upstream timeout). When the limiter refuses:
- no capacity before the deadline: the recipients are DEFERRED as RATE_LIMITED;
- capacity within the deadline but after the upstream timeout (`retry_early`): the session is
  given up and the next attempt pays before taking a session;
- limiter unavailable (LIMITER_UNAVAILABLE) or daily quota exhausted: DEFERRED.
After any refusal the client pays before taking a session until the limiter grants without a
wait, so an overload, an outage or an exhausted quota does not cost a dropped session (and a new
TLS + AUTH) per message. Every attempt is charged, retries included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ses_core.errors import DailyQuotaExhausted, RateLimiterUnavailable, RateLimitTimeout
from ses_core.ratelimit import RateLimiter
from ses_core.smtp.results import Reply, ReplyClass

# Refusals are logged as the client's: operators follow one logger for the send path.
log = logging.getLogger("ses_core.smtp.client")


class SendRateCharger:
    """The client's side of its rate limiter: when to pay, and what a refusal means."""

    def __init__(
        self, limiter: RateLimiter | None, *, clock: Callable[[], float], timeout: float
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self._timeout = timeout
        # Set after the limiter refused a late charge: pay before taking a session until it
        # grants without a wait.
        self.charge_early = False

    @property
    def enabled(self) -> bool:
        """Whether there is a limiter to pay at all."""
        return self._limiter is not None

    async def take_early(self, cost: int, remaining: float) -> float | Reply:
        """Seconds waited for capacity before taking a session, or the reply to defer with."""
        if self._limiter is None:
            return 0.0
        try:
            waited = await self._limiter.acquire(cost, max_wait=remaining)
        except (RateLimitTimeout, RateLimiterUnavailable, DailyQuotaExhausted) as exc:
            return _limiter_reply(exc)
        if waited <= 0.0:
            self.charge_early = False  # capacity to spare again: back to paying late
        return waited

    def late(self, deadline: float, *, prepaid: bool) -> LateCharge:
        """The charge for one attempt, taken after its `354` (nothing if `prepaid`)."""
        return LateCharge(self, deadline, prepaid=prepaid)

    async def take_late(self, charge: LateCharge, cost: int) -> Reply | None:
        """Pay `cost` for `charge`'s attempt, waiting at most min(deadline, upstream timeout)."""
        if self._limiter is None:
            return None
        remaining = charge.deadline - self._clock()
        bound = min(remaining, self._timeout)
        try:
            charge.waited = await self._limiter.acquire(cost, max_wait=max(bound, 0.0))
        except RateLimitTimeout as exc:
            charge.retry_early = bound < remaining and exc.wait_seconds <= remaining
            self.charge_early = True
            charge.refusal = _limiter_reply(exc)
        except (RateLimiterUnavailable, DailyQuotaExhausted) as exc:
            self.charge_early = True
            charge.refusal = _limiter_reply(exc)
        return charge.refusal


class LateCharge:
    """One attempt's charge, called by the transaction with the number of accepted recipients.

    Attributes:
        deadline: the send's deadline.
        waited: seconds the limiter made the session wait.
        refusal: the reply the accepted recipients got when the limiter gave nothing.
        retry_early: the refusal only means "too long to hold a session": pay first and retry.
    """

    def __init__(self, charger: SendRateCharger, deadline: float, *, prepaid: bool) -> None:
        self._charger = charger
        self._prepaid = prepaid
        self.deadline = deadline
        self.waited = 0.0
        self.refusal: Reply | None = None
        self.retry_early = False

    async def __call__(self, cost: int) -> Reply | None:
        if self._prepaid:
            return None
        return await self._charger.take_late(self, cost)


def _limiter_reply(exc: Exception) -> Reply:
    """The deferral for a limiter that gave no tokens."""
    if isinstance(exc, RateLimitTimeout):
        text = (
            "4.7.0 send rate limit: no capacity before the message deadline "
            f"(would wait {exc.wait_seconds:.1f}s)"
        )
        return Reply(451, text, ReplyClass.RATE_LIMITED)
    if isinstance(exc, DailyQuotaExhausted):
        log.warning("SES daily sending quota exhausted: %s", exc)
        return Reply(454, "4.7.0 daily sending quota exhausted", ReplyClass.DAILY_QUOTA)
    log.warning("send-rate limiter unavailable: %s", exc)
    text = f"4.3.0 send-rate limiter unavailable: {exc}"
    return Reply(451, text, ReplyClass.LIMITER_UNAVAILABLE)
