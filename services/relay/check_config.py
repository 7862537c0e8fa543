"""`relay check-config`: validate the environment as start-up does and show the effective settings.

An operator runs it before (re)starting a deployment: the same `ConfigError` line the relay would
stop with (exit 2), or every setting as the relay will use it, one `NAME=value` line each, with
secrets masked: the SES SMTP password, the password hashes of `RELAY_AUTH_USERS` and any password
inside `REDIS_URL` or `RELAY_LOCAL_SMTP_URL` become `****`. A `RELAY_*` name the relay does not
know is warned about on stderr, as at start. Nothing is contacted (no SES, Redis or DynamoDB
call): the check is safe on a production host and answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from relay import variables as v
from relay import variables_queue as q
from relay.access import refuse_open_relay
from relay.config import ConfigError, RelayConfig
from relay.queue_settings import SqsSettings, describe_size
from relay.sns_http import sns_server_context
from relay.spool_check import check_spool
from relay.tls import server_context

MASK = "****"

Show = Callable[[RelayConfig], object]


def mask_url(url: str | None) -> str | None:
    """`url` with the password of its user part (if any) replaced by `****`."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}{port}"))


def describe_blacklist(config: RelayConfig) -> str:
    """The blacklist store the relay will read (as `relay.wiring` logs it at start)."""
    if config.blacklist_sqlite is not None:
        return f"SQLite file {config.blacklist_sqlite}"
    if config.use_blacklist and config.dynamodb_table:
        return f"DynamoDB table {config.dynamodb_table}"
    return "off"


def _seconds(value: float) -> str:
    return f"{value:g}"


def _off(value: object) -> object:
    return "(none)" if value is None or value == () or value == "" else value


def _sqs(config: RelayConfig) -> SqsSettings:
    """The shared spool's settings; with another spool, their defaults (no queue, no bucket)."""
    return config.queue.sqs or SqsSettings(queue_url="", bucket="")


def _no_spool_dir(config: RelayConfig) -> str:
    return "(unused: SQS spool)" if config.queue.sqs else "(in memory)"


