"""`HeadroomLimiter`: the pace is a fraction under the account's rate, which it still reports."""

from __future__ import annotations

import pytest

from ses_core.ratelimit import LocalRateLimiter
from ses_core.ratelimit.headroom import HeadroomLimiter


async def test_paces_the_fraction_below_and_reports_the_account_rate() -> None:
    now = [0.0]

    async def sleep(delay: float) -> None:  # time passes exactly as asked
        now[0] += delay

    inner = LocalRateLimiter(100.0, burst=0, clock=lambda: now[0], sleep=sleep)
    limiter = HeadroomLimiter(inner, 0.01)
    assert limiter.rate == pytest.approx(100.0) and inner.rate == pytest.approx(99.0)
    for _ in range(100):
        await limiter.acquire(1)
    assert now[0] == pytest.approx(99 / 99.0)  # 100 grants: 99 intervals at 99/s


async def test_a_new_rate_is_slowed_alike() -> None:
    inner = LocalRateLimiter(10.0)
    limiter = HeadroomLimiter(inner, 0.5)
    limiter.set_rate(40.0)
    assert (limiter.rate, inner.rate) == (pytest.approx(40.0), pytest.approx(20.0))
    assert limiter.inner is inner


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_a_fraction_outside_0_to_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="headroom"):
        HeadroomLimiter(LocalRateLimiter(10.0), fraction)
