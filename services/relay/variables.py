"""Every environment variable the relay reads, each defined once: name, meaning, default, example.

`RelayConfig` takes its defaults from these definitions and `RelayConfig.from_environ` reads
through them, so a default is written in one place only; the README's configuration table is
`ENVIRONMENT_VARIABLES`, row for row (a test keeps the two equal). The first group are the names
existing deployments already set: they keep their meaning.

AWS credentials and region (`AWS_ACCESS_KEY_ID`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`,
instance roles, ...) are not listed: boto3's own chain reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from relay.variable import Variable as Variable  # re-exported: users import it from here
from relay.variables_queue import QUEUE_VARIABLES  # defined there, listed here in order

# --- names existing deployments already set ------------------------------------------------------

SMTP_HOST = Variable("SMTP_HOST", "Address the relay listens on.", "127.0.0.1", "0.0.0.0")
SMTP_PORT = Variable("SMTP_PORT", "Port the relay listens on.", 1025, "2525")
AWS_SMTP_HOST: Variable[str | None] = Variable(
    "AWS_SMTP_HOST",
    "SES SMTP endpoint. Unset = local mode (outbox directory, no AWS needed).",
    None,
    "email-smtp.eu-west-1.amazonaws.com",
    shown="(unset: local mode)",
)
AWS_SMTP_PORT = Variable(
    "AWS_SMTP_PORT", "SES SMTP port (465/2465 = implicit TLS, else STARTTLS).", 587, "465"
)
AWS_SMTP_USERNAME: Variable[str | None] = Variable(
    "AWS_SMTP_USERNAME", "SES SMTP user name (an IAM access key id).", None, "AKIA..."
)
AWS_SMTP_PASSWORD: Variable[str | None] = Variable(
    "AWS_SMTP_PASSWORD", "SES SMTP password (secret; never logged).", None, "BPk3..."
)
SES_RATE_LIMIT = Variable(
    "SES_RATE_LIMIT",
    "Send rate in recipients per second, or `auto` to read the account's SES MaxSendRate"
    " (start-up fails, naming the cause, if SES cannot be read). The relay paces 0.5% below it"
    " (1% with `REDIS_URL`), so that jitter in transit does not put more than the rate + burst"
    " into one of SES's seconds.",
    10.0,
    "14",
    shown="auto (AWS mode), {} (local mode)",
)
USE_BLACKLIST = Variable(
    "USE_BLACKLIST", "Refuse blacklisted recipients (DynamoDB table DYNAMODB_TABLE).", False, "true"
)
DYNAMODB_TABLE: Variable[str | None] = Variable(
    "DYNAMODB_TABLE", "DynamoDB blacklist table (with USE_BLACKLIST).", None, "ses-blacklist"
)
USE_APIKEY = Variable(
    "USE_APIKEY", "Accept AUTH credentials from the DynamoDB API-key table.", False, "true"
)
DYNAMODB_API_KEYS_TABLE: Variable[str | None] = Variable(
    "DYNAMODB_API_KEYS_TABLE",
    "DynamoDB API-key table (hash key `api_key`: the key itself or `sha256:<hex>`).",
    None,
    "ses-relay-api-keys",
)
ENABLE_SSL = Variable(
    "ENABLE_SSL",
    "Implicit TLS on the listener (otherwise STARTTLS when certs are set).",
    False,
    "true",
)
SSL_CERT_PATH: Variable[Path | None] = Variable(
    "SSL_CERT_PATH",
    "PEM certificate chain for STARTTLS / implicit TLS.",
    None,
    "/certs/fullchain.pem",
)
SSL_KEY_PATH: Variable[Path | None] = Variable(
    "SSL_KEY_PATH", "PEM private key for SSL_CERT_PATH.", None, "/certs/privkey.pem"
)
SERVER_FQDN: Variable[str | None] = Variable(
    "SERVER_FQDN",
    "Host name in the greeting and EHLO reply.",
    None,
    "smtp.example.com",
    shown="the machine's host name",
)

# --- the relay's own settings --------------------------------------------------------------------

REDIS_URL: Variable[str | None] = Variable(
    "REDIS_URL",
    "Share the rate limit between replicas through this Redis (secret: may hold a password).",
    None,
    "redis://redis:6379/0",
    shown="(unset: per-process limiter)",
)
RELAY_REDIS_KEY = Variable(
    "RELAY_REDIS_KEY",
    "Redis key of the shared limiter (one per SES account/region).",
    "ses-relay:rate",
    "ses:eu-west-1",
)
RELAY_REDIS_UNAVAILABLE = Variable(
    "RELAY_REDIS_UNAVAILABLE",
    "When Redis is down: `fail` (answer 451) or `degrade` (local limiter at rate/replicas).",
    "fail",
    "degrade",
)
RELAY_REPLICAS = Variable(
    "RELAY_REPLICAS", "Replica count used to split the rate when degraded to local.", 1, "2"
)
RELAY_RATE_BURST = Variable("RELAY_RATE_BURST", "Limiter burst in recipients.", 1, "10")
RELAY_MAX_WAIT = Variable(
    "RELAY_MAX_WAIT", "Seconds a message may wait for rate/upstream before 451.", 60.0, "30"
)
RELAY_ALLOWED_NETWORKS = Variable(
    "RELAY_ALLOWED_NETWORKS",
    "Comma-separated client CIDRs allowed to connect (empty = any).",
    "",
    "10.0.0.0/8,192.168.1.0/24",
)
RELAY_ALLOWED_SENDER_DOMAINS = Variable(
    "RELAY_ALLOWED_SENDER_DOMAINS",
    "Comma-separated MAIL FROM domains allowed (empty = any).",
    "",
    "example.com",
)
RELAY_BOUNCE_FROM: Variable[str | None] = Variable(
    "RELAY_BOUNCE_FROM",
    "Envelope sender for null-sender mail (`MAIL FROM:<>`: bounces, auto-replies), since SES"
    " needs a verified identity: such an address, in RELAY_ALLOWED_SENDER_DOMAINS when that is"
    " set. Unset: `<>` is refused with `550 5.7.1` (local mode keeps `<>`).",
    None,
    "bounces@example.com",
)
RELAY_AUTH_USERS = Variable(
    "RELAY_AUTH_USERS",
    "Comma-separated `user:hash` AUTH credentials (hash from `relay hash-password`).",
    "",
    "app:scrypt$16384$8$1$...",
)
RELAY_AUTH_REQUIRED = Variable(
    "RELAY_AUTH_REQUIRED", "Require AUTH when credentials are configured.", True, "false"
)
RELAY_AUTH_CACHE_TTL = Variable(
    "RELAY_AUTH_CACHE_TTL", "Seconds a credential lookup result is cached.", 300.0, "60"
)
RELAY_ALLOW_OPEN_RELAY = Variable(
    "RELAY_ALLOW_OPEN_RELAY",
    "Start even when listening publicly with no AUTH nor network allowlist.",
    False,
    "true",
)
RELAY_BLACKLIST_MODE = Variable(
    "RELAY_BLACKLIST_MODE",
    "`refuse` (550 at RCPT) or `drop` (accept, silently skip).",
    "refuse",
    "drop",
)
RELAY_BLACKLIST_SQLITE = Variable(
    "RELAY_BLACKLIST_SQLITE",
    "SQLite blacklist file; set it or USE_BLACKLIST+DYNAMODB_TABLE, never both (start-up error).",
    Path("blacklist.sqlite3"),
    "/data/blacklist.sqlite3",
    shown="./{} in local mode without DYNAMODB_TABLE",
)
RELAY_BLACKLIST_CACHE_TTL = Variable(
    "RELAY_BLACKLIST_CACHE_TTL",
    "Seconds a 'not blacklisted' answer is cached (0 = not cached).",
    30.0,
    "10",
)
RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL = Variable(
    "RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL",
    "Seconds a 'blacklisted' answer is cached, so how long a removed address stays refused "
    "(0 = not cached).",
    300.0,
    "60",
)
RELAY_BLACKLIST_CACHE_MAX_ENTRIES = Variable(
    "RELAY_BLACKLIST_CACHE_MAX_ENTRIES",
    "Answers the blacklist cache keeps (least recently used dropped first).",
    100_000,
    "500000",
)
RELAY_LOCAL_OUTBOX = Variable(
    "RELAY_LOCAL_OUTBOX",
    "Local mode: directory receiving one .eml file per message.",
    Path("outbox"),
    "/tmp/outbox",
    shown="./{}",
)
RELAY_LOCAL_SMTP_URL: Variable[str | None] = Variable(
    "RELAY_LOCAL_SMTP_URL",
    "Local mode: deliver to this SMTP server instead (smtp://, smtps://, user:pass@).",
    None,
    "smtp://127.0.0.1:2525",
    shown="(unset)",
)
RELAY_UPSTREAM = Variable(
    "RELAY_UPSTREAM",
    "How mail leaves: `smtp` (SES SMTP interface, AWS_SMTP_*) or `api` (SES v2 SendEmail with"
    " boto3's credentials: role, web identity, environment; not local mode).",
    "smtp",
    "api",
)
RELAY_SES_REGION: Variable[str | None] = Variable(
    "RELAY_SES_REGION",
    "AWS region of the SES API (sending with `api`, and the `auto` quota poller).",
    None,
    "eu-west-1",
    shown="(AWS_REGION / AWS_DEFAULT_REGION)",
)
RELAY_CONFIGURATION_SET: Variable[str | None] = Variable(
    "RELAY_CONFIGURATION_SET",
    "Default SES configuration set with `api` (an X-SES-CONFIGURATION-SET header overrides it).",
    None,
    "ses-events",
)
RELAY_POOL_SIZE = Variable(
    "RELAY_POOL_SIZE",
    "Upstream SMTP connections kept open (with `api`: SendEmail calls in flight).",
    4,
    "8",
)
RELAY_MAX_MESSAGES_PER_CONNECTION = Variable(
    "RELAY_MAX_MESSAGES_PER_CONNECTION",
    "Recycle an upstream connection after this many messages.",
    100,
    "50",
)
RELAY_MAX_CONNECTION_AGE = Variable(
    "RELAY_MAX_CONNECTION_AGE",
    "Recycle an upstream connection after this many seconds.",
    300.0,
    "120",
)
RELAY_UPSTREAM_TIMEOUT = Variable(
    "RELAY_UPSTREAM_TIMEOUT", "Seconds per upstream SMTP command.", 30.0, "10"
)
RELAY_UPSTREAM_CA_FILE: Variable[str | None] = Variable(
    "RELAY_UPSTREAM_CA_FILE",
    "Extra CA bundle for the upstream (private test servers).",
    None,
    "/certs/ca.pem",
    shown="(system CAs)",
)
RELAY_MAX_MESSAGE_SIZE = Variable(
    "RELAY_MAX_MESSAGE_SIZE",
    "SIZE limit in bytes.",
    40 * 1024 * 1024,
    "10485760",
    shown="{} (40 MiB)",
)
RELAY_MAX_RECIPIENTS = Variable(
    "RELAY_MAX_RECIPIENTS",
    "Recipients per message (452 beyond; the client splits by 50).",
    1000,
    "200",
)
RELAY_SESSION_TIMEOUT = Variable(
    "RELAY_SESSION_TIMEOUT", "Idle seconds before a client session is closed.", 300.0, "60"
)
RELAY_JUNK_COMMAND_LIMIT = Variable(
    "RELAY_JUNK_COMMAND_LIMIT",
    "Commands without mail (NOOP, RSET, VRFY, HELP, EHLO, protocol errors) a session may send"
    " between two messages before it is closed with 421; stops slow-loris clients, which the"
    " idle timeout alone cannot (like Postfix's `smtpd_junk_command_limit`).",
    100,
    "20",
)
RELAY_GRACE_PERIOD = Variable(
    "RELAY_GRACE_PERIOD",
    "Seconds in-flight transactions get on SIGTERM/SIGINT; keep it at least RELAY_MAX_WAIT +"
    " RELAY_UPSTREAM_TIMEOUT so none is cut (and the orchestrator's stop timeout above it).",
    90.0,
    "45",
)
RELAY_METRICS_HOST = Variable(
    "RELAY_METRICS_HOST",
    "Bind address of the /metrics /healthz /readyz endpoint.",
    "127.0.0.1",
    "0.0.0.0",
)
RELAY_METRICS_PORT = Variable(
    "RELAY_METRICS_PORT", "Port of that endpoint; `0` or `off` disables it.", 9125, "off"
)
RELAY_SNS_LISTEN: Variable[str | None] = Variable(
    "RELAY_SNS_LISTEN",
    "host:port of the HTTPS endpoint for SNS bounce/complaint deliveries (written to the"
    " relay's blacklist store); unset = off.",
    None,
    "0.0.0.0:8443",
    shown="(unset: off)",
)
RELAY_SNS_CERT_PATH: Variable[Path | None] = Variable(
    "RELAY_SNS_CERT_PATH",
    "PEM certificate chain of that endpoint (required with RELAY_SNS_LISTEN).",
    None,
    "/etc/relay/sns.crt",
)
RELAY_SNS_KEY_PATH: Variable[Path | None] = Variable(
    "RELAY_SNS_KEY_PATH",
    "PEM private key of that endpoint (required with RELAY_SNS_LISTEN).",
    None,
    "/etc/relay/sns.key",
)
RELAY_SNS_TOPIC_ARNS = Variable(
    "RELAY_SNS_TOPIC_ARNS",
    "Comma-separated SNS topic ARNs the endpoint accepts (required with RELAY_SNS_LISTEN).",
    "",
    "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
)
RELAY_LOG_LEVEL = Variable("RELAY_LOG_LEVEL", "Log level.", "INFO", "DEBUG")
RELAY_LOG_FORMAT = Variable(
    "RELAY_LOG_FORMAT", "`json` (one object per line) or `text`.", "json", "text"
)

#: Every variable, in the README's order.
VARIABLES: Final[tuple[Variable[object], ...]] = (
    SMTP_HOST,
    SMTP_PORT,
    AWS_SMTP_HOST,
    AWS_SMTP_PORT,
    AWS_SMTP_USERNAME,
    AWS_SMTP_PASSWORD,
    SES_RATE_LIMIT,
    USE_BLACKLIST,
    DYNAMODB_TABLE,
    USE_APIKEY,
    DYNAMODB_API_KEYS_TABLE,
    ENABLE_SSL,
    SSL_CERT_PATH,
    SSL_KEY_PATH,
    SERVER_FQDN,
    REDIS_URL,
    RELAY_REDIS_KEY,
    RELAY_REDIS_UNAVAILABLE,
    RELAY_REPLICAS,
    RELAY_RATE_BURST,
    RELAY_MAX_WAIT,
    RELAY_ALLOWED_NETWORKS,
    RELAY_ALLOWED_SENDER_DOMAINS,
    RELAY_BOUNCE_FROM,
    RELAY_AUTH_USERS,
    RELAY_AUTH_REQUIRED,
    RELAY_AUTH_CACHE_TTL,
    RELAY_ALLOW_OPEN_RELAY,
    RELAY_BLACKLIST_MODE,
    RELAY_BLACKLIST_SQLITE,
    RELAY_BLACKLIST_CACHE_TTL,
    RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL,
    RELAY_BLACKLIST_CACHE_MAX_ENTRIES,
    RELAY_LOCAL_OUTBOX,
    RELAY_LOCAL_SMTP_URL,
    RELAY_UPSTREAM,
    RELAY_SES_REGION,
    RELAY_CONFIGURATION_SET,
    RELAY_POOL_SIZE,
    RELAY_MAX_MESSAGES_PER_CONNECTION,
    RELAY_MAX_CONNECTION_AGE,
    RELAY_UPSTREAM_TIMEOUT,
    RELAY_UPSTREAM_CA_FILE,
    *QUEUE_VARIABLES,
    RELAY_MAX_MESSAGE_SIZE,
    RELAY_MAX_RECIPIENTS,
    RELAY_SESSION_TIMEOUT,
    RELAY_JUNK_COMMAND_LIMIT,
    RELAY_GRACE_PERIOD,
    RELAY_METRICS_HOST,
    RELAY_METRICS_PORT,
    RELAY_SNS_LISTEN,
    RELAY_SNS_CERT_PATH,
    RELAY_SNS_KEY_PATH,
    RELAY_SNS_TOPIC_ARNS,
    RELAY_LOG_LEVEL,
    RELAY_LOG_FORMAT,
)

#: (name, meaning, default, example) for every variable: the README's table, row for row.
ENVIRONMENT_VARIABLES: Final[tuple[tuple[str, str, str, str], ...]] = tuple(
    variable.row for variable in VARIABLES
)
