"""Pacing a hair under the account's rate, so that the count SES makes stays within it.

SES counts recipients as messages reach it, not when the relay's limiter granted them. A limiter
that grants exactly `rate` in every second lets the jitter of the time in transit (a session a
few milliseconds slower than the next: a scheduler pause, a garbage collection, a retransmitted
segment) bunch one or two more recipients into one of SES's seconds. Measured on loopback at
500/s with burst 1: grants never above 501 in any one-second window, arrivals at the upstream up
to 503. `HeadroomLimiter` runs its limiter at `rate * (1 - fraction)` and still reports `rate`:
with the relay's 0.5% the upstream's count stayed within the rate + burst and more than 99% of
the rate was delivered.
"""

from __future__ import annotations

import math

from ses_core.ratelimit.local import AdjustableRateLimiter


class HeadroomLimiter:
    """An `AdjustableRateLimiter` that paces `inner` `fraction` below the rate it is given.

    `inner` is built at the account's rate; it is slowed at once, and every later `set_rate`
    (the `auto` rate read from SES) is slowed alike. `rate` reports the account's rate.
    """

    def __init__(self, inner: AdjustableRateLimiter, fraction: float) -> None:
        if not (math.isfinite(fraction) and 0 <= fraction < 1):
            message = f"headroom must be a fraction in [0, 1), got {fraction!r}"
            raise ValueError(message)
        self._inner = inner
        self._keep = 1.0 - fraction
        inner.set_rate(inner.rate * self._keep)

    @property
    def rate(self) -> float:
        """The account's rate in recipients per second (the pace is `fraction` below it)."""
        return self._inner.rate / self._keep

    @property
    def inner(self) -> AdjustableRateLimiter:
        """The limiter that paces (at the slowed rate)."""
        return self._inner

    def set_rate(self, rate: float) -> None:
        """Pace `fraction` below the new account rate `rate`."""
        self._inner.set_rate(rate * self._keep)

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        """As `RateLimiter.acquire`, at the slowed pace."""
        return await self._inner.acquire(cost, max_wait=max_wait)
