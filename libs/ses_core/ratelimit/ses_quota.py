"""The `auto` send rate: read the account's limits from SES and keep the limiter in step.

SES publishes the account's `MaxSendRate` (recipients per second) and its rolling 24-hour quota.
`SendQuotaPoller` reads them at start and every few minutes, preferring SES v2 `GetAccount`
(which also says whether sending is enabled) and falling back to SES v1 `GetSendQuota`; it never
makes more than one call per second (SES's limit on its non-send API calls, `docs/ses-facts.md`).
The first reading must succeed: when neither API answers at start, `start()` raises
`SesQuotaUnavailable` with one line saying why for each (a denied IAM action, an endpoint that
did not answer), because guessing a rate would either crawl or exceed the account's. Later
failed polls are logged and keep the last known rate.

`ses_api_clients` makes the two boto3 clients with short timeouts and one retry
(`API_CONNECT_TIMEOUT`, `API_READ_TIMEOUT`, `API_MAX_ATTEMPTS`), so an unreachable SES API delays
start-up by seconds, not boto3's default minutes; `region_from_smtp_host` reads the region from
an `email-smtp.<region>.amazonaws.com` host, since the quota that matters is the one of the region
the mail goes to.

`QuotaGuardedLimiter` wraps any limiter and refuses with the retryable `DailyQuotaExhausted` once
the daily quota is known to be used up (SentLast24Hours, plus what this process sent since the
last reading, reaches Max24HourSend), when sending is disabled, or after the SMTP client saw SES
answer "Daily message quota exceeded". The relay defers such mail rather than dropping it.

boto3 is blocking, so every call runs in a worker thread (`asyncio.to_thread`). Clients are
injected (or made by `ses_api_clients`); this module reads no configuration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import attrs
import botocore.exceptions
from botocore.config import Config

from ses_core.errors import DailyQuotaExhausted, SesQuotaUnavailable
from ses_core.ratelimit.local import AdjustableRateLimiter, Clock, Sleep

log = logging.getLogger(__name__)

#: Seconds between two calls: SES's limit on its non-send API calls (`docs/ses-facts.md`).
_MIN_CALL_SPACING = 1.0

#: Seconds to open a connection to the SES API and to wait for its answer, and attempts per call
#: in all: one retry (botocore's `total_max_attempts`; its `max_attempts` counts retries only).
#: An API that accepts connections but never answers costs 2 x 3 s plus a backoff of at most
#: 1 s, so `start()` gives up on both within about 15 s, not boto3's default minutes.
API_CONNECT_TIMEOUT = 2.0
API_READ_TIMEOUT = 3.0
API_MAX_ATTEMPTS = 2

#: Errors that mean "SES gave no quota this time": boto3's (throttling, network, auth) and an
#: answer without the expected fields.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ClientError,
    botocore.exceptions.BotoCoreError,
    KeyError,
    TypeError,
    ValueError,
)
#: Error codes SES uses when the caller's IAM principal may not call the action.
_ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
#: botocore errors that mean the endpoint could not be reached or did not answer in time.
_NO_ANSWER: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
)
_SMTP_HOST = re.compile(
    r"email-smtp(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE,
)


def region_from_smtp_host(host: str | None) -> str | None:
    """The AWS region of an SES SMTP endpoint (`email-smtp.<region>.amazonaws.com`), or None for
    any other host (a local server, a private relay)."""
    match = _SMTP_HOST.fullmatch(host.strip()) if host else None
    return match["region"].lower() if match else None


def ses_api_config() -> Config:
    """Short connect and read timeouts and one retry: see `API_CONNECT_TIMEOUT`."""
    return Config(
        connect_timeout=API_CONNECT_TIMEOUT,
        read_timeout=API_READ_TIMEOUT,
        retries={"total_max_attempts": API_MAX_ATTEMPTS, "mode": "standard"},
    )


def ses_api_clients(region: str | None) -> tuple[Any, Any]:
    """An SES v2 and an SES v1 boto3 client for `region` (None: boto3's usual region settings),
    both with `ses_api_config()`. Credentials and endpoint overrides (`AWS_ENDPOINT_URL_SESV2`,
    `AWS_ENDPOINT_URL_SES`) come from boto3's usual chain; raises botocore's `NoRegionError`
    when no region is known."""
    import boto3

    config = ses_api_config()
    return (
        boto3.client("sesv2", region_name=region, config=config),
        boto3.client("ses", region_name=region, config=config),
    )


def _why(api: str, client: Any, error: BaseException) -> str:
    """One clause saying why `api` gave no quota: what an operator needs to fix it."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "error")
        if code in _ACCESS_DENIED:
            return f"{api}: access denied (the IAM principal needs ses:{api})"
        return f"{api}: {code}"
    if isinstance(error, _NO_ANSWER):
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "the SES API")
        return f"{api}: no answer from {endpoint} ({type(error).__name__})"
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return f"{api}: no AWS credentials found"
    if isinstance(error, KeyError | TypeError | ValueError):
        return f"{api}: answer not understood ({error!r})"
    return f"{api}: {type(error).__name__}: {error}"


