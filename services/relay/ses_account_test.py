"""Tests for the SES account state in `/readyz` and `/metrics` (`relay.ses_account`).

SES v2 `GetAccount` is not implemented by moto: a real boto3 `sesv2` client answers through
botocore's `Stubber` (responses validated against the API model)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from prometheus_client import generate_latest

from relay.metrics import RelayMetrics
from relay.ops_http import NotReady, OpsHttpServer
from relay.ses_account import (
    SES_ACCOUNT,
    SesAccountCollector,
    account_problem,
    ses_account_probe,
    watch_ses_account,
)
from ses_core.ratelimit import LocalRateLimiter
from ses_core.ratelimit.ses_quota import QuotaGuardedLimiter, SendQuota, SendQuotaPoller


def v2(
    *, enabled: bool = True, status: str | None = "HEALTHY", sent: float = 10.0, day: float = 200.0
) -> SendQuota:
    return SendQuota(14, day, sent, sending_enabled=enabled, enforcement_status=status)


@pytest.mark.parametrize(
    ("quota", "problem"),
    [
        (None, None),
        (v2(), None),
        (v2(status=None), None),
        (v2(enabled=False, status="SHUTDOWN"), "sending paused, EnforcementStatus=SHUTDOWN"),
        (v2(enabled=False, status=None), "sending paused"),
        (v2(status="SHUTDOWN"), "sending shut down, EnforcementStatus=SHUTDOWN"),
        (v2(status="PROBATION"), "account under review, EnforcementStatus=PROBATION"),
        (
            v2(sent=200.0),
            "daily quota used up, 200 of 200 in 24 h, EnforcementStatus=HEALTHY",
        ),
        (v2(sent=10**9, day=-1), None),
        (SendQuota(1, 200, 0, sending_enabled=True, source="GetSendQuota"), None),
    ],
)
def test_account_problem(quota: SendQuota | None, problem: str | None) -> None:
    """Paused, shut down, under review or out of daily quota is named; healthy or unknown is
    not."""
    assert account_problem(quota) == problem


def gauges(quota: SendQuota | None) -> dict[str, float]:
    return {
        metric.name: metric.samples[0].value
        for metric in SesAccountCollector(lambda: quota).collect()
    }


def test_gauges_are_present_only_when_known() -> None:
    """No reading: no gauge; v1 reading: the ratio only; v2: both; unlimited quota: no ratio."""
    assert gauges(None) == {}
    v1 = SendQuota(1, 200, 50, source="GetSendQuota")
    assert gauges(v1) == {"relay_ses_daily_quota_used_ratio": 0.25}
    assert gauges(v2(sent=150)) == {
        "relay_ses_sending_enabled": 1.0,
        "relay_ses_daily_quota_used_ratio": 0.75,
    }
    assert gauges(v2(enabled=False, day=-1)) == {"relay_ses_sending_enabled": 0.0}
    assert gauges(v2(status="SHUTDOWN"))["relay_ses_sending_enabled"] == 0.0


async def test_probe_raises_not_ready_with_the_problem() -> None:
    """The check passes for a healthy account and raises `NotReady(problem)` otherwise."""
    quota: list[SendQuota | None] = [v2()]
    probe = ses_account_probe(lambda: quota[0])
    await probe()
    quota[0] = v2(enabled=False, status="SHUTDOWN")
    with pytest.raises(NotReady, match="sending paused, EnforcementStatus=SHUTDOWN"):
        await probe()


@pytest.fixture
def sesv2() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "sesv2",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber


def get_account(*, enabled: bool, status: str, sent: float) -> dict[str, Any]:
    return {
        "SendingEnabled": enabled,
        "ProductionAccessEnabled": True,
        "EnforcementStatus": status,
        "SendQuota": {"MaxSendRate": 14.0, "Max24HourSend": 50000.0, "SentLast24Hours": sent},
    }


async def test_paused_account_is_shown_but_keeps_the_relay_ready(
    sesv2: tuple[Any, Stubber]
) -> None:
    """With the `auto` poller, a paused account is a `/readyz` line and gauges, not a 503."""
    client, stubber = sesv2
    stubber.add_response("get_account", get_account(enabled=False, status="SHUTDOWN", sent=500))
    limiter = LocalRateLimiter(1.0)
    poller = SendQuotaPoller(limiter, sesv2_client=client)
    await poller.start()
    try:
        metrics = RelayMetrics()
        probes: dict[str, Any] = {}
        advisory = watch_ses_account(QuotaGuardedLimiter(limiter, poller), metrics.registry, probes)
        assert advisory == {SES_ACCOUNT} and set(probes) == {SES_ACCOUNT}
        http = OpsHttpServer(metrics.registry, probes, advisory=advisory)
        assert await http.readiness() == (
            True,
            "ready; ses_account: NotReady (sending paused, EnforcementStatus=SHUTDOWN) "
            "(not required)\n",
        )
        text = generate_latest(metrics.registry).decode()
        assert "relay_ses_sending_enabled 0.0" in text
        assert "relay_ses_daily_quota_used_ratio 0.01" in text
    finally:
        await poller.stop()


def test_fixed_rate_has_no_account_state() -> None:
    """With a fixed SES_RATE_LIMIT nothing reads the account: no check, no gauge."""
    metrics = RelayMetrics()
    probes: dict[str, Any] = {}
    assert watch_ses_account(LocalRateLimiter(14.0), metrics.registry, probes) == frozenset()
    assert probes == {}
    assert "relay_ses_" not in generate_latest(metrics.registry).decode()
