"""The relay's way out: the send-rate limiter and the sender (SES SMTP pool, SES API, local
outbox or a local SMTP URL), built from the configuration.

Split from `relay.wiring`, which assembles these with the other components; it re-exports the
names tests use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from relay.config import ConfigError, RelayConfig
from relay.metrics import RelayMetrics
from relay.outbox import OutboxSender
from relay.upstream import build_api_sender, ses_region
from ses_core.ratelimit import LocalRateLimiter, RateLimiter
from ses_core.smtp import MessageSender, SmtpSettings

# Logged as `relay.wiring`, as before the split: log filters and tests keep working.
log = logging.getLogger("relay.wiring")
T = TypeVar("T")

#: A readiness probe: returns when ready, raises otherwise.
Probe = Callable[[], Awaitable[None]]

#: The `auto` limiter's rate until SES's first answer, which start-up waits for (or fails).
_AUTO_INITIAL_RATE = 1.0

#: The local limiter's `jitter`: it paces 0.5% below SES_RATE_LIMIT (or the `auto` rate), so
#: that jitter in transit does not put more than the rate + burst into one of SES's seconds
#: (`LocalRateLimiter`'s docstring has the measurement). The Redis limiter keeps its own
#: default, 10 ms a second (1%), for the jitter between replicas, which covers transit's too.
PACING_JITTER = 0.005


async def build_limiter(
    config: RelayConfig, stack: contextlib.AsyncExitStack, probes: dict[str, Probe]
) -> tuple[RateLimiter, Callable[[], None] | None]:
    """The send-rate limiter (Redis-shared when REDIS_URL is set, SES-driven when `auto`) and,
    with `auto`, the hook that tells it SES reported the daily quota used up."""
    rate = config.rate_limit if config.rate_limit is not None else _AUTO_INITIAL_RATE
    limiter: Any
    if config.redis_url:
        from ses_core.ratelimit.redis import DegradeToLocal, FailClosed, RedisRateLimiter

        policy: DegradeToLocal | FailClosed = (
            DegradeToLocal(fraction=1.0 / config.replicas) if config.redis_degrade else FailClosed()
        )
        limiter = RedisRateLimiter.from_url(
            config.redis_url,
            key=config.redis_key,
            rate=rate,
            burst=config.rate_burst,
            on_unavailable=policy,
        )
        stack.push_async_callback(limiter.aclose)
        probes["redis"] = _redis_probe(config.redis_url, stack)
    else:
        limiter = LocalRateLimiter(rate, config.rate_burst, jitter=PACING_JITTER)
    if config.rate_limit is not None:
        return limiter, None
    from ses_core.errors import SesQuotaUnavailable
    from ses_core.ratelimit.ses_quota import QuotaGuardedLimiter, SendQuotaPoller

    sesv2, ses = ses_quota_clients(config)
    region = sesv2.meta.region_name
    poller = SendQuotaPoller(limiter, sesv2_client=sesv2, ses_client=ses)
    try:
        await poller.start()
    except SesQuotaUnavailable as exc:
        message = (
            f"SES_RATE_LIMIT: `auto` could not read the SES quota in {region}: {exc} "
            "(or set SES_RATE_LIMIT to the account's rate)"
        )
        raise ConfigError(message) from None
    stack.push_async_callback(poller.stop)
    guarded = QuotaGuardedLimiter(limiter, poller)
    source = poller.quota.source if poller.quota else "SES"
    log.info("SES_RATE_LIMIT=auto: %.3g/s from %s in %s", guarded.rate, source, region)
    return guarded, poller.report_exhausted


def ses_quota_clients(config: RelayConfig) -> tuple[Any, Any]:
    """The SES v2 and v1 clients `auto` reads the quota with: short timeouts, one retry, and the
    region `relay.upstream.ses_region` picks (RELAY_SES_REGION, AWS_SMTP_HOST's, boto3's)."""
    from ses_core.ratelimit.ses_quota import ses_api_clients

    region = ses_region(config)
    return with_region(lambda: ses_api_clients(region), "SES_RATE_LIMIT=auto")


def _redis_probe(url: str, stack: contextlib.AsyncExitStack) -> Probe:
    """A PING on a client of its own, with short timeouts (the limiter's may wait longer)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    stack.push_async_callback(client.aclose)

    async def redis_ready() -> None:
        await client.ping()

    return redis_ready


def with_region(make: Callable[[], T], needed_for: str) -> T:
    """`make()` (a boto3 client maker), boto3's missing-region error made a one-line
    `ConfigError`."""
    import botocore.exceptions

    try:
        return make()
    except botocore.exceptions.NoRegionError:
        message = f"AWS_DEFAULT_REGION: no AWS region configured (needed for {needed_for})"
        raise ConfigError(message) from None


async def build_sender(
    config: RelayConfig,
    stack: contextlib.AsyncExitStack,
    limiter: RateLimiter,
    metrics: RelayMetrics,
) -> MessageSender:
    """The local outbox, the pooled SMTP client (to SES or RELAY_LOCAL_SMTP_URL), or the API's."""
    if config.upstream == "api":
        return await stack.enter_async_context(build_api_sender(config, limiter=limiter))
    if config.local_mode and config.local_smtp_url is None:
        outbox = OutboxSender(config.local_outbox, limiter=limiter)
        stack.push_async_callback(outbox.aclose)
        log.info(
            "LOCAL MODE: no AWS_SMTP_HOST, messages are written to %s (no AWS needed)",
            outbox.directory.resolve(),
        )
        return outbox
    from ses_core.smtp.client import SesSmtpClient

    settings = (
        smtp_settings_from_url(config.local_smtp_url, config)
        if config.local_mode and config.local_smtp_url is not None
        else upstream_settings(config)
    )
    if config.local_mode:
        log.info("LOCAL MODE: no AWS_SMTP_HOST, messages go to %s:%d", settings.host, settings.port)
    client = await stack.enter_async_context(SesSmtpClient(settings, limiter=limiter))
    metrics.watch_pool(lambda: client.stats)
    return client


def smtp_settings_from_url(url: str, config: RelayConfig) -> SmtpSettings:
    """`smtp://[user:pass@]host[:port]` (STARTTLS if offered) or `smtps://` (implicit TLS)."""
    parts = urlsplit(url)
    implicit = parts.scheme == "smtps"
    return SmtpSettings(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (465 if implicit else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit,
        pool_size=config.pool_size,
        max_messages_per_connection=config.max_messages_per_connection,
        max_connection_age=config.max_connection_age,
        timeout=config.upstream_timeout,
        ca_file=config.upstream_ca_file,
    )


def upstream_settings(config: RelayConfig) -> SmtpSettings:
    """The SES endpoint's settings."""
    assert config.upstream_host is not None
    return SmtpSettings(
        host=config.upstream_host,
        port=config.upstream_port,
        username=config.upstream_username,
        password=config.upstream_password,
        pool_size=config.pool_size,
        max_messages_per_connection=config.max_messages_per_connection,
        max_connection_age=config.max_connection_age,
        timeout=config.upstream_timeout,
        ca_file=config.upstream_ca_file,
        local_hostname=config.server_fqdn,
    )
