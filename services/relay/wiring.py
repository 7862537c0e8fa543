"""The one wiring point: build the relay's collaborators (limiter, sender, blacklist, AUTH) from
its configuration, and close them in order. Everything else receives them ready-made, so tests
can hand the server fakes instead."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from relay.auth import AuthThrottle, CredentialChecker, DynamoDBApiKeys
from relay.config import ConfigError, RelayConfig
from relay.metrics import RelayMetrics
from relay.outbox import OutboxSender
from relay.tls import server_context
from ses_core.blacklist.model import Blacklist
from ses_core.ratelimit.local import LocalRateLimiter, RateLimiter
from ses_core.smtp.client import MessageSender, SesSmtpClient, SmtpSettings

log = logging.getLogger(__name__)

#: Rate used by `SES_RATE_LIMIT=auto` until SES answers: the sandbox rate, never too fast.
AUTO_FALLBACK_RATE = 1.0

ReadyCheck = Callable[[], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]


@attrs.define
class Components:
    """What a relay runs with.

    Attributes:
        sender: delivers messages (pooled SES client, local outbox, or an SMTP URL).
        blacklist: recipients to refuse, or None when the blacklist is off.
        credentials: AUTH checker (may have no source: AUTH off).
        auth_throttle: per-peer AUTH failure delays and bans.
        on_daily_quota: called when SES says the daily quota is used up (the `auto` poller).
        tls_context: the listener's certificate, or None.
        metrics: the relay's metrics registry.
        ready_checks: named probes for `/readyz`.
        closers: called in reverse order on shutdown.
    """

    sender: MessageSender
    blacklist: Blacklist | None = None
    credentials: CredentialChecker = attrs.field(factory=CredentialChecker)
    auth_throttle: AuthThrottle = attrs.field(factory=AuthThrottle)
    on_daily_quota: Callable[[], None] | None = None
    tls_context: ssl.SSLContext | None = None
    metrics: RelayMetrics = attrs.field(factory=RelayMetrics)
    ready_checks: dict[str, ReadyCheck] = attrs.field(factory=dict)
    closers: list[Closer] = attrs.field(factory=list)

    async def aclose(self) -> None:
        """Close the sender and everything registered in `closers` (last in, first out)."""
        for closer in reversed([self.sender.aclose, *self.closers]):
            try:
                await closer()
            except (OSError, RuntimeError, ConnectionError) as exc:
                # Shutdown continues past one failing close; the failure is logged in full.
                log.warning("error while closing %r", closer, exc_info=exc)


async def build_limiter(
    config: RelayConfig,
    closers: list[Closer],
    checks: dict[str, ReadyCheck],
    hooks: dict[str, Callable[[], None]] | None = None,
) -> RateLimiter:
    """The send-rate limiter: Redis-shared when REDIS_URL is set, SES-driven when `auto`."""
    rate = config.rate_limit if config.rate_limit is not None else AUTO_FALLBACK_RATE
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
        closers.append(limiter.aclose)
        import redis.asyncio

        probe = redis.asyncio.Redis.from_url(
            config.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        closers.append(probe.aclose)

        async def redis_ready() -> None:
            await probe.ping()

        checks["redis"] = redis_ready
    else:
        limiter = LocalRateLimiter(rate, config.rate_burst)
    if config.rate_limit is None:
        from ses_core.ratelimit.ses_quota import QuotaGuardedLimiter, SendQuotaPoller

        poller = SendQuotaPoller(
            limiter,
            fallback_rate=AUTO_FALLBACK_RATE,
            sesv2_client=aws_client("sesv2"),
            ses_client=aws_client("ses"),
        )
        await poller.start()
        closers.append(poller.stop)
        if hooks is not None:
            hooks["on_daily_quota"] = poller.report_exhausted
        limiter = QuotaGuardedLimiter(limiter, poller)
        log.info(
            "SES_RATE_LIMIT=auto: rate %.2f/s from SES (fallback %.1f/s)",
            limiter.rate,
            AUTO_FALLBACK_RATE,
        )
    return limiter


def aws_client(service: str) -> Any:
    """A boto3 client from the default chain; no region becomes a one-line `ConfigError`."""
    import boto3
    import botocore.exceptions

    try:
        return boto3.client(service)
    except botocore.exceptions.NoRegionError:
        message = f"AWS_DEFAULT_REGION: no AWS region configured (needed for {service})"
        raise ConfigError(message) from None


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


def build_blacklist(
    config: RelayConfig, closers: list[Closer], checks: dict[str, ReadyCheck]
) -> Blacklist | None:
    """SQLite when RELAY_BLACKLIST_SQLITE (or local mode), DynamoDB with USE_BLACKLIST; cached."""
    from ses_core.blacklist.cache import CachedBlacklist

    inner: Any
    if config.blacklist_sqlite is not None:
        from ses_core.blacklist.sqlite import SqliteBlacklist

        inner = SqliteBlacklist(config.blacklist_sqlite)

        async def close_sqlite() -> None:
            inner.close()

        closers.append(close_sqlite)
    elif config.use_blacklist and config.dynamodb_table:
        from ses_core.blacklist.dynamodb import DynamoDBBlacklist

        try:
            inner = DynamoDBBlacklist.from_table_name(config.dynamodb_table)
        except ValueError:
            message = "AWS_DEFAULT_REGION: no AWS region configured (needed for DYNAMODB_TABLE)"
            raise ConfigError(message) from None
        probe = inner
        # The probe gets its own thread: queued behind RCPT lookups in the loop's small default
        # executor, it would time out whenever DynamoDB is merely slow, and /readyz would then
        # take every replica out of service for a slowdown.
        probe_executor = ThreadPoolExecutor(1, thread_name_prefix="dynamodb-probe")

        async def dynamodb_ready() -> None:
            # example.com, not .invalid: the address parser refuses special-use domains.
            address = ["readiness-probe@example.com"]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(probe_executor, probe.lookup_many, address)

        async def close_probe() -> None:
            probe_executor.shutdown(wait=False, cancel_futures=True)

        checks["dynamodb"] = dynamodb_ready
        closers.append(close_probe)
    else:
        return None
    return CachedBlacklist(
        inner,
        positive_ttl=config.blacklist_cache_blacklisted_ttl,
        negative_ttl=config.blacklist_cache_ttl,
        max_entries=config.blacklist_cache_max_entries,
    )


async def build_components(
    config: RelayConfig, *, metrics: RelayMetrics | None = None
) -> Components:
    """Build everything `config` asks for (see the module docstring)."""
    metrics = metrics or RelayMetrics()
    closers: list[Closer] = []
    checks: dict[str, ReadyCheck] = {}
    tls_context = None
    if config.tls_cert_path is not None and config.tls_key_path is not None:
        tls_context = server_context(config.tls_cert_path, config.tls_key_path)
    try:
        hooks: dict[str, Callable[[], None]] = {}
        limiter = await build_limiter(config, closers, checks, hooks)
        blacklist = build_blacklist(config, closers, checks)
        api_keys = None
        if config.use_apikey and config.api_keys_table:
            api_keys = DynamoDBApiKeys(config.api_keys_table, client=aws_client("dynamodb"))
            key_store = api_keys

            async def api_keys_ready() -> None:
                await asyncio.to_thread(key_store.check)

            checks["api_keys"] = api_keys_ready
        credentials = CredentialChecker(
            users=config.auth_users, api_keys=api_keys, cache_ttl=config.auth_cache_ttl
        )
        sender: Any
        if config.local_mode and config.local_smtp_url is None:
            sender = OutboxSender(config.local_outbox, limiter=limiter)
            log.info(
                "LOCAL MODE: no AWS_SMTP_HOST, messages are written to %s (no AWS needed)",
                sender.directory.resolve(),
            )
        else:
            settings = (
                smtp_settings_from_url(config.local_smtp_url, config)
                if config.local_mode and config.local_smtp_url is not None
                else upstream_settings(config)
            )
            if config.local_mode:
                log.info(
                    "LOCAL MODE: no AWS_SMTP_HOST, messages go to %s:%d",
                    settings.host,
                    settings.port,
                )
            sender = SesSmtpClient(settings, limiter=limiter)
            await sender.__aenter__()
            metrics.watch_pool(lambda: sender.stats)
        checks["upstream"] = sender.check
    except BaseException:
        for closer in reversed(closers):
            await closer()
        raise
    if blacklist is not None and hasattr(blacklist, "stats"):
        cached = blacklist
        metrics.watch_cache(lambda: cached.stats)
    return Components(
        sender=sender,
        blacklist=blacklist,
        credentials=credentials,
        tls_context=tls_context,
        metrics=metrics,
        ready_checks=checks,
        closers=closers,
        on_daily_quota=hooks.get("on_daily_quota"),
    )
