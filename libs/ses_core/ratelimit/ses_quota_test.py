"""Tests for the SES-read "auto" rate and the daily-quota guard.

SES v2 `GetAccount` is not implemented by moto, so it is answered by botocore's `Stubber` on a
real boto3 `sesv2` client (requests and responses are validated against the API model); SES v1
`GetSendQuota` is answered by moto.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from ses_core.errors import DailyQuotaExhausted, SesQuotaUnavailable
from ses_core.ratelimit import LocalRateLimiter
from ses_core.ratelimit.ses_quota import (
    API_CONNECT_TIMEOUT,
    API_MAX_ATTEMPTS,
    API_READ_TIMEOUT,
    QuotaGuardedLimiter,
    SendQuota,
    SendQuotaPoller,
    region_from_smtp_host,
    ses_api_clients,
)
from ses_core.testing.clock import VirtualClock

T = TypeVar("T")
CREDENTIALS = {
    "region_name": "eu-west-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def account(
    rate: float = 14.0, max_day: float = 50000.0, sent: float = 10.0, enabled: bool = True
) -> dict[str, Any]:
    return {
        "SendingEnabled": enabled,
        "ProductionAccessEnabled": True,
        "SendQuota": {"MaxSendRate": rate, "Max24HourSend": max_day, "SentLast24Hours": sent},
    }


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    yield VirtualClock()
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


@pytest.fixture
def sesv2() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("sesv2", **CREDENTIALS)
    with Stubber(client) as stubber:
        yield client, stubber


@pytest.fixture
def ses_v1() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ses", **CREDENTIALS)


def limiter_for(clock: VirtualClock) -> LocalRateLimiter:
    return LocalRateLimiter(1.0, clock=clock, sleep=clock.sleep)


def poller_for(clock: VirtualClock, limiter: LocalRateLimiter, **clients: Any) -> SendQuotaPoller:
    return SendQuotaPoller(limiter, interval=300.0, clock=clock, sleep=clock.sleep, **clients)


async def drive(clock: VirtualClock, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, moving virtual time on while it sleeps (bounded)."""
    task = asyncio.ensure_future(awaitable)
    for _ in range(500):
        await asyncio.wait({task}, timeout=0.01)
        if task.done():
            break
        await clock.advance_to_next()
    return task.result()


async def start(clock: VirtualClock, poller: SendQuotaPoller) -> None:
    await drive(clock, poller.start())


def test_send_quota_reads_get_account_and_get_send_quota() -> None:
    """Both SES answers become the same value; v1 cannot say whether sending is enabled."""
    v2 = SendQuota.from_get_account(account(rate=14, max_day=100, sent=5, enabled=False))
    assert (v2.max_send_rate, v2.max_24_hour_send, v2.sent_last_24_hours) == (14, 100, 5)
    assert not v2.sending_enabled and v2.source == "GetAccount"
    v1 = SendQuota.from_get_send_quota(
        {"MaxSendRate": 1.0, "Max24HourSend": 200.0, "SentLast24Hours": 0.0}
    )
    assert v1.sending_enabled and v1.source == "GetSendQuota" and v1.remaining() == 200


@pytest.mark.parametrize(
    ("quota", "sent_since", "exhausted"),
    [
        (SendQuota(1, 200, 199), 0, False),
        (SendQuota(1, 200, 199), 1, True),
        (SendQuota(1, 200, 200), 0, True),
        (SendQuota(1, 200, 250), 0, True),
        (SendQuota(1, 200, 0, sending_enabled=False), 0, True),
        (SendQuota(1, -1, 10**9), 0, False),
    ],
)
def test_exhaustion_rules(quota: SendQuota, sent_since: int, exhausted: bool) -> None:
    """Used-up quota or disabled sending is exhaustion; a negative Max24HourSend is unlimited."""
    assert quota.exhausted(sent_since) is exhausted


