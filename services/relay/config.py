"""The relay's configuration, read once from environment variables.

Every variable of the original service keeps its meaning; new settings carry a `RELAY_` prefix.
`ENVIRONMENT_VARIABLES` below is the single table of them (name, meaning, default, example): the
README copies it. `RelayConfig.from_environ()` validates everything up front and raises
`ConfigError` with one line naming the variable and what is wrong, so a bad deployment stops at
start-up instead of failing on the first message. Secrets (`AWS_SMTP_PASSWORD`, credential
hashes, URLs that may embed passwords) are excluded from the repr and never logged.

AWS credentials and region (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
`AWS_ENDPOINT_URL`, instance roles, ...) are not read here: boto3's normal chain reads them when a
DynamoDB or SES client is created.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

#: (name, meaning, default, example) for every variable the relay reads. Copied into the README.
ENVIRONMENT_VARIABLES: Final[tuple[tuple[str, str, str, str], ...]] = (
    # --- variables of the original service (same meaning) ---
    ("SMTP_HOST", "Address the relay listens on.", "127.0.0.1", "0.0.0.0"),
    ("SMTP_PORT", "Port the relay listens on.", "1025", "2525"),
    (
        "AWS_SMTP_HOST",
        "SES SMTP endpoint. Unset = local mode (outbox directory, no AWS needed).",
        "(unset: local mode)",
        "email-smtp.eu-west-1.amazonaws.com",
    ),
    ("AWS_SMTP_PORT", "SES SMTP port (465/2465 = implicit TLS, else STARTTLS).", "587", "465"),
    ("AWS_SMTP_USERNAME", "SES SMTP user name (an IAM access key id).", "(none)", "AKIA..."),
    ("AWS_SMTP_PASSWORD", "SES SMTP password (secret; never logged).", "(none)", "BPk3..."),
    (
        "SES_RATE_LIMIT",
        "Send rate in recipients per second, or `auto` to read the account's SES MaxSendRate.",
        "auto (AWS mode), 10 (local mode)",
        "14",
    ),
    (
        "USE_BLACKLIST",
        "Refuse blacklisted recipients (DynamoDB table DYNAMODB_TABLE).",
        "false",
        "true",
    ),
    ("DYNAMODB_TABLE", "DynamoDB blacklist table (with USE_BLACKLIST).", "(none)", "ses-blacklist"),
    ("USE_APIKEY", "Accept AUTH credentials from the DynamoDB API-key table.", "false", "true"),
    (
        "DYNAMODB_API_KEYS_TABLE",
        "DynamoDB API-key table (hash key `api_key`: the key itself or `sha256:<hex>`).",
        "(none)",
        "ses-relay-api-keys",
    ),
    (
        "ENABLE_SSL",
        "Implicit TLS on the listener (otherwise STARTTLS when certs are set).",
        "false",
        "true",
    ),
    (
        "SSL_CERT_PATH",
        "PEM certificate chain for STARTTLS / implicit TLS.",
        "(none)",
        "/certs/fullchain.pem",
    ),
    ("SSL_KEY_PATH", "PEM private key for SSL_CERT_PATH.", "(none)", "/certs/privkey.pem"),
    (
        "SERVER_FQDN",
        "Host name in the greeting and EHLO reply.",
        "the machine's host name",
        "smtp.example.com",
    ),
    # --- new settings ---
    (
        "REDIS_URL",
        "Share the rate limit between replicas through this Redis (secret: may hold a password).",
        "(unset: per-process limiter)",
        "redis://redis:6379/0",
    ),
    (
        "RELAY_REDIS_KEY",
        "Redis key of the shared limiter (one per SES account/region).",
        "ses-relay:rate",
        "ses:eu-west-1",
    ),
    (
        "RELAY_REDIS_UNAVAILABLE",
        "When Redis is down: `fail` (answer 451) or `degrade` (local limiter at rate/replicas).",
        "fail",
        "degrade",
    ),
    ("RELAY_REPLICAS", "Replica count used to split the rate when degraded to local.", "1", "2"),
    ("RELAY_RATE_BURST", "Limiter burst in recipients.", "1", "10"),
    ("RELAY_MAX_WAIT", "Seconds a message may wait for rate/upstream before 451.", "60", "30"),
    (
        "RELAY_ALLOWED_NETWORKS",
        "Comma-separated client CIDRs allowed to connect (empty = any).",
        "(empty)",
        "10.0.0.0/8,192.168.1.0/24",
    ),
    (
        "RELAY_ALLOWED_SENDER_DOMAINS",
        "Comma-separated MAIL FROM domains allowed (empty = any).",
        "(empty)",
        "example.com",
    ),
    (
        "RELAY_AUTH_USERS",
        "Comma-separated `user:hash` AUTH credentials (hash from `python -m relay.hash_password`).",
        "(empty)",
        "app:scrypt$16384$8$1$...",
    ),
    ("RELAY_AUTH_REQUIRED", "Require AUTH when credentials are configured.", "true", "false"),
    ("RELAY_AUTH_CACHE_TTL", "Seconds a credential lookup result is cached.", "300", "60"),
    (
        "RELAY_ALLOW_OPEN_RELAY",
        "Start even when listening publicly with no AUTH nor network allowlist.",
        "false",
        "true",
    ),
    (
        "RELAY_BLACKLIST_MODE",
        "`refuse` (550 at RCPT) or `drop` (accept, silently skip).",
        "refuse",
        "drop",
    ),
    (
        "RELAY_BLACKLIST_SQLITE",
        "SQLite blacklist file (used instead of DynamoDB when set).",
        "./blacklist.sqlite3 in local mode",
        "/data/blacklist.sqlite3",
    ),
    (
        "RELAY_BLACKLIST_CACHE_TTL",
        "Seconds a 'not blacklisted' answer is cached (0 = not cached).",
        "30",
        "10",
    ),
    (
        "RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL",
        "Seconds a 'blacklisted' answer is cached, so how long a removed address stays refused "
        "(0 = not cached).",
        "300",
        "60",
    ),
    (
        "RELAY_BLACKLIST_CACHE_MAX_ENTRIES",
        "Answers the blacklist cache keeps (least recently used dropped first).",
        "100000",
        "500000",
    ),
    (
        "RELAY_LOCAL_OUTBOX",
        "Local mode: directory receiving one .eml file per message.",
        "./outbox",
        "/tmp/outbox",
    ),
    (
        "RELAY_LOCAL_SMTP_URL",
        "Local mode: deliver to this SMTP server instead (smtp://, smtps://, user:pass@).",
        "(unset)",
        "smtp://127.0.0.1:2525",
    ),
    ("RELAY_POOL_SIZE", "Upstream SMTP connections kept open.", "4", "8"),
    (
        "RELAY_MAX_MESSAGES_PER_CONNECTION",
        "Recycle an upstream connection after this many messages.",
        "100",
        "50",
    ),
    (
        "RELAY_MAX_CONNECTION_AGE",
        "Recycle an upstream connection after this many seconds.",
        "300",
        "120",
    ),
    ("RELAY_UPSTREAM_TIMEOUT", "Seconds per upstream SMTP command.", "30", "10"),
    (
        "RELAY_UPSTREAM_CA_FILE",
        "Extra CA bundle for the upstream (private test servers).",
        "(system CAs)",
        "/certs/ca.pem",
    ),
    ("RELAY_MAX_MESSAGE_SIZE", "SIZE limit in bytes.", "41943040 (40 MiB)", "10485760"),
    (
        "RELAY_MAX_RECIPIENTS",
        "Recipients per message (452 beyond; the client splits by 50).",
        "1000",
        "200",
    ),
    ("RELAY_SESSION_TIMEOUT", "Idle seconds before a client session is closed.", "300", "60"),
    (
        "RELAY_JUNK_COMMAND_LIMIT",
        "Commands without mail (NOOP, RSET, VRFY, HELP, EHLO, protocol errors) a session may send"
        " between two messages before it is closed with 421; stops slow-loris clients, which the"
        " idle timeout alone cannot (like Postfix's `smtpd_junk_command_limit`).",
        "100",
        "20",
    ),
    ("RELAY_GRACE_PERIOD", "Seconds in-flight transactions get on SIGTERM/SIGINT.", "30", "10"),
    (
        "RELAY_METRICS_HOST",
        "Bind address of the /metrics /healthz /readyz endpoint.",
        "127.0.0.1",
        "0.0.0.0",
    ),
    ("RELAY_METRICS_PORT", "Port of that endpoint; `0` or `off` disables it.", "9125", "off"),
    ("RELAY_LOG_LEVEL", "Log level.", "INFO", "DEBUG"),
    ("RELAY_LOG_FORMAT", "`json` (one object per line) or `text`.", "json", "text"),
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
LOCAL_DEFAULT_RATE = 10.0
DEFAULT_MAX_MESSAGE_SIZE = 40 * 1024 * 1024

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line naming the variable."""


