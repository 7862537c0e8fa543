"""Send-rate limiting with SES semantics: a message costs one unit per recipient.

Senders depend on the `RateLimiter` port (`AdjustableRateLimiter` when the rate can change while
it runs). `LocalRateLimiter` keeps the budget in-process; the adapters with heavy dependencies are
imported from their own modules: `ses_core.ratelimit.redis` (`RedisRateLimiter`, one budget for
every replica, needs redis) and `ses_core.ratelimit.ses_quota` (the `auto` rate read from SES and
the daily-quota guard, needs botocore).
"""

from ses_core.ratelimit.local import (
    AdjustableRateLimiter,
    Clock,
    LocalRateLimiter,
    RateLimiter,
    Sleep,
)

__all__ = [
    "AdjustableRateLimiter",
    "Clock",
    "LocalRateLimiter",
    "RateLimiter",
    "Sleep",
]
