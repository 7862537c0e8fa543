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

import contextlib
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

import attrs

from relay.access import AccessPolicy
from relay.auth import AuthThrottle, CredentialVerifier
from relay.config import RelayConfig
from relay.handler import RelayHandler
from relay.metrics import RelayMetrics
from relay.ses_account import watch_ses_account
from relay.session import OpenSessions, SessionPolicy
from relay.session_auth import SessionAuth
from relay.sns_http import SnsHttpServer, build_sns_endpoint
from relay.tls import server_context
from relay.wiring_queue import Delivery, RunnerFactory, build_delivery
from relay.wiring_stores import api_key_table, build_blacklist
from relay.wiring_upstream import (
    Probe,
    build_limiter,
    build_sender,
    ses_quota_clients,
    smtp_settings_from_url,
    upstream_settings,
)
from ses_core.blacklist import BlacklistReader
from ses_core.smtp import MessageSender

__all__ = [
    "LOOKUP_THREADS",
    "Components",
    "Delivery",
    "Probe",
    "api_key_table",
    "build_blacklist",
    "build_components",
    "build_handler",
    "build_limiter",
    "build_session_policy",
    "ses_quota_clients",
    "smtp_settings_from_url",
    "upstream_settings",
]

log = logging.getLogger(__name__)

#: Threads for blacklist lookups that must block: a locked SQLite file, or a reader without a
#: batcher (DynamoDB lookups go through the batcher's own threads). Kept apart from the loop's
#: default executor so that slow lookups never queue outbox writes and API-key lookups.
LOOKUP_THREADS = 32


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
        delivery: the spool and its delivery workers (`relay.wiring_queue`), or None (built by
            hand: direct delivery, deferred recipients only logged).
        advisory_probes: names in `probes` whose failure `/readyz` reports without turning
            unready (the upstream in queue mode: the queue absorbs an SES outage; the spool in
            direct mode, where it only holds deferred leftovers).
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
    delivery: Delivery | None = None
    advisory_probes: frozenset[str] = frozenset()
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
    config: RelayConfig,
    *,
    metrics: RelayMetrics | None = None,
    make_runner: RunnerFactory | None = None,
    delivery_process: bool = False,
) -> Components:
    """Build everything `config` asks for (see the module docstring); `make_runner` replaces
    the queue's delivery workers (tests); `delivery_process` runs them in a child process in
    queue mode (`relay.delivery_process`: what `relay.main` does; tests keep them in-process)."""
    for unknown in config.unknown_variables:
        log.warning("%s", unknown.message)
    metrics = metrics or RelayMetrics()
    probes: dict[str, Probe] = {}
    tls_context = None
    if config.tls_cert_path is not None and config.tls_key_path is not None:
        tls_context = server_context(config.tls_cert_path, config.tls_key_path)
    async with contextlib.AsyncExitStack() as stack:
        limiter, on_daily_quota = await build_limiter(config, stack, probes)
        # With `auto`, a paused SES account is shown in /readyz and /metrics, never unready.
        ses_advisory = watch_ses_account(limiter, metrics.registry, probes)
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
        sender = await build_sender(config, stack, limiter, metrics)
        probes["upstream"] = sender.probe
        delivery = await build_delivery(
            config,
            stack,
            sender=sender,
            blacklist=blacklist,
            metrics=metrics,
            probes=probes,
            make_runner=make_runner,
            delivery_process=delivery_process,
        )
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
            delivery=delivery,
            # The queue absorbs an SES outage: a queueing relay stays ready while it can accept.
            # A direct relay answers from SES, and its spool holds only deferred leftovers.
            advisory_probes=frozenset({"upstream" if delivery.queue_mode else "spool"})
            | ses_advisory
            | (frozenset({"delivery_worker"}) & probes.keys()),  # the queue absorbs it too
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
        delivery=components.delivery,
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