@attrs.frozen
class RelayConfig:
    """Everything the relay needs, validated.

    Attributes (grouped; see `ENVIRONMENT_VARIABLES` for meanings and defaults):
        listen_host/listen_port/server_fqdn: the SMTP listener.
        implicit_tls, tls_cert_path, tls_key_path: TLS on the listener (STARTTLS when not implicit).
        upstream_*: the SES SMTP endpoint; `upstream_host is None` means local mode.
        rate_limit: recipients per second, `None` for `auto` (read from SES).
        blacklist_cache_ttl: seconds a "not blacklisted" answer is cached (the variable's name
            predates the other two cache settings); blacklist_cache_blacklisted_ttl: the same for
            "blacklisted" answers; blacklist_cache_max_entries: the cache's size bound.
        metrics_port: `None` = endpoint off; `0` (programmatic only) = ephemeral port for tests.
    """

    listen_host: str = "127.0.0.1"
    listen_port: int = 1025
    server_fqdn: str = "localhost"
    implicit_tls: bool = False
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None

    upstream_host: str | None = None
    upstream_port: int = 587
    upstream_username: str | None = None
    upstream_password: str | None = attrs.field(default=None, repr=False)
    upstream_ca_file: str | None = None
    upstream_timeout: float = 30.0
    pool_size: int = 4
    max_messages_per_connection: int = 100
    max_connection_age: float = 300.0

    local_outbox: Path = Path("outbox")
    local_smtp_url: str | None = attrs.field(default=None, repr=False)

    rate_limit: float | None = LOCAL_DEFAULT_RATE
    rate_burst: int = 1
    redis_url: str | None = attrs.field(default=None, repr=False)
    redis_key: str = "ses-relay:rate"
    redis_degrade: bool = False
    replicas: int = 1
    max_wait: float = 60.0

    use_blacklist: bool = False
    dynamodb_table: str | None = None
    blacklist_sqlite: Path | None = None
    blacklist_drop: bool = False
    blacklist_cache_ttl: float = 30.0
    blacklist_cache_blacklisted_ttl: float = 300.0
    blacklist_cache_max_entries: int = 100_000

    use_apikey: bool = False
    api_keys_table: str | None = None
    auth_users: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    auth_required: bool = True
    auth_cache_ttl: float = 300.0

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_sender_domains: tuple[str, ...] = ()
    allow_open_relay: bool = False

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = 1000
    session_timeout: float = 300.0
    junk_command_limit: int = 100
    grace_period: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def local_mode(self) -> bool:
        """True when no SES endpoint is configured: mail goes to the outbox or a local SMTP URL."""
        return self.upstream_host is None

    @property
    def auth_enabled(self) -> bool:
        """True when some credential source is configured."""
        return bool(self.auth_users) or self.use_apikey

    @property
    def tls_enabled(self) -> bool:
        """True when the listener has a certificate (STARTTLS or implicit TLS)."""
        return self.tls_cert_path is not None

    @property
    def blacklist_enabled(self) -> bool:
        """True when recipients are checked against a blacklist."""
        return self.blacklist_sqlite is not None or (
            self.use_blacklist and bool(self.dynamodb_table)
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> RelayConfig:
        """Read and validate the settings; raise `ConfigError` (one line) on the first bad one."""
        env = _Env(environ)
        upstream_host = env.text("AWS_SMTP_HOST")
        local = upstream_host is None

        cert = env.path("SSL_CERT_PATH")
        key = env.path("SSL_KEY_PATH")
        implicit_tls = env.flag("ENABLE_SSL", False)
        if (cert is None) != (key is None):
            missing = "SSL_KEY_PATH" if key is None else "SSL_CERT_PATH"
            raise ConfigError(
                f"{missing}: required when the other of SSL_CERT_PATH/SSL_KEY_PATH is set"
            )
        if implicit_tls and cert is None:
            raise ConfigError("ENABLE_SSL: requires SSL_CERT_PATH and SSL_KEY_PATH")
        for name, path in (("SSL_CERT_PATH", cert), ("SSL_KEY_PATH", key)):
            if path is not None and not path.is_file():
                raise ConfigError(f"{name}: no such file: {path}")

        username, password = env.text("AWS_SMTP_USERNAME"), env.raw("AWS_SMTP_PASSWORD")
        if (username is None) != (password is None):
            missing = "AWS_SMTP_PASSWORD" if password is None else "AWS_SMTP_USERNAME"
            raise ConfigError(f"{missing}: AWS_SMTP_USERNAME and AWS_SMTP_PASSWORD go together")

        rate_text = (env.text("SES_RATE_LIMIT") or ("auto" if not local else "")).lower()
        rate: float | None
        if rate_text == "auto":
            if local:
                raise ConfigError(
                    "SES_RATE_LIMIT: `auto` reads the SES account; it needs AWS_SMTP_HOST"
                )
            rate = None
        elif rate_text == "":
            rate = LOCAL_DEFAULT_RATE
        else:
            rate = env.number("SES_RATE_LIMIT", LOCAL_DEFAULT_RATE, minimum=0.001)

        use_blacklist = env.flag("USE_BLACKLIST", False)
        dynamodb_table = env.text("DYNAMODB_TABLE")
        sqlite = env.path("RELAY_BLACKLIST_SQLITE")
        if sqlite is None and local:
            sqlite = Path("blacklist.sqlite3")
        if use_blacklist and dynamodb_table is None and sqlite is None:
            raise ConfigError("DYNAMODB_TABLE: required when USE_BLACKLIST is true")

        use_apikey = env.flag("USE_APIKEY", False)
        api_keys_table = env.text("DYNAMODB_API_KEYS_TABLE")
        if use_apikey and api_keys_table is None:
            raise ConfigError("DYNAMODB_API_KEYS_TABLE: required when USE_APIKEY is true")
        users = _parse_auth_users(env.raw("RELAY_AUTH_USERS") or "")
        if (users or use_apikey) and cert is None:
            raise ConfigError(
                "SSL_CERT_PATH: AUTH (RELAY_AUTH_USERS / USE_APIKEY) is only offered over TLS; "
                "set SSL_CERT_PATH and SSL_KEY_PATH"
            )

        mode = (env.text("RELAY_BLACKLIST_MODE") or "refuse").lower()
        if mode not in {"refuse", "drop"}:
            raise ConfigError(f"RELAY_BLACKLIST_MODE: expected 'refuse' or 'drop', got {mode!r}")
        unavailable = (env.text("RELAY_REDIS_UNAVAILABLE") or "fail").lower()
        if unavailable not in {"fail", "degrade"}:
            raise ConfigError(
                f"RELAY_REDIS_UNAVAILABLE: expected 'fail' or 'degrade', got {unavailable!r}"
            )
        log_format = (env.text("RELAY_LOG_FORMAT") or "json").lower()
        if log_format not in {"json", "text"}:
            raise ConfigError(f"RELAY_LOG_FORMAT: expected 'json' or 'text', got {log_format!r}")
        log_level = (env.text("RELAY_LOG_LEVEL") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"RELAY_LOG_LEVEL: unknown level {log_level!r}")

        metrics_text = (env.text("RELAY_METRICS_PORT") or "9125").lower()
        metrics_port = (
            None if metrics_text in {"0", "off"} else env.port("RELAY_METRICS_PORT", 9125)
        )

        local_smtp_url = env.text("RELAY_LOCAL_SMTP_URL")
        if local_smtp_url is not None:
            _check_smtp_url(local_smtp_url)

        return cls(
            listen_host=env.text("SMTP_HOST") or "127.0.0.1",
            listen_port=env.port("SMTP_PORT", 1025),
            server_fqdn=env.text("SERVER_FQDN") or socket.gethostname() or "localhost",
            implicit_tls=implicit_tls,
            tls_cert_path=cert,
            tls_key_path=key,
            upstream_host=upstream_host,
            upstream_port=env.port("AWS_SMTP_PORT", 587),
            upstream_username=username,
            upstream_password=password,
            upstream_ca_file=env.text("RELAY_UPSTREAM_CA_FILE"),
            upstream_timeout=env.number("RELAY_UPSTREAM_TIMEOUT", 30.0, minimum=0.1),
            pool_size=env.integer("RELAY_POOL_SIZE", 4, minimum=1),
            max_messages_per_connection=env.integer(
                "RELAY_MAX_MESSAGES_PER_CONNECTION", 100, minimum=1
            ),
            max_connection_age=env.number("RELAY_MAX_CONNECTION_AGE", 300.0, minimum=1.0),
            local_outbox=env.path("RELAY_LOCAL_OUTBOX") or Path("outbox"),
            local_smtp_url=local_smtp_url,
            rate_limit=rate,
            rate_burst=env.integer("RELAY_RATE_BURST", 1, minimum=1),
            redis_url=env.text("REDIS_URL"),
            redis_key=env.text("RELAY_REDIS_KEY") or "ses-relay:rate",
            redis_degrade=unavailable == "degrade",
            replicas=env.integer("RELAY_REPLICAS", 1, minimum=1),
            max_wait=env.number("RELAY_MAX_WAIT", 60.0, minimum=0.0),
            use_blacklist=use_blacklist,
            dynamodb_table=dynamodb_table,
            blacklist_sqlite=sqlite,
            blacklist_drop=mode == "drop",
            blacklist_cache_ttl=env.number("RELAY_BLACKLIST_CACHE_TTL", 30.0, minimum=0.0),
            blacklist_cache_blacklisted_ttl=env.number(
                "RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL", 300.0, minimum=0.0
            ),
            blacklist_cache_max_entries=env.integer(
                "RELAY_BLACKLIST_CACHE_MAX_ENTRIES", 100_000, minimum=1
            ),
            use_apikey=use_apikey,
            api_keys_table=api_keys_table,
            auth_users=users,
            auth_required=env.flag("RELAY_AUTH_REQUIRED", True),
            auth_cache_ttl=env.number("RELAY_AUTH_CACHE_TTL", 300.0, minimum=0.0),
            allowed_networks=_parse_networks(env.text("RELAY_ALLOWED_NETWORKS") or ""),
            allowed_sender_domains=_parse_domains(env.text("RELAY_ALLOWED_SENDER_DOMAINS") or ""),
            allow_open_relay=env.flag("RELAY_ALLOW_OPEN_RELAY", False),
            max_message_size=env.integer(
                "RELAY_MAX_MESSAGE_SIZE", DEFAULT_MAX_MESSAGE_SIZE, minimum=1024
            ),
            max_recipients=env.integer("RELAY_MAX_RECIPIENTS", 1000, minimum=1),
            session_timeout=env.number("RELAY_SESSION_TIMEOUT", 300.0, minimum=1.0),
            junk_command_limit=env.integer("RELAY_JUNK_COMMAND_LIMIT", 100, minimum=1),
            grace_period=env.number("RELAY_GRACE_PERIOD", 30.0, minimum=0.0),
            metrics_host=env.text("RELAY_METRICS_HOST") or "127.0.0.1",
            metrics_port=metrics_port,
            log_level=log_level,
            log_json=log_format == "json",
        )


class _Env:
    """Typed accessors that raise `ConfigError` naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value else None

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None

    def flag(self, name: str, default: bool) -> bool:
        value = self._environ.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}, got {number}")
        return number

    def number(self, name: str, default: float, *, minimum: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if not number >= minimum or number == float("inf"):
            raise ConfigError(f"{name}: must be a finite number of at least {minimum}, got {value}")
        return number

    def port(self, name: str, default: int) -> int:
        number = self.integer(name, default, minimum=0)
        if number > 65535:
            raise ConfigError(f"{name}: not a TCP port: {number}")
        return number


def _parse_networks(text: str) -> tuple[IPNetwork, ...]:
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"RELAY_ALLOWED_NETWORKS: not a CIDR network: {item!r}") from None
    return tuple(networks)


def _parse_domains(text: str) -> tuple[str, ...]:
    domains = []
    for item in filter(None, (part.strip().lower().rstrip(".") for part in text.split(","))):
        try:
            domains.append(item.encode("idna").decode("ascii"))
        except UnicodeError:
            raise ConfigError(f"RELAY_ALLOWED_SENDER_DOMAINS: not a domain: {item!r}") from None
    return tuple(domains)


def _parse_auth_users(text: str) -> tuple[tuple[str, str], ...]:
    # Deferred import: auth imports nothing from config, but keeping config importable alone
    # makes `python -m relay.hash_password` cheap.
    from relay.auth import is_password_hash

    users = []
    for position, item in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
        user, sep, hashed = item.partition(":")
        if not sep or not user or not is_password_hash(hashed):
            # Never echo the entry: it holds a password hash (or worse, a clear-text password).
            raise ConfigError(
                f"RELAY_AUTH_USERS: entry {position} is not `user:hash` "
                "(make the hash with `python -m relay.hash_password`)"
            )
        users.append((user, hashed))
    return tuple(users)


def _check_smtp_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ConfigError(
            "RELAY_LOCAL_SMTP_URL: expected smtp://host[:port] or smtps://host[:port]"
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError("RELAY_LOCAL_SMTP_URL: invalid port") from None