#: How each variable's effective value is read back from the configuration.
_SHOWN: dict[str, Show] = {
    v.SMTP_HOST.name: lambda c: c.listen_host,
    v.SMTP_PORT.name: lambda c: c.listen_port,
    v.AWS_SMTP_HOST.name: lambda c: c.upstream_host or "(unset: local mode)",
    v.AWS_SMTP_PORT.name: lambda c: c.upstream_port,
    v.AWS_SMTP_USERNAME.name: lambda c: _off(c.upstream_username),
    v.AWS_SMTP_PASSWORD.name: lambda c: MASK if c.upstream_password else "(none)",
    v.SES_RATE_LIMIT.name: lambda c: "auto" if c.rate_limit is None else f"{c.rate_limit:g}",
    v.USE_BLACKLIST.name: lambda c: c.use_blacklist,
    v.DYNAMODB_TABLE.name: lambda c: _off(c.dynamodb_table),
    v.USE_APIKEY.name: lambda c: c.use_apikey,
    v.DYNAMODB_API_KEYS_TABLE.name: lambda c: _off(c.api_keys_table),
    v.ENABLE_SSL.name: lambda c: c.implicit_tls,
    v.SSL_CERT_PATH.name: lambda c: _off(c.tls_cert_path),
    v.SSL_KEY_PATH.name: lambda c: _off(c.tls_key_path),
    v.SERVER_FQDN.name: lambda c: c.server_fqdn,
    v.REDIS_URL.name: lambda c: _off(mask_url(c.redis_url)),
    v.RELAY_REDIS_KEY.name: lambda c: c.redis_key,
    v.RELAY_REDIS_UNAVAILABLE.name: lambda c: "degrade" if c.redis_degrade else "fail",
    v.RELAY_REPLICAS.name: lambda c: c.replicas,
    v.RELAY_RATE_BURST.name: lambda c: c.rate_burst,
    v.RELAY_MAX_WAIT.name: lambda c: f"{c.max_wait:g}",
    v.RELAY_ALLOWED_NETWORKS.name: lambda c: ",".join(map(str, c.allowed_networks)) or "(any)",
    v.RELAY_ALLOWED_SENDER_DOMAINS.name: lambda c: ",".join(c.allowed_sender_domains) or "(any)",
    v.RELAY_BOUNCE_FROM.name: lambda c: _off(c.bounce_from),
    v.RELAY_AUTH_USERS.name: lambda c: _off(",".join(f"{u}:{MASK}" for u, _ in c.auth_users)),
    v.RELAY_AUTH_REQUIRED.name: lambda c: c.auth_required,
    v.RELAY_AUTH_CACHE_TTL.name: lambda c: f"{c.auth_cache_ttl:g}",
    v.RELAY_ALLOW_OPEN_RELAY.name: lambda c: c.allow_open_relay,
    v.RELAY_BLACKLIST_MODE.name: lambda c: "drop" if c.blacklist_drop else "refuse",
    v.RELAY_BLACKLIST_SQLITE.name: lambda c: _off(c.blacklist_sqlite),
    v.RELAY_BLACKLIST_CACHE_TTL.name: lambda c: f"{c.blacklist_cache_ttl:g}",
    v.RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL.name: lambda c: _seconds(
        c.blacklist_cache_blacklisted_ttl
    ),
    v.RELAY_BLACKLIST_CACHE_MAX_ENTRIES.name: lambda c: c.blacklist_cache_max_entries,
    v.RELAY_LOCAL_OUTBOX.name: lambda c: c.local_outbox,
    v.RELAY_LOCAL_SMTP_URL.name: lambda c: _off(mask_url(c.local_smtp_url)),
    v.RELAY_UPSTREAM.name: lambda c: c.upstream,
    v.RELAY_SES_REGION.name: lambda c: c.ses_region or "(AWS_REGION / AWS_DEFAULT_REGION)",
    v.RELAY_CONFIGURATION_SET.name: lambda c: _off(c.configuration_set),
    v.RELAY_POOL_SIZE.name: lambda c: c.pool_size,
    v.RELAY_MAX_MESSAGES_PER_CONNECTION.name: lambda c: c.max_messages_per_connection,
    v.RELAY_MAX_CONNECTION_AGE.name: lambda c: f"{c.max_connection_age:g}",
    v.RELAY_UPSTREAM_TIMEOUT.name: lambda c: f"{c.upstream_timeout:g}",
    v.RELAY_UPSTREAM_CA_FILE.name: lambda c: c.upstream_ca_file or "(system CAs)",
    q.RELAY_DELIVERY.name: lambda c: c.queue.delivery,
    q.RELAY_SPOOL.name: lambda c: c.queue.spool,
    q.RELAY_SPOOL_DIR.name: lambda c: c.queue.spool_dir or _no_spool_dir(c),
    q.RELAY_SPOOL_MIN_FREE.name: lambda c: describe_size(c.queue.min_free_bytes),
    q.RELAY_SQS_QUEUE_URL.name: lambda c: _off(_sqs(c).queue_url),
    q.RELAY_S3_BUCKET.name: lambda c: _off(_sqs(c).bucket),
    q.RELAY_S3_PREFIX.name: lambda c: _sqs(c).prefix,
    q.RELAY_SQS_VISIBILITY_TIMEOUT.name: lambda c: _sqs(c).visibility_timeout,
    q.RELAY_QUEUE_MAX_MESSAGES.name: lambda c: c.queue.max_messages,
    q.RELAY_QUEUE_LIFETIME.name: lambda c: f"{c.queue.lifetime:g}",
    q.RELAY_QUEUE_WORKERS.name: lambda c: c.queue.workers,
    q.RELAY_QUEUE_ATTEMPT_TIMEOUT.name: lambda c: f"{c.queue.attempt_timeout:g}",
    v.RELAY_MAX_MESSAGE_SIZE.name: lambda c: c.max_message_size,
    v.RELAY_MAX_RECIPIENTS.name: lambda c: c.max_recipients,
    v.RELAY_SESSION_TIMEOUT.name: lambda c: f"{c.session_timeout:g}",
    v.RELAY_JUNK_COMMAND_LIMIT.name: lambda c: c.junk_command_limit,
    v.RELAY_GRACE_PERIOD.name: lambda c: f"{c.grace_period:g}",
    v.RELAY_METRICS_HOST.name: lambda c: c.metrics_host,
    v.RELAY_METRICS_PORT.name: lambda c: "off" if c.metrics_port is None else c.metrics_port,
    v.RELAY_SNS_LISTEN.name: lambda c: "off" if c.sns is None else f"{c.sns.host}:{c.sns.port}",
    v.RELAY_SNS_CERT_PATH.name: lambda c: _off(c.sns and c.sns.cert_path),
    v.RELAY_SNS_KEY_PATH.name: lambda c: _off(c.sns and c.sns.key_path),
    v.RELAY_SNS_TOPIC_ARNS.name: lambda c: _off(c.sns and ",".join(sorted(c.sns.topic_arns))),
    v.RELAY_LOG_LEVEL.name: lambda c: c.log_level,
    v.RELAY_LOG_FORMAT.name: lambda c: "json" if c.log_json else "text",
}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def effective_settings(config: RelayConfig) -> list[tuple[str, str]]:
    """(name, value) for every variable, in the README's order, secrets masked. A variable this
    module does not know yet is shown as `(not shown)`: never its value, which may be secret."""
    return [
        (
            variable.name,
            _text(_SHOWN[variable.name](config)) if variable.name in _SHOWN else "(not shown)",
        )
        for variable in v.VARIABLES
    ]


def validate(environ: Mapping[str, str]) -> RelayConfig:
    """What start-up checks before it contacts anything; raise `ConfigError` on the first fault."""
    config = RelayConfig.from_environ(environ)
    refuse_open_relay(config)
    if config.tls_cert_path is not None and config.tls_key_path is not None:
        server_context(config.tls_cert_path, config.tls_key_path)
    if config.sns is not None:
        sns_server_context(config.sns)
    return config


def check_config(environ: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """Validate `environ`; print the summary and the settings (0) or the error line (2)."""
    try:
        config = validate(environ)
        spool, spool_warnings = check_spool(config.queue)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    mode = "local mode" if config.local_mode else f"upstream {config.upstream_host}"
    for unknown in config.unknown_variables:  # a typo is valid, but the relay ignores it
        print(f"warning: {unknown.message}", file=sys.stderr)
    for warning in spool_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    lines = [
        f"configuration ok: {mode}, blacklist {describe_blacklist(config)},"
        f" delivery {config.queue.delivery}, {spool}"
    ]
    lines += [f"{name}={value}" for name, value in effective_settings(config)]
    # One write: a reader that stops early (`| head`) then costs no broken-pipe traceback.
    out.write("\n".join(lines) + "\n")
    out.flush()
    return 0
