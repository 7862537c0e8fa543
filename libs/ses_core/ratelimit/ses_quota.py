"""The `auto` send rate: read the account's limits from SES and keep the limiter in step.

SES publishes the account's `MaxSendRate` (recipients per second) and its rolling 24-hour quota.
`SendQuotaPoller` reads them at start and every few minutes, preferring SES v2 `GetAccount`
(which also says whether sending is enabled) and falling back to SES v1 `GetSendQuota`; it never
makes more than one call per second (SES's limit on its non-send API calls, `docs/ses-facts.md`).
The first successful answer sets the limiter's rate; until then, and when SES never answers, the
limiter runs at the fixed fallback rate. Later failures keep the last known rate.

`QuotaGuardedLimiter` wraps any limiter and refuses with the retryable `DailyQuotaExhausted` once
the daily quota is known to be used up (SentLast24Hours, plus what this process sent since the
last reading, reaches Max24HourSend), when sending is disabled, or after the SMTP client saw SES
answer "Daily message quota exceeded". The relay defers such mail rather than dropping it.

boto3 is blocking, so every call runs in a worker thread (`asyncio.to_thread`). Clients are
injected; this module reads no configuration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import attrs
import botocore.exceptions

from ses_core.errors import DailyQuotaExhausted
from ses_core.ratelimit._gcra import validated_rate
from ses_core.ratelimit.local import AdjustableRateLimiter, Clock, Sleep

log = logging.getLogger(__name__)

#: Seconds between two calls: SES's limit on its non-send API calls (`docs/ses-facts.md`).
_MIN_CALL_SPACING = 1.0

#: Errors from boto3 that mean "SES did not answer this time" (throttling, network, auth).
_SES_CALL_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ClientError,
    botocore.exceptions.BotoCoreError,
)


@attrs.frozen
class SendQuota:
    """The account's sending limits as SES reported them.

    Attributes:
        max_send_rate: recipients per second.
        max_24_hour_send: recipients per rolling 24 hours; negative means unlimited.
        sent_last_24_hours: recipients sent in the last 24 hours.
        sending_enabled: False when SES has paused sending for the account.
        source: the API that answered ("GetAccount" or "GetSendQuota").
    """

    max_send_rate: float
    max_24_hour_send: float
    sent_last_24_hours: float
    sending_enabled: bool = True
    source: str = "GetAccount"

    @classmethod
    def from_get_account(cls, response: Mapping[str, Any]) -> SendQuota:
        """Read an SES v2 `GetAccount` response."""
        quota = response["SendQuota"]
        return cls(
            max_send_rate=float(quota["MaxSendRate"]),
            max_24_hour_send=float(quota["Max24HourSend"]),
            sent_last_24_hours=float(quota["SentLast24Hours"]),
            sending_enabled=bool(response.get("SendingEnabled", True)),
            source="GetAccount",
        )

    @classmethod
    def from_get_send_quota(cls, response: Mapping[str, Any]) -> SendQuota:
        """Read an SES v1 `GetSendQuota` response (it does not say whether sending is enabled)."""
        return cls(
            max_send_rate=float(response["MaxSendRate"]),
            max_24_hour_send=float(response["Max24HourSend"]),
            sent_last_24_hours=float(response["SentLast24Hours"]),
            source="GetSendQuota",
        )

    def remaining(self, sent_since: float = 0.0) -> float:
        """Recipients left in the rolling 24 hours (infinite when the quota is unlimited)."""
        if self.max_24_hour_send < 0:
            return math.inf
        return self.max_24_hour_send - self.sent_last_24_hours - sent_since

    def exhausted(self, sent_since: float = 0.0) -> bool:
        """True when no recipient may be sent now."""
        return not self.sending_enabled or self.remaining(sent_since) <= 0


class SendQuotaPoller:
    """Reads the SES quota periodically and applies `MaxSendRate` to a limiter.

    `start()` reads once (so the rate is right before the first send) and then polls every
    `interval` seconds in a tracked task; `stop()` cancels it. `sesv2_client` is a boto3 `sesv2`
    client, `ses_client` a boto3 `ses` client; pass either or both (v2 is tried first).
    """

    def __init__(
        self,
        limiter: AdjustableRateLimiter,
        *,
        fallback_rate: float,
        sesv2_client: Any = None,
        ses_client: Any = None,
        interval: float = 300.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if sesv2_client is None and ses_client is None:
            message = "SendQuotaPoller needs an sesv2 or ses client"
            raise ValueError(message)
        if not interval >= 2 * _MIN_CALL_SPACING:
            message = f"interval must be at least {2 * _MIN_CALL_SPACING} s, got {interval!r}"
            raise ValueError(message)
        self._limiter = limiter
        self._fallback_rate = validated_rate(fallback_rate)
        self._sesv2 = sesv2_client
        self._ses = ses_client
        self._interval = interval
        self._clock = clock
        self._sleep = sleep
        self._quota: SendQuota | None = None
        self._sent_since_poll = 0
        self._exhausted_reported = False
        self._last_call = -math.inf
        # Concurrent refreshes (the polling task and a caller) must take turns: each would
        # otherwise compute the same wait from `_last_call` and call SES at the same moment.
        self._call_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def quota(self) -> SendQuota | None:
        """The last quota read from SES, or None before the first success."""
        return self._quota

    @property
    def exhausted(self) -> bool:
        """True when the daily quota is known to be used up or sending is disabled."""
        if self._exhausted_reported:
            return True
        return self._quota is not None and self._quota.exhausted(self._sent_since_poll)

    def record_sent(self, recipients: int) -> None:
        """Count recipients granted since the last reading, so exhaustion is seen before SES."""
        self._sent_since_poll += recipients

    def report_exhausted(self) -> None:
        """Note that SES answered "Daily message quota exceeded"; cleared by the next reading
        that shows room."""
        if not self._exhausted_reported:
            log.warning("SES reports the daily sending quota exhausted")
        self._exhausted_reported = True

    def raise_if_exhausted(self) -> None:
        """Raise `DailyQuotaExhausted` when no recipient may be sent now."""
        if not self.exhausted:
            return
        quota = self._quota
        if quota is not None and not quota.sending_enabled:
            message = "SES sending is disabled for this account"
        elif quota is not None:
            message = (
                f"SES daily quota used up: {quota.sent_last_24_hours + self._sent_since_poll:.0f}"
                f" of {quota.max_24_hour_send:.0f} recipients in the last 24 hours"
            )
        else:
            message = "SES reported the daily quota exhausted"
        raise DailyQuotaExhausted(message)

    async def start(self) -> None:
        """Read the quota once (fallback rate if that fails), then keep polling in a task."""
        if self._task is not None:
            return
        if not await self.refresh():
            log.warning("SES quota unknown: using the fallback rate %.3g/s", self._fallback_rate)
            self._limiter.set_rate(self._fallback_rate)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the polling task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._sleep(self._interval)
            await self.refresh()

    async def refresh(self) -> bool:
        """Read the quota now; apply it and return True, or log and return False."""
        quota = await self._read()
        if quota is None:
            return False
        previous, self._quota = self._quota, quota
        self._sent_since_poll = 0
        if self._exhausted_reported and not quota.exhausted():
            log.info("SES daily quota has room again")
            self._exhausted_reported = False
        if quota.max_send_rate > 0 and quota.max_send_rate != self._limiter.rate:
            log.info(
                "SES send rate is %.3g/s (was %.3g/s)", quota.max_send_rate, self._limiter.rate
            )
            self._limiter.set_rate(quota.max_send_rate)
        if quota.exhausted() and (previous is None or not previous.exhausted()):
            log.warning(
                "SES daily quota exhausted or sending disabled (sent %.0f of %.0f, enabled=%s)",
                quota.sent_last_24_hours,
                quota.max_24_hour_send,
                quota.sending_enabled,
            )
        return True

    async def _read(self) -> SendQuota | None:
        if self._sesv2 is not None:
            try:
                response = await self._call(self._sesv2.get_account)
                return SendQuota.from_get_account(response)
            except _SES_CALL_ERRORS as error:
                log.warning("SES GetAccount failed: %s", error)
            except (KeyError, TypeError, ValueError) as error:
                log.warning("SES GetAccount answer not understood: %r", error)
        if self._ses is not None:
            try:
                response = await self._call(self._ses.get_send_quota)
                return SendQuota.from_get_send_quota(response)
            except _SES_CALL_ERRORS as error:
                log.warning("SES GetSendQuota failed: %s", error)
            except (KeyError, TypeError, ValueError) as error:
                log.warning("SES GetSendQuota answer not understood: %r", error)
        return None

    async def _call(self, method: Any) -> Mapping[str, Any]:
        """Call SES at least `_MIN_CALL_SPACING` after the previous call, one call at a time."""
        async with self._call_lock:
            gap = self._last_call + _MIN_CALL_SPACING - self._clock()
            if gap > 0:
                await self._sleep(gap)
            self._last_call = self._clock()
            response: Mapping[str, Any] = await asyncio.to_thread(method)
            return response


class QuotaGuardedLimiter:
    """A limiter that also refuses with `DailyQuotaExhausted` when the daily quota is used up."""

    def __init__(self, inner: AdjustableRateLimiter, poller: SendQuotaPoller) -> None:
        self._inner = inner
        self._poller = poller

    @property
    def rate(self) -> float:
        """The inner limiter's rate."""
        return self._inner.rate

    def set_rate(self, rate: float) -> None:
        """Change the inner limiter's rate."""
        self._inner.set_rate(rate)

    async def acquire(self, cost: int, *, max_wait: float | None = None) -> float:
        """Refuse when the daily quota is used up; else wait for the rate, count the recipients."""
        self._poller.raise_if_exhausted()
        waited = await self._inner.acquire(cost, max_wait=max_wait)
        self._poller.record_sent(cost)
        return waited
