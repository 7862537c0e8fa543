"""The relay's configuration: one frozen value, read once from the environment and validated.

`RelayConfig.from_environ()` checks everything up front and raises `ConfigError` with one line
naming the variable and what is wrong, so a bad deployment stops at start-up instead of failing
on the first message. The variables, their meanings and defaults are defined once, in
`relay.variables`. Secrets (`AWS_SMTP_PASSWORD`, credential hashes, URLs that may embed
passwords) are kept out of the repr and never logged.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import attrs

from relay import variables as v
from relay._env import ConfigError, EnvReader, IPNetwork
from relay.queue_settings import QueueSettings, read_queue_settings
from relay.sns_settings import SnsSettings, read_sns_settings
from relay.variables import ENVIRONMENT_VARIABLES
from ses_core.addresses import EmailAddress
from ses_core.errors import InvalidAddress

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "ConfigError",
    "IPNetwork",
    "RelayConfig",
    "UnknownVariable",
    "unknown_variables",
]

#: The greeting's host name when SERVER_FQDN is unset and the machine has no name.
_FALLBACK_FQDN = "localhost"
_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
#: Two blacklist stores configured: the relay would read only one of them.
BOTH_BLACKLIST_STORES = (
    f"{v.RELAY_BLACKLIST_SQLITE.name}: set together with {v.USE_BLACKLIST.name} and "
    f"{v.DYNAMODB_TABLE.name}; choose one blacklist store (unset {v.RELAY_BLACKLIST_SQLITE.name} "
    "to use the DynamoDB table)"
)


@attrs.frozen
class UnknownVariable:
    """A `RELAY_*` variable in the environment that the relay does not read (a typo, or a
    setting of another version): it would otherwise be ignored without a word.

    Attributes:
        name: the variable as set.
        closest: the known variable whose name is most like it, or None when none is close.
    """

    name: str
    closest: str | None

    @property
    def message(self) -> str:
        """One line for the start-up log and `relay check-config`."""
        hint = f"did you mean {self.closest}?" if self.closest else "no known setting is close"
        return f"{self.name}: not a setting of this relay, ignored ({hint})"


def unknown_variables(environ: Mapping[str, str]) -> list[UnknownVariable]:
    """Every `RELAY_*` name in `environ` that `relay.variables` does not define, in name order.

    Only the `RELAY_` prefix is checked: the relay's other names (`SMTP_HOST`, `AWS_*`, ...) are
    shared with other software, whose variables must not draw warnings."""
    known = [variable.name for variable in v.VARIABLES]
    return [
        UnknownVariable(name, next(iter(difflib.get_close_matches(name, known, n=1)), None))
        for name in sorted(environ)
        if name.startswith("RELAY_") and name not in known
    ]


@attrs.frozen
class RelayConfig:
    """Everything the relay needs, validated.

    Built in code (tests, benchmarks), the defaults are those of the variables except that the
    ops endpoint is off (`metrics_port=None`), local mode opens no SQLite blacklist and the
    greeting names `localhost`.

    Attributes (grouped; see `relay.variables` for meanings and defaults):
        listen_host/listen_port/server_fqdn: the SMTP listener.
        implicit_tls, tls_cert_path, tls_key_path: TLS on the listener (STARTTLS when not implicit).
        upstream: `smtp` (SES SMTP interface) or `api` (SES v2 `SendEmail`, boto3's credentials).
        upstream_*: the SES SMTP endpoint; `upstream_host is None` means local mode (with `smtp`).
        ses_region: RELAY_SES_REGION for the API sender and the quota poller (None: boto3's).
        configuration_set: the API sender's default configuration set.
        rate_limit: recipients per second, `None` for `auto` (read from SES).
        blacklist_cache_ttl: seconds a "not blacklisted" answer is cached;
            blacklist_cache_blacklisted_ttl: the same for "blacklisted" answers;
            blacklist_cache_max_entries: the cache's size bound.
        metrics_port: `None` = endpoint off; `0` = an ephemeral port (tests).
        unknown_variables: `RELAY_*` names set but not read (warned at start).
        sns: the optional SNS HTTPS endpoint (`relay.sns_settings`), None when off.
        queue: delivery mode and spool (`relay.queue_settings`; in code: queue mode, spool in
            memory).
    """

    listen_host: str = v.SMTP_HOST.default
    listen_port: int = v.SMTP_PORT.default
    server_fqdn: str = _FALLBACK_FQDN
    implicit_tls: bool = v.ENABLE_SSL.default
    tls_cert_path: Path | None = v.SSL_CERT_PATH.default
    tls_key_path: Path | None = v.SSL_KEY_PATH.default

    upstream: str = v.RELAY_UPSTREAM.default
    ses_region: str | None = v.RELAY_SES_REGION.default
    configuration_set: str | None = v.RELAY_CONFIGURATION_SET.default
    upstream_host: str | None = v.AWS_SMTP_HOST.default
    upstream_port: int = v.AWS_SMTP_PORT.default
    upstream_username: str | None = v.AWS_SMTP_USERNAME.default
    upstream_password: str | None = attrs.field(default=v.AWS_SMTP_PASSWORD.default, repr=False)
    upstream_ca_file: str | None = v.RELAY_UPSTREAM_CA_FILE.default
    upstream_timeout: float = v.RELAY_UPSTREAM_TIMEOUT.default
    pool_size: int = v.RELAY_POOL_SIZE.default
    max_messages_per_connection: int = v.RELAY_MAX_MESSAGES_PER_CONNECTION.default
    max_connection_age: float = v.RELAY_MAX_CONNECTION_AGE.default

    local_outbox: Path = v.RELAY_LOCAL_OUTBOX.default
    local_smtp_url: str | None = attrs.field(default=v.RELAY_LOCAL_SMTP_URL.default, repr=False)

    rate_limit: float | None = v.SES_RATE_LIMIT.default
    rate_burst: int = v.RELAY_RATE_BURST.default
    redis_url: str | None = attrs.field(default=v.REDIS_URL.default, repr=False)
    redis_key: str = v.RELAY_REDIS_KEY.default
    redis_degrade: bool = v.RELAY_REDIS_UNAVAILABLE.default == "degrade"
    replicas: int = v.RELAY_REPLICAS.default
    max_wait: float = v.RELAY_MAX_WAIT.default

    use_blacklist: bool = v.USE_BLACKLIST.default
    dynamodb_table: str | None = v.DYNAMODB_TABLE.default
    blacklist_sqlite: Path | None = None
    blacklist_drop: bool = v.RELAY_BLACKLIST_MODE.default == "drop"
    blacklist_cache_ttl: float = v.RELAY_BLACKLIST_CACHE_TTL.default
    blacklist_cache_blacklisted_ttl: float = v.RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL.default
    blacklist_cache_max_entries: int = v.RELAY_BLACKLIST_CACHE_MAX_ENTRIES.default

    use_apikey: bool = v.USE_APIKEY.default
    api_keys_table: str | None = v.DYNAMODB_API_KEYS_TABLE.default
    auth_users: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    auth_required: bool = v.RELAY_AUTH_REQUIRED.default
    auth_cache_ttl: float = v.RELAY_AUTH_CACHE_TTL.default

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_sender_domains: tuple[str, ...] = ()
    bounce_from: str | None = v.RELAY_BOUNCE_FROM.default
    allow_open_relay: bool = v.RELAY_ALLOW_OPEN_RELAY.default

    max_message_size: int = v.RELAY_MAX_MESSAGE_SIZE.default
    max_recipients: int = v.RELAY_MAX_RECIPIENTS.default
    session_timeout: float = v.RELAY_SESSION_TIMEOUT.default
    junk_command_limit: int = v.RELAY_JUNK_COMMAND_LIMIT.default
    grace_period: float = v.RELAY_GRACE_PERIOD.default
    metrics_host: str = v.RELAY_METRICS_HOST.default
    metrics_port: int | None = None
    log_level: str = v.RELAY_LOG_LEVEL.default
    log_json: bool = v.RELAY_LOG_FORMAT.default == "json"
    unknown_variables: tuple[UnknownVariable, ...] = ()
    sns: SnsSettings | None = None
    queue: QueueSettings = attrs.field(factory=QueueSettings)

    @property
    def local_mode(self) -> bool:
        """True when no SES endpoint is configured: mail goes to the outbox or a local SMTP URL."""
        return self.upstream == "smtp" and self.upstream_host is None

    @property
    def auth_enabled(self) -> bool:
        """True when some credential source is configured."""
        return bool(self.auth_users) or self.use_apikey

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> RelayConfig:
        """Read and validate the settings; raise `ConfigError` (one line) on the first bad one."""
        env = EnvReader(environ)
        upstream_host = env.text(v.AWS_SMTP_HOST)
        upstream = env.choice(v.RELAY_UPSTREAM, ("smtp", "api"))
        local = upstream == "smtp" and upstream_host is None

        implicit_tls = env.flag(v.ENABLE_SSL)
        cert, key = _tls_files(env)
        if implicit_tls and cert is None:
            raise ConfigError(
                f"{v.ENABLE_SSL.name}: requires {v.SSL_CERT_PATH.name} and {v.SSL_KEY_PATH.name}"
            )

        username, password = env.text(v.AWS_SMTP_USERNAME), env.raw(v.AWS_SMTP_PASSWORD)
        if (username is None) != (password is None):
            missing = v.AWS_SMTP_PASSWORD if password is None else v.AWS_SMTP_USERNAME
            raise ConfigError(
                f"{missing.name}: AWS_SMTP_USERNAME and AWS_SMTP_PASSWORD go together"
            )
        rate = _rate(env, local)

        use_blacklist = env.flag(v.USE_BLACKLIST)
        dynamodb_table = env.text(v.DYNAMODB_TABLE)
        sqlite = _blacklist_sqlite(env, local, dynamodb=use_blacklist and bool(dynamodb_table))
        if use_blacklist and dynamodb_table is None and sqlite is None:
            raise ConfigError(f"{v.DYNAMODB_TABLE.name}: required when USE_BLACKLIST is true")

        use_apikey = env.flag(v.USE_APIKEY)
        api_keys_table = env.text(v.DYNAMODB_API_KEYS_TABLE)
        if use_apikey and api_keys_table is None:
            raise ConfigError(f"{v.DYNAMODB_API_KEYS_TABLE.name}: required when USE_APIKEY is true")
        users = env.auth_users()
        if (users or use_apikey) and cert is None:
            raise ConfigError(
                f"{v.SSL_CERT_PATH.name}: AUTH (RELAY_AUTH_USERS / USE_APIKEY) is only offered "
                "over TLS; set SSL_CERT_PATH and SSL_KEY_PATH"
            )

        blacklist_mode = env.choice(v.RELAY_BLACKLIST_MODE, ("refuse", "drop"))
        when_redis_down = env.choice(v.RELAY_REDIS_UNAVAILABLE, ("fail", "degrade"))
        log_format = env.choice(v.RELAY_LOG_FORMAT, ("json", "text"))
        log_level = env.text(v.RELAY_LOG_LEVEL).upper()
        if log_level not in _LOG_LEVELS:
            raise ConfigError(f"{v.RELAY_LOG_LEVEL.name}: unknown level {log_level!r}")
        metrics_port = _metrics_port(env)
        fqdn = env.text(v.SERVER_FQDN)
        local_smtp_url = env.smtp_url()
        domains = env.domains()

        return cls(
            listen_host=env.text(v.SMTP_HOST),
            listen_port=env.port(v.SMTP_PORT),
            server_fqdn=fqdn or socket.gethostname() or _FALLBACK_FQDN,
            implicit_tls=implicit_tls,
            tls_cert_path=cert,
            tls_key_path=key,
            upstream=upstream,
            ses_region=env.text(v.RELAY_SES_REGION),
            configuration_set=env.text(v.RELAY_CONFIGURATION_SET),
            upstream_host=upstream_host,
            upstream_port=env.port(v.AWS_SMTP_PORT),
            upstream_username=username,
            upstream_password=password,
            upstream_ca_file=env.text(v.RELAY_UPSTREAM_CA_FILE),
            upstream_timeout=env.number(v.RELAY_UPSTREAM_TIMEOUT, minimum=0.1),
            pool_size=env.integer(v.RELAY_POOL_SIZE, minimum=1),
            max_messages_per_connection=env.integer(v.RELAY_MAX_MESSAGES_PER_CONNECTION, minimum=1),
            max_connection_age=env.number(v.RELAY_MAX_CONNECTION_AGE, minimum=1.0),
            local_outbox=env.path(v.RELAY_LOCAL_OUTBOX),
            local_smtp_url=local_smtp_url,
            rate_limit=rate,
            rate_burst=env.integer(v.RELAY_RATE_BURST, minimum=1),
            redis_url=env.text(v.REDIS_URL),
            redis_key=env.text(v.RELAY_REDIS_KEY),
            redis_degrade=when_redis_down == "degrade",
            replicas=env.integer(v.RELAY_REPLICAS, minimum=1),
            max_wait=env.number(v.RELAY_MAX_WAIT, minimum=0.0),
            use_blacklist=use_blacklist,
            dynamodb_table=dynamodb_table,
            blacklist_sqlite=sqlite,
            blacklist_drop=blacklist_mode == "drop",
            blacklist_cache_ttl=env.number(v.RELAY_BLACKLIST_CACHE_TTL, minimum=0.0),
            blacklist_cache_blacklisted_ttl=env.number(
                v.RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL, minimum=0.0
            ),
            blacklist_cache_max_entries=env.integer(v.RELAY_BLACKLIST_CACHE_MAX_ENTRIES, minimum=1),
            use_apikey=use_apikey,
            api_keys_table=api_keys_table,
            auth_users=users,
            auth_required=env.flag(v.RELAY_AUTH_REQUIRED),
            auth_cache_ttl=env.number(v.RELAY_AUTH_CACHE_TTL, minimum=0.0),
            allowed_networks=env.networks(),
            allowed_sender_domains=domains,
            bounce_from=_bounce_from(env, domains),
            allow_open_relay=env.flag(v.RELAY_ALLOW_OPEN_RELAY),
            max_message_size=env.integer(v.RELAY_MAX_MESSAGE_SIZE, minimum=1024),
            max_recipients=env.integer(v.RELAY_MAX_RECIPIENTS, minimum=1),
            session_timeout=env.number(v.RELAY_SESSION_TIMEOUT, minimum=1.0),
            junk_command_limit=env.integer(v.RELAY_JUNK_COMMAND_LIMIT, minimum=1),
            grace_period=env.number(v.RELAY_GRACE_PERIOD, minimum=0.0),
            metrics_host=env.text(v.RELAY_METRICS_HOST),
            metrics_port=metrics_port,
            log_level=log_level,
            log_json=log_format == "json",
            unknown_variables=tuple(unknown_variables(environ)),
            sns=read_sns_settings(environ),
            queue=read_queue_settings(environ),
        )


def _tls_files(env: EnvReader) -> tuple[Path | None, Path | None]:
    """SSL_CERT_PATH and SSL_KEY_PATH: both or neither, and both existing files."""
    cert, key = env.path(v.SSL_CERT_PATH), env.path(v.SSL_KEY_PATH)
    if (cert is None) != (key is None):
        missing = v.SSL_KEY_PATH if key is None else v.SSL_CERT_PATH
        raise ConfigError(
            f"{missing.name}: required when the other of SSL_CERT_PATH/SSL_KEY_PATH is set"
        )
    for variable, path in ((v.SSL_CERT_PATH, cert), (v.SSL_KEY_PATH, key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{variable.name}: no such file: {path}")
    return cert, key


def _blacklist_sqlite(env: EnvReader, local: bool, *, dynamodb: bool) -> Path | None:
    """RELAY_BLACKLIST_SQLITE when set, its default file only in local mode with no DynamoDB
    table: one store, chosen explicitly. Both set is an error, since one would be ignored."""
    explicit = env.is_set(v.RELAY_BLACKLIST_SQLITE)
    if explicit and dynamodb:
        raise ConfigError(BOTH_BLACKLIST_STORES)
    return env.path(v.RELAY_BLACKLIST_SQLITE) if explicit or (local and not dynamodb) else None


def _rate(env: EnvReader, local: bool) -> float | None:
    """SES_RATE_LIMIT: a number, or `auto` (None: read from SES), which is the default unless in
    local mode."""
    if not env.is_set(v.SES_RATE_LIMIT):
        return v.SES_RATE_LIMIT.default if local else None
    if str(env.text(v.SES_RATE_LIMIT)).lower() == "auto":
        if local:
            message = (
                f"{v.SES_RATE_LIMIT.name}: `auto` reads the SES account; it needs AWS_SMTP_HOST"
                " or RELAY_UPSTREAM=api"
            )
            raise ConfigError(message)
        return None
    return env.number(v.SES_RATE_LIMIT, minimum=0.001)


def _bounce_from(env: EnvReader, domains: tuple[str, ...]) -> str | None:
    """RELAY_BOUNCE_FROM: an address, in RELAY_ALLOWED_SENDER_DOMAINS when that list is set (the
    relay sends as it, so the allowlist's promise holds for null-sender mail too)."""
    value = env.text(v.RELAY_BOUNCE_FROM)
    if value is None:
        return None
    try:
        address = EmailAddress.parse(value)
    except InvalidAddress as exc:
        raise ConfigError(f"{v.RELAY_BOUNCE_FROM.name}: not an address: {exc}") from None
    if domains and address.ascii_domain not in domains:
        message = (
            f"{v.RELAY_BOUNCE_FROM.name}: domain {address.ascii_domain} is not in "
            f"{v.RELAY_ALLOWED_SENDER_DOMAINS.name}"
        )
        raise ConfigError(message)
    return value


def _metrics_port(env: EnvReader) -> int | None:
    """RELAY_METRICS_PORT: a port, or `0`/`off` for no ops endpoint."""
    if str(env.text(v.RELAY_METRICS_PORT)).lower() in {"0", "off"}:
        return None
    return env.port(v.RELAY_METRICS_PORT)