def test_poller_settings_are_validated(clock: VirtualClock) -> None:
    """A poller needs a client and a sane interval."""
    limiter = limiter_for(clock)
    with pytest.raises(ValueError):
        SendQuotaPoller(limiter)
    with pytest.raises(ValueError):
        SendQuotaPoller(limiter, ses_client=object(), interval=1.0)


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("email-smtp.eu-west-1.amazonaws.com", "eu-west-1"),
        ("EMAIL-SMTP.AP-SOUTHEAST-2.AMAZONAWS.COM.", "ap-southeast-2"),
        ("email-smtp-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("email-smtp.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("127.0.0.1", None),
        ("smtp.example.com", None),
        ("email-smtp.eu-west-1.amazonaws.com.evil.example", None),
        (None, None),
    ],
)
def test_region_from_smtp_host(host: str | None, region: str | None) -> None:
    """The region is read from an SES SMTP host name, and from nothing else."""
    assert region_from_smtp_host(host) == region


def test_api_clients_have_short_timeouts_and_one_retry() -> None:
    """Both SES clients use a few seconds to connect and read and retry once: the bound on how
    long `start()` can take when SES does not answer."""
    clients = ses_api_clients("ap-south-1")
    for client in clients:
        config = client.meta.config
        assert client.meta.region_name == "ap-south-1"
        assert (config.connect_timeout, config.read_timeout) == (
            API_CONNECT_TIMEOUT,
            API_READ_TIMEOUT,
        )
        assert config.retries == {"total_max_attempts": API_MAX_ATTEMPTS, "mode": "standard"}
    assert API_CONNECT_TIMEOUT <= 5 and API_READ_TIMEOUT <= 5 and API_MAX_ATTEMPTS == 2
    assert [client.meta.service_model.service_name for client in clients] == ["sesv2", "ses"]


