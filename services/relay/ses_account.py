"""The SES account's state, as the `auto` quota poller last read it, for metrics and `/readyz`.

An account SES has paused (`SendingEnabled` false, `EnforcementStatus` SHUTDOWN), one under
review (PROBATION), or one whose daily quota is used up sends nothing, however healthy the relay
is. A queueing relay must stay ready then (the queue holds the mail until SES sends again), but
an operator needs to see why nothing leaves: `/readyz` gets an advisory `ses_account` line and
`/metrics` two gauges:

- `relay_ses_sending_enabled` 1/0, present once `GetAccount` answered (SES v1's `GetSendQuota`
  does not say, so the gauge stays absent when only v1 answers);
- `relay_ses_daily_quota_used_ratio`, SentLast24Hours / Max24HourSend, present once a quota was
  read and absent for an unlimited quota.

The state is known only with `SES_RATE_LIMIT=auto`, whose poller already reads `GetAccount`
every 5 minutes. With a fixed rate nothing reads it (the relay makes no AWS call the operator did
not ask for, and needs no `ses:GetAccount` permission): no gauge and no `/readyz` line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.ops_http import NotReady

if TYPE_CHECKING:
    from ses_core.ratelimit.ses_quota import SendQuota

#: The advisory readiness check's name in `/readyz`.
SES_ACCOUNT = "ses_account"
#: Review states that do not stop sending but deserve a line (SES's "under review").
_WATCHED = frozenset({"PROBATION"})

QuotaReading = Callable[[], "SendQuota | None"]


def account_problem(quota: SendQuota | None) -> str | None:
    """What keeps (or may soon keep) the account from sending, in a few words; None when
    nothing does or nothing is known."""
    if quota is None:
        return None
    status = quota.enforcement_status
    tag = f", EnforcementStatus={status}" if status else ""
    if quota.sending_state_known and not quota.sending_enabled:
        return f"sending paused{tag}"
    if status == "SHUTDOWN":
        return f"sending shut down{tag}"
    if quota.remaining() <= 0:
        return (
            f"daily quota used up, {quota.sent_last_24_hours:.0f} of "
            f"{quota.max_24_hour_send:.0f} in 24 h{tag}"
        )
    if status in _WATCHED:
        return f"account under review{tag}"
    return None


class SesAccountCollector(Collector):
    """Exports the two gauges from the poller's last reading, at scrape time."""

    def __init__(self, reading: QuotaReading) -> None:
        self._reading = reading

    def collect(self) -> Iterator[Metric]:
        quota = self._reading()
        if quota is None:
            return
        if quota.sending_state_known:
            yield GaugeMetricFamily(
                "relay_ses_sending_enabled",
                "1 when SES lets the account send (GetAccount SendingEnabled), 0 when paused",
                value=1.0
                if quota.sending_enabled and quota.enforcement_status != "SHUTDOWN"
                else 0.0,
            )
        ratio = quota.daily_used_ratio
        if ratio is not None:
            yield GaugeMetricFamily(
                "relay_ses_daily_quota_used_ratio",
                "SentLast24Hours / Max24HourSend at the last SES reading",
                value=ratio,
            )


def ses_account_probe(reading: QuotaReading) -> Callable[[], Awaitable[None]]:
    """An advisory readiness check: raises `NotReady` saying what blocks the account."""

    async def ses_account() -> None:
        problem = account_problem(reading())
        if problem is not None:
            raise NotReady(problem)

    return ses_account


def watch_ses_account(
    limiter: Any, registry: Any, probes: dict[str, Callable[[], Awaitable[None]]]
) -> frozenset[str]:
    """With the `auto` limiter (a `QuotaGuardedLimiter`, which has a `poller`), export the
    account state to `registry` and add the `ses_account` check to `probes`; return the names
    of the checks to make advisory (none with a fixed rate)."""
    poller = getattr(limiter, "poller", None)
    if poller is None:
        return frozenset()

    def reading() -> SendQuota | None:
        quota: SendQuota | None = poller.quota
        return quota

    registry.register(SesAccountCollector(reading))
    probes[SES_ACCOUNT] = ses_account_probe(reading)
    return frozenset({SES_ACCOUNT})