@attrs.frozen
class SendQuota:
    """The account's sending limits as SES reported them.

    Attributes:
        max_send_rate: recipients per second.
        max_24_hour_send: recipients per rolling 24 hours; negative means unlimited.
        sent_last_24_hours: recipients sent in the last 24 hours.
        sending_enabled: False when SES has paused sending for the account (`GetSendQuota`
            does not say: True there).
        source: the API that answered ("GetAccount" or "GetSendQuota").
        enforcement_status: `GetAccount`'s review status of the account (HEALTHY, PROBATION,
            SHUTDOWN), None when not reported.
        production_access_enabled: False in the SES sandbox, None when not reported.
    """

    max_send_rate: float
    max_24_hour_send: float
    sent_last_24_hours: float
    sending_enabled: bool = True
    source: str = "GetAccount"
    enforcement_status: str | None = None
    production_access_enabled: bool | None = None

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
            enforcement_status=response.get("EnforcementStatus") or None,
            production_access_enabled=(
                bool(response["ProductionAccessEnabled"])
                if "ProductionAccessEnabled" in response
                else None
            ),
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

    @property
    def sending_state_known(self) -> bool:
        """Whether `sending_enabled` was reported (by `GetAccount`) rather than assumed."""
        return self.source == "GetAccount"

    @property
    def daily_used_ratio(self) -> float | None:
        """SentLast24Hours / Max24HourSend; None when the quota is unlimited."""
        if self.max_24_hour_send < 0:
            return None
        if self.max_24_hour_send == 0:
            return 1.0
        return self.sent_last_24_hours / self.max_24_hour_send

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
        """Read the quota once, then keep polling in a task; raise `SesQuotaUnavailable` (one
        line, naming each API's failure) when neither API answers."""
        if self._task is not None:
            return
        quota, failures = await self._read()
        if quota is None:
            raise SesQuotaUnavailable("; ".join(failures) or "no SES client answered")
        self._apply(quota)
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
        """Read the quota now; apply it and return True, or log why not and return False (the
        limiter keeps its last rate)."""
        quota, failures = await self._read()
        if quota is None:
            for failure in failures:
                log.warning("SES quota not read, keeping %.3g/s: %s", self._limiter.rate, failure)
            return False
        self._apply(quota)
        return True

    def _apply(self, quota: SendQuota) -> None:
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
        if previous is not None and (previous.sending_enabled, previous.enforcement_status) != (
            quota.sending_enabled,
            quota.enforcement_status,
        ):
            log.warning(
                "SES account state changed: sending enabled %s -> %s, enforcement status %s -> %s",
                previous.sending_enabled,
                quota.sending_enabled,
                previous.enforcement_status,
                quota.enforcement_status,
            )
        if quota.exhausted() and (previous is None or not previous.exhausted()):
            log.warning(
                "SES daily quota exhausted or sending disabled (sent %.0f of %.0f, enabled=%s)",
                quota.sent_last_24_hours,
                quota.max_24_hour_send,
                quota.sending_enabled,
            )

    async def _read(self) -> tuple[SendQuota | None, list[str]]:
        """The quota from the first API that answers, and why each one tried before did not."""
        failures: list[str] = []
        for api, client in (("GetAccount", self._sesv2), ("GetSendQuota", self._ses)):
            if client is None:
                continue
            try:
                if api == "GetAccount":
                    return SendQuota.from_get_account(await self._call(client.get_account)), []
                return SendQuota.from_get_send_quota(await self._call(client.get_send_quota)), []
            except _READ_ERRORS as error:
                failures.append(_why(api, client, error))
        return None, failures

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
    def poller(self) -> SendQuotaPoller:
        """The poller whose readings guard this limiter (the account state, for metrics)."""
        return self._poller

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