async def test_start_applies_get_account_rate(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """The first GetAccount answer sets the limiter's rate before anything is sent."""
    client, stubber = sesv2
    stubber.add_response("get_account", account(rate=14.0))
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    assert limiter.rate == 14.0
    assert poller.quota is not None and poller.quota.source == "GetAccount"
    assert not poller.exhausted
    await poller.stop()
    stubber.assert_no_pending_responses()


async def test_falls_back_to_get_send_quota_one_second_later(
    clock: VirtualClock, sesv2: tuple[Any, Stubber], ses_v1: Any
) -> None:
    """When GetAccount fails, GetSendQuota (moto: 1/s, 200/day) is asked, never sooner than
    1 s after the previous call."""
    client, stubber = sesv2
    stubber.add_client_error("get_account", "AccessDeniedException", http_status_code=403)
    limiter = limiter_for(clock)
    limiter.set_rate(9.0)
    poller = poller_for(clock, limiter, sesv2_client=client, ses_client=ses_v1)
    await start(clock, poller)
    assert limiter.rate == 1.0
    assert poller.quota == SendQuota(1.0, 200.0, 0.0, source="GetSendQuota")
    assert clock.sleeps[0] == pytest.approx(1.0)
    await poller.stop()


async def test_v1_client_alone_works(clock: VirtualClock, ses_v1: Any) -> None:
    """A poller given only an SES v1 client reads GetSendQuota."""
    limiter = limiter_for(clock)
    limiter.set_rate(5.0)
    poller = poller_for(clock, limiter, ses_client=ses_v1)
    await start(clock, poller)
    assert limiter.rate == 1.0
    await poller.stop()


async def test_unreadable_quota_at_start_is_an_error(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """If SES cannot be read at start, `start()` raises: never a silent guessed rate."""
    client, stubber = sesv2
    stubber.add_client_error("get_account", "TooManyRequestsException", http_status_code=429)
    limiter = limiter_for(clock)
    limiter.set_rate(7.0)
    poller = poller_for(clock, limiter, sesv2_client=client)
    with pytest.raises(SesQuotaUnavailable, match="GetAccount: TooManyRequestsException"):
        await start(clock, poller)
    assert limiter.rate == 7.0 and poller.quota is None
    assert clock.sleeping == 0  # no polling task left behind


async def test_access_denied_to_both_names_both_permissions(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """AccessDenied on GetAccount and on GetSendQuota: one line naming both IAM actions.
    (moto cannot deny GetSendQuota, so both clients are stubbed.)"""
    client, stubber = sesv2
    stubber.add_client_error("get_account", "AccessDeniedException", http_status_code=403)
    v1 = boto3.client("ses", **CREDENTIALS)
    with Stubber(v1) as v1_stubber:
        v1_stubber.add_client_error("get_send_quota", "AccessDenied", http_status_code=403)
        poller = poller_for(clock, limiter_for(clock), sesv2_client=client, ses_client=v1)
        with pytest.raises(SesQuotaUnavailable) as caught:
            await start(clock, poller)
    text = str(caught.value)
    assert "\n" not in text
    assert "access denied" in text
    assert "ses:GetAccount" in text and "ses:GetSendQuota" in text


async def test_answer_without_send_quota_is_not_understood(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """A GetAccount answer lacking SendQuota counts as a failed read, not a crash."""
    client, stubber = sesv2
    stubber.add_response("get_account", {"SendingEnabled": True})
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    with pytest.raises(SesQuotaUnavailable, match="GetAccount: answer not understood"):
        await start(clock, poller)
    assert limiter.rate == 1.0


async def test_polls_periodically_and_keeps_last_rate_on_failure(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """Every interval the quota is read again; a failed read keeps the last known rate."""
    client, stubber = sesv2
    stubber.add_response("get_account", account(rate=14.0))
    stubber.add_response("get_account", account(rate=28.0))
    stubber.add_client_error("get_account", "TooManyRequestsException", http_status_code=429)
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    assert limiter.rate == 14.0
    for expected in (28.0, 28.0):
        await clock.advance(300.0)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if clock.sleeping:
                break
        assert limiter.rate == expected
    stubber.assert_no_pending_responses()
    await poller.stop()


async def test_concurrent_refreshes_call_ses_at_least_one_second_apart(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """Two refreshes started together just after a call take turns: SES sees one call per
    second, not two calls at the same moment once the spacing wait is over."""
    client, stubber = sesv2
    for _ in range(3):
        stubber.add_response("get_account", account())
    called_at: list[float] = []
    client.meta.events.register(
        "before-parameter-build.sesv2.GetAccount", lambda **_: called_at.append(clock.now)
    )
    poller = poller_for(clock, limiter_for(clock), sesv2_client=client)
    assert await drive(clock, poller.refresh())
    both = asyncio.gather(poller.refresh(), poller.refresh())
    assert await drive(clock, both) == [True, True]
    assert len(called_at) == 3
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(called_at))
    stubber.assert_no_pending_responses()


async def test_start_twice_and_stop_twice_are_harmless(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """start() is idempotent and stop() cancels the polling task once."""
    client, stubber = sesv2
    stubber.add_response("get_account", account())
    poller = poller_for(clock, limiter_for(clock), sesv2_client=client)
    await start(clock, poller)
    await start(clock, poller)
    await poller.stop()
    await poller.stop()
    assert clock.sleeping == 0


async def test_guard_refuses_when_daily_quota_is_used_up(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """SentLast24Hours >= Max24HourSend makes acquire raise the retryable DailyQuotaExhausted."""
    client, stubber = sesv2
    stubber.add_response("get_account", account(max_day=200.0, sent=200.0))
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    guarded = QuotaGuardedLimiter(limiter, poller)
    with pytest.raises(DailyQuotaExhausted) as caught:
        await guarded.acquire(1)
    assert "200 of 200" in str(caught.value)
    await poller.stop()


async def test_guard_refuses_when_sending_is_disabled(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """SendingEnabled false is reported as DailyQuotaExhausted too."""
    client, stubber = sesv2
    stubber.add_response("get_account", account(enabled=False))
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    with pytest.raises(DailyQuotaExhausted, match="disabled"):
        await QuotaGuardedLimiter(limiter, poller).acquire(1)
    await poller.stop()


async def test_guard_counts_recipients_sent_since_the_last_reading(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """Recipients admitted since the last reading count against the remaining quota."""
    client, stubber = sesv2
    stubber.add_response("get_account", account(rate=100.0, max_day=200.0, sent=195.0))
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    guarded = QuotaGuardedLimiter(limiter, poller)
    assert guarded.rate == 100.0
    assert await guarded.acquire(5) == 0.0
    with pytest.raises(DailyQuotaExhausted):
        await guarded.acquire(1)
    guarded.set_rate(50.0)
    assert limiter.rate == 50.0
    await poller.stop()


async def test_reported_exhaustion_lasts_until_a_reading_shows_room(
    clock: VirtualClock, sesv2: tuple[Any, Stubber]
) -> None:
    """After SES answers "Daily message quota exceeded", sends are refused until a poll shows
    room again."""
    client, stubber = sesv2
    stubber.add_response("get_account", account())
    stubber.add_response("get_account", account())
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    poller.report_exhausted()
    with pytest.raises(DailyQuotaExhausted):
        await QuotaGuardedLimiter(limiter, poller).acquire(1)
    assert await drive(clock, poller.refresh())
    assert not poller.exhausted
    await poller.stop()


async def test_guard_without_quota_reading_admits(clock: VirtualClock) -> None:
    """Before any reading the guard only applies the rate."""
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, ses_client=object())
    assert await QuotaGuardedLimiter(limiter, poller).acquire(1) == 0.0


def test_get_account_keeps_the_account_state() -> None:
    """GetAccount's EnforcementStatus and ProductionAccessEnabled are kept; v1 reports neither,
    so its sending state counts as unknown."""
    response = {**account(enabled=False), "EnforcementStatus": "SHUTDOWN"}
    v2 = SendQuota.from_get_account(response)
    assert (v2.enforcement_status, v2.production_access_enabled) == ("SHUTDOWN", True)
    assert v2.sending_state_known and not v2.sending_enabled
    bare = SendQuota.from_get_account({"SendQuota": account()["SendQuota"]})
    assert (bare.enforcement_status, bare.production_access_enabled) == (None, None)
    v1 = SendQuota.from_get_send_quota(
        {"MaxSendRate": 1.0, "Max24HourSend": 200.0, "SentLast24Hours": 0.0}
    )
    assert not v1.sending_state_known and v1.enforcement_status is None


@pytest.mark.parametrize(
    ("quota", "ratio"),
    [
        (SendQuota(1, 200, 50), 0.25),
        (SendQuota(1, 200, 300), 1.5),
        (SendQuota(1, 0, 0), 1.0),
        (SendQuota(1, -1, 10**6), None),
    ],
)
def test_daily_used_ratio(quota: SendQuota, ratio: float | None) -> None:
    """SentLast24Hours / Max24HourSend; None for an unlimited quota, 1 for a zero one."""
    assert quota.daily_used_ratio == ratio


async def test_account_state_changes_are_logged_and_reachable_from_the_guard(
    clock: VirtualClock, sesv2: tuple[Any, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    """A change of SendingEnabled or EnforcementStatus between readings is logged as a warning;
    the guard exposes its poller, so the relay can show the account state."""
    client, stubber = sesv2
    stubber.add_response("get_account", {**account(), "EnforcementStatus": "HEALTHY"})
    stubber.add_response("get_account", {**account(enabled=False), "EnforcementStatus": "SHUTDOWN"})
    limiter = limiter_for(clock)
    poller = poller_for(clock, limiter, sesv2_client=client)
    await start(clock, poller)
    assert QuotaGuardedLimiter(limiter, poller).poller is poller
    assert "account state changed" not in caplog.text
    assert await drive(clock, poller.refresh())
    assert poller.quota is not None and poller.quota.enforcement_status == "SHUTDOWN"
    assert (
        "SES account state changed: sending enabled True -> False, "
        "enforcement status HEALTHY -> SHUTDOWN"
    ) in caplog.text
    await poller.stop()
