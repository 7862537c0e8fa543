"""The one place where the relay's configuration turns into objects.

`build_components(config)` makes the collaborators (limiter, sender, blacklist, AUTH sources,
TLS context, readiness probes); one `AsyncExitStack` owns everything among them that must be
closed (connection pools, Redis clients, the SES quota poller, the blacklist store and the
threads that read it) and closes it last-in, first-out. `build_handler` and
`build_session_policy` make the SMTP handler and the sessions' policy from the configuration and
those components. Everything else receives its objects ready-made, so tests can hand the server
fakes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import attrs

from relay.access import AccessPolicy
from relay.auth import AuthThrottle, CredentialVerifier, DynamoDBApiKeys
from relay.config import BOTH_BLACKLIST_STORES, ConfigError, RelayConfig
from relay.handler import RelayHandler
from relay.metrics import RelayMetrics
from relay.outbox import OutboxSender
from relay.session import OpenSessions, SessionPolicy
from relay.session_auth import SessionAuth
from relay.sns_http import SnsHttpServer, build_sns_endpoint
from relay.tls import server_context
from relay.upstream import build_api_sender, ses_region
from ses_core.blacklist import BatchingLookup, BlacklistReader, CachedBlacklist
from ses_core.ratelimit import LocalRateLimiter, RateLimiter
from ses_core.smtp import MessageSender, SmtpSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The `auto` limiter's rate until SES's first answer, which start-up waits for (or fails).
_AUTO_INITIAL_RATE = 1.0
#: Threads for blacklist lookups that must block: a locked SQLite file, or a reader without a
#: batcher (DynamoDB lookups go through the batcher's own threads). Kept apart from the loop's
#: default executor so that slow lookups never queue outbox writes and API-key lookups.
LOOKUP_THREADS = 32

Probe = Callable[[], Awaitable[None]]


def _closing_sender(components: Components) -> contextlib.AsyncExitStack:
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(components.sender.aclose)
    return stack


@attrs.define
class Components:
    """What a relay runs with, and what closes it.

    Attributes:
        sender: delivers messages (pooled SES client, local outbox, or an SMTP URL).
        blacklist: recipients to refuse, or None when the blacklist is off.
        credentials: verifies AUTH credentials (may have no source: AUTH off).
        auth_throttle: per-peer AUTH failure delays and bans.
        on_daily_quota: called when SES says the daily quota is used up (the `auto` poller).
        tls_context: the listener's certificate, or None.
        metrics: the relay's metrics registry.
        probes: named readiness probes for `/readyz`.
        lookup_executor: threads for blacklist lookups that may block (None: the loop's default
            executor).
        sns_endpoint: the SNS HTTPS endpoint writing to `blacklist` (RELAY_SNS_LISTEN), or None.
        resources: owns what must be closed; by default just the sender.
    """

    sender: MessageSender
    blacklist: BlacklistReader | None = None
    credentials: CredentialVerifier = attrs.field(factory=CredentialVerifier)
    auth_throttle: AuthThrottle = attrs.field(factory=AuthThrottle)
    on_daily_quota: Callable[[], None] | None = None
    tls_context: ssl.SSLContext | None = None
    metrics: RelayMetrics = attrs.field(factory=RelayMetrics)
    probes: dict[str, Probe] = attrs.field(factory=dict)
    lookup_executor: Executor | None = None
    sns_endpoint: SnsHttpServer | None = None
    resources: contextlib.AsyncExitStack = attrs.field(
        default=attrs.Factory(_closing_sender, takes_self=True)
    )

    async def aclose(self) -> None:
        """Close everything in `resources`, last in first out; a failing close is logged and the
        others still run."""
        try:
            await self.resources.aclose()
        except (OSError, RuntimeError, ConnectionError) as exc:
            log.warning("error while closing the relay's resources", exc_info=exc)


async def build_components(
    config: RelayConfig, *, metrics: RelayMetrics | None = None
) -> Components:
    """Build everything `config` asks for (see the module docstring)."""
    for unknown in config.unknown_variables:
        log.warning("%s", unknown.message)
    metrics = metrics or RelayMetrics()
    probes: dict[str, Probe] = {}
    tls_context = None
    if config.tls_cert_path is not None and config.tls_key_path is not None:
        tls_context = server_context(config.tls_cert_path, config.tls_key_path)
    async with contextlib.AsyncExitStack() as stack:
        limiter, on_daily_quota = await build_limiter(config, stack, probes)
        blacklist = build_blacklist(config, stack, probes)
        lookup_executor = None
        if blacklist is not None:
            lookup_executor = ThreadPoolExecutor(
                LOOKUP_THREADS, thread_name_prefix="blacklist-lookup"
            )
            stack.callback(lookup_executor.shutdown, wait=False, cancel_futures=True)
            cache = blacklist
            metrics.watch_cache(lambda: cache.stats)
        credentials = CredentialVerifier(
            users=config.auth_users,
            api_keys=api_key_table(config, probes),
            cache_ttl=config.auth_cache_ttl,
        )
        sender = await _build_sender(config, stack, limiter, metrics)
        probes["upstream"] = sender.probe
        components = Components(
            sender=sender,
            blacklist=blacklist,
            credentials=credentials,
            on_daily_quota=on_daily_quota,
            tls_context=tls_context,
            metrics=metrics,
            probes=probes,
            lookup_executor=lookup_executor,
            sns_endpoint=build_sns_endpoint(config.sns, blacklist),
            resources=stack.pop_all(),  # built: from here on the components own it all
        )
    return components


def build_handler(config: RelayConfig, components: Components) -> RelayHandler:
    """The SMTP transaction handler (MAIL, RCPT, DATA) for `config`."""
    return RelayHandler(
        sender=components.sender,
        blacklist=components.blacklist,
        policy=AccessPolicy.from_config(config),
        metrics=components.metrics,
        max_wait=config.max_wait,
        max_recipients=config.max_recipients,
        blacklist_drop=config.blacklist_drop,
        # SES needs a verified identity as envelope sender; local mode keeps `<>` as it came.
        null_sender="" if config.local_mode else config.bounce_from,
        on_daily_quota=components.on_daily_quota,
        lookup_executor=components.lookup_executor,
    )


def build_session_policy(
    config: RelayConfig, components: Components, sessions: OpenSessions
) -> SessionPolicy:
    """What every client session runs with, for `config`."""
    return SessionPolicy(
        hostname=config.server_fqdn,
        starttls_context=None if config.implicit_tls else components.tls_context,
        max_message_size=config.max_message_size,
        idle_timeout=config.session_timeout,
        auth_required=config.auth_required,
        junk_command_limit=config.junk_command_limit,
        access=AccessPolicy.from_config(config),
        auth=SessionAuth(components.credentials, components.auth_throttle, components.metrics),
        metrics=components.metrics,
        sessions=sessions,
    )


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
        limiter = LocalRateLimiter(rate, config.rate_burst)
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
    return _with_region(lambda: ses_api_clients(region), "SES_RATE_LIMIT=auto")


def _redis_probe(url: str, stack: contextlib.AsyncExitStack) -> Probe:
    """A PING on a client of its own, with short timeouts (the limiter's may wait longer)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    stack.push_async_callback(client.aclose)

    async def redis_ready() -> None:
        await client.ping()

    return redis_ready


def _with_region(make: Callable[[], T], needed_for: str) -> T:
    """`make()` (a boto3 client maker), boto3's missing-region error made a one-line
    `ConfigError`."""
    import botocore.exceptions

    try:
        return make()
    except botocore.exceptions.NoRegionError:
        message = f"AWS_DEFAULT_REGION: no AWS region configured (needed for {needed_for})"
        raise ConfigError(message) from None


def build_blacklist(
    config: RelayConfig, stack: contextlib.AsyncExitStack, probes: dict[str, Probe]
) -> CachedBlacklist | None:
    """SQLite when RELAY_BLACKLIST_SQLITE (or local mode), DynamoDB with USE_BLACKLIST (lookups
    batched); cached.
    Never both (`relay.config` refuses that too); the store in use is logged at start."""
    inner: Any
    batcher: BatchingLookup | None = None
    dynamodb = config.use_blacklist and bool(config.dynamodb_table)
    if config.blacklist_sqlite is not None and dynamodb:
        raise ConfigError(BOTH_BLACKLIST_STORES)
    if config.blacklist_sqlite is not None:
        from ses_core.blacklist.sqlite import SqliteBlacklist

        inner = SqliteBlacklist(config.blacklist_sqlite)
        stack.callback(inner.close)
        log.info("blacklist: SQLite file %s", config.blacklist_sqlite)
    elif config.use_blacklist and config.dynamodb_table:
        from ses_core.blacklist.dynamodb import DynamoDBBlacklist

        try:
            inner = DynamoDBBlacklist.from_table_name(config.dynamodb_table)
        except ValueError:
            message = "AWS_DEFAULT_REGION: no AWS region configured (needed for DYNAMODB_TABLE)"
            raise ConfigError(message) from None
        probes["dynamodb"] = _dynamodb_probe(inner, stack)
        # RCPT lookups of all sessions share BatchGetItem calls (ses_core.blacklist.batching).
        batcher = BatchingLookup(inner.lookup_many, store_keys=inner.store_keys)
        stack.push_async_callback(batcher.aclose)
        log.info("blacklist: DynamoDB table %s", config.dynamodb_table)
    else:
        log.info("blacklist: off (set USE_BLACKLIST and DYNAMODB_TABLE to refuse bounced mail)")
        return None
    return CachedBlacklist(
        inner,
        positive_ttl=config.blacklist_cache_blacklisted_ttl,
        negative_ttl=config.blacklist_cache_ttl,
        max_entries=config.blacklist_cache_max_entries,
        batcher=batcher,
    )


def _dynamodb_probe(table: Any, stack: contextlib.AsyncExitStack) -> Probe:
    """A lookup on a thread of its own: queued behind RCPT lookups it would time out whenever
    DynamoDB is merely slow, and /readyz would then take every replica out of service."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="dynamodb-probe")
    stack.callback(executor.shutdown, wait=False, cancel_futures=True)
    # example.com, not .invalid: the address parser refuses special-use domains.
    address = ["readiness-probe@example.com"]

    async def dynamodb_ready() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, table.lookup_many, address)

    return dynamodb_ready


def api_key_table(config: RelayConfig, probes: dict[str, Probe]) -> DynamoDBApiKeys | None:
    """The DynamoDB API-key table with USE_APIKEY (short timeouts: a slow table makes AUTH a
    454, not a hang) and its readiness probe (a GetItem, no DescribeTable); else None."""
    table = config.api_keys_table
    if not (config.use_apikey and table):
        return None
    keys = _with_region(lambda: DynamoDBApiKeys.from_table_name(table), "DYNAMODB_API_KEYS_TABLE")

    async def api_keys_ready() -> None:
        await asyncio.to_thread(keys.probe)

    probes["api_keys"] = api_keys_ready
    return keys


async def _build_sender(
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
